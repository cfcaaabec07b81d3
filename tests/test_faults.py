"""Faults: kill -9 of analyse, report and snapshot publishing at random points, a failed statement
inside the load transaction, a full disk, two writers, an analyst holding the snapshot open.

After every fault the warehouse, the snapshot and the report folder each hold the previous complete
state or the new complete one, and the next run completes. (kill -9 of an ingest: test_crash_safety.)
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from helpers import many_rows, write_delivery

from vigil import warehouse
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery
from vigil.report.render import current_report
from vigil.analysis.runs import analyse
from vigil.cli import EXIT_SIGNAL
from vigil.warehouse.snapshots import current_snapshot, open_snapshot, publish_snapshot

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent
VIGIL = [sys.executable, "-m", "vigil.cli"]
KILLS = 3
# `vigil analyse` ends with status 4 when the run's look is in signal (SAP A14): the generated study's rate of
# serious infection is 2-3 times the SAP 7 reference rates, so every completed run here signals.
ANALYSED = EXIT_SIGNAL
RESULT_TABLES = ["attrition", "incidence", "risk_windows", "cumulative_incidence", "logrank", "cox"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A warehouse folder with one complete run: loaded, analysed, reported and published."""
    from vigil.report import render_report
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("base")
    synth = synthesize_study(root / "landing", patients=400, sites=2, seed=11)
    db = root / "wh" / "vigil.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        for folder in synth.deliveries:
            assert ingest_delivery(con, folder, warehouse.gx_dir_for(db),
                                   validator=validation.SQL_RULE_COUNTS).status == "accepted"
        run_id = analyse(con).run_id
    render_report(db, warehouse.default_report_dir(db), run_id)
    publish_snapshot(db, run_id)
    return db.parent


@pytest.fixture
def wh(base, tmp_path) -> Path:
    """A private copy of the base warehouse folder; returns the warehouse file."""
    shutil.copytree(base, tmp_path / "wh", symlinks=True)
    return tmp_path / "wh" / "vigil.duckdb"


