-- results.cox
-- Purpose: Cox proportional hazards models of the first-event outcomes, Efron ties, death censored
--          (SAP 4, A5): one univariable model per stratum variable and the multivariable model
--          (age_group, sex, charlson, prior_dmt, prior_high_efficacy, edss), also with strata(site)
--          (model multivariable_site_stratified, as R coxph(... + strata(site))), treatment contrasts
--          against the SAP reference levels; hazard ratio, Wald 95% CI and Wald p; and the
--          proportional-hazards test of R's cox.zph (transform "km") per term and for the model.
-- Grain:   one row per run, variant, outcome, model (its covariates) and non-reference level of each
--          variable, plus one row per model with variable = GLOBAL (level NULL) for the global PH test.
-- Usage:   created here, filled by vigil.analysis.run_analyses. Rules for levels without patients or
--          events: docs/analysis-methods.md.
CREATE TABLE IF NOT EXISTS results.cox (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    covariates VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    level VARCHAR,
    reference_level VARCHAR,
    level_order INTEGER,
    coef DOUBLE,
    se DOUBLE,
    hr DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    p_value DOUBLE,
    ph_chisq DOUBLE,
    ph_df INTEGER,
    ph_p_value DOUBLE,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    level_patients BIGINT,
    level_events BIGINT,
    reference_patients BIGINT,
    reference_events BIGINT,
    note VARCHAR
);

-- a results.cox made before the level counts existed gets them (NULL for its earlier rows)
ALTER TABLE results.cox ADD COLUMN IF NOT EXISTS level_patients BIGINT;
ALTER TABLE results.cox ADD COLUMN IF NOT EXISTS level_events BIGINT;
ALTER TABLE results.cox ADD COLUMN IF NOT EXISTS reference_patients BIGINT;
ALTER TABLE results.cox ADD COLUMN IF NOT EXISTS reference_events BIGINT;

COMMENT ON TABLE results.cox IS 'Cox models (Efron ties, death censored): hazard ratio with Wald 95% CI and p per non-reference level, univariable per stratum variable and multivariable; proportional-hazards test (cox.zph, km transform) per term and GLOBAL per model. Grain: run, outcome, model, variable and level (GLOBAL row: level NULL). SAP 4 (A5).';
COMMENT ON COLUMN results.cox.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.cox.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.cox.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN results.cox.model IS 'univariable (one model per stratum variable), multivariable, or multivariable_site_stratified (the multivariable model with a baseline hazard per site, R strata(site); SAP A5 beside the pooled model).';
COMMENT ON COLUMN results.cox.covariates IS 'The model''s variables as specified, comma-separated: the stratum variable for a univariable model; age_group, sex, charlson, prior_dmt, prior_high_efficacy, edss for the multivariable one. With model it identifies the model.';
COMMENT ON COLUMN results.cox.variable IS 'The variable of the coefficient, or GLOBAL for the row of the global PH test of the model.';
COMMENT ON COLUMN results.cox.level IS 'The non-reference level (SAP label) compared with reference_level; NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.reference_level IS 'The SAP reference level of the variable (site: first alphabetically); NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.level_order IS 'Order of the level in the SAP (2 = first non-reference level); NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.coef IS 'Log hazard ratio; NULL when not estimable (see note).';
COMMENT ON COLUMN results.cox.se IS 'Standard error of coef from the inverse information (model-based, not robust).';
COMMENT ON COLUMN results.cox.hr IS 'Hazard ratio exp(coef) versus the reference level, adjusted for the model''s other variables.';
COMMENT ON COLUMN results.cox.ci_lower IS 'Wald 95% lower limit exp(coef - 1.959964 se).';
COMMENT ON COLUMN results.cox.ci_upper IS 'Wald 95% upper limit exp(coef + 1.959964 se).';
COMMENT ON COLUMN results.cox.p_value IS 'Wald p-value, 2 * (1 - Phi(|coef / se|)).';
COMMENT ON COLUMN results.cox.ph_chisq IS 'Proportional-hazards score test (R cox.zph, transform "km") of the variable''s term (all its levels together), repeated on each level row; on the GLOBAL row the global test of the model.';
COMMENT ON COLUMN results.cox.ph_df IS 'Degrees of freedom of the PH test: the term''s coefficients in the model (GLOBAL: all coefficients).';
COMMENT ON COLUMN results.cox.ph_p_value IS 'P-value of the PH test (chi-square, ph_df degrees of freedom). Small values suggest non-proportional hazards.';
COMMENT ON COLUMN results.cox.n_patients IS 'Patients in the fitted model (after leaving out levels without events).';
COMMENT ON COLUMN results.cox.n_events IS 'Events in the fitted model.';
COMMENT ON COLUMN results.cox.level_patients IS 'Patients of the row''s level in the model''s data (before patients of levels without events are left out); NULL on the GLOBAL row. For disclosure control of the estimate (SAP 5).';
COMMENT ON COLUMN results.cox.level_events IS 'Events of the row''s level in the model''s data; NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.reference_patients IS 'Patients of the reference level in the model''s data; NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.reference_events IS 'Events of the reference level in the model''s data; NULL on the GLOBAL row.';
COMMENT ON COLUMN results.cox.note IS 'Why an estimate is NULL (no patients or no events in the level or the reference level, variable not in the model, model not converged) or a fitting message; NULL otherwise.';
