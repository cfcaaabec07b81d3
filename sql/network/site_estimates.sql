-- network.site_estimates
-- Purpose: each accepted site's own estimates as its package shows them (after the site's disclosure
--          control), the inputs of P1 and P2 and the rows of the network report's forest plots.
-- Grain:   one row per pool_id, site, quantity (rate or hazard_ratio), outcome, stratifier/variable, stratum/level.
-- Usage:   filled by vigil.network.pool.
CREATE TABLE IF NOT EXISTS network.site_estimates (
    pool_id BIGINT NOT NULL,
    site_id VARCHAR NOT NULL,
    quantity VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    n_events BIGINT,
    person_years DOUBLE,
    estimate DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    log_estimate DOUBLE,
    se DOUBLE,
    PRIMARY KEY (pool_id, site_id, quantity, outcome, variable, level)
);

COMMENT ON TABLE network.site_estimates IS 'Each accepted site''s rates (A1) and multivariable hazard ratios (A5) as its package shows them; NULL where the site suppressed the value (SAP 5). Grain: pool_id, site, quantity, outcome, variable, level.';
COMMENT ON COLUMN network.site_estimates.pool_id IS 'The pooling (network.pools).';
COMMENT ON COLUMN network.site_estimates.site_id IS 'The site.';
COMMENT ON COLUMN network.site_estimates.quantity IS 'rate (per 1,000 person-years, A1) or hazard_ratio (A5 multivariable).';
COMMENT ON COLUMN network.site_estimates.outcome IS 'The outcome (SAP 2).';
COMMENT ON COLUMN network.site_estimates.variable IS 'For a rate: the stratifier (overall or a SAP 3 stratum variable); for a hazard ratio: the model''s variable.';
COMMENT ON COLUMN network.site_estimates.level IS 'For a rate: the stratum (all for overall); for a hazard ratio: the level compared with the reference.';
COMMENT ON COLUMN network.site_estimates.n_events IS 'Events of the stratum (rates only); NULL if suppressed (1-4, or complementary).';
COMMENT ON COLUMN network.site_estimates.person_years IS 'Person-years of the stratum (rates only); NULL if suppressed.';
COMMENT ON COLUMN network.site_estimates.estimate IS 'The rate per 1,000 person-years or the hazard ratio; NULL if suppressed or not estimable.';
COMMENT ON COLUMN network.site_estimates.ci_lower IS 'Lower 95% limit as the site reports it (exact Poisson for rates, Wald for hazard ratios).';
COMMENT ON COLUMN network.site_estimates.ci_upper IS 'Upper 95% limit as the site reports it.';
COMMENT ON COLUMN network.site_estimates.log_estimate IS 'What is pooled: log(events / person-years) for a rate (metafor escalc IRLN), the log hazard ratio (coef) for a hazard ratio.';
COMMENT ON COLUMN network.site_estimates.se IS 'Its standard error: sqrt(1 / events) for a rate, the Cox model''s SE for a hazard ratio.';
