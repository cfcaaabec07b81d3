-- results.sequential_test
-- Purpose: A14, the group-sequential Poisson MaxSPRT of the primary outcome at each look (SAP 7), as R's
--          Sequential 4.5 computes it (vigil.stats.sequential).
-- Grain:   one row per run. A look's numbers are computed once, by the run that made the look; a run
--          that repeats the look carries the same row (no alpha spent again).
-- Usage:   written by vigil.analysis.monitoring.run_monitoring.
CREATE TABLE IF NOT EXISTS results.sequential_test (
    run_id          BIGINT NOT NULL,
    variant         VARCHAR NOT NULL DEFAULT 'main',
    surveillance    VARCHAR NOT NULL,
    look            INTEGER NOT NULL,
    outcome         VARCHAR NOT NULL,
    observed        BIGINT NOT NULL,
    expected        DOUBLE NOT NULL,
    sir             DOUBLE,
    llr             DOUBLE NOT NULL,
    critical_events INTEGER,
    critical_llr    DOUBLE,
    alpha_target    DOUBLE,
    alpha_spent     DOUBLE,
    signal          BOOLEAN NOT NULL,
    signal_look     INTEGER,
    status          VARCHAR NOT NULL,
    computed_by_run BIGINT NOT NULL,
    note            VARCHAR,
    PRIMARY KEY (run_id, variant)
);

COMMENT ON TABLE results.sequential_test IS 'A14: group-sequential Poisson MaxSPRT of the primary outcome (power-type alpha spending), one row per run for its look. Grain: run. SAP 7.';
COMMENT ON COLUMN results.sequential_test.run_id IS 'The run (results.runs).';
COMMENT ON COLUMN results.sequential_test.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.sequential_test.surveillance IS 'The surveillance (results.looks.surveillance).';
COMMENT ON COLUMN results.sequential_test.look IS 'The look (results.looks).';
COMMENT ON COLUMN results.sequential_test.outcome IS 'first_serious, the primary outcome.';
COMMENT ON COLUMN results.sequential_test.observed IS 'O_k: cumulative observed first events at the look.';
COMMENT ON COLUMN results.sequential_test.expected IS 'E_k: cumulative expected events at the look (A13 overall).';
COMMENT ON COLUMN results.sequential_test.sir IS 'O_k / E_k.';
COMMENT ON COLUMN results.sequential_test.llr IS 'Log-likelihood ratio: 0 if O <= E, else (E - O) + O ln(O/E).';
COMMENT ON COLUMN results.sequential_test.critical_events IS 'Critical value in events: a signal when O >= it; NULL before M events, after a signal and where Sequential reports none.';
COMMENT ON COLUMN results.sequential_test.critical_llr IS 'The critical value in the LLR scale: LLR(critical_events, E).';
COMMENT ON COLUMN results.sequential_test.alpha_target IS 'Alpha to be spent by this look: alpha min(1, E/T)^rho (0 before the test starts; NULL after a signal).';
COMMENT ON COLUMN results.sequential_test.alpha_spent IS 'Alpha actually spent by this look (exact Poisson probability of a signal so far under the null).';
COMMENT ON COLUMN results.sequential_test.signal IS 'True from the look that signalled on (a signal is final).';
COMMENT ON COLUMN results.sequential_test.signal_look IS 'The look that signalled, if any.';
COMMENT ON COLUMN results.sequential_test.status IS 'before_M, no_signal, signal, signalled_earlier, end_alpha_left, end_alpha_spent, or ended (a look after the end of surveillance: no test).';
COMMENT ON COLUMN results.sequential_test.computed_by_run IS 'The run that computed the look (its first run).';
COMMENT ON COLUMN results.sequential_test.note IS 'O or E fell since the previous look (a correction), the end of surveillance, a repeated look.';
