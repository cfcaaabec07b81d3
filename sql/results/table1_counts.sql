-- results.table1_counts
-- Purpose: the counts of Table 1 (SAP 4, A6): patients of the run's cohort per baseline
--          characteristic and level, overall and by baseline EDSS category, kept with the run so that
--          the report of any recorded run reads them from results, never from cohort.patients
--          (which the next run rebuilds).
-- Grain:   one row per run, characteristic (variable), level and EDSS column (edss NULL = the Overall
--          column), for the cells with at least one patient (a cell without a row is 0).
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from cohort.patients
--          (GROUP BY in DuckDB) in the run's transaction; written through vigil.analysis.results, which
--          refuses a run_id already present.
CREATE TABLE IF NOT EXISTS results.table1_counts (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    variable VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    level_order INTEGER NOT NULL,
    edss VARCHAR,
    n_patients BIGINT NOT NULL
);

COMMENT ON TABLE results.table1_counts IS 'Table 1 counts: cohort patients per baseline characteristic and level, overall (edss NULL) and by baseline EDSS category. Grain: run, variable, level and EDSS column; cells with patients only. SAP 4 (A6).';
COMMENT ON COLUMN results.table1_counts.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.table1_counts.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.table1_counts.variable IS 'Characteristic, vigil.report.data.TABLE1_CATEGORICAL: age_group, sex, site, charlson, prior_dmt, prior_high_efficacy (stratum variables, SAP 3), courses (alemtuzumab courses in follow-up: 1, 2, >=3) and died (Yes/No, death in follow-up).';
COMMENT ON COLUMN results.table1_counts.level IS 'Level of the characteristic (stratum variables: the SAP labels).';
COMMENT ON COLUMN results.table1_counts.level_order IS 'Order of the level in Table 1: the SAP order for stratum variables (as results.incidence.stratum_order of the run), else TABLE1_LEVELS then other levels alphabetically.';
COMMENT ON COLUMN results.table1_counts.edss IS 'Baseline EDSS category of the column (0-2.5, 3.0-5.5, >=6.0, unknown); NULL for the Overall column (all patients).';
COMMENT ON COLUMN results.table1_counts.n_patients IS 'Cohort patients with the level in the column (exact; disclosure control applies only to what leaves the database). The report shows n (% of the column).';
