"""SAP A11: each A1 stratum's rate of the primary outcome directly standardised to the age_group x sex
person-time of the whole cohort, with the gamma CI of Fay & Feuer (vigil.stats.rates, as R
epitools::ageadjust.direct), per 1,000 person-years.

The standard is the cohort's person-years per age_group x sex cell; for each stratum the cells where
it has no person-time are left out of its standard (SAP A11). Strata by age_group or sex themselves are
not standardised (no row). The overall row is the cohort standardised to itself: its standardised
rate equals its crude rate.
"""

from __future__ import annotations

import polars as pl

from vigil.analysis import sap
from vigil.stats.rates import direct_standardised_rate

OUTCOME = "first_serious"
TABLE = "standardised_rates"
STANDARD = ("age_group", "sex")
PER = 1000.0


def standardised_rates(con, levels: dict[str, list[str]], outcomes: str = "analysis.outcomes") -> pl.DataFrame:
    stratifiers = [s for s in sap.STRATIFIERS if s not in STANDARD]
    cell = ", ".join(STANDARD)
    sets = ", ".join([f"({cell})"] + [f"({s}, {cell})" for s in stratifiers])
    label = "CASE " + " ".join(f"WHEN GROUPING({s}) = 0 THEN '{s}'" for s in stratifiers) + " ELSE 'overall' END"
    value = "CASE " + " ".join(f"WHEN GROUPING({s}) = 0 THEN CAST({s} AS VARCHAR)" for s in stratifiers) + " ELSE 'all' END"
    counts = con.sql(f"""
        SELECT {label} AS stratifier, {value} AS stratum, {cell},
               count(*) FILTER (WHERE status = 1) AS n_events, sum(t) / 365.25 AS person_years
        FROM {outcomes} WHERE outcome = $outcome
        GROUP BY GROUPING SETS ({sets})""", params={"outcome": OUTCOME}).pl()
    cells = pl.DataFrame({STANDARD[0]: levels[STANDARD[0]]}).join(pl.DataFrame({STANDARD[1]: levels[STANDARD[1]]}),
                                                                  how="cross")
    standard = cells.join(counts.filter(pl.col("stratifier") == "overall").select(*STANDARD, "person_years"),
                          on=list(STANDARD), how="left").fill_null(0.0)["person_years"].to_numpy()
    rows = []
    for stratifier, stratum, order in sap.level_frame(levels).iter_rows():
        if stratifier in STANDARD:
            continue
        mine = cells.join(counts.filter((pl.col("stratifier") == stratifier) & (pl.col("stratum") == stratum))
                          .select(*STANDARD, "n_events", "person_years"), on=list(STANDARD), how="left").fill_null(0)
        k, pt = mine["n_events"].to_numpy(), mine["person_years"].to_numpy().astype(float)
        r = direct_standardised_rate(k, pt, standard)
        rows.append({"outcome": OUTCOME, "stratifier": stratifier, "stratum": stratum, "stratum_order": order,
                     "n_events": int(k.sum()), "person_years": float(pt.sum()), "n_cells": r.n_cells,
                     "crude_rate": PER * r.crude_rate, "standardised_rate": PER * r.adjusted_rate,
                     "ci_lower": PER * r.ci_lower, "ci_upper": PER * r.ci_upper, "note": r.note})
    return pl.DataFrame(rows, schema={
        "outcome": pl.Utf8, "stratifier": pl.Utf8, "stratum": pl.Utf8, "stratum_order": pl.Int32,
        "n_events": pl.Int64, "person_years": pl.Float64, "n_cells": pl.Int32, "crude_rate": pl.Float64,
        "standardised_rate": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64, "note": pl.Utf8})
