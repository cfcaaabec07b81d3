"""The DuckDB warehouse file: where it is, how it is opened, whether it is whole, and its layout."""

from __future__ import annotations

import fcntl
import os
import re
import threading
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from vigil.contract import Contract, ddl_for_layer, load_contract
from vigil.inert import inert
from vigil.warehouse.sqlfiles import build_layer

DEFAULT_DB = Path("warehouse") / "vigil.duckdb"

# The version of the layout vigil builds (raw and staging from the contract, audit, cohort, analysis,
# results), recorded in audit.schema_version. Raise it with a change that an older vigil must not
# write into (or a newer one must migrate); a warehouse of another version is refused by name.
SCHEMA_VERSION = 2
# Versions this vigil migrates (create_layout): 1 -> 2 gave every results table the column variant
# (SAP A12 sensitivity analyses), in its primary key; a version-1 warehouse's rows are all variant main.
MIGRATES_FROM = (1,)

# A DuckDB file is its main header and two database headers, 4 KiB each, then total_blocks blocks of
# block_size bytes (DuckDB's storage format since 0.9; pragma_database_size reports both numbers).
_HEADER_BYTES = 3 * 4096


class WarehouseError(RuntimeError):
    """An expected failure, said in one line for the user: the CLI prints it and exits 1 (2 for a
    WarehousePathError), a flow ends Failed with it as its message; neither shows a traceback."""


class LoadFailed(WarehouseError):
    """The warehouse did not keep a write (it is left as it was)."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse open for writing."""


class WarehousePathError(WarehouseError):
    """--db or $VIGIL_DB names something that cannot be a warehouse file (a folder; a path through a file)."""


class WarehouseUnusable(WarehouseError):
    """The warehouse file or its folder cannot be written (read-only file or file system, permissions)."""


class WarehouseDamaged(WarehouseError):
    """The warehouse file is not whole (cut short, a block that fails its checksum, not a DuckDB file);
    nothing was written to it."""


class WarehouseVersion(WarehouseError):
    """The warehouse was laid out by a vigil of another schema version (audit.schema_version)."""


