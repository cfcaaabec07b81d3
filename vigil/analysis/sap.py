"""SAP section 4 on the analysis datasets, written to the results tables of a run.

`run_analyses(con, run_id)` reads analysis.outcomes, analysis.all_serious, analysis.risk_windows
and analysis.strata_levels (built by vigil.cohort.build_cohort) and appends run `run_id` to

  results.incidence                    A1  rates with exact Poisson CIs, every outcome x stratum
  results.risk_windows                 A2  rates by days since the most recent course start
  results.cumulative_incidence         A3, A4  KM 1 - S and Aalen-Johansen at the SAP days
  results.cumulative_incidence_curves  A3, A4  the whole step curves, for plotting
  results.logrank                      A3  log-rank per stratum variable
  results.cox                          A5  univariable and multivariable Cox (also with strata(site)), PH tests
  results.cox_models, results.cox_tests A5  per model: log-likelihood, AIC, concordance; per variable of the
                                           multivariable models: joint Wald and likelihood-ratio tests
  results.incidence_proportion         A8  (vigil.analysis.proportions)
  results.rate_ratios                  A9  (vigil.analysis.rate_ratios)
  results.fine_gray                    A10 (vigil.analysis.fine_gray)
  results.standardised_rates           A11 (vigil.analysis.standardised)

`run_variant` computes a sensitivity analysis's subset of them (SAP A12, vigil.analysis.variants).

DuckDB does the counting (GROUP BY / GROUPING SETS over patients); Python loops only over
strata, days and models, and vigil.stats computes the estimators from the counts. An estimate
that cannot be computed is stored as SQL NULL with a note, never as NaN. Runs inside the
caller's transaction: no BEGIN/COMMIT here. Methods: docs/analysis-methods.md.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import polars as pl

from vigil.analysis import results
from vigil.analysis.cox import cox_model
from vigil.cohort import strata
from vigil.stats import survival as sv

COX_TABLES = ["cox", "cox_models", "cox_tests"]
RESULT_TABLES = ("incidence", "risk_windows", "cumulative_incidence", "cumulative_incidence_curves",
                 "logrank", *COX_TABLES, "incidence_proportion", "rate_ratios", "fine_gray", "standardised_rates")

FIRST_EVENT_OUTCOMES = ("first_serious", "first_opportunistic")
INCIDENCE_OUTCOMES = ("first_serious", "all_serious", "first_opportunistic")
STRATIFIERS = strata.stratifiers()  # codelists/strata.csv, in SAP section 3 order
MULTIVARIABLE = strata.multivariable()  # its variables with multivariable = Y, in variable_order
DAYS = (30, 180, 365, 730, 1095, 1825)
RISK_WINDOWS = ("0-30", "31-90", "91-365", ">365")
METHODS = ("kaplan_meier", "aalen_johansen")
MISSING = "(missing)"   # a NULL stratum value, which the cohort SQL never produces


def run_analyses(con: duckdb.DuckDBPyConnection, run_id: int) -> dict:
    """Compute SAP A1-A5 and A8-A11 for every outcome and stratifier and append them to the results
    tables as run `run_id` (variant main). Refuses a run_id that any of these tables already holds.
    Returns the rows written per table and the seconds per step."""
    from vigil.analysis import fine_gray, proportions, rate_ratios, standardised

    results.prepare(con, run_id, RESULT_TABLES)
    levels = strata_levels(con)
    steps = _Steps()
    frames: dict[str, pl.DataFrame] = {}
    frames["incidence"] = steps.run("incidence", _incidence, con, levels)
    frames["risk_windows"] = steps.run("risk_windows", _risk_windows, con)
    daily = steps.run("daily_counts", _daily_counts, con)
    frames["cumulative_incidence"], frames["cumulative_incidence_curves"] = steps.run(
        "cumulative_incidence", _cumulative_incidence, daily, levels)
    frames["logrank"] = steps.run("logrank", _logrank, daily)
    frames.update(steps.run("cox", _cox, con, daily, levels))
    frames["incidence_proportion"] = steps.run("incidence_proportion", proportions.incidence_proportion, con, levels)
    frames["rate_ratios"] = steps.run("rate_ratios", rate_ratios.rate_ratios, con, levels)
    frames["fine_gray"] = steps.run("fine_gray", fine_gray.fine_gray_models, con, levels)
    frames["standardised_rates"] = steps.run("standardised_rates", standardised.standardised_rates, con, levels)
    rows = steps.run("insert", _insert, con, run_id, results.MAIN, frames)
    return {"run_id": run_id, "rows": rows, "seconds": steps.seconds}


def run_variant(con: duckdb.DuckDBPyConnection, run_id: int, variant, levels: dict[str, list[str]]) -> dict:
    """Compute a sensitivity analysis (a vigil.analysis.variants.Variant) and append its analyses to the
    results tables as run `run_id`, variant `variant.name`:
      A1  the overall rate of the primary outcome (results.incidence);
      A2  the risk windows (results.risk_windows);
      A5  the multivariable Cox model of the primary outcome (results.cox, cox_models);
      A9  the rate ratios by risk window (results.rate_ratios).
    It reads the analysis datasets of the main analysis (built before it, left as they are): without one
    site's patients for a variant that leaves it out, or built again apart, as temporary tables, with the
    variant's cohort parameters (vigil.cohort.build_variant_datasets). `levels`: the main analysis's."""
    from vigil.analysis import rate_ratios
    from vigil.cohort import ANALYSIS_DATASETS, build_variant_datasets
    from vigil.warehouse.sqlfiles import drop_apart, temporary_name

    tables = {"A1": ["incidence"], "A2": ["risk_windows"], "A5": ["cox", "cox_models"], "A9": ["rate_ratios"]}
    results.prepare(con, run_id, [t for a in variant.analyses for t in tables[a]], variant.name)
    if variant.leave_out_site is not None and variant.leave_out_site not in levels.get("site", []):
        raise ValueError(f"variant {variant.name}: site {variant.leave_out_site!r} has no patient in the cohort "
                         "(leaving it out would repeat the main analysis)")
    steps = _Steps()
    if variant.rebuilds_cohort:
        datasets = steps.run("datasets", build_variant_datasets, con, variant.cohort)
    else:
        datasets = {name: name for name in ANALYSIS_DATASETS}
    if variant.leave_out_site is not None:
        for name in ANALYSIS_DATASETS:
            datasets[name] = f"temp.main.{temporary_name(name)}"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {temporary_name(name)} AS SELECT * FROM {name} "
                        "WHERE site <> $site", {"site": variant.leave_out_site})
    outcomes, windows = datasets["analysis.outcomes"], datasets["analysis.risk_windows"]
    frames: dict[str, pl.DataFrame] = {}
    try:
        if "A1" in variant.analyses:
            frames["incidence"] = steps.run("incidence", _overall_rate, con, outcomes)
        if "A2" in variant.analyses:
            frames["risk_windows"] = steps.run("risk_windows", _risk_windows, con, windows)
        if "A5" in variant.analyses:
            frames.update(steps.run("cox", _cox_multivariable, con, FIRST_EVENT_OUTCOMES[0], levels, outcomes))
        if "A9" in variant.analyses:
            frames["rate_ratios"] = steps.run("rate_ratios", rate_ratios.rate_ratios, con, levels, windows)
    finally:
        drop_apart(con, datasets.values())
    rows = steps.run("insert", _insert, con, run_id, variant.name, frames)
    return {"variant": variant.name, "rows": rows, "seconds": steps.seconds}


class _Steps:
    """Seconds per named step, for results.runs.step_seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name, fn, *args):
        started = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = round(time.perf_counter() - started, 3)
        return out


