"""Results are complete per run (issue 16): Table 1 and data quality are results.* of the run, the report
reads results.* only, any recorded run renders (from the warehouse or its snapshot) as it did when it was
made; one module writes results.*; results.runs records the real end time and every parameter; snapshots
are read-only and their SHA-256 is kept and checked.

One demo-sized study (vigil.synth, 2 sites with faults) analysed as run 1, reported, published; then a
new data cut of both sites is ingested and analysed as run 2 (a different cohort), so that a report of
run 1 made after run 2 can only be right if it reads nothing but run 1's results."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest

from vigil import resources, warehouse
from vigil.analysis import describe, results, runs, sap
from vigil.analysis.runs import analyse
from vigil.cohort import course_gap_days
from vigil.ingest.load import delivery_order, ingest_delivery
from vigil.report import ReportError, render_report
from vigil.warehouse import snapshots

# Two generated studies ingested with GX, analysed and rendered to PDF per module.
pytestmark = [pytest.mark.slow, pytest.mark.gx]


def _ingest(db: Path, folders: list[Path]) -> None:
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        for folder in delivery_order(folders):
            ingest_delivery(con, folder, warehouse.gx_dir_for(db))


def _tables(result) -> dict[str, bytes]:
    """Every exported file (CSVs and the workbook) by name."""
    return {f.name: f.read_bytes() for f in sorted(result.tables_dir.iterdir())}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("per_run")
    db = root / "wh" / "vigil.duckdb"
    first = synthesize_study(root / "in1", patients=400, sites=2, seed=5, faults=True, data_cut=date(2025, 12, 31))
    _ingest(db, first.deliveries + first.refused)
    with warehouse.connect(db) as con:
        assert analyse(con, {"test": "per-run"}).run_id == 1
    report_1 = render_report(db, root / "report-before", run_id=1)
    snapshot_1 = snapshots.publish_snapshot(db, 1)
    # a new data cut of both sites: run 2 has another cohort, other deliveries, other audit rows
    second = synthesize_study(root / "in2", patients=500, sites=2, seed=6, data_cut=date(2026, 6, 30))
    _ingest(db, second.deliveries)
    with warehouse.connect(db) as con:
        assert analyse(con, {"test": "per-run"}).run_id == 2
        sizes = con.execute("SELECT run_id, n_remaining FROM results.attrition WHERE step = 5 ORDER BY run_id"
                            ).fetchall()
    assert sizes[0][1] != sizes[1][1], "run 2 must have another cohort"
    return {"root": root, "db": db, "report_1": report_1, "snapshot_1": snapshot_1}


def test_an_earlier_run_renders_byte_identical_tables_after_another_run(study, tmp_path):
    # Before: Table 1 came from cohort.patients, rebuilt by run 2: `report --run 1` was refused.
    again = render_report(study["db"], tmp_path / "report-after", run_id=1)
    before = _tables(study["report_1"])
    assert _tables(again) == before
    assert len(before) == len(study["report_1"].tables) + 1


def test_the_report_reads_results_only(study, tmp_path):
    copy = tmp_path / "results-only.duckdb"
    shutil.copy(study["db"], copy)
    with duckdb.connect(str(copy)) as con:
        for schema in ("cohort", "analysis", "codelists", "audit", "staging", "raw"):
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    again = render_report(copy, tmp_path / "report", run_id=1)
    assert _tables(again) == _tables(study["report_1"])


def test_a_run_renders_from_its_snapshot_identically(study, tmp_path):
    snapshot = study["snapshot_1"]
    again = render_report(snapshot, tmp_path / "report", run_id=1)
    assert _tables(again) == _tables(study["report_1"])
    assert not again.warnings or all("no SHA-256" not in w for w in again.warnings)


def test_table1_and_data_quality_are_results_of_the_run(study):
    with duckdb.connect(str(study["db"]), read_only=True) as con:
        for table in describe.TABLES:
            found = {r for (r,) in con.execute(f"SELECT DISTINCT run_id FROM results.{table}").fetchall()}
            assert found == {1, 2}, table
            (comment,) = con.execute("SELECT comment FROM duckdb_tables() WHERE schema_name = 'results' "
                                     "AND table_name = ?", [table]).fetchone()
            assert comment and "SAP" in comment, table
            missing = con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'results' "
                                  "AND table_name = ? AND (comment IS NULL OR comment = '')", [table]).fetchall()
            assert not missing, (table, missing)
        # Table 1's total is the run's cohort; run 1 keeps its own after run 2
        for run_id in (1, 2):
            (n,) = con.execute("SELECT n_patients FROM results.table1_summary WHERE run_id = ? AND edss IS NULL",
                               [run_id]).fetchone()
            (cohort,) = con.execute("SELECT n_remaining FROM results.attrition WHERE run_id = ? AND step = 5",
                                    [run_id]).fetchone()
            assert n == cohort
        # data quality as of the run: run 1 saw 3 deliveries (one refused), run 2 also the new cut
        status = dict(con.execute("SELECT run_id, list(status ORDER BY status) FROM results.dq_deliveries "
                                  "GROUP BY run_id").fetchall())
        assert status[1] == ["accepted", "accepted", "refused"]
        assert status[2] == ["accepted", "accepted", "refused", "superseded", "superseded"]
        # the stored SMDs are those of the stored counts
        counts = {(v, lv, e): n for v, lv, e, n in con.execute(
            "SELECT variable, level, edss, n_patients FROM results.table1_counts WHERE run_id = 1").fetchall()}
        levels = [lv for lv, _ in con.execute(
            "SELECT DISTINCT level, level_order FROM results.table1_counts WHERE run_id = 1 AND variable = 'sex' "
            "ORDER BY level_order").fetchall()]
        (smd,) = con.execute("SELECT smd FROM results.table1_smd WHERE run_id = 1 AND variable = 'sex' "
                             "AND edss = '3.0-5.5'").fetchone()
        assert smd == pytest.approx(describe.smd_categorical([counts.get(("sex", lv, "3.0-5.5"), 0) for lv in levels],
                                                             [counts.get(("sex", lv, "0-2.5"), 0) for lv in levels]))


def test_one_module_writes_the_results_tables():
    # Before: results.attrition was filled by sql/results/attrition.sql (run from vigil/cohort), results.runs
    # by vigil/analysis/runs.py and the estimates by vigil/analysis/sap.py.
    writes = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY)\s+results\.", re.IGNORECASE)
    writers = sorted(str(p.relative_to(resources.CHECKOUT)) for p in
                     [*(resources.CHECKOUT / "vigil").rglob("*.py"), *(resources.CHECKOUT / "sql").rglob("*.sql")]
                     if writes.search(p.read_text(encoding="utf-8")))
    assert writers == ["vigil/analysis/results.py"]


def test_results_refuse_a_run_id_already_present(study):
    with duckdb.connect(str(study["db"]), read_only=True) as con:
        for tables in (describe.TABLES, sap.RESULT_TABLES, ["attrition"], ["runs"]):
            with pytest.raises(ValueError, match="already holds run 1"):
                results.refuse_existing_run(con, 1, tables)


# results.runs ------------------------------------------------------------------------------------


def test_finished_at_is_the_real_end_of_the_run(study, tmp_path, monkeypatch):
    # Before: finished_at was DuckDB's current_timestamp, the start of the run's transaction.
    copy = tmp_path / "vigil.duckdb"
    shutil.copy(study["db"], copy)
    real = sap.run_analyses

    def slow(con, run_id):
        time.sleep(1.5)
        return real(con, run_id)

    monkeypatch.setattr("vigil.analysis.sap.run_analyses", slow)
    with warehouse.connect(copy) as con:
        summary = analyse(con)
        started, finished = con.execute("SELECT started_at, finished_at FROM results.runs WHERE run_id = ?",
                                        [summary.run_id]).fetchone()
    assert (finished - started).total_seconds() >= 1.5


def test_parameters_record_every_number_changing_parameter(study):
    # Before: only what the caller passed ({"test": "per-run"}).
    with duckdb.connect(str(study["db"]), read_only=True) as con:
        (text, codelists) = con.execute("SELECT parameters, codelist_versions FROM results.runs WHERE run_id = 1"
                                        ).fetchone()
    parameters = json.loads(text)
    assert parameters["test"] == "per-run"  # what the caller passed is kept
    assert parameters["days"] == list(sap.DAYS)
    assert parameters["risk_windows"] == list(sap.RISK_WINDOWS)
    assert parameters["stratifiers"] == list(sap.STRATIFIERS)
    assert parameters["multivariable"] == list(sap.MULTIVARIABLE)
    assert parameters["sap_version"] == runs.SAP_VERSION
    assert parameters["course_gap_days"] == course_gap_days() == 30
    assert parameters["codelists"] == {name: info["version"] for name, info in json.loads(codelists).items()}
    assert {"charlson_quan2005_icd10", "dmt_classes", "opportunistic_terms"} <= set(parameters["codelists"])


def test_a_caller_cannot_contradict_an_analysis_parameter():
    with pytest.raises(ValueError, match="days"):
        runs.run_parameters({"days": [1, 2]}, {})
    assert runs.run_parameters({"days": list(sap.DAYS), "db": "x"}, {})["db"] == "x"


def test_the_course_gap_is_a_parameter_of_the_cohort_sql():
    text = (resources.SQL_DIR / "cohort" / "infusion_courses.sql").read_text(encoding="utf-8")
    assert "days_since_previous_infusion > $course_gap_days" in text and course_gap_days() == 30


# snapshots ---------------------------------------------------------------------------------------


def test_a_snapshot_is_read_only_and_its_hash_is_recorded(study):
    # Before: mode 0644, no sidecar, no results.runs.snapshot_sha256.
    snapshot = study["snapshot_1"]
    digest = hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o444
    side = snapshots.sidecar(snapshot)
    assert side.name == "vigil-run-000001.duckdb.sha256" and stat.S_IMODE(side.stat().st_mode) == 0o444
    assert side.read_text() == f"{digest}  {snapshot.name}\n"
    with duckdb.connect(str(study["db"]), read_only=True) as con:
        assert con.execute("SELECT snapshot_sha256 FROM results.runs WHERE run_id = 1").fetchone() == (digest,)
        assert con.execute("SELECT snapshot_sha256 FROM results.runs WHERE run_id = 2").fetchone() == (None,)
    assert snapshots.recorded_hashes(snapshot) == {str(side): digest,
                                                   f"{study['db']}:results.runs": digest}


def _altered_copy(study, tmp_path, keep_sidecar: bool) -> Path:
    folder = tmp_path / "wh"
    shutil.copytree(study["db"].parent, folder, symlinks=True)
    snapshot = folder / "snapshots" / study["snapshot_1"].name
    snapshot.chmod(0o644)
    with snapshot.open("r+b") as handle:  # one byte of the last block: DuckDB still opens the file
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if not keep_sidecar:
        snapshots.sidecar(snapshot).unlink()
    return snapshot


@pytest.mark.parametrize("keep_sidecar", [True, False], ids=["sidecar", "warehouse-only"])
def test_an_altered_snapshot_is_refused_naming_the_file(study, tmp_path, keep_sidecar):
    snapshot = _altered_copy(study, tmp_path, keep_sidecar)
    with pytest.raises(ReportError) as caught:
        render_report(snapshot, tmp_path / "report")
    message = str(caught.value)
    assert "\n" not in message and str(snapshot) in message and "altered" in message
    with pytest.raises(ReportError, match="altered"):  # also through the current.duckdb link
        render_report(snapshots.current_snapshot(tmp_path / "wh" / "vigil.duckdb"), tmp_path / "report")


def test_a_snapshot_without_a_recorded_hash_renders_with_a_warning(study, tmp_path):
    folder = tmp_path / "old" / "snapshots"
    folder.mkdir(parents=True)
    snapshot = folder / study["snapshot_1"].name
    shutil.copyfile(study["snapshot_1"], snapshot)  # no warehouse beside it, no sidecar
    result = render_report(snapshot, tmp_path / "report", run_id=1)
    assert any("no SHA-256 recorded" in w for w in result.warnings)


def test_pruning_removes_read_only_snapshots_and_their_sidecars(study, tmp_path):
    folder = tmp_path / "wh"
    shutil.copytree(study["db"].parent, folder, symlinks=True)
    db = folder / "vigil.duckdb"
    for run_id in range(3, snapshots.SNAPSHOTS_KEPT + 5):
        snapshots.publish_snapshot(db, run_id)
    kept = sorted(p.name for p in warehouse.snapshot_dir(db).glob("vigil-run-*.duckdb"))
    assert len(kept) == snapshots.SNAPSHOTS_KEPT and kept[-1] == f"vigil-run-{snapshots.SNAPSHOTS_KEPT + 4:06d}.duckdb"
    sidecars = sorted(p.name for p in warehouse.snapshot_dir(db).glob("*.sha256"))
    assert sidecars == [f"{name}.sha256" for name in kept]
    assert all(stat.S_IMODE((warehouse.snapshot_dir(db) / n).stat().st_mode) == 0o444 for n in kept)


def test_an_old_warehouse_gets_the_snapshot_column(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE SCHEMA results")
    con.execute("""CREATE TABLE results.runs (run_id BIGINT PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL,
                   finished_at TIMESTAMPTZ, status VARCHAR NOT NULL, code_version VARCHAR NOT NULL,
                   sap_version VARCHAR NOT NULL, codelist_versions JSON, parameters JSON, deliveries JSON,
                   flow_run_id VARCHAR, step_seconds JSON)""")
    con.execute("INSERT INTO results.runs VALUES (1, now(), now(), 'completed', 'x', '1.0', NULL, NULL, NULL, "
                "NULL, NULL)")
    results.create_tables(con, [results.RUNS])
    assert results.record_snapshot(con, 1, "ab" * 32)
    assert not results.record_snapshot(con, 2, "ab" * 32)  # no such run: nothing written
    assert con.execute("SELECT run_id, snapshot_sha256 FROM results.runs").fetchall() == [(1, "ab" * 32)]
    con.close()
