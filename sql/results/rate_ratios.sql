-- results.rate_ratios
-- Purpose: rate ratios of serious infection episodes by risk window (days since the start of the most
--          recent course; reference >365), unadjusted and adjusted for the A5 multivariable covariates,
--          with a Poisson and a negative-binomial variance (SAP 4, A9).
-- Grain:   one row per run, variant, outcome (all_serious), model (univariable | multivariable),
--          variance (poisson | negative_binomial) and coefficient (variable, level): every non-reference
--          level of each covariate of the model, the intercept as variable (Intercept).
-- Rules:   fitted on person-time aggregated by risk window x covariate pattern (never patient rows):
--          glm(n_events ~ window [+ covariates] + offset(log(person_years)), family = poisson) and
--          MASS::glm.nb on the same rows (vigil.stats.glm). Rate ratio = exp(coef), Wald 95% CI and p.
--          dispersion: Pearson chi-square / residual df of the row's fit (for the Poisson fit, > 1
--          means overdispersion). Where the data give no finite estimate (a level without events)
--          the values are NULL and note says why (docs/analysis-methods.md).
-- Usage:   created here, filled by vigil.analysis.rate_ratios.
CREATE TABLE IF NOT EXISTS results.rate_ratios (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    covariates VARCHAR NOT NULL,
    variance VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    level VARCHAR,
    reference_level VARCHAR,
    level_order INTEGER,
    coef DOUBLE,
    se DOUBLE,
    rate_ratio DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    p_value DOUBLE,
    dispersion DOUBLE,
    theta DOUBLE,
    n_rows BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    person_years DOUBLE NOT NULL,
    note VARCHAR
);

COMMENT ON TABLE results.rate_ratios IS 'Rate ratios of serious infection episodes by risk window (reference >365), Poisson and negative-binomial regression on person-time aggregated by window x covariate pattern, unadjusted and adjusted for the A5 covariates. Grain: run, variant, outcome, model, variance and coefficient. SAP 4 (A9).';
COMMENT ON COLUMN results.rate_ratios.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.rate_ratios.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.rate_ratios.outcome IS 'all_serious (serious infection episodes, recurrent).';
COMMENT ON COLUMN results.rate_ratios.model IS 'univariable (risk window only) or multivariable (risk window and the A5 multivariable covariates).';
COMMENT ON COLUMN results.rate_ratios.covariates IS 'The model''s covariates, comma-separated, in model order.';
COMMENT ON COLUMN results.rate_ratios.variance IS 'poisson (R glm, family = poisson) or negative_binomial (R MASS::glm.nb).';
COMMENT ON COLUMN results.rate_ratios.variable IS 'The covariate of the coefficient (window, or an A5 covariate), or (Intercept).';
COMMENT ON COLUMN results.rate_ratios.level IS 'Its non-reference level (NULL for the intercept).';
COMMENT ON COLUMN results.rate_ratios.reference_level IS 'The covariate''s reference level (window: >365).';
COMMENT ON COLUMN results.rate_ratios.level_order IS 'Order of the level among the covariate''s levels (1 = reference).';
COMMENT ON COLUMN results.rate_ratios.coef IS 'Log rate ratio (for the intercept: the log rate per person-year in the reference cell).';
COMMENT ON COLUMN results.rate_ratios.se IS 'Standard error of coef (R summary.glm / summary.negbin, dispersion 1).';
COMMENT ON COLUMN results.rate_ratios.rate_ratio IS 'exp(coef).';
COMMENT ON COLUMN results.rate_ratios.ci_lower IS 'Wald 95% lower limit exp(coef - 1.959964 se).';
COMMENT ON COLUMN results.rate_ratios.ci_upper IS 'Wald 95% upper limit exp(coef + 1.959964 se).';
COMMENT ON COLUMN results.rate_ratios.p_value IS 'Two-sided Wald p.';
COMMENT ON COLUMN results.rate_ratios.dispersion IS 'Pearson chi-square / residual df of the fit (same for every row of one fit).';
COMMENT ON COLUMN results.rate_ratios.theta IS 'Negative binomial: theta of var = mu + mu^2 / theta (MASS::glm.nb); NULL for poisson.';
COMMENT ON COLUMN results.rate_ratios.n_rows IS 'Aggregated rows (window x covariate pattern with person-time) the model was fitted on.';
COMMENT ON COLUMN results.rate_ratios.n_events IS 'Serious infection episodes in the rows (exact).';
COMMENT ON COLUMN results.rate_ratios.person_years IS 'Person-years in the rows.';
COMMENT ON COLUMN results.rate_ratios.note IS 'Why a value is NULL (aliased level, level without events, no convergence); NULL otherwise.';
