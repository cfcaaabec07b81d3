-- results.table1_summary
-- Purpose: the continuous rows of Table 1 (SAP 4, A6) per column: column size, age at index,
--          baseline EDSS score and follow-up, kept with the run (see results.table1_counts).
-- Grain:   one row per run and EDSS column: edss NULL (Overall) and each EDSS category with patients.
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from cohort.patients
--          (DuckDB avg, stddev_samp, quantile_cont) in the run's transaction.
CREATE TABLE IF NOT EXISTS results.table1_summary (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    edss VARCHAR,
    n_patients BIGINT NOT NULL,
    age_mean DOUBLE,
    age_sd DOUBLE,
    edss_n BIGINT NOT NULL,
    edss_mean DOUBLE,
    edss_sd DOUBLE,
    edss_median DOUBLE,
    edss_q1 DOUBLE,
    edss_q3 DOUBLE,
    fu_mean DOUBLE,
    fu_sd DOUBLE,
    fu_median DOUBLE,
    fu_q1 DOUBLE,
    fu_q3 DOUBLE
);

COMMENT ON TABLE results.table1_summary IS 'Table 1 continuous characteristics per column: patients, age at index (mean, SD), baseline EDSS score and follow-up in years (mean, SD, median, quartiles), overall (edss NULL) and by baseline EDSS category. Grain: run and EDSS column. SAP 4 (A6).';
COMMENT ON COLUMN results.table1_summary.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.table1_summary.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.table1_summary.edss IS 'Baseline EDSS category of the column; NULL for the Overall column. Categories without patients have no row.';
COMMENT ON COLUMN results.table1_summary.n_patients IS 'Cohort patients in the column (the column total of Table 1).';
COMMENT ON COLUMN results.table1_summary.age_mean IS 'Mean age at index, years.';
COMMENT ON COLUMN results.table1_summary.age_sd IS 'Sample standard deviation of the age at index (stddev_samp); NULL with one patient.';
COMMENT ON COLUMN results.table1_summary.edss_n IS 'Patients with a baseline EDSS score (the others are edss unknown).';
COMMENT ON COLUMN results.table1_summary.edss_mean IS 'Mean baseline EDSS score; NULL without a score.';
COMMENT ON COLUMN results.table1_summary.edss_sd IS 'Sample standard deviation of the baseline EDSS score.';
COMMENT ON COLUMN results.table1_summary.edss_median IS 'Median baseline EDSS score (quantile_cont, linear interpolation).';
COMMENT ON COLUMN results.table1_summary.edss_q1 IS 'First quartile of the baseline EDSS score (quantile_cont).';
COMMENT ON COLUMN results.table1_summary.edss_q3 IS 'Third quartile of the baseline EDSS score (quantile_cont).';
COMMENT ON COLUMN results.table1_summary.fu_mean IS 'Mean follow-up, person-years (days from index to exit inclusive / 365.25).';
COMMENT ON COLUMN results.table1_summary.fu_sd IS 'Sample standard deviation of the follow-up in years.';
COMMENT ON COLUMN results.table1_summary.fu_median IS 'Median follow-up in years (quantile_cont).';
COMMENT ON COLUMN results.table1_summary.fu_q1 IS 'First quartile of the follow-up in years (quantile_cont).';
COMMENT ON COLUMN results.table1_summary.fu_q3 IS 'Third quartile of the follow-up in years (quantile_cont).';
