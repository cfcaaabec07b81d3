"""`vigil export`: one run's results as files for statisticians, and as a tidy table that may leave the study.

`export_run(source, out, run_id=None, fmt="parquet")` writes, for run `run_id` (default: the latest
completed run) of `source` (the warehouse, or a published read-only snapshot, whose SHA-256 is checked
first as the report checks it), the folder `out`:

  README.md                         what each file is, the run, its data cuts, who may see what, how to
                                    read the files in R and SAS
  exact/<table>.parquet|csv         every results table that has a run_id (found in the catalog), the
                                    run's rows, typed and unformatted: exact values, small counts
                                    included (vigil.export.exact). For the study statisticians only.
  tidy/summarised_result_run<N>.csv the run's results as an omopgenerics summarised_result with its
                                    settings, disclosure-controlled as the report is (vigil.export.tidy):
                                    what may leave the study (SAP 5, SAP 8's result package)
  .vigil-export                     marks the folder as an export

Why a package of its own (vigil/export/) rather than a module of vigil/report/: the exact files are not
disclosure-controlled, and everything vigil/report/ writes is (its rule: "everything that leaves the
database goes through disclosure control"); the export is a client of the report's data and disclosure
plan (vigil.report.data, vigil.report.protect), as the report is of results.*, and has its own folder
contract.

The folder appears whole or not at all: it is written beside `out` under a temporary name and renamed
into place. `out` may be a new folder, an empty one or an earlier export (it holds .vigil-export), which
is replaced whole; anything else is refused (ExportPathError), so a wrong path cannot delete files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from vigil.export.exact import ExactFile, run_tables, write_exact
from vigil.export.tidy import TidyError, TidyTable, build_tidy, write_csv
from vigil.inert import inert

MARKER = ".vigil-export"
EXACT_DIR = "exact"
TIDY_DIR = "tidy"


class ExportError(RuntimeError):
    """The export cannot be made; the message, one line, says why."""


class ExportPathError(ExportError):
    """OUT cannot be written to: not a new or empty folder nor an earlier export (a usage error)."""


@dataclass
class ExportResult:
    run_id: int
    out: Path
    fmt: str
    exact: list[ExactFile]
    tidy_csv: Path
    tidy_rows: int
    suppressed: int
    readme: Path
    warnings: list[str] = field(default_factory=list)


def refusal(out: Path) -> str | None:
    """Why `out` may not be written (replaced), or None: a new folder, an empty one, or an earlier export."""
    if out.is_symlink():
        return f"OUT {out} is a symlink: give the folder itself"
    if not out.exists():
        return None
    if not out.is_dir():
        return f"OUT {out} is not a folder"
    marker = out / MARKER
    if (marker.is_file() and not marker.is_symlink()) or not any(out.iterdir()):
        return None
    return (f"OUT {out} is not empty and not an earlier export (it has no {MARKER}): vigil export replaces only "
            "a folder an earlier export made; choose a new folder")


def is_snapshot(path: Path) -> bool:
    from vigil.warehouse import snapshots

    return snapshots.snapshot_run_id(path) is not None or snapshots.sidecar(Path(path).resolve()).is_file()


def _open(source: Path, warnings: list[str]) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse or to a published snapshot (checked against its SHA-256)."""
    from vigil.warehouse import snapshots

    source = Path(source)
    if not source.exists():
        raise ExportError(f"no warehouse at {source}")
    if is_snapshot(source):
        try:
            warnings.extend(snapshots.check_snapshot(source))
        except snapshots.SnapshotAltered as exc:
            raise ExportError(str(exc)) from None
    try:
        return duckdb.connect(str(source), read_only=True)
    except duckdb.IOException as exc:
        raise ExportError(f"cannot open {source} read-only: {str(exc).splitlines()[0]}") from None


