-- audit.rule_results: per delivery and contract rule, the rows that broke it as counted by the
-- quarantine SQL and by Great Expectations. Grain: one row per delivery and rule. The load is
-- refused when the two counts differ, so quarantine and validation record cannot disagree.
CREATE TABLE IF NOT EXISTS audit.rule_results (
    delivery_id     BIGINT NOT NULL,
    table_name      VARCHAR NOT NULL,
    rule_id         VARCHAR NOT NULL,
    reason          VARCHAR NOT NULL,
    sql_violations  BIGINT NOT NULL,
    gx_unexpected   BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, rule_id)
);

COMMENT ON TABLE audit.rule_results IS 'Rows breaking each contract rule per delivery, counted by the quarantine SQL and by Great Expectations (they must agree).';
COMMENT ON COLUMN audit.rule_results.delivery_id IS 'The delivery (audit.deliveries).';
COMMENT ON COLUMN audit.rule_results.table_name IS 'Spec table name.';
COMMENT ON COLUMN audit.rule_results.rule_id IS 'Contract rule id (table.column.reason.n).';
COMMENT ON COLUMN audit.rule_results.reason IS 'Reason code of the rule.';
COMMENT ON COLUMN audit.rule_results.sql_violations IS 'Rows breaking the rule according to the quarantine SQL.';
COMMENT ON COLUMN audit.rule_results.gx_unexpected IS 'Unexpected rows according to Great Expectations.';
