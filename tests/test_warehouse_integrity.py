"""Aliases and corruption (issue 15, class 6): every command locks and uses the real warehouse file
whatever alias names it, and checks at open that the file is whole and of vigil's schema version; a
damaged warehouse stops every command with one line naming the snapshot to restore it from.

The damage is real: copies of a real warehouse (ingested with the plain functions, analysed, snapshot
published) cut at several sizes, or with a block overwritten in the middle.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from vigil import warehouse
from vigil.cli import EXIT_SIGNAL, app
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery
from vigil.analysis.runs import analyse
from vigil.warehouse.snapshots import publish_snapshot

# A generated study, ingested and analysed once per module; damaged copies opened by vigil's commands.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
HEADER = 3 * 4096  # DuckDB's file header and two database headers, before block 0


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A warehouse folder after one complete run (snapshots/vigil-run-000001.duckdb published), and beside
    it `ingested.duckdb`: the same warehouse as it was after the ingest, before any analysis."""
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("integrity")
    synth = synthesize_study(root / "landing", patients=300, sites=2, seed=5)
    db = root / "wh" / "vigil.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        for folder in synth.deliveries:
            assert ingest_delivery(con, folder, warehouse.gx_dir_for(db),
                                   validator=validation.SQL_RULE_COUNTS).status == "accepted"
    shutil.copyfile(db, root / "ingested.duckdb")
    with warehouse.connect(db) as con:
        run_id = analyse(con).run_id
    publish_snapshot(db, run_id)
    return root


@pytest.fixture
def wh(base, tmp_path) -> Path:
    """A private copy of the analysed warehouse folder (with its snapshot); returns the warehouse file."""
    shutil.copytree(base / "wh", tmp_path / "wh", symlinks=True)
    return tmp_path / "wh" / "vigil.duckdb"


@pytest.fixture
def ingested(base, wh) -> Path:
    """The warehouse folder of `wh` whose file is the one from before the analysis (the snapshot stays)."""
    shutil.copyfile(base / "ingested.duckdb", wh)
    return wh


def _snapshot(db: Path) -> Path:
    return db.parent / "snapshots" / "vigil-run-000001.duckdb"


def _cut(db: Path, size: int) -> None:
    os.truncate(db, size)


