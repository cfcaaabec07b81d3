"""The `vigil` command line. Commands call flows or plain functions; errors are messages, not tracebacks.

Text that came from a delivery or from the user (folder, file and column names, manifest fields, refusal
messages, paths) is printed only as inert text (vigil.inert): as a rich Text, or through `console_text`
where it joins markup of ours, so `[/x]` is printed, not interpreted, and a newline cannot make a line of
its own. An expected failure (vigil.warehouse.WarehouseError, a report that cannot be made) is one line on
stderr and exit 1 (2 for a usage error); VIGIL_DEBUG=1 shows the tracebacks as well, Prefect's included.

Global options (before the command): --verbose adds the time each command took and each delivery's
seconds per load step; --quiet prints only errors (stderr) and each command's final line, without
progress bars, tables or Prefect's flow and task logs. `_final` prints a command's final line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from vigil.analysis.variants import SENSITIVITY_ANALYSES
from vigil.inert import console_text, inert

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
console = Console()
err = Console(stderr=True)

EXIT_SIGNAL = 4  # the run's look is in signal (SAP A14): a finding, the run itself completed
EXIT_REFUSED = 3
EXIT_USAGE = 2
EXIT_FAILED = 1

# The demo's data cuts and the rate ratio that makes its sequential test signal (at the last look, seed 1).
DEMO_CUTS = [date(2024, 6, 30), date(2024, 12, 31), date(2025, 6, 30), date(2025, 12, 31), date(2026, 6, 30)]
DEMO_RATE_RATIO, DEMO_RATE_RATIO_FROM = 2.5, date(2025, 7, 1)

# A folder `vigil demo` made holds this file; demo replaces a folder only if it does (or is empty).
DEMO_MARKER = ".vigil-demo"


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


_verbosity = 0  # -1 --quiet, 0 default, 1 --verbose
_nested = 0  # > 0 while a command runs inside another (demo): its final line is not the last


def set_verbosity(level: int) -> None:
    """-1 quiet (console output off but for final lines), 0 default, 1 verbose."""
    global _verbosity
    _verbosity = level
    console.quiet = level < 0


def _final(*objects, **kwargs) -> None:
    """A command's final line: printed even with --quiet, unless the command runs inside another."""
    quiet = console.quiet
    console.quiet = quiet and _nested > 0
    try:
        console.print(*objects, **{"soft_wrap": True, **kwargs})  # one line, however long
    finally:
        console.quiet = quiet


@contextmanager
def _inside():
    global _nested
    _nested += 1
    try:
        yield
    finally:
        _nested -= 1


@contextmanager
def _timed(name: str):
    """With --verbose, the command's wall time after its output."""
    start = time.perf_counter()
    yield
    if _verbosity > 0:
        console.print(f"{name} took {time.perf_counter() - start:.1f} s", markup=False, highlight=False)


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        console.print(f"vigil {importlib.metadata.version('vigil')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                          help="Print vigil's version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=(
        "Also print the time each command took and each delivery's seconds per load step."))] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=(
        "Print only errors (on stderr) and each command's final line: no progress bars, tables or "
        "Prefect flow and task logs."))] = False,
) -> None:
    """vigil: serious infections after alemtuzumab, from site deliveries to the report.

    Exit status of every command: 0 done; 1 an expected failure, said in one line on stderr (e.g. a
    damaged or busy warehouse, a step that failed); 2 a usage error (a bad option, a missing folder, a
    path that cannot be used); 3 done, but some delivery was refused (ingest, run); 130 interrupted.

    Environment: VIGIL_DEBUG=1 prints the traceback of an error as well (Prefect's included); VIGIL_DB
    is the default warehouse file (else warehouse/vigil.duckdb); VIGIL_MAX_QUARANTINE_SHARE overrides
    the contract's limit on the share of a table's rows a delivery may lose to quarantine;
    VIGIL_MEMORY_LIMIT caps DuckDB's memory (default 2GB; beyond it DuckDB spills to disk).
    """
    if verbose and quiet:
        _fail("--verbose and --quiet cannot be used together", EXIT_USAGE)
    set_verbosity(1 if verbose else -1 if quiet else 0)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="Warehouse file (default: $VIGIL_DB or warehouse/vigil.duckdb).")]


def _debug() -> bool:
    return bool(os.environ.get("VIGIL_DEBUG"))


def _fail(message: object, code: int = EXIT_FAILED) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", inert(message)), soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


