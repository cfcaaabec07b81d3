"""Analysis runs are all or nothing, numbered, traceable; snapshots are published atomically."""

import duckdb
import pytest
from helpers import valid_rows, write_delivery

from vigil.analysis import runs as run_module
from vigil.warehouse import snapshots
from vigil import warehouse

# Two loads, an analysis and snapshots per test.
pytestmark = pytest.mark.slow


@pytest.fixture
def loaded(tmp_path, ingest_folder, warehouse_con, monkeypatch):
    monkeypatch.setenv("VIGIL_MAX_QUARANTINE_SHARE", "1")  # the quarantined patient is one of two
    rows = valid_rows()
    rows["patients"][0]["sex"] = "X"  # one quarantined patient, so attrition step 1 excludes somebody
    ingest_folder(write_delivery(tmp_path / "in", rows))
    ingest_folder(write_delivery(tmp_path / "in", site="SE02", rows=valid_rows("SE02")))
    return warehouse_con, tmp_path / "wh" / "vigil.duckdb"


def test_runs_are_numbered_and_record_what_made_them(loaded):
    con, _ = loaded
    first = run_module.analyse(con, {"why": "test"})
    second = run_module.analyse(con)
    assert (first.run_id, second.run_id) == (1, 2)
    code, sap, deliveries, parameters = con.execute(
        "SELECT code_version, sap_version, deliveries, parameters FROM results.runs WHERE run_id = 1").fetchone()
    assert code and sap == "1.1" and '"why": "test"' in parameters
    assert '"site_id": "DK01"' in deliveries and '"file_hashes"' in deliveries
    assert con.execute("SELECT DISTINCT run_id FROM results.attrition ORDER BY 1").fetchall() == [(1,), (2,)]


def test_a_failing_run_leaves_no_results(loaded, monkeypatch):
    con, _ = loaded
    run_module.analyse(con)

    def broken(con, run_id):
        raise RuntimeError("analysis failed")

    monkeypatch.setattr("vigil.analysis.sap.run_analyses", broken)
    with pytest.raises(RuntimeError):
        run_module.analyse(con)
    assert con.execute("SELECT max(run_id) FROM results.runs").fetchone() == (1,)
    assert con.execute("SELECT DISTINCT run_id FROM results.attrition").fetchall() == [(1,)]


def test_snapshot_is_published_read_only_and_current_points_at_the_newest(loaded):
    con, db = loaded
    summary = run_module.analyse(con)
    con.close()
    snapshot = snapshots.publish_snapshot(db, summary.run_id)
    current = snapshots.current_snapshot(db)
    assert current.resolve() == snapshot.resolve()
    reader = duckdb.connect(str(current), read_only=True)
    assert reader.execute("SELECT max(run_id) FROM results.runs").fetchone() == (summary.run_id,)
    # The analyst keeps the snapshot open; the pipeline still writes the warehouse and publishes again.
    writer = warehouse.connect(db)
    second = run_module.analyse(writer)
    writer.close()
    snapshots.publish_snapshot(db, second.run_id)
    assert reader.execute("SELECT max(run_id) FROM results.runs").fetchone() == (summary.run_id,)
    reader.close()
    with duckdb.connect(str(current), read_only=True) as fresh:
        assert fresh.execute("SELECT max(run_id) FROM results.runs").fetchone() == (second.run_id,)


def test_only_the_last_snapshots_are_kept(loaded):
    con, db = loaded
    con.close()
    for run_id in range(1, snapshots.SNAPSHOTS_KEPT + 3):
        snapshots.publish_snapshot(db, run_id)
    kept = sorted(p.name for p in warehouse.snapshot_dir(db).glob("vigil-run-*.duckdb"))
    assert len(kept) == snapshots.SNAPSHOTS_KEPT and kept[-1] == f"vigil-run-{snapshots.SNAPSHOTS_KEPT + 2:06d}.duckdb"


FORBIDDEN_TO_ANALYSTS = [
    "INSERT INTO results.runs SELECT * FROM results.runs",
    "CREATE TABLE scratch (a INTEGER)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY staging.patients TO '/tmp/vigil-leak.csv'",
    "ATTACH '/tmp/vigil-other.duckdb'",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SET threads = 1",
]


def test_an_analyst_connection_to_the_snapshot_can_only_read_it(loaded):
    con, db = loaded
    summary = run_module.analyse(con)
    con.close()
    analyst = snapshots.open_snapshot(snapshots.publish_snapshot(db, summary.run_id))
    assert analyst.execute("SELECT count(*) FROM staging.patients").fetchone()[0] > 0
    for statement in FORBIDDEN_TO_ANALYSTS:
        with pytest.raises(duckdb.Error):
            analyst.execute(statement)
    analyst.close()
