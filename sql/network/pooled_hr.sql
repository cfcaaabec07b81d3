-- network.pooled_hr
-- Purpose: P2 and P3 (SAP 8): A5's multivariable hazard ratios pooled across the sites.
-- Grain:   one row per pool_id, outcome, model, variable, level and method.
-- Rules:   model multivariable: fixed (inverse variance) and random_dl (DerSimonian-Laird, at least two
--          sites) over the log HRs and SEs of the sites whose package shows the HR (its level and
--          reference have >= 5 patients and events there), as metafor rma(yi, sei = se); profile: the
--          sum of those sites' profile partial log-likelihoods on the network's grid, its maximum and
--          likelihood-ratio limits (OHDSI EvidenceSynthesis' approach). model
--          multivariable_site_stratified, method distributed: P3, the site-stratified model by
--          distributed Newton-Raphson (rounds = its Newton steps).
-- Usage:   filled by vigil.network.pool and vigil.network.distributed.
CREATE TABLE IF NOT EXISTS network.pooled_hr (
    pool_id BIGINT NOT NULL,
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    hr DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    coef DOUBLE,
    se DOUBLE,
    tau2 DOUBLE,
    i2 DOUBLE,
    n_sites INTEGER NOT NULL,
    sites VARCHAR NOT NULL,
    packages VARCHAR,
    rounds INTEGER,
    note VARCHAR,
    PRIMARY KEY (pool_id, outcome, model, variable, level, method)
);

COMMENT ON TABLE network.pooled_hr IS 'P2 and P3 (SAP 8): hazard ratios of A5''s multivariable model pooled across the sites (fixed, random_dl, profile) and the site-stratified model by distributed Newton-Raphson (distributed). Grain: pool_id, outcome, model, variable, level, method.';
COMMENT ON COLUMN network.pooled_hr.pool_id IS 'The pooling (network.pools).';
COMMENT ON COLUMN network.pooled_hr.outcome IS 'The first-event outcome (SAP 2).';
COMMENT ON COLUMN network.pooled_hr.model IS 'multivariable (P2: each site''s own model) or multivariable_site_stratified (P3).';
COMMENT ON COLUMN network.pooled_hr.variable IS 'The model''s variable (SAP 3).';
COMMENT ON COLUMN network.pooled_hr.level IS 'The level compared with the reference level (the first of SAP 3).';
COMMENT ON COLUMN network.pooled_hr.method IS 'fixed, random_dl, profile or distributed.';
COMMENT ON COLUMN network.pooled_hr.hr IS 'The pooled hazard ratio; NULL with a note where it cannot be pooled.';
COMMENT ON COLUMN network.pooled_hr.ci_lower IS 'Lower 95% limit (Wald for fixed, random_dl, distributed; likelihood ratio for profile).';
COMMENT ON COLUMN network.pooled_hr.ci_upper IS 'Upper 95% limit.';
COMMENT ON COLUMN network.pooled_hr.coef IS 'The pooled log hazard ratio.';
COMMENT ON COLUMN network.pooled_hr.se IS 'Its standard error (NULL for profile, whose limits are not symmetric).';
COMMENT ON COLUMN network.pooled_hr.tau2 IS 'Between-site variance of the log HR (random_dl); NULL otherwise.';
COMMENT ON COLUMN network.pooled_hr.i2 IS 'I-squared in percent (random_dl, as metafor); NULL otherwise.';
COMMENT ON COLUMN network.pooled_hr.n_sites IS 'Sites that entered the estimate.';
COMMENT ON COLUMN network.pooled_hr.sites IS 'Those sites, comma-separated.';
COMMENT ON COLUMN network.pooled_hr.packages IS 'Provenance: the SHA-256 of those sites'' package manifests, comma-separated; NULL for distributed (no package: the sites'' warehouses answered).';
COMMENT ON COLUMN network.pooled_hr.rounds IS 'Newton-Raphson steps of the distributed fit (distributed only).';
COMMENT ON COLUMN network.pooled_hr.note IS 'Why the estimate is NULL or how it was limited.';
