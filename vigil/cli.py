"""The `vigil` command line. Commands call flows or plain functions; errors are messages, not tracebacks."""

from __future__ import annotations

import sys
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
    for col in ("delivery", "status", "rows received", "loaded", "quarantined", "detail"):
        table.add_column(col, justify="right" if col in ("rows received", "loaded", "quarantined") else "left")
    for o in outcomes:
        received = sum(t.received for t in o.tables.values())
        loaded = sum(t.loaded for t in o.tables.values())
        quarantined = sum(t.quarantined for t in o.tables.values())
        style = {"accepted": "green", "refused": "red"}.get(o.status, "yellow")
        detail = ", ".join(f"{r} {n}" for r, n in o.quarantine_reasons.items()) if o.status == "accepted" else o.message
        table.add_row(o.folder.name, f"[{style}]{o.status}[/]",
                      f"{received:,}" if o.tables else "", f"{loaded:,}" if o.tables else "",
                      f"{quarantined:,}" if o.tables else "", detail)
    console.print(table)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Delivery folders, or folders of delivery folders.")],
    db: DbOption = None,
    today: Annotated[Optional[str], typer.Option(help="Date that counts as today (ISO), for future-cut checks.")] = None,
) -> None:
    """Check and load deliveries; refuse or quarantine what breaks the extract spec.

    Exit status: 0 all accepted or already loaded, 3 some delivery refused, 2 usage error.
    """
    from vigil.warehouse import WarehouseBusy, resolve_db

    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        _fail(f"not a folder: {', '.join(missing)}", EXIT_USAGE)
    try:
        today_date = date.fromisoformat(today) if today else None
    except ValueError:
        _fail(f"--today {today!r} is not an ISO date", EXIT_USAGE)
    from pipelines.ingest_flow import ingest_flow

    try:
        outcomes = ingest_flow([p.resolve() for p in paths], resolve_db(db).resolve(), today_date)
    except WarehouseBusy as exc:
        _fail(str(exc))
    print_ingest_summary(outcomes)
    if not outcomes:
        err.print("no delivery folders found")
    if any(o.status == "refused" for o in outcomes):
        raise typer.Exit(EXIT_REFUSED)


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


if __name__ == "__main__":
    main()
