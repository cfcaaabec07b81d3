-- results.runs
-- Purpose: one row per analysis run, so every result row can be traced to what produced it
--          (SAP 6 traceability): deliveries with their hashes, code, SAP and code-list versions,
--          parameters, timings and outcome.
-- Grain:   one row per run. Every other results table carries run_id.
-- Usage:   vigil.analysis.runs.analyse inserts the row (through vigil.analysis.results.insert_run) at the
--          end of the run, in the same transaction as the results: a run has a row only when all of
--          its results are in. snapshot_sha256 is filled afterwards by
--          vigil.warehouse.snapshots.publish_snapshot (results.record_snapshot), in the warehouse only.
--          Warehouses made before snapshot_sha256 existed get the column from the ALTER TABLE below
--          (NULL for their earlier runs); the layout version (audit.schema_version) is unchanged,
--          since an older vigil reads the table as before.
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
    step_seconds       JSON,
    snapshot_sha256    VARCHAR
);

ALTER TABLE results.runs ADD COLUMN IF NOT EXISTS snapshot_sha256 VARCHAR;

COMMENT ON TABLE results.runs IS 'Analysis runs: what produced each result row (deliveries, versions, parameters, timings). Grain: run. SAP 6.';
COMMENT ON COLUMN results.runs.run_id IS 'Run identifier, an increasing integer shared by every results table of the run.';
COMMENT ON COLUMN results.runs.started_at IS 'When the run started.';
COMMENT ON COLUMN results.runs.finished_at IS 'When the run finished: the time taken in Python after the last result was computed and written, just before the commit (not the transaction''s start, which DuckDB''s current_timestamp would give).';
COMMENT ON COLUMN results.runs.status IS 'completed; a failed run leaves no row (its transaction is rolled back).';
COMMENT ON COLUMN results.runs.code_version IS 'vigil version (git describe when run from a checkout, else the package version).';
COMMENT ON COLUMN results.runs.sap_version IS 'Statistical analysis plan version implemented.';
COMMENT ON COLUMN results.runs.codelist_versions IS 'Version and sha256 of each code list used.';
COMMENT ON COLUMN results.runs.parameters IS 'Every parameter that changes a number, read from where it is defined (vigil.analysis.runs.analysis_parameters): days (SAP days of A3/A4), risk_windows (A2), course_gap_days (the gap of the cohort SQL sql/cohort/infusion_courses.sql), codelists (name -> version), sap_version, stratifiers, multivariable, incidence_outcomes, first_event_outcomes; plus what the caller passed (e.g. db, landing and out paths).';
COMMENT ON COLUMN results.runs.deliveries IS 'The deliveries analysed: delivery_id, site_id, data_cut, created_at and file hashes.';
COMMENT ON COLUMN results.runs.flow_run_id IS 'Prefect flow run id when the run was made by a flow.';
COMMENT ON COLUMN results.runs.step_seconds IS 'Wall time of each step, in seconds: ingest (when the run''s flow ingested deliveries first), cohort, analyses (A1-A5, then Table 1 and data quality, A6-A7). Report and snapshot come after the run is recorded and are timed in the Prefect flow run log.';
COMMENT ON COLUMN results.runs.snapshot_sha256 IS 'SHA-256 (hex) of the published read-only snapshot snapshots/vigil-run-<N>.duckdb of this run, written by publish_snapshot after the copy (so NULL inside the snapshot itself, and for runs never published or published before the column existed). The same hash is in the sidecar vigil-run-<N>.duckdb.sha256; the report refuses a snapshot whose bytes no longer match either.';
