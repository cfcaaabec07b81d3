"""The DuckDB warehouse file: where it is, how it is opened, and its layout."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
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
    """The warehouse, with DuckDB's checkpoint vacuum off (see checkpoint)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(db_path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(f"{db_path} is in use by another process (one writer at a time): {exc}") from None
        raise
    con.execute(_VACUUM_OFF)
    return con


# Otherwise every checkpoint repacks the partly filled row groups that each load leaves between full
# ones: 3.4 s of a 1M-patient ingest, to save ~1 % of the row groups.
_VACUUM_OFF = "SET max_vacuum_tasks = 0"


def checkpoint(con: duckdb.DuckDBPyConnection, vacuum: bool = False) -> None:
    """CHECKPOINT, with DuckDB's vacuum when there are deleted rows to reclaim. A vacuum only touches
    tables changed since the last checkpoint, so it is the checkpoint after the deletes that must ask
    for it. Raises duckdb.Error."""
    if not vacuum:
        con.execute("CHECKPOINT")
        return
    con.execute("RESET max_vacuum_tasks")
    try:
        con.execute("CHECKPOINT")
    finally:
        with suppress(duckdb.Error):  # a connection DuckDB invalidated (IO error) has nothing left to set
            con.execute(_VACUUM_OFF)


_held_locks: dict[Path, list] = {}  # lock file -> [fd, depth] held by this process
_held_guard = threading.Lock()


@contextmanager
def writer_lock(db_path: Path):
    """One writer per warehouse for a whole command or flow run (ingest, analyse, report, publish), not
    only while DuckDB has the file open: an exclusive flock on <db>.lock. A second run fails fast with
    WarehouseBusy naming the holder. Re-entrant within a process (a flow inside a locked command); the
    OS releases it when the holder exits, even by kill -9, so a crash never leaves a stale lock."""
    lock_path = db_path.resolve().with_name(db_path.name + ".lock")
    with _held_guard:
        held = _held_locks.get(lock_path)
        if held:
            held[1] += 1
        else:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise WarehouseBusy(f"{db_path} is being written by another vigil run ({holder}); one writer at "
                                    "a time: try again when it has finished") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}, since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC".encode())
            _held_locks[lock_path] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            held = _held_locks[lock_path]
            held[1] -= 1
            if held[1] == 0:
                del _held_locks[lock_path]
                os.close(held[0])  # closing the descriptor releases the flock


def point_link(link: Path, target_name: str) -> None:
    """Make `link` a symlink to `target_name` (beside it) in one atomic rename: a reader follows the old
    target or the new one, never a missing link."""
    tmp_link = link.with_suffix(".link-tmp")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(target_name)
    os.replace(tmp_link, link)


def error_line(exc: BaseException) -> str:
    """An error as one line for a user: its class and the first line of its text."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK that tolerates a transaction DuckDB has already ended (it invalidates one after an IO error)."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


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