def _blocks_of(db: Path, table: str) -> list[int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return sorted({b for (b,) in con.execute(
            f"SELECT block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0").fetchall()})
    finally:
        con.close()


def _overwrite_block(db: Path, block: int, data: bytes = b"\xff" * 64) -> None:
    block_size = 262144
    with db.open("r+b") as handle:
        handle.seek(HEADER + block * block_size + 100)
        handle.write(data)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# --- a file cut short or overwritten ------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0002, 0.002, 0.05, 0.3, 0.5, 0.7, 0.95, 0.9995])
@pytest.mark.parametrize("which", ["ingested", "analysed"])
def test_a_warehouse_cut_short_anywhere_is_damaged_and_names_the_snapshot(base, wh, which, fraction):
    if which == "ingested":
        shutil.copyfile(base / "ingested.duckdb", wh)
    _cut(wh, int(wh.stat().st_size * fraction))
    before = wh.read_bytes()
    result = runner.invoke(app, ["analyse", "--db", str(wh)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert line.startswith(f"error: the warehouse file {wh} is damaged ("), line
    assert f"restore it from {_snapshot(wh)}" in line
    assert wh.read_bytes() == before  # the check wrote nothing


def test_a_warehouse_cut_in_its_data_opens_in_duckdb_but_not_in_vigil(ingested):
    """The issue's probe: after an ingest, the catalog sits before the table data, so a file cut in half
    opens and answers the audit tables ("already loaded, nothing changed") and failed only in analyse,
    blaming a SQL file. Now every command stops at open."""
    _cut(ingested, ingested.stat().st_size // 2)
    con = duckdb.connect(str(ingested), read_only=True)  # DuckDB alone does not notice
    assert con.execute("SELECT count(*) FROM audit.delivery_receipts").fetchone() == (2,)
    con.close()
    for command in (["analyse"], ["report"]):
        result = runner.invoke(app, [*command, "--db", str(ingested)])
        assert result.exit_code == 1, result.output
        line = _one_error_line(result)
        assert f"the warehouse file {ingested} is damaged (" in line and "cut short" in line
        assert f"restore it from {_snapshot(ingested)}" in line and "sql/" not in line


def test_a_block_overwritten_in_staging_is_named_as_damage_not_as_a_sql_failure(wh):
    """A block in the middle of the table data passes the cheap check at open; the analysis that reads it
    stops with the same one line (DuckDB's checksum), not with an error blaming a SQL file."""
    _overwrite_block(wh, _blocks_of(wh, "staging.patients")[0])
    result = runner.invoke(app, ["analyse", "--db", str(wh)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert f"the warehouse file {wh} is damaged (a block fails DuckDB's checksum" in line, line
    assert f"restore it from {_snapshot(wh)}" in line and "sql/" not in line


@pytest.mark.parametrize("table", ["audit.delivery_receipts", "audit.rule_results", "audit.delivery_tables"])
def test_a_block_of_the_audit_tables_overwritten_is_found_at_open(wh, table):
    _overwrite_block(wh, _blocks_of(wh, table)[0])
    with pytest.raises(warehouse.WarehouseDamaged, match="a block fails DuckDB's checksum"):
        warehouse.verify(wh)


def test_a_zeroed_first_block_is_found_at_open(wh):
    _overwrite_block(wh, 0, b"\0" * 4096)
    with pytest.raises(warehouse.WarehouseDamaged, match=r"is damaged \("):
        warehouse.verify(wh)


WRITE_WAL = ("import os, sys, duckdb; con = duckdb.connect(sys.argv[1]); "
             "con.execute(\"SET checkpoint_threshold = '1GB'\"); "
             "con.execute('CREATE TABLE main.scratch AS SELECT range AS i FROM range(100)'); os._exit(0)")


def test_a_write_ahead_log_that_cannot_be_replayed_is_damage(wh):
    subprocess.run([sys.executable, "-c", WRITE_WAL, str(wh)], check=True)  # a session killed before its checkpoint
    wal = wh.with_name(wh.name + ".wal")
    with wal.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 16)
    result = runner.invoke(app, ["analyse", "--db", str(wh)])
    assert result.exit_code == 1, result.output
    assert f"the warehouse file {wh} is damaged (its write-ahead log cannot be replayed" in _one_error_line(result)


def test_a_file_of_another_duckdb_storage_version_is_refused_by_name(wh):
    import struct

    import numpy as np

    with wh.open("r+b") as handle:  # the main header says storage version 1099, with its checksum mended
        header = bytearray(handle.read(4096))
        header[12:20] = struct.pack("<Q", 1099)
        words = np.frombuffer(bytes(header[8:]), dtype=np.uint64)
        with np.errstate(over="ignore"):
            checksum = np.bitwise_xor.reduce(words * np.uint64(0xBF58476D1CE4E5B9)) ^ np.uint64(5381)
        header[:8] = struct.pack("<Q", int(checksum))
        handle.seek(0)
        handle.write(header)
    result = runner.invoke(app, ["report", "--db", str(wh)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert f"the warehouse file {wh} was written by another DuckDB version (" in line and "1099" in line, line


@pytest.mark.parametrize("content", ["random", "text", "sqlite", "empty"])
def test_a_file_that_is_not_a_duckdb_database_is_refused_with_one_line(wh, content):
    wh.unlink()
    if content == "random":
        wh.write_bytes(os.urandom(100_000))
    elif content == "text":
        wh.write_text("patient_id,sex\n")
    elif content == "sqlite":  # DuckDB would load its sqlite extension (from the internet) for it
        sqlite3.connect(wh).execute("CREATE TABLE t (a)").connection.commit()
    else:
        wh.write_bytes(b"")
    result = runner.invoke(app, ["analyse", "--db", str(wh)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert f"the warehouse file {wh} is damaged (it is not a DuckDB database file" in line, line


def test_the_restore_advice_skips_a_damaged_snapshot_and_says_when_there_is_none(wh):
    newer = _snapshot(wh).with_name("vigil-run-000002.duckdb")
    shutil.copyfile(_snapshot(wh), newer)
    _cut(newer, newer.stat().st_size // 2)
    _cut(wh, wh.stat().st_size // 3)
    with pytest.raises(warehouse.WarehouseDamaged) as caught:
        warehouse.verify(wh)
    assert f"restore it from {_snapshot(wh)}" in str(caught.value)
    shutil.rmtree(wh.parent / "snapshots")
    with pytest.raises(warehouse.WarehouseDamaged, match="there is no whole snapshot"):
        warehouse.verify(wh)


def test_a_whole_warehouse_passes_and_the_check_writes_nothing(wh):
    before = wh.read_bytes()
    warehouse.verify(wh)
    warehouse.verify(wh, write=True)
    assert wh.read_bytes() == before


# --- the schema version -------------------------------------------------------------------------------

def test_a_new_warehouse_is_stamped_once_with_the_schema_version(tmp_path):
    db = tmp_path / "new.duckdb"
    for _ in range(2):
        with warehouse.connect(db) as con:
            warehouse.create_layout(con)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT version FROM audit.schema_version").fetchall() == [(warehouse.SCHEMA_VERSION,)]


def test_a_warehouse_made_before_the_version_existed_is_accepted_and_stamped(wh):
    with duckdb.connect(str(wh)) as con:
        con.execute("DROP TABLE IF EXISTS audit.schema_version")
    warehouse.verify(wh, write=True)
    with warehouse.connect(wh) as con:
        warehouse.create_layout(con)
        assert con.execute("SELECT version FROM audit.schema_version").fetchall() == [(warehouse.SCHEMA_VERSION,)]


def test_a_warehouse_of_another_schema_version_is_refused_by_name(wh):
    with warehouse.connect(wh) as con:
        warehouse.create_layout(con)
        con.execute("INSERT INTO audit.schema_version (version) VALUES (99)")
    for command in (["analyse"], ["report"]):
        result = runner.invoke(app, [*command, "--db", str(wh)])
        assert result.exit_code == 1, result.output
        line = _one_error_line(result)
        assert f"the warehouse file {wh} has vigil schema version 99, this vigil reads and writes version " \
               f"{warehouse.SCHEMA_VERSION}" in line, line


# --- aliases --------------------------------------------------------------------------------------------

HOLD_LOCK = ("import sys, time; from pathlib import Path; from vigil import warehouse; "
             "lock = warehouse.writer_lock(Path(sys.argv[1])); lock.__enter__(); print('holding', flush=True); "
             "time.sleep(120)")


def _aliases(db: Path, tmp_path: Path) -> dict[str, Path]:
    file_link = tmp_path / "alias.duckdb"
    file_link.symlink_to(db)
    folder_link = tmp_path / "linked-folder"
    folder_link.symlink_to(db.parent, target_is_directory=True)
    chain = tmp_path / "chain.duckdb"
    chain.symlink_to(file_link)
    return {"symlink to the file": file_link, "symlink to its folder": folder_link / db.name,
            "symlink to a symlink": chain,
            "relative with ..": Path(os.path.relpath(db.parent)) / ".." / db.parent.name / db.name}


def test_every_alias_of_the_warehouse_takes_the_same_writer_lock(wh, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(wh)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for alias, path in _aliases(wh, tmp_path).items():
            with pytest.raises(warehouse.WarehouseBusy, match=r"another vigil run \(pid"):
                with warehouse.writer_lock(path):
                    pytest.fail(f"{alias} ({path}) was locked beside the real file")
    finally:
        holder.kill()
        holder.wait()


def test_every_command_resolves_an_alias_to_the_real_file(wh, tmp_path):
    alias = _aliases(wh, tmp_path)["symlink to the file"]
    assert warehouse.resolve_db(alias) == wh.resolve()
    result = runner.invoke(app, ["analyse", "--db", str(alias)])
    # 4: completed, and the generated study's rate (2-3 times the SAP 7 reference rates) signals (SAP A14)
    assert result.exit_code == EXIT_SIGNAL, result.output
    # The snapshot, like the lock, gx/ and report/, is beside the real file, not beside the alias.
    assert (wh.parent / "snapshots" / "vigil-run-000002.duckdb").exists()
    assert not (tmp_path / "snapshots").exists() and not (tmp_path / "alias.duckdb.lock").exists()


def test_a_warehouse_file_with_a_second_name_is_refused(wh, tmp_path):
    os.link(wh, tmp_path / "hard.duckdb")
    for name in (wh, tmp_path / "hard.duckdb"):
        with pytest.raises(warehouse.WarehouseUnusable, match=r"has 2 names \(hard links\)"):
            with warehouse.writer_lock(name):
                pass
    result = runner.invoke(app, ["analyse", "--db", str(tmp_path / "hard.duckdb")])
    assert result.exit_code == 1 and "has 2 names (hard links)" in _one_error_line(result)


# --- the flows (and so the deployments) check as well -----------------------------------------------------

@pytest.mark.flow
def test_the_flows_stop_at_a_damaged_warehouse_that_ingest_used_to_pass(prefect_harness, base, ingested):
    from pipelines.ingest_flow import ingest_flow
    from pipelines.study_flow import study_pipeline

    _cut(ingested, ingested.stat().st_size // 2)
    for flow_call in (lambda: ingest_flow([base / "landing"], ingested),
                      lambda: study_pipeline([base / "landing"], ingested)):
        with pytest.raises(warehouse.WarehouseDamaged, match="cut short"):
            flow_call()


