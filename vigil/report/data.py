"""What the report reads from the warehouse: one run's results tables (results.*), nothing else.

Every table the report shows was written by the run itself (A1-A5 by vigil.analysis.sap, Table 1 and
data quality, A6/A7, by vigil.analysis.describe), so any recorded run renders, from the warehouse or from
a snapshot, and a later run changes nothing of it: no read of cohort.*, analysis.* or codelists.* (rebuilt
by every run) nor of audit.* (deliveries as of today). Everything is aggregated in DuckDB; no
patient-level rows reach Python. Exact values: disclosure control is applied later
(vigil.report.protect)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from vigil.analysis import describe, monitoring
from vigil.analysis.variants import MAIN
from vigil.analysis import sap as analysis
from vigil.cohort import strata


class ReportError(RuntimeError):
    """The report cannot be made; the message says why."""


OUTCOMES = {
    "first_serious": "First serious infection (primary outcome)",
    "all_serious": "All serious infection episodes (recurrent)",
    "first_opportunistic": "First opportunistic infection",
}
STRATIFIERS = {"overall": "Overall", **strata.labels()}  # labels in table order: codelists/strata.csv
METHODS = {"kaplan_meier": "Kaplan–Meier (1 − S), death censored",
           "aalen_johansen": "Aalen–Johansen, death as competing event"}
WINDOW_ORDER = list(analysis.RISK_WINDOWS)
# SAP v1.1 (A5's model summaries and joint tests, A8-A11): absent from runs made before them
V11_TABLES = ("cox_models", "cox_tests", "incidence_proportion", "rate_ratios", "fine_gray", "standardised_rates")
RESULT_TABLES = ("attrition", *(t for t in analysis.RESULT_TABLES if t not in V11_TABLES))
# the tables a sensitivity analysis (SAP A12) writes its rows to
VARIANT_TABLES = ("incidence", "risk_windows", "cox", "rate_ratios")
# A6 and A7 (vigil.analysis.describe.TABLES); those that a run always fills, and so tell a run made
# before they were kept per run
DESCRIPTIVE_TABLES = ("table1_counts", "table1_summary", "table1_smd", "dq_deliveries", "dq_rows", "dq_quarantine",
                      "opportunistic_terms")
NEVER_EMPTY = ("attrition", "incidence", "risk_windows", "cumulative_incidence", "cumulative_incidence_curves",
               "table1_counts", "table1_summary", "dq_deliveries")


@dataclass
class RunData:
    run: dict
    db_path: Path | None
    attrition: pl.DataFrame
    incidence: pl.DataFrame
    risk_windows: pl.DataFrame
    cumulative_incidence: pl.DataFrame
    curves: pl.DataFrame
    logrank: pl.DataFrame
    cox: pl.DataFrame
    levels: dict[str, list[str]]
    deliveries: pl.DataFrame  # results.dq_deliveries: as of the run (status_at_run = status then)
    delivery_tables: pl.DataFrame  # results.dq_rows
    quarantine: pl.DataFrame  # results.dq_quarantine: delivery_id, table_name, reason, n
    table1_counts: pl.DataFrame  # results.table1_counts: variable, level, edss (None = overall), n
    table1_stats: pl.DataFrame  # results.table1_summary: edss (None = overall), n, age_mean, age_sd, ...
    opportunistic_terms: list[str] = field(default_factory=list)  # results.opportunistic_terms
    comments: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, column) -> COMMENT of results.*
    table1_smd: pl.DataFrame = field(default_factory=pl.DataFrame)  # results.table1_smd: variable, edss, smd
    monitoring: Monitoring | None = None  # SAP 7; None for a run made before monitoring across data cuts
    v11: dict[str, pl.DataFrame] = field(default_factory=dict)  # V11_TABLES (main): empty for an older run
    variants: pl.DataFrame = field(default_factory=pl.DataFrame)  # results.variants of the run (sensitivity)
    sensitivity: dict[str, pl.DataFrame] = field(default_factory=dict)  # VARIANT_TABLES: the variants' rows

    @property
    def left_out_sites(self) -> dict[str, str]:
        """Variant -> the site it leaves out, for the variants that leave one out (results.variants)."""
        sites = {r["variant"]: (json_value(r["parameters"]) or {}).get("leave_out_site")
                 for r in self.variants.iter_rows(named=True)} if self.variants.height else {}
        return {v: str(s) for v, s in sites.items() if s}

    def table(self, name: str) -> pl.DataFrame:
        """A SAP v1.1 table of the run (main analysis); empty when the run did not compute it."""
        return self.v11.get(name, pl.DataFrame())

    def smd(self, variable: str, edss: str) -> float | None:
        """The run's Table 1 SMD of a characteristic for an EDSS category (None: not computable, or none)."""
        if self.table1_smd.is_empty():
            return None
        found = self.table1_smd.filter((pl.col("variable") == variable) & (pl.col("edss") == edss))
        return found["smd"][0] if found.height else None


