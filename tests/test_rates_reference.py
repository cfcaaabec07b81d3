"""vigil.stats.rates (SAP A8, A11) and vigil.stats.glm (A9) against R, plus hand-checkable cases.

The datasets (tests/reference/data, written by make_rates_datasets.py) are read here and by
tests/reference/rates_reference.R, whose committed output (tests/reference/expected/rates, `make
reference`) is the expected value: binom.test, glm(family = poisson), MASS::glm.nb and
epitools::ageadjust.direct. Tolerances: 1e-6 absolute on coefficients, SEs, p, CI limits on the
log scale, Clopper-Pearson limits, dispersion and 2 log-likelihood; 1e-6 relative on z (to max(1, |z|)),
rate ratios, deviance, Pearson chi2, theta, SE(theta) and the standardised rates. R writes NA as an
empty cell (read as null, compared as missing), its doubles quoted and Inf as "Inf" (read as floats).

`python tests/test_rates_reference.py` prints the largest difference per quantity.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from vigil.stats import glm
from vigil.stats.rates import clopper_pearson, direct_standardised_rate

REFERENCE = Path(__file__).parent / "reference"
EXPECTED = REFERENCE / "expected" / "rates"
ABS = 1e-6
REL = 1e-6

LEVELS = {   # reference first, as in rates_reference.R
    "window": [">365", "0-30", "31-90", "91-365"],
    "age_group": ["18-29", "30-39", "40-49", ">=50"],
    "sex": ["F", "M", "U"],
    "edss": ["0-2.5", "3.0-5.5", ">=6.0", "unknown"],
}
MODELS = {"unadjusted": ["window"], "adjusted": ["window", "age_group", "sex", "edss"]}
GLM_DATASETS = ("windows_aggregated", "windows_zero_level", "windows_aliased", "windows_separated")
FAMILIES = {"poisson": glm.poisson_glm, "negbin": glm.negative_binomial_glm}
CASES = [(d, f, m) for d in GLM_DATASETS for f in FAMILIES for m in MODELS]


TEXT = {"dataset", "family", "model", "term", "stratifier", "stratum", "warnings"}   # "0", "1" strata too
INTEGER = {"k", "n", "n_rows", "rank", "df_residual", "iterations", "n_cells"}


def read_data(name: str) -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "data" / f"{name}.csv", infer_schema_length=0)   # all text, as R reads it


def read_expected(name: str) -> pl.DataFrame:
    path = EXPECTED / f"{name}.csv"
    columns = pl.read_csv(path, n_rows=0).columns
    schema = {c: pl.String if c in TEXT else pl.Int64 if c in INTEGER else pl.Boolean if c == "converged"
              else pl.Float64 for c in columns}
    return pl.read_csv(path, schema_overrides=schema)


def _np(values) -> np.ndarray:
    """A float column as numpy, R's NA (null) as NaN."""
    return values.cast(pl.Float64).fill_null(np.nan).to_numpy()


def _row(frame: pl.DataFrame, stratifier: str, stratum: str) -> dict:
    """The one row of a stratum, as {column: value} (null: None)."""
    rows = frame.filter((pl.col("stratifier") == stratifier) & (pl.col("stratum") == stratum))
    assert rows.height == 1, (stratifier, stratum)
    return rows.row(0, named=True)


def _max(values) -> float:
    values = np.asarray(values, float)
    return float(np.max(values)) if values.size else 0.0


# ------------------------------------------------------------------------------------ A8

def binomial_differences() -> dict[str, float]:
    exp = read_expected("binomial")
    lower, upper = clopper_pearson(exp["k"].to_numpy(), exp["n"].to_numpy())
    assert not np.isnan(lower).any() and not np.isnan(upper).any()
    return {"clopper_pearson.lower": _max(np.abs(lower - _np(exp["ci_lower"]))),
            "clopper_pearson.upper": _max(np.abs(upper - _np(exp["ci_upper"])))}


def test_clopper_pearson_equals_binom_test():
    for quantity, diff in binomial_differences().items():
        assert diff < ABS, quantity


