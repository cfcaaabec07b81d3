-- results.attrition
-- Purpose: the cohort attrition of a run, kept with the run that made it (SAP 1; SAP 6 traceability).
-- Grain:   one row per run and SAP attrition step (1 to 5).
-- Usage:   created here; vigil.analysis.results.insert_attrition copies cohort.attrition into it as run run_id
--          (an integer, increasing, shared by every results table of a run) in the run's transaction.
--          The primary key refuses a second insert of the same run: a run's results are never overwritten.
CREATE TABLE IF NOT EXISTS results.attrition (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    step INTEGER NOT NULL,
    description VARCHAR NOT NULL,
    n_remaining BIGINT NOT NULL,
    n_excluded BIGINT NOT NULL,
    PRIMARY KEY (run_id, variant, step)
);

COMMENT ON TABLE results.attrition IS 'Cohort attrition per run in the SAP order: patients remaining after, and excluded at, each step. Grain: run and attrition step. SAP 1.';
COMMENT ON COLUMN results.attrition.run_id IS 'The run that made the row (increasing integer shared by every results table of a run).';
COMMENT ON COLUMN results.attrition.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.attrition.step IS 'SAP attrition step, 1 to 5, in the order they are applied.';
COMMENT ON COLUMN results.attrition.description IS 'The step''s criterion, in words.';
COMMENT ON COLUMN results.attrition.n_remaining IS 'Patients remaining after the step (exact; disclosure control applies only to what leaves the database).';
COMMENT ON COLUMN results.attrition.n_excluded IS 'Patients excluded at this step (the first step they fail).';
