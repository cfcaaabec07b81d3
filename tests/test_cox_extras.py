"""Cox-model extras of vigil.stats.survival: strata, log-likelihoods, AIC, concordance and per-term
tests, against R and by hand.

The R reference is tests/reference/cox_extras_reference.R (`make reference`): coxph(ties = "efron")
with and without strata(site) on ordinary.csv, stratified.csv (a site of one patient, ties on most
days, a covariate constant within site) and aliased.csv. Every number is compared with R at 1e-6
absolute (log-likelihoods of about -5000 agree to ~1e-11; counts of pairs exactly) except the Wald
chi-square, at 1e-6 relative: coxph stops Newton-Raphson when the log-likelihood changes by less than
1e-9 relative, which leaves up to ~4e-8 in its coefficients, and b' V^-1 b (about 60 here) carries
that as ~5e-6 (with coxph.control(eps = 1e-13) R's statistic agrees with ours to 1e-12). NA in R
must be NaN here. The estimator gets counts per (time, covariate pattern, site) as the project makes them.

`python tests/test_cox_extras.py` prints the largest difference per quantity.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import polars as pl
import pytest
from analysis_data import REFERENCE, SAP_LEVELS

from vigil.stats import survival as sv

EXPECTED = REFERENCE / "expected" / "cox_extras"
ABS = 1e-6


def _read(table: str) -> list[dict]:
    return pl.read_csv(EXPECTED / f"{table}.csv", infer_schema_length=0).rows(named=True)


def _num(value) -> float:
    return np.nan if value is None else float(value)


def cox_data(d: pl.DataFrame, variables: list[str], strata: str | None) -> sv.CoxData:
    """Counts per (t, variables[, strata]); columns treatment-coded, named as R names them
    (variable + level), reference = the SAP's first level (other variables: the first sorted)."""
    keys = ["t", *variables, *([strata] if strata else [])]
    counts = (d.group_by(keys).agg((pl.col("status") == 1).sum().alias("n_events"), pl.len().alias("n_leaving"))
              .sort(keys))
    patterns = counts.select(variables).unique(maintain_order=True)
    index = counts.select(variables).join(patterns.with_row_index("_p"), on=variables, how="left",
                                          maintain_order="left")["_p"].to_numpy().astype(np.int64)
    columns, names, terms = [], [], {}
    for v in variables:
        present = set(d[v])
        levels = [lv for lv in SAP_LEVELS.get(v, sorted(present)) if lv in present]
        terms[v] = []
        for lv in levels[1:]:
            terms[v].append(len(names))
            names.append(f"{v}{lv}")
            columns.append((patterns[v].to_numpy() == lv).astype(float))
    return sv.CoxData(counts["t"].to_numpy(), index, counts["n_events"].to_numpy().astype(float),
                      counts["n_leaving"].to_numpy().astype(float), np.column_stack(columns), names, terms,
                      stratum=counts[strata].to_numpy() if strata else None)


@cache
def dataset(name: str) -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "data" / f"{name}.csv", infer_schema_length=0).with_columns(
        pl.col("t", "status").cast(pl.Int64))


MODELS = _read("models")


@cache
def fitted(name: str, model: str):
    spec = next(m for m in MODELS if (m["dataset"], m["model"]) == (name, model))
    data = cox_data(dataset(name), spec["variables"].split(), spec["strata"])
    fit = sv.cox_fit(data)
    return data, fit, sv.cox_concordance(data, fit.coef), sv.cox_term_tests(data, fit)


def differences(name: str, model: str) -> dict[str, float]:
    """The largest difference from R per quantity (relative for the Wald chi-square), for one
    model. NaN must meet NA."""
    data, fit, concordance, terms = fitted(name, model)
    out: dict[str, list[float]] = {}

    def compare(quantity, ours, theirs):
        ours, theirs = float(ours), _num(theirs)
        assert np.isnan(ours) == np.isnan(theirs), f"{model} {quantity}: NaN in one and not the other"
        scale = abs(theirs) if quantity == "wald_chisq" else 1.0
        out.setdefault(quantity, []).append(0.0 if np.isnan(ours) else abs(ours - theirs) / scale)

    r = next(m for m in MODELS if (m["dataset"], m["model"]) == (name, model))
    assert (fit.n_patients, fit.n_events) == (int(r["n"]), int(r["n_events"]))
    for quantity, ours in [("loglik_null", fit.loglik_null), ("loglik", fit.loglik), ("aic", fit.aic),
                           ("concordant", concordance.concordant), ("discordant", concordance.discordant),
                           ("tied_x", concordance.tied_x), ("tied_y", concordance.tied_y),
                           ("tied_xy", concordance.tied_xy), ("concordance", concordance.concordance),
                           ("concordance_se", concordance.std_err)]:
        compare(quantity, ours, r[quantity])
    coef = {c["name"]: c for c in _read("coef") if (c["dataset"], c["model"]) == (name, model)}
    assert list(coef) == fit.names
    for i, column in enumerate(fit.names):
        compare("coef", fit.coef[i], coef[column]["coef"])
        compare("se", fit.se[i], coef[column]["se"])
    rows = [t for t in _read("terms") if (t["dataset"], t["model"]) == (name, model)]
    assert [t["term"] for t in rows] == list(terms)
    for t in rows:
        ours = terms[t["term"]]
        assert (ours.wald_df, ours.lr_df) == (int(t["wald_df"]), int(t["lr_df"])), t["term"]
        for quantity in ("wald_chisq", "wald_p", "lr_chisq", "lr_p"):
            compare(quantity, getattr(ours, quantity), t[quantity])
    zph = [z for z in _read("zph") if (z["dataset"], z["model"]) == (name, model)]
    assert [z["term"] for z in zph] == list(fit.zph)
    for z in zph:
        chisq, df, p = fit.zph[z["term"]]
        assert df == int(z["df"])
        compare("zph_chisq", chisq, z["chisq"])
        compare("zph_p", p, z["p"])
    return {quantity: max(values) for quantity, values in out.items()}


