"""What the console and the Prefect logs show (issue 15, classes 1 and 7).

Class 1: delivered text (folder, file and column names, manifest fields, refusal messages) is inert on
the CLI console and in Prefect's logs: never taken as Rich markup, control characters shown as escapes,
one line per message. Class 7: an expected failure (the warehouse path is a folder, the file is read-only,
many empty folders in the landing area) prints one clear line and nothing else, exit 1 or 2;
VIGIL_DEBUG=1 shows the tracebacks as well.
"""

import io
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import rehash, valid_rows, write_delivery
from rich.console import Console
from typer.testing import CliRunner

from vigil import cli, progress, warehouse
from vigil.cli import app
from vigil.inert import inert
from vigil.ingest.load import LoadOutcome, TableCounts

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

FORGED = "08:00:00.000 | INFO    | Flow run 'x' - Finished in state Completed()"
# Names a delivery folder can have (no "/"), and text a file or manifest can hold.
HOSTILE_NAMES = [f"DK01_2026-06-30\n{FORGED}", "[reverse]SE02_2026-06-30", "[link=http://evil.example]NO03",
                 "FI04\x1b[31mred\x1b[0m", "IS05\u202etxt.csv", "DE06\ttab\rreturn"]
HOSTILE_TEXT = ["column [/x] not in the spec", "manifest site '[/bold][link=http://e]x[/link]'",
                f"message with a newline\n{FORGED}", "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\"]


def _capture(monkeypatch, terminal: bool = False) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=400, force_terminal=terminal, color_system=None))
    return out


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- class 1: the console ----------------------------------------------------------------------------

def test_the_ingest_summary_shows_delivered_names_and_messages_inert_one_line_each(monkeypatch):
    out = _capture(monkeypatch)
    outcomes = [LoadOutcome(Path("/landing") / name, "refused", message=f"{Path('/landing') / name}, {text}")
                for name, text in zip(HOSTILE_NAMES, HOSTILE_TEXT * 2)]
    outcomes.append(LoadOutcome(Path("/landing/[bold]LU07"), "accepted", tables={"patients": TableCounts(3, 2, 1)},
                                quarantine_reasons={"[/x] reason\nforged": 1}))
    cli.print_ingest_summary(outcomes)
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\t" not in text and "\r" not in text
    assert not any(line.startswith(FORGED[:12]) for line in text.splitlines()), text
    summary = [line for line in _lines(text) if not line.startswith(("│", "┃", "┏", "┡", "└", " "))]
    assert len(summary) == len(outcomes), text  # one line per delivery below the table
    for outcome, line in zip(outcomes, summary):
        assert line.startswith(inert(outcome.folder.name)), line
    for outcome in outcomes[:-1]:
        assert f"{inert(outcome.folder.name)} refused: {inert(outcome.message)}" in summary, text
    assert "[bold]LU07 quarantined rows by reason: [/x] reason\\x0aforged 1" in summary
    table_rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(table_rows) == len(outcomes)  # a name with a newline does not add a row


def test_the_progress_bars_show_a_delivery_name_as_it_is(monkeypatch):
    for name, shown in [("[reverse]SE02\nforged", "[reverse]SE02\\x0aforged"),
                        ("[link=http://evil.example]NO03", "[link=http://evil.example]NO03")]:
        out = _capture(monkeypatch, terminal=True)
        with cli._progress():
            progress.report("ingest", 1, 2, name)
        text = out.getvalue()
        assert f"ingest: {shown}" in text, text
        assert "\x1b]8;" not in text  # no terminal hyperlink made from the name


def test_an_error_message_with_markup_or_a_newline_is_printed_as_one_line(tmp_path):
    db = tmp_path / "a[" / "x]" / "w\nforged.duckdb"  # "[/x]" and a newline in the path
    result = runner.invoke(app, ["analyse", "--db", str(db)])
    assert result.exit_code == 2, (result.output, result.exception)
    (line,) = _lines(result.output)
    assert line == f"error: {inert(db)} does not exist: ingest deliveries first (vigil ingest)"


