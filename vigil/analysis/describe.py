"""SAP A6 (Table 1) and A7 (data quality) of a run, written to results.* like every other analysis.

`run_descriptives(con, run_id, analysed)` runs in the run's transaction after the cohort and A1-A5
(vigil.analysis.runs.analyse) and appends run `run_id` to

  results.table1_counts        A6  patients per characteristic x level x EDSS column (NULL = Overall)
  results.table1_summary       A6  column size, age, EDSS score and follow-up per EDSS column
  results.table1_smd           A6  SMD of each EDSS category against the reference, per characteristic
  results.dq_deliveries        A7  deliveries received before the run, status and reason at the run
  results.dq_rows              A7  rows received / loaded / quarantined per delivery and table
  results.dq_quarantine        A7  quarantined rows per delivery, table and reason
  results.opportunistic_terms  SAP 2  the opportunistic-infection terms the run used

so that the report of any recorded run reads results.* only (cohort.*, analysis.* and codelists.*
are rebuilt by every run; audit.* shows deliveries as of today). Counts are exact and aggregated in
DuckDB; disclosure control is the report's. Methods: docs/analysis-methods.md, "Table 1 and data
quality (A6, A7)".
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl

from vigil.analysis.variants import MAIN
from vigil.analysis import results
from vigil.analysis import sap
from vigil.cohort import strata

TABLES = ("table1_counts", "table1_summary", "table1_smd", "dq_deliveries", "dq_rows", "dq_quarantine",
          "opportunistic_terms")
# Table 1's categorical rows: variable -> (label, SQL expression over cohort.patients giving the level)
TABLE1_CATEGORICAL = {
    **{v: (strata.labels()[v], v)  # the stratum variables (labels: codelists/strata.csv), edss is the columns
       for v in ("age_group", "sex", "site", "charlson", "prior_dmt", "prior_high_efficacy")},
    "courses": ("Alemtuzumab courses in follow-up", "CASE WHEN n_courses >= 3 THEN '>=3' ELSE CAST(n_courses AS VARCHAR) END"),
    "died": ("Died in follow-up", "CASE WHEN died THEN 'Yes' ELSE 'No' END"),
}
TABLE1_LEVELS = {"courses": ["1", "2", ">=3"], "died": ["No", "Yes"]}

# the continuous rows of Table 1: results.table1_smd.variable -> prefix of the results.table1_summary columns
CONTINUOUS = {"age_at_index": "age", "edss_score": "edss", "follow_up_years": "fu"}


def run_descriptives(con: duckdb.DuckDBPyConnection, run_id: int, analysed: list[int]) -> dict:
    """A6 and A7 of run `run_id` (after run_analyses wrote its results.incidence). analysed: the
    delivery_ids the run analysed. Refuses a run_id any of the tables holds. Returns rows per table."""
    results.prepare(con, run_id, TABLES)
    levels = run_levels(con, run_id)
    counts, summary, smd = table1(con, levels)
    frames = {"table1_counts": counts, "table1_summary": summary, "table1_smd": smd,
              **data_quality(con, analysed),
              "opportunistic_terms": con.sql(
                  "SELECT DISTINCT meddra_pt FROM codelists.opportunistic_terms ORDER BY meddra_pt").pl()}
    return {table: results.insert_frame(con, table, frame, run_id) for table, frame in frames.items()}


def run_levels(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, list[str]]:
    """Stratum variable -> its levels in the run's SAP order (results.incidence.stratum_order, then
    any other level alphabetically): the order of the report's tables. Keys: sap.STRATIFIERS first."""
    levels: dict[str, list[str]] = {v: [] for v in sap.STRATIFIERS}
    rows = con.execute("""
        SELECT stratifier, stratum FROM results.incidence
        WHERE run_id = ? AND variant = ? AND stratifier <> 'overall'
        GROUP BY stratifier, stratum ORDER BY stratifier, min(stratum_order), stratum""", [run_id, MAIN]).fetchall()
    for variable, level in rows:
        levels.setdefault(variable, []).append(level)
    return levels


