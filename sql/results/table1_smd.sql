-- results.table1_smd
-- Purpose: the standardised mean differences of Table 1 (SAP 4, A6): each EDSS category against the
--          reference category (the first EDSS level of the SAP), per characteristic, as the report shows
--          them (rounded to 2 decimals there).
-- Grain:   one row per run, characteristic and compared EDSS category (every EDSS level but the reference).
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from the run's
--          results.table1_counts and results.table1_summary values (exact counts, so the value does not
--          depend on disclosure control; the report decides whether to show it).
-- Method:  continuous: |m1 - m0| / sqrt((s1^2 + s0^2) / 2) (0 when both SDs are 0 and the means equal);
--          categorical: Yang & Dalton (2012), sqrt((p1 - p0)' S^-1 (p1 - p0)) over the levels but the
--          first, S = (S1 + S0) / 2, S_g = diag(p_g) - p_g p_g' (pseudo-inverse), levels absent from both
--          columns dropped; for two levels |p1 - p0| / sqrt((p1 (1 - p1) + p0 (1 - p0)) / 2).
CREATE TABLE IF NOT EXISTS results.table1_smd (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    variable VARCHAR NOT NULL,
    edss VARCHAR NOT NULL,
    reference_edss VARCHAR NOT NULL,
    smd DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, variable, edss)
);

COMMENT ON TABLE results.table1_smd IS 'Table 1 absolute standardised mean differences of each baseline EDSS category against the reference category, per characteristic (continuous: difference of means over the pooled SD; categorical: Yang & Dalton multivariate SMD). Grain: run, characteristic and compared EDSS category. SAP 4 (A6).';
COMMENT ON COLUMN results.table1_smd.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.table1_smd.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.table1_smd.variable IS 'Characteristic: age_at_index and follow_up_years (continuous, from results.table1_summary), edss_score (never computed: the columns are defined by it), or a categorical characteristic of results.table1_counts.';
COMMENT ON COLUMN results.table1_smd.edss IS 'The compared EDSS category (every EDSS level of the SAP but the reference).';
COMMENT ON COLUMN results.table1_smd.reference_edss IS 'The reference EDSS category (the first EDSS level of the SAP, 0-2.5).';
COMMENT ON COLUMN results.table1_smd.smd IS 'Absolute standardised mean difference; NULL when not computable (see note).';
COMMENT ON COLUMN results.table1_smd.note IS 'Why smd is NULL (a column without patients or without an SD, the characteristic that defines the columns); NULL otherwise.';