def test_clopper_pearson_by_hand():
    # k = 0: lower 0, upper solves (1 - p)^n = 0.025; k = n: lower solves p^n = 0.025, upper 1
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-14))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10), abs=1e-14), 1.0)
    # n = 1, k = 1 at 90%: lower = 0.05
    assert clopper_pearson(1, 1, level=0.90) == (pytest.approx(0.05, abs=1e-14), 1.0)
    # undefined: n = 0, k > n, negative, not whole
    lower, upper = clopper_pearson([0, 5, -1, 1.5, 3], [0, 4, 3, 3, 10])
    assert np.isnan(lower[:4]).all() and np.isnan(upper[:4]).all() and 0 < lower[4] < 0.3 < upper[4] < 1
    # vectorised: broadcast k over one n, shape kept
    lower, upper = clopper_pearson(np.arange(6).reshape(2, 3), 5)
    assert lower.shape == (2, 3) and lower[0, 0] == 0 and upper[1, 2] == 1
    assert np.all(np.diff(lower.ravel()) > 0) and np.all(np.diff(upper.ravel()) > 0)


# ------------------------------------------------------------------------------------ A9

@cache
def fitted(dataset: str, family: str, model: str) -> tuple[glm.GLMResult, pl.DataFrame, dict]:
    """Our fit, R's coefficient rows (in R's order of terms) and R's row of fit statistics."""
    data = read_data(dataset)
    # R's glm drops factor levels absent from the data (drop.unused.levels): so do the levels here
    levels = {v: [lv for lv in LEVELS[v] if lv in set(data[v].to_list())] for v in MODELS[model]}
    X, names = glm.treatment_design(data, levels)
    y = data["events"].cast(pl.Float64).to_numpy()
    offset = np.log(data["person_days"].cast(pl.Float64).to_numpy() / 365.25)
    result = FAMILIES[family](y, offset, X, names)
    case = (pl.col("dataset") == dataset) & (pl.col("family") == family) & (pl.col("model") == model)
    coef = read_expected("glm_coef").filter(case)
    fit = read_expected("glm_fit").filter(case).row(0, named=True)
    assert coef["term"].to_list() == names, "R's terms and ours differ"
    return result, coef, fit


def glm_differences(dataset: str, family: str, model: str) -> dict[str, float]:
    """Largest |ours - R| per quantity (relative where REL applies). Asserts the coefficients R
    reports NA are the aliased ones here, and that those not estimated here (MLE infinite) are
    ones R left at a huge value with a huge SE."""
    r, coef, fit = fitted(dataset, family, model)
    names = np.array(r.names)
    na_in_r = np.isnan(_np(coef["estimate"]))
    assert set(names[na_in_r]) == set(r.aliased)
    infinite = np.isin(names, r.no_events)
    if infinite.any():
        assert np.all(np.abs(_np(coef["estimate"])[infinite]) > 15)
        assert np.all(_np(coef["se"])[infinite] > 100)
    assert np.isnan(r.coef[na_in_r | infinite]).all() and np.isnan(r.se[na_in_r | infinite]).all()
    ok = ~(na_in_r | infinite)
    assert not np.isnan(r.coef[ok]).any()

    def abs_diff(ours, column):
        return _max(np.abs(np.asarray(ours)[ok] - _np(coef[column])[ok]))

    out = {"coef": abs_diff(r.coef, "estimate"), "se": abs_diff(r.se, "se"), "z (rel)": _max(np.abs(r.z[ok] - _np(coef["z"])[ok]) / np.maximum(1, np.abs(_np(coef["z"])[ok]))),
           "p_value": abs_diff(r.p_value, "p_value"),
           "rate_ratio (rel)": _max(np.abs(r.rate_ratio[ok] / _np(coef["rate_ratio"])[ok] - 1)),
           "log ci_lower": _max(np.abs(np.log(r.ci_lower[ok]) - np.log(_np(coef["ci_lower"])[ok]))),
           "log ci_upper": _max(np.abs(np.log(r.ci_upper[ok]) - np.log(_np(coef["ci_upper"])[ok]))),
           "deviance (rel)": abs(r.deviance / fit["deviance"] - 1),
           "pearson_chi2 (rel)": abs(r.pearson_chi2 / fit["pearson_chi2"] - 1),
           "dispersion": abs(r.dispersion - fit["dispersion"])}
    assert r.df_residual == fit["df_residual"] and r.n_rows == fit["n_rows"]
    assert r.converged == fit["converged"]
    if not r.no_events:
        # summary.glm's quasi-family estimate uses the working weights of the last IRLS step, which
        # for rows whose rate tends to 0 is one step behind: compared only without such rows
        out["working_dispersion"] = abs(r.working_dispersion - fit["summary_dispersion"])
    if family == "negbin":
        out["theta (rel)"] = abs(r.theta / fit["theta"] - 1)
        out["se_theta (rel)"] = abs(r.se_theta / fit["se_theta"] - 1)
        out["twologlik"] = abs(r.twologlik - fit["twologlik"])
    return out


def _tolerance(quantity: str) -> float:
    return REL if "(rel)" in quantity else ABS