def test_a_defect_message_with_markup_is_printed_not_interpreted(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom [/x] [link=http://evil.example]here\nsecond line")

    monkeypatch.delenv("VIGIL_DEBUG", raising=False)
    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    lines = _lines(capsys.readouterr().err)
    assert lines == ["error: RuntimeError: boom [/x] [link=http://evil.example]here\\x0asecond line",
                     "(set VIGIL_DEBUG=1 to see where it happened)"]


@contextmanager
def prefect_records():
    """The records Prefect's task and flow run loggers emit meanwhile."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.mark.flow
def test_delivered_text_in_prefect_logs_is_one_inert_line(prefect_harness, tmp_path):
    from pipelines.ingest_flow import ingest_flow

    landing = tmp_path / "landing"
    landing.mkdir()
    newline = write_delivery(tmp_path / "a", site="DK01").rename(landing / f"DK01_2026-06-30\n{FORGED}")
    header = write_delivery(landing, valid_rows("SE02"), site="SE02")
    patients = header / "patients.csv"
    patients.write_bytes(patients.read_bytes().replace(b"ms_course", b"ms_course[/x]", 1))
    rehash(header)
    write_delivery(landing, valid_rows("NO03"), site="NO03", manifest_edit=lambda m: m.update(study_id="[/x]\nforged"))

    with prefect_records() as records:
        outcomes = ingest_flow([landing], tmp_path / "wh" / "vigil.duckdb")
    assert sorted(o.status for o in outcomes) == ["refused"] * 3
    assert records
    for record in records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message, message
        assert "\n" not in str(getattr(record, "task_run_name", "")), record.task_run_name
    refusals = [r.getMessage() for r in records if "refused:" in r.getMessage()]
    assert len(refusals) == 3
    assert any(m.startswith(f"{inert(newline.name)} refused: ") for m in refusals), refusals
    assert any("[/x]" in m for m in refusals)


@pytest.mark.flow
def test_the_cli_shows_a_delivery_with_markup_and_a_forged_line_inert_after_loading_the_others(
        prefect_harness, tmp_path):
    """The issue's probes end to end: a header holding `[/x]` crashed the CLI after a delivery was committed,
    losing the summary; a folder name with a newline forged a line in the summary and the Prefect log."""
    landing = tmp_path / "landing"
    write_delivery(landing, site="DK01")
    header = write_delivery(landing, valid_rows("SE02"), site="SE02")
    patients = header / "patients.csv"
    patients.write_bytes(patients.read_bytes().replace(b"ms_course", b"ms_course[/x]", 1))
    rehash(header)
    manifest = write_delivery(landing, valid_rows("NO03"), site="NO03",
                              manifest_edit=lambda m: m.update(study_id="[/x][link=http://evil.example]y"))
    forged = write_delivery(tmp_path / "b", valid_rows("FI04"), site="FI04").rename(
        landing / f"FI04_2026-06-30\n{FORGED}")
    result = _vigil(["ingest", str(landing), "--db", str(tmp_path / "wh" / "vigil.duckdb")])
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "Traceback" not in output and "MarkupError" not in output
    assert not any(line.startswith(FORGED[:12]) for line in output.splitlines()), output
    lines = result.stdout.splitlines()
    assert any(line.startswith("│ DK01_2026-06-30") and "accepted" in line for line in lines), result.stdout
    assert any(line.startswith(f"{header.name} refused: ") and "ms_course[/x]" in line for line in lines)
    assert any(line.startswith(f"{manifest.name} refused: ") and "[/x][link=http://evil.example]y" in line
               for line in lines), result.stdout
    assert any(line.startswith(f"{inert(forged.name)} refused: ") for line in lines), result.stdout


# --- class 7: expected failures are one line ----------------------------------------------------------

def _vigil(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a process of its own, against the test harness's Prefect server (a flow run inside
    CliRunner would leave Prefect's console handler on CliRunner's closed stream for later flows)."""
    from prefect.settings import PREFECT_API_URL

    env = {**{k: v for k, v in os.environ.items() if k != "VIGIL_DEBUG"}, "COLUMNS": "250",
           "PREFECT_API_URL": PREFECT_API_URL.value(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)


def _only_line(output: str) -> str:
    lines = _lines(output)
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


@pytest.fixture
def read_only(tmp_path):
    """Make a file or folder read-only, also for root (chattr +i); undone at the end of the test."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.chmod(0o555 if path.is_dir() else 0o444)
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("root without chattr +i cannot have a read-only file here")
        made.append(path)
        return path

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("command", ["analyse", "report"])
def test_vigil_db_naming_a_folder_is_one_line_and_a_usage_error(tmp_path, monkeypatch, command):
    monkeypatch.setenv("VIGIL_DB", str(tmp_path))
    result = runner.invoke(app, [command])
    assert result.exit_code == 2, result.output
    assert _only_line(result.output) == \
        f"error: $VIGIL_DB {tmp_path} is a folder, not a warehouse file (e.g. {tmp_path / 'vigil.duckdb'})"


@pytest.mark.flow
@pytest.mark.parametrize("command", ["ingest", "run"])
def test_vigil_db_naming_a_folder_stops_ingest_and_run_before_prefect_with_one_line(prefect_harness, tmp_path,
                                                                                     command):
    landing = tmp_path / "landing"
    write_delivery(landing)
    result = _vigil([command, str(landing)], env={"VIGIL_DB": str(tmp_path)})
    assert result.returncode == 2
    assert _only_line(result.stdout + result.stderr) == \
        f"error: $VIGIL_DB {tmp_path} is a folder, not a warehouse file (e.g. {tmp_path / 'vigil.duckdb'})"


@pytest.fixture
def small_warehouse(tmp_path) -> Path:
    db = tmp_path / "wh" / "vigil.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
    return db


def test_a_read_only_warehouse_file_stops_analyse_with_one_line_and_can_still_be_reported_from(
        small_warehouse, read_only):
    read_only(small_warehouse)
    result = runner.invoke(app, ["analyse", "--db", str(small_warehouse)])
    assert result.exit_code == 1, result.output
    line = _only_line(result.output)
    assert line.startswith(f"error: cannot write the warehouse file {small_warehouse} ("), line
    result = runner.invoke(app, ["report", "--db", str(small_warehouse), "--out", str(small_warehouse.parent.parent)])
    assert result.exit_code == 1  # it reads the file: only what it finds there stops it
    assert _only_line(result.output) == "error: the warehouse has no results.runs: run `vigil analyse` first"


@pytest.mark.flow
@pytest.mark.parametrize("command", ["ingest", "run"])
def test_a_read_only_warehouse_stops_ingest_and_run_with_one_line(prefect_harness, small_warehouse, read_only,
                                                                  tmp_path, command):
    landing = tmp_path / "landing"
    write_delivery(landing)
    read_only(small_warehouse)
    result = _vigil([command, str(landing)], env={"VIGIL_DB": str(small_warehouse)})
    assert result.returncode == 1
    line = _only_line(result.stdout + result.stderr)
    assert line.startswith(f"error: cannot write the warehouse file {small_warehouse} ("), line


def test_a_read_only_folder_for_a_new_warehouse_is_a_sentence(tmp_path, read_only):
    (tmp_path / "ro").mkdir()
    db = read_only(tmp_path / "ro") / "vigil.duckdb"
    with pytest.raises(warehouse.WarehouseUnusable, match=f"cannot create the warehouse's lock file {db}.lock"):
        with warehouse.writer_lock(db):
            pass
    with pytest.raises(warehouse.WarehouseUnusable, match=f"cannot write the warehouse file {db}"):
        warehouse.verify(db, write=True)


@pytest.mark.flow
def test_an_expected_failure_inside_a_flow_is_logged_without_a_traceback(prefect_harness, tmp_path, monkeypatch):
    """As a deployment runs it: the run ends Failed with the one line; neither the task's nor the flow's log
    shows a traceback."""
    import pipelines.study_flow as study_flow

    def disk_full(*args, **kwargs):
        raise warehouse.LoadFailed("run 1: the analysis failed and was rolled back, no result of it was kept "
                                   "(IOException: No space left on device)")

    monkeypatch.setattr(study_flow, "analyse", disk_full)
    landing = tmp_path / "landing"
    write_delivery(landing)
    with prefect_records() as records, pytest.raises(warehouse.LoadFailed, match="No space left on device"):
        study_flow.study_pipeline([landing], tmp_path / "wh" / "vigil.duckdb")
    failures = [r for r in records if r.levelno >= logging.ERROR or "Failed" in r.getMessage()]
    assert failures, [r.getMessage() for r in records]
    assert all(r.exc_info is None or r.exc_info[1] is None for r in records)
    formatter = logging.Formatter()
    assert not any("Traceback" in formatter.format(r) for r in records)
    assert any("No space left on device" in r.getMessage() for r in failures)


def test_vigil_debug_shows_the_traceback_before_the_same_line(tmp_path):
    env = {**os.environ, "VIGIL_DB": str(tmp_path), "VIGIL_DEBUG": "1"}
    result = subprocess.run([sys.executable, "-m", "vigil.cli", "analyse"], cwd=ROOT, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert _lines(result.stderr)[-1] == \
        f"error: $VIGIL_DB {tmp_path} is a folder, not a warehouse file (e.g. {tmp_path / 'vigil.duckdb'})"


@pytest.mark.faults
@pytest.mark.flow  # the CLI's ingest starts Prefect's temporary server
def test_many_empty_folders_in_the_landing_area_print_no_traceback(tmp_path):
    """300 empty folders are 300 refusals; Prefect's temporary server, stopped at exit while it still records
    the task runs, printed its services' tracebacks after the summary."""
    landing = tmp_path / "landing"
    for i in range(300):
        (landing / f"empty-{i:03d}").mkdir(parents=True)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "250"}
    for name in ("PREFECT_API_URL", "VIGIL_DEBUG", "PREFECT_SERVER_LOGGING_LEVEL"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "vigil.cli", "ingest", str(landing), "--db",
                             str(tmp_path / "wh" / "vigil.duckdb")], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "Traceback" not in output and "Still processing items" not in output, output[-5000:]
    refusals = [line for line in result.stdout.splitlines() if " refused: " in line]
    assert len(refusals) == 300 and all(line.endswith("manifest.json: missing manifest.json") for line in refusals)
