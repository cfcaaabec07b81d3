"""What the report reads from the warehouse: one run's results tables, the audit tables and the
Table 1 aggregates. Everything is aggregated in DuckDB; no patient-level rows reach Python.
Exact values: disclosure control is applied later (vigil.report.protect)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from vigil.analysis import sap as analysis


class ReportError(RuntimeError):
    """The report cannot be made; the message says why."""


OUTCOMES = {
    "first_serious": "First serious infection (primary outcome)",
    "all_serious": "All serious infection episodes (recurrent)",
    "first_opportunistic": "First opportunistic infection",
}
STRATIFIERS = {
    "overall": "Overall",
    "age_group": "Age at index (years)",
    "sex": "Sex",
    "charlson": "Charlson comorbidity index",
    "prior_dmt": "Prior DMTs (distinct)",
    "prior_high_efficacy": "Prior high-efficacy DMT",
    "edss": "Baseline EDSS",
    "site": "Site",
}
METHODS = {"kaplan_meier": "Kaplan–Meier (1 − S), death censored",
           "aalen_johansen": "Aalen–Johansen, death as competing event"}
WINDOW_ORDER = list(analysis.RISK_WINDOWS)
RESULT_TABLES = ("attrition", *analysis.RESULT_TABLES)


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
    deliveries: pl.DataFrame  # audit, as of the run
    delivery_tables: pl.DataFrame
    quarantine: pl.DataFrame  # delivery_id, table_name, reason, n
    table1_counts: pl.DataFrame  # variable, level, edss (None = overall), n
    table1_stats: pl.DataFrame  # edss (None = overall), n, age_mean, age_sd, ...
    opportunistic_terms: list[str] = field(default_factory=list)
    comments: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, column) -> COMMENT of results.*


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


def _json(value):
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
        run[key] = _json(run.get(key))
    return run


def _frame(con, query: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(query, params=params).pl()


def _results(con, table: str, run_id: int) -> pl.DataFrame:
    if not _exists(con, "results", table):
        raise ReportError(f"results.{table} is missing: the analyses have not been run into this warehouse")
    frame = _frame(con, f'SELECT * FROM results."{table}" WHERE run_id = ?', [run_id])
    if table == "cumulative_incidence_curves" and "time" in frame.columns:
        frame = frame.rename({"time": "day"})
    if frame.is_empty() and table not in ("cox", "logrank"):
        raise ReportError(f"results.{table} has no rows for run {run_id}")
    return frame


def _levels(con, incidence: pl.DataFrame) -> dict[str, list[str]]:
    levels = analysis.strata_levels(con)
    # every stratum of the run's results, in SAP order, then any other alphabetically
    seen = incidence.select("stratifier", "stratum").unique()
    for variable in seen["stratifier"].unique().to_list():
        if variable == "overall":
            continue
        run_levels = set(seen.filter(pl.col("stratifier") == variable)["stratum"].to_list())
        known = [lv for lv in levels.get(variable, []) if lv in run_levels]
        levels[variable] = known + sorted(run_levels - set(known))
    return levels


def load_run(con: duckdb.DuckDBPyConnection, run_id: int | None) -> RunData:
    run = select_run(con, run_id)
    rid = run["run_id"]
    frames = {t: _results(con, t, rid) for t in RESULT_TABLES}
    incidence = frames["incidence"]
    levels = _levels(con, incidence)

    # deliveries as of the run: those the run analysed are accepted; the others received before
    # the run finished are refused or superseded
    analysed = {int(d["delivery_id"]) for d in (run.get("deliveries") or [])}
    finished = run.get("finished_at") or run.get("started_at")
    deliveries = _frame(con, """
        SELECT delivery_id, site_id, data_cut, created_at, folder, file_format, status, reason, superseded_by,
               received_at
        FROM audit.deliveries WHERE received_at <= ? ORDER BY delivery_id""", [finished])
    if not deliveries.is_empty():
        deliveries = deliveries.with_columns(
            pl.when(pl.col("delivery_id").is_in(list(analysed))).then(pl.lit("accepted"))
            .when(pl.col("status") == "refused").then(pl.lit("refused"))
            .otherwise(pl.lit("superseded")).alias("status_at_run"))
    delivery_tables = _frame(con, """
        SELECT t.delivery_id, t.table_name, t.source_file, t.rows_received, t.rows_loaded, t.rows_quarantined
        FROM audit.delivery_tables AS t JOIN audit.deliveries AS d USING (delivery_id)
        WHERE d.received_at <= ? ORDER BY t.delivery_id, t.table_name""", [finished])
    quarantine = _frame(con, """
        SELECT q.delivery_id, q.table_name, q.reason, count(*) AS n
        FROM audit.quarantine AS q JOIN audit.deliveries AS d USING (delivery_id)
        WHERE d.received_at <= ? GROUP BY ALL ORDER BY ALL""", [finished])

    counts, stats = table1_aggregates(con)
    terms = []
    if _exists(con, "codelists", "opportunistic_terms"):
        terms = [t for (t,) in con.execute("SELECT meddra_pt FROM codelists.opportunistic_terms ORDER BY meddra_pt").fetchall()]
    comments = {(t, c): text for t, c, text in con.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() "
        "WHERE schema_name = 'results' AND comment IS NOT NULL").fetchall()}
    data = RunData(run, database_path(con), frames["attrition"].sort("step"), incidence, frames["risk_windows"],
                   frames["cumulative_incidence"], frames["cumulative_incidence_curves"], frames["logrank"],
                   frames["cox"], levels, deliveries, delivery_tables, quarantine, counts, stats, terms,
                   comments=comments)
    check_cohort_matches_run(data)
    return data


# Table 1 ----------------------------------------------------------------------------------------

TABLE1_CATEGORICAL = {
    # variable: (label, SQL expression giving the level)
    "age_group": ("Age at index (years)", "age_group"),
    "sex": ("Sex", "sex"),
    "site": ("Site", "site"),
    "charlson": ("Charlson comorbidity index", "charlson"),
    "prior_dmt": ("Prior DMTs (distinct)", "prior_dmt"),
    "prior_high_efficacy": ("Prior high-efficacy DMT", "prior_high_efficacy"),
    "courses": ("Alemtuzumab courses in follow-up", "CASE WHEN n_courses >= 3 THEN '>=3' ELSE CAST(n_courses AS VARCHAR) END"),
    "died": ("Died in follow-up", "CASE WHEN died THEN 'Yes' ELSE 'No' END"),
}
TABLE1_LEVELS = {"courses": ["1", "2", ">=3"], "died": ["No", "Yes"]}


def table1_aggregates(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Counts per variable, level and EDSS category (edss NULL = all patients), and the continuous
    summaries per EDSS category, aggregated in DuckDB from cohort.patients."""
    if not _exists(con, "cohort", "patients"):
        raise ReportError("cohort.patients is missing: Table 1 needs the cohort of the run")
    selects = ",\n".join(f"CAST({expr} AS VARCHAR) AS {name}" for name, (_, expr) in TABLE1_CATEGORICAL.items())
    names = ", ".join(TABLE1_CATEGORICAL)
    counts = _frame(con, f"""
        WITH p AS (SELECT edss, {selects} FROM cohort.patients),
        long AS (UNPIVOT p ON {names} INTO NAME variable VALUE level)
        SELECT variable, level, edss, count(*) AS n
        FROM long GROUP BY GROUPING SETS ((variable, level, edss), (variable, level))
        ORDER BY ALL""")
    stats = _frame(con, """
        SELECT edss, count(*) AS n,
               avg(age_at_index) AS age_mean, stddev_samp(age_at_index) AS age_sd,
               count(edss_score) AS edss_n, avg(edss_score) AS edss_mean, stddev_samp(edss_score) AS edss_sd,
               quantile_cont(edss_score, 0.5) AS edss_median, quantile_cont(edss_score, 0.25) AS edss_q1,
               quantile_cont(edss_score, 0.75) AS edss_q3,
               avg(person_years) AS fu_mean, stddev_samp(person_years) AS fu_sd,
               quantile_cont(person_years, 0.5) AS fu_median, quantile_cont(person_years, 0.25) AS fu_q1,
               quantile_cont(person_years, 0.75) AS fu_q3
        FROM cohort.patients GROUP BY GROUPING SETS ((edss), ()) ORDER BY edss NULLS FIRST""")
    return counts, stats


