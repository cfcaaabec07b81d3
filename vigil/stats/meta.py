"""Estimators of SAP v1.1 section 8 (the multi-site network): pooling what the sites share.

Plain functions over numpy arrays of per-site aggregates (never patient rows), no SQL, no I/O. Each
returns NaN where a value is undefined. The methods, what was compared with R and the largest
differences are in docs/network-methods.md; tests/test_meta_analysis.py compares every quantity with
the committed output of tests/reference/network_reference.R at 1e-6.

  pooled_rate_fixed   P1 fixed effect: sum(events) / sum(person_years) with the exact (Garwood) Poisson
                      CI of the pooled counts = poisson.test(sum(events), sum(person_years))$conf.int,
                      the same number as the pooled analysis' A1 rate (vigil.stats.survival.poisson_ci)
  log_rate_inputs     the sites' log rates and their variances = metafor::escalc(measure = "IRLN",
                      xi = events, ti = person_years): yi = log(events / PY), vi = 1 / events
  fixed_effect        inverse-variance fixed effect = metafor::rma(yi, vi, method = "EE") (older "FE");
                      with sei = se instead of vi, rma(yi, sei = se, method = "EE") (P2)
  random_effects_dl   DerSimonian-Laird random effects = metafor::rma(yi, vi, method = "DL") (P1, P2)
  back_transform      exp of a pooled log estimate and its CI, times `per` (a rate per 1,000 person-years:
                      per = 1000; a hazard ratio: per = 1)
  poisson_profile     a site's log-likelihood of its log rate theta on a grid: events * theta -
                      person_years * exp(theta) (exact, up to a constant)
  cox_profile         a site's profile partial log-likelihood (Efron, strata allowed) of one Cox
                      coefficient on a grid, the other coefficients re-maximised = the loglik of
                      coxph(Surv(t, status) ~ others + offset(b * x), ties = "efron") at each b
  pool_profiles       likelihood-profile pooling (Schuemie et al. 2022, OHDSI EvidenceSynthesis): the sum
                      of the sites' curves on a common grid, its maximum and where it falls
                      qchisq(0.95, 1) / 2 below it, by a quintic interpolating spline through the grid

Study policy (which sites enter which pooled estimate, disclosure control, what is written when a
site's count is suppressed) belongs to the caller, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import interpolate, optimize, stats

from vigil.stats.survival import CoxData, _efron_totals, _EfronTables, cox_fit, poisson_ci

Z95 = float(stats.norm.ppf(0.975))
HALF_CHISQ95 = float(stats.chi2.ppf(0.95, 1) / 2)   # 1.9207...: the profile-likelihood 95% limits


# ------------------------------------------------------------------------------------ P1 fixed

@dataclass(frozen=True)
class PooledRate:
    """P1 fixed effect over k sites; rate and CI per person-year (x 1000 for the SAP's unit)."""
    k: int
    events: float
    person_years: float
    rate: float
    ci_lower: float
    ci_upper: float


def pooled_rate_fixed(events, person_years, level: float = 0.95) -> PooledRate:
    """sum(events) / sum(person_years) with the exact Poisson CI of the summed counts: the A1 rate of
    the pooled patients, whatever the sites' sizes (a site without events counts). Whether it may be
    written (SAP 8: only where no site's count is suppressed) is the caller's decision."""
    e, py = _site_arrays(events, person_years)
    if np.any(py <= 0):
        raise ValueError("every site needs person-years > 0")
    total_e, total_py = float(e.sum()), float(py.sum())
    lower, upper = poisson_ci(total_e, total_py, level)
    return PooledRate(len(e), total_e, total_py, total_e / total_py, float(lower), float(upper))


def log_rate_inputs(events, person_years) -> tuple[np.ndarray, np.ndarray]:
    """yi = log(events / person_years) (log rate per person-year), vi = 1 / events, as
    metafor::escalc(measure = "IRLN"). A site without events has no log rate: refused (escalc would
    add 1/2 to it; the SAP pools only sites with >= 5 events, which the caller selects)."""
    e, py = _site_arrays(events, person_years)
    if np.any(e == 0):
        raise ValueError("a site with 0 events has no log rate (SAP 8 P1 pools the sites with >= 5 events): "
                         "leave it out before pooling")
    if np.any(py <= 0):
        raise ValueError("every site needs person-years > 0")
    return np.log(e / py), 1 / e


def _site_arrays(events, person_years) -> tuple[np.ndarray, np.ndarray]:
    e = np.atleast_1d(np.asarray(events, dtype=float))
    py = np.atleast_1d(np.asarray(person_years, dtype=float))
    if e.ndim != 1 or e.shape != py.shape:
        raise ValueError("events and person_years need one value per site")
    if len(e) < 1:
        raise ValueError("fewer than 1 site: nothing to pool")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(py))) or np.any(e < 0):
        raise ValueError("events must be finite and >= 0, person-years finite")
    return e, py