@pytest.mark.parametrize("dataset,family,model", CASES)
def test_glm_equals_r(dataset, family, model):
    for quantity, diff in glm_differences(dataset, family, model).items():
        assert diff < _tolerance(quantity), f"{quantity}: {diff:.2e}"


def test_glm_aliased_and_no_event_columns_are_named():
    r, _, _ = fitted("windows_aliased", "poisson", "adjusted")
    assert r.aliased == ["edss=unknown"] and "edss=unknown aliased with sex=U" in r.note
    r, _, _ = fitted("windows_zero_level", "negbin", "adjusted")
    assert r.no_events == ["sex=U"] and np.isnan(r.rate_ratio[r.names.index("sex=U")])
    assert "no events in the rows of sex=U" in r.note and r.converged
    # two columns infinite together (age >=50 -> -Inf, sex U -> +Inf): neither is a level without events
    r, _, _ = fitted("windows_separated", "poisson", "adjusted")
    assert r.no_events == ["age_group=>=50", "sex=U"] and "MLE infinite" in r.note
    r, _, _ = fitted("windows_aggregated", "negbin", "adjusted")
    assert r.note is None and r.aliased == [] and r.no_events == []


def test_poisson_intercept_only_is_the_crude_rate():
    y = np.array([3.0, 0.0, 7.0, 12.0])
    py = np.array([120.5, 30.25, 210.0, 400.0])
    r = glm.poisson_glm(y, np.log(py), np.ones((4, 1)), ["(Intercept)"])
    # IRLS stops as R's glm.fit (relative change of the deviance < 1e-8) and the SE is from the weights
    # of its last step, so both are exact to ~1e-8, not to rounding
    assert r.rate_ratio[0] == pytest.approx(y.sum() / py.sum(), rel=1e-8)
    assert r.se[0] == pytest.approx(1 / np.sqrt(y.sum()), rel=1e-6)   # Var log rate = 1 / events
    assert r.df_residual == 3 and r.converged


def test_poisson_window_only_rate_ratios_are_crude_ratios():
    # saturated in the windows: each rate ratio is the ratio of crude rates, SE sqrt(1/k + 1/k_ref)
    window = np.array(["0-30", "0-30", ">365", ">365", "31-90", "91-365", "91-365"])
    y = np.array([4.0, 6.0, 9.0, 11.0, 7.0, 3.0, 13.0])
    py = np.array([50.0, 60.0, 400.0, 380.0, 120.0, 300.0, 310.0])
    X, names = glm.treatment_design(pl.DataFrame({"window": window}), {"window": LEVELS["window"]})
    r = glm.poisson_glm(y, np.log(py), X, names)
    rate = {w: y[window == w].sum() / py[window == w].sum() for w in LEVELS["window"]}
    for j, w in enumerate(LEVELS["window"][1:], start=1):
        assert r.rate_ratio[j] == pytest.approx(rate[w] / rate[">365"], rel=1e-10)
        assert r.se[j] == pytest.approx(np.sqrt(1 / y[window == w].sum() + 1 / 20), rel=1e-8)
        z = np.log(rate[w] / rate[">365"]) / r.se[j]
        assert r.p_value[j] == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-12)
        assert r.ci_lower[j] == pytest.approx(r.rate_ratio[j] * np.exp(-1.959963984540054 * r.se[j]), rel=1e-12)


def test_poisson_dispersion_by_hand():
    # two rows, same person-time, intercept only: mu = 2 each, Pearson = (1 + 1) / 2 = 1 on 1 df
    r = glm.poisson_glm([3.0, 1.0], np.log([1.0, 1.0]), np.ones((2, 1)))
    assert r.pearson_chi2 == pytest.approx(1.0, abs=1e-8) and r.dispersion == pytest.approx(1.0, abs=1e-8)
    assert r.deviance == pytest.approx(2 * (3 * np.log(3 / 2) + np.log(1 / 2)), abs=1e-8)
    # counts exactly proportional to person-time: a perfect fit, chi2 0
    r = glm.poisson_glm([2.0, 4.0, 8.0], np.log([1.0, 2.0, 4.0]), np.ones((3, 1)))
    assert r.pearson_chi2 == pytest.approx(0, abs=1e-8) and r.rate_ratio[0] == pytest.approx(2.0)


