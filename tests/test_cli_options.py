"""The command line a user expects (issue 16 part 6): --version, --verbose / --quiet, every option and
exit status documented in --help, choices offered as choices, VIGIL_DEBUG in the top-level help."""

from __future__ import annotations

import importlib.metadata

import pytest
import typer
from typer.testing import CliRunner

from vigil import cli
from vigil.cli import app

runner = CliRunner()


def _commands() -> dict:
    """Every command, a group's (vigil network) by "group command"."""
    commands = {}
    for name, command in typer.main.get_command(app).commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            commands.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            commands[name] = command
    return commands


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"vigil {importlib.metadata.version('vigil')}"


def test_top_level_help_documents_exit_codes_vigil_debug_and_the_global_options():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for wanted in ("VIGIL_DEBUG", "--version", "--verbose", "--quiet", "Exit status"):
        assert wanted in result.output, wanted


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_documents_its_options_and_exit_codes(name):
    command = _commands()[name]
    undocumented = [p.name for p in command.params if p.param_type_name == "option" and not (p.help or "").strip()]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    arguments = [p.name for p in command.params if p.param_type_name == "argument"]
    result = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Exit status" in result.output and "0 " in result.output, name
    for argument in arguments:  # typer shows an argument's help in the Arguments panel
        assert getattr(command.params[[p.name for p in command.params].index(argument)], "help", None), argument


def test_every_option_of_the_group_has_help():
    group = typer.main.get_command(app)
    assert all((p.help or "").strip() for p in group.params if p.param_type_name == "option")


def test_format_is_a_choice():
    help_text = runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output
    assert "csv|parquet" in help_text
    result = runner.invoke(app, ["synth", "somewhere", "--format", "xlsx"])
    assert result.exit_code == 2 and "xlsx" in result.output


def test_verbose_and_quiet_together_are_a_usage_error():
    result = runner.invoke(app, ["--verbose", "--quiet", "contract-docs", "--out", "x.md"])
    assert result.exit_code == 2


def test_quiet_prints_only_the_final_line(tmp_path):
    out = tmp_path / "deliveries"
    loud = runner.invoke(app, ["synth", str(out), "--patients", "60", "--sites", "2"], env={"COLUMNS": "300"})
    assert loud.exit_code == 0 and len(loud.output.strip().splitlines()) == 3, loud.output
    quiet = runner.invoke(app, ["--quiet", "synth", str(tmp_path / "again"), "--patients", "60", "--sites", "2"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output.strip().splitlines() == [f"wrote 2 deliveries to {tmp_path / 'again'}"]


def test_verbose_adds_the_time_a_command_took(tmp_path):
    result = runner.invoke(app, ["--verbose", "synth", str(tmp_path / "d"), "--patients", "60", "--sites", "2"])
    assert result.exit_code == 0, result.output
    assert "synth took" in result.output


def test_errors_still_show_when_quiet(tmp_path):
    result = runner.invoke(app, ["--quiet", "ingest", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a folder" in result.output


@pytest.fixture(autouse=True)
def _reset_verbosity():
    yield
    cli.set_verbosity(0)
