-- results.runs
-- Purpose: one row per analysis run, so every result row can be traced to what produced it
--          (SAP 6 traceability): deliveries with their hashes, code, SAP and code-list versions,
--          parameters, timings and outcome.
-- Grain:   one row per run. Every other results table carries run_id.
-- Usage:   the run orchestration (vigil/run.py) inserts the row when the run starts and the
--          final row values when it ends, in the same transaction as the results.
CREATE TABLE IF NOT EXISTS results.runs (
    run_id             BIGINT PRIMARY KEY,
    started_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    status             VARCHAR NOT NULL,
    code_version       VARCHAR NOT NULL,
    sap_version        VARCHAR NOT NULL,
    codelist_versions  JSON,
    parameters         JSON,
    deliveries         JSON,
    flow_run_id        VARCHAR,
    step_seconds       JSON
);

COMMENT ON TABLE results.runs IS 'Analysis runs: what produced each result row (deliveries, versions, parameters, timings). Grain: run. SAP 6.';
COMMENT ON COLUMN results.runs.run_id IS 'Run identifier, an increasing integer shared by every results table of the run.';
COMMENT ON COLUMN results.runs.started_at IS 'When the run started.';
COMMENT ON COLUMN results.runs.finished_at IS 'When the run finished.';
COMMENT ON COLUMN results.runs.status IS 'completed; a failed run leaves no row (its transaction is rolled back).';
COMMENT ON COLUMN results.runs.code_version IS 'vigil version (git describe when run from a checkout, else the package version).';
COMMENT ON COLUMN results.runs.sap_version IS 'Statistical analysis plan version implemented.';
COMMENT ON COLUMN results.runs.codelist_versions IS 'Version and sha256 of each code list used.';
COMMENT ON COLUMN results.runs.parameters IS 'Run parameters (database, analysis days, ...).';
COMMENT ON COLUMN results.runs.deliveries IS 'The deliveries analysed: delivery_id, site_id, data_cut, created_at and file hashes.';
COMMENT ON COLUMN results.runs.flow_run_id IS 'Prefect flow run id when the run was made by a flow.';
COMMENT ON COLUMN results.runs.step_seconds IS 'Wall time of each step, in seconds: ingest (when the run''s flow ingested deliveries first), cohort, analyses. Report and snapshot come after the run is recorded and are timed in the Prefect flow run log.';
