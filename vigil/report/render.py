"""render_report: one run's results as the regulator reads them (HTML, PDF, CSV, XLSX)."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from vigil.contract import load_contract
from vigil.resources import TEMPLATE_DIR
from vigil.inert import inert
from vigil.warehouse import point_link, snapshots
from vigil.report.disclosure import (
    LESS_THAN_5, NOT_APPLICABLE, RULE_TEXT, SUPPRESSED, cut_curves, from_fifth_event, looks_numeric,
    neutralise_formula, shown_small_counts,
)
from vigil.report import figures as F
from vigil.report import monitoring as M
from vigil.report import sensitivity as S
from vigil.report import tables as T
from vigil.report.data import (
    METHODS, OUTCOMES, STRATIFIERS, WINDOW_ORDER, ReportError, RunData, load_run,
)
from vigil.report.protect import Protection, build_protection, patients_key

STUDY_TITLE = "Serious infections after alemtuzumab in relapsing–remitting multiple sclerosis"
STUDY_SUBTITLE = "Post-authorisation safety study: incidence report"
FIGURE_CACHE = ".figure-cache"  # in the reports folder, beside run-<N>/ (vigil.report.figures)


@dataclass
class ExportedTable:
    id: str
    title: str
    csv: Path
    sheet: str
    label_columns: list[str]
    count_columns: list[str]


@dataclass
class ReportResult:
    run_id: int
    out_dir: Path
    html: Path
    pdf: Path
    tables_dir: Path
    xlsx: Path
    tables: list[ExportedTable]
    figures: dict[str, int]  # figure id -> data points drawn
    sections: list[str]
    pages: int = 0  # of the PDF
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Block:
    kind: str  # text | table | figure | note
    table: T.Table | None = None
    figure: F.Figure | None = None
    text: str = ""
    attached: T.Table | None = None  # numbers-at-risk table printed under a figure


@dataclass
class Section:
    id: str
    number: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    wide: bool = False  # the whole section on landscape pages


# ---------------------------------------------------------------------------------------------


def _open(con_or_db, warnings: list[str] | None = None) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A connection to render from. A path to a published snapshot (snapshots/vigil-run-<N>.duckdb, or a
    link to one such as current.duckdb, or any file with a .sha256 sidecar) is first checked against the
    SHA-256 recorded at publish (vigil.warehouse.snapshots.check_snapshot: the sidecar, and the warehouse's
    results.runs when it can be read): altered bytes are refused with one line naming the file."""
    if isinstance(con_or_db, duckdb.DuckDBPyConnection):
        return con_or_db, False
    path = Path(con_or_db)
    if not path.exists():
        raise ReportError(f"no warehouse at {path}")
    if snapshots.snapshot_run_id(path) is not None or snapshots.sidecar(path.resolve()).is_file():
        try:
            found = snapshots.check_snapshot(path)
        except snapshots.SnapshotAltered as exc:
            raise ReportError(str(exc)) from None
        if warnings is not None:
            warnings.extend(found)
    try:
        return duckdb.connect(str(path), read_only=True), True
    except duckdb.IOException as exc:
        raise ReportError(f"cannot open {path} read-only: {exc}") from None


def data_docs_index(db_path: Path | None) -> Path | None:
    """The Great Expectations Data Docs index kept beside the warehouse (<db folder>/gx/...); for a
    snapshot (<db folder>/snapshots/x.duckdb) the warehouse folder is the parent."""
    if db_path is None:
        return None
    candidates = [db_path.parent / "gx"]
    real = db_path.resolve()
    if real.parent.name == "snapshots" or db_path.parent.name == "snapshots":
        candidates.append(db_path.parent.parent / "gx")
    for gx in candidates:
        if gx.is_dir():
            found = sorted(gx.glob("**/data_docs/local_site/index.html")) or sorted(gx.glob("**/data_docs/**/index.html"))
            if found:
                return found[0].resolve()
    return None


