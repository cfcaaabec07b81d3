-- audit.delivery_tables: rows received, loaded and quarantined per delivery and table (SAP A7).
-- Grain: one row per accepted delivery and spec table. rows_received = rows_loaded + rows_quarantined.
CREATE TABLE IF NOT EXISTS audit.delivery_tables (
    delivery_id      BIGINT NOT NULL,
    table_name       VARCHAR NOT NULL,
    source_file      VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    rows_received    BIGINT NOT NULL,
    rows_loaded      BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, table_name),
    CHECK (rows_received = rows_loaded + rows_quarantined)
);

COMMENT ON TABLE audit.delivery_tables IS 'Rows received, loaded into staging and quarantined, per accepted delivery and spec table (SAP A7).';
COMMENT ON COLUMN audit.delivery_tables.delivery_id IS 'The delivery (audit.deliveries).';
COMMENT ON COLUMN audit.delivery_tables.table_name IS 'Spec table name, e.g. infections.';
COMMENT ON COLUMN audit.delivery_tables.source_file IS 'File name in the delivery.';
COMMENT ON COLUMN audit.delivery_tables.sha256 IS 'sha256 of the file as received (equals the manifest).';
COMMENT ON COLUMN audit.delivery_tables.rows_received IS 'Data rows in the file (equals the manifest row count).';
COMMENT ON COLUMN audit.delivery_tables.rows_loaded IS 'Rows that passed every rule and went to staging.';
COMMENT ON COLUMN audit.delivery_tables.rows_quarantined IS 'Rows kept in audit.quarantine with their reason.';
