-- audit.deliveries: every delivery seen with its status today.
-- Grain: one row per delivery. A delivery accepted on arrival is `superseded` once the same site
-- has an accepted delivery with a later data cut, or the same cut with a later created_at
-- (extract-spec section 1). Derived, so audit.delivery_receipts stays append-only.
CREATE OR REPLACE VIEW audit.deliveries AS
SELECT
    r.delivery_id,
    r.site_id,
    r.data_cut,
    r.created_at,
    r.folder,
    r.file_format,
    r.file_hashes,
    CASE
        WHEN r.status = 'refused' THEN 'refused'
        WHEN newer.delivery_id IS NOT NULL THEN 'superseded'
        ELSE 'accepted'
    END AS status,
    coalesce(r.reason, CASE WHEN newer.delivery_id IS NOT NULL
        THEN 'superseded by delivery ' || newer.delivery_id END) AS reason,
    newer.delivery_id AS superseded_by,
    r.received_at,
    r.loaded_at
FROM audit.delivery_receipts AS r
LEFT JOIN LATERAL (
    SELECT n.delivery_id
    FROM audit.delivery_receipts AS n
    WHERE n.status = 'accepted' AND r.status = 'accepted'
      AND n.site_id = r.site_id
      AND (n.data_cut, n.created_at, n.delivery_id) > (r.data_cut, r.created_at, r.delivery_id)
    ORDER BY n.data_cut DESC, n.created_at DESC, n.delivery_id DESC
    LIMIT 1
) AS newer ON true;

COMMENT ON VIEW audit.deliveries IS 'Every delivery seen with its current status: accepted (the site''s current delivery), superseded, or refused.';
COMMENT ON COLUMN audit.deliveries.delivery_id IS 'Identifier of the delivery (audit.delivery_receipts).';
COMMENT ON COLUMN audit.deliveries.site_id IS 'Site from the manifest.';
COMMENT ON COLUMN audit.deliveries.data_cut IS 'Data cut from the manifest.';
COMMENT ON COLUMN audit.deliveries.created_at IS 'Creation time from the manifest.';
COMMENT ON COLUMN audit.deliveries.folder IS 'Delivery folder as ingested.';
COMMENT ON COLUMN audit.deliveries.file_format IS 'csv or parquet.';
COMMENT ON COLUMN audit.deliveries.file_hashes IS 'File name -> sha256 as received.';
COMMENT ON COLUMN audit.deliveries.status IS 'accepted (current for its site), superseded (a later delivery of the site replaced it) or refused.';
COMMENT ON COLUMN audit.deliveries.reason IS 'Refusal reason, or which delivery superseded it.';
COMMENT ON COLUMN audit.deliveries.superseded_by IS 'The delivery that replaced this one, if any.';
COMMENT ON COLUMN audit.deliveries.received_at IS 'When the pipeline judged the delivery.';
COMMENT ON COLUMN audit.deliveries.loaded_at IS 'When an accepted delivery was committed.';