# ------------------------------------------------------------------------------------ P1, P2 meta-analysis

@dataclass(frozen=True)
class MetaAnalysis:
    """One metafor::rma fit, intercept only, z test (rma's defaults). On the scale of yi (log rate, log
    HR): back_transform gives the rate or the ratio.

    q, q_df, q_p_value: Cochran's Q on the fixed-effect weights (fit$QE, k - 1, fit$QEp); i2, h2 as
    metafor reports them for the method (fit$I2 in percent, fit$H2); typical_variance: metafor's fit$vt,
    the "typical" within-site variance (k - 1) sum(w) / (sum(w)^2 - sum(w^2)), w = 1 / vi, of the DL
    I2. tau2 is 0 for EE (the model's assumption, as fit$tau2). With k = 1 metafor sets tau2 = 0,
    Q = 0, Q p = 1, I2 = 0, H2 = 1, typical_variance = 0; so does this."""
    method: str
    k: int
    estimate: float
    se: float
    z: float
    p_value: float
    ci_lower: float
    ci_upper: float
    tau2: float
    q: float
    q_df: int
    q_p_value: float
    i2: float
    h2: float
    typical_variance: float


def fixed_effect(yi, vi=None, *, sei=None, level: float = 0.95) -> MetaAnalysis:
    """Inverse-variance fixed effect = metafor::rma(yi, vi, method = "EE") (or sei = se: rma(yi, sei =
    se)): estimate sum(w y) / sum(w), w = 1 / vi, se = 1 / sqrt(sum(w)), Wald z CI; I2 =
    max(0, 100 (Q - (k - 1)) / Q) and H2 = Q / (k - 1), as metafor for EE (I2 = 0 when Q = 0)."""
    y, v = _meta_inputs(yi, vi, sei)
    k = len(y)
    q, q_p, typical = _heterogeneity(y, v)
    if k == 1:
        i2, h2 = 0.0, 1.0
    else:
        i2 = max(0.0, 100 * (q - (k - 1)) / q) if q > 0 else 0.0   # R: max(0, -Inf) = 0
        h2 = q / (k - 1)
    return _pooled("EE", y, v, 0.0, q, q_p, i2, h2, typical, level)


def random_effects_dl(yi, vi=None, *, sei=None, level: float = 0.95) -> MetaAnalysis:
    """DerSimonian-Laird random effects = metafor::rma(yi, vi, method = "DL"):
    tau2 = max(0, (Q - (k - 1)) / (sum(w) - sum(w^2) / sum(w))), weights 1 / (vi + tau2), Wald z CI;
    I2 = 100 tau2 / (tau2 + s2) and H2 = tau2 / s2 + 1 with s2 = typical_variance (metafor's I2 of a
    random-effects model, not the Q-based one of EE: they agree only while tau2 > 0).
    k = 1: tau2 = 0 and the fixed effect, as metafor (which fits it as its method "k1")."""
    y, v = _meta_inputs(yi, vi, sei)
    k = len(y)
    q, q_p, typical = _heterogeneity(y, v)
    if k == 1:
        tau2, i2, h2 = 0.0, 0.0, 1.0
    else:
        w = 1 / v
        tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w * w).sum() / w.sum()))
        i2 = 100 * tau2 / (typical + tau2)
        h2 = tau2 / typical + 1
    return _pooled("DL", y, v, tau2, q, q_p, i2, h2, typical, level)