def export_run(source: Path, out: Path, run_id: int | None = None, fmt: str = "parquet") -> ExportResult:
    """Write the export of run `run_id` (default: the latest completed) of `source` into `out` (see the module)."""
    from vigil.report.data import ReportError, load_run

    out = Path(out)
    problem = refusal(out)
    if problem:
        raise ExportPathError(problem)
    warnings: list[str] = []
    con = _open(source, warnings)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        try:
            data = load_run(con, run_id)
        except ReportError as exc:
            raise ExportError(str(exc)) from None
        rid = int(data.run["run_id"])
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        except OSError as exc:
            raise ExportError(f"cannot write beside {out}: {exc.strerror or exc}") from None
        try:
            exact = write_exact(con, rid, partial / EXACT_DIR, fmt)
            comments = dict(con.execute(
                "SELECT table_name, comment FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'results' AND comment IS NOT NULL").fetchall())
            tidy = run_tidy(con, data, [f.table for f in exact])
            (partial / TIDY_DIR).mkdir()
            tidy_csv = partial / TIDY_DIR / f"summarised_result_run{rid}.csv"
            tidy_rows = write_csv(tidy, tidy_csv)
            if tidy.unmapped:
                warnings.append(f"not in the tidy table (no mapping yet): {', '.join(tidy.unmapped)}")
            if tidy.residual:
                warnings.append(f"{len(tidy.residual)} relation(s) have every cell suppressed and the display "
                                "bounds still imply their values (e.g. a total <5 whose parts are all <5)")
            readme = partial / "README.md"
            readme.write_text(readme_text(data.run, source, fmt, exact, tidy, tidy_csv.name, comments, warnings),
                              encoding="utf-8")
            (partial / MARKER).write_text("Made by `vigil export`: the next `vigil export` to this folder replaces "
                                          "it whole.\n", encoding="utf-8")
            _sync(partial)
            _publish(partial, out)
        except OSError as exc:
            raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    finally:
        con.close()
        shutil.rmtree(partial, ignore_errors=True)
    exact = [ExactFile(f.table, out / EXACT_DIR / f.path.name, f.rows, f.columns, f.formula_like) for f in exact]
    return ExportResult(rid, out, fmt, exact, out / TIDY_DIR / tidy_csv.name, tidy_rows, tidy.suppressed,
                        out / "README.md", warnings)


def run_tidy(con: duckdb.DuckDBPyConnection, data, tables: list[str] | None = None) -> TidyTable:
    """The tidy, disclosure-controlled table of the run of `data` (vigil.report.data.load_run) from its
    results tables (default: every one with a run_id); ExportError when it cannot be made."""
    from vigil.contract import load_contract

    rid = int(data.run["run_id"])
    frames = {t: con.sql(f'SELECT * FROM results."{t}" WHERE run_id = ? ORDER BY ALL', params=[rid]).pl()
              for t in (run_tables(con) if tables is None else tables) if _wanted(t)}
    try:
        return build_tidy(frames, data, load_contract().study_id)
    except TidyError as exc:
        raise ExportError(str(exc)) from None


def _wanted(table: str) -> bool:
    from vigil.export.tidy import MAPPINGS

    mapping = MAPPINGS.get(table)
    return mapping is None or mapping.build is not None


