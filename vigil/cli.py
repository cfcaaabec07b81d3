"""The `vigil` command line. Commands call flows or plain functions; errors are messages, not tracebacks."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="vigil: serious infections after alemtuzumab, from site deliveries to the report.")
console = Console()
err = Console(stderr=True)

EXIT_REFUSED = 3
EXIT_USAGE = 2
EXIT_FAILED = 1

DbOption = Annotated[Optional[Path], typer.Option("--db", help="Warehouse file (default: $VIGIL_DB or warehouse/vigil.duckdb).")]


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _progress():
    """Rich progress bars for the steps the pipeline reports (vigil.progress) while a flow runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from vigil import progress

    columns = (SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        tasks: dict[str, int] = {}

        def draw(step: str, done: int, total: int, detail: str) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total, description=f"{step}: {detail}"[:44])

        with progress.listen(draw):
            yield


def _require_folders(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        _fail(f"not a folder: {', '.join(missing)}", EXIT_USAGE)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the deliveries into.")],
    patients: Annotated[int, typer.Option(min=1, help="Patients in all (split over sites).")] = 2000,
    sites: Annotated[int, typer.Option(min=1, max=50)] = 3,
    seed: int = 1,
    faults: Annotated[bool, typer.Option(help="Add rows that break each row rule and one delivery to refuse.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Write synthetic site deliveries that follow the extract spec."""
    from vigil.synth import synthesize_study

    if fmt not in ("csv", "parquet"):
        _fail("--format must be csv or parquet", EXIT_USAGE)
    with console.status(f"writing {patients:,} patients over {sites} sites"):
        result = synthesize_study(out, patients=patients, sites=sites, seed=seed, faults=faults, fmt=fmt)
    console.print(f"wrote {len(result.deliveries)} deliveries to {out}")
    for folder in result.deliveries:
        console.print(f"  {folder}")


def print_ingest_summary(outcomes) -> None:
    table = RichTable(title="Deliveries")
    for col in ("delivery", "status", "rows received", "loaded", "quarantined"):
        table.add_column(col, justify="left" if col in ("delivery", "status") else "right")
    for o in outcomes:
        style = {"accepted": "green", "refused": "red"}.get(o.status, "yellow")
        counts = ["", "", ""]
        if o.tables:
            counts = [f"{sum(getattr(t, k) for t in o.tables.values()):,}" for k in ("received", "loaded", "quarantined")]
        table.add_row(o.folder.name, f"[{style}]{o.status}[/]", *counts)
    console.print(table)
    for o in outcomes:
        if o.status == "accepted" and o.quarantine_reasons:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in o.quarantine_reasons.items())
            console.print(f"[bold]{o.folder.name}[/] quarantined rows by reason: {reasons}")
        elif o.status != "accepted":
            console.print(f"[bold]{o.folder.name}[/] {o.status}: {o.message}")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Delivery folders, or folders of delivery folders.")],
    db: DbOption = None,
    today: Annotated[Optional[str], typer.Option(help="Date that counts as today (ISO), for future-cut checks.")] = None,
) -> None:
    """Check and load deliveries; refuse or quarantine what breaks the extract spec.

    Exit status: 0 all accepted or already loaded, 3 some delivery refused, 2 usage error, 1 the warehouse
    could not take a delivery (e.g. disk full; nothing of it kept) or another run is writing.
    """
    from vigil.warehouse import WarehouseBusy, resolve_db, writer_lock

    _require_folders(paths)
    try:
        today_date = date.fromisoformat(today) if today else None
    except ValueError:
        _fail(f"--today {today!r} is not an ISO date", EXIT_USAGE)
    from pipelines.ingest_flow import ingest_flow

    db_path = resolve_db(db).resolve()
    try:
        with writer_lock(db_path), _progress():
            outcomes = ingest_flow([p.resolve() for p in paths], db_path, today_date)
    except WarehouseBusy as exc:
        _fail(str(exc))
    print_ingest_summary(outcomes)
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
        table.add_row(f"{row['step']}. {row['description']}", f"{row['n_remaining']:,} (-{row['n_excluded']:,})")
    console.print(table)
    ev = c["events"]
    console.print(f"cohort {c['cohort_size']:,} patients, {c['person_years']:,.0f} person-years; first serious "
                  f"infections {ev['first_serious']:,}, serious episodes {ev['all_serious']:,}, first "
                  f"opportunistic {ev['first_opportunistic']:,}; course_number disagreements "
                  f"{c['course_disagreements']:,}")
    if summary.snapshot:
        console.print(f"read-only snapshot: {summary.snapshot}")


@app.command()
def analyse(db: DbOption = None) -> None:
    """Build the cohort, analysis datasets and results (a new run), then publish the read-only snapshot."""
    from vigil import warehouse
    from vigil.run import analyse as run_analysis
    from vigil.run import publish_snapshot

    db_path = warehouse.resolve_db(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest deliveries first (vigil ingest)", EXIT_USAGE)
    try:
        with warehouse.writer_lock(db_path), console.status("building cohort and analyses"):
            with warehouse.connect(db_path) as con:
                warehouse.create_layout(con)
                summary = run_analysis(con, {"db": str(db_path)})
            summary.snapshot = publish_snapshot(db_path, summary.run_id)
    except (warehouse.WarehouseBusy, warehouse.LoadFailed) as exc:
        _fail(str(exc))
    print_run_summary(summary)


OutOption = Annotated[Optional[Path], typer.Option(
    "--out", help="Report folder: one run-<N>/ per run and current/ (default: report/ beside the warehouse).")]


def print_report(result) -> None:
    console.print(f"report of run {result.run_id}: {result.html}")
    console.print(f"  PDF ({result.pages} pages): {result.pdf}")
    console.print(f"  tables: {result.tables_dir} (CSV) and {result.xlsx}")
    for warning in result.warnings:
        console.print(f"  [yellow]note:[/] {warning}")


@app.command()
def report(
    db: DbOption = None,
    out: OutOption = None,
    run_id: Annotated[Optional[int], typer.Option("--run", help="Run to report (default: the latest).")] = None,
) -> None:
    """Render the incidence report of a run: report.html, report.pdf and tables/ (disclosure-controlled)."""
    from vigil import warehouse
    from vigil.report import ReportError, render_report

    db_path = warehouse.resolve_db(db)
    if not db_path.exists():
        _fail(f"{db_path} does not exist: ingest and analyse first", EXIT_USAGE)
    try:
        with warehouse.writer_lock(db_path), console.status("rendering the report"):
            result = render_report(db_path, out or warehouse.default_report_dir(db_path), run_id)
    except (ReportError, warehouse.WarehouseBusy) as exc:
        _fail(str(exc))
    print_report(result)


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Landing folders (delivery folders or folders of them).")],
    db: DbOption = None,
    out: OutOption = None,
) -> None:
    """The whole study pipeline as one Prefect flow: ingest, analyse, report, publish the snapshot."""
    from vigil import warehouse

    _require_folders(paths)
    from pipelines.study_flow import study_pipeline
    from vigil.report import ReportError

    db_path = warehouse.resolve_db(db).resolve()
    try:
        with warehouse.writer_lock(db_path), _progress():
            result = study_pipeline([p.resolve() for p in paths], db_path, out.resolve() if out else None)
    except (warehouse.WarehouseBusy, warehouse.LoadFailed, ReportError) as exc:
        _fail(str(exc))
    print_ingest_summary(result["deliveries"])
    print_run_summary(result["run"])
    print_report(result["report"])
    if any(o.status == "refused" for o in result["deliveries"]):
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo study (replaced).")] = Path("demo-study"),
    patients: int = 3000,
) -> None:
    """Synthesize a small study with faults into a landing folder and run the whole pipeline on it."""
    import shutil

    from vigil.report.render import current_report
    from vigil.warehouse import default_report_dir

    shutil.rmtree(out, ignore_errors=True)
    landing, db = out / "landing", out / "warehouse" / "vigil.duckdb"
    synth(landing, patients=patients, sites=3, seed=1, faults=True, fmt="csv")
    try:
        run([landing], db=db, out=None)
    except typer.Exit as exit_:
        # The demo's faults include a delivery that must be refused: that is the expected outcome.
        if exit_.exit_code not in (0, EXIT_REFUSED):
            raise
    console.print(f"demo study in {out.resolve()}")
    console.print(f"report: {(current_report(default_report_dir(db)) / 'report.html').resolve()}")


@app.command("contract-docs")
def contract_docs(out: Path = Path("docs/extract-contract.md")) -> None:
    """Regenerate the extract contract's documentation from schemas/."""
    from vigil.contract_docs import render

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    console.print(f"wrote {out}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a defect, not bad input (bad input is refused with its own message)
        if os.environ.get("VIGIL_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}\n(set VIGIL_DEBUG=1 to see where it happened)")
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
