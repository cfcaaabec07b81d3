"""Published snapshots: checkpointed read-only copies of the warehouse for statisticians, one per run,
with snapshots/current.duckdb pointing at the newest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from vigil import warehouse

SNAPSHOTS_KEPT = 5


def current_snapshot(db_path: Path) -> Path:
    """The stable path statisticians open: a symlink to the newest published snapshot."""
    return warehouse.snapshot_dir(db_path) / "current.duckdb"


# How an analyst opens a snapshot: it cannot write, read or write other files (COPY, read_csv,
# ATTACH), install extensions or change these settings.
ANALYST_CONFIG = {"enable_external_access": False, "lock_configuration": True}


def open_snapshot(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True, config=dict(ANALYST_CONFIG))


def publish_snapshot(db_path: Path, run_id: int) -> Path:
    """Copy the checkpointed warehouse to snapshots/vigil-run-<N>.duckdb and point current.duckdb at it.

    The warehouse must be closed (so that everything is in the file, not the WAL). The copy is
    written under a temporary name and renamed, and the link is replaced atomically, so a reader
    sees the previous snapshot or the new one, never a partial file.
    """
    wal = db_path.with_name(db_path.name + ".wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise warehouse.LoadFailed(f"{db_path}: the write-ahead log is not empty; checkpoint before publishing")
    target_dir = warehouse.snapshot_dir(db_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"vigil-run-{run_id:06d}.duckdb"
    partial = target.with_suffix(".partial")
    try:
        shutil.copyfile(db_path, partial)
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
    except OSError:  # e.g. disk full: no half copy left behind; the current snapshot is untouched
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    warehouse.point_link(current_snapshot(db_path), target.name)
    for old in sorted(target_dir.glob("vigil-run-*.duckdb"))[:-SNAPSHOTS_KEPT]:
        old.unlink()
    return target
