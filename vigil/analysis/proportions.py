"""SAP A8: incidence proportion of the primary outcome by days 365, 730 and 1825, overall and by
stratum, with the exact Clopper-Pearson CI (vigil.stats.rates.clopper_pearson, as R binom.test).

Who counts by day D (t = days from index, index day = 1; t of a patient without the event = follow-up):
  case          the first serious infection with t <= D;
  non-case      no event by D and followed to D (t >= D: exit >= index + D - 1), or died before D
                without the event (death is a competing event: that patient can no longer become a case);
  left out      censored alive before D (status 0, t < D): whether they would have been a case is unknown.
So n_denominator = patients - censored before D. DuckDB counts; Python computes the beta quantiles.
"""

from __future__ import annotations

import polars as pl

from vigil.analysis import sap
from vigil.stats.rates import clopper_pearson

DAYS = (365, 730, 1825)
OUTCOME = "first_serious"
TABLE = "incidence_proportion"


def incidence_proportion(con, levels: dict[str, list[str]], outcomes: str = "analysis.outcomes") -> pl.DataFrame:
    """The rows of results.incidence_proportion (without run_id/variant), every SAP level and day present."""
    stratifier, stratum, grouping = sap.grouping_sets("outcome", "day")
    days = ", ".join(f"({d})" for d in DAYS)
    counts = con.sql(f"""
        WITH d(day) AS (VALUES {days}),
        o AS (SELECT o.*, d.day FROM {outcomes} AS o CROSS JOIN d WHERE o.outcome = $outcome)
        SELECT outcome, {stratifier} AS stratifier, {stratum} AS stratum, day,
               count(*) FILTER (WHERE status = 1 AND t <= day) AS n_cases,
               count(*) FILTER (WHERE NOT (status = 0 AND t < day)) AS n_denominator,
               count(*) FILTER (WHERE status = 0 AND t < day) AS n_censored_before
        FROM o
        GROUP BY {grouping}""", params={"outcome": OUTCOME}).pl()
    grid = (pl.DataFrame({"outcome": [OUTCOME]}).join(sap.level_frame(levels), how="cross")
            .join(pl.DataFrame({"day": pl.Series(DAYS, dtype=pl.Int32)}), how="cross"))
    frame = grid.join(counts.with_columns(pl.col("day").cast(pl.Int32)), on=["outcome", "stratifier", "stratum", "day"],
                      how="left").with_columns(pl.col(c).fill_null(0).cast(pl.Int64)
                                               for c in ("n_cases", "n_denominator", "n_censored_before"))
    k, n = frame["n_cases"].to_numpy(), frame["n_denominator"].to_numpy()
    lower, upper = clopper_pearson(k, n)
    return frame.with_columns(
        proportion=pl.when(pl.col("n_denominator") > 0).then(pl.col("n_cases") / pl.col("n_denominator")),
        ci_lower=pl.Series(lower), ci_upper=pl.Series(upper),
        note=pl.when(pl.col("n_denominator") == 0).then(pl.lit("no patient followed to the day: not estimable")),
    ).sort(pl.col("stratifier").replace_strict(sap.stratifier_rank(), default=99), "stratum_order", "day")
