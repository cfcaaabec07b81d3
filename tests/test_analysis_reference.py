"""run_analyses against R's survival package on the two reference datasets.

The datasets (tests/reference/data, written by make_datasets.py) are loaded as analysis tables
(tests/analysis_data.py), run_analyses fills the results tables, and every estimate is compared
with the committed output of tests/reference/survival_reference.R (`make reference`):
1e-6 absolute on estimates, standard errors, CIs, test statistics and p-values; 1e-6 relative
on hazard ratios and their CIs. Rows R leaves out (days after the last follow-up time, levels
without patients or events) must be NULL here, with a note.

`python tests/test_analysis_reference.py` prints the largest difference per quantity.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest
from analysis_data import analysed, read_expected

from vigil.stats import survival as sv

DATASETS = ("ordinary", "few_events")
ABS = 1e-6
REL = 1e-6


results = analysed


def _joined(ours: pl.DataFrame, expected: pl.DataFrame, on: list[str], how: str = "left") -> pl.DataFrame:
    return expected.join(ours, on=on, how=how, suffix="_ours")


def _max_abs(frame: pl.DataFrame, column: str, relative: bool = False) -> float:
    r = frame[column].to_numpy().astype(float)
    o = frame[f"{column}_ours"].to_numpy().astype(float)
    assert np.array_equal(np.isnan(r), np.isnan(o)), f"{column}: NULL in one and not the other"
    ok = ~np.isnan(r)
    if not ok.any():
        return 0.0
    diff = np.abs(r[ok] - o[ok])
    return float(np.max(diff / np.abs(r[ok]) if relative else diff))


def differences(name: str) -> dict[str, float]:
    """Largest |ours - R| per quantity (relative for hazard ratios); asserts the row sets agree."""
    res = results(name)
    out: dict[str, float] = {}

    # A1: incidence of first_serious and all_serious (first_opportunistic: same rows as first_serious
    # for ordinary, where analysis_data makes it a copy)
    inc = read_expected(name, "incidence").with_columns(pl.col("n_patients", "n_events").cast(pl.Int64))
    outcomes = ["first_serious", "all_serious"] + (["first_opportunistic"] if name == "ordinary" else [])
    inc = pl.concat([inc, inc.filter(pl.col("outcome") == "first_serious").with_columns(
        pl.lit("first_opportunistic").alias("outcome"))]).filter(pl.col("outcome").is_in(outcomes))
    j = _joined(res["incidence"], inc, ["outcome", "stratifier", "stratum"])
    assert j.height == inc.height and j["run_id"].null_count() == 0
    assert (j["n_patients"] == j["n_patients_ours"]).all() and (j["n_events"] == j["n_events_ours"]).all()
    for col in ("person_years", "rate_per_1000py", "ci_lower", "ci_upper"):
        out[f"incidence.{col}"] = _max_abs(j, col)

    # A3, A4 at the SAP days and the whole curves
    for method, prefix in (("kaplan_meier", "km"), ("aalen_johansen", "aj")):
        days = read_expected(name, f"{prefix}_days").with_columns(pl.col("day").cast(pl.Int32))
        # before the first exit time survfit reports the time-0 row, CI (0, 0); here estimate 0 has no CI
        days = days.with_columns([pl.when(pl.col("estimate") == 0).then(None).otherwise(pl.col(c)).alias(c)
                                  for c in ("ci_lower", "ci_upper")])
        ours = res["cumulative_incidence"].filter((pl.col("method") == method) & (pl.col("outcome") == "first_serious"))
        j = _joined(ours, days, ["stratifier", "stratum", "day"])
        assert j["run_id"].null_count() == 0
        assert (j["n_at_risk"].cast(pl.Int64) == j["n_at_risk_ours"]).all()
        for col in ("estimate", "ci_lower", "ci_upper"):
            out[f"{prefix}_days.{col}"] = _max_abs(j, col)
        # rows R leaves out: days after the stratum's last time, strata without patients
        extra = ours.join(days, on=["stratifier", "stratum", "day"], how="anti")
        assert extra["estimate"].null_count() == extra.height and extra["note"].null_count() == 0

        curve = read_expected(name, f"{prefix}_curve").with_columns(pl.col("time").cast(pl.Int32))
        ours = res["cumulative_incidence_curves"].filter(
            (pl.col("method") == method) & (pl.col("outcome") == "first_serious") & (pl.col("time") > 0))
        assert ours.height == curve.height
        j = _joined(ours, curve, ["stratifier", "stratum", "time"])
        assert (j["n_at_risk"].cast(pl.Int64) == j["n_at_risk_ours"]).all()
        assert (j["n_events"].cast(pl.Int64) == j["n_events_ours"]).all()
        j = j.with_columns(pl.when(pl.col("std_err").is_infinite()).then(None).otherwise(pl.col("std_err"))
                           .alias("std_err"))
        for col in ("estimate", "ci_lower", "ci_upper", "std_err"):
            out[f"{prefix}_curve.{col}"] = _max_abs(j, col)

    # A3 log-rank
    lr = read_expected(name, "logrank")
    ours = res["logrank"].filter(pl.col("outcome") == "first_serious")
    j = _joined(ours, lr, ["stratifier"])
    assert (j["df"].cast(pl.Int32) == j["df_ours"]).all()
    out["logrank.chisq"] = _max_abs(j, "chisq")
    out["logrank.p_value"] = _max_abs(j, "p_value")
    missing = ours.join(lr, on="stratifier", how="anti")
    assert missing["chisq"].null_count() == missing.height and missing["note"].null_count() == 0

    # A5 Cox and PH tests (the site-stratified model: tests/test_analysis_reference_v11.py)
    cox = res["cox"].filter((pl.col("outcome") == "first_serious") & (pl.col("model") != "multivariable_site_stratified")
                            ).with_columns(
        pl.when(pl.col("model") == "univariable").then(pl.lit("univariable:") + pl.col("covariates"))
        .otherwise(pl.col("model")).alias("model"))
    coef = read_expected(name, "cox")
    j = _joined(cox, coef, ["model", "variable", "level"])
    assert (j["n_patients"].cast(pl.Int64) == j["n_patients_ours"]).all()
    for col in ("coef", "se", "p_value"):
        out[f"cox.{col}"] = _max_abs(j, col)
    for col in ("hr", "ci_lower", "ci_upper"):
        out[f"cox.{col} (relative)"] = _max_abs(j, col, relative=True)
    extra = cox.filter(pl.col("variable") != "GLOBAL").join(coef, on=["model", "variable", "level"], how="anti")
    assert extra["hr"].null_count() == extra.height and extra["note"].null_count() == 0

    zph = read_expected(name, "zph").rename({"term": "variable", "chisq": "ph_chisq", "p_value": "ph_p_value",
                                             "df": "ph_df"})
    terms = cox.group_by("model", "variable").agg(pl.col("ph_chisq", "ph_p_value", "ph_df").first())
    j = _joined(terms, zph, ["model", "variable"])
    assert (j["ph_df"].cast(pl.Int32) == j["ph_df_ours"]).all()
    out["cox.ph_chisq"] = _max_abs(j, "ph_chisq")
    out["cox.ph_p_value"] = _max_abs(j, "ph_p_value")
    return out


@pytest.mark.parametrize("name", DATASETS)
def test_agrees_with_r(name):
    diffs = differences(name)
    for quantity, diff in diffs.items():
        assert diff <= (REL if "relative" in quantity else ABS), (quantity, diff)


@pytest.mark.parametrize("name", DATASETS)
def test_poisson_ci_agrees_with_qchisq(name):
    grid = read_expected(name, "poisson")
    lower, upper = sv.poisson_ci(grid["k"].to_numpy(), grid["person_years"].to_numpy())
    np.testing.assert_allclose(lower, grid["lower"].to_numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(upper, grid["upper"].to_numpy(), rtol=1e-12, atol=0)


def test_few_events_rows_are_sensible():
    res = results("few_events")
    inc = res["incidence"]
    empty = inc.filter(pl.col("n_patients") == 0)
    # sex M and U, edss >=6.0: no patients, for each of the three outcomes
    assert sorted(set(zip(empty["stratifier"], empty["stratum"]))) == [("edss", ">=6.0"), ("sex", "M"), ("sex", "U")]
    assert empty["rate_per_1000py"].null_count() == empty.height and empty["note"].null_count() == 0
    no_event = inc.filter((pl.col("n_events") == 0) & (pl.col("n_patients") > 0))
    assert (no_event["ci_lower"] == 0).all() and (no_event["ci_upper"] > 0).all()

    ci = res["cumulative_incidence"]
    one = ci.filter((pl.col("stratifier") == "site") & (pl.col("stratum") == "XX09") & (pl.col("method") == "kaplan_meier")
                    & (pl.col("outcome") == "first_serious")).sort("day")
    # two patients: censored day 100, event day 200; follow-up ends before day 365
    assert one["estimate"].to_list()[:2] == [0.0, 0.0] and one["estimate"].null_count() == 4
    assert one["note"].to_list()[2].startswith("day after the last follow-up time")

    # first_opportunistic has no events at all
    opp = ci.filter(pl.col("outcome") == "first_opportunistic")
    assert opp.filter(pl.col("estimate").is_not_null())["estimate"].max() == 0
    assert opp["ci_lower"].null_count() == opp.height
    lr = res["logrank"].filter(pl.col("outcome") == "first_opportunistic")
    assert lr["chisq"].null_count() == lr.height and set(lr["note"]) <= {"no events: no test",
                                                                          "fewer than two levels with patients: no test"}
    cox = res["cox"].filter(pl.col("outcome") == "first_opportunistic")
    assert cox["hr"].null_count() == cox.height and set(cox["note"]) == {"no events: no model"}

    cox = res["cox"].filter((pl.col("outcome") == "first_serious") & (pl.col("model") == "univariable"))
    sex = cox.filter(pl.col("covariates") == "sex")
    assert sex["hr"].null_count() == sex.height
    assert sex.filter(pl.col("variable") == "GLOBAL")["note"].to_list() == [
        "no variable with events in two or more levels: no model"]
    unknown = cox.filter((pl.col("covariates") == "edss") & (pl.col("level") == "unknown"))
    assert unknown["note"].to_list()[0].startswith("no events in this level")


if __name__ == "__main__":
    for dataset in (sys.argv[1:] or DATASETS):
        print(dataset)
        for quantity, diff in differences(dataset).items():
            print(f"  {quantity:32s} {diff:.2e}")
