-- network.pooled_rates
-- Purpose: P1 (SAP 8): pooled rates per 1,000 person-years across the sites' packages.
-- Grain:   one row per pool_id, outcome, stratifier, stratum and method.
-- Rules:   fixed: sum(events) / sum(person-years) with the exact Poisson CI, written only where no
--          site's count or person-years is suppressed (it then equals the pooled analysis' A1 rate);
--          random_dl: DerSimonian-Laird over the log rates of the sites with >= 5 events, variance
--          1 / events (metafor escalc IRLN, rma DL), at least two sites; profile: the sum of the sites'
--          Poisson log-likelihoods of the log rate (the same sites as fixed), its maximum and
--          likelihood-ratio limits. The stratifier site is not pooled (each site is its own stratum).
-- Usage:   filled by vigil.network.pool (vigil.stats.meta).
CREATE TABLE IF NOT EXISTS network.pooled_rates (
    pool_id BIGINT NOT NULL,
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    estimate DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    tau2 DOUBLE,
    i2 DOUBLE,
    n_sites INTEGER NOT NULL,
    sites VARCHAR NOT NULL,
    packages VARCHAR NOT NULL,
    note VARCHAR,
    PRIMARY KEY (pool_id, outcome, stratifier, stratum, method)
);

COMMENT ON TABLE network.pooled_rates IS 'P1 (SAP 8): rates per 1,000 person-years pooled across the sites: fixed (= the pooled analysis), DerSimonian-Laird random effects, likelihood profile. Grain: pool_id, outcome, stratifier, stratum, method.';
COMMENT ON COLUMN network.pooled_rates.pool_id IS 'The pooling (network.pools).';
COMMENT ON COLUMN network.pooled_rates.outcome IS 'The outcome (SAP 2).';
COMMENT ON COLUMN network.pooled_rates.stratifier IS 'overall or a SAP 3 stratum variable (site is not pooled).';
COMMENT ON COLUMN network.pooled_rates.stratum IS 'The stratum (all for overall).';
COMMENT ON COLUMN network.pooled_rates.method IS 'fixed, random_dl or profile.';
COMMENT ON COLUMN network.pooled_rates.estimate IS 'The pooled rate per 1,000 person-years; NULL with a note where it cannot be pooled.';
COMMENT ON COLUMN network.pooled_rates.ci_lower IS 'Lower 95% limit per 1,000 person-years (fixed: exact Poisson; random_dl: Wald on the log scale; profile: likelihood ratio).';
COMMENT ON COLUMN network.pooled_rates.ci_upper IS 'Upper 95% limit per 1,000 person-years.';
COMMENT ON COLUMN network.pooled_rates.tau2 IS 'Between-site variance of the log rate (random_dl); NULL otherwise.';
COMMENT ON COLUMN network.pooled_rates.i2 IS 'I-squared in percent (random_dl, as metafor); NULL otherwise.';
COMMENT ON COLUMN network.pooled_rates.n_sites IS 'Sites that entered the estimate.';
COMMENT ON COLUMN network.pooled_rates.sites IS 'Those sites, comma-separated.';
COMMENT ON COLUMN network.pooled_rates.packages IS 'Provenance: the SHA-256 of those sites'' package manifests (network.sites), comma-separated, in the order of sites.';
COMMENT ON COLUMN network.pooled_rates.note IS 'Why the estimate is NULL or how it was limited (e.g. a site''s count suppressed).';