def test_reference_level_without_events():
    # the reference window has no events: every window rate ratio (and the intercept) is infinite;
    # the covariates are those of the fit on the other rows
    data = read_data("windows_aggregated")
    y = data["events"].cast(pl.Float64).to_numpy().copy()
    y[(data["window"] == ">365").to_numpy()] = 0
    offset = np.log(data["person_days"].cast(pl.Float64).to_numpy() / 365.25)
    levels = {v: LEVELS[v] for v in ("window", "age_group", "sex")}
    X, names = glm.treatment_design(data, levels)
    rest = (data["window"] != ">365").to_numpy()
    for fit in (glm.poisson_glm, glm.negative_binomial_glm):
        r = fit(y, offset, X, names)
        assert r.no_events == ["(Intercept)", "window=0-30", "window=31-90", "window=91-365"]
        assert r.df_residual == len(y) - X.shape[1]
        # on the other rows the three window dummies sum to the intercept: drop the intercept
        sub = fit(y[rest], offset[rest], X[rest][:, 1:], names[1:])
        assert sub.aliased == [] and np.allclose(r.coef[4:], sub.coef[3:], atol=1e-9, rtol=0)
        # SEs: ours at the final mu of the limit fit, the sub-fit's from its last IRLS weights (as R's)
        assert np.allclose(r.se[4:], sub.se[3:], atol=1e-5, rtol=0)


def test_no_events_at_all_and_bad_input():
    r = glm.negative_binomial_glm([0.0, 0.0], np.log([1.0, 2.0]), np.ones((2, 1)))
    assert np.isnan(r.coef).all() and not r.converged and "no events" in r.note
    with pytest.raises(ValueError):
        glm.poisson_glm([1.0, 2.0], [0.0, -np.inf], np.ones((2, 1)))   # a row without person-time
    with pytest.raises(ValueError):
        glm.poisson_glm([1.0, -2.0], [0.0, 0.0], np.ones((2, 1)))
    with pytest.raises(ValueError):
        glm.treatment_design(pl.DataFrame({"window": ["0-30", "1-2"]}), {"window": LEVELS["window"]})


def test_unused_level_is_aliased():
    window = np.array(["0-30", ">365", ">365", "31-90"])
    X, names = glm.treatment_design(pl.DataFrame({"window": window}), {"window": LEVELS["window"]})
    r = glm.poisson_glm([3.0, 5.0, 4.0, 2.0], np.log([10.0, 80.0, 70.0, 30.0]), X, names)
    assert r.aliased == ["window=91-365"] and "nothing (a column of zeros)" in r.note
    assert r.df_residual == 1 and np.isnan(r.coef[3]) and not np.isnan(r.coef[:3]).any()


def test_negative_binomial_underdispersed_does_not_converge():
    # counts closer to their means than Poisson: theta -> Inf, theta.ml stops at its iteration limit
    # (R: warning "iteration limit reached"); the rate ratios are the Poisson ones
    py = np.array([10, 12, 9, 11, 20, 18, 22, 19, 5, 6, 4, 5.0])
    y = np.array([5, 6, 4, 6, 16, 14, 18, 15, 6, 7, 5, 6.0])
    X, names = glm.treatment_design(pl.DataFrame({"g": np.repeat(["a", "b", "c"], 4)}), {"g": ["a", "b", "c"]})
    nb = glm.negative_binomial_glm(y, np.log(py), X, names)
    po = glm.poisson_glm(y, np.log(py), X, names)
    assert not nb.converged and "iteration limit" in nb.note and nb.theta > 1e6
    assert np.allclose(nb.coef, po.coef, atol=1e-6) and np.allclose(nb.se, po.se, rtol=1e-5)


def test_negative_binomial_on_aggregated_rows_is_not_the_poisson_model():
    r_nb, _, _ = fitted("windows_aggregated", "negbin", "adjusted")
    r_po, _, _ = fitted("windows_aggregated", "poisson", "adjusted")
    assert r_po.dispersion > 2 and 0.8 < r_nb.dispersion < 1.3   # the NB variance absorbs the overdispersion
    assert np.all(r_nb.se > r_po.se)


# ------------------------------------------------------------------------------------ A11

