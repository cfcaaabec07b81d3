"""Stage 1, ingest: a site's delivery folder into raw, staging and audit, all or nothing.

delivery (manifest, hashes, refusals) -> rules (the contract's row rules as SQL) -> load (raw,
quarantine, staging, audit) -> validation (Great Expectations over the same rules, Data Docs).
"""
