"""kill -9 during an ingest leaves the earlier complete state (or the new complete one); a rerun completes."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from helpers import many_rows, write_delivery

ROOT = Path(__file__).resolve().parent.parent
INGEST = "import sys; from pathlib import Path; from vigil import warehouse; from vigil.ingest.load import ingest_delivery; " \
         "db = Path(sys.argv[1]); con = warehouse.connect(db); warehouse.create_layout(con); " \
         "print(ingest_delivery(con, Path(sys.argv[2]), warehouse.gx_dir_for(db)).status)"


def _ingest(db: Path, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", INGEST, str(db), str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        current = con.execute("SELECT delivery_id FROM audit.deliveries WHERE status = 'accepted'").fetchall()
        staged = con.execute("SELECT delivery_id, count(*) FROM staging.patients GROUP BY 1").fetchall()
        recorded = con.execute("SELECT delivery_id, rows_loaded FROM audit.delivery_tables "
                               "WHERE table_name = 'patients'").fetchall()
        infusions = con.execute("SELECT DISTINCT delivery_id FROM staging.alemtuzumab_infusions").fetchall()
    finally:
        con.close()
    return {"current": current, "staged": staged, "recorded": dict(recorded), "infusions": infusions}


@pytest.mark.faults
@pytest.mark.gx  # the killed children ingest with GX, as vigil does
@pytest.mark.slow
def test_kill_9_during_ingest_leaves_a_complete_state(tmp_path):
    rng = random.Random(20261125)
    db = tmp_path / "wh" / "vigil.duckdb"
    first = write_delivery(tmp_path / "a", many_rows(3000))
    proc = _ingest(db, first)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    (first_id,), = _state(db)["current"]

    correction = write_delivery(tmp_path / "b", many_rows(3000, sex="M"), created_at="2026-07-10T00:00:00Z")
    started = time.monotonic()
    proc = _ingest(db, correction)
    proc.wait(timeout=300)
    full_duration = time.monotonic() - started
    # The correction's own complete run, to compare with; then start over from the first delivery.
    db.unlink()
    for wal in db.parent.glob("*.wal"):
        wal.unlink()
    assert _ingest(db, first).wait(timeout=300) == 0

    for attempt in range(4):
        proc = _ingest(db, correction)
        time.sleep(rng.uniform(0.2, full_duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = _state(db)
        (current,), = state["current"]
        # Whatever the moment of the kill, staging holds exactly one complete delivery.
        assert state["staged"] == [(current, state["recorded"][current])]
        assert state["infusions"] == [(current,)]
        if current != first_id:
            break
    rerun = _ingest(db, correction)
    out, errors = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, errors
    assert out.strip() in ("accepted", "already_loaded")
    state = _state(db)
    (final,), = state["current"]
    assert final != first_id and state["staged"] == [(final, 3000)]