@contextmanager
def _expected(db_path: Path | None = None):
    """Expected failures as one line on stderr and an exit status: a WarehouseError (exit 2 for a path that
    cannot be a warehouse, else 1), a report that cannot be made, a DuckDB error that says the warehouse file
    is damaged. With VIGIL_DEBUG=1 the traceback is printed first."""
    from vigil import warehouse

    try:
        yield
        return
    except warehouse.WarehouseError as exc:
        problem, where = exc, traceback.format_exc()
    except Exception as exc:
        import duckdb

        # vigil.report takes seconds to import: a ReportError can only come from it once it is imported.
        report_error = getattr(sys.modules.get("vigil.report.data"), "ReportError", ())
        if isinstance(exc, report_error):
            problem = exc
        elif not isinstance(exc, duckdb.Error) or (problem := warehouse.damage(exc, db_path)) is None:
            raise
        where = traceback.format_exc()
    if _debug():
        sys.stderr.write(where)
    _forget_tracebacks(problem)
    _fail(problem, EXIT_USAGE if isinstance(problem, warehouse.WarehousePathError) else EXIT_FAILED)


def _forget_tracebacks(exc: BaseException | None) -> None:
    """Drop the frames an expected failure keeps alive (Prefect keeps the error in the run's state): their
    DuckDB connections would otherwise outlive the interpreter, and DuckDB's bindings report them as leaks
    on stderr at exit, after the message."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def _warehouse(db: Path | None) -> Path:
    """The warehouse file every command uses: the real file behind --db / $VIGIL_DB / the default."""
    from vigil import warehouse

    with _expected():
        return warehouse.resolve_db(db)


def _quiet_prefect() -> None:
    """Before a flow runs, unless VIGIL_DEBUG: no tracebacks from Prefect's temporary server (its services,
    cancelled when it is stopped at exit while still recording task runs, log them: e.g. after an ingest
    of 300 empty folders) and no "Still processing items" warnings of Prefect's client at exit. A server
    you configured (PREFECT_API_URL) keeps its own logging; the flow and task logs are unchanged."""
    if _debug():
        return
    # Read by the temporary server's process: its own loggers, and the root logger, through which
    # libraries of its own (SQLAlchemy's pool: "Exception during reset", a CancelledError at shutdown) log.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "CRITICAL")
    for service in ("EventsWorker", "APILogWorker"):
        logging.getLogger(service).setLevel(logging.ERROR)
    if _verbosity < 0:  # --quiet: no flow and task run logs, no "Starting temporary server"
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def _progress():
    """Rich progress bars for the steps the pipeline reports (vigil.progress) while a flow runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from vigil import progress

    if _verbosity < 0:
        yield
        return
    # markup=False: the description names the delivery being loaded.
    columns = (SpinnerColumn(), TextColumn("{task.description:<44}", markup=False), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        tasks: dict[str, int] = {}

        def draw(step: str, done: int, total: int, detail: str) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total, description=inert(f"{step}: {detail}")[:44])

        with progress.listen(draw):
            yield


