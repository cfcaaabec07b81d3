-- results.dq_rows
-- Purpose: data quality (SAP 4, A7): rows received, loaded and quarantined per delivery and table of
--          the deliveries received before the run, kept with the run.
-- Grain:   one row per run, delivery and spec table (refused deliveries load nothing and have no row).
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from audit.delivery_tables in
--          the run's transaction.
CREATE TABLE IF NOT EXISTS results.dq_rows (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    delivery_id BIGINT NOT NULL,
    table_name VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    rows_received BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    PRIMARY KEY (run_id, variant, delivery_id, table_name)
);

COMMENT ON TABLE results.dq_rows IS 'Rows received, loaded into staging and quarantined per delivery and spec table, for the deliveries received before the run. Grain: run, delivery and table. SAP 4 (A7).';
COMMENT ON COLUMN results.dq_rows.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.dq_rows.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.dq_rows.delivery_id IS 'The delivery (results.dq_deliveries).';
COMMENT ON COLUMN results.dq_rows.table_name IS 'Spec table (extract-spec), e.g. patients, infections.';
COMMENT ON COLUMN results.dq_rows.source_file IS 'File of the delivery the table was read from.';
COMMENT ON COLUMN results.dq_rows.rows_received IS 'Data rows in the file (exact; disclosure control applies only to what leaves the database).';
COMMENT ON COLUMN results.dq_rows.rows_loaded IS 'Rows loaded into staging.';
COMMENT ON COLUMN results.dq_rows.rows_quarantined IS 'Rows quarantined (rows_received = rows_loaded + rows_quarantined).';
