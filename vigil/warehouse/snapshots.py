"""Published snapshots: checkpointed read-only copies of the warehouse for statisticians, one per run,
with snapshots/current.duckdb pointing at the newest.

Integrity. A snapshot is published as a read-only file (mode 0444) and its SHA-256 is kept in two places:
- the sidecar snapshots/vigil-run-<N>.duckdb.sha256 (also 0444, `sha256sum` format: "<hex>  <file name>"),
  written at publish beside the file, so the snapshot can be checked wherever the folder is copied;
- results.runs.snapshot_sha256 of the warehouse (run N's row), written after the copy (the snapshot
  cannot hold its own hash: writing it would change the bytes).
`recorded_hashes(path)` collects both: the sidecar when present, and the warehouse's row when the
warehouse beside the snapshots folder (<folder>/*.duckdb whose snapshots/ it is) can be opened read-only
(not while a writer holds it). `check_snapshot(path)` refuses a snapshot whose bytes match neither
recorded hash with a one-line SnapshotAltered naming the file; a snapshot without any recorded hash (one
published before hashes were kept) is not refused: the report says so in a warning. The report renderer
(vigil.report.render) checks every snapshot it is given: a file named vigil-run-<N>.duckdb (or a link
to one, such as current.duckdb) inside a snapshots/ folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import duckdb

from vigil import warehouse
from vigil.hashing import CHUNK, file_sha256

SNAPSHOTS_KEPT = 5
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0444
SNAPSHOT_NAME = re.compile(r"vigil-run-(\d+)\.duckdb")


class SnapshotAltered(warehouse.WarehouseError):
    """A snapshot's bytes no longer match the SHA-256 recorded when it was published."""


def current_snapshot(db_path: Path) -> Path:
    """The stable path statisticians open: a symlink to the newest published snapshot."""
    return warehouse.snapshot_dir(db_path) / "current.duckdb"


# How an analyst opens a snapshot: it cannot write, read or write other files (COPY, read_csv,
# ATTACH), install extensions or change these settings.
ANALYST_CONFIG = {"enable_external_access": False, "lock_configuration": True}


def open_snapshot(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True, config=dict(ANALYST_CONFIG))


def sidecar(snapshot: Path) -> Path:
    """The file that holds a snapshot's SHA-256: vigil-run-<N>.duckdb.sha256 beside it."""
    return snapshot.with_name(snapshot.name + ".sha256")