def _vigil(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*VIGIL, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, errors = proc.communicate(timeout=600)
    return proc.returncode, out + errors


def _runs(db: Path) -> list[int]:
    con = duckdb.connect(str(db))  # read-write, as the next run would: replays a WAL a kill left
    try:
        runs = [r for (r,) in con.execute("SELECT run_id FROM results.runs ORDER BY run_id").fetchall()]
        for table in RESULT_TABLES:  # every recorded run has all of its results, and no other run has any
            found = {r for (r,) in con.execute(f"SELECT DISTINCT run_id FROM results.{table}").fetchall()}
            assert found <= set(runs), (table, found, runs)
        assert {r for (r,) in con.execute("SELECT DISTINCT run_id FROM results.incidence").fetchall()} == set(runs)
    finally:
        con.close()
    return runs


def _snapshot_run(db: Path) -> int:
    """The run the current snapshot holds; it must open and be whole."""
    link = current_snapshot(db)
    con = open_snapshot(link)
    try:
        (latest,) = con.execute("SELECT max(run_id) FROM results.runs").fetchone()
        assert con.execute("SELECT count(*) FROM results.incidence WHERE run_id = ?", [latest]).fetchone()[0] > 0
    finally:
        con.close()
    assert link.resolve().name == f"vigil-run-{latest:06d}.duckdb"
    return latest


def _report_run(db: Path) -> int:
    """The run the current report folder holds; it must be complete."""
    folder = current_report(warehouse.default_report_dir(db)).resolve()
    run_id = int(folder.name.removeprefix("run-"))
    assert (folder / "report.html").stat().st_size > 0 and (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert (folder / "tables" / f"run{run_id}_tables.xlsx").is_file()
    assert len(list((folder / "tables").glob("*.csv"))) > 10
    assert f'name="vigil-run-id" content="{run_id}"' in (folder / "report.html").read_text(encoding="utf-8")
    return run_id


def _duration(proc: subprocess.Popen, expected: int = 0) -> float:
    started = time.monotonic()
    code, output = _finish(proc)
    assert code == expected, output
    return time.monotonic() - started


def _kill_at_random(start, duration: float, rng: random.Random) -> None:
    proc = start()
    time.sleep(rng.uniform(0.1, duration))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_during_analyse_keeps_a_complete_run_and_snapshot(wh):
    rng = random.Random(1)
    before = _runs(wh)
    duration = _duration(_vigil("analyse", "--db", str(wh)), ANALYSED)  # one complete run to time it
    for _ in range(KILLS):
        _kill_at_random(lambda: _vigil("analyse", "--db", str(wh)), duration, rng)
        runs = _runs(wh)
        assert runs[:len(before)] == before
        assert _snapshot_run(wh) in runs
    code, output = _finish(_vigil("analyse", "--db", str(wh)))
    assert code == ANALYSED, output
    assert _snapshot_run(wh) == _runs(wh)[-1]


def test_kill_9_during_report_keeps_a_complete_report_folder(wh):
    rng = random.Random(2)
    report_dir = warehouse.default_report_dir(wh)
    first = _report_run(wh)
    with warehouse.connect(wh) as con:
        second = analyse(con).run_id
    start = lambda: _vigil("report", "--db", str(wh), "--run", str(second))  # noqa: E731
    duration = _duration(start())
    assert _report_run(wh) == second
    shutil.rmtree(report_dir / f"run-{second:06d}")  # back to the first run's report
    (report_dir / "current").unlink()
    (report_dir / "current").symlink_to(f"run-{first:06d}")
    for _ in range(KILLS):
        _kill_at_random(start, duration, rng)
        assert _report_run(wh) in (first, second)
    code, output = _finish(start())
    assert code == 0, output
    assert _report_run(wh) == second
    assert not list(report_dir.glob("*.partial")) and not list(report_dir.glob("*.previous"))


PUBLISH = ("import sys; from pathlib import Path; from vigil.warehouse.snapshots import publish_snapshot; "
           "publish_snapshot(Path(sys.argv[1]), int(sys.argv[2]))")


def test_kill_9_during_snapshot_publishing_keeps_a_whole_snapshot(wh):
    rng = random.Random(3)
    with warehouse.connect(wh) as con:
        second = analyse(con).run_id
        # Ballast, so that the copy takes long enough for a kill to land inside it.
        con.execute("CREATE TABLE main.ballast AS SELECT md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS x "
                    "FROM range(3000000) t(i)")
        con.execute("CHECKPOINT")
    first = _snapshot_run(wh)
    start = lambda: subprocess.Popen([sys.executable, "-c", PUBLISH, str(wh), str(second)], cwd=ROOT)  # noqa: E731
    started = time.monotonic()
    assert start().wait() == 0
    duration = time.monotonic() - started
    assert _snapshot_run(wh) == second
    (current_snapshot(wh).parent / f"vigil-run-{second:06d}.duckdb").unlink()
    current_snapshot(wh).unlink()
    current_snapshot(wh).symlink_to(f"vigil-run-{first:06d}.duckdb")
    for _ in range(KILLS):
        _kill_at_random(start, duration, rng)
        assert _snapshot_run(wh) in (first, second)
    assert start().wait() == 0
    assert _snapshot_run(wh) == second


class _LosesAnError:
    """A connection on which one statement fails just before COMMIT and its error is lost, as a careless
    loader would lose it. DuckDB then lets COMMIT return normally and keeps nothing."""

    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args):
        if sql == "COMMIT":
            try:
                self._con.execute("SELECT error('injected failure')")
            except duckdb.Error:
                pass
        return self._con.execute(sql, *args)


@pytest.mark.gx  # the statement fails while GX validates the delivery on its thread
def test_a_statement_failing_inside_the_load_is_reported_and_nothing_is_kept(tmp_path, monkeypatch):
    import vigil.ingest.load as ingest_module

    db = tmp_path / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    gx = warehouse.gx_dir_for(db)
    first = ingest_delivery(con, write_delivery(tmp_path / "a", many_rows(20)), gx)
    correction = write_delivery(tmp_path / "b", many_rows(30), created_at="2026-07-10T00:00:00Z")

    def current_and_staged():
        return (con.execute("SELECT delivery_id FROM audit.deliveries WHERE status = 'accepted'").fetchall(),
                con.execute("SELECT count(*) FROM staging.patients").fetchone()[0])

    outcome = ingest_delivery(_LosesAnError(con), correction, gx)
    assert outcome.status == "failed" and "did not keep the load" in outcome.message
    assert str(correction) in outcome.message
    assert current_and_staged() == ([(first.delivery_id,)], 20)

    def failing(con, *args):  # a failure that is raised: rolled back and named
        con.execute("SELECT error('injected failure')")

    monkeypatch.setattr(ingest_module, "_replace_site_rows", failing)
    outcome = ingest_delivery(con, correction, gx)
    assert outcome.status == "failed" and "rolled back" in outcome.message and "injected failure" in outcome.message
    assert current_and_staged() == ([(first.delivery_id,)], 20)
    monkeypatch.undo()
    assert ingest_delivery(con, correction, gx).status == "accepted"
    assert current_and_staged()[1] == 30
    con.close()


# A file system that is full from a given file size on: RLIMIT_FSIZE makes every write beyond it fail
# with EFBIG ("File too large"), as a full disk fails with ENOSPC, without needing privileges to mount.
CAPPED_INGEST = ("import resource, sys; from pathlib import Path; "
                 "cap = int(sys.argv[3]); resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap)); "
                 "from vigil import warehouse; from vigil.ingest.load import ingest_delivery; "
                 "db = Path(sys.argv[1]); con = warehouse.connect(db); "
                 "o = ingest_delivery(con, Path(sys.argv[2]), warehouse.gx_dir_for(db)); print(o.status); "
                 "print(o.message)")


@pytest.mark.gx  # each capped child ingests with GX, as vigil does
@pytest.mark.slow
def test_a_full_disk_during_a_load_is_named_and_leaves_the_earlier_state(tmp_path):
    rng = random.Random(4)
    db = tmp_path / "wh" / "vigil.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        first = ingest_delivery(con, write_delivery(tmp_path / "a", many_rows(50)), warehouse.gx_dir_for(db),
                                validator=validation.SQL_RULE_COUNTS)
    correction = write_delivery(tmp_path / "b", many_rows(20000, sex="M"), created_at="2026-07-10T00:00:00Z")
    size = db.stat().st_size
    for _ in range(KILLS):
        cap = size + rng.randrange(0, 2_000_000)
        proc = subprocess.run([sys.executable, "-c", CAPPED_INGEST, str(db), str(correction), str(cap)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        status, message = proc.stdout.splitlines()[:2]
        assert status == "failed" and "File too large" in message and str(correction) in message
        with warehouse.connect(db) as con:
            assert con.execute("SELECT delivery_id FROM audit.deliveries WHERE status = 'accepted'").fetchall() == \
                [(first.delivery_id,)]
            assert con.execute("SELECT count(*), min(sex) FROM staging.patients").fetchone() == (50, "F")
    with warehouse.connect(db) as con:
        assert ingest_delivery(con, correction, warehouse.gx_dir_for(db),
                               validator=validation.SQL_RULE_COUNTS).status == "accepted"
        assert con.execute("SELECT count(*), min(sex) FROM staging.patients").fetchone() == (20000, "M")


HOLD_LOCK = ("import sys, time; from pathlib import Path; from vigil import warehouse; "
             "lock = warehouse.writer_lock(Path(sys.argv[1])); lock.__enter__(); print('holding', flush=True); "
             "time.sleep(120)")
HOLD_OPEN = ("import sys, time, duckdb; con = duckdb.connect(sys.argv[1]); print('holding', flush=True); "
             "time.sleep(120)")


@pytest.mark.parametrize("holder", [HOLD_LOCK, HOLD_OPEN], ids=["another-vigil-run", "another-duckdb-writer"])
def test_a_second_writer_fails_fast_with_a_clear_message(wh, holder):
    before = _runs(wh)
    proc = subprocess.Popen([sys.executable, "-c", holder, str(wh)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        started = time.monotonic()
        code, output = _finish(_vigil("analyse", "--db", str(wh)))
        waited = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    assert code == 1 and "Traceback" not in output, output
    assert str(wh) in output and ("another vigil run (pid" in output or "in use by another process" in output)
    assert waited < 60  # fails fast rather than waiting for the holder's two minutes
    assert _runs(wh) == before
    code, output = _finish(_vigil("analyse", "--db", str(wh)))
    assert code == ANALYSED, output


def test_an_analyst_holding_the_snapshot_never_blocks_a_run_and_sees_the_old_one(wh):
    analyst = open_snapshot(current_snapshot(wh))
    (old,) = analyst.execute("SELECT max(run_id) FROM results.runs").fetchone()
    code, output = _finish(_vigil("analyse", "--db", str(wh)))
    assert code == ANALYSED, output
    assert analyst.execute("SELECT max(run_id) FROM results.runs").fetchone() == (old,)
    assert _snapshot_run(wh) == old + 1  # whoever opens it now sees the new run
    analyst.close()