def check_cohort_matches_run(data: RunData) -> None:
    """Table 1 is aggregated from cohort.patients, which the next run rebuilds: refuse to pair it with
    the results of another run (cohort size and stratum counts must equal the run's)."""
    cohort_n = data.table1_stats.filter(pl.col("edss").is_null())["n"]
    cohort_n = int(cohort_n[0]) if cohort_n.len() else 0
    final = int(data.attrition.sort("step")["n_remaining"][-1])
    mismatch = []
    if cohort_n != final:
        mismatch.append(f"cohort.patients has {cohort_n} patients, the run's attrition ends with {final}")
    else:
        inc = (data.incidence.filter(pl.col("stratifier").is_in(list(TABLE1_CATEGORICAL)))
               .group_by("stratifier", "stratum").agg(pl.col("n_patients").max()))
        t1 = data.table1_counts.filter(pl.col("edss").is_null()).rename(
            {"variable": "stratifier", "level": "stratum", "n": "t1"})
        joined = inc.join(t1, on=["stratifier", "stratum"], how="left").filter(
            pl.col("t1").fill_null(0) != pl.col("n_patients"))
        if joined.height:
            mismatch.append(f"stratum counts differ, e.g. {joined.row(0, named=True)}")
    if mismatch:
        raise ReportError(f"run {data.run['run_id']}: the cohort tables were rebuilt after this run "
                          f"({'; '.join(mismatch)}); Table 1 can only be reported for the run that built them. "
                          "Report the latest run, or re-run the analyses.")