def _cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Events and person-years per (age_group, sex), every SAP cell in order, the empty ones 0."""
    keys = pl.DataFrame({"age_group": [a for a in LEVELS["age_group"] for _ in LEVELS["sex"]],
                         "sex": [s for _ in LEVELS["age_group"] for s in LEVELS["sex"]]})
    sums = frame.group_by("age_group", "sex").agg(events=pl.col("events").cast(pl.Float64).sum(),
                                                  py=(pl.col("person_days").cast(pl.Float64) / 365.25).sum())
    return keys.join(sums, on=["age_group", "sex"], how="left", maintain_order="left").with_columns(
        pl.col("events", "py").fill_null(0.0))


@cache
def standardised() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ours and R's rows, one per (stratifier, stratum), in the same order."""
    data = read_data("standardisation")
    standard = _cells(data)
    rows = []
    strata = [("overall", "all", data)] + [(v, lv, data.filter(pl.col(v) == lv)) for v in ("site", "charlson")
                                           for lv in sorted(set(data[v].to_list()))]
    for stratifier, stratum, sub in strata:
        cells = _cells(sub)
        # every cell is passed, the empty ones too: the function leaves them out of the standard (SAP A11)
        r = direct_standardised_rate(cells["events"].to_numpy(), cells["py"].to_numpy(), standard["py"].to_numpy())
        rows.append({"stratifier": stratifier, "stratum": stratum, **r._asdict()})
    ours = pl.DataFrame(rows, schema_overrides={"note": pl.String})
    keys = ["stratifier", "stratum"]
    exp = ours.select(keys).join(read_expected("standardised"), on=keys, how="inner", validate="1:1",
                                 maintain_order="left")
    assert exp.select(keys).equals(ours.select(keys)), "R's strata and ours differ"
    return ours, exp


def standardisation_differences() -> dict[str, float]:
    ours, exp = standardised()
    assert ours["n_cells"].to_list() == exp["n_cells"].to_list()
    out = {}
    for col in ("crude_rate", "adjusted_rate", "ci_lower", "ci_upper"):
        r, o = _np(exp[col]), _np(ours[col])
        ok = ~np.isnan(r) & (r != 0)
        out[f"standardised.{col} (rel)"] = _max(np.abs(o[ok] / r[ok] - 1))
        assert np.all(o[r == 0] == 0)
    return out


def test_direct_standardisation_equals_ageadjust_direct():
    for quantity, diff in standardisation_differences().items():
        assert diff < REL, quantity


def test_direct_standardisation_rules():
    ours, exp = standardised()
    # the empty cells: SE03 has none in (>=50, U), charlson >=2 none in (18-29, U)
    assert _row(ours, "site", "SE03")["n_cells"] == 11 and _row(ours, "charlson", ">=2")["n_cells"] == 11
    assert "left out of the standard" in _row(ours, "site", "SE03")["note"]
    # IS04 has no events: R's lower limit is NaN (0/0 shape; written as NA, read as null), ours is 0;
    # the upper limit is R's
    assert _row(exp, "site", "IS04")["ci_lower"] is None and _row(ours, "site", "IS04")["ci_lower"] == 0
    assert "R's ageadjust.direct gives NaN" in _row(ours, "site", "IS04")["note"]
    # the whole cohort standardised to itself is its crude rate
    overall = _row(ours, "overall", "all")
    assert overall["adjusted_rate"] == pytest.approx(overall["crude_rate"], rel=1e-12)


def test_direct_standardisation_by_hand():
    k, pt, std = np.array([2.0, 5.0, 0.0]), np.array([100.0, 50.0, 0.0]), np.array([300.0, 100.0, 600.0])
    r = direct_standardised_rate(k, pt, std)
    # the third cell has no person-time: the standard is 300 : 100
    assert r.n_cells == 2 and r.adjusted_rate == pytest.approx(0.75 * 0.02 + 0.25 * 0.1)
    assert r.crude_rate == pytest.approx(7 / 150)
    same = direct_standardised_rate(k[:2], pt[:2], std[:2])
    assert same[:5] == r[:5] and same.note is None
    # a single cell: the gamma limits of Fay & Feuer for one Poisson count k / pt
    one = direct_standardised_rate([4.0], [200.0], [1.0])
    assert one.ci_lower == pytest.approx(stats.gamma.ppf(0.025, 4) / 200, rel=1e-12)
    assert one.ci_upper == pytest.approx(stats.gamma.ppf(0.975, 5) / 200, rel=1e-12)
    with pytest.raises(ValueError):
        direct_standardised_rate([1.0], [0.0], [1.0])   # events without person-time
    empty = direct_standardised_rate([0.0], [0.0], [1.0])
    assert empty.n_cells == 0 and np.isnan(empty.adjusted_rate)


def differences() -> dict[str, float]:
    out = dict(binomial_differences())
    for case in CASES:
        for quantity, diff in glm_differences(*case).items():
            key = f"{case[1]}.{quantity}"
            out[key] = max(out.get(key, 0.0), diff)
    out.update(standardisation_differences())
    return out


if __name__ == "__main__":
    for quantity, diff in differences().items():
        print(f"  {quantity:40s} {diff:.2e}")
    sys.exit(0)
