-- network.pools
-- Purpose: one row per pooling at the coordinator (`vigil network pool`, `vigil network cox`): when, with
--          which vigil, how many site packages were accepted and refused (SAP 8).
-- Grain:   one row per pool_id; every other network table's rows carry the pool_id that made them.
-- Usage:   created and filled by vigil.network.pool; read by the network report.
CREATE TABLE IF NOT EXISTS network.pools (
    pool_id BIGINT PRIMARY KEY,
    kind VARCHAR NOT NULL,
    pooled_at TIMESTAMPTZ NOT NULL,
    code_version VARCHAR NOT NULL,
    sap_version VARCHAR NOT NULL,
    n_accepted INTEGER NOT NULL,
    n_refused INTEGER NOT NULL
);

COMMENT ON TABLE network.pools IS 'One pooling at the coordinator (SAP 8): P1 and P2 from site packages (kind = packages) or P3 by distributed Newton-Raphson (kind = distributed_cox). Grain: pool_id.';
COMMENT ON COLUMN network.pools.pool_id IS 'Number of the pooling (1, 2, ...), never reused; every network table''s rows carry it.';
COMMENT ON COLUMN network.pools.kind IS 'packages: P1 and P2 from result packages; distributed_cox: P3.';
COMMENT ON COLUMN network.pools.pooled_at IS 'When the pooling ended (UTC).';
COMMENT ON COLUMN network.pools.code_version IS 'The coordinator''s vigil version (git describe, or the package version).';
COMMENT ON COLUMN network.pools.sap_version IS 'The SAP version the coordinator pools under; a package of another is refused.';
COMMENT ON COLUMN network.pools.n_accepted IS 'Site packages (or sites, for P3) accepted.';
COMMENT ON COLUMN network.pools.n_refused IS 'Site packages refused (network.sites says why).';