def table1_levels(variable: str, levels: dict[str, list[str]], seen: list[str]) -> list[str]:
    """Rows of a Table 1 characteristic: the stratum levels of the run, else TABLE1_LEVELS then any other
    level seen, alphabetically (the report's rows too: vigil.report.protect.table1_levels)."""
    if variable in levels:
        return levels[variable]
    known = TABLE1_LEVELS.get(variable, [])
    return known + sorted(set(seen) - set(known))


def table1(con: duckdb.DuckDBPyConnection, levels: dict[str, list[str]]) -> tuple[pl.DataFrame, ...]:
    """results.table1_counts, table1_summary and table1_smd frames (without run_id) from cohort.patients."""
    selects = ",\n".join(f"CAST({expr} AS VARCHAR) AS {name}" for name, (_, expr) in TABLE1_CATEGORICAL.items())
    names = ", ".join(TABLE1_CATEGORICAL)
    counts = con.sql(f"""
        WITH p AS (SELECT edss, {selects} FROM cohort.patients),
        long AS (UNPIVOT p ON {names} INTO NAME variable VALUE level)
        SELECT variable, level, edss, count(*) AS n_patients
        FROM long GROUP BY GROUPING SETS ((variable, level, edss), (variable, level))
        ORDER BY ALL""").pl()
    summary = con.sql("""
        SELECT edss, count(*) AS n_patients,
               avg(age_at_index) AS age_mean, stddev_samp(age_at_index) AS age_sd,
               count(edss_score) AS edss_n, avg(edss_score) AS edss_mean, stddev_samp(edss_score) AS edss_sd,
               quantile_cont(edss_score, 0.5) AS edss_median, quantile_cont(edss_score, 0.25) AS edss_q1,
               quantile_cont(edss_score, 0.75) AS edss_q3,
               avg(person_years) AS fu_mean, stddev_samp(person_years) AS fu_sd,
               quantile_cont(person_years, 0.5) AS fu_median, quantile_cont(person_years, 0.25) AS fu_q1,
               quantile_cont(person_years, 0.75) AS fu_q3
        FROM cohort.patients GROUP BY GROUPING SETS ((edss), ()) ORDER BY edss NULLS FIRST""").pl()

    rows_of = {v: table1_levels(v, levels, counts.filter(pl.col("variable") == v)["level"].unique().to_list())
               for v in TABLE1_CATEGORICAL}
    order = {(v, lv): i + 1 for v, lvs in rows_of.items() for i, lv in enumerate(lvs)}
    counts = counts.with_columns(pl.Series("level_order", [order.get(k, len(order) + 1) for k in
                                                            counts.select("variable", "level").rows()],
                                           dtype=pl.Int32))
    edss_levels = levels.get("edss", [])
    smd = smd_rows(counts, summary, edss_levels, rows_of)
    return counts, summary, smd


def smd_rows(counts: pl.DataFrame, summary: pl.DataFrame, edss_levels: list[str],
             rows_of: dict[str, list[str]]) -> pl.DataFrame:
    """One row per characteristic and compared EDSS category: the SMD against the first EDSS level."""
    schema = {"variable": pl.Utf8, "edss": pl.Utf8, "reference_edss": pl.Utf8, "smd": pl.Float64, "note": pl.Utf8}
    if len(edss_levels) < 2:
        return pl.DataFrame(schema=schema)
    reference, compared = edss_levels[0], edss_levels[1:]
    stats = {row["edss"]: row for row in summary.iter_rows(named=True)}
    n = {(v, lv, e): k for v, lv, e, k in counts.select("variable", "level", "edss", "n_patients").iter_rows()}
    out = []
    for variable, prefix in CONTINUOUS.items():
        for e in compared:
            s1, s0 = stats.get(e), stats.get(reference)
            if prefix == "edss":
                value, note = None, "the columns are defined by the EDSS score"
            elif s1 is None or s0 is None:
                value, note = None, "no patients in the column or the reference column"
            else:
                value = smd_continuous(s1[f"{prefix}_mean"], s1[f"{prefix}_sd"], s0[f"{prefix}_mean"],
                                       s0[f"{prefix}_sd"])
                note = None if value is not None else "no standard deviation (fewer than 2 patients) or 0 with different means"
            out.append((variable, e, reference, value, note))
    for variable, lvs in rows_of.items():
        for e in compared:
            value = smd_categorical([n.get((variable, lv, e), 0) for lv in lvs],
                                    [n.get((variable, lv, reference), 0) for lv in lvs])
            out.append((variable, e, reference, value,
                        None if value is not None else "no patients in the column or the reference column"))
    return pl.DataFrame(out, schema=schema, orient="row")