def render_report(con_or_db, out_dir: Path, run_id: int | None = None) -> ReportResult:
    """Render run `run_id` (default: the latest completed run) into out_dir/run-<N>/: report.html
    (self-contained), report.pdf, tables/*.csv and tables/run<N>_tables.xlsx; out_dir/current points at
    the newest. Everything that leaves the database passes disclosure control (vigil.report.disclosure)."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    opened_warnings: list[str] = []
    con, owned = _open(con_or_db, opened_warnings)
    try:
        data = load_run(con, run_id)
        db_path = data.db_path
    finally:
        if owned:
            con.close()
    seconds["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    try:
        prot = build_protection(data, T.at_risk_frame(data))
    except ValueError as exc:  # one published value with two different values in the results
        raise ReportError(f"run {data.run['run_id']}: the results tables disagree: {exc}") from exc
    seconds["disclosure"] = time.perf_counter() - t

    t = time.perf_counter()
    report_root = Path(out_dir)
    with F.figure_cache(report_root / FIGURE_CACHE):
        sections, cover = build_sections(data, prot, db_path)
    seconds["tables_figures"] = time.perf_counter() - t

    rid = data.run["run_id"]
    out_dir = partial_dir(report_root, rid)
    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True)
    all_tables = [tb for s in [cover["section"], *sections] for b in s.blocks
                  for tb in (b.table, b.attached) if tb is not None]
    _check_disclosure(all_tables)

    t = time.perf_counter()
    exported = export_tables(all_tables, tables_dir, rid)
    seconds["exports"] = time.perf_counter() - t

    t = time.perf_counter()
    html = render_html(data, sections, cover, exported)
    html_path = out_dir / "report.html"
    html_path.write_text(html, encoding="utf-8")
    seconds["html"] = time.perf_counter() - t

    t = time.perf_counter()
    pdf_path = out_dir / "report.pdf"
    pages = write_pdf(html, pdf_path)
    seconds["pdf"] = time.perf_counter() - t

    out_dir = publish_report(out_dir, report_root, rid)
    tables_dir = out_dir / "tables"
    exported = [replace(e, csv=tables_dir / e.csv.name) for e in exported]
    seconds["total"] = time.perf_counter() - t0

    figures = {b.figure.id: b.figure.points for s in sections for b in s.blocks if b.figure is not None}
    warnings = list(opened_warnings)
    if prot.residual:
        warnings.append(f"{len(prot.residual)} relation(s) have every cell suppressed and the display bounds still "
                        "imply their values (e.g. a total <5 whose parts are all <5)")
    return ReportResult(rid, out_dir, out_dir / html_path.name, out_dir / pdf_path.name, tables_dir,
                        tables_dir / f"run{rid}_tables.xlsx", exported, figures, [s.id for s in sections], pages,
                        {k: round(v, 3) for k, v in seconds.items()}, warnings)


def _check_disclosure(tables: list[T.Table]) -> None:
    for table in tables:
        found = shown_small_counts(table.frame, [c for c in table.frame.columns if c not in table.label_columns])
        if found:
            raise RuntimeError(f"disclosure: table {table.id} would show counts 1-4: {found[:3]}")


# ---------------------------------------------------------------------------------------------
# content


def build_sections(data: RunData, prot: Protection, db_path: Path | None) -> tuple[list[Section], dict]:
    contract = load_contract()
    outcomes = [o for o in OUTCOMES if o in set(data.incidence["outcome"].to_list())]

    cover_section = Section("cover", "", "Cover")
    cover_section.blocks.append(Block("table", table=provenance_table(data)))
    cover_section.blocks.append(Block("table", table=versions_table(data, contract)))

    sections: list[Section] = []
    methods = Section("methods", "1", "Methods")
    sections.append(methods)

    monitoring = Section("monitoring", "2", "Safety monitoring across data cuts", wide=True)
    monitoring.blocks += M.monitoring_blocks(data, Block)
    sections.append(monitoring)

    # attrition
    rem_keys = T.attrition_keys(data, prot)
    att = T.attrition_table(data, prot, rem_keys)
    att_section = Section("attrition", "3", "Cohort attrition")
    fig = F.attrition_figure([tuple(r) for r in att.frame.rows()])  # first row: patient rows received
    att_section.blocks += [Block("figure", figure=fig), Block("table", table=att)]
    sections.append(att_section)

    # Table 1
    t1 = Section("table1", "4", "Baseline characteristics (Table 1)", wide=True)
    t1.blocks.append(Block("table", table=T.table1(data, prot)))
    sections.append(t1)

    # incidence
    inc = Section("incidence", "5", "Incidence rates")
    for i, outcome in enumerate(outcomes):
        table = T.incidence_table(data, prot, outcome)
        figure = F.incidence_forest(OUTCOMES[outcome], _forest_rows(data, table, outcome), f"fig_incidence_{outcome}")
        inc.blocks.append(Block("table", table=table))
        inc.blocks.append(Block("figure", figure=figure) if figure else
                          Block("note", text=f"No rate of {OUTCOMES[outcome].lower()} can be shown (all suppressed)."))
        if outcome == "first_serious" and (standardised := T.standardised_rate_table(data, prot)) is not None:
            inc.blocks.append(Block("table", table=standardised))  # A11 beside A1
    sections.append(inc)

    rw = Section("risk-windows", "6", "Risk windows: time since course start")
    rw_table = T.risk_window_table(data, prot)
    rw.blocks.append(Block("table", table=rw_table))
    rw_fig = F.risk_window_figure(_window_rows(data, rw_table))
    rw.blocks.append(Block("figure", figure=rw_fig) if rw_fig else
                     Block("note", text="No risk-window rate can be shown (all suppressed)."))
    if (rate_ratios := T.rate_ratio_table(data, prot)) is not None:
        rw.blocks.append(Block("table", table=rate_ratios))  # A9 beside A2
    sections.append(rw)

    # cumulative incidence
    cum = Section("cumulative-incidence", "7", "Cumulative incidence: Kaplan–Meier and Aalen–Johansen")
    cum_events = T.cumulative_events(data)
    ci_outcomes = [o for o in OUTCOMES if o in set(data.cumulative_incidence["outcome"].to_list())]
    for outcome in ci_outcomes:
        for stratifier in STRATIFIERS:
            if data.cumulative_incidence.filter((pl.col("outcome") == outcome)
                                                & (pl.col("stratifier") == stratifier)).is_empty():
                continue
            figure, notes = curve_figure(data, prot, outcome, stratifier)
            at_risk = T.at_risk_table(data, prot, outcome, stratifier)
            label = STRATIFIERS[stratifier]
            if figure is None:
                cum.blocks.append(Block("note", text=f"{OUTCOMES[outcome]}, {label.lower()}: no curve can be shown "
                                        "(every stratum has 1–4 events or fewer than 5 patients at risk).",
                                        attached=at_risk))
            else:
                figure.caption += (" " + " ".join(notes)) if notes else ""
                cum.blocks.append(Block("figure", figure=figure, attached=at_risk))
        for method in METHODS:
            if data.cumulative_incidence.filter((pl.col("method") == method) & (pl.col("outcome") == outcome)).height:
                cum.blocks.append(Block("table", table=T.cumulative_incidence_table(data, prot, method, outcome,
                                                                                    cum_events)))
    if not data.logrank.is_empty():
        cum.blocks.append(Block("table", table=T.logrank_table(data)))
    if (proportion := T.incidence_proportion_table(data, prot)) is not None:
        cum.blocks.append(Block("table", table=proportion))  # A8 beside A3
    sections.append(cum)

    # Cox
    cox = Section("cox", "8", "Cox proportional hazards models")
    for outcome in [o for o in OUTCOMES if o in set(data.cox["outcome"].to_list())] if not data.cox.is_empty() else []:
        rows = T.cox_rows(data, prot, outcome)
        fig = F.cox_forest(OUTCOMES[outcome], _cox_forest_rows(rows), f"fig_cox_{outcome}")
        cox.blocks.append(Block("figure", figure=fig) if fig else
                          Block("note", text="No hazard ratio can be shown (all suppressed)."))
        cox.blocks.append(Block("table", table=T.cox_table(data, prot, outcome)))
        for extra in (T.cox_site_stratified_table(data, prot, outcome), T.cox_fit_table(data, outcome)):
            if extra is not None:
                cox.blocks.append(Block("table", table=extra))
    if (fine_gray := T.fine_gray_table(data, prot)) is not None:
        cox.blocks.append(Block("table", table=fine_gray))  # A10 beside A5
    if not cox.blocks:
        cox.blocks.append(Block("note", text="The run has no Cox model results."))
    sections.append(cox)

    sensitivity = Section("sensitivity", "9", "Sensitivity analyses")
    sensitivity.blocks += S.sensitivity_blocks(data, prot, Block)
    sections.append(sensitivity)

    # data quality annex
    dq = Section("data-quality", "A", "Annex A. Data quality")
    dq.blocks.append(Block("table", table=T.deliveries_table(data)))
    dq.blocks.append(Block("table", table=T.delivery_rows_table(data, prot)))
    if not data.quarantine.is_empty():
        dq.blocks.append(Block("table", table=T.quarantine_table(data, prot)))
        dq.blocks.append(Block("table", table=T.reasons_table(data, contract.reasons)))
    sections.append(dq)

    docs = data_docs_index(db_path)
    cover = {
        "section": cover_section,
        "run": data.run,
        "contract": contract,
        "data_docs": docs,
        "data_docs_uri": docs.as_uri() if docs else None,
        "db_path": db_path,
        "outcomes": outcomes,
        "signal": M.signal_statement(data),
        "signalled": bool(data.monitoring and data.monitoring.current["signal"]),
    }
    return sections, cover


def provenance_table(data: RunData) -> T.Table:
    rows = []
    for d in data.run.get("deliveries") or []:
        hashes = d.get("file_hashes") or {}
        for name, digest in sorted(hashes.items()):
            rows.append({"Site": d.get("site_id"), "Delivery": str(d.get("delivery_id")),
                         "Data cut": str(d.get("data_cut")), "File": name, "SHA-256": digest})
        if not hashes:
            rows.append({"Site": d.get("site_id"), "Delivery": str(d.get("delivery_id")),
                         "Data cut": str(d.get("data_cut")), "File": NOT_APPLICABLE, "SHA-256": NOT_APPLICABLE})
    cols = ["Site", "Delivery", "Data cut", "File", "SHA-256"]
    return T.Table("provenance", "Deliveries analysed in this run, with the SHA-256 of every input file",
                   T._text_frame(rows, cols), cols, [], group_column="Site")


def versions_table(data: RunData, contract) -> T.Table:
    run = data.run
    # Not the run number or its times: those are on the cover and in the file names, so that a rerun on
    # the same inputs exports byte-identical tables.
    rows = [
        {"Item": "Code (vigil)", "Version": str(run["code_version"]), "Detail": "git describe of the pipeline"},
        {"Item": "Statistical analysis plan", "Version": str(run["sap_version"]), "Detail": "analysis-plan.md"},
        {"Item": "Extract contract", "Version": str(contract.spec_version),
         "Detail": f"study {contract.study_id}, schemas/ (data transfer specification)"},
    ]
    for name, info in sorted((run.get("codelist_versions") or {}).items()):
        rows.append({"Item": f"Code list {name}", "Version": str(info.get("version")),
                     "Detail": f"{info.get('file', '')} sha256 {info.get('sha256', '')}"})
    params = run.get("parameters") or {}
    if params:
        rows.append({"Item": "Run parameters", "Version": "",
                     "Detail": ", ".join(f"{k}={v}" for k, v in sorted(params.items()))})
    cols = ["Item", "Version", "Detail"]
    return T.Table("versions", "Versions of code, plan, contract and code lists", T._text_frame(rows, cols), cols, [])


def _forest_rows(data: RunData, table: T.Table, outcome: str) -> list[dict]:
    frame = T._ordered(data.incidence.filter(pl.col("outcome") == outcome), data)
    rows = []
    for r, shown in zip(frame.iter_rows(named=True), table.frame.iter_rows(named=True)):
        visible = shown["Rate per 1,000 PY"] not in (SUPPRESSED, NOT_APPLICABLE) and shown["95% CI"] != SUPPRESSED
        ok = visible and r["ci_lower"] is not None and r["ci_upper"] is not None and math.isfinite(r["ci_upper"])
        rows.append({"group": STRATIFIERS.get(r["stratifier"], r["stratifier"]), "label": shown["Stratum"],
                     "rate": r["rate_per_1000py"], "lo": r["ci_lower"], "hi": r["ci_upper"], "shown": ok,
                     "note": shown["Rate per 1,000 PY"] if not ok else ""})
    return rows


def _window_rows(data: RunData, table: T.Table) -> list[dict]:
    exact = {r["window"]: r for r in data.risk_windows.iter_rows(named=True)}
    rows = []
    for shown in table.frame.iter_rows(named=True):
        w = shown["Days since course start"]
        if w not in exact:
            continue
        r = exact[w]
        ok = shown["Rate per 1,000 PY"] not in (SUPPRESSED, NOT_APPLICABLE) and r["ci_upper"] is not None
        rows.append({"label": w, "rate": r["rate_per_1000py"], "lo": r["ci_lower"], "hi": r["ci_upper"], "shown": ok,
                     "note": shown["Rate per 1,000 PY"]})
    return rows


def _cox_forest_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        item = {"group": STRATIFIERS.get(r["variable"], r["variable"]), "label": r["level"],
                "reference": r["reference"], "uni": None, "multi": None}
        for model, tag in (("univariable", "uni"), ("multivariable", "multi")):
            m = r.get(model)
            if m and not m.get("reference"):
                if m["hidden"]:
                    item[f"{tag}_note"] = SUPPRESSED
                elif m["finite"] and m["ci_lower"] is not None and m["ci_upper"] is not None \
                        and math.isfinite(m["ci_upper"]) and m["ci_lower"] > 0:
                    item[tag] = (m["hr"], m["ci_lower"], m["ci_upper"])
                else:
                    item[f"{tag}_note"] = NOT_APPLICABLE
        out.append(item)
    return out


def curve_figure(data: RunData, prot: Protection, outcome: str, stratifier: str) -> tuple[F.Figure | None, list[str]]:
    """KM and AJ panels for one outcome and stratifier, each curve cut where fewer than 5 remain at risk
    and drawn from its 5th event on; strata with fewer than 5 patients or 1-4 events are not drawn."""
    curves = data.curves.filter((pl.col("outcome") == outcome) & (pl.col("stratifier") == stratifier))
    events_col = next((c for c in ("n_events", "n_event", "events") if c in curves.columns), None)
    keys = ["method", "stratum"]
    cut = cut_curves(curves, keys, "day", "n_at_risk")
    if events_col is not None:  # cumulative events counted over the whole curve, then cut at the risk set
        started = from_fifth_event(curves, keys, events_col).select(*keys, "day")
        cut = cut.join(started, on=[*keys, "day"], how="semi")
    cut = thin_curves(cut, keys)
    order = [st for s, st in T.stratum_order(data) if s == stratifier]
    notes, panels = [], []
    hidden_strata = set()
    for st in order:
        if prot.is_suppressed(patients_key(stratifier, st)):
            hidden_strata.add(st)
    for method, title in (("kaplan_meier", "Kaplan–Meier (1 − S), death censored"),
                          ("aalen_johansen", "Aalen–Johansen, death competing")):
        part = cut.filter(pl.col("method") == method)
        if curves.filter(pl.col("method") == method).is_empty():
            continue
        panel = {}
        for st in order:
            if st in hidden_strata:
                continue
            c = part.filter(pl.col("stratum") == st).sort("day")
            if c.is_empty():
                continue
            label = "All patients" if stratifier == "overall" else st
            panel[label] = {"day": c["day"].to_list(), "estimate": c["estimate"].to_list(),
                            "lo": c["ci_lower"].fill_null(float("nan")).to_list(),
                            "hi": c["ci_upper"].fill_null(float("nan")).to_list()}
        panels.append((title, panel))
    drawn = {name for _, p in panels for name in p}
    missing = [("All patients" if stratifier == "overall" else st) for st in order if
               ("All patients" if stratifier == "overall" else st) not in drawn]
    if missing:
        notes.append(f"Not drawn (1–4 events or fewer than 5 patients): {', '.join(missing)}.")
    label = STRATIFIERS[stratifier]
    title = f"{OUTCOMES[outcome]}: cumulative incidence, {label.lower() if stratifier != 'overall' else 'all patients'}"
    caption = ("Step curves with pointwise 95% CI bands, cut where fewer than 5 patients remain at risk and "
               "drawn from the 5th event on (SAP 5). Numbers at risk below, at days since index (365 days = 1 year).")
    return F.curves_figure(title, panels, f"fig_curves_{outcome}_{stratifier}", caption), notes


MAX_CURVE_POINTS = 500


def thin_curves(curves: pl.DataFrame, keys: list[str], max_points: int = MAX_CURVE_POINTS) -> pl.DataFrame:
    """The points a step plot needs: rows where the estimate or its CI changes, and each curve's last row;
    then, if a curve still has more than max_points, the last row of each of max_points equal time bins
    (finer than the plot can show: ~0.2 mm per bin at the printed width)."""
    if curves.is_empty():
        return curves
    ordered = curves.sort([*keys, "day"])
    sig = [pl.col(c).fill_null(-1.0) for c in ("estimate", "ci_lower", "ci_upper")]
    changed = pl.any_horizontal([(s != s.shift(1).over(keys)).fill_null(True) for s in sig])
    last = pl.col("day") == pl.col("day").max().over(keys)
    thinned = ordered.filter(changed | last)
    span = max(int(thinned["day"].max() or 1), 1)
    width = max(span / max_points, 1.0)
    binned = thinned.with_columns((pl.col("day") / width).floor().alias("__bin"))
    keep = (pl.col("day") == pl.col("day").max().over([*keys, "__bin"])) | (pl.col("day") == pl.col("day").min().over(keys))
    return binned.filter(keep).drop("__bin").sort([*keys, "day"])


# ---------------------------------------------------------------------------------------------
# output


def _sheet_name(table_id: str, used: set[str]) -> str:
    base = re.sub(r"[\[\]\*\?/\\:]", "_", table_id)[:31]
    name, i = base, 2
    while name.lower() in used:
        suffix = f"~{i}"
        name = base[:31 - len(suffix)] + suffix
        i += 1
    used.add(name.lower())
    return name


def export_tables(tables: list[T.Table], tables_dir: Path, run_id: int) -> list[ExportedTable]:
    """One CSV per table and one workbook with a sheet per table, the run id in every file name. The cells
    are the table's text as shown, inert (T.Table: one line, control characters as escapes); text cells
    are neutralised against formula injection (`neutralise_formula`), and the workbook stores every text
    cell as a string, never a formula. The contents do not depend on when or as which run they were made:
    a rerun on the same inputs writes byte-identical files."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    wb = Workbook()
    wb.remove(wb.active)
    used: set[str] = set()
    exported = []
    for i, table in enumerate(tables, start=1):
        stem = f"run{run_id}_{i:02d}_{table.id}"
        path = tables_dir / f"{stem}.csv"
        frame = table.frame
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([_csv_text(c) for c in frame.columns])
            for row in frame.iter_rows():
                writer.writerow([_csv_text(v) for v in row])
        sheet = _sheet_name(table.id, used)
        ws = wb.create_sheet(sheet)
        _text_cell(ws, 1, 1, table.title).font = Font(bold=True)
        for c_i, name in enumerate(frame.columns, start=1):
            _text_cell(ws, 2, c_i, name).font = Font(bold=True)
        value_cols = [c not in table.label_columns for c in frame.columns]
        for r_i, row in enumerate(frame.iter_rows(), start=3):
            for c_i, (is_value, v) in enumerate(zip(value_cols, row), start=1):
                value = _xlsx_value(v) if is_value else v
                if isinstance(value, (int, float)):
                    cell = ws.cell(row=r_i, column=c_i, value=value)
                    cell.number_format = _number_format(v)
                    cell.alignment = Alignment(horizontal="right")
                else:
                    _text_cell(ws, r_i, c_i, value)
        for idx, name in enumerate(frame.columns, start=1):
            width = max([len(name)] + [len(v or "") for v in frame[name].to_list()][:500]) + 2
            ws.column_dimensions[ws.cell(row=2, column=idx).column_letter].width = min(max(width, 6), 70)
        for note_i, note in enumerate(table.notes):
            _text_cell(ws, frame.height + 4 + note_i, 1, note)
        exported.append(ExportedTable(table.id, table.title, path, sheet, table.label_columns, table.count_columns))
    xlsx = tables_dir / f"run{run_id}_tables.xlsx"
    wb.properties.created = FIXED_TIMESTAMP
    wb.save(xlsx)
    _fix_save_times(xlsx)
    return exported