@dataclass
class Monitoring:
    """The run's look (results.looks) and what SAP 7 shows of it: the sequential test of every look made up to
    it (each as the run that made the look computed it), and the run's own A13 and A15 rows."""
    look: dict
    history: pl.DataFrame  # results.sequential_test, one row per look <= this run's look
    observed_expected: pl.DataFrame  # results.observed_expected of the run
    terms: pl.DataFrame  # results.unexpected_terms of the run

    @property
    def current(self) -> dict:
        return self.history.filter(pl.col("look") == self.look["look"]).row(0, named=True)


def load_monitoring(con: duckdb.DuckDBPyConnection, run_id: int) -> Monitoring | None:
    if not all(_exists(con, "results", t) for t in monitoring.TABLES):
        return None
    look, history = monitoring.look_history(con, run_id)
    if look is None:
        return None
    return Monitoring(look, history,
                      _frame(con, "SELECT * FROM results.observed_expected WHERE run_id = ?", [run_id]),
                      _frame(con, "SELECT * FROM results.unexpected_terms WHERE run_id = ? "
                                  "ORDER BY term_set DESC, first_look DESC, n_events DESC, meddra_pt", [run_id]))


def _one(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None):
    """The first row of a query, or None (fetchall: the result is finished, as DuckDB 2 requires)."""
    rows = con.execute(query, params or []).fetchall()
    return rows[0] if rows else None


def database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    (current,) = _one(con, "SELECT current_database()")
    for _, name, file in con.execute("PRAGMA database_list").fetchall():
        if name == current and file:
            return Path(file)
    return None


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return _one(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [schema, table])[0] > 0


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return _one(con, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'results' "
                "AND table_name = ? AND column_name = ?", [table, column])[0] > 0


def json_value(value):
    """A JSON column of results.* as Python (DuckDB hands JSON over as text); text that is not JSON as is."""
    if value is None or isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def select_run(con: duckdb.DuckDBPyConnection, run_id: int | None) -> dict:
    if not _exists(con, "results", "runs"):
        raise ReportError("the warehouse has no results.runs: run `vigil analyse` first")
    if run_id is None:
        row = _one(con, "SELECT run_id FROM results.runs WHERE status = 'completed' ORDER BY run_id DESC LIMIT 1")
        if row is None:
            raise ReportError("no completed run in results.runs: run `vigil analyse` first")
        run_id = row[0]
    cur = con.execute("SELECT * FROM results.runs WHERE run_id = ?", [run_id])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    row = rows[0] if rows else None
    if row is None:
        raise ReportError(f"run {run_id} is not in results.runs")
    run = dict(zip(names, row))
    if run["status"] != "completed":
        raise ReportError(f"run {run_id} has status {run['status']!r}, not completed")
    for key in ("codelist_versions", "parameters", "deliveries", "step_seconds"):
        run[key] = json_value(run.get(key))
    return run


