-- network.sites
-- Purpose: which site packages a pooling accepted or refused, and why; each accepted package's provenance.
-- Grain:   one row per pool_id and package folder given (in the order given; a folder given twice is refused the second time).
-- Usage:   filled by vigil.network.pool; the network report lists the sites left out and why.
CREATE TABLE IF NOT EXISTS network.sites (
    pool_id BIGINT NOT NULL,
    position INTEGER NOT NULL,
    package VARCHAR NOT NULL,
    site_id VARCHAR,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    manifest_sha256 VARCHAR,
    vigil_version VARCHAR,
    sap_version VARCHAR,
    data_cuts VARCHAR,
    run_id BIGINT,
    PRIMARY KEY (pool_id, position)
);

COMMENT ON TABLE network.sites IS 'The site packages of a pooling (SAP 8): accepted, or refused whole with the reason. Grain: pool_id and position.';
COMMENT ON COLUMN network.sites.position IS 'Position of the package in the list given to the coordinator (1, 2, ...).';
COMMENT ON COLUMN network.sites.pool_id IS 'The pooling (network.pools).';
COMMENT ON COLUMN network.sites.package IS 'The package folder as given to the coordinator.';
COMMENT ON COLUMN network.sites.site_id IS 'The site, from the package manifest; NULL if the manifest could not be read.';
COMMENT ON COLUMN network.sites.status IS 'accepted or refused.';
COMMENT ON COLUMN network.sites.reason IS 'Why the package was refused (one line naming the site and the file); NULL if accepted.';
COMMENT ON COLUMN network.sites.manifest_sha256 IS 'SHA-256 of the package''s manifest.json, which holds the SHA-256 of every file: the provenance of every pooled row.';
COMMENT ON COLUMN network.sites.vigil_version IS 'The vigil version that made the site''s run.';
COMMENT ON COLUMN network.sites.sap_version IS 'The SAP version of the site''s run.';
COMMENT ON COLUMN network.sites.data_cuts IS 'The site''s data cut(s) analysed, site:cut.';
COMMENT ON COLUMN network.sites.run_id IS 'The site''s run (its own results.runs) that the package holds.';
