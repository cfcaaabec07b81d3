"""The DuckDB warehouse file: where it is, how it is opened, and its layout."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from vigil.contract import Contract, ddl_for_layer, load_contract
from vigil.sqlfiles import run_layer

DEFAULT_DB = Path("warehouse") / "vigil.duckdb"


class LoadFailed(RuntimeError):
    """The warehouse did not keep a write (it is left as it was)."""


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse open for writing."""


def resolve_db(db: Path | str | None) -> Path:
    """--db, else $VIGIL_DB, else warehouse/vigil.duckdb."""
    return Path(db or os.environ.get("VIGIL_DB") or DEFAULT_DB)


def gx_dir_for(db_path: Path) -> Path:
    """Great Expectations project (suites, results, Data Docs) kept beside the warehouse file."""
    return db_path.parent / "gx"


def default_report_dir(db_path: Path) -> Path:
    """Where the report of the warehouse's runs goes unless --out says otherwise."""
    return db_path.parent / "report"


def connect(db_path: Path) -> duckdb.DuckDBPyConnection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(db_path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(f"{db_path} is in use by another process (one writer at a time): {exc}") from None
        raise


def create_layout(con: duckdb.DuckDBPyConnection, contract: Contract | None = None) -> None:
    """raw and staging from the contract, audit from sql/audit; idempotent."""
    contract = contract or load_contract()
    con.execute("BEGIN")
    try:
        for layer in ("raw", "staging"):
            for statement in ddl_for_layer(contract, layer):
                con.execute(statement)
        run_layer(con, "audit")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
