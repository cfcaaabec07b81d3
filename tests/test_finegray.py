"""vigil.stats.finegray (SAP A10) against R's cmprsk::crr, and on cases worked out by hand.

The R output is committed: tests/reference/finegray_reference.R (crr univariable per stratum and
the multivariable model) on tests/reference/data/{ordinary, few_events, finegray_ties}.csv wrote
tests/reference/expected/finegray/<dataset>.csv. Agreement: 1e-6 absolute on coef, se, p, loglik
and the CI on the log scale, 1e-6 relative on the subdistribution HR; where R has no coefficient
(reason: no patients, no events, reference level without events, aliased, no model) ours is NaN.
R writes NA as an empty cell (read as null) and its numbers quoted (the schema below makes them floats).
Each model is fitted on the patients and on the patients aggregated to one row per distinct
(time, status, covariates) with its count, as the pipeline fits it at 10^6 patients.

`python tests/test_finegray.py` prints the largest difference per quantity.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vigil.stats import survival as sv
from vigil.stats.finegray import _Data, fine_gray

REFERENCE = Path(__file__).parent / "reference"
DATASETS = ("ordinary", "few_events", "finegray_ties")
ABS = 1e-6
REL = 1e-6
SAP_LEVELS = {
    "sex": ["F", "M", "U"],
    "age_group": ["18-29", "30-39", "40-49", ">=50"],
    "charlson": ["0", "1", ">=2"],
    "prior_dmt": ["0", "1", ">=2"],
    "prior_high_efficacy": ["N", "Y"],
    "edss": ["0-2.5", "3.0-5.5", ">=6.0", "unknown"],
}
# R's output: NA an empty cell (null), doubles quoted, levels such as "0" and "1" text
EXPECTED_SCHEMA = {"model": pl.String, "covariates": pl.String, "variable": pl.String, "level": pl.String,
                   **{c: pl.Float64 for c in ("coef", "se", "shr", "ci_lower", "ci_upper", "p_value", "loglik")},
                   "n": pl.Int64, "converged": pl.Boolean, "reason": pl.String}


# ------------------------------------------------------------------------------------ against R

def _design(data: pl.DataFrame, variables: list[str]):
    """Every non-reference level of the SAP (site: the data's, alphabetical) as a 0/1 column, levels
    without patients included (they are all-zero columns: the estimator finds them aliased)."""
    columns, names, terms = [], [], {}
    for v in variables:
        levels = sorted(data["site"].unique().to_list()) if v == "site" else SAP_LEVELS[v]
        terms[v] = []
        for level in levels[1:]:
            terms[v].append(len(names))
            names.append(f"{v}[{level}]")
            columns.append((data[v] == level).cast(pl.Float64).to_numpy())
    return np.column_stack(columns), names, terms


@cache
def compared(name: str, aggregated: bool = False) -> pl.DataFrame:
    """The R rows with ours alongside (suffix _ours), fitted per patient or on aggregated rows."""
    data = pl.read_csv(REFERENCE / "data" / f"{name}.csv", infer_schema_length=0)   # all text, as R reads it
    expected = pl.read_csv(REFERENCE / "expected" / "finegray" / f"{name}.csv", schema_overrides=EXPECTED_SCHEMA)
    assert expected.columns == list(EXPECTED_SCHEMA)
    out = []
    for (model, covariates), rows in expected.group_by(["model", "covariates"], maintain_order=True):
        variables = covariates.split("+")
        fitted = data.group_by(["t", "status", *variables], maintain_order=True).len("count") if aggregated else data
        X, names, terms = _design(fitted, variables)
        fit = fine_gray(fitted["t"].cast(pl.Float64).to_numpy(), fitted["status"].cast(pl.Int64).to_numpy(), X,
                        names=names, terms=terms, counts=fitted["count"].to_numpy() if aggregated else None)
        index = [names.index(f"{v}[{lv}]") for v, lv in zip(rows["variable"], rows["level"])]
        rows = rows.with_columns(
            *[pl.Series(f"{column}_ours", values[index], dtype=pl.Float64)
              for column, values in (("coef", fit.coef), ("se", fit.se), ("shr", fit.shr), ("ci_lower", fit.ci_lower),
                                     ("ci_upper", fit.ci_upper), ("p_value", fit.p_value))],
            pl.lit(float(fit.loglik), dtype=pl.Float64).alias("loglik_ours"),
            pl.lit(int(fit.n), dtype=pl.Int64).alias("n_ours"),
            pl.lit(bool(fit.converged), dtype=pl.Boolean).alias("converged_ours"),
            pl.lit(fit.note, dtype=pl.String).alias("note_ours"))
        out.append(rows)
    return pl.concat(out)


def _max_diff(frame: pl.DataFrame, column: str, how: str = "abs") -> float:
    # R's NA (null) and our NaN both become NaN here
    r = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    o = frame[f"{column}_ours"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    assert np.array_equal(np.isnan(r), np.isnan(o)), f"{column}: missing in one and not the other"
    ok = ~np.isnan(r)
    if not ok.any():
        return 0.0
    if how == "log":
        return float(np.max(np.abs(np.log(r[ok]) - np.log(o[ok]))))
    diff = np.abs(r[ok] - o[ok])
    return float(np.max(diff / np.abs(r[ok]) if how == "rel" else diff))


def differences(name: str, aggregated: bool = False) -> dict[str, float]:
    frame = compared(name, aggregated)
    return {"coef": _max_diff(frame, "coef"), "se": _max_diff(frame, "se"), "p_value": _max_diff(frame, "p_value"),
            "shr (relative)": _max_diff(frame, "shr", "rel"), "ci_lower (log)": _max_diff(frame, "ci_lower", "log"),
            "ci_upper (log)": _max_diff(frame, "ci_upper", "log"), "loglik": _max_diff(frame, "loglik")}


@pytest.mark.parametrize("aggregated", [False, True], ids=["patients", "aggregated"])
@pytest.mark.parametrize("name", DATASETS)
def test_crr_reference(name, aggregated):
    worst = differences(name, aggregated)
    for quantity, diff in worst.items():
        assert diff <= (REL if "relative" in quantity else ABS), f"{name} {quantity}: {diff:.2e}"
    frame = compared(name, aggregated)
    # eq_missing: a null (R's NA) is unequal to a value, not skipped as by ==
    assert frame["n"].eq_missing(frame["n_ours"]).all()
    fitted = frame.filter(pl.col("converged").is_not_null())
    assert fitted["converged"].eq_missing(fitted["converged_ours"]).all()
    # every coefficient R does not give is NaN here with a reason in the note
    assert frame.filter(pl.col("reason").is_not_null())["note_ours"].is_not_null().all()


def test_reference_covers_the_edge_cases():
    reasons = set()
    for name in DATASETS:
        reasons |= set(compared(name)["reason"].drop_nulls().to_list())
    assert reasons >= {"no patients", "no events", "reference"}


# ------------------------------------------------------------------------------------ crr's Fortran

def _crr_by_loops(time, status, X, b):
    """crrfsv and crrvv of cmprsk's src/crr.f written out as their loops over patients (O(n^3)): minus
    the log-likelihood, its gradient, the information and the middle of the sandwich."""
    order = np.argsort(time, kind="stable")
    t, ic, X = np.asarray(time, float)[order], np.asarray(status)[order], np.asarray(X, float)[order]
    n, p = X.shape
    # censoring KM just before each t (crr: survfit + approx at t * (1 - 100 eps))
    def g_before(u):
        g = 1.0
        for s in np.unique(t[t < u]):
            g *= 1 - np.sum((t == s) & (ic == 0)) / np.sum(t >= s)
        return g
    G = np.array([g_before(u) for u in t])
    w = np.exp(X @ b)

    def risk(s, g_s):   # weights of everyone in the risk set at time s
        return np.array([w[j] if t[j] >= s else (w[j] * g_s / G[j] if ic[j] == 2 else 0.0) for j in range(n)])

    lik, grad, info = 0.0, np.zeros(p), np.zeros((p, p))
    s0, s1 = np.zeros(n), np.zeros((n, p))
    for i in range(n):
        if ic[i] != 1:
            continue
        r = risk(t[i], G[i])
        s0[i], s1[i] = r.sum(), r @ X
        xbar = s1[i] / s0[i]
        lik += -X[i] @ b + np.log(s0[i])
        grad += -X[i] + xbar
        info += (r[:, None] * (X - xbar)).T @ (X - xbar) / s0[i]
    middle = np.zeros((p, p))
    ss2 = np.zeros(p)
    for i in range(n):
        eta = np.zeros(p)
        for j in range(n):
            if ic[j] != 1:
                continue
            if t[j] <= t[i]:
                twt = w[i]
            elif ic[i] == 2:
                twt = w[i] * G[j] / G[i]
            else:
                continue
            eta -= (X[i] - s1[j] / s0[j]) * twt / s0[j]
        if ic[i] == 1:
            eta += X[i] - s1[i] / s0[i]
        at = t == t[i]
        first = i == 0 or t[i] > t[i - 1]
        if first and np.any(at & (ic == 0)):
            q = np.zeros(p)
            for j1 in range(n):
                if ic[j1] != 1 or t[j1] < t[i]:
                    continue
                ss3, ss4 = np.zeros(p), 0.0
                for j2 in range(n):
                    if t[j2] < t[i] and ic[j2] == 2:
                        twt = w[j2] * G[j1] / G[j2]
                        ss4 += twt
                        ss3 += X[j2] * twt
                q += (ss3 - s1[j1] * ss4 / s0[j1]) / s0[j1]
            n_risk = np.sum(t >= t[i])
            ss2 -= q * np.sum(at & (ic == 0)) / n_risk ** 2
        psi = ss2.copy()
        if ic[i] == 0:
            psi += q / np.sum(t >= t[i])
        u = eta + psi
        middle += np.outer(u, u)
    return lik, grad, info, middle


@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_sums_equal_crr_loops(seed):
    rng = np.random.default_rng(seed)
    n = 45
    time = rng.integers(1, 9, n).astype(float)          # ties of every kind on every day
    status = rng.choice([0, 1, 2], n, p=[0.4, 0.35, 0.25])
    X = np.column_stack([rng.integers(0, 2, n), rng.normal(size=n), rng.integers(0, 3, n)])
    b = np.array([0.4, -0.3, 0.2])
    data = _Data(time, status, X, np.ones(n, bool), np.ones(n))
    f, grad, info = data.fsv(b)
    u = data.score_terms(b)
    lik, grad_l, info_l, middle = _crr_by_loops(time, status, X, b)
    assert f == pytest.approx(lik, abs=1e-10)
    np.testing.assert_allclose(grad, grad_l, atol=1e-10)
    np.testing.assert_allclose(info, info_l, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, middle, atol=1e-10)
    assert data.minus_loglik(b) == pytest.approx(lik, abs=1e-10)


# ------------------------------------------------------------------------------------ by hand

def _cox_data(time, status, X):
    n = len(time)
    return sv.CoxData(time=np.asarray(time, float), pattern=np.arange(n), n_events=(status == 1).astype(float),
                      n_leaving=np.ones(n), X=X, names=[f"x{j}" for j in range(X.shape[1])],
                      terms={f"x{j}": [j] for j in range(X.shape[1])})


def _distinct_times(n, seed):
    rng = np.random.default_rng(seed)
    time = rng.permutation(n).astype(float) + 1
    X = np.column_stack([rng.integers(0, 2, n), rng.normal(size=n)]).astype(float)
    return rng, time, X


def test_without_competing_events_it_is_cox_with_robust_variance():
    # no competing event: the risk sets are Cox's, the censoring correction q is 0, and crr's variance
    # is the Lin-Wei robust variance of the Cox model (Breslow = Efron without tied event times)
    rng, time, X = _distinct_times(120, 5)
    status = (rng.random(120) < 0.6).astype(int)
    # crr stops on max|score| max(|b|, 1) < 1e-6 |loglik|, ~1e-7 from the MLE here: iterate on
    fit = fine_gray(time, status, X, names=["a", "b"], gtol=1e-13, maxiter=30)
    cox = sv.cox_fit(_cox_data(time, status, X))
    np.testing.assert_allclose(fit.coef, cox.coef, atol=1e-8)
    assert fit.loglik == pytest.approx(cox.loglik, abs=1e-8)
    from lifelines import CoxPHFitter
    frame = pl.DataFrame({"T": time, "E": status, "a": X[:, 0], "b": X[:, 1]})
    robust = CoxPHFitter().fit(frame.to_pandas(), "T", "E", robust=True)   # lifelines takes a pandas frame
    np.testing.assert_allclose(fit.se, robust.standard_errors_[["a", "b"]].to_numpy(), rtol=1e-5)


def test_without_censoring_competing_patients_stay_in_the_risk_sets():
    # no censoring: G = 1, so a patient with the competing event stays in every later risk set at
    # weight exp(x b): the Cox model with those patients censored after the last time
    rng, time, X = _distinct_times(100, 6)
    status = rng.choice([1, 2], 100, p=[0.6, 0.4])
    fit = fine_gray(time, status, X, names=["a", "b"], gtol=1e-13, maxiter=30)
    moved = np.where(status == 2, time.max() + 1, time)
    cox = sv.cox_fit(_cox_data(moved, (status == 1).astype(int), X))
    np.testing.assert_allclose(fit.coef, cox.coef, atol=1e-8)
    assert fit.loglik == pytest.approx(cox.loglik, abs=1e-8)


def test_one_binary_covariate_by_hand():
    # days 1..5, x = (1, 0, 1, 0, 1), status (1, 2, 0, 1, 0). Censoring KM: 1 of the 3 at risk on
    # day 3 is censored, so G(4-) = 2/3, and G(t-) = 1 before. Event on day 1: everyone at risk,
    # S0 = 3y + 2 with y = e^b. Event on day 4: patients 4 and 5 (x = 0, 1) and the death on day 2
    # (x = 0) at weight G(4-)/G(2-) = 2/3: S0 = y + 5/3.
    # loglik = b - log(3y + 2) - log(y + 5/3); score 1 - 3y/(3y + 2) - y/(y + 5/3) = 0
    # <=> (3y + 2)(y + 5/3) = 3y(y + 5/3) + y(3y + 2) <=> 3y^2 = 10/3 <=> y = sqrt(10)/3
    time = np.array([1.0, 2, 3, 4, 5])
    status = np.array([1, 2, 0, 1, 0])
    x = np.array([[1.0], [0], [1], [0], [1]])
    e_b = np.sqrt(10) / 3
    fit = fine_gray(time, status, x, names=["x"])
    assert fit.converged
    assert fit.coef[0] == pytest.approx(np.log(e_b), abs=1e-8)
    assert fit.loglik == pytest.approx(np.log(e_b) - np.log(3 * e_b + 2) - np.log(e_b + 5 / 3), abs=1e-10)
    # loglik.null: b = 0
    assert fit.loglik_null == pytest.approx(-np.log(5) - np.log(1 + 1 + 2 / 3), abs=1e-12)


# ------------------------------------------------------------------------------------ edge cases

def test_no_events_is_a_note_not_a_crash():
    fit = fine_gray([3.0, 5, 8], [0, 2, 0], np.array([[0.0], [1], [1]]), names=["x"])
    assert np.isnan(fit.coef).all() and np.isnan(fit.se).all() and np.isnan(fit.loglik)
    assert "no events" in fit.note and fit.n == 3 and fit.n_events == 0
    empty = fine_gray(np.zeros(0) + 1, np.zeros(0, int), np.zeros((0, 1)), names=["x"])
    assert np.isnan(empty.coef).all() and "no patients" in empty.note


def test_level_without_events_is_not_estimable_and_the_others_are_the_limit():
    rng, time, X = _distinct_times(200, 7)
    status = rng.choice([0, 1, 2], 200, p=[0.4, 0.4, 0.2])
    level = np.zeros(200)
    level[rng.choice(np.flatnonzero(status != 1), 15, replace=False)] = 1   # a level with no events
    fit = fine_gray(time, status, np.column_stack([X, level]), names=["a", "b", "c"])
    assert np.isnan(fit.coef[2]) and np.isnan(fit.se[2]) and "c: no events in this level" in fit.note
    assert fit.converged and np.isfinite(fit.coef[:2]).all()
    # the limit: c's patients out of the risk sets, as with its coefficient at -40 (exp(-40) = 4e-18)
    data = _Data(time, status, np.column_stack([X, level]), np.ones(200, bool), np.ones(200))
    b = np.concatenate([fit.coef[:2], [-40.0]])
    _, grad, _ = data.fsv(b)
    assert np.abs(grad[:2]).max() < 1e-6 * abs(fit.loglik)
    assert data.minus_loglik(b) == pytest.approx(-fit.loglik, abs=1e-9)


def test_reference_level_without_events_makes_its_variable_not_estimable():
    rng = np.random.default_rng(8)
    n = 150
    group = rng.integers(0, 3, n)              # 0 is the reference
    status = rng.choice([0, 1, 2], n, p=[0.4, 0.4, 0.2])
    status[(group == 0) & (status == 1)] = 0
    other = rng.normal(size=n)
    X = np.column_stack([group == 1, group == 2, other]).astype(float)
    fit = fine_gray(rng.integers(1, 30, n), status, X, names=["g1", "g2", "z"], terms={"g": [0, 1], "z": [2]})
    assert np.isnan(fit.coef[:2]).all() and np.isfinite(fit.coef[2])
    assert "reference level of g" in fit.note


def test_aliased_column_is_dropped_with_a_note():
    rng, time, X = _distinct_times(150, 9)
    status = rng.choice([0, 1, 2], 150, p=[0.4, 0.4, 0.2])
    with_copy = np.column_stack([X, X[:, 0], np.zeros(150)])
    fit = fine_gray(time, status, with_copy, names=["a", "b", "a_again", "nobody"])
    alone = fine_gray(time, status, X, names=["a", "b"])
    np.testing.assert_allclose(fit.coef[:2], alone.coef, atol=1e-12)
    np.testing.assert_allclose(fit.se[:2], alone.se, atol=1e-12)
    assert np.isnan(fit.coef[2:]).all()
    assert "a_again aliased with a" in fit.note and "nobody aliased with the baseline" in fit.note


def test_invalid_input_is_refused():
    with pytest.raises(ValueError, match="status"):
        fine_gray([1.0, 2], [0, 3], np.zeros((2, 1)), names=["x"])
    with pytest.raises(ValueError, match="time"):
        fine_gray([0.0, 2], [1, 0], np.zeros((2, 1)), names=["x"])
    with pytest.raises(ValueError, match="lengths"):
        fine_gray([1.0, 2], [1, 0], np.zeros((2, 1)), names=["x", "y"])
    for counts in ([1, 0], [1, 1.5], [1, np.nan]):
        with pytest.raises(ValueError, match="counts"):
            fine_gray([1.0, 2], [1, 0], np.zeros((2, 1)), names=["x"], counts=counts)


# ------------------------------------------------------------------------------------ aggregated rows

def _aggregate(time, status, X):
    """One row per distinct (time, status, x) with its number of patients (polars group_by, rows in
    order of first appearance, not of time): time, status, X, counts."""
    columns = [f"x{j}" for j in range(X.shape[1])]
    frame = pl.DataFrame({"t": time, "status": status, **dict(zip(columns, X.T))})
    rows = frame.group_by(frame.columns, maintain_order=True).len("count")
    return rows["t"].to_numpy(), rows["status"].to_numpy(), rows.select(columns).to_numpy(), rows["count"].to_numpy()


def _cohort(case: str, n: int = 400, seed: int = 12):
    """Patients on whole days 1..15, so many share (time, status, x) and every kind of tie occurs: a
    3-level g (reference 0) as two dummies and a binary z, with `case`'s peculiarity."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 16, n).astype(float)
    status = rng.choice([0, 1, 2], n, p=[0.5, 0.3, 0.2])
    g = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    z = rng.integers(0, 2, n).astype(float)
    if case == "level without events":
        status[(g == 2) & (status == 1)] = 0
    elif case == "reference without events":
        status[(g == 0) & (status == 1)] = 2
    elif case == "single-patient level":
        g[g == 2] = 1
        g[0], status[0] = 2, 1
    X = np.column_stack([g == 1, g == 2, z] + ([z] if case == "aliased" else [])).astype(float)
    names = ["g1", "g2", "z", "z_again"][:X.shape[1]]
    return time, status, X, names, {"g": [0, 1], "z": [2]}


@pytest.mark.parametrize("case, maxiter", [("ties", 10), ("level without events", 10), ("reference without events", 10),
                                           ("single-patient level", 10), ("single-patient level", 2), ("aliased", 10)])
def test_aggregated_rows_give_the_patients_fit(case, maxiter):
    time, status, X, names, terms = _cohort(case)
    patients = fine_gray(time, status, X, names=names, terms=terms, maxiter=maxiter)
    t, s, x, counts = _aggregate(time, status, X)
    assert len(counts) < len(time) / 2
    rows = fine_gray(t, s, x, names=names, terms=terms, counts=counts, maxiter=maxiter)
    for field in ("coef", "se", "shr", "ci_lower", "ci_upper", "p_value", "var"):
        np.testing.assert_allclose(getattr(rows, field), getattr(patients, field), rtol=1e-11, atol=1e-12,
                                   err_msg=field)
    assert rows.loglik == pytest.approx(patients.loglik, rel=1e-13, abs=1e-12)
    assert rows.loglik_null == pytest.approx(patients.loglik_null, rel=1e-13)
    for field in ("names", "converged", "iterations", "n", "n_events", "n_competing", "note"):
        assert getattr(rows, field) == getattr(patients, field), field
    assert rows.n == len(time)


if __name__ == "__main__":
    for dataset in sys.argv[1:] or DATASETS:
        for aggregated in (False, True):
            print(dataset, "aggregated" if aggregated else "patients",
                  {k: f"{v:.1e}" for k, v in differences(dataset, aggregated).items()})


def test_fewer_distinct_rows_than_columns_leaves_the_extra_columns_aliased():
    # two rows of patients in the risk sets, four dummy columns: at most one column can be estimated
    time = np.array([1.0, 2.0, 3.0])
    status = np.array([1, 1, 0])
    X = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    fit = fine_gray(time, status, X, names=["a", "b", "c", "d"], counts=np.array([3, 2, 1]))
    assert np.isnan(fit.coef).sum() >= 3 and "aliased" in fit.note
