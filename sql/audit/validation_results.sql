-- audit.validation_results: the Great Expectations validation of each delivery's tables, kept
-- with the delivery. Grain: one row per delivery and spec table.
CREATE TABLE IF NOT EXISTS audit.validation_results (
    delivery_id              BIGINT NOT NULL,
    table_name               VARCHAR NOT NULL,
    suite_name               VARCHAR NOT NULL,
    success                  BOOLEAN NOT NULL,
    evaluated_expectations   INTEGER NOT NULL,
    successful_expectations  INTEGER NOT NULL,
    result                   JSON NOT NULL,
    PRIMARY KEY (delivery_id, table_name)
);

COMMENT ON TABLE audit.validation_results IS 'Great Expectations validation result per delivery and table (suites generated from schemas/extract-v1.0.yaml).';
COMMENT ON COLUMN audit.validation_results.delivery_id IS 'The delivery (audit.deliveries).';
COMMENT ON COLUMN audit.validation_results.table_name IS 'Spec table name.';
COMMENT ON COLUMN audit.validation_results.suite_name IS 'Expectation suite name.';
COMMENT ON COLUMN audit.validation_results.success IS 'True when every expectation held (false whenever a row was quarantined).';
COMMENT ON COLUMN audit.validation_results.evaluated_expectations IS 'Expectations evaluated.';
COMMENT ON COLUMN audit.validation_results.successful_expectations IS 'Expectations that held.';
COMMENT ON COLUMN audit.validation_results.result IS 'The full GX validation result as JSON.';
