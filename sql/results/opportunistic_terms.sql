-- results.opportunistic_terms
-- Purpose: the MedDRA preferred terms that defined an opportunistic infection in the run (SAP 2,
--          secondary outcome b), as loaded from the code list whose version and sha256 the run records
--          (results.runs.codelist_versions), so that the report of any run lists the terms that run used.
-- Grain:   one row per run and term.
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from codelists.opportunistic_terms
--          in the run's transaction.
CREATE TABLE IF NOT EXISTS results.opportunistic_terms (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    meddra_pt VARCHAR NOT NULL,
    PRIMARY KEY (run_id, variant, meddra_pt)
);

COMMENT ON TABLE results.opportunistic_terms IS 'The opportunistic-infection term list used by the run (code list opportunistic_terms at the version in results.runs.codelist_versions). Grain: run and MedDRA preferred term. SAP 2.';
COMMENT ON COLUMN results.opportunistic_terms.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.opportunistic_terms.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.opportunistic_terms.meddra_pt IS 'MedDRA preferred term, as listed in the code list (matched ignoring case).';
