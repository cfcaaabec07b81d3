"""Load the fixed reference datasets (tests/reference/data) into analysis-shaped DuckDB tables.

Each dataset is one first-event outcome (see tests/reference/make_datasets.py). It becomes
  analysis.outcomes       first_serious = the dataset; first_opportunistic = the dataset too
                          (ordinary) or the dataset with every event censored (few_events: an
                          outcome with no events at all);
  analysis.all_serious    t = t_followup, n_events = n_serious;
  analysis.risk_windows   one course per patient, follow-up days 1..t_followup cut at the SAP
                          windows, the episodes put in the window of day ceil(t / 2), with the
                          patient's strata (as sql/analysis/risk_windows.sql; A9's covariates);
  analysis.strata_levels  the SAP levels and the dataset's sites, as sql/analysis/strata_levels.sql.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb
import polars as pl

from vigil.cohort.strata import sap_levels, strata

REFERENCE = Path(__file__).parent / "reference"
STRATA = ["site", "sex", "age_group", "charlson", "prior_dmt", "prior_high_efficacy", "edss"]
SAP_LEVELS = sap_levels()  # codelists/strata.csv: {variable: levels, reference first}, not site


def read_dataset(name: str) -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "data" / f"{name}.csv", infer_schema_length=0).with_columns(
        pl.col("t", "status", "t_followup", "n_serious").cast(pl.Int32))


def read_expected(name: str, table: str) -> pl.DataFrame:
    path = REFERENCE / "expected" / name / f"{table}.csv"
    if not path.exists():
        path = path.with_suffix(".csv.gz")
    frame = pl.read_csv(path, infer_schema_length=0)
    text = {"outcome", "stratifier", "stratum", "model", "variable", "level", "term"}
    return frame.with_columns([pl.col(c).cast(pl.Float64) for c in frame.columns if c not in text])


def load_analysis(con: duckdb.DuckDBPyConnection, name: str) -> pl.DataFrame:
    data = read_dataset(name)
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    serious = data.with_columns(pl.lit("first_serious").alias("outcome"))
    opportunistic = data.with_columns(pl.lit("first_opportunistic").alias("outcome"))
    if name == "few_events":
        opportunistic = opportunistic.with_columns(
            pl.when(pl.col("status") == 1).then(0).otherwise(pl.col("status")).alias("status"))
    outcomes = pl.concat([serious, opportunistic]).with_columns((pl.col("t") / 365.25).alias("person_years"))
    con.register("_outcomes", outcomes.to_arrow())
    con.execute(f"""CREATE OR REPLACE TABLE analysis.outcomes AS
        SELECT patient_id, outcome, t, status, person_years, {', '.join(STRATA)} FROM _outcomes""")
    con.execute(f"""CREATE OR REPLACE TABLE analysis.all_serious AS
        SELECT patient_id, t_followup AS t, t_followup / 365.25 AS person_years, n_serious AS n_events,
               {', '.join(STRATA)}
        FROM _outcomes WHERE outcome = 'first_serious'""")
    con.execute(f"""CREATE OR REPLACE TABLE analysis.risk_windows AS
        WITH w(risk_window, window_order, first_day, last_day) AS (
            VALUES ('0-30', 1, 1, 31), ('31-90', 2, 32, 91), ('91-365', 3, 92, 366), ('>365', 4, 367, 1000000))
        SELECT a.patient_id, 1 AS course_number, w.risk_window, w.window_order,
               least(a.t, w.last_day) - w.first_day + 1 AS days,
               (least(a.t, w.last_day) - w.first_day + 1) / 365.25 AS person_years,
               CASE WHEN ceil(a.t / 2) BETWEEN w.first_day AND w.last_day THEN a.n_events ELSE 0 END AS n_events,
               {', '.join('a.' + s for s in STRATA)}
        FROM analysis.all_serious AS a CROSS JOIN w
        WHERE a.t >= w.first_day""")
    con.unregister("_outcomes")
    sites = sorted(data["site"].unique())
    order = {v: s.variable_order for v, s in strata().items()}
    rows = [(v, order[v], lv, j + 1, j == 0) for v, lvs in SAP_LEVELS.items() for j, lv in enumerate(lvs)]
    rows += [("site", order["site"], s, j + 1, j == 0) for j, s in enumerate(sites)]
    con.execute("CREATE OR REPLACE TABLE analysis.strata_levels (variable VARCHAR, variable_order INTEGER, "
                "level VARCHAR, level_order INTEGER, is_reference BOOLEAN)")
    con.executemany("INSERT INTO analysis.strata_levels VALUES (?, ?, ?, ?, ?)", rows)
    return data


@cache
def analysed(name: str) -> dict[str, pl.DataFrame]:
    """run_analyses on a reference dataset, once per process: every results table of the run."""
    from vigil.analysis.sap import RESULT_TABLES, run_analyses

    con = duckdb.connect()
    load_analysis(con, name)
    con.execute("BEGIN")
    run_analyses(con, 7)
    con.execute("COMMIT")
    out = {t: con.sql(f"SELECT * FROM results.{t} WHERE run_id = 7").pl() for t in RESULT_TABLES}
    con.close()
    return out
