-- results.fine_gray
-- Purpose: Fine-Gray subdistribution hazard ratios of the primary outcome with death as a competing
--          event (SAP 4, A10): one univariable model per stratum variable and the A5 multivariable
--          model, treatment contrasts against the SAP reference levels.
-- Grain:   one row per run, variant, outcome (first_serious), model (its covariates) and non-reference
--          level of each variable.
-- Rules:   as R cmprsk::crr(t, status, covariates) with failcode 1 and cencode 0 (vigil.stats.finegray):
--          robust (sandwich) variance, Wald 95% CI and p. A level without events, or a reference level
--          without events, has no finite estimate: NULL with a note (docs/analysis-methods.md).
-- Usage:   created here, filled by vigil.analysis.fine_gray.
CREATE TABLE IF NOT EXISTS results.fine_gray (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    covariates VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    reference_level VARCHAR NOT NULL,
    level_order INTEGER NOT NULL,
    coef DOUBLE,
    se DOUBLE,
    shr DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    p_value DOUBLE,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    n_competing BIGINT NOT NULL,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, model, covariates, variable, level)
);

COMMENT ON TABLE results.fine_gray IS 'Fine-Gray subdistribution hazard ratios of the first serious infection, death competing (R cmprsk::crr), univariable per stratum variable and multivariable. Grain: run, variant, outcome, model and non-reference level. SAP 4 (A10).';
COMMENT ON COLUMN results.fine_gray.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.fine_gray.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.fine_gray.outcome IS 'first_serious (the primary outcome).';
COMMENT ON COLUMN results.fine_gray.model IS 'univariable or multivariable (as results.cox).';
COMMENT ON COLUMN results.fine_gray.covariates IS 'The model''s covariates, comma-separated, in model order.';
COMMENT ON COLUMN results.fine_gray.variable IS 'The stratum variable of the coefficient.';
COMMENT ON COLUMN results.fine_gray.level IS 'Its non-reference level.';
COMMENT ON COLUMN results.fine_gray.reference_level IS 'The variable''s reference level (SAP 3).';
COMMENT ON COLUMN results.fine_gray.level_order IS 'Order of the level in the SAP (1 = reference).';
COMMENT ON COLUMN results.fine_gray.coef IS 'Log subdistribution hazard ratio (crr coef).';
COMMENT ON COLUMN results.fine_gray.se IS 'Robust standard error (square root of the diagonal of crr var).';
COMMENT ON COLUMN results.fine_gray.shr IS 'Subdistribution hazard ratio exp(coef).';
COMMENT ON COLUMN results.fine_gray.ci_lower IS 'Wald 95% lower limit exp(coef - 1.959964 se).';
COMMENT ON COLUMN results.fine_gray.ci_upper IS 'Wald 95% upper limit exp(coef + 1.959964 se).';
COMMENT ON COLUMN results.fine_gray.p_value IS 'Two-sided Wald p.';
COMMENT ON COLUMN results.fine_gray.n_patients IS 'Patients in the model (exact).';
COMMENT ON COLUMN results.fine_gray.n_events IS 'First serious infections in the model (exact).';
COMMENT ON COLUMN results.fine_gray.n_competing IS 'Deaths without the event in the model (exact).';
COMMENT ON COLUMN results.fine_gray.note IS 'Why a value is NULL, or what the fit left out; NULL otherwise.';