@pytest.mark.parametrize("name, model", [(m["dataset"], m["model"]) for m in MODELS])
def test_agrees_with_r(name, model):
    worst = differences(name, model)
    assert worst and all(v <= ABS for v in worst.values()), {k: v for k, v in worst.items() if v > ABS}


def test_aliased_terms_are_reported_as_r_does():
    # region is constant within site: under strata(site) it is aliased, its Wald test has no
    # coefficient and drop1 gives Df 0 with no p (R: LRT 0, Pr NA)
    _, fit, _, terms = fitted("stratified", "region+strata")
    assert np.isnan(fit.coef[fit.names.index("regionS")]) and "regionS aliased" in fit.note
    region = terms["region"]
    assert np.isnan(region.wald_chisq) and region.wald_df == 0 and "aliased" in region.note
    assert region.lr_df == 0 and abs(region.lr_chisq) < 1e-8 and np.isnan(region.lr_p)
    assert fit.aic == pytest.approx(-2 * fit.loglik + 2 * 3, abs=1e-9)   # sexM and two charlson levels


# ------------------------------------------------------------------------------------ by hand

def _four_patients(beta: float) -> sv.CoxData:
    # (t, status, x): (1, event, 3), (2, event, 1), (2, event, 2), (2, censored, 2); the last two
    # share a (time, pattern) row
    return sv.CoxData(time=np.array([1, 2, 2]), pattern=np.array([0, 1, 2]), n_events=np.array([1.0, 1, 1]),
                      n_leaving=np.array([1.0, 1, 2]), X=np.array([[3.0], [1.0], [2.0]]), names=["x"],
                      terms={"x": [0]})


def test_concordance_four_patients_by_hand():
    # Comparable pairs (the earlier event first; censored at the event's time counts as later):
    # the event at 1 (x 3) with the three others, all of smaller x: 3 concordant; the event at 2 of
    # x 1 with the censored (x 2): discordant; the event at 2 of x 2 with the censored (x 2): tied
    # on x. The two events at 2 are tied on y (x differ: not tied_xy). C = (3 + 1/2) / 5 = 0.7.
    # Influence on Somers' d = (C - D)/5 - (0.4/5)(C + D + T) per patient, with (C, D, T) = (3, 0, 0),
    # (1, 1, 0), (1, 0, 1), (1, 1, 1): 0.36, -0.16, 0.04, -0.24; var C = (sum of squares)/4 = 0.0536
    # (R's concordancefit agrees).
    c = sv.cox_concordance(_four_patients(1.0), np.array([1.0]))
    assert (c.concordant, c.discordant, c.tied_x, c.tied_y, c.tied_xy) == (3, 1, 1, 1, 0)
    assert c.concordance == pytest.approx(0.7, abs=1e-15)
    assert c.std_err == pytest.approx(math.sqrt(0.0536), abs=1e-15)
    flipped = sv.cox_concordance(_four_patients(1.0), np.array([-1.0]))
    assert (flipped.concordant, flipped.discordant, flipped.tied_x) == (1, 3, 1)
    assert flipped.concordance == pytest.approx(0.3, abs=1e-15) and flipped.std_err == pytest.approx(c.std_err)