def _require_folders(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        _fail(f"not a folder: {', '.join(missing)}", EXIT_USAGE)  # _fail prints it inert


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the deliveries into.")],
    patients: Annotated[int, typer.Option(min=1, help=(
        "Patients in all (split over sites); with --data-cuts, the patients at the last cut "
        "(earlier cuts hold fewer)."))] = 2000,
    sites: Annotated[int, typer.Option(min=1, max=50, help="Number of sites, one delivery each (per data cut).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same deliveries.")] = 1,
    faults: Annotated[bool, typer.Option(help=(
        "Add rows that break each row rule and one delivery to refuse (with --data-cuts: faults in every "
        "delivery, no delivery to refuse)."))] = False,
    fmt: Annotated[Format, typer.Option("--format", help="File format of the deliveries.")] = Format.csv,
    data_cuts: Annotated[Optional[str], typer.Option("--data-cuts", metavar="DATE,DATE,...", help=(
        "Write a series of cumulative deliveries per site, one per data cut (increasing YYYY-MM-DD dates, "
        "comma-separated), with truth.parquet, rates.csv and corrections.csv beside them. Without it: one "
        "delivery per site at data cut 2026-06-30."))] = None,
    rate_ratio: Annotated[Optional[float], typer.Option("--rate-ratio", help=(
        "With --data-cuts: multiply the true serious and opportunistic infection rates by this (> 0) from "
        "--rate-ratio-from on (throughout without it)."))] = None,
    rate_ratio_from: Annotated[Optional[str], typer.Option("--rate-ratio-from", metavar="DATE", help=(
        "With --rate-ratio: the first day (YYYY-MM-DD, not after the last cut) at the raised rate; "
        "deliveries cut before it are the same as at rate ratio 1."))] = None,
    base_rate_scale: Annotated[Optional[float], typer.Option("--base-rate-scale", help=(
        "With --data-cuts: multiply the generator's serious and opportunistic infection rates by this (> 0) "
        "throughout (default: the scale that brings them near the SAP's reference rates)."))] = None,
) -> None:
    """Write synthetic site deliveries that follow the extract spec.

    With --data-cuts, a series: every site delivers at every cut, each delivery holding everything of the
    one before plus new follow-up and new patients (one serious infection is corrected away at one later
    cut of one site, as corrections.csv says); --rate-ratio raises the true rate from --rate-ratio-from on.

    Exit status: 0 done, 2 usage error (an option out of range, a --format other than csv or parquet,
    --data-cuts that are not increasing dates, --rate-ratio not > 0, --rate-ratio-from without --rate-ratio
    or after the last cut, a series option without --data-cuts, too few patients for the sites), 1 it would
    overwrite a file already in OUT, or a file could not be written.
    """
    from vigil.synth import synthesize_study

    fmt = Format(fmt).value
    series_options = {"--rate-ratio": rate_ratio, "--rate-ratio-from": rate_ratio_from,
                      "--base-rate-scale": base_rate_scale}
    if data_cuts is not None:
        import math

        from vigil.synth.cuts import check_series_arguments, parse_data_cuts, synthesize_series

        for name, value in (("--rate-ratio", rate_ratio), ("--base-rate-scale", base_rate_scale)):
            if value is not None and not (math.isfinite(value) and value > 0):
                _fail(f"{name} must be a number > 0, not {value:g}", EXIT_USAGE)
        if rate_ratio_from is not None and rate_ratio is None:
            _fail("--rate-ratio-from needs --rate-ratio", EXIT_USAGE)
        dates = {}
        for name, text in (("--data-cuts", data_cuts), ("--rate-ratio-from", rate_ratio_from)):
            try:
                dates[name] = parse_data_cuts(text) if text is not None else [None]
            except ValueError as exc:
                _fail(f"{name}: {exc}", EXIT_USAGE)
        if len(dates["--rate-ratio-from"]) > 1:
            _fail("--rate-ratio-from: one date", EXIT_USAGE)
        cuts = dates["--data-cuts"]
        arguments = {"rate_ratio": 1.0 if rate_ratio is None else rate_ratio,
                     "rate_ratio_from": dates["--rate-ratio-from"][0]}
        if base_rate_scale is not None:
            arguments["base_rate_scale"] = base_rate_scale
        try:
            check_series_arguments(cuts, **arguments)
        except ValueError as exc:
            _fail(exc, EXIT_USAGE)
        with _timed("synth"), console.status(f"writing {patients:,} patients over {sites} sites and {len(cuts)} cuts"):
            try:
                series = synthesize_series(out, cuts, patients=patients, sites=sites, seed=seed, faults=faults,
                                           fmt=fmt, **arguments)
            except FileExistsError as exc:
                _fail(exc)
            except ValueError as exc:  # too few patients for the sites (and faults) at some cut
                _fail(exc, EXIT_USAGE)
        _final(f"wrote {len(series.folders)} deliveries ({sites} sites x {len(cuts)} data cuts) to {console_text(out)}")
        for folder in series.folders:
            console.print(Text(f"  {inert(folder)}"), soft_wrap=True)  # a path, whole on its line
        return
    if given := [name for name, value in series_options.items() if value is not None]:
        _fail(f"{', '.join(given)} needs --data-cuts", EXIT_USAGE)
    with _timed("synth"), console.status(f"writing {patients:,} patients over {sites} sites"):
        result = synthesize_study(out, patients=patients, sites=sites, seed=seed, faults=faults, fmt=fmt)
    _final(f"wrote {len(result.deliveries)} deliveries to {console_text(out)}")
    for folder in result.deliveries:
        console.print(Text(f"  {inert(folder)}"), soft_wrap=True)  # a path, whole on its line


def print_ingest_summary(outcomes) -> None:
    """The deliveries' table and one line per quarantine or refusal; every delivered text inert (a Text)."""
    table = RichTable(title="Deliveries")
    for col in ("delivery", "status", "rows received", "loaded", "quarantined"):
        table.add_column(col, justify="left" if col in ("delivery", "status") else "right")
    for o in outcomes:
        style = {"accepted": "green", "refused": "red"}.get(o.status, "yellow")
        counts = ["", "", ""]
        if o.tables:
            counts = [f"{sum(getattr(t, k) for t in o.tables.values()):,}" for k in ("received", "loaded", "quarantined")]
        table.add_row(Text(inert(o.folder.name)), Text(inert(o.status), style=style), *counts)
    console.print(table)
    for o in outcomes:
        if o.status == "accepted" and o.quarantine_reasons:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in o.quarantine_reasons.items())
            said = f" quarantined rows by reason: {reasons}"
        elif o.status != "accepted":
            said = f" {o.status}: {o.message}"
        else:
            continue
        # One line each, however long (soft_wrap: the terminal wraps it, the output holds one line).
        console.print(Text.assemble((inert(o.folder.name), "bold"), inert(said)), soft_wrap=True)