def _sync(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _publish(partial: Path, out: Path) -> None:
    """Move the finished folder into place; an earlier export is moved aside first and then removed."""
    previous = out.parent / f".{out.name}.previous-{os.getpid()}"
    if out.exists():
        os.replace(out, previous)
    try:
        os.replace(partial, out)
    except OSError:
        if previous.exists():
            os.replace(previous, out)
        raise
    shutil.rmtree(previous, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# README.md


def readme_text(run: dict, source: Path, fmt: str, exact: list[ExactFile], tidy: TidyTable, tidy_name: str,
                comments: dict[str, str], warnings: list[str]) -> str:
    rid = run["run_id"]
    deliveries = run.get("deliveries") or []
    lines = [
        f"# vigil export of analysis run {rid}",
        "",
        f"Made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `vigil export` from `{inert(Path(source).resolve())}`"
        + (" (a published read-only snapshot, its SHA-256 checked)" if is_snapshot(Path(source)) else " (the warehouse)")
        + ".",
        "",
        f"- Run {rid}: finished {inert(run.get('finished_at'))}, code `{inert(run.get('code_version'))}`, "
        f"statistical analysis plan {inert(run.get('sap_version'))}.",
        "- Data cuts of the deliveries the run analysed:",
        "",
        "  | site | delivery | data cut |",
        "  |---|---:|---|",
        *[f"  | {inert(d.get('site_id'))} | {inert(d.get('delivery_id'))} | {inert(d.get('data_cut'))} |"
          for d in sorted(deliveries, key=lambda d: (str(d.get('site_id')), str(d.get('data_cut'))))],
        "",
        "## Who may see what",
        "",
        "**The files in `exact/` hold the exact values of the warehouse, small counts (1 to 4 patients or events) "
        "included. They are for the study statisticians and must not leave the study team** (statistical "
        "analysis plan, section 5: every report, figure and export that leaves the database shows a count of 1 to "
        "4 as `<5` and suppresses every estimate computed from such a cell; the database keeps exact values for "
        "the study statisticians).",
        "",
        f"`{TIDY_DIR}/{tidy_name}` is disclosure-controlled exactly as the report is and is what may leave the "
        "study (e.g. as a site's result package, SAP section 8).",
        "",
        f"## `{EXACT_DIR}/`: every results table of the run, exact",
        "",
        f"One {'Parquet' if fmt == 'parquet' else 'CSV'} file per table of schema `results` that has a `run_id`, "
        f"holding the rows of run {rid} (all variants: `variant` = `main` for the SAP's primary analysis, else a "
        "sensitivity analysis described in `variants`). The columns are the warehouse's, with its comments "
        "(`SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = 'results'` in the "
        "snapshot).",
        "",
    ]
    if fmt == "parquet":
        lines += ["Parquet keeps the warehouse's types (integers, doubles, dates, timestamps in UTC, JSON as "
                  "text, booleans); NULL is null.", ""]
    else:
        lines += ["CSV: UTF-8, a header row, comma-separated, fields quoted where needed. Numbers are unformatted "
                  "(integers whole, doubles at full precision, e.g. `0.1`, `1e-07`); NULL is an empty field (an empty "
                  "text is `\"\"`); dates are ISO 8601 (`2026-06-30`); timestamps ISO 8601 in UTC "
                  "(`2026-06-30T12:00:00.000000Z`); booleans `true`/`false`; JSON columns hold their JSON text. Text "
                  "is exactly as stored.", ""]
    lines += ["| file | rows | what it is |", "|---|---:|---|"]
    for f in exact:
        lines.append(f"| `{EXACT_DIR}/{f.path.name}` | {f.rows:,} | {_cell(comments.get(f.table, ''))} |")
    formula = [(f, column, n) for f in exact for column, n in f.formula_like.items()]
    if formula:
        lines += ["", "**Open these CSV files with R, SAS, Python or DuckDB, not a spreadsheet.** Text is written "
                  "exactly as stored, and these cells (delivered text) start with `=`, `+`, `-`, `@`, a tab or a "
                  "carriage return, which a spreadsheet would run as a formula:", ""]
        lines += [f"- `{EXACT_DIR}/{f.path.name}`, column `{inert(column)}`: {n} cell(s)" for f, column, n in formula]
    lines += [
        "",
        f"## `{TIDY_DIR}/{tidy_name}`: the run as an omopgenerics `summarised_result`",
        "",
        "The long table of the DARWIN EU packages (omopgenerics 1.3.0): result_id, cdm_name, group_name, "
        "group_level, strata_name, strata_level, variable_name, variable_level, estimate_name, estimate_type, "
        "estimate_value, additional_name, additional_level, followed by the settings of each result as rows with "
        "variable_name `settings`, as `omopgenerics::exportSummarisedResult` writes them. One result per results "
        "table and variant (and per method or variance where a table has several); its settings name the "
        "`result_type` (the results table), `analysis` (SAP A1-A15; SAP1 attrition, SAP2 the term list), "
        "`variant`, `run_id`, `sap_version`, `data_cuts`, `package_version` (the run's code version) and "
        f"`min_cell_count` {5}.",
        "",
        f"- cdm_name: `{inert(tidy.cdm_name)}` (the site's id when the run analysed one site's deliveries, else the "
        "study id: the pooled warehouse, its sites being the strata `site`).",
        f"- Disclosure control: counts of 1 to 4 and every estimate computed from such a cell are `-` "
        f"(omopgenerics' mark of a suppressed value), and so are the complementary cells that keep a suppressed "
        f"count from being recovered by subtraction from a total: {tidy.suppressed:,} values here. 0 is shown. "
        "Delivered text (site ids, MedDRA terms, folder names, reasons) is inert, and text a spreadsheet would "
        "read as a formula starts with an apostrophe.",
    ]
    if tidy.excluded or tidy.unmapped:
        lines.append("- Not in the tidy table: " + "; ".join(
            [f"`{t}` ({why})" for t, why in tidy.excluded.items()]
            + [f"`{t}` (no tidy mapping yet)" for t in tidy.unmapped]) + ".")
    lines += [
        "",
        "## Reading the files in R",
        "",
        "```r",
        "# the tidy table (CRAN: omopgenerics)",
        f'result <- omopgenerics::importSummarisedResult("{TIDY_DIR}")',
        "omopgenerics::settings(result)",
        "# one result type at a time, spread: a column per estimate and per group, strata and setting",
        'omopgenerics::filterSettings(result, result_type == "incidence") |> omopgenerics::tidy()',
        "",
    ]
    if fmt == "parquet":
        lines += ["# an exact table (CRAN: arrow)",
                  f'incidence <- arrow::read_parquet("{EXACT_DIR}/incidence.parquet")',
                  "# or all of them with DuckDB",
                  "con <- DBI::dbConnect(duckdb::duckdb())",
                  f"DBI::dbGetQuery(con, \"SELECT * FROM '{EXACT_DIR}/incidence.parquet'\")"]
    else:
        lines += ["# an exact table: NULL is an empty field",
                  f'incidence <- readr::read_csv("{EXACT_DIR}/incidence.csv", na = "", guess_max = Inf)',
                  "# base R",
                  f'incidence <- read.csv("{EXACT_DIR}/incidence.csv", na.strings = "", encoding = "UTF-8")']
    lines += [
        "```",
        "",
        "## Reading the files in SAS",
        "",
    ]
    if fmt == "parquet":
        lines += ["SAS 9.4 does not read Parquet: export again with `vigil export --format csv` and import the CSV "
                  "files as below (SAS Viya reads Parquet through a CASLIB).", ""]
    lines += [
        "```sas",
        "/* an exact table; empty fields are missing values */",
        "proc import datafile=\"exact/incidence.csv\" out=work.incidence dbms=csv replace;",
        "  getnames=yes; guessingrows=max;",
        "run;",
        "/* the tidy table: every column as text but result_id */",
        f"proc import datafile=\"{TIDY_DIR}/{tidy_name}\" out=work.summarised_result dbms=csv replace;",
        "  getnames=yes; guessingrows=max;",
        "run;",
        "```",
        "",
        "`guessingrows=max` makes SAS read every row before it chooses a column's type and length (a text column "
        "whose first rows are short is otherwise cut). Dates are read as SAS dates; ISO 8601 timestamps as text "
        "(`input(received_at, e8601dz32.)` makes them datetimes). In the tidy table `NA` and `-` are text: convert "
        "`estimate_value` with `input(estimate_value, ?? best32.)` to get numbers and missing values.",
    ]
    if warnings:
        lines += ["", "## Notes", "", *[f"- {inert(w)}" for w in warnings]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return inert(text).replace("|", "\\|")