def publish_snapshot(db_path: Path, run_id: int) -> Path:
    """Copy the checkpointed warehouse to snapshots/vigil-run-<N>.duckdb and point current.duckdb at it.

    The warehouse must be closed (so that everything is in the file, not the WAL; a WAL that no
    connection holds, e.g. one a publish killed after recording its hash left, is replayed and
    checkpointed first, since recording the hash writes the warehouse). The copy is
    written under a temporary name and renamed, and the link is replaced atomically, so a reader
    sees the previous snapshot or the new one, never a partial file. The copy is made read-only
    (0444) and its SHA-256, computed while copying, is written to the sidecar
    vigil-run-<N>.duckdb.sha256 and then recorded in the warehouse's results.runs.snapshot_sha256
    (when the warehouse has run N). Only the newest SNAPSHOTS_KEPT snapshots (and their sidecars)
    are kept; read-only files are removed all the same (removing needs the folder's permission).
    """
    wal = db_path.with_name(db_path.name + ".wal")
    if wal.exists() and wal.stat().st_size > 0 and not _checkpointed(db_path):
        raise warehouse.LoadFailed(f"{db_path}: the write-ahead log is not empty; checkpoint before publishing")
    target_dir = warehouse.snapshot_dir(db_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"vigil-run-{run_id:06d}.duckdb"
    partial = target.with_suffix(".partial")
    partial_sidecar = partial.with_name(partial.name + ".sha256")
    try:
        digest = _copy_and_hash(db_path, partial)
        os.chmod(partial, READ_ONLY)
        _write_sidecar(partial_sidecar, digest, target.name)
    except OSError:  # e.g. disk full: no half copy left behind; the current snapshot is untouched
        partial.unlink(missing_ok=True)
        partial_sidecar.unlink(missing_ok=True)
        raise
    sidecar(target).unlink(missing_ok=True)  # republishing a run: never the old hash beside the new bytes
    os.replace(partial, target)
    os.replace(partial_sidecar, sidecar(target))
    warehouse.point_link(current_snapshot(db_path), target.name)
    for old in sorted(target_dir.glob("vigil-run-*.duckdb"))[:-SNAPSHOTS_KEPT]:
        old.unlink()
        sidecar(old).unlink(missing_ok=True)
    _record_in_warehouse(db_path, run_id, digest)
    return target


def _checkpointed(db_path: Path) -> bool:
    """A WAL that a publish killed after recording its hash (or any committed work) leaves: replay and
    checkpoint it when nobody else has the warehouse open. False when that cannot be done."""
    try:
        con = warehouse.connect(db_path)
    except (duckdb.Error, warehouse.WarehouseError):  # another process writes it
        return False
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error:  # a transaction of this process is still open
        return False
    finally:
        con.close()
    wal = db_path.with_name(db_path.name + ".wal")
    return not (wal.exists() and wal.stat().st_size > 0)


def _copy_and_hash(source: Path, target: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    target.unlink(missing_ok=True)  # a read-only partial copy a killed publish left
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(chunk):
            digest.update(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _write_sidecar(path: Path, digest: str, name: str) -> None:
    path.unlink(missing_ok=True)
    with path.open("w", encoding="ascii") as handle:
        handle.write(f"{digest}  {name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, READ_ONLY)


def _record_in_warehouse(db_path: Path, run_id: int, digest: str) -> None:
    """results.runs.snapshot_sha256 of run run_id, in its own short transaction, checkpointed so that the
    warehouse is left as publish found it (closed, empty WAL)."""
    from vigil.analysis import results

    con = warehouse.connect(db_path)
    try:
        con.execute("BEGIN")
        try:
            results.record_snapshot(con, run_id, digest)
            con.execute("COMMIT")
        except BaseException:
            warehouse.rollback(con)
            raise
        con.execute("CHECKPOINT")
    finally:
        con.close()


def snapshot_run_id(path: Path) -> int | None:
    """N when path (after following links) is a published snapshot snapshots/vigil-run-<N>.duckdb, else None."""
    real = Path(path).resolve()
    match = SNAPSHOT_NAME.fullmatch(real.name)
    if match is None or real.parent.name != "snapshots":
        return None
    return int(match.group(1))


def recorded_hashes(path: Path) -> dict[str, str]:
    """Where a snapshot's SHA-256 is recorded -> the hash: the sidecar file (by its path) and the
    warehouse's results.runs row ("<warehouse>:results.runs") when the warehouse can be read."""
    real = Path(path).resolve()
    found: dict[str, str] = {}
    side = sidecar(real)
    if side.is_file():
        text = side.read_text(encoding="ascii", errors="replace").split()
        found[str(side)] = text[0].lower() if text else ""
    run_id = snapshot_run_id(real)
    if run_id is None:
        return found
    for candidate in sorted(real.parent.parent.glob("*.duckdb")):
        if warehouse.snapshot_dir(candidate).resolve() != real.parent or candidate.resolve() == real:
            continue
        try:
            con = duckdb.connect(str(candidate), read_only=True)
        except duckdb.Error:  # being written, or not a warehouse: the sidecar is the record
            continue
        try:
            row = con.execute("SELECT snapshot_sha256 FROM results.runs WHERE run_id = ?", [run_id]).fetchall()
        except duckdb.Error:  # no results.runs, or one without the column
            row = []
        finally:
            con.close()
        if row and row[0][0]:
            found[f"{candidate}:results.runs"] = row[0][0].lower()
    return found


def check_snapshot(path: Path) -> list[str]:
    """Refuse (SnapshotAltered, one line naming the file) a snapshot whose bytes do not match a recorded
    SHA-256. Returns warnings: a snapshot with no recorded hash is accepted with one."""
    real = Path(path).resolve()
    recorded = recorded_hashes(real)
    if not recorded:
        return [f"{real.name}: no SHA-256 recorded for this snapshot (published before hashes were kept); "
                "its integrity was not checked"]
    actual = file_sha256(real)
    for where, digest in recorded.items():
        if digest != actual:
            raise SnapshotAltered(f"snapshot {real} has been altered: its SHA-256 {actual[:12]}… does not match "
                                  f"the {digest[:12]}… recorded at publish ({where}); refusing to report from it")
    return []