def back_transform(result: MetaAnalysis, per: float = 1.0) -> tuple[float, float, float]:
    """(estimate, ci_lower, ci_upper) of a pooled log rate or log hazard ratio on its own scale:
    exp(.) * per. Rates from log_rate_inputs are per person-year: per = 1000 gives the SAP's rate per
    1,000 person-years."""
    return (float(np.exp(result.estimate) * per), float(np.exp(result.ci_lower) * per),
            float(np.exp(result.ci_upper) * per))


def _meta_inputs(yi, vi, sei) -> tuple[np.ndarray, np.ndarray]:
    if (vi is None) == (sei is None):
        raise ValueError("give the sampling variances vi or the standard errors sei (one of them)")
    y = np.atleast_1d(np.asarray(yi, dtype=float))
    v = np.atleast_1d(np.asarray(vi, dtype=float)) if sei is None else np.atleast_1d(np.asarray(sei, dtype=float)) ** 2
    if y.ndim != 1 or y.shape != v.shape:
        raise ValueError("yi and vi (or sei) need one value per site")
    if len(y) < 1:
        raise ValueError("fewer than 1 site: nothing to pool")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v))):
        raise ValueError("yi and vi (or sei) must be finite: a site without an estimate is left out by the caller")
    # metafor's DL stops on vi <= 0; a site with no sampling variance is no estimate
    if np.any(v <= 0):
        raise ValueError("every site needs a sampling variance > 0")
    return y, v


def _heterogeneity(y: np.ndarray, v: np.ndarray) -> tuple[float, float, float]:
    """Cochran's Q on the fixed-effect weights, its p (chi-square, k - 1 df) and metafor's typical
    within-site variance; k = 1: 0, 1 and 0, as metafor."""
    k = len(y)
    if k == 1:
        return 0.0, 1.0, 0.0
    w = 1 / v
    mean = (w * y).sum() / w.sum()
    q = max(0.0, float((w * (y - mean) ** 2).sum()))
    typical = (k - 1) * w.sum() / (w.sum() ** 2 - (w * w).sum())
    return q, float(stats.chi2.sf(q, k - 1)), float(typical)


def _pooled(method, y, v, tau2, q, q_p, i2, h2, typical, level) -> MetaAnalysis:
    w = 1 / (v + tau2)
    estimate = float((w * y).sum() / w.sum())
    se = float(1 / np.sqrt(w.sum()))
    z = estimate / se
    crit = float(stats.norm.ppf(1 - (1 - level) / 2))
    return MetaAnalysis(method, len(y), estimate, se, z, float(2 * stats.norm.sf(abs(z))), estimate - crit * se,
                        estimate + crit * se, float(tau2), float(q), len(y) - 1, float(q_p), float(i2), float(h2),
                        float(typical))


# ------------------------------------------------------------------------------------ profiles

def poisson_profile(events, person_years, grid) -> np.ndarray:
    """A site's log-likelihood of theta = log rate per person-year at each grid value:
    events * theta - person_years * exp(theta) (the Poisson log-likelihood without its constant
    events * log(person_years) - log(events!), which pooling does not need). Exact, no nuisance
    parameter. events and person_years may be arrays (one per site): rows = sites."""
    e = np.asarray(events, dtype=float)
    py = np.asarray(person_years, dtype=float)
    theta = _grid(grid)
    if e.shape != py.shape or not (np.all(np.isfinite(e)) and np.all(np.isfinite(py))):
        raise ValueError("events and person_years need one finite value per site")
    if np.any(e < 0) or np.any(py <= 0):
        raise ValueError("events must be >= 0 and person-years > 0")
    return e[..., None] * theta - py[..., None] * np.exp(theta)