def _print_step_seconds(outcomes) -> None:
    """--verbose: each delivery's seconds per load step."""
    if _verbosity > 0:
        for o in outcomes:
            if o.seconds:
                steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in o.seconds.items())
                console.print(Text(f"{inert(o.folder.name)} seconds per load step: {steps}"), soft_wrap=True)


def _print_ingest_final(outcomes) -> None:
    """The ingest's final line: how many deliveries ended how."""
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("accepted", "already_loaded", "refused", "failed")}
    _final(f"{len(outcomes)} deliveries: " + ", ".join(f"{n} {status.replace('_', ' ')}"
                                                      for status, n in counts.items() if n or status == "accepted"),
           markup=False, highlight=False)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Delivery folders, or folders of delivery folders.")],
    db: DbOption = None,
    today: Annotated[Optional[str], typer.Option(help="Date that counts as today (ISO), for future-cut checks.")] = None,
) -> None:
    """Check and load deliveries; refuse or quarantine what breaks the extract spec.

    Exit status: 0 all accepted or already loaded, 3 some delivery refused, 2 usage error (a missing folder,
    a bad --today, a warehouse path that is a folder), 1 the warehouse could not take a delivery (e.g. disk
    full; nothing of it kept), is damaged, read-only or of another schema version, or another run is writing.
    """
    from vigil import warehouse

    _require_folders(paths)
    try:
        today_date = date.fromisoformat(today) if today else None
    except ValueError:
        _fail(f"--today {today!r} is not an ISO date", EXIT_USAGE)
    db_path = _warehouse(db)
    with _timed("ingest"):
        with _expected(db_path), warehouse.writer_lock(db_path):
            warehouse.verify(db_path, write=True)  # a damaged or read-only warehouse: one line, before Prefect starts
            _quiet_prefect()
            from pipelines.ingest_flow import ingest_flow

            with _progress():
                outcomes = ingest_flow([p.resolve() for p in paths], db_path, today_date)
        print_ingest_summary(outcomes)
        _print_step_seconds(outcomes)
        _print_ingest_final(outcomes)
    if not outcomes:
        err.print("no delivery folders found")
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(EXIT_FAILED)
    if any(o.status == "refused" for o in outcomes):
        raise typer.Exit(EXIT_REFUSED)


def print_run_summary(summary) -> None:
    c = summary.cohort
    table = RichTable(title=f"Run {summary.run_id}")
    table.add_column("step")
    table.add_column("patients", justify="right")
    for row in c["attrition"]:
        table.add_row(Text(inert(f"{row['step']}. {row['description']}")),
                      f"{row['n_remaining']:,} (-{row['n_excluded']:,})")
    console.print(table)
    ev = c["events"]
    _final(f"cohort {c['cohort_size']:,} patients, {c['person_years']:,.0f} person-years; first serious "
                  f"infections {ev['first_serious']:,}, serious episodes {ev['all_serious']:,}, first "
                  f"opportunistic {ev['first_opportunistic']:,}; course_number disagreements "
                  f"{c['course_disagreements']:,}")
    m = summary.analyses.get("monitoring")
    if m:
        state = (f"SIGNAL (sequential test, SAP A14; first at look {m['signal_look']})" if m["signal"]
                 else "no signal")
        console.print(Text(f"safety monitoring: look {m['look']}{'' if m['new_look'] else ' (repeated)'}, "
                           f"O = {m['observed']:,}, E = {m['expected']:,.2f}: {state}"))
    if variants := summary.analyses.get("variants"):
        console.print(Text(f"sensitivity analyses (SAP A12): {', '.join(v['variant'] for v in variants)}"))
    if summary.snapshot:
        console.print(Text(f"read-only snapshot: {inert(summary.snapshot)}"))


ALL_VARIANTS = "all"
Sensitivity = Enum("Sensitivity", {name: name for name in (*SENSITIVITY_ANALYSES, ALL_VARIANTS)}, type=str)