def resolve_db(db: Path | str | None) -> Path:
    """--db, else $VIGIL_DB, else warehouse/vigil.duckdb, as the absolute path of the real file (symlinks
    and `..` resolved): every command and flow names, locks and checks the one file whatever alias it was
    given, and keeps the gx/, report/ and snapshots/ folders beside the real file. Raises
    WarehousePathError for a folder or a path that cannot be a file."""
    source = "--db" if db else "$VIGIL_DB" if os.environ.get("VIGIL_DB") else "the default warehouse path"
    given = Path(db or os.environ.get("VIGIL_DB") or DEFAULT_DB).expanduser()
    path = given.resolve()
    if path.is_dir():
        raise WarehousePathError(f"{source} {given} is a folder, not a warehouse file (e.g. {given / DEFAULT_DB.name})")
    if path.exists() and not path.is_file():
        raise WarehousePathError(f"{source} {given} is not a regular file, so it cannot be a warehouse file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise WarehousePathError(f"{source} {given}: {parent} is a file, not a folder")
            break
    return path


def gx_dir_for(db_path: Path) -> Path:
    """Great Expectations project (suites, results, Data Docs) kept beside the warehouse file."""
    return db_path.parent / "gx"


def default_report_dir(db_path: Path) -> Path:
    """Where the report of the warehouse's runs goes unless --out says otherwise."""
    return db_path.parent / "report"


def snapshot_dir(db_path: Path) -> Path:
    """Where the read-only snapshots of the warehouse's runs are published (vigil.warehouse.snapshots.publish_snapshot)."""
    return db_path.parent / "snapshots"


def connect(db_path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse, with DuckDB's checkpoint vacuum off (see checkpoint). Raises a WarehouseError with a
    sentence for what a user can meet at open (busy, a folder, read-only, damaged), else DuckDB's error."""
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WarehouseUnusable(f"cannot create the warehouse folder {db_path.parent} ({exc.strerror})") from None
    try:
        con = duckdb.connect(str(db_path))
    except duckdb.Error as exc:
        raise open_error(exc, db_path) from None
    con.execute(_VACUUM_OFF)
    _limit_memory(con)
    return con


# DuckDB's own default is 80 % of the machine's memory, which it fills as cache: at 10^6 patients the
# analysis with every variant peaked at 8.6 GB in 103 s, and takes 108 s within 2 GB, spilling to
# vigil.duckdb.tmp beside the warehouse (docs/benchmarks.md, session 11).
MEMORY_LIMIT = "2GB"


def _limit_memory(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's memory limit for vigil's connections: VIGIL_MEMORY_LIMIT (DuckDB's syntax, e.g. 8GB),
    else MEMORY_LIMIT. A value that is not a memory size is refused in one line (SET takes no parameter)."""
    limit = os.environ.get("VIGIL_MEMORY_LIMIT") or MEMORY_LIMIT
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit.strip(), flags=re.IGNORECASE):
        con.close()
        raise WarehouseError(f"VIGIL_MEMORY_LIMIT={inert(limit)} is not a memory size such as 2GB or 8GiB")
    con.execute(f"SET memory_limit = '{limit.strip()}'")


def open_error(exc: duckdb.Error, db_path: Path) -> Exception:
    """DuckDB's error when opening the warehouse, as the WarehouseError a user can act on when it is one
    (else `exc` itself)."""
    text = str(exc)
    lower = text.lower()
    if "lock" in lower and "conflict" in lower:
        return WarehouseBusy(f"{db_path} is in use by another process (one writer at a time): {_first_line(text)}")
    if "is a directory" in lower:
        return WarehousePathError(f"the warehouse path {db_path} is a folder, not a warehouse file")
    for marker in ("permission denied", "operation not permitted", "read-only file system"):
        if marker in lower:
            return WarehouseUnusable(f"cannot write the warehouse file {db_path} ({marker}): vigil writes the "
                                     "warehouse it is given; check the file's and its folder's permissions")
    if "trying to read a database file with" in lower:  # a storage version this DuckDB cannot read
        return WarehouseVersion(f"the warehouse file {db_path} was written by another DuckDB version "
                                f"({_first_line(text)}): use the vigil and DuckDB that made it")
    return damage(exc, db_path) or exc


# What DuckDB says when the file is not whole or not a DuckDB database: a read past the end of a file
# cut short, a block whose checksum fails (the file's headers too), a header it does not recognise, a
# SQLite file (DuckDB would load its sqlite extension for it), a write-ahead log it cannot replay.
_DAMAGE = {
    "could not read enough bytes": "it is shorter than its blocks need: cut short",
    "corrupt database file": "a block fails DuckDB's checksum",
    "not a valid duckdb database file": "it is not a DuckDB database file",
    "is an existing extension": "it is not a DuckDB database file",
    "replaying wal": "its write-ahead log cannot be replayed",
}


def damage(exc: BaseException, db_path: Path | None) -> WarehouseDamaged | None:
    """WarehouseDamaged if DuckDB's error says that the warehouse file is not whole, else None; for
    errors met while reading (a checksum failure found by a query) as much as at open."""
    text = str(exc)
    for marker, what in _DAMAGE.items():
        if marker in text.lower():
            return damaged(db_path, f"{what}: {_first_line(text)}")
    return None


def damage_on(con: duckdb.DuckDBPyConnection, exc: BaseException) -> WarehouseDamaged | None:
    """damage() for an error met on `con`, naming the connection's database file."""
    db_path = None
    with suppress(duckdb.Error, TypeError):
        with con.cursor() as cursor:  # a transaction of its own: the caller's may be aborted by the error
            (path,) = cursor.execute("SELECT path FROM duckdb_databases() "
                                     "WHERE database_name = current_database()").fetchone()
        db_path = Path(path) if path else None
    return damage(exc, db_path)


def damaged(db_path: Path | None, what: str) -> WarehouseDamaged:
    """The one line for a damaged warehouse, with where to restore it from."""
    if db_path is None:
        return WarehouseDamaged(f"the warehouse file is damaged ({what}); restore it from its latest snapshot "
                                "(snapshots/vigil-run-N.duckdb beside it)")
    snapshot = latest_whole_snapshot(db_path)
    if snapshot:
        restore = (f"restore it from {snapshot} (copy it over {db_path.name} and delete {db_path.name}.wal if "
                   "there is one), then ingest the landing folder again to reload the deliveries that came after")
    else:
        restore = (f"there is no whole snapshot in {snapshot_dir(db_path)} to restore it from: move it aside and "
                   "ingest the deliveries into a new warehouse")
    return WarehouseDamaged(f"the warehouse file {db_path} is damaged ({what}); {restore}")


def latest_whole_snapshot(db_path: Path) -> Path | None:
    """The newest published snapshot beside the warehouse that passes the same check."""
    for snapshot in sorted(snapshot_dir(db_path).glob("vigil-run-*.duckdb"), reverse=True):
        try:
            con = duckdb.connect(str(snapshot), read_only=True, config=dict(_CHECK_CONFIG))
        except duckdb.Error:
            continue
        try:
            if _whole(con, snapshot) is None:
                return snapshot
        except (duckdb.Error, WarehouseError):  # not whole, or of another schema version
            continue
        finally:
            con.close()
    return None


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


# The check's own connection: never load an extension for a file that is not DuckDB's (a SQLite file
# makes DuckDB fetch its sqlite extension from the internet).
_CHECK_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_verified: dict[Path, tuple[int, int, int]] = {}  # file -> (inode, size, mtime) when it last passed
_verified_guard = threading.Lock()


def verify(db_path: Path, write: bool = False) -> None:
    """Check at open that the warehouse file is whole, before anything writes to it; with `write`, also
    that it can be written. Raises WarehouseDamaged (what is wrong and the snapshot to restore from),
    WarehouseUnusable, WarehousePathError or WarehouseBusy; a file that does not exist yet passes.

    The check, on a read-only connection of its own (nothing is written to a damaged file):
    - DuckDB opens the file: it reads the headers and the catalog's metadata blocks, verifying their
      checksums (a file cut into its catalog, or not a DuckDB file, fails here);
    - the file is as long as its own block list says: 12 KiB of headers + total_blocks x block_size
      from pragma_database_size(). A file cut short anywhere else opens and answers the catalog (the
      metadata is in its last checkpoint's blocks), and fails only when a query reaches a lost block;
    - the catalog is read (every table and view), and audit.schema_version's latest row is
      SCHEMA_VERSION, else WarehouseVersion names both versions (a warehouse made before the version
      existed has no such table: it is accepted, and create_layout stamps it);
    - every column of every audit table is read whole, so DuckDB verifies the checksum of each of their
      blocks: the evidence (receipts, quarantine, validation) is intact.
    Measured on the 846 MB warehouse of 1,000,000 patients (3 sites, ingested and analysed once; warm
    page cache, 2 busy cores): median 0.05 s (0.045-0.05 s over 7 checks), 0.17 s the first time in a
    process (DuckDB's start, open 0.08 s, the catalog functions 0.10 s); with `write`, + 0.03 s for the
    writable open. It reads the headers, the metadata and the audit tables' blocks: a few MB, whatever
    the size of the study. Measured and not done: reading every table whole (6.8 s at 1M), or
    checksumming every block of the file outside DuckDB (1.0 s, but it needs DuckDB's block format, and
    free blocks, which DuckDB may punch into holes, would look damaged). A block elsewhere that fails
    its checksum is found when a query reads it, and is then reported as the same damage (damage(),
    used by vigil.warehouse.sqlfiles, vigil.analysis.runs and the CLI) rather than as a failure of the query. Passed files
    are remembered by inode, size and modification time: a flow inside a checked command does not
    check again."""
    try:
        stat = db_path.stat()
    except FileNotFoundError:
        if write:  # a new warehouse: its folder must be writable
            connect(db_path).close()
        return
    except OSError as exc:
        raise WarehouseUnusable(f"cannot read the warehouse file {db_path} ({exc.strerror})") from None
    key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _verified_guard:
        known = _verified.get(db_path) == key
    if not known:
        con = _check_connection(db_path)
        try:
            problem = _whole(con, db_path)
        except WarehouseError:
            raise
        except duckdb.Error as exc:
            raise damage(exc, db_path) or damaged(db_path, f"reading it failed: {_first_line(str(exc))}") from None
        finally:
            con.close()
        if problem:
            raise damaged(db_path, problem)
    if write:
        connect(db_path).close()  # read-only file or folder: a sentence now, before any work
    with _verified_guard:
        _verified[db_path] = key


def _check_connection(db_path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(db_path), read_only=True, config=dict(_CHECK_CONFIG))
    except duckdb.ConnectionException:
        # This process has the file open already (another configuration): check through that database.
        try:
            return duckdb.connect(str(db_path))
        except duckdb.Error as exc:
            raise open_error(exc, db_path) from None
    except duckdb.Error as exc:
        raise open_error(exc, db_path) from None


def _whole(con: duckdb.DuckDBPyConnection, db_path: Path) -> str | None:
    """What is wrong with the open warehouse file, or None (see verify). Raises WarehouseDamaged for a
    warehouse of another layout version; duckdb.Error for a block that cannot be read."""
    block_size, total_blocks = con.execute(
        "SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()
    needed, size = _HEADER_BYTES + total_blocks * block_size, db_path.stat().st_size
    if size < needed and _HEADER_BYTES + (_last_used_block(con) + 1) * block_size > size:
        return f"it has {size:,} bytes, its own block list needs {needed:,}: cut short"
    relations = {f"{s}.{n}" for s, n in con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal").fetchall()}
    version = con.execute("SELECT version FROM audit.schema_version ORDER BY recorded_at DESC, version DESC "
                          "LIMIT 1").fetchone() if "audit.schema_version" in relations else None
    if version and version[0] != SCHEMA_VERSION and version[0] not in MIGRATES_FROM:
        raise WarehouseVersion(
            f"the warehouse file {db_path} has vigil schema version {version[0]}, this vigil reads and writes "
            f"version {SCHEMA_VERSION}: use the vigil that made it (or a newer one that migrates it)")
    for (table,) in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                                "WHERE database_name = current_database() AND schema_name = 'audit'").fetchall():
        con.execute(f"SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM {table}").fetchall()
    return None


def _last_used_block(con: duckdb.DuckDBPyConnection) -> int:
    """The highest block that holds table data. Only asked when the file is shorter than its block list:
    DuckDB may leave free blocks at the end of the list that are not in the file (seen after a kill -9
    during a run: 129 blocks listed, 51 of them free, the file 128 blocks long and every table whole).
    Used blocks: the metadata blocks (catalog, row-group pointers) and each table's column segments."""
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                         "WHERE database_name = current_database()").fetchall()
    (last,) = con.execute("SELECT coalesce(max(block_id), -1) FROM pragma_metadata_info()").fetchone()
    for schema, table in tables:
        (block,) = con.execute("SELECT max(block_id) FROM pragma_storage_info(?) WHERE persistent",
                               [f'"{schema}"."{table}"']).fetchone()
        last = max(last, block if block is not None else -1)
    return last


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
    only while DuckDB has the file open: an exclusive flock on <real file>.lock beside the real file, so
    that an alias (a symlink to the file or to a folder above it, a relative path) locks the same file.
    A file with a second name (a hard link) is refused, as its other name would lock apart. A second run
    fails fast with WarehouseBusy naming the holder. Re-entrant within a process (a flow inside a locked
    command); the OS releases it when the holder exits, even by kill -9, so a crash never leaves a stale
    lock."""
    real = db_path.resolve()
    lock_path = real.with_name(real.name + ".lock")
    with _held_guard:
        held = _held_locks.get(lock_path)
        if held:
            held[1] += 1
        else:
            with suppress(FileNotFoundError):
                if (links := real.stat().st_nlink) > 1:
                    raise WarehouseUnusable(
                        f"the warehouse file {real} has {links} names (hard links): vigil locks a warehouse by its "
                        "name, so another name could be written at the same time; keep one name (copy, don't link)")
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise WarehouseUnusable(f"cannot create the warehouse's lock file {lock_path} ({exc.strerror}): "
                                        "vigil writes the warehouse's folder; check its permissions") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise WarehouseBusy(f"{real} is being written by another vigil run ({holder}); one writer at "
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
    """raw and staging from the contract, audit from sql/audit; idempotent. Stamps audit.schema_version
    with SCHEMA_VERSION when it has no row (a new warehouse, or one made before the version existed);
    verify() has refused a warehouse of another version before anything calls this."""
    contract = contract or load_contract()
    con.execute("BEGIN")
    try:
        for layer in ("raw", "staging"):
            for statement in ddl_for_layer(contract, layer):
                con.execute(statement)
        build_layer(con, "audit")
        version = con.execute("SELECT version FROM audit.schema_version ORDER BY recorded_at DESC, version DESC "
                              "LIMIT 1").fetchall()
        if version and version[0][0] in MIGRATES_FROM:
            from vigil.analysis import results  # the one writer of results.*

            results.add_variant_column(con)
        if not version or version[0][0] != SCHEMA_VERSION:
            con.execute("INSERT INTO audit.schema_version (version, code_version) VALUES (?, ?)",
                        [SCHEMA_VERSION, _package_version()])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:
        return None