def _insert(con, run_id: int, variant: str, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    return {table: results.insert_frame(con, table, frame, run_id, variant) for table, frame in frames.items()}


# ------------------------------------------------------------------------------------ helpers

def strata_levels(con) -> dict[str, list[str]]:
    """Stratum variable -> its levels in SAP order (reference first), from analysis.strata_levels."""
    levels: dict[str, list[str]] = {v: [] for v in STRATIFIERS}
    for variable, level in con.execute(
            "SELECT variable, level FROM analysis.strata_levels ORDER BY variable_order, level_order").fetchall():
        levels.setdefault(variable, []).append(level)
    return levels


def stratifier_rank() -> dict[str, int]:
    """overall first, then the stratum variables in SAP order: a sort key of the stratifier column."""
    return {s: i for i, s in enumerate(("overall",) + STRATIFIERS)}


def level_frame(levels: dict[str, list[str]]) -> pl.DataFrame:
    rows = [("overall", "all", 1)] + [(v, lv, i + 1) for v in STRATIFIERS for i, lv in enumerate(levels[v])]
    return pl.DataFrame(rows, schema={"stratifier": pl.Utf8, "stratum": pl.Utf8, "stratum_order": pl.Int32},
                        orient="row")


def grouping_sets(prefix: str, suffix: str = "") -> tuple[str, str, str]:
    """SELECT items naming stratifier and stratum, and the GROUPING SETS clause, for overall + each stratifier."""
    stratifier = "CASE " + " ".join(f"WHEN GROUPING({v}) = 0 THEN '{v}'" for v in STRATIFIERS) + " ELSE 'overall' END"
    stratum = ("CASE " + " ".join(f"WHEN GROUPING({v}) = 0 THEN coalesce(CAST({v} AS VARCHAR), '{MISSING}')"
                                  for v in STRATIFIERS) + " ELSE 'all' END")
    keys = [k for k in (prefix, suffix) if k]
    sets = ", ".join(["(" + ", ".join(keys) + ")"] + ["(" + ", ".join([prefix, v] + ([suffix] if suffix else [])) + ")"
                                                       for v in STRATIFIERS])
    return stratifier, stratum, f"GROUPING SETS ({sets})"


def _frame(con, query: str, params: dict | None = None) -> pl.DataFrame:
    return con.sql(query, params=params).pl()


def _rates(frame: pl.DataFrame, events: str = "n_events", person_years: str = "person_years") -> pl.DataFrame:
    k = frame[events].to_numpy().astype(float)
    py = frame[person_years].to_numpy().astype(float)
    lower, upper = sv.poisson_ci(k, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(py > 0, 1000 * k / py, np.nan)
    return frame.with_columns(rate_per_1000py=pl.Series(rate), ci_lower=pl.Series(1000 * lower),
                              ci_upper=pl.Series(1000 * upper),
                              note=pl.when(pl.col(person_years) > 0).then(None)
                              .otherwise(pl.lit("no person-time: rate not estimable")))


# ------------------------------------------------------------------------------------ A1, A2

def _incidence(con, levels) -> pl.DataFrame:
    strata = ", ".join(STRATIFIERS)
    stratifier, stratum, grouping = grouping_sets("outcome")
    counts = _frame(con, f"""
        WITH o AS (
            SELECT outcome, CAST(status = 1 AS BIGINT) AS events, t, {strata} FROM analysis.outcomes
            UNION ALL
            SELECT 'all_serious' AS outcome, CAST(n_events AS BIGINT) AS events, t, {strata} FROM analysis.all_serious
        )
        SELECT outcome, {stratifier} AS stratifier, {stratum} AS stratum,
               count(*) AS n_patients, sum(events) AS n_events, sum(t) AS days
        FROM o
        GROUP BY {grouping}""")
    grid = pl.DataFrame({"outcome": list(INCIDENCE_OUTCOMES)}).join(level_frame(levels), how="cross")
    frame = grid.join(counts, on=["outcome", "stratifier", "stratum"], how="full", coalesce=True)
    frame = frame.with_columns(
        pl.col("stratum_order").fill_null(99),
        pl.col("n_patients").fill_null(0).cast(pl.Int64),
        pl.col("n_events").fill_null(0).cast(pl.Int64),
        (pl.col("days").fill_null(0).cast(pl.Float64) / 365.25).alias("person_years"))
    frame = _rates(frame)
    frame = frame.with_columns(
        pl.when(pl.col("n_patients") == 0).then(pl.lit("no patients in the stratum: rate not estimable"))
        .when(pl.col("stratum_order") == 99).then(pl.lit("level not in analysis.strata_levels"))
        .otherwise(pl.col("note")).alias("note"))
    order = {o: i for i, o in enumerate(INCIDENCE_OUTCOMES)}
    return (frame.with_columns(pl.col("outcome").replace_strict(order, default=99).alias("_o"),
                               pl.col("stratifier").replace_strict(stratifier_rank(), default=99).alias("_s"))
            .sort("_o", "_s", "stratum_order", "stratum").drop("_o", "_s", "days"))


def _risk_windows(con, windows: str = "analysis.risk_windows") -> pl.DataFrame:
    counts = _frame(con, f"""
        SELECT risk_window AS "window", min(window_order) AS window_order,
               count(DISTINCT patient_id) AS n_patients, sum(n_events) AS n_events, sum(days) AS days
        FROM {windows}
        GROUP BY risk_window""")
    grid = pl.DataFrame({"window": list(RISK_WINDOWS),
                         "_order": pl.Series(range(1, len(RISK_WINDOWS) + 1), dtype=pl.Int32)})
    frame = grid.join(counts, on="window", how="left").with_columns(
        pl.coalesce("window_order", "_order").cast(pl.Int32).alias("window_order"),
        pl.col("n_patients").fill_null(0).cast(pl.Int64),
        pl.col("n_events").fill_null(0).cast(pl.Int64),
        (pl.col("days").fill_null(0).cast(pl.Float64) / 365.25).alias("person_years"))
    return _rates(frame).drop("_order", "days").sort("window_order")


def _overall_rate(con, outcomes: str) -> pl.DataFrame:
    """A1's overall row of the primary outcome (a sensitivity analysis reports only that)."""
    frame = _frame(con, f"""
        SELECT outcome, 'overall' AS stratifier, 'all' AS stratum, CAST(1 AS INTEGER) AS stratum_order,
               count(*) AS n_patients, count(*) FILTER (WHERE status = 1) AS n_events, sum(t) / 365.25 AS person_years
        FROM {outcomes} WHERE outcome = $outcome GROUP BY outcome""", {"outcome": FIRST_EVENT_OUTCOMES[0]})
    return _rates(frame)


# ------------------------------------------------------------------------------------ A3, A4

def _daily_counts(con) -> pl.DataFrame:
    """Per outcome, stratifier, stratum and distinct t: events, deaths without the event, censored."""
    stratifier, stratum, grouping = grouping_sets("outcome", "t")
    return _frame(con, f"""
        SELECT outcome, {stratifier} AS stratifier, {stratum} AS stratum, t,
               count(*) FILTER (WHERE status = 1) AS n_events,
               count(*) FILTER (WHERE status = 2) AS n_competing,
               count(*) FILTER (WHERE status NOT IN (1, 2)) AS n_censored
        FROM analysis.outcomes
        GROUP BY {grouping}
        ORDER BY outcome, stratifier, stratum, t""")


def _cumulative_incidence(daily: pl.DataFrame, levels) -> tuple[pl.DataFrame, pl.DataFrame]:
    all_levels = level_frame(levels)
    groups = {key: g for key, g in daily.partition_by(["outcome", "stratifier", "stratum"], as_dict=True).items()}
    day_parts, curve_parts = [], []
    days = np.asarray(DAYS)
    for outcome in FIRST_EVENT_OUTCOMES:
        for stratifier, stratum, order in all_levels.iter_rows():
            g = groups.get((outcome, stratifier, stratum))
            for method in METHODS:
                if g is None:
                    at = sv.at_days(sv.kaplan_meier([], [], []), days)
                    n_patients = 0
                else:
                    t = g["t"].to_numpy()
                    d1, d2, c = (g[col].to_numpy().astype(float) for col in ("n_events", "n_competing", "n_censored"))
                    curve = (sv.kaplan_meier(t, d1, d2 + c) if method == "kaplan_meier"
                             else sv.aalen_johansen(t, d1, d2, c))
                    at = sv.at_days(curve, days)
                    n_patients = curve.n_patients
                    curve_parts.append(pl.DataFrame({
                        "method": method, "outcome": outcome, "stratifier": stratifier, "stratum": stratum,
                        "time": np.concatenate(([0], t)).astype(np.int32),
                        "estimate": np.concatenate(([0.0], curve.estimate)),
                        "ci_lower": np.concatenate(([np.nan], curve.ci_lower)),
                        "ci_upper": np.concatenate(([np.nan], curve.ci_upper)),
                        "std_err": np.concatenate(([0.0], curve.std_err)),
                        "n_at_risk": np.concatenate(([curve.n_at_risk[0]], curve.n_at_risk)).astype(np.int64),
                        "n_events": np.concatenate(([0], curve.n_events)).astype(np.int64),
                        "n_competing": np.concatenate(([0], curve.n_competing)).astype(np.int64),
                        "n_censored": np.concatenate(([0], curve.n_censored)).astype(np.int64),
                    }))
                day_parts.append(pl.DataFrame({
                    "method": method, "outcome": outcome, "stratifier": stratifier, "stratum": stratum,
                    "stratum_order": pl.Series([order] * len(days), dtype=pl.Int32),
                    "day": days.astype(np.int32), "estimate": at.estimate, "ci_lower": at.ci_lower,
                    "ci_upper": at.ci_upper, "std_err": at.std_err, "n_at_risk": at.n_at_risk.astype(np.int64),
                    "n_patients": np.full(len(days), n_patients, dtype=np.int64),
                    "cumulative_events": at.cumulative_events.astype(np.int64),
                    "note": pl.Series(at.note, dtype=pl.Utf8)}))
    return pl.concat(day_parts), pl.concat(curve_parts) if curve_parts else pl.DataFrame()


def _logrank(daily: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for outcome in FIRST_EVENT_OUTCOMES:
        for stratifier in STRATIFIERS:
            g = daily.filter((pl.col("outcome") == outcome) & (pl.col("stratifier") == stratifier))
            d = g["n_events"].to_numpy().astype(float)
            c = (g["n_competing"] + g["n_censored"]).to_numpy().astype(float)
            result = sv.logrank(g["stratum"].to_numpy(), g["t"].to_numpy(), d, c)
            rows.append({"outcome": outcome, "stratifier": stratifier, "chisq": result.chisq,
                         "df": result.df if result.note is None else None, "p_value": result.p_value,
                         "n_levels": g["stratum"].n_unique(), "n_patients": int(d.sum() + c.sum()),
                         "n_events": int(d.sum()), "note": result.note})
    return pl.DataFrame(rows, schema={"outcome": pl.Utf8, "stratifier": pl.Utf8, "chisq": pl.Float64,
                                      "df": pl.Int32, "p_value": pl.Float64, "n_levels": pl.Int32,
                                      "n_patients": pl.Int64, "n_events": pl.Int64, "note": pl.Utf8})


# ------------------------------------------------------------------------------------ A5

SITE_STRATIFIED = "multivariable_site_stratified"  # the A5 multivariable model with strata(site)
COX_SCHEMA = {
    "outcome": pl.Utf8, "model": pl.Utf8, "covariates": pl.Utf8, "variable": pl.Utf8, "level": pl.Utf8,
    "reference_level": pl.Utf8, "level_order": pl.Int32, "coef": pl.Float64, "se": pl.Float64,
    "hr": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64, "p_value": pl.Float64,
    "ph_chisq": pl.Float64, "ph_df": pl.Int32, "ph_p_value": pl.Float64, "n_patients": pl.Int64,
    "n_events": pl.Int64, "level_patients": pl.Int64, "level_events": pl.Int64, "reference_patients": pl.Int64,
    "reference_events": pl.Int64, "note": pl.Utf8}
COX_MODELS_SCHEMA = {
    "outcome": pl.Utf8, "model": pl.Utf8, "covariates": pl.Utf8, "loglik": pl.Float64, "loglik_null": pl.Float64,
    "aic": pl.Float64, "concordance": pl.Float64, "concordance_se": pl.Float64, "n_patients": pl.Int64,
    "n_events": pl.Int64, "note": pl.Utf8}
COX_TESTS_SCHEMA = {
    "outcome": pl.Utf8, "model": pl.Utf8, "covariates": pl.Utf8, "variable": pl.Utf8, "wald_chisq": pl.Float64,
    "wald_df": pl.Int32, "wald_p": pl.Float64, "lr_chisq": pl.Float64, "lr_df": pl.Int32, "lr_p": pl.Float64,
    "note": pl.Utf8}


class _CoxFrames:
    """results.cox, cox_models and cox_tests rows of the models fitted so far."""

    def __init__(self) -> None:
        self.cox: list[dict] = []
        self.models: list[dict] = []
        self.tests: list[dict] = []

    def add(self, outcome: str, model: str, variables: list[str], counts: pl.DataFrame, levels,
            stratum: str | None = None, joint_tests: bool = False) -> None:
        fitted = cox_model(counts, variables, levels, stratum)
        key = {"outcome": outcome, "model": model, "covariates": ", ".join(variables)}
        for row in fitted.rows:
            is_global = row.variable == "GLOBAL"
            self.cox.append({
                **key, "variable": row.variable,
                "level": row.level, "reference_level": None if is_global else levels[row.variable][0],
                "level_order": None if is_global else levels[row.variable].index(row.level) + 1,
                "coef": row.coef, "se": row.se, "hr": row.hr, "ci_lower": row.ci_lower, "ci_upper": row.ci_upper,
                "p_value": row.p_value, "ph_chisq": row.ph_chisq, "ph_df": row.ph_df, "ph_p_value": row.ph_p_value,
                "n_patients": row.n_patients, "n_events": row.n_events, "level_patients": row.level_patients,
                "level_events": row.level_events, "reference_patients": row.reference_patients,
                "reference_events": row.reference_events, "note": row.note})
        self.models.append({**key, "loglik": fitted.loglik, "loglik_null": fitted.loglik_null, "aic": fitted.aic,
                            "concordance": fitted.concordance, "concordance_se": fitted.concordance_se,
                            "n_patients": fitted.n_patients, "n_events": fitted.n_events, "note": fitted.note})
        if joint_tests:
            for variable in variables:
                test = fitted.tests.get(variable)
                self.tests.append({**key, "variable": variable, **({
                    "wald_chisq": test.wald_chisq, "wald_df": test.wald_df, "wald_p": test.wald_p,
                    "lr_chisq": test.lr_chisq, "lr_df": test.lr_df, "lr_p": test.lr_p, "note": test.note}
                    if test else {"note": "not in the model (fewer than two levels with events)"
                                  if fitted.tests or fitted.note is None else fitted.note})})

    def multivariable(self, con, outcome: str, levels, outcomes: str = "analysis.outcomes",
                      extras: bool = True) -> None:
        """The A5 multivariable model; with extras, the joint tests of its variables (cox_tests) and the same
        model with a baseline hazard per site (strata(site), without joint tests: not asked for, a refit each).
        A sensitivity analysis needs neither (SAP A12: A5's multivariable hazard ratios)."""
        for model, stratum in (("multivariable", None), (SITE_STRATIFIED, "site"))[:2 if extras else 1]:
            counts = _frame(con, f"""
                SELECT t, {", ".join(MULTIVARIABLE)}{", site" if stratum else ""},
                       count(*) FILTER (WHERE status = 1) AS n_events, count(*) AS n_leaving
                FROM {outcomes} WHERE outcome = $outcome
                GROUP BY ALL ORDER BY ALL""", {"outcome": outcome})  # ordered: the same sums, to the last bit
            self.add(outcome, model, list(MULTIVARIABLE), counts, levels, stratum,
                     joint_tests=extras and stratum is None)

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"cox": pl.DataFrame(self.cox, schema=COX_SCHEMA),
                "cox_models": pl.DataFrame(self.models, schema=COX_MODELS_SCHEMA),
                "cox_tests": pl.DataFrame(self.tests, schema=COX_TESTS_SCHEMA)}


def _cox(con, daily: pl.DataFrame, levels) -> dict[str, pl.DataFrame]:
    fits = _CoxFrames()
    for outcome in FIRST_EVENT_OUTCOMES:
        for stratifier in STRATIFIERS:
            counts = (daily.filter((pl.col("outcome") == outcome) & (pl.col("stratifier") == stratifier))
                      .select("t", pl.col("stratum").alias(stratifier), "n_events",
                              (pl.col("n_events") + pl.col("n_competing") + pl.col("n_censored")).alias("n_leaving")))
            fits.add(outcome, "univariable", [stratifier], counts, levels)
        fits.multivariable(con, outcome, levels)
    return fits.frames()


def _cox_multivariable(con, outcome: str, levels, outcomes: str) -> dict[str, pl.DataFrame]:
    """A sensitivity analysis's A5: the multivariable model (SAP A12) and its fit summary."""
    fits = _CoxFrames()
    fits.multivariable(con, outcome, levels, outcomes, extras=False)
    return fits.frames()
