"""vigil.stats.survival on small known answers, edge cases, and against lifelines.

The agreement with R's survival package on the reference datasets is in
tests/test_survival_reference.py; here are values worked by hand and the cases R does not show.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
from analysis_data import SAP_LEVELS, read_dataset

from vigil.analysis.cox import cox_model
from vigil.stats import survival as sv

# ------------------------------------------------------------------------------------ Poisson


def test_poisson_ci_known_values():
    # k = 0: lower 0; upper = chi2(0.975; 2)/2 = -ln(0.025) = 3.688879...
    # k = 1: lower = chi2(0.025; 2)/2 = -ln(0.975) = 0.025317807...; upper = chi2(0.975; 4)/2 = 5.571643...
    lower, upper = sv.poisson_ci([0, 1], [1.0, 1.0])
    assert lower[0] == 0.0
    assert upper[0] == pytest.approx(-math.log(0.025), abs=1e-12)
    assert lower[1] == pytest.approx(-math.log(0.975), abs=1e-12)
    assert upper[1] == pytest.approx(5.571643390, abs=1e-8)
    # k = 10 on 1000 person-years: the classic table (4.795, 18.39) per 1000
    lower, upper = sv.poisson_ci([10], [1000.0])
    assert 1000 * lower[0] == pytest.approx(4.7954, abs=1e-4)
    assert 1000 * upper[0] == pytest.approx(18.3904, abs=1e-4)


def test_poisson_ci_without_person_time_is_undefined():
    lower, upper = sv.poisson_ci([0, 3], [0.0, 0.0])
    assert np.isnan(lower).all() and np.isnan(upper).all()


# ------------------------------------------------------------------------------------ KM and AJ by hand

# Five patients (t, status): (2, event), (3, death), (3, censored), (5, event), (6, censored).
#   time 2: n = 5, one event          S = 4/5         F = 0 + 1 * 1/5              = 0.2
#   time 3: n = 4, one death, one cens  S = 4/5 * 3/4 = 0.6   F = 0.2 (no event)
#   time 5: n = 2, one event          S = 0.3         F = 0.2 + 0.6 * 1/2           = 0.5
#   time 6: n = 1, censored           F = 0.5
# Kaplan-Meier with the death censored: 1 - S = 0.2, 0.2, 1 - 0.8 * 1/2 = 0.6, 0.6: it counts the
# patient who died as if they could still have the event, so it exceeds Aalen-Johansen (0.5).
# Infinitesimal jackknife at time 2: the event patient moves F by (1 - 1/5)/5 = 0.16, each of the
# four others by -0.2/5 = -0.04: Var = 0.16^2 + 4 * 0.04^2 = 0.032 = p(1 - p)/n, the binomial one.
TIME = np.array([2, 3, 5, 6])
EVENTS = np.array([1, 0, 1, 0])
DEATHS = np.array([0, 1, 0, 0])
CENSORED = np.array([0, 1, 0, 1])


def test_aalen_johansen_five_patients():
    aj = sv.aalen_johansen(TIME, EVENTS, DEATHS, CENSORED)
    np.testing.assert_allclose(aj.estimate, [0.2, 0.2, 0.5, 0.5], atol=1e-15)
    np.testing.assert_array_equal(aj.n_at_risk, [5, 4, 2, 1])
    assert aj.std_err[0] == pytest.approx(math.sqrt(0.032), abs=1e-15)
    # log CI of survfit for multi-state curves: F exp(-+ 1.96 se / F)
    z = sv.Z95
    assert aj.ci_lower[0] == pytest.approx(0.2 * math.exp(-z * math.sqrt(0.032) / 0.2), abs=1e-15)
    assert aj.ci_upper[0] == pytest.approx(min(1.0, 0.2 * math.exp(z * math.sqrt(0.032) / 0.2)), abs=1e-15)


def test_aalen_johansen_variance_is_the_infinitesimal_jackknife():
    # brute force: derivative of F(t) with respect to each patient's case weight, by finite differences
    rng = np.random.default_rng(3)
    t = rng.integers(1, 15, size=40)
    status = rng.choice([0, 1, 2], size=40, p=[0.5, 0.3, 0.2])

    def weighted_aj(w):
        times = np.unique(t)
        n = np.array([w[t >= u].sum() for u in times])
        d1 = np.array([w[(t == u) & (status == 1)].sum() for u in times])
        d = np.array([w[(t == u) & (status > 0)].sum() for u in times])
        surv_before = np.concatenate(([1.0], np.cumprod(1 - d / n)[:-1]))
        return np.cumsum(surv_before * d1 / n)

    base = weighted_aj(np.ones(40))
    eps = 1e-6
    influence = np.array([(weighted_aj(np.ones(40) + eps * np.eye(40)[i]) - base) / eps for i in range(40)])
    times = np.unique(t)
    count = lambda s: np.array([((t == u) & (status == s)).sum() for u in times])  # noqa: E731
    aj = sv.aalen_johansen(times, count(1), count(2), count(0))
    np.testing.assert_allclose(aj.estimate, base, atol=1e-14)
    np.testing.assert_allclose(aj.std_err, np.sqrt((influence ** 2).sum(0)), atol=1e-6)


def test_kaplan_meier_five_patients_and_at_days():
    km = sv.kaplan_meier(TIME, EVENTS, DEATHS + CENSORED)
    np.testing.assert_allclose(km.estimate, [0.2, 0.2, 0.6, 0.6], atol=1e-15)
    # Greenwood on log S: 1/(5*4) at time 2, + 1/(2*1) at time 5
    np.testing.assert_allclose(km.std_err, np.sqrt([0.05, 0.05, 0.55, 0.55]), atol=1e-15)
    at = sv.at_days(km, [1, 2, 4, 5, 6, 7])
    np.testing.assert_allclose(at.estimate[:5], [0.0, 0.2, 0.2, 0.6, 0.6], atol=1e-15)
    assert np.isnan(at.estimate[5])                    # after the last time (6): not estimable
    assert np.isnan(at.ci_lower[0]) and np.isnan(at.ci_upper[0])   # no event yet: no CI
    np.testing.assert_array_equal(at.n_at_risk, [5, 5, 2, 2, 1, 0])   # patients with t >= day
    np.testing.assert_array_equal(at.cumulative_events, [0, 1, 1, 2, 2, 2])
    assert at.note[0].startswith("no event") and at.note[5].startswith("day after the last")
    assert at.note[1] is None


def test_kaplan_meier_reaching_one_has_no_interval():
    # two patients: censored at 1, event at 2 when alone at risk: 1 - S = 1, Greenwood infinite
    km = sv.kaplan_meier([1, 2], [0, 1], [1, 0])
    assert km.estimate[-1] == 1.0
    assert np.isinf(km.std_err[-1])
    assert np.isnan(km.ci_lower[-1]) and np.isnan(km.ci_upper[-1])
    at = sv.at_days(km, [2])
    assert at.note[0].startswith("every patient at risk had the event")


def test_kaplan_meier_log_log_ci_equals_lifelines():
    # lifelines' KaplanMeierFitter CI is the "exponential Greenwood" one: log(-log S) +- z se / log S,
    # which is survfit's conf.type = "log-log". lifelines gives it at every time, also where S = 1
    # (where it reports (1, 1) for S; survfit and we leave it undefined).
    from lifelines import KaplanMeierFitter

    d = read_dataset("ordinary")
    days = d.group_by("t").agg((pl.col("status") == 1).sum().alias("d"), (pl.col("status") != 1).sum().alias("c")).sort("t")
    km = sv.kaplan_meier(days["t"].to_numpy(), days["d"].to_numpy(), days["c"].to_numpy())
    fitter = KaplanMeierFitter().fit(d["t"].to_numpy(), d["status"].to_numpy() == 1)
    ci = fitter.confidence_interval_.loc[km.time]
    estimate = 1 - fitter.survival_function_.loc[km.time, "KM_estimate"].to_numpy()
    ok = ~np.isnan(km.ci_lower)
    np.testing.assert_allclose(km.estimate, estimate, atol=1e-12)
    np.testing.assert_allclose(km.ci_lower[ok], 1 - ci.iloc[:, 1].to_numpy()[ok], atol=1e-12)
    np.testing.assert_allclose(km.ci_upper[ok], 1 - ci.iloc[:, 0].to_numpy()[ok], atol=1e-12)


def test_empty_stratum_gives_rows_without_estimates():
    at = sv.at_days(sv.kaplan_meier([], [], []), [30, 180])
    assert np.isnan(at.estimate).all() and (at.n_at_risk == 0).all()
    assert at.note == ["no patients in the stratum"] * 2


# ------------------------------------------------------------------------------------ log-rank


def test_logrank_one_level_or_no_event_is_no_test():
    one = sv.logrank(["F", "F"], [3, 5], [1, 0], [0, 1])
    assert np.isnan(one.chisq) and "fewer than two levels" in one.note
    none = sv.logrank(["F", "M"], [3, 5], [0, 0], [1, 1])
    assert np.isnan(none.chisq) and none.note == "no events: no test"


def test_logrank_df_counts_levels_at_risk_at_an_event_like_survdiff():
    # level C leaves (censored) at time 1, before the first event (time 2): expected 0, not counted
    result = sv.logrank(["A", "B", "C", "A", "B"], [2, 2, 1, 4, 5], [1, 0, 0, 1, 1], [0, 1, 1, 0, 0])
    assert result.df == 1
    assert np.isfinite(result.chisq)


# ------------------------------------------------------------------------------------ Cox


def _cox_data(d: pl.DataFrame, variables: list[str]) -> sv.CoxData:
    levels = {**SAP_LEVELS, "site": sorted(d["site"].unique())}
    counts = d.group_by("t", *variables).agg((pl.col("status") == 1).sum().alias("n_events"),
                                             pl.len().alias("n_leaving"))
    patterns = counts.select(variables).unique(maintain_order=True)
    index = counts.select(variables).join(patterns.with_row_index("_p"), on=variables, how="left",
                                          maintain_order="left")["_p"].to_numpy().astype(np.int64)
    columns, names, terms = [], [], {}
    for v in variables:
        terms[v] = []
        for lv in [lv for lv in levels[v][1:] if lv in set(d[v])]:
            terms[v].append(len(names))
            names.append(f"{v}[{lv}]")
            columns.append((patterns[v].to_numpy() == lv).astype(float))
    return sv.CoxData(counts["t"].to_numpy(), index, counts["n_events"].to_numpy().astype(float),
                      counts["n_leaving"].to_numpy().astype(float), np.column_stack(columns), names, terms)


@pytest.mark.parametrize("variables", [["charlson"], ["site"], ["age_group", "sex", "charlson", "prior_dmt",
                                                                 "prior_high_efficacy", "edss"]])
def test_cox_equals_lifelines_on_patient_rows(variables):
    # lifelines' CoxPHFitter on one row per patient (dummy columns), convergence tightened: its default
    # stops on a Newton decrement < 1e-7 without taking the last step, which leaves ~1e-6 in the
    # coefficients (up to 1.7e-6 on this dataset).
    from lifelines import CoxPHFitter

    d = read_dataset("ordinary")
    data = _cox_data(d, variables)
    ours = sv.cox_fit(data)
    frame = pd.DataFrame({name: data.X[:, i][np.repeat(data.pattern, data.n_leaving.astype(int))]
                          for i, name in enumerate(data.names)})
    rows = np.repeat(np.arange(len(data.time)), data.n_leaving.astype(int))
    within = np.arange(len(rows)) - np.repeat(np.cumsum(data.n_leaving.astype(int)) - data.n_leaving.astype(int),
                                              data.n_leaving.astype(int))
    frame["t"] = data.time[rows]
    frame["e"] = (within < data.n_events[rows]).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = CoxPHFitter().fit(frame, "t", "e", fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(ours.coef, fitter.params_[data.names].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(ours.se, fitter.standard_errors_[data.names].to_numpy(), rtol=1e-9)
    assert ours.loglik == pytest.approx(fitter.log_likelihood_, abs=1e-8)
    # and the compressed rows of lifelines_cox give the same fit
    coef, se = sv.lifelines_cox(data)
    np.testing.assert_allclose(coef, ours.coef, atol=1e-9)
    np.testing.assert_allclose(se, ours.se, rtol=1e-9)


def test_cox_score_is_zero_and_information_matches_finite_differences():
    data = _cox_data(read_dataset("ordinary"), ["edss"])
    fit = sv.cox_fit(data)
    loglik, score, info = sv.cox_score_information(data, fit.coef)
    assert np.max(np.abs(score)) < 1e-8
    eps = 1e-6
    numeric = np.array([(sv.cox_score_information(data, fit.coef + eps * e)[1] - score) / eps
                        for e in np.eye(len(fit.coef))])
    np.testing.assert_allclose(-numeric, info, rtol=1e-5)


def test_efron_ties_by_hand():
    # Two patterns x = 0 and x = 1, all at risk at time 1; tied events at time 1: one with x = 0 and
    # one with x = 1; the other two (x = 0 and x = 1) censored at 2. At beta = 0 the Efron terms are
    # den_0 = 4, den_1 = 4 - 2/2 = 3; loglik = -log 4 - log 3. Score at 0: sum x over events (1)
    # minus means (2/4 + (2 - 1/2)/3 = 0.5 + 0.5) = 0.
    data = sv.CoxData(time=np.array([1, 1, 2, 2]), pattern=np.array([0, 1, 0, 1]),
                      n_events=np.array([1.0, 1, 0, 0]), n_leaving=np.array([1.0, 1, 1, 1]),
                      X=np.array([[0.0], [1.0]]), names=["x"], terms={"x": [0]})
    loglik, score, info = sv.cox_score_information(data, np.zeros(1))
    assert loglik == pytest.approx(-math.log(4) - math.log(3), abs=1e-14)
    assert score[0] == pytest.approx(0.0, abs=1e-14)
    # information: term 0 variance 1/4 (mean 1/2); term 1 has risk weights 1/2,1/2 on the tied and 1,1
    # on the others: second moment (2 - 1/2)/3 = 1/2, mean 1/2, variance 1/4. Total 1/2.
    assert info[0, 0] == pytest.approx(0.5, abs=1e-14)


def _counts(rows: list[tuple], variables: list[str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["t", *variables, "n_events", "n_leaving"], orient="row")


def test_cox_model_levels_without_patients_or_events():
    rng = np.random.default_rng(5)
    # charlson: 0 and 1 with events, >=2 without events; sex: F and M, no U
    rows = []
    for t in range(1, 200):
        for ch, sex in (("0", "F"), ("1", "M"), ("0", "M"), ("1", "F")):
            rows.append((t, ch, sex, int(rng.random() < 0.1), 3))
        rows.append((t, ">=2", "F", 0, 1))
    counts = _counts(rows, ["charlson", "sex"])
    model = {(r.variable, r.level): r for r in cox_model(counts, ["charlson", "sex"], SAP_LEVELS).rows}
    assert np.isfinite(model["charlson", "1"].hr) and model["charlson", "1"].note is None
    assert np.isnan(model["charlson", ">=2"].hr) and "no events in this level" in model["charlson", ">=2"].note
    assert np.isnan(model["sex", "U"].hr) and model["sex", "U"].note == "no patients in this level"
    assert model["GLOBAL", None].ph_df == 2 and np.isfinite(model["GLOBAL", None].ph_p_value)
    # the patients of charlson >=2 are left out of the model
    assert model["charlson", "1"].n_patients == 199 * 12
    # ... which is the limit of the fit with them in: their coefficient -> -inf, the others converge
    limit = cox_model(counts.filter(pl.col("charlson") != ">=2"), ["charlson", "sex"], SAP_LEVELS).rows
    assert model["charlson", "1"].coef == limit[0].coef


def test_cox_model_reference_without_events_or_one_level():
    rows = [(t, lv, int(lv == "1" and t % 7 == 0), 2) for t in range(1, 100) for lv in ("0", "1", ">=2")]
    rows = [(t, lv, e if lv != ">=2" else int(t % 5 == 0), n) for t, lv, e, n in rows]
    counts = _counts(rows, ["charlson"])
    model = cox_model(counts, ["charlson"], SAP_LEVELS).rows
    assert all(np.isnan(r.hr) for r in model[:-1])
    assert model[0].note == "no events in the reference level 0: hazard ratio not estimable"
    assert np.isfinite(model[-1].ph_chisq)    # the model is fitted (1 vs >=2) for the PH test

    one = cox_model(_counts([(t, "F", t % 3 == 0, 2) for t in range(1, 50)], ["sex"]), ["sex"], SAP_LEVELS).rows
    assert [r.note for r in one] == ["no patients in this level"] * 2 + [
        "no variable with events in two or more levels: no model"]
    none = cox_model(_counts([(t, lv, 0, 2) for t in range(1, 50) for lv in "FM"], ["sex"]), ["sex"], SAP_LEVELS).rows
    assert {r.note for r in none} == {"no events: no model"} and all(np.isnan(r.hr) for r in none)


def test_cox_monotone_likelihood_is_reported_not_estimated():
    # charlson 1: three patients, events on days 1, 2, 3 while charlson 0 patients are at risk;
    # charlson 0: its only event on day 10, when no charlson 1 patient is left. Both levels have
    # events, but the partial likelihood increases for ever with the coefficient (monotone
    # likelihood): the hazard ratio is infinite, and the row says so instead of a number.
    rows = [(1, "1", 1, 1), (2, "1", 1, 1), (3, "1", 1, 1), (10, "0", 1, 3)]
    model = cox_model(_counts(rows, ["charlson"]), ["charlson"], SAP_LEVELS).rows
    assert np.isnan(model[0].hr) and model[0].note.startswith("model not estimable")
    assert np.isnan(model[-1].ph_chisq)


def test_cox_zph_single_term_global_equals_term():
    data = _cox_data(read_dataset("ordinary"), ["age_group"])
    fit = sv.cox_fit(data)
    assert fit.zph["age_group"] == fit.zph["GLOBAL"]
    with pytest.raises(ValueError):
        sv.cox_zph(data, fit.coef, transform="rank")
