-- results.cox_models
-- Purpose: what R's coxph reports for each Cox model of A5 (SAP 4): the partial log-likelihood at the
--          estimate and at beta = 0, AIC and Harrell's concordance with its standard error.
-- Grain:   one row per run, variant, outcome and model (univariable per stratum variable, multivariable,
--          multivariable_site_stratified), as the models of results.cox.
-- Rules:   as R survival: fit$loglik[2], fit$loglik[1], AIC(fit) = -2 loglik + 2 x estimated coefficients,
--          fit$concordance (concordancefit, timewt "n"; ties in the predictor count 1/2; within strata
--          for the site-stratified model). Computed on the patients the model uses (results.cox note:
--          patients of a level without events are left out). NULL with a note where no model was fitted.
-- Usage:   created here, filled by vigil.analysis.run_analyses (vigil.analysis.cox, vigil.stats.survival).
CREATE TABLE IF NOT EXISTS results.cox_models (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    covariates VARCHAR NOT NULL,
    loglik DOUBLE,
    loglik_null DOUBLE,
    aic DOUBLE,
    concordance DOUBLE,
    concordance_se DOUBLE,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, model, covariates)
);

COMMENT ON TABLE results.cox_models IS 'Per Cox model of A5: partial log-likelihood (at the estimate and at 0), AIC and Harrell''s concordance, as R coxph reports them. Grain: run, variant, outcome, model. SAP 4 (A5).';
COMMENT ON COLUMN results.cox_models.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.cox_models.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.cox_models.outcome IS 'first_serious or first_opportunistic.';
COMMENT ON COLUMN results.cox_models.model IS 'univariable, multivariable, or multivariable_site_stratified (the multivariable model with a baseline hazard per site, R strata(site)).';
COMMENT ON COLUMN results.cox_models.covariates IS 'The model''s covariates, comma-separated, in model order.';
COMMENT ON COLUMN results.cox_models.loglik IS 'Partial log-likelihood (Efron) at the estimate: coxph fit$loglik[2].';
COMMENT ON COLUMN results.cox_models.loglik_null IS 'Partial log-likelihood at beta = 0: fit$loglik[1].';
COMMENT ON COLUMN results.cox_models.aic IS 'AIC(fit) = -2 loglik + 2 x the number of estimated coefficients.';
COMMENT ON COLUMN results.cox_models.concordance IS 'Harrell''s C of the linear predictor: fit$concordance["concordance"].';
COMMENT ON COLUMN results.cox_models.concordance_se IS 'Its standard error: sqrt(fit$concordance["var"]) (infinitesimal jackknife).';
COMMENT ON COLUMN results.cox_models.n_patients IS 'Patients in the model (exact).';
COMMENT ON COLUMN results.cox_models.n_events IS 'Events in the model (exact).';
COMMENT ON COLUMN results.cox_models.note IS 'Why the values are NULL, or what the fit left out; NULL otherwise.';
