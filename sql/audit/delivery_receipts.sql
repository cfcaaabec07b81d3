-- audit.delivery_receipts: every delivery the pipeline has seen, as it was judged on arrival.
-- Grain: one row per distinct delivery (by content fingerprint) and outcome. Append-only:
-- the pipeline never updates or deletes a row. A correction is a new row whose `supersedes`
-- points at the delivery it replaced; the status of every delivery today is derived in
-- audit.deliveries. Implements extract-spec section 3 (refusals) and SAP section 6 (traceability).
CREATE SEQUENCE IF NOT EXISTS audit.delivery_id_seq START 1;

CREATE TABLE IF NOT EXISTS audit.delivery_receipts (
    delivery_id     BIGINT PRIMARY KEY DEFAULT nextval('audit.delivery_id_seq'),
    site_id         VARCHAR,
    data_cut        DATE,
    created_at      TIMESTAMPTZ,
    folder          VARCHAR NOT NULL,
    file_format     VARCHAR,
    fingerprint     VARCHAR,
    manifest_sha256 VARCHAR,
    file_hashes     MAP(VARCHAR, VARCHAR),
    status          VARCHAR NOT NULL CHECK (status IN ('accepted', 'refused')),
    reason          VARCHAR,
    refused_file    VARCHAR,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    loaded_at       TIMESTAMPTZ,
    supersedes      BIGINT
);
-- A warehouse made before the column existed gets it (NULL for its earlier receipts).
ALTER TABLE audit.delivery_receipts ADD COLUMN IF NOT EXISTS supersedes BIGINT;

COMMENT ON TABLE audit.delivery_receipts IS 'Every delivery seen, one row per distinct delivery content, as judged on arrival (append-only). See audit.deliveries for the current status.';
COMMENT ON COLUMN audit.delivery_receipts.delivery_id IS 'Identifier of the delivery in this warehouse; raw, staging and quarantine rows point at it.';
COMMENT ON COLUMN audit.delivery_receipts.site_id IS 'Site from the manifest (NULL when the manifest could not be read).';
COMMENT ON COLUMN audit.delivery_receipts.data_cut IS 'Data cut from the manifest.';
COMMENT ON COLUMN audit.delivery_receipts.created_at IS 'Creation time from the manifest; the later created_at supersedes for the same site and cut.';
COMMENT ON COLUMN audit.delivery_receipts.folder IS 'Absolute path of the delivery folder as ingested.';
COMMENT ON COLUMN audit.delivery_receipts.file_format IS 'csv or parquet.';
COMMENT ON COLUMN audit.delivery_receipts.fingerprint IS 'sha256 over the manifest and file hashes: the same fingerprint is the same delivery, loaded once.';
COMMENT ON COLUMN audit.delivery_receipts.manifest_sha256 IS 'sha256 of manifest.json.';
COMMENT ON COLUMN audit.delivery_receipts.file_hashes IS 'File name -> sha256 of the file as received.';
COMMENT ON COLUMN audit.delivery_receipts.status IS 'accepted (loaded) or refused (nothing of it loaded) on arrival.';
COMMENT ON COLUMN audit.delivery_receipts.reason IS 'Why the delivery was refused, naming the file and what is wrong.';
COMMENT ON COLUMN audit.delivery_receipts.refused_file IS 'The file a refusal is about, when there is one.';
COMMENT ON COLUMN audit.delivery_receipts.received_at IS 'When the pipeline judged the delivery.';
COMMENT ON COLUMN audit.delivery_receipts.loaded_at IS 'When an accepted delivery was committed to the warehouse.';
COMMENT ON COLUMN audit.delivery_receipts.supersedes IS 'For an accepted correction or later cut: the site''s current delivery it replaced on arrival (NULL for a first delivery, a refusal, or an older delivery arriving late).';
