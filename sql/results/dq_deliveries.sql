-- results.dq_deliveries
-- Purpose: data quality (SAP 4, A7): every delivery received before the run, with its status and
--          reason as they were when the run was made, so that the report of any recorded run shows the
--          deliveries as of that run (audit.deliveries shows them as of today).
-- Grain:   one row per run and delivery (audit.delivery_receipts) received before the run.
-- Usage:   created here, filled by vigil.analysis.describe.run_descriptives from audit.deliveries in the
--          run's transaction.
CREATE TABLE IF NOT EXISTS results.dq_deliveries (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    delivery_id BIGINT NOT NULL,
    site_id VARCHAR,
    data_cut DATE,
    created_at TIMESTAMPTZ,
    folder VARCHAR NOT NULL,
    file_format VARCHAR,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    superseded_by BIGINT,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, variant, delivery_id)
);

COMMENT ON TABLE results.dq_deliveries IS 'Deliveries received before the run with their status at the run: accepted (analysed in the run), superseded or refused, and why. Grain: run and delivery. SAP 4 (A7).';
COMMENT ON COLUMN results.dq_deliveries.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.dq_deliveries.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.dq_deliveries.delivery_id IS 'Identifier of the delivery (audit.delivery_receipts).';
COMMENT ON COLUMN results.dq_deliveries.site_id IS 'Site from the manifest; NULL when the manifest could not be read.';
COMMENT ON COLUMN results.dq_deliveries.data_cut IS 'Data cut from the manifest.';
COMMENT ON COLUMN results.dq_deliveries.created_at IS 'Creation time from the manifest.';
COMMENT ON COLUMN results.dq_deliveries.folder IS 'Delivery folder as ingested (delivered text: shown inert).';
COMMENT ON COLUMN results.dq_deliveries.file_format IS 'csv or parquet.';
COMMENT ON COLUMN results.dq_deliveries.status IS 'Status when the run was made: accepted (the site''s current delivery, analysed in this run: results.runs.deliveries), superseded or refused.';
COMMENT ON COLUMN results.dq_deliveries.reason IS 'Refusal reason (naming the file), or which delivery superseded it, as recorded when the run was made.';
COMMENT ON COLUMN results.dq_deliveries.superseded_by IS 'The delivery that had replaced this one when the run was made, if any.';
COMMENT ON COLUMN results.dq_deliveries.received_at IS 'When the pipeline judged the delivery.';