@app.command()
def analyse(
    db: DbOption = None,
    variant: Annotated[Optional[list[Sensitivity]], typer.Option(
        "--variant", metavar="|".join(s.value for s in Sensitivity), help="A sensitivity analysis of SAP A12 to run beside the main analysis, as a named variant "
                          "of the same run (repeat the option for several; all = every one). vigil run runs all.")] = None,
) -> None:
    """Build the cohort, analysis datasets and results (a new run), then publish the read-only snapshot.

    Exit status: 0 done, 4 done and the sequential test is in signal at the run's look (SAP A14), 2 usage
    error (no warehouse yet, a warehouse path that is a folder), 1 the run failed (nothing of it kept) or the
    warehouse is damaged, read-only, of another schema version or being written.
    """
    from vigil import warehouse
    from vigil.analysis.runs import analyse as run_analysis
    from vigil.warehouse.snapshots import publish_snapshot

    db_path = _warehouse(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest deliveries first (vigil ingest)", EXIT_USAGE)
    with _timed("analyse"):
        with _expected(db_path), warehouse.writer_lock(db_path), console.status("building cohort and analyses"):
            warehouse.verify(db_path, write=True)
            with warehouse.connect(db_path) as con:
                warehouse.create_layout(con)
                summary = run_analysis(con, {"db": str(db_path)}, variants=_sensitivity(variant))
            summary.snapshot = publish_snapshot(db_path, summary.run_id)
        print_run_summary(summary)
    if summary.analyses["monitoring"]["signal"]:
        raise typer.Exit(EXIT_SIGNAL)


OutOption = Annotated[Optional[Path], typer.Option(
    "--out", help="Report folder: one run-<N>/ per run and current/ (default: report/ beside the warehouse).")]


def _sensitivity(chosen: list[Sensitivity] | None) -> list[str]:
    names = [c.value for c in chosen or []]
    return list(SENSITIVITY_ANALYSES) if ALL_VARIANTS in names else names


def print_report(result) -> None:
    _final(Text(f"report of run {result.run_id}: {inert(result.html)}"))
    console.print(Text(f"  PDF ({result.pages} pages): {inert(result.pdf)}"))
    console.print(Text(f"  tables: {inert(result.tables_dir)} (CSV) and {inert(result.xlsx)}"))
    for warning in result.warnings:
        console.print(Text.assemble("  ", ("note:", "yellow"), " ", inert(warning)))


@app.command()
def report(
    db: DbOption = None,
    out: OutOption = None,
    run_id: Annotated[Optional[int], typer.Option("--run", help="Run to report (default: the latest).")] = None,
) -> None:
    """Render the incidence report of a run: report.html, report.pdf and tables/ (disclosure-controlled).

    Exit status: 0 done, 2 usage error (no warehouse yet, a warehouse path that is a folder), 1 no such run
    or the warehouse is damaged, of another schema version or being written.
    """
    from vigil import warehouse
    from vigil.report import render_report

    db_path = _warehouse(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest and analyse first", EXIT_USAGE)
    with _timed("report"):
        with _expected(db_path), warehouse.writer_lock(db_path), console.status("rendering the report"):
            warehouse.verify(db_path)
            result = render_report(db_path, out or warehouse.default_report_dir(db_path), run_id)
        print_report(result)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help=(
        "Folder to write: a new or empty folder, or an earlier export (it holds .vigil-export), which is replaced "
        "whole. Any other folder is refused."))],
    db: Annotated[Optional[Path], typer.Option("--db", help=(
        "Warehouse file, or a published snapshot such as snapshots/current.duckdb (default: $VIGIL_DB or "
        "warehouse/vigil.duckdb)."))] = None,
    run_id: Annotated[Optional[int], typer.Option("--run", help="Run to export (default: the latest completed).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help=(
        "File format of the exact files (the tidy table is always CSV, as omopgenerics reads it)."))] = Format.parquet,
) -> None:
    """Export a run's results: every results table as exact typed files, and a disclosure-controlled tidy table.

    OUT/exact/ holds every results table of the run (Parquet or CSV; numbers unformatted, NULL empty, counts
    exact): for the study statisticians only, it must not leave the study team. OUT/tidy/ holds the run as an
    omopgenerics summarised_result CSV (omopgenerics::importSummarisedResult reads it), disclosure-controlled as
    the report is. OUT/README.md says what each file is and how to read it in R and SAS. From a snapshot (its
    SHA-256 checked) the export runs while the pipeline writes the warehouse.

    Exit status: 0 done, 2 usage error (OUT is not empty and not an earlier export, or is a file or a symlink; no
    warehouse yet; a warehouse path that is a folder), 1 no such run, a snapshot whose bytes changed, OUT cannot be
    written, or the warehouse is damaged, of another schema version or being written.
    """
    from contextlib import nullcontext

    from vigil import warehouse
    from vigil.export import ExportError, ExportPathError, export_run, is_snapshot, refusal

    problem = refusal(out)
    if problem:
        _fail(problem, EXIT_USAGE)
    db_path = _warehouse(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest and analyse first", EXIT_USAGE)
    snapshot = is_snapshot(db_path)  # a published snapshot is read-only: no writer lock, the pipeline may run
    with _timed("export"):
        try:
            with _expected(db_path), (nullcontext() if snapshot else warehouse.writer_lock(db_path)), \
                    console.status("exporting"):
                warehouse.verify(db_path)
                result = export_run(db_path, out, run_id, Format(fmt).value)
        except ExportPathError as exc:
            _fail(exc, EXIT_USAGE)
        except ExportError as exc:
            _fail(exc)
        _final(Text(f"export of run {result.run_id}: {inert(result.out)}"))
        console.print(Text(f"  exact ({result.fmt}, for the study statisticians only): {len(result.exact)} tables in "
                           f"{inert(result.out / 'exact')}"), soft_wrap=True)
        console.print(Text(f"  tidy (summarised_result, disclosure-controlled, {result.suppressed:,} values "
                           f"suppressed): {inert(result.tidy_csv)}"), soft_wrap=True)
        for warning in result.warnings:
            console.print(Text.assemble("  ", ("note:", "yellow"), " ", inert(warning)), soft_wrap=True)


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Landing folders (delivery folders or folders of them).")],
    db: DbOption = None,
    out: OutOption = None,
) -> None:
    """The whole study pipeline as one Prefect flow: ingest, analyse, report, publish the snapshot.

    Exit status: 0 done, 4 done and the sequential test is in signal at this run's look (SAP A14; it takes
    precedence over 3), 3 done and some delivery refused, 2 usage error (as for ingest), 1 a step failed
    (said in one line) or the warehouse is damaged, read-only, of another schema version or being written.
    """
    from vigil import warehouse

    _require_folders(paths)
    db_path = _warehouse(db)
    with _timed("run"):
        with _expected(db_path), warehouse.writer_lock(db_path):
            warehouse.verify(db_path, write=True)  # a damaged or read-only warehouse: one line, before Prefect starts
            _quiet_prefect()
            from pipelines.study_flow import study_pipeline

            with _progress():
                result = study_pipeline([p.resolve() for p in paths], db_path, out.resolve() if out else None)
        with _inside():  # the report's line is the final one
            print_ingest_summary(result["deliveries"])
            _print_step_seconds(result["deliveries"])
            print_run_summary(result["run"])
        print_report(result["report"])
    if (result["run"] and result["run"].analyses["monitoring"]["signal"]):
        raise typer.Exit(EXIT_SIGNAL)
    if any(o.status == "refused" for o in result["deliveries"]):
        raise typer.Exit(EXIT_REFUSED)