FIXED_TIMESTAMP = datetime(2000, 1, 1)


def _fix_save_times(path: Path) -> None:
    """openpyxl stamps the zip members and the 'modified' property with the time of saving; rewrite both
    with one fixed time."""
    with zipfile.ZipFile(path) as source:
        members = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info, content in members:
            if info.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + FIXED_TIMESTAMP.strftime(
                    "%Y-%m-%dT%H:%M:%SZ").encode(), content)
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_TIMESTAMP.timetuple()[:6])
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            target.writestr(fixed, content)


# ---------------------------------------------------------------------------------------------
# the report folder: <out>/run-<N>/ per run, <out>/current -> the newest; each appears whole or not at all


def run_folder(report_root: Path, run_id: int) -> Path:
    return report_root / f"run-{run_id:06d}"


def current_report(report_root: Path) -> Path:
    return report_root / "current"


def partial_dir(report_root: Path, run_id: int) -> Path:
    """An empty folder to render into, beside where the run's folder will be (same file system)."""
    recover_report_root(report_root)
    partial = run_folder(report_root, run_id).with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def publish_report(partial: Path, report_root: Path, run_id: int) -> Path:
    """Move a finished render into place as run-<N>/ and point current at it. A rename is atomic, so a
    reader (or a kill -9) sees the old folder or the new one. Re-rendering a run moves the old folder
    aside first; recover_report_root puts it back if the process dies between the two renames."""
    for path in sorted(partial.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    final = run_folder(report_root, run_id)
    previous = final.with_suffix(".previous")
    if final.exists():
        os.replace(final, previous)
    os.replace(partial, final)
    shutil.rmtree(previous, ignore_errors=True)
    point_link(current_report(report_root), final.name)
    return final


def recover_report_root(report_root: Path) -> None:
    """Undo what a killed render left: partial folders go, a folder moved aside comes back."""
    if not report_root.is_dir():
        return
    for partial in report_root.glob("run-*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    for previous in report_root.glob("run-*.previous"):
        final = previous.with_suffix("")
        if final.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(previous, final)


def _csv_text(text) -> str:
    """A CSV field: the inert text, neutralised against formula injection (docs/ingest.md, "Delivered
    text on rendered surfaces")."""
    return "" if text is None else neutralise_formula(inert(text))


def _text_cell(ws, row: int, column: int, text):
    """A workbook cell holding `text` as a string: inert (openpyxl refuses control characters; a
    workbook is not where they should arrive anyway), neutralised against formula injection, and typed
    as a string so that no reader, nor openpyxl itself, takes it for a formula."""
    cell = ws.cell(row=row, column=column)
    cell.value = "" if text is None else neutralise_formula(inert(text))
    cell.data_type = "s"
    return cell


def _xlsx_value(text):
    """A cell that reads as a plain number becomes a number (shown with the same decimals); other text
    stays text (written by _text_cell)."""
    if text is None:
        return ""
    if looks_numeric(text) and not text.endswith("%"):
        number = float(text.replace(",", ""))
        return int(number) if re.fullmatch(r"[+-]?[\d,]+", text) else number
    return text


def _number_format(text: str) -> str:
    decimals = len(text.split(".")[1]) if "." in text else 0
    grouping = "#,##0" if "," in text else "0"
    return grouping + ("." + "0" * decimals if decimals else "")


def render_html(data: RunData, sections: list[Section], cover: dict, exported: list[ExportedTable]) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    css = (TEMPLATE_DIR / "report.css").read_text(encoding="utf-8")
    csv_names = {e.id: e.csv.name for e in exported}
    run = data.run
    cuts = sorted({inert(d.get("data_cut")) for d in (run.get("deliveries") or [])})
    sites = sorted({inert(d.get("site_id")) for d in (run.get("deliveries") or [])})
    contract = cover["contract"]
    return env.get_template("report.html.j2").render(
        css=css, title=STUDY_TITLE, subtitle=STUDY_SUBTITLE, run=run, cover=cover, sections=sections,
        csv_names=csv_names, cuts=cuts, sites=sites, contract=contract, study_id=contract.study_id,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), rule_text=RULE_TEXT,
        methods=methods_context(data, contract), outcomes=OUTCOMES, stratifiers=STRATIFIERS,
        less_than=LESS_THAN_5, suppressed=SUPPRESSED, not_applicable=NOT_APPLICABLE,
        window_order=WINDOW_ORDER, cohort_n=cover_count(data),
    )


def cover_count(data: RunData) -> str:
    final = int(data.attrition.sort("step")["n_remaining"][-1])
    from vigil.report.disclosure import format_count

    return format_count(final)


def methods_context(data: RunData, contract) -> dict:
    from vigil.cohort.codelists import codelist_versions

    recorded = data.run.get("codelist_versions") or {}
    try:
        current = codelist_versions()
    except Exception:  # noqa: BLE001 - the files may be absent where the report is made
        current = {}
    changed = sorted(name for name, info in current.items()
                     if name in recorded and info.get("sha256") != recorded[name].get("sha256"))
    days = sorted(data.cumulative_incidence["day"].unique().to_list())
    return {
        "attrition": data.attrition.sort("step").select("step", "description").rows(),
        "levels": {k: [inert(level) for level in v] for k, v in data.levels.items() if k != "site"},
        "sites": [inert(site) for site in data.levels.get("site", [])],
        "codelists": recorded or current,
        "codelists_changed": changed,
        "terms": data.opportunistic_terms,
        "days": days,
        "windows": [w for w in WINDOW_ORDER if w in set(data.risk_windows["window"].to_list())],
        "sap_version": data.run.get("sap_version"),
        "contract_version": contract.spec_version,
        "ph_transform": _ph_transform(data),
    }


def _ph_transform(data: RunData) -> str:
    """How the PH test was made, from the comment the analysis put on results.cox.ph_chisq."""
    comment = data.comments.get(("cox", "ph_chisq")) or ""
    match = re.search(r'transform\s+"([^"]+)"', comment)
    if "cox.zph" in comment and match:
        return (f"score test of R's cox.zph on scaled Schoenfeld residuals with the “{match.group(1)}” time "
                "transform, per term (all levels of a variable together) and globally per model")
    return "score test on scaled Schoenfeld residuals, per term and globally per model"


def write_pdf(html: str, path: Path) -> int:
    """Lay the HTML out on paged media (print CSS) and write the PDF; return the number of pages."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = HTML(string=html, base_url=str(TEMPLATE_DIR)).render()
    document.write_pdf(str(path))
    return len(document.pages)
