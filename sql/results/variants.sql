-- results.variants
-- Purpose: the analyses a run made: main (the SAP's primary analysis) and each sensitivity analysis
--          (SAP A12), with what it changed, so every results row's variant is described here.
-- Grain:   one row per run and variant.
-- Usage:   created here, filled by vigil.analysis.runs.analyse (vigil.analysis.variants).
CREATE TABLE IF NOT EXISTS results.variants (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL,
    sensitivity VARCHAR,
    description VARCHAR NOT NULL,
    analyses JSON NOT NULL,
    parameters JSON NOT NULL,
    PRIMARY KEY (run_id, variant)
);

COMMENT ON TABLE results.variants IS 'The analyses of each run: main and every sensitivity analysis (SAP A12) with its parameters. Grain: run and variant.';
COMMENT ON COLUMN results.variants.run_id IS 'The run (results.runs).';
COMMENT ON COLUMN results.variants.variant IS 'main (the SAP''s primary analysis) or the name of a sensitivity analysis, as in the variant column of every results table.';
COMMENT ON COLUMN results.variants.sensitivity IS 'The SAP A12 sensitivity analysis it belongs to (censor-at-switch, leave-one-site-out, course-gap-60), custom for a statistician''s own, NULL for main.';
COMMENT ON COLUMN results.variants.description IS 'What the variant changes, in words.';
COMMENT ON COLUMN results.variants.analyses IS 'The SAP analyses computed in the variant (e.g. ["A1", "A5"]), JSON array.';
COMMENT ON COLUMN results.variants.parameters IS 'Every parameter of the variant that changes a number: the cohort parameters (course_gap_days, censor_at_switch) and the site left out, JSON.';
