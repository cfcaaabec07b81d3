-- results.logrank
-- Purpose: log-rank test of the first-event outcomes across the levels of each stratum variable,
--          death censored (SAP 4, A3). Equals R's survdiff (rho = 0).
-- Grain:   one row per run, outcome and stratifier.
-- Usage:   created here, filled by vigil.analysis.run_analyses.
CREATE TABLE IF NOT EXISTS results.logrank (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    chisq DOUBLE,
    df INTEGER,
    p_value DOUBLE,
    n_levels INTEGER NOT NULL,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, stratifier)
);

COMMENT ON TABLE results.logrank IS 'Log-rank test (death censored) across the levels of each stratum variable, as R survdiff. Grain: run, outcome and stratifier. SAP 4 (A3).';
COMMENT ON COLUMN results.logrank.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.logrank.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.logrank.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN results.logrank.stratifier IS 'Stratum variable whose levels are compared: site, sex, age_group, charlson, prior_dmt, prior_high_efficacy, edss.';
COMMENT ON COLUMN results.logrank.chisq IS 'Log-rank chi-square; NULL when no test is possible (fewer than two levels with patients, or no events).';
COMMENT ON COLUMN results.logrank.df IS 'Degrees of freedom: levels with patients at risk at an event time, minus 1 (as survdiff).';
COMMENT ON COLUMN results.logrank.p_value IS 'P-value from the chi-square distribution with df degrees of freedom; NULL when no test.';
COMMENT ON COLUMN results.logrank.n_levels IS 'Levels of the stratifier with patients.';
COMMENT ON COLUMN results.logrank.n_patients IS 'Patients in the test.';
COMMENT ON COLUMN results.logrank.n_events IS 'Events in the test.';
COMMENT ON COLUMN results.logrank.note IS 'Why there is no test; NULL otherwise.';
