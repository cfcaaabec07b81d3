-- results.unexpected_terms
-- Purpose: A15 the unexpected (SAP 7): serious and opportunistic infections by MedDRA preferred term at
--          each look, with the look at which each term first appeared and the number with onset within
--          30 days of a course start.
-- Grain:   one row per run, term set and term.
-- Usage:   written by vigil.analysis.monitoring.run_monitoring from analysis.infection_terms; first_look
--          from the earlier looks' rows.
CREATE TABLE IF NOT EXISTS results.unexpected_terms (
    run_id           BIGINT NOT NULL,
    variant          VARCHAR NOT NULL DEFAULT 'main',
    look             INTEGER NOT NULL,
    term_set         VARCHAR NOT NULL,
    meddra_pt        VARCHAR NOT NULL,
    n_events         BIGINT NOT NULL,
    n_within_30_days BIGINT NOT NULL,
    first_look       INTEGER NOT NULL,
    PRIMARY KEY (run_id, variant, term_set, meddra_pt)
);

COMMENT ON TABLE results.unexpected_terms IS 'A15: serious and opportunistic infections by MedDRA preferred term at each look; a term is new at the look when first_look = look. Grain: run, term set and term. SAP 7.';
COMMENT ON COLUMN results.unexpected_terms.run_id IS 'The run (results.runs).';
COMMENT ON COLUMN results.unexpected_terms.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.unexpected_terms.look IS 'The look of the run (results.looks).';
COMMENT ON COLUMN results.unexpected_terms.term_set IS 'serious or opportunistic (analysis.infection_terms).';
COMMENT ON COLUMN results.unexpected_terms.meddra_pt IS 'MedDRA preferred term, matched ignoring case, under its most frequent delivered spelling.';
COMMENT ON COLUMN results.unexpected_terms.n_events IS 'Infections with the term in follow-up, cumulative at the look.';
COMMENT ON COLUMN results.unexpected_terms.n_within_30_days IS 'Of them, those with onset 0-30 days after the start of a course.';
COMMENT ON COLUMN results.unexpected_terms.first_look IS 'The look at which the term first appeared in this term set (= look: new at this look).';
