-- results.dq_quarantine
-- Purpose: data quality (SAP 4, A7): quarantined rows per delivery, table and reason (the first
--          contract rule a row broke), for the deliveries received before the run, kept with the run.
-- Grain:   one row per run, delivery, table and reason with at least one quarantined row.
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from audit.quarantine
--          (GROUP BY in DuckDB) in the run's transaction. No row-level data: counts only.
CREATE TABLE IF NOT EXISTS results.dq_quarantine (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    delivery_id BIGINT NOT NULL,
    table_name VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL,
    PRIMARY KEY (run_id, variant, delivery_id, table_name, reason)
);

COMMENT ON TABLE results.dq_quarantine IS 'Quarantined rows per delivery, spec table and reason code of the extract contract, for the deliveries received before the run. Grain: run, delivery, table and reason. SAP 4 (A7).';
COMMENT ON COLUMN results.dq_quarantine.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.dq_quarantine.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.dq_quarantine.delivery_id IS 'The delivery (results.dq_deliveries).';
COMMENT ON COLUMN results.dq_quarantine.table_name IS 'Spec table the rows came from.';
COMMENT ON COLUMN results.dq_quarantine.reason IS 'Reason code of the first contract rule the row broke (schemas/, extract contract reasons).';
COMMENT ON COLUMN results.dq_quarantine.n_rows IS 'Quarantined rows with this reason (exact; the rows of a delivery and table add up to results.dq_rows.rows_quarantined).';