def _frame(con, query: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(query, params=params).pl()


def _results(con, table: str, run_id: int, order: str = "") -> pl.DataFrame:
    descriptive = table in DESCRIPTIVE_TABLES
    if not _exists(con, "results", table):
        if descriptive:
            raise ReportError(f"run {run_id} was made before Table 1 and data quality were kept with each run "
                              f"(no results.{table}): re-run the analyses (vigil analyse) and report the new run")
        raise ReportError(f"results.{table} is missing: the analyses have not been run into this warehouse")
    # the main analysis only (a warehouse made before variants existed has no column variant: all main)
    variant = f"AND variant = '{MAIN}'" if _has_column(con, table, "variant") else ""
    frame = _frame(con, f'SELECT * EXCLUDE (variant) FROM results."{table}" WHERE run_id = ? {variant} {order}'
                   if variant else f'SELECT * FROM results."{table}" WHERE run_id = ? {order}', [run_id])
    if table == "cumulative_incidence_curves" and "time" in frame.columns:
        frame = frame.rename({"time": "day"})
    if frame.is_empty() and table in NEVER_EMPTY:
        if descriptive:
            raise ReportError(f"run {run_id} has no rows in results.{table}: it was made before Table 1 and data "
                              "quality were kept with each run; re-run the analyses (vigil analyse) and report the new run")
        raise ReportError(f"results.{table} has no rows for run {run_id}")
    return frame


def _variant_rows(con, table: str, run_id: int) -> pl.DataFrame:
    """The sensitivity analyses' rows of a results table (variant other than main), with their variant."""
    if not (_exists(con, "results", table) and _has_column(con, table, "variant")):
        return pl.DataFrame()
    frame = _frame(con, f"SELECT * EXCLUDE (run_id) FROM results.\"{table}\" WHERE run_id = ? AND variant <> ? "
                        "ORDER BY variant", [run_id, MAIN])
    return frame.rename({"time": "day"}) if "time" in frame.columns else frame


def load_run(con: duckdb.DuckDBPyConnection, run_id: int | None) -> RunData:
    """Run `run_id` (default: the latest completed) as the report shows it, from results.* only."""
    run = select_run(con, run_id)
    rid = run["run_id"]
    frames = {t: _results(con, t, rid) for t in RESULT_TABLES}
    incidence = frames["incidence"]
    levels = describe.run_levels(con, rid)

    deliveries = _results(con, "dq_deliveries", rid, "ORDER BY delivery_id").drop("run_id")
    # the status the run saw (the old report derived it from audit; status_at_run is the name the tables use)
    deliveries = deliveries.with_columns(pl.col("status").alias("status_at_run"))
    delivery_tables = _results(con, "dq_rows", rid, "ORDER BY delivery_id, table_name").drop("run_id")
    quarantine = (_results(con, "dq_quarantine", rid, "ORDER BY delivery_id, table_name, reason")
                  .select("delivery_id", "table_name", "reason", pl.col("n_rows").alias("n")))
    counts = (_results(con, "table1_counts", rid, "ORDER BY variable, level, edss NULLS LAST")
              .select("variable", "level", "edss", pl.col("n_patients").alias("n")))
    stats = (_results(con, "table1_summary", rid, "ORDER BY edss NULLS FIRST").drop("run_id")
             .rename({"n_patients": "n"}))
    smd = _results(con, "table1_smd", rid, "ORDER BY variable, edss").drop("run_id")
    terms = _results(con, "opportunistic_terms", rid, "ORDER BY meddra_pt")["meddra_pt"].to_list()
    comments = {(t, c): text for t, c, text in con.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() "
        "WHERE schema_name = 'results' AND comment IS NOT NULL").fetchall()}
    v11 = {t: _results(con, t, rid).drop("run_id") for t in V11_TABLES if _exists(con, "results", t)}
    # the multivariable model with strata(site) has its own table beside the univariable/multivariable one
    stratified = pl.col("model") == analysis.SITE_STRATIFIED
    v11["cox_site_stratified"] = frames["cox"].filter(stratified)
    frames["cox"] = frames["cox"].filter(~stratified)
    variants = (_frame(con, "SELECT * EXCLUDE (run_id) FROM results.variants WHERE run_id = ? AND variant <> ? "
                            "ORDER BY variant", [rid, MAIN]) if _exists(con, "results", "variants") else pl.DataFrame())
    sensitivity = {t: _variant_rows(con, t, rid) for t in VARIANT_TABLES} if variants.height else {}
    return RunData(run, database_path(con), frames["attrition"].sort("step"), incidence, frames["risk_windows"],
                   frames["cumulative_incidence"], frames["cumulative_incidence_curves"], frames["logrank"],
                   frames["cox"], levels, deliveries, delivery_tables, quarantine, counts, stats, terms,
                   comments=comments, table1_smd=smd, monitoring=load_monitoring(con, rid), v11=v11,
                   variants=variants, sensitivity=sensitivity)