def cox_profile(data: CoxData, column: int, grid, tol: float = 1e-9, max_iter: int = 50) -> np.ndarray:
    """The site's profile partial log-likelihood of coefficient `column` at each grid value: the Efron
    log partial likelihood (within strata if data has them) maximised over the other coefficients with
    this one fixed, the value of coxph(Surv(t, status) ~ others + offset(b * x), ties = "efron")'s
    loglik (the same scale as the full model's: its maximum over the grid is cox_fit's loglik).

    The data must give a finite estimate of every coefficient (the site's model as vigil.analysis.cox
    builds it: patients of a level without events left out); an aliased column is refused.
    Newton-Raphson on the other coefficients, walking the grid outwards from the estimate, each point
    started on the tangent of the path of the others (d others / d b = -I_oo^-1 I_oj), a step that
    lowers the log-likelihood halved; a point is done when the largest step is below tol (the
    log-likelihood is then within ~tol^2 x information of its maximum).

    The log-likelihood comes from vigil.stats.survival's Efron tables (what cox_score_information
    computes), built once here: cox_score_information rebuilds them at each call (3/4 of its time),
    and a profile takes a few evaluations per grid point."""
    b_values = _grid(grid)
    p = data.X.shape[1]
    if not 0 <= column < p:
        raise ValueError(f"column {column} is not one of the model's {p} columns")
    fit = cox_fit(data, zph=False)   # FloatingPointError when an estimate is infinite
    if np.isnan(fit.coef).any():
        raise ValueError(f"aliased column(s) {[n for n, c in zip(fit.names, fit.coef) if np.isnan(c)]}: "
                         "leave them out of the site's data before profiling")
    tables = _EfronTables(data)
    others = np.array([j for j in range(p) if j != column], dtype=int)
    out = np.empty(len(b_values))
    order = np.argsort(b_values, kind="stable")
    split = np.searchsorted(b_values[order], fit.coef[column])
    at_estimate = _efron_totals(tables, fit.coef)[2]
    for path in (order[split:], order[:split][::-1]):   # upwards, then downwards, from the estimate
        beta, info = fit.coef.copy(), at_estimate
        for index in path:
            b = b_values[index]
            if len(others):
                tangent = -np.linalg.solve(info[np.ix_(others, others)], info[others, column])
                beta[others] = beta[others] + (b - beta[column]) * tangent
            beta[column] = b
            loglik, info = _maximise_others(tables, beta, others, tol, max_iter)
            out[index] = loglik
    return out


