-- results.cox_tests
-- Purpose: a joint test per variable of the A5 multivariable Cox model (SAP 4): does the variable
--          (all its levels together) add to the model with the others?
-- Grain:   one row per run, variant, outcome, model (multivariable) and variable. The site-stratified
--          model has none: the SAP asks for the multivariable model's, and each test is a refit.
-- Rules:   Wald: b' V^-1 b over the variable's estimated coefficients (df = their number); likelihood
--          ratio: as R drop1(fit, test = "Chisq"), 2 (loglik of the model - loglik refitted without the
--          variable on the same patients). A variable not in the model (fewer than two levels with
--          events) or without an estimated coefficient has NULL tests and a note.
-- Usage:   created here, filled by vigil.analysis.run_analyses (vigil.stats.survival.cox_term_tests).
CREATE TABLE IF NOT EXISTS results.cox_tests (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    covariates VARCHAR NOT NULL,
    variable VARCHAR NOT NULL,
    wald_chisq DOUBLE,
    wald_df INTEGER,
    wald_p DOUBLE,
    lr_chisq DOUBLE,
    lr_df INTEGER,
    lr_p DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, model, variable)
);

COMMENT ON TABLE results.cox_tests IS 'Joint Wald and likelihood-ratio (drop1) test of each variable of the A5 multivariable Cox model. Grain: run, variant, outcome, model, variable. SAP 4 (A5).';
COMMENT ON COLUMN results.cox_tests.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.cox_tests.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.cox_tests.outcome IS 'first_serious or first_opportunistic.';
COMMENT ON COLUMN results.cox_tests.model IS 'multivariable (the A5 multivariable model).';
COMMENT ON COLUMN results.cox_tests.covariates IS 'The model''s covariates, comma-separated, in model order.';
COMMENT ON COLUMN results.cox_tests.variable IS 'The variable tested (all its non-reference levels jointly).';
COMMENT ON COLUMN results.cox_tests.wald_chisq IS 'Wald chi-square b'' V^-1 b over the variable''s estimated coefficients.';
COMMENT ON COLUMN results.cox_tests.wald_df IS 'Its degrees of freedom: the variable''s estimated coefficients.';
COMMENT ON COLUMN results.cox_tests.wald_p IS 'Upper chi-square tail probability of wald_chisq.';
COMMENT ON COLUMN results.cox_tests.lr_chisq IS 'Likelihood-ratio chi-square of dropping the variable (R drop1 LRT).';
COMMENT ON COLUMN results.cox_tests.lr_df IS 'Its degrees of freedom (estimated coefficients lost), as drop1''s Df.';
COMMENT ON COLUMN results.cox_tests.lr_p IS 'Upper chi-square tail probability of lr_chisq (drop1 Pr(>Chi)); NULL at df 0.';
COMMENT ON COLUMN results.cox_tests.note IS 'Why the tests are NULL; NULL otherwise.';
