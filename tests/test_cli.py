"""The command line as an epidemiologist uses it: messages and exit codes, never a traceback."""

import os
import subprocess
import sys

import pytest
from helpers import write_delivery
from typer.testing import CliRunner

from vigil.cli import app

runner = CliRunner()


def test_ingest_of_a_missing_folder_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2
    assert "not a folder" in result.output and "Traceback" not in result.output


def test_analyse_without_a_warehouse_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["analyse", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "ingest deliveries first" in result.output


def test_bad_today_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path), "--today", "tomorrow"])
    assert result.exit_code == 2 and "not an ISO date" in result.output


@pytest.mark.flow
def test_ingest_exits_3_when_a_delivery_is_refused_and_loads_the_others(tmp_path, prefect_harness):
    landing = tmp_path / "landing"
    write_delivery(landing, site="DK01")
    bad = write_delivery(landing, site="SE02", manifest_edit=lambda m: m.update(study_id="OTHER"))
    db = tmp_path / "wh" / "vigil.duckdb"
    # A process of its own, as the epidemiologist runs it (against the harness's server): a flow run inside
    # CliRunner would leave Prefect's console log handler on CliRunner's closed stream for later flows.
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "vigil.cli", "ingest", str(landing), "--db", str(db)],
                            capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "DK01_2026-06-30" in output and "accepted" in output and "Traceback" not in output
    assert f"{bad}, manifest.json: manifest is for study 'OTHER'" in output.replace("\n", "")


@pytest.mark.slow  # a generated study, ingested and analysed with a sensitivity analysis
def test_analyse_with_a_variant_runs_it_beside_the_main_analysis(tmp_path):
    from vigil import warehouse
    from vigil.ingest import validation
    from vigil.ingest.load import ingest_delivery
    from vigil.synth import synthesize_study

    db = tmp_path / "wh" / "vigil.duckdb"
    synth = synthesize_study(tmp_path / "landing", patients=300, sites=2, seed=3)
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        for folder in synth.deliveries:
            ingest_delivery(con, folder, warehouse.gx_dir_for(db), validator=validation.SQL_RULE_COUNTS)
    result = runner.invoke(app, ["analyse", "--db", str(db), "--variant", "course-gap-60",
                                 "--variant", "censor-at-switch"])
    assert result.exit_code in (0, 4), result.output  # 4: the look is in signal (a finding)
    assert "sensitivity analyses (SAP A12): censor-at-switch, course-gap-60" in result.output
    wrong = runner.invoke(app, ["analyse", "--db", str(db), "--variant", "gap-90"])
    assert wrong.exit_code == 2 and "gap-90" in wrong.output
    with warehouse.connect(db) as con:
        assert con.sql("SELECT variant FROM results.variants ORDER BY variant").fetchall() == [
            ("censor-at-switch",), ("course-gap-60",), ("main",)]