def _maximise_others(tables, beta: np.ndarray, others: np.ndarray, tol: float, max_iter: int):
    """Newton-Raphson over beta[others] in place, beta's other entry fixed. Returns the log-likelihood
    at the maximum and the full information there."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loglik, score, info = _efron_totals(tables, beta)
    if not np.isfinite(loglik):
        raise FloatingPointError(f"profile: the log-likelihood overflows at b = {beta}: narrow the grid")
    if len(others) == 0:
        return loglik, info
    for _ in range(max_iter):
        step = np.linalg.solve(info[np.ix_(others, others)], score[others])
        if np.max(np.abs(step)) < tol:
            return loglik, info
        for _ in range(40):
            trial = beta.copy()
            trial[others] += step
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                new_loglik, new_score, new_info = _efron_totals(tables, trial)
            if np.isfinite(new_loglik) and new_loglik >= loglik - 1e-12 * abs(loglik):
                break
            step = step / 2
        else:
            raise FloatingPointError("profile: step halving failed to raise the log-likelihood")
        beta[others] = trial[others]
        loglik, score, info = new_loglik, new_score, new_info
    raise FloatingPointError(f"profile: Newton-Raphson did not converge in {max_iter} iterations at "
                             f"b = {beta}: an other coefficient may be infinite")


@dataclass(frozen=True)
class PooledProfile:
    """The maximum of the summed profile and its 95% profile-likelihood limits; NaN with a note where
    the grid does not hold it (widen the grid: the limit is outside it)."""
    k: int
    estimate: float
    ci_lower: float
    ci_upper: float
    loglik: float           # the summed curve at the estimate
    note: str | None = None


def pool_profiles(grid, loglik_rows, level: float = 0.95) -> PooledProfile:
    """Likelihood-profile pooling: the sites' profile log-likelihoods of one parameter on a common grid
    (rows: sites, each up to its own constant) are summed; the estimate is the argmax of the sum and
    the CI is where it falls qchisq(level, 1) / 2 (1.92 for 95%) below its maximum.

    Between grid points the sum is the quintic interpolating spline through it (scipy
    make_interp_spline(k = 5), not-a-knot ends): the estimate is the root of its derivative next to the
    largest grid value, the limits the roots of spline - (max - 1.92) in the grid intervals where the sum
    crosses that level (brentq). The spline reproduces any polynomial of degree <= 5, so a quadratic
    log-likelihood (normal estimates) pools exactly; otherwise the error is O(h^6) in the curve, O(h^5)
    in the argmax, h the grid step (a cubic spline, O(h^3) in the argmax, left 4e-7 at step 0.05).
    Measured against R's exact limits of the summed Cox profiles (log HRs, profile SEs 0.08-0.3;
    tests/test_meta_analysis.py, docs/network-methods.md), the largest error of estimate and limits:
    step 0.05: 4e-11, 0.1: 1.4e-9, 0.2: 2e-7, 0.4: 5e-5. For 1e-6, a step no larger than the
    pooled SE is ample. Cox and Poisson profiles are concave, so their sum has one maximum.

    NaN (with a note) for the estimate and both limits when the largest value is at either end of the
    grid (the maximum may be beyond it), and for a limit when the sum does not fall 1.92 below its
    maximum inside the grid on that side (the limit is beyond the grid: widen it)."""
    theta = _grid(grid)
    try:
        rows = np.asarray(loglik_rows, dtype=float)
    except ValueError:   # ragged rows
        raise ValueError(f"each site's profile needs one value per grid point ({len(theta)})") from None
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[0] < 1:
        raise ValueError("fewer than 1 site: nothing to pool")
    if rows.shape[1] != len(theta):
        raise ValueError(f"each site's profile needs one value per grid point: {rows.shape[1]} values for "
                         f"{len(theta)} grid points")
    if len(theta) < 6:
        raise ValueError("the grid needs at least 6 points (a quintic spline)")
    if np.any(np.diff(theta) <= 0):
        raise ValueError("the grid must be strictly increasing")
    if not np.all(np.isfinite(rows)):
        raise ValueError("a profile log-likelihood is not finite")
    k = rows.shape[0]
    total = rows.sum(0)
    top = int(np.argmax(total))
    if top == 0 or top == len(theta) - 1:
        return PooledProfile(k, np.nan, np.nan, np.nan, np.nan,
                             "the summed log-likelihood is largest at the end of the grid: its maximum may be "
                             "beyond it (widen the grid)")
    spline = interpolate.PPoly.from_spline(interpolate.make_interp_spline(theta, total, k=5))
    # the spline's maximum in the two intervals around the largest grid value
    candidates = [theta[top]] + [r for r in spline.derivative().roots(extrapolate=False)
                                 if theta[top - 1] <= r <= theta[top + 1]]
    estimate = float(max(candidates, key=lambda x: float(spline(x))))
    peak = float(spline(estimate))
    drop = float(stats.chi2.ppf(level, 1) / 2)
    target = peak - drop

    def above(b):
        return float(spline(b)) - target

    # the crossings: between the last point below the level and the next one, on each side (the
    # estimate itself is above it; on a coarse grid the spline's peak may be well above every point)
    notes = []
    limits = []
    for side, points in (("lower", np.append(theta[theta < estimate], estimate)),
                         ("upper", np.append(estimate, theta[theta > estimate]))):
        levels = spline(points) - target
        under = np.flatnonzero(levels < 0)
        if not len(under):
            limits.append(np.nan)
            notes.append(f"the summed log-likelihood does not fall {drop:.2f} below its maximum inside the grid "
                         f"on the {side} side: {side} limit beyond the grid (widen it)")
            continue
        j = under[-1] if side == "lower" else under[0]
        a, b = (points[j], points[j + 1]) if side == "lower" else (points[j - 1], points[j])
        limits.append(optimize.brentq(above, a, b, xtol=1e-14, rtol=1e-15))
    lower, upper = limits
    return PooledProfile(k, estimate, float(lower), float(upper), peak, "; ".join(notes) or None)


def _grid(grid) -> np.ndarray:
    theta = np.atleast_1d(np.asarray(grid, dtype=float))
    if theta.ndim != 1 or len(theta) == 0 or not np.all(np.isfinite(theta)):
        raise ValueError("the grid must be a non-empty 1-D array of finite values")
    return theta