def _pairs_one_by_one(t, status, lp, stratum):
    """concordancefit(reverse = TRUE) by enumerating the pairs of patients: counts, C and std."""
    same = stratum[:, None] == stratum[None, :]
    later = (t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & (status[None, :] == 0))
    earlier = (status[:, None] == 1) & later      # row patient has the event before the column one
    comparable = same & earlier
    conc = comparable & (lp[:, None] > lp[None, :])
    disc = comparable & (lp[:, None] < lp[None, :])
    tied = comparable & (lp[:, None] == lp[None, :])
    both = same & (status[:, None] == 1) & (status[None, :] == 1) & (t[:, None] == t[None, :])
    np.fill_diagonal(both, False)
    tied_xy = (both & (lp[:, None] == lp[None, :])).sum() / 2
    counts = [conc.sum(), disc.sum(), tied.sum(), both.sum() / 2 - tied_xy, tied_xy]
    pairs = counts[0] + counts[1] + counts[2]
    somers_d = (counts[0] - counts[1]) / pairs

    def per_patient(m):
        return m.sum(1) + m.sum(0)

    influence = ((per_patient(conc) - per_patient(disc)) / pairs
                 - somers_d / pairs * (per_patient(conc) + per_patient(disc) + per_patient(tied)))
    return counts, (somers_d + 1) / 2, np.sqrt((influence ** 2).sum()) / 2


def test_concordance_equals_the_pairs_counted_one_by_one():
    # 300 patients in 3 strata, 12 days, two binary covariates: ties on time, on x and on both
    rng = np.random.default_rng(11)
    n = 300
    t = rng.integers(1, 13, n)
    status = (rng.random(n) < 0.5).astype(int)
    stratum = rng.integers(0, 3, n)
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pattern = rng.integers(0, 4, n)
    beta = np.array([0.7, -0.3])
    keys, row = np.unique(np.column_stack([t, pattern, stratum]), axis=0, return_inverse=True)
    data = sv.CoxData(time=keys[:, 0], pattern=keys[:, 1], n_events=np.bincount(row, weights=status),
                      n_leaving=np.bincount(row).astype(float), X=X, names=["a", "b"], terms={"a": [0], "b": [1]},
                      stratum=keys[:, 2])
    c = sv.cox_concordance(data, beta)
    counts, concordance, std_err = _pairs_one_by_one(t, status, X[pattern] @ beta, stratum)
    assert [c.concordant, c.discordant, c.tied_x, c.tied_y, c.tied_xy] == counts
    assert c.concordance == pytest.approx(concordance, abs=1e-14)
    assert c.std_err == pytest.approx(std_err, abs=1e-14)


def test_stratified_likelihood_is_the_sum_over_strata():
    # what a distributed Cox model sums across sites: each site's own Efron log-likelihood, score and
    # information (each site a stratum) add up to the stratified model's. The one-patient site E05
    # (its patient has the event, alone at risk) contributes nothing.
    data = cox_data(dataset("stratified"), ["sex", "age_group", "charlson"], "site")
    beta = np.linspace(-0.4, 0.6, len(data.names))
    total = sv.cox_score_information(data, beta)
    parts = {}
    for site in np.unique(data.stratum):
        rows = data.stratum == site
        parts[site] = sv.cox_score_information(
            sv.CoxData(data.time[rows], data.pattern[rows], data.n_events[rows], data.n_leaving[rows], data.X,
                       data.names, data.terms), beta)
    assert sum(p[0] for p in parts.values()) == pytest.approx(total[0], abs=1e-9)
    np.testing.assert_allclose(sum(p[1] for p in parts.values()), total[1], atol=1e-9)
    np.testing.assert_allclose(sum(p[2] for p in parts.values()), total[2], atol=1e-9)
    loglik, score, info = parts["E05"]
    assert loglik == 0 and not score.any() and not info.any()


def test_stratified_fit_equals_lifelines():
    # lifelines' CoxPHFitter(strata=...) on the patient-equivalent rows of lifelines_cox
    data = cox_data(dataset("stratified"), ["sex", "age_group", "charlson"], "site")
    fit = sv.cox_fit(data)
    coef, se = sv.lifelines_cox(data)
    np.testing.assert_allclose(coef, fit.coef, atol=1e-9)
    np.testing.assert_allclose(se, fit.se, rtol=1e-9)


def test_single_term_is_tested_against_the_null_model():
    data, fit, _, terms = fitted("stratified", "univariable+strata")
    charlson = terms["charlson"]
    assert charlson.lr_chisq == pytest.approx(2 * (fit.loglik - fit.loglik_null), abs=1e-12)
    assert charlson.lr_df == charlson.wald_df == 2
    b, v = fit.coef, fit.cov
    assert charlson.wald_chisq == pytest.approx(b @ np.linalg.solve(v, b), abs=1e-12)


if __name__ == "__main__":
    worst: dict[str, float] = {}
    for m in MODELS:
        for quantity, value in differences(m["dataset"], m["model"]).items():
            worst[quantity] = max(worst.get(quantity, 0.0), value)
    for quantity, value in worst.items():
        print(f"{quantity:16s} {value:.2e}")