def _not_a_demo_study(out: Path) -> str | None:
    """Why `out` may not be replaced by the demo, or None: it may be a new folder, an empty one, or one
    an earlier demo made (it holds the regular file DEMO_MARKER)."""
    if out.is_symlink():
        return f"--out {out} is a symlink: give the folder itself"
    if not out.exists():
        return None
    if not out.is_dir():
        return f"--out {out} is not a folder"
    marker = out / DEMO_MARKER
    if (marker.is_file() and not marker.is_symlink()) or not any(out.iterdir()):
        return None
    return (f"--out {out} is not a demo study (it has no {DEMO_MARKER}): vigil demo replaces only a folder "
            "an earlier demo made; choose a new folder")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help=(
        f"Folder for the demo study: a new or empty folder, or an earlier demo study (it holds {DEMO_MARKER}), "
        "which is replaced whole. Any other folder is refused."))] = Path("demo-study"),
    patients: Annotated[int, typer.Option(min=1, help="Patients in the synthetic study (over 3 sites).")] = 3000,
) -> None:
    """Synthesize a study delivered at five data cuts and run the pipeline on each cut as it arrives.

    Three sites deliver cumulative extracts every six months (2024-06-30 to 2026-06-30), with faults to
    quarantine; from 2025-07-01 the true rate of infection is 2.5 times the reference rates. The first four
    cuts go through `vigil ingest` and `vigil analyse`, the last through `vigil run`: five looks of the
    monitoring across data cuts (SAP 7), and the report of the last, whose sequential test signals.

    The demo writes a marker file, .vigil-demo, into its folder; a later demo replaces only a folder that
    holds it (or an empty or new one), so a wrong --out cannot delete your files.

    Exit status: 0 done (the signal and any refused delivery are the demo's expected findings), 2 usage error
    (--out is not a demo study, is a file or a symlink), 1 a step failed (said in one line).
    """
    import shutil

    from vigil.report.render import current_report
    from vigil.warehouse import default_report_dir

    problem = _not_a_demo_study(out)
    if problem:
        _fail(problem, EXIT_USAGE)
    with _timed("demo"):
        if out.exists():
            try:
                shutil.rmtree(out)
            except OSError as exc:
                _fail(f"cannot replace the earlier demo study {out}: {exc.strerror or exc}")
        out.mkdir(parents=True)
        (out / DEMO_MARKER).write_text("Made by `vigil demo`: the next `vigil demo --out` to this folder replaces "
                                       "it whole.\n", encoding="utf-8")
        landing, db = out / "landing", out / "warehouse" / "vigil.duckdb"
        from vigil.synth import synthesize_series

        with _inside(), console.status(f"writing {patients:,} patients over 3 sites at {len(DEMO_CUTS)} data cuts"):
            series = synthesize_series(landing, DEMO_CUTS, patients=patients, sites=3, seed=1, faults=True,
                                       rate_ratio=DEMO_RATE_RATIO, rate_ratio_from=DEMO_RATE_RATIO_FROM)
        with _inside():
            for cut in DEMO_CUTS[:-1]:  # each cut as it arrives: a new look each
                console.print(Text(f"data cut {cut}", style="bold"))
                for step in (lambda: ingest(series.deliveries[cut], db=db), lambda: analyse(db=db)):
                    try:
                        step()
                    except typer.Exit as exit_:  # a refused delivery or a signal: findings, not failures
                        if exit_.exit_code not in (0, EXIT_REFUSED, EXIT_SIGNAL):
                            raise
            console.print(Text(f"data cut {DEMO_CUTS[-1]}: vigil run", style="bold"))
            try:
                run([landing], db=db, out=None)
            except typer.Exit as exit_:
                if exit_.exit_code not in (0, EXIT_REFUSED, EXIT_SIGNAL):
                    raise
        console.print(Text(f"demo study in {inert(out.resolve())}"))
        html = (current_report(default_report_dir(db.resolve())) / "report.html").resolve()
        _final(Text(f"report: {inert(html)}"))


network = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help=(
    "A study network (SAP 8): a site packages its aggregates; the coordinator pools them (P1, P2) and fits "
    "the site-stratified Cox model by distributed Newton-Raphson (P3). docs/network.md."))
app.add_typer(network, name="network")


@network.command("package")
def network_package(
    out: Annotated[Path, typer.Argument(help="Folder for the package: new, empty, or an earlier package (replaced).")],
    db: DbOption = None,
    run_id: Annotated[Optional[int], typer.Option("--run", help="Run to package (default: the latest).")] = None,
) -> None:
    """Write the site's result package from its latest run: disclosure-controlled results, profile
    log-likelihoods and a manifest with the sha256 of every file; never a patient row or a count 1-4.

    Exit status: 0 done, 2 usage error (no warehouse, OUT not usable), 1 the package cannot be made
    (no such run, a run of several sites, a count 1-4 found).
    """
    from vigil.network.package import PackageError, write_package

    db_path = _warehouse(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest and analyse first", EXIT_USAGE)
    with _timed("network package"), _expected(db_path), console.status("writing the package"):
        try:
            package = write_package(db_path, out, run_id)
        except PackageError as exc:
            _fail(exc, EXIT_USAGE if str(exc).startswith("OUT ") else EXIT_FAILED)
    _final(Text(f"package of site {inert(package.site)} (run {package.manifest['run_id']}) in {inert(out)}: "
                f"{len(package.results)} results, {len(package.profiles)} profile points, manifest sha256 "
                f"{package.manifest_sha256[:12]}"))


@network.command("pool")
def network_pool(
    packages: Annotated[list[Path], typer.Argument(help="The sites' package folders.")],
    db: Annotated[Path, typer.Option("--db", help="The coordinator's DuckDB file (created if new).")],
) -> None:
    """Check the packages and pool P1 (rates) and P2 (hazard ratios) into the coordinator's DuckDB
    (network.pooled_rates, network.pooled_hr, network.sites). A package that fails a check is refused
    whole, with one line naming the site and the file; the others are pooled.

    Exit status: 0 done, 3 done but some package was refused, 1 the coordinator's DuckDB cannot be written.
    """
    import duckdb

    from vigil.network.pool import pool_packages

    with _timed("network pool"), _expected(db):
        con = duckdb.connect(str(db))
        try:
            summary = pool_packages(packages, con)
        finally:
            con.close()
    for package, reason in summary.refused:
        err.print(Text.assemble(("refused:", "bold yellow"), " ", inert(reason)), soft_wrap=True)
    _final(Text(f"pooling {summary.pool_id}: {len(summary.accepted)} site(s) pooled "
                f"({', '.join(map(inert, summary.accepted)) or 'none'}), {len(summary.refused)} refused; "
                f"{summary.rows['pooled_rates']} pooled rates, {summary.rows['pooled_hr']} pooled hazard ratios "
                f"in {inert(db)}"))
    if summary.refused:
        raise typer.Exit(EXIT_REFUSED)


@network.command("cox")
def network_cox(
    site_dbs: Annotated[list[Path], typer.Argument(help="The sites' warehouses, each reached only through the "
                                                        "site-side function (score and information).")],
    db: Annotated[Path, typer.Option("--db", help="The coordinator's DuckDB file (created if new).")],
) -> None:
    """P3: A5's multivariable Cox model with a baseline hazard per site, by distributed Newton-Raphson;
    written to network.pooled_hr (model multivariable_site_stratified, method distributed).

    Exit status: 0 done, 2 usage error (a site warehouse missing), 1 a site cannot answer or the fit fails.
    """
    import duckdb

    from vigil.analysis.sap import FIRST_EVENT_OUTCOMES
    from vigil.network.distributed import distributed_cox, local_site
    from vigil.network.pool import record_distributed_cox, site_of_warehouse

    for path in site_dbs:
        if not path.is_file():
            _fail(f"{path} is not a site warehouse", EXIT_USAGE)
    with _timed("network cox"), _expected():
        connections = {}
        try:
            for path in site_dbs:
                con = duckdb.connect(str(path), read_only=True)
                site = site_of_warehouse(con)
                if site in connections:
                    _fail(f"site {inert(site)} given twice ({inert(path)})", EXIT_USAGE)
                connections[site] = con
            answers = {site: local_site(con) for site, con in connections.items()}
            sites = sorted(answers)
            fits = {}
            for outcome in FIRST_EVENT_OUTCOMES:
                with console.status(f"P3 {outcome}: distributed Newton-Raphson over {len(sites)} sites"):
                    fits[outcome] = distributed_cox(lambda site, request: answers[site](request), sites, outcome)
        finally:
            for con in connections.values():
                con.close()
        coordinator = duckdb.connect(str(db))
        try:
            summary = record_distributed_cox(coordinator, fits, sites)
        finally:
            coordinator.close()
    _final(Text(f"pooling {summary.pool_id}: P3 over {len(sites)} sites ({', '.join(map(inert, sites))}), "
                + ", ".join(f"{o} in {f.rounds} rounds" for o, f in fits.items()) + f", in {inert(db)}"))


@network.command("report")
def network_report(
    out: Annotated[Path, typer.Argument(help="Folder for report.html, report.pdf and tables/.")],
    db: Annotated[Path, typer.Option("--db", help="The coordinator's DuckDB file.")],
    pool_id: Annotated[Optional[int], typer.Option("--pool", help="Pooling to report (default: the latest).")] = None,
) -> None:
    """Render the network report from the coordinator's network.* tables: sites and refusals, rates and
    hazard ratios by site and pooled, forest plots, heterogeneity, the distributed model (P3).

    Exit status: 0 done, 2 usage error (no coordinator database), 1 no pooling in it.
    """
    from vigil.report.network import render_network_report

    if not db.is_file():
        _fail(f"{db} does not exist: pool first (vigil network pool)", EXIT_USAGE)
    with _timed("network report"), _expected(), console.status("rendering the network report"):
        try:
            result = render_network_report(db, out, pool_id)
        except ValueError as exc:
            _fail(exc)
    _final(Text(f"network report of pooling {result.pool_id}: {inert(result.html)} ({result.pages} pages)"))


@app.command("contract-docs")
def contract_docs(
    out: Annotated[Path, typer.Option(help="Markdown file to write (replaced).")] = Path("docs/extract-contract.md"),
) -> None:
    """Regenerate the extract contract's documentation from schemas/.

    Exit status: 0 done, 1 the file could not be written.
    """
    from vigil.contract.docs import render

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    _final(Text(f"wrote {inert(out)}"))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a defect, not bad input (bad input is refused with its own message)
        if _debug():
            raise
        err.print(Text.assemble(("error:", "bold red"), " ", inert(f"{type(exc).__name__}: {exc}")), soft_wrap=True)
        err.print("(set VIGIL_DEBUG=1 to see where it happened)", markup=False, highlight=False)
        _forget_tracebacks(exc)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