def smd_continuous(m1, s1, m0, s0) -> float | None:
    """|m1 - m0| / sqrt((s1^2 + s0^2) / 2); None when a mean or SD is missing, 0 when both SDs are 0 and the
    means are equal (None when they differ)."""
    if None in (m1, s1, m0, s0) or any(isinstance(x, float) and math.isnan(x) for x in (m1, s1, m0, s0)):
        return None
    pooled = math.sqrt((s1 ** 2 + s0 ** 2) / 2)
    if pooled == 0:
        return 0.0 if m1 == m0 else None
    return abs(m1 - m0) / pooled


def smd_categorical(n1: list[float], n0: list[float]) -> float | None:
    """Yang & Dalton (2012): sqrt((p1 - p0)' S^-1 (p1 - p0)) over the levels but the first, with
    S = (S1 + S0) / 2 and S_g = diag(p_g) - p_g p_g' the multinomial covariance. For two levels this
    is |p1 - p0| / sqrt((p1 (1 - p1) + p0 (1 - p0)) / 2). Levels absent from both groups are dropped."""
    a, b = np.asarray(n1, float), np.asarray(n0, float)
    if a.sum() == 0 or b.sum() == 0:
        return None
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return 0.0
    p1, p0 = (a / a.sum())[1:], (b / b.sum())[1:]
    s = (np.diag(p1) - np.outer(p1, p1) + np.diag(p0) - np.outer(p0, p0)) / 2
    delta = p1 - p0
    if not delta.any():
        return 0.0
    value = float(delta @ np.linalg.pinv(s) @ delta)
    return math.sqrt(max(value, 0.0))


def data_quality(con: duckdb.DuckDBPyConnection, analysed: list[int]) -> dict[str, pl.DataFrame]:
    """A7 as of now (the run): every delivery received so far with its status at the run (accepted =
    analysed by the run, else refused or superseded), rows per delivery and table, quarantine reasons."""
    deliveries = con.sql("""
        SELECT delivery_id, site_id, data_cut, created_at, folder, file_format, status, reason, superseded_by,
               received_at
        FROM audit.deliveries ORDER BY delivery_id""").pl()
    if not deliveries.is_empty():
        deliveries = deliveries.with_columns(
            pl.when(pl.col("delivery_id").is_in(list(analysed))).then(pl.lit("accepted"))
            .when(pl.col("status") == "refused").then(pl.lit("refused"))
            .otherwise(pl.lit("superseded")).alias("status"))
    rows = con.sql("""
        SELECT t.delivery_id, t.table_name, t.source_file, t.rows_received, t.rows_loaded, t.rows_quarantined
        FROM audit.delivery_tables AS t JOIN audit.deliveries AS d USING (delivery_id)
        ORDER BY t.delivery_id, t.table_name""").pl()
    quarantine = con.sql("""
        SELECT q.delivery_id, q.table_name, q.reason, count(*) AS n_rows
        FROM audit.quarantine AS q JOIN audit.deliveries AS d USING (delivery_id)
        GROUP BY ALL ORDER BY ALL""").pl()
    return {"dq_deliveries": deliveries, "dq_rows": rows, "dq_quarantine": quarantine}
