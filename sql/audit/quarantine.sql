-- audit.quarantine: every delivered row that broke a row rule of the extract spec (section 3),
-- kept with its reason, file and line. Grain: one row per quarantined row. Append-only.
CREATE TABLE IF NOT EXISTS audit.quarantine (
    delivery_id  BIGINT NOT NULL,
    table_name   VARCHAR NOT NULL,
    site_id      VARCHAR NOT NULL,
    data_cut     DATE NOT NULL,
    source_file  VARCHAR NOT NULL,
    line_number  BIGINT NOT NULL,
    column_name  VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    rule_id      VARCHAR NOT NULL,
    all_rules    VARCHAR[] NOT NULL,
    raw_values   JSON NOT NULL
);

COMMENT ON TABLE audit.quarantine IS 'Rows refused by a row rule of the extract spec, one row per quarantined row, with the reason and the values as delivered.';
COMMENT ON COLUMN audit.quarantine.delivery_id IS 'The delivery (audit.deliveries).';
COMMENT ON COLUMN audit.quarantine.table_name IS 'Spec table name, e.g. infections.';
COMMENT ON COLUMN audit.quarantine.site_id IS 'Site of the delivery.';
COMMENT ON COLUMN audit.quarantine.data_cut IS 'Data cut of the delivery.';
COMMENT ON COLUMN audit.quarantine.source_file IS 'File the row was read from.';
COMMENT ON COLUMN audit.quarantine.line_number IS 'Line of the row in the CSV file (header = line 1; a quoted newline makes a row span lines, this is its first), or row number in a Parquet file.';
COMMENT ON COLUMN audit.quarantine.column_name IS 'Column of the first rule the row broke.';
COMMENT ON COLUMN audit.quarantine.reason IS 'Reason code of the first rule broken (schemas/extract-v1.0.yaml, reasons), or patient_quarantined / no_follow_up when it follows from another row.';
COMMENT ON COLUMN audit.quarantine.rule_id IS 'Contract rule id of the first rule broken.';
COMMENT ON COLUMN audit.quarantine.all_rules IS 'Every rule the row broke, in contract order.';
COMMENT ON COLUMN audit.quarantine.raw_values IS 'The row as delivered: column -> text.';
