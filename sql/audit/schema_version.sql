-- audit.schema_version: the version of vigil's warehouse layout this file was made (or last
-- stamped) by. Grain: one row per stamping, append-only; the latest row is the file's version.
-- Every command checks it at open (vigil.warehouse.verify): a warehouse of another version is
-- refused by name, one made before the table existed is accepted and stamped.
CREATE TABLE IF NOT EXISTS audit.schema_version (
    version      INTEGER NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    code_version VARCHAR
);

COMMENT ON TABLE audit.schema_version IS 'Version of vigil''s warehouse layout (raw, staging, audit, cohort, analysis, results), one row per stamping, append-only; the latest row counts.';
COMMENT ON COLUMN audit.schema_version.version IS 'Layout version (vigil.warehouse.SCHEMA_VERSION of the vigil that stamped it).';
COMMENT ON COLUMN audit.schema_version.recorded_at IS 'When the file was stamped with this version.';
COMMENT ON COLUMN audit.schema_version.code_version IS 'vigil package version that stamped it.';
