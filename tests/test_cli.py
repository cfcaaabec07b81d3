"""The command line as an epidemiologist uses it: messages and exit codes, never a traceback."""

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
    result = runner.invoke(app, ["ingest", str(landing), "--db", str(db)])
    assert result.exit_code == 3, result.output
    assert "DK01_2026-06-30" in result.output and "accepted" in result.output
    assert f"{bad}, manifest.json: manifest is for study 'OTHER'" in result.output.replace("\n", "")
