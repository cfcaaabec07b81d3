"""vigil.stats.meta (SAP v1.1 section 8: P1, P2 and likelihood-profile pooling) against R and by hand.

The network's sites are the `site`s of the reference datasets (tests/reference/data/{ordinary,
few_events,edge_cases}.csv); data/network_meta_cases.csv (make_network_datasets.py) holds the corners
of a meta-analysis as (yi, vi). tests/reference/network_reference.R (`make reference`) computes from the
same files, independently: escalc(measure = "IRLN"), rma(method = "EE" / "DL") with vi or sei,
poisson.test, the sites' A5 multivariable coxph fits, the profile log-likelihood of coxph with
offset(b * x) on a grid, and the pooled and per-site profile-likelihood limits found by uniroot on
the exact summed profile (no grid) with the maximum from the site-stratified coxph fit in which the
profiled column is shared. Here the sites' results come from the project's own code (the A5 model of
vigil.analysis.cox for P2, cox_profile for the profiles) and are pooled by vigil.stats.meta.

Tolerances: 1e-6 absolute on everything on the log scale (estimates, SEs, z, p, CI limits, tau2,
Q, I2 in percent, H2, the typical variance, coefficients and profile log-likelihoods); 1e-6 relative on
rates and their CI (per person-year) and person-years. Counts and k exactly; NaN here exactly where R
has NA. The profile limits are interpolated from R's grid (step 0.05): the interpolation error is part
of what is compared.

`python tests/test_meta_analysis.py` prints the largest difference per quantity, and the precision of
profile pooling for coarser grids.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vigil.analysis.cox import cox_model
from vigil.stats import meta
from vigil.stats.survival import CoxData, cox_fit

REFERENCE = Path(__file__).parent / "reference"
EXPECTED = REFERENCE / "expected"
ABS = 1e-6
REL = 1e-6
PER_YEAR = 365.25
MIN_EVENTS = 5                              # SAP 8 P1: the sites of the random-effects model
DATASETS = ("ordinary", "few_events", "edge_cases")
HR_DATASETS = ("ordinary", "edge_cases")
METHODS = {"EE": meta.fixed_effect, "DL": meta.random_effects_dl}
META_VALUES = ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper", "tau2", "q", "q_p_value", "i2", "h2",
               "typical_variance")
# the SAP's A5 multivariable model, levels reference first (as sap_levels.R; codelists/strata.csv)
LEVELS = {
    "age_group": ["18-29", "30-39", "40-49", ">=50"],
    "sex": ["F", "M", "U"],
    "charlson": ["0", "1", ">=2"],
    "prior_dmt": ["0", "1", ">=2"],
    "prior_high_efficacy": ["N", "Y"],
    "edss": ["0-2.5", "3.0-5.5", ">=6.0", "unknown"],
}
MULTIVARIABLE = list(LEVELS)

TEXT = {"dataset", "site", "sites", "method", "case", "variable", "level", "reason", "column"}
INTEGER = {"k", "events", "q_df"}


def read_expected(name: str) -> pl.DataFrame:
    path = EXPECTED / f"network_{name}.csv"
    columns = pl.read_csv(path, n_rows=0).columns
    schema = {c: pl.String if c in TEXT else pl.Int64 if c in INTEGER else pl.Boolean if c == "in_random"
              else pl.Float64 for c in columns}
    return pl.read_csv(path, schema_overrides=schema)


@cache
def patients(name: str) -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "data" / f"{name}.csv", infer_schema_length=0).with_columns(
        pl.col("t", "status").cast(pl.Int64))


@cache
def site_rates(name: str) -> pl.DataFrame:
    """What each site shares for P1: events (status 1) and person-years (sum of t / 365.25)."""
    return (patients(name).group_by("site")
            .agg((pl.col("status") == 1).sum().cast(pl.Int64).alias("events"),
                 (pl.col("t").sum() / PER_YEAR).alias("person_years"))
            .sort("site"))


def _num(value) -> float:
    return np.nan if value is None else float(value)


def meta_differences(ours: meta.MetaAnalysis, expected: dict) -> dict[str, float]:
    """Absolute differences per value; k and q_df exactly."""
    assert ours.method == expected["method"]
    assert ours.k == expected["k"] and ours.q_df == expected["q_df"]
    return {v: abs(getattr(ours, v) - _num(expected[v])) for v in META_VALUES}


def _worst(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: max(r[k] for r in rows) for k in rows[0]} if rows else {}


def assert_close(differences: dict[str, float], tolerance: float = ABS, where="") -> None:
    bad = {k: v for k, v in differences.items() if not v <= tolerance}
    assert not bad, f"{where}: differences above {tolerance}: {bad}"


# ------------------------------------------------------------------------------------ P1

def site_rate_differences(name: str) -> dict[str, float]:
    r = read_expected("site_rates").filter(pl.col("dataset") == name).sort("site")
    ours = site_rates(name)
    assert ours["site"].to_list() == r["site"].to_list()
    assert ours["events"].to_list() == r["events"].to_list()
    with_events = (ours["events"] > 0).to_numpy()
    yi, vi = meta.log_rate_inputs(ours["events"].to_numpy()[with_events], ours["person_years"].to_numpy()[with_events])
    assert np.array_equal(r["yi"].is_null().to_numpy(), ~with_events)   # R: NA without events
    assert r["in_random"].to_list() == (ours["events"] >= MIN_EVENTS).to_list()
    return {"person_years": float(np.max(np.abs(ours["person_years"].to_numpy() / r["person_years"].to_numpy() - 1))),
            "yi": float(np.max(np.abs(yi - r["yi"].to_numpy()[with_events]))),
            "vi": float(np.max(np.abs(vi - r["vi"].to_numpy()[with_events])))}


@pytest.mark.parametrize("name", DATASETS)
def test_site_log_rates_are_escalc_irln(name):
    d = site_rate_differences(name)
    assert d["person_years"] <= REL, d
    assert_close({k: v for k, v in d.items() if k != "person_years"}, where=name)


def rate_fixed_differences(name: str) -> dict[str, float]:
    r = read_expected("rate_fixed").filter(pl.col("dataset") == name).row(0, named=True)
    rates = site_rates(name)
    ours = meta.pooled_rate_fixed(rates["events"], rates["person_years"])
    assert (ours.k, ours.events) == (r["k"], r["events"])
    return {c: abs(getattr(ours, c) / r[c] - 1) for c in ("person_years", "rate", "ci_lower", "ci_upper")}


@pytest.mark.parametrize("name", DATASETS)
def test_pooled_rate_fixed_is_poisson_test_of_the_summed_counts(name):
    assert_close(rate_fixed_differences(name), REL, name)


@pytest.mark.parametrize("name", ["ordinary", "few_events"])   # survival_reference.R's datasets
def test_pooled_rate_fixed_is_the_pooled_analysis_a1_rate(name):
    # survival_reference.R's A1 overall rate of the pooled patients, per 1,000 person-years
    a1 = pl.read_csv(REFERENCE / "expected" / name / "incidence.csv", infer_schema_length=0).filter(
        (pl.col("outcome") == "first_serious") & (pl.col("stratifier") == "overall")).row(0, named=True)
    rates = site_rates(name)
    ours = meta.pooled_rate_fixed(rates["events"], rates["person_years"])
    assert ours.events == float(a1["n_events"])
    for ours_value, r in ((ours.rate, a1["rate_per_1000py"]), (ours.ci_lower, a1["ci_lower"]),
                          (ours.ci_upper, a1["ci_upper"])):
        assert ours_value * 1000 == pytest.approx(float(r), rel=REL)


def rate_meta_differences(name: str, method: str) -> dict[str, float]:
    r = read_expected("rate_meta").filter((pl.col("dataset") == name) & (pl.col("method") == method)).row(0, named=True)
    rates = site_rates(name).filter(pl.col("events") >= MIN_EVENTS)
    assert " ".join(rates["site"]) == r["sites"]
    yi, vi = meta.log_rate_inputs(rates["events"], rates["person_years"])
    return meta_differences(METHODS[method](yi, vi), r)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", DATASETS)
def test_p1_log_rates_pooled_as_rma(name, method):
    assert_close(rate_meta_differences(name, method), where=f"{name} {method}")


def meta_case_differences(case: str, method: str) -> dict[str, float]:
    data = pl.read_csv(REFERENCE / "data" / "network_meta_cases.csv").filter(pl.col("case") == case)
    r = read_expected("meta_cases").filter((pl.col("case") == case) & (pl.col("method") == method)).row(0, named=True)
    return meta_differences(METHODS[method](data["yi"].to_numpy(), data["vi"].to_numpy()), r)


CASES = ("one_site", "two_sites", "equal_estimates", "below_df", "one_dominant", "heterogeneous")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_meta_analysis_corner_cases_as_rma(case, method):
    assert_close(meta_case_differences(case, method), where=f"{case} {method}")


def test_dl_i2_is_tau2_over_tau2_plus_the_typical_within_site_variance():
    data = pl.read_csv(REFERENCE / "data" / "network_meta_cases.csv").filter(pl.col("case") == "heterogeneous")
    r = read_expected("meta_cases").filter((pl.col("case") == "heterogeneous") & (pl.col("method") == "DL")).row(
        0, named=True)
    w = 1 / data["vi"].to_numpy()
    k = len(w)
    typical = (k - 1) * w.sum() / (w.sum() ** 2 - (w * w).sum())
    assert abs(100 * r["tau2"] / (r["tau2"] + typical) - r["i2"]) < 1e-9   # metafor's $I2 is this formula
    fit = meta.random_effects_dl(data["yi"].to_numpy(), data["vi"].to_numpy())
    assert fit.typical_variance == pytest.approx(typical, rel=1e-12)
    assert fit.i2 == pytest.approx(100 * fit.tau2 / (fit.tau2 + typical), rel=1e-12)


# ------------------------------------------------------------------------------------ P2

@cache
def site_hr(name: str) -> pl.DataFrame:
    """Each site's A5 multivariable model as the pipeline fits it (vigil.analysis.cox.cox_model on
    counts per (t, covariates)): coef and se per non-reference SAP level, NaN where not estimable."""
    rows = []
    d = patients(name)
    for site in sorted(d["site"].unique()):
        counts = (d.filter(pl.col("site") == site).group_by(["t", *MULTIVARIABLE])
                  .agg((pl.col("status") == 1).sum().alias("n_events"), pl.len().alias("n_leaving")))
        model = cox_model(counts, MULTIVARIABLE, LEVELS)
        rows += [(site, row.variable, row.level, float(row.coef), float(row.se), row.note)
                 for row in model.rows if row.variable != "GLOBAL"]
    return pl.DataFrame(rows, schema=["site", "variable", "level", "coef", "se", "note"], orient="row")


def site_hr_differences(name: str) -> dict[str, float]:
    r = read_expected("site_hr").filter(pl.col("dataset") == name)
    j = r.join(site_hr(name), on=["site", "variable", "level"], how="inner", suffix="_ours", validate="1:1")
    assert j.height == r.height == site_hr(name).height
    for c in ("coef", "se"):
        ours, theirs = j[f"{c}_ours"].to_numpy(), j[c].fill_null(np.nan).to_numpy()
        assert np.array_equal(np.isnan(ours), np.isnan(theirs)), j.filter(pl.Series(np.isnan(ours) != np.isnan(theirs)))
    missing = j.filter(pl.col("coef").is_null() & pl.col("note").is_null())
    assert missing.height == 0, f"NA in R without a note here: {missing.rows()}"
    ok = j.filter(pl.col("coef").is_not_null())
    return {c: float((ok[f"{c}_ours"] - ok[c]).abs().max()) for c in ("coef", "se")}


@pytest.mark.parametrize("name", HR_DATASETS)
def test_sites_log_hazard_ratios_are_coxph(name):
    assert_close(site_hr_differences(name), where=name)


def hr_meta_differences(name: str, inputs: str) -> dict[str, float]:
    """P2 per level and method: rma(yi = coef, sei = se) over the sites with a coefficient; from R's
    per-site coefficients (inputs = "R": the pooling alone) or from ours (the pipeline's path)."""
    expected = read_expected("hr_meta").filter(pl.col("dataset") == name)
    sites = read_expected("site_hr").filter(pl.col("dataset") == name) if inputs == "R" else site_hr(name)
    sites = sites.filter(pl.col("coef").is_not_null() & pl.col("coef").is_not_nan())
    out = []
    levels = sites.select("variable", "level").unique(maintain_order=True).rows()
    assert len(levels) * 2 == expected.height   # every level some site has, both methods
    for variable, level in levels:
        r = sites.filter((pl.col("variable") == variable) & (pl.col("level") == level)).sort("site")
        for method, pool in METHODS.items():
            e = expected.filter((pl.col("variable") == variable) & (pl.col("level") == level)
                                & (pl.col("method") == method)).row(0, named=True)
            assert " ".join(r["site"]) == e["sites"]
            out.append(meta_differences(pool(r["coef"].to_numpy(), sei=r["se"].to_numpy()), e))
    return _worst(out)


@pytest.mark.parametrize("inputs", ["R", "ours"])
@pytest.mark.parametrize("name", HR_DATASETS)
def test_p2_log_hazard_ratios_pooled_as_rma_with_sei(name, inputs):
    assert_close(hr_meta_differences(name, inputs), where=f"{name} from {inputs}'s site fits")


# ------------------------------------------------------------------------------------ profile pooling

def site_cox_data(d: pl.DataFrame) -> CoxData | None:
    """A site's A5 multivariable design as vigil.analysis.cox builds it: patients of a level without
    events left out, a variable in the model with two or more levels with events, columns the
    non-reference levels with events (named as R's model.matrix: variable + level). None: no model."""
    with_events = {v: [lv for lv in LEVELS[v] if lv in set(d.filter(pl.col("status") == 1)[v])] for v in LEVELS}
    d = d.filter(pl.all_horizontal(pl.col(v).is_in(with_events[v]) for v in LEVELS))
    in_model = [v for v in LEVELS if len(with_events[v]) >= 2]
    if not in_model or d.filter(pl.col("status") == 1).height == 0:
        return None
    counts = (d.group_by(["t", *in_model]).agg((pl.col("status") == 1).sum().alias("n_events"),
                                               pl.len().alias("n_leaving")).sort(["t", *in_model]))
    patterns = counts.select(in_model).unique(maintain_order=True)
    index = counts.select(in_model).join(patterns.with_row_index("_p"), on=in_model, how="left",
                                         maintain_order="left")["_p"].to_numpy().astype(np.int64)
    columns, names, terms = [], [], {}
    for v in in_model:
        terms[v] = []
        for lv in with_events[v][1:]:
            terms[v].append(len(names))
            names.append(f"{v}{lv}")
            columns.append((patterns[v].to_numpy() == lv).astype(float))
    return CoxData(counts["t"].to_numpy(), index, counts["n_events"].to_numpy().astype(float),
                   counts["n_leaving"].to_numpy().astype(float), np.column_stack(columns), names, terms)


PROFILES = [("ordinary", "prior_high_efficacyY"), ("ordinary", "edss>=6.0"), ("edge_cases", "prior_high_efficacyY")]


@cache
def site_profiles(name: str, column: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """R's grid, and per site with a model our profile on it and R's."""
    r = read_expected("profile").filter((pl.col("dataset") == name) & (pl.col("column") == column))
    grid = np.unique(r["b"].to_numpy())
    ours, theirs = {}, {}
    d = patients(name)
    for site in sorted(d["site"].unique()):
        data = site_cox_data(d.filter(pl.col("site") == site))
        if data is None:
            continue
        ours[site] = meta.cox_profile(data, data.names.index(column), grid)
        theirs[site] = r.filter(pl.col("site") == site).sort("b")["loglik"].to_numpy()
    assert sorted(ours) == sorted(r["site"].unique())
    return grid, ours, theirs


@cache
def profile_differences(name: str, column: str) -> dict[str, float]:
    grid, ours, theirs = site_profiles(name, column)
    expected = read_expected("profile_ci").filter((pl.col("dataset") == name) & (pl.col("column") == column))
    out = {"loglik_grid": max(float(np.max(np.abs(ours[s] - theirs[s]))) for s in ours)}
    pooled = [("pooled", list(ours))] + [(s, [s]) for s in ours]
    for label, sites in pooled:
        e = expected.filter(pl.col("site") == label).row(0, named=True)
        result = meta.pool_profiles(grid, [ours[s] for s in sites])
        assert result.k == len(sites) and result.note is None
        for c in ("estimate", "ci_lower", "ci_upper", "loglik"):
            key = f"{c} ({'pooled' if label == 'pooled' else 'one site'})"
            out[key] = max(out.get(key, 0.0), abs(getattr(result, c) - e[c]))
    return out


@pytest.mark.parametrize(("name", "column"), PROFILES)
def test_cox_profile_is_coxph_with_the_coefficient_as_offset(name, column):
    assert_close({"loglik_grid": profile_differences(name, column)["loglik_grid"]}, where=f"{name} {column}")


@pytest.mark.parametrize(("name", "column"), PROFILES)
def test_pooled_cox_profiles_give_r_estimate_and_profile_likelihood_ci(name, column):
    """Summed over the sites: the maximum and limits of R's exact summed profile."""
    d = profile_differences(name, column)
    assert_close({k: v for k, v in d.items() if "(pooled)" in k}, where=f"{name} {column}")


@pytest.mark.parametrize(("name", "column"), PROFILES)
def test_one_site_profile_ci_is_r_profile_likelihood_ci(name, column):
    """One site alone: its estimate (coxph's) and its profile-likelihood CI (uniroot in R)."""
    d = profile_differences(name, column)
    assert_close({k: v for k, v in d.items() if "(one site)" in k}, where=f"{name} {column}")


def test_cox_profile_peaks_at_the_fit_and_matches_its_loglik():
    d = patients("ordinary").filter(pl.col("site") == "SE03")
    data = site_cox_data(d)
    fit = cox_fit(data, zph=False)
    j = data.names.index("edss>=6.0")
    grid = fit.coef[j] + np.array([-0.3, -0.1, 0.0, 0.1, 0.3])
    profile = meta.cox_profile(data, j, grid)
    assert profile[2] == pytest.approx(fit.loglik, abs=1e-9)
    assert np.all(profile[[0, 1, 3, 4]] < fit.loglik)
    # unsorted grid: values in the grid's order
    assert np.allclose(meta.cox_profile(data, j, grid[::-1]), profile[::-1], atol=1e-9, rtol=0)


def test_cox_profile_with_strata_is_the_sum_of_the_strata():
    d = patients("edge_cases").filter(pl.col("site").is_in(["A01", "B02"]))
    grid = np.linspace(-0.5, 1.0, 7)

    def data_of(rows, stratified):
        keys = ["t", "prior_high_efficacy", "site"]
        counts = rows.group_by(keys).agg((pl.col("status") == 1).sum().alias("n_events"),
                                         pl.len().alias("n_leaving")).sort(keys)
        x = (counts["prior_high_efficacy"] == "Y").to_numpy().astype(float)
        return CoxData(counts["t"].to_numpy(), np.arange(counts.height), counts["n_events"].to_numpy().astype(float),
                       counts["n_leaving"].to_numpy().astype(float), x[:, None], ["prior_high_efficacyY"],
                       {"prior_high_efficacy": [0]}, stratum=counts["site"].to_numpy() if stratified else None)

    both = meta.cox_profile(data_of(d, True), 0, grid)
    apart = sum(meta.cox_profile(data_of(d.filter(pl.col("site") == s), False), 0, grid) for s in ("A01", "B02"))
    assert np.allclose(both, apart, atol=1e-9, rtol=0)


def rate_profile_differences(name: str, step: float = 0.01) -> dict[str, float]:
    r = read_expected("rate_profile").filter(pl.col("dataset") == name).row(0, named=True)
    rates = site_rates(name)
    grid = np.arange(-7.0, 0.5, step)
    result = meta.pool_profiles(grid, meta.poisson_profile(rates["events"].to_numpy(), rates["person_years"].to_numpy(),
                                                           grid))
    fixed = meta.pooled_rate_fixed(rates["events"], rates["person_years"])
    return {"estimate vs fixed effect": abs(result.estimate - np.log(fixed.rate)),
            **{c: abs(getattr(result, c) - r[c]) for c in ("estimate", "ci_lower", "ci_upper")}}


@pytest.mark.parametrize("name", DATASETS)
def test_poisson_profiles_pool_to_the_fixed_effect_rate(name):
    """The sum of the sites' Poisson profiles is the pooled count's: its maximum is log(sum(events) /
    sum(person_years)) and its limits R's likelihood-ratio limits of the pooled rate."""
    d = rate_profile_differences(name)
    assert d.pop("estimate vs fixed effect") < 1e-10
    assert_close(d, where=name)


# ------------------------------------------------------------------------------------ by hand

def test_equal_rates_give_no_heterogeneity_and_the_fixed_estimate():
    yi, vi = meta.log_rate_inputs([10, 20, 40], [100.0, 200.0, 400.0])
    dl, ee = meta.random_effects_dl(yi, vi), meta.fixed_effect(yi, vi)
    assert dl.tau2 == 0 and dl.i2 == 0 and dl.h2 == 1 and dl.q == pytest.approx(0, abs=1e-20)
    assert (dl.estimate, dl.se) == pytest.approx((ee.estimate, ee.se), abs=1e-15)
    assert dl.estimate == pytest.approx(np.log(0.1), abs=1e-15)
    assert dl.se == pytest.approx(1 / np.sqrt(70), abs=1e-15)   # vi = 1 / events: 1 / sqrt(sum(events))
    assert ee.i2 == 0


def test_fixed_and_dl_by_hand():
    # yi 0 and 2, vi 1: Q = 2, tau2 = (2 - 1) / (2 - 2/2) = 1, s2 = 1 * 2 / (4 - 2) = 1
    ee = meta.fixed_effect([0.0, 2.0], [1.0, 1.0])
    assert (ee.estimate, ee.se, ee.q, ee.i2, ee.h2) == pytest.approx((1, np.sqrt(0.5), 2, 50, 2))
    dl = meta.random_effects_dl([0.0, 2.0], sei=[1.0, 1.0])
    assert (dl.estimate, dl.se, dl.tau2, dl.typical_variance, dl.i2, dl.h2) == pytest.approx((1, 1, 1, 1, 50, 2))
    assert (dl.ci_lower, dl.ci_upper) == pytest.approx((1 - meta.Z95, 1 + meta.Z95))


def test_one_site_is_its_own_estimate_with_tau2_zero():
    for pool in METHODS.values():
        one = pool([0.4], [0.09])
        assert (one.k, one.estimate, one.se, one.tau2, one.q, one.q_df, one.q_p_value, one.i2, one.h2) == (
            1, 0.4, pytest.approx(0.3), 0.0, 0.0, 0, 1.0, 0.0, 1.0)


def test_back_transform_gives_rates_per_1000_person_years():
    yi, vi = meta.log_rate_inputs([50], [1000.0])
    rate, lower, upper = meta.back_transform(meta.fixed_effect(yi, vi), per=1000)
    assert rate == pytest.approx(50)
    assert (lower, upper) == pytest.approx((50 * np.exp(-meta.Z95 / np.sqrt(50)), 50 * np.exp(meta.Z95 / np.sqrt(50))))


def test_quadratic_profiles_pool_exactly_to_the_fixed_effect():
    """Quadratic log-likelihoods (normal estimates) pool to the inverse-variance fixed effect and its
    Wald CI, whatever the grid step: the spline reproduces a quadratic."""
    estimates, ses = np.array([0.2, 0.5, -0.1]), np.array([0.3, 0.2, 0.5])
    grid = np.linspace(-2, 2, 9)   # step 0.5
    rows = -((grid[None, :] - estimates[:, None]) / ses[:, None]) ** 2 / 2 + np.array([[3.0], [-7.0], [0.0]])
    pooled = meta.pool_profiles(grid, rows)
    ee = meta.fixed_effect(estimates, sei=ses)
    half = np.sqrt(2 * meta.HALF_CHISQ95) * ee.se      # sqrt(qchisq(0.95, 1)) = qnorm(0.975)
    assert (pooled.estimate, pooled.ci_lower, pooled.ci_upper) == pytest.approx(
        (ee.estimate, ee.estimate - half, ee.estimate + half), abs=1e-12)
    assert half == pytest.approx(meta.Z95 * ee.se, rel=1e-12)


def test_profile_limits_beyond_the_grid_are_nan_with_a_note():
    grid = np.linspace(-0.5, 0.5, 11)
    wide = -(grid / 0.5) ** 2 / 2            # SE 0.5: limits at -+0.98, outside
    result = meta.pool_profiles(grid, wide)
    assert result.estimate == pytest.approx(0, abs=1e-12)
    assert np.isnan(result.ci_lower) and np.isnan(result.ci_upper)
    assert "lower side" in result.note and "upper side" in result.note
    edge = meta.pool_profiles(grid, -((grid - 1) / 0.1) ** 2 / 2)   # maximum at 1, beyond the grid
    assert np.isnan([edge.estimate, edge.ci_lower, edge.ci_upper]).all()
    assert "end of the grid" in edge.note


# ------------------------------------------------------------------------------------ refusals

def test_a_site_without_events_has_no_log_rate():
    with pytest.raises(ValueError, match="0 events"):
        meta.log_rate_inputs([12, 0, 7], [100.0, 50.0, 80.0])


def test_nothing_to_pool_is_refused():
    for call in (lambda: meta.fixed_effect([], []), lambda: meta.random_effects_dl([], sei=[]),
                 lambda: meta.pooled_rate_fixed([], []), lambda: meta.pool_profiles(np.arange(6.0), np.empty((0, 6)))):
        with pytest.raises(ValueError, match="fewer than 1 site"):
            call()


def test_profiles_off_the_grid_are_refused():
    grid = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    curve = [0.0, 1.0, 2.0, 1.0, 0.0, -1.0]
    with pytest.raises(ValueError, match="one value per grid point"):
        meta.pool_profiles(grid, [curve, curve[:5]])
    with pytest.raises(ValueError, match="one value per grid point"):
        meta.pool_profiles(grid, [[*curve, -2.0]])
    with pytest.raises(ValueError, match="at least 6 points"):
        meta.pool_profiles(grid[:5], [curve[:5]])
    with pytest.raises(ValueError, match="strictly increasing"):
        meta.pool_profiles([0.0, 0.2, 0.1, 0.3, 0.4, 0.5], [curve])
    with pytest.raises(ValueError, match="not finite"):
        meta.pool_profiles(grid, [[0.0, 1.0, np.nan, 1.0, 0.0, -1.0]])


def test_bad_meta_inputs_are_refused():
    with pytest.raises(ValueError, match="one of them"):
        meta.fixed_effect([0.1], [0.01], sei=[0.1])
    with pytest.raises(ValueError, match="one of them"):
        meta.random_effects_dl([0.1])
    with pytest.raises(ValueError, match="> 0"):
        meta.random_effects_dl([0.1, 0.2], [0.01, 0.0])
    with pytest.raises(ValueError, match="one value per site"):
        meta.fixed_effect([0.1, 0.2], [0.01])
    with pytest.raises(ValueError, match="finite"):
        meta.fixed_effect([0.1, np.nan], [0.01, 0.02])


def test_cox_profile_refuses_a_column_it_cannot_profile():
    data = site_cox_data(patients("edge_cases").filter(pl.col("site") == "C03"))
    with pytest.raises(ValueError, match="not one of the model's"):
        meta.cox_profile(data, len(data.names), [0.0])
    aliased = CoxData(data.time, data.pattern, data.n_events, data.n_leaving, np.column_stack([data.X, data.X[:, 0]]),
                      [*data.names, "copy"], {**data.terms, "copy": [len(data.names)]})
    with pytest.raises(ValueError, match="aliased"):
        meta.cox_profile(aliased, 0, [0.0])


# ------------------------------------------------------------------------------------ report

def grid_precision() -> dict[float, float]:
    """Largest difference from R's exact profile limits and maxima, pooled and per site, for coarser
    grids (every k-th point of R's step-0.05 grid)."""
    out = {}
    for every in (1, 2, 4, 8):
        worst = 0.0
        for name, column in PROFILES:
            grid, ours, _ = site_profiles(name, column)
            expected = read_expected("profile_ci").filter((pl.col("dataset") == name) & (pl.col("column") == column))
            for label, sites in [("pooled", list(ours))] + [(s, [s]) for s in ours]:
                e = expected.filter(pl.col("site") == label).row(0, named=True)
                result = meta.pool_profiles(grid[::every], [ours[s][::every] for s in sites])
                worst = max(worst, *(abs(getattr(result, c) - e[c]) for c in ("estimate", "ci_lower", "ci_upper")))
        out[round(0.05 * every, 2)] = worst
    return out


if __name__ == "__main__":
    rows = {
        "P1 site inputs": _worst([site_rate_differences(n) for n in DATASETS]),
        "P1 fixed (relative)": _worst([rate_fixed_differences(n) for n in DATASETS]),
        "P1 rma": _worst([rate_meta_differences(n, m) for n in DATASETS for m in METHODS]),
        "meta cases": _worst([meta_case_differences(c, m) for c in CASES for m in METHODS]),
        "P2 site fits": _worst([site_hr_differences(n) for n in HR_DATASETS]),
        "P2 rma (R's inputs)": _worst([hr_meta_differences(n, "R") for n in HR_DATASETS]),
        "P2 rma (our inputs)": _worst([hr_meta_differences(n, "ours") for n in HR_DATASETS]),
        "Cox profiles": _worst([profile_differences(n, c) for n, c in PROFILES]),
        "Poisson profiles": _worst([rate_profile_differences(n) for n in DATASETS]),
    }
    for label, diffs in rows.items():
        print(label)
        for k, v in diffs.items():
            print(f"  {k:32s} {v:.2e}")
    print("profile pooling, largest difference from R's exact limits by grid step:")
    for step, worst in grid_precision().items():
        print(f"  step {step:4.2f}: {worst:.2e}")
    sys.exit(0)
