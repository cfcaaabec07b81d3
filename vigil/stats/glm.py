"""Poisson and negative-binomial regression of event counts on person-time (SAP A9), as plain
functions over numpy arrays.

The rows are AGGREGATED person-time (one row per risk window x covariate pattern: events y,
offset log(person-years), a treatment-coded design X with an intercept column), never patient
rows. For the Poisson model that is the same likelihood as the patient rows; for the negative
binomial it is not (its extra variance is per row), and the SAP's model is the one on these rows.

  poisson_glm            glm(y ~ X + offset(offset), family = poisson): IRLS exactly as R's glm.fit
                         (start mu = y + 0.1, convergence |dev - dev_old| / (|dev| + 0.1) < 1e-8, at
                         most 25 iterations), SE from the inverse Fisher information at the weights of
                         the last IRLS step (as summary.glm), Wald CI and p, deviance, Pearson chi2 and
                         dispersion = Pearson chi2 / residual df
  negative_binomial_glm  MASS::glm.nb on the same rows: the Poisson fit, then theta.ml and IRLS at the
                         current theta alternated with glm.nb's own rules (below)
  treatment_design       the design matrix and column names (variable=level) from categorical columns

Choices (tested in tests/test_rates_reference.py against R):
  - an aliased column (a linear combination of the columns before it, in column order, over the
    rows) has no coefficient, as R's NA: it is dropped, its values are NaN and `aliased`/`note`
    name it; the residual df counts only the columns kept, as R's rank;
  - infinite MLE (quasi-complete separation): rows without events that some direction of the
    coefficients drives to rate 0 while leaving the rows with events unchanged, found by linear
    programs (_separated_rows). Typically the dummy of a level with no event (-Inf), or of a
    reference level with no event (the intercept and that variable's other levels: +Inf), and
    occasionally two levels together in a sparse table. R's glm/glm.nb stop at arbitrary large
    values (|coef| about 17 to 40) with enormous SEs, set by when the deviance stopped changing.
    Here every coefficient not determined by the other rows (null space of their design) is NaN
    with its SE, rate ratio, CI and p, `no_events` and `note` name them, and the other coefficients
    are the limit of the MLE, the model fitted without those rows: equal to R's to ~1e-8. The
    residual df is R's (all rows; those columns counted in the rank); deviance and Pearson chi2 are
    the limits (the left-out rows add 0); theta.ml's start counts those rows as R's does (1 each).
  - non-convergence is not an error: converged is False and note says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import special, stats

Z95 = float(stats.norm.ppf(0.975))
MAXIT = 25              # glm.control()$maxit, also glm.nb's alternation and theta.ml limits
EPSILON = 1e-8          # glm.control()$epsilon
DOUBLE_EPS = float(np.finfo(float).eps)     # .Machine$double.eps: make.link("log") floors mu at it
THETA_EPS = DOUBLE_EPS ** 0.25              # theta.ml's eps
ALIAS_TOLERANCE = 1e-9


@dataclass
class GLMResult:
    family: str                 # "poisson" or "negative_binomial"
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p_value: np.ndarray
    rate_ratio: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    deviance: float
    pearson_chi2: float         # sum (y - mu)^2 / V(mu) at the fitted mu
    df_residual: int
    dispersion: float           # pearson_chi2 / df_residual
    working_dispersion: float   # what summary.glm estimates for a quasi family (working weights of the last step)
    n_rows: int
    converged: bool
    iterations: int             # IRLS iterations of the last fit (R's fit$iter)
    theta: float = np.nan       # negative binomial: mu + mu^2 / theta
    se_theta: float = np.nan
    twologlik: float = np.nan   # negative binomial: 2 log-likelihood at theta and the fitted mu
    alternations: int = 0       # negative binomial: theta / IRLS alternations
    aliased: list[str] = field(default_factory=list)
    no_events: list[str] = field(default_factory=list)
    note: str | None = None

    def table(self) -> pl.DataFrame:
        return pl.DataFrame({"term": self.names, "coef": self.coef, "se": self.se, "z": self.z,
                             "p_value": self.p_value, "rate_ratio": self.rate_ratio,
                             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper})


# ------------------------------------------------------------------------------------ families

class _Poisson:
    name = "poisson"

    @staticmethod
    def variance(mu):
        return mu

    @staticmethod
    def deviance(y, mu) -> float:
        r = mu.copy()
        pos = y > 0
        r[pos] = y[pos] * np.log(y[pos] / mu[pos]) - (y[pos] - mu[pos])
        return float(np.sum(2 * r))


class _NegativeBinomial:
    name = "negative_binomial"

    def __init__(self, theta: float):
        self.theta = theta

    def variance(self, mu):
        return mu + mu ** 2 / self.theta

    def deviance(self, y, mu) -> float:
        th = self.theta
        return float(np.sum(2 * (y * np.log(np.maximum(1, y) / mu) - (y + th) * np.log((y + th) / (mu + th)))))


# ------------------------------------------------------------------------------------ IRLS

@dataclass
class _Fit:
    coef: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    deviance: float
    cov: np.ndarray           # (X' W X)^-1 at the working weights of the last step
    weights: np.ndarray       # those working weights (R's fit$weights)
    iterations: int
    converged: bool
    note: str | None = None


def _linkinv(eta):
    return np.maximum(np.exp(eta), DOUBLE_EPS)


def _irls(X, y, offset, family, eta) -> _Fit:
    """R's glm.fit for a log link from a starting linear predictor (offset included)."""
    mu = _linkinv(eta)
    dev = devold = family.deviance(y, mu)
    coefold = None
    converged = False
    note = None
    start = np.zeros(X.shape[1])
    r_factor = np.eye(X.shape[1])
    w = np.ones(len(y))
    iterations = 0
    for iterations in range(1, MAXIT + 1):
        mu_eta = _linkinv(eta)
        z = (eta - offset) + (y - mu) / mu_eta
        w = np.sqrt(mu_eta ** 2 / family.variance(mu))
        q, r_factor = np.linalg.qr(X * w[:, None])
        start = np.linalg.solve(r_factor, q.T @ (z * w))
        if not np.all(np.isfinite(start)):
            note = f"non-finite coefficients at IRLS iteration {iterations}"
            break
        eta = X @ start + offset
        mu = _linkinv(eta)
        dev = family.deviance(y, mu)
        if not np.isfinite(dev):
            if coefold is None:
                raise FloatingPointError("no valid set of coefficients has been found (infinite deviance)")
            note = "step size truncated due to divergence"
            for _ in range(MAXIT):
                start = (start + coefold) / 2
                eta = X @ start + offset
                mu = _linkinv(eta)
                dev = family.deviance(y, mu)
                if np.isfinite(dev):
                    break
            else:
                raise FloatingPointError("cannot correct the IRLS step size")
        if abs(dev - devold) / (abs(dev) + 0.1) < EPSILON:
            converged = True
            break
        devold = dev
        coefold = start
    r_inv = np.linalg.inv(r_factor)
    return _Fit(start, eta, mu, dev, r_inv @ r_inv.T, w ** 2, iterations, converged,
                note if note or converged else f"IRLS did not converge in {MAXIT} iterations")


# ------------------------------------------------------------------------------------ design checks

def _aliased_columns(X: np.ndarray) -> dict[int, list[int]]:
    """Columns that are, over the rows, a linear combination of the columns before them (Gram-Schmidt
    in column order, relative tolerance ALIAS_TOLERANCE, as the pivoting of R's QR keeps the
    earlier column): {column: the kept columns of its combination}. A column of zeros depends on none."""
    basis, kept, aliased = [], [], {}
    for j in range(X.shape[1]):
        column = X[:, j].astype(float)
        residual = column.copy()
        for _ in range(2):   # twice: re-orthogonalisation keeps the residual of an exact combination at ~1e-16
            for q in basis:
                residual -= (q @ residual) * q
        norm = np.linalg.norm(residual)
        if norm <= ALIAS_TOLERANCE * max(np.linalg.norm(column), 1.0):
            on = np.linalg.lstsq(X[:, kept], column, rcond=None)[0] if kept else np.zeros(0)
            aliased[j] = [k for k, b in zip(kept, on) if abs(b) > 1e-6]
        else:
            basis.append(residual / norm)
            kept.append(j)
    return aliased


SEPARATION_TOLERANCE = 1e-8


def _separated_rows(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows whose fitted rate goes to 0 at the supremum of the likelihood: rows with y = 0 on which
    some direction d has X d < 0 while X d <= 0 on every row with y = 0 and X d = 0 on every row with
    events (moving the coefficients along d raises the likelihood without bound; for the dummy of a
    level without events, d = -e_level). Found by linear programs (minimise the sum of X d over the
    rows with y = 0, |d| <= 1), repeated on the rows not yet found until none is: the sum of two
    such directions is one, so the union is every such row."""
    from scipy.optimize import linprog

    zero = y == 0
    separated = np.zeros(len(y), bool)
    if not zero.any() or zero.all():
        return separated
    while True:
        candidates = np.flatnonzero(zero & ~separated)
        if not len(candidates):
            break
        A_ub = X[candidates]
        A_eq = X[~zero]
        res = linprog(A_ub.sum(axis=0), A_ub=A_ub, b_ub=np.zeros(len(candidates)), A_eq=A_eq,
                      b_eq=np.zeros(len(A_eq)), bounds=(-1, 1), method="highs")
        if res.status != 0 or res.fun > -SEPARATION_TOLERANCE:
            break
        found = A_ub @ res.x < -SEPARATION_TOLERANCE
        if not found.any():
            break
        separated[candidates[found]] = True
    return separated


def _not_identified(X: np.ndarray) -> list[int]:
    """Columns on which some vector of the null space of X has a component (their coefficients are
    not determined by the rows of X; the others are)."""
    if X.shape[1] == 0:
        return []
    _, sv, vt = np.linalg.svd(X, full_matrices=True)
    rank = int(np.sum(sv > ALIAS_TOLERANCE * max(sv.max(initial=0.0), 1.0)))
    null = vt[rank:]
    return [j for j in range(X.shape[1]) if null.size and np.max(np.abs(null[:, j])) > 1e-6]


@dataclass
class _Prepared:
    X: np.ndarray       # rows and columns that are fitted
    y: np.ndarray
    offset: np.ndarray
    columns: list[int]  # the caller's columns that are fitted
    report: list[bool]  # per fitted column: its coefficient is reported (not in no_events)
    rows_left_out: int  # rows with y = 0 whose fitted rate is 0 in the limit
    df_residual: int    # R's: all rows minus the columns not aliased
    aliased: dict[int, list[int]]
    no_events: list[int]
    notes: list[str]


def _prepare(y, offset, X, names) -> _Prepared:
    n, p = X.shape
    aliased = _aliased_columns(X)
    notes = [f"{names[j]} aliased with " + (" + ".join(names[k] for k in on) if on else "nothing (a column of zeros)")
             + ": no coefficient (NA in R)" for j, on in aliased.items()]
    columns = [j for j in range(p) if j not in aliased]
    df_residual = n - len(columns)
    rows = ~_separated_rows(X[:, columns], y) if y.sum() > 0 else np.ones(n, bool)
    no_events: list[int] = []
    if not rows.all():
        reduced = X[rows][:, columns]
        no_events = [columns[i] for i in _not_identified(reduced)]
        zero_columns = [j for j in no_events if not X[rows][:, j].any()]
        others = [j for j in no_events if j not in zero_columns]
        if zero_columns:
            notes.append("no events in the rows of " + ", ".join(names[j] for j in zero_columns)
                         + ": rate ratio 0 (MLE -Inf), not estimated (R reports a large negative estimate with a huge SE)")
        if others:
            notes.append(", ".join(names[j] for j in others) + ": MLE infinite (rows without events that the model "
                         "fits with rate 0), not estimated (R reports large estimates with huge SEs)")
        notes.append(f"the other coefficients are the limit of the MLE: fitted without those {int(n - rows.sum())} "
                     "rows without events")
        later = _aliased_columns(reduced)   # all in no_events; the rest keep the column space
        columns = [j for i, j in enumerate(columns) if i not in later]
    return _Prepared(X[rows][:, columns], y[rows], offset[rows], columns, [j not in no_events for j in columns],
                     int(n - rows.sum()), df_residual, aliased, no_events, notes)


def _inputs(y, offset, X, names):
    if hasattr(X, "columns"):  # a data frame: its column names name the coefficients
        names = list(X.columns) if names is None else list(names)
        X = X.to_numpy()
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    y = np.asarray(y, dtype=float)
    offset = np.asarray(offset, dtype=float)
    names = [f"x{j}" for j in range(X.shape[1])] if names is None else list(names)
    if not (len(y) == len(offset) == X.shape[0]) or len(names) != X.shape[1]:
        raise ValueError("y, offset and the rows of X must have the same length, names one per column of X")
    if not (np.all(np.isfinite(y)) and np.all(y >= 0) and np.all(np.isfinite(offset)) and np.all(np.isfinite(X))):
        raise ValueError("y must be finite and >= 0, offset and X finite (a row without person-time has no log offset)")
    return y, offset, X, names


def _result(family_name, names, prepared: _Prepared, fit: _Fit | None, family, n_rows, **extra) -> GLMResult:
    p = len(names)

    def widen(values) -> np.ndarray:
        out = np.full(p, np.nan)
        if fit is not None:
            out[prepared.columns] = np.where(prepared.report, values, np.nan)
        return out

    notes = list(prepared.notes)
    if fit is None:
        nan = np.full(p, np.nan)
        return GLMResult(family_name, list(names), nan, nan, nan, nan, nan, nan, nan, np.nan, np.nan,
                         prepared.df_residual, np.nan, np.nan, n_rows, False, 0,
                         aliased=[names[j] for j in prepared.aliased], no_events=[names[j] for j in prepared.no_events],
                         note="; ".join(notes + ["no events: nothing to estimate"]))
    coef = fit.coef
    se = np.sqrt(np.diag(fit.cov))
    z = coef / se
    y, mu = prepared.y, fit.mu
    pearson = float(np.sum((y - mu) ** 2 / family.variance(mu)))
    working = float(np.sum(fit.weights * ((y - mu) / mu) ** 2))
    df = prepared.df_residual
    if fit.note:
        notes.append(fit.note)
    return GLMResult(
        family=family_name, names=list(names), coef=widen(coef), se=widen(se), z=widen(z),
        p_value=widen(2 * stats.norm.sf(np.abs(z))), rate_ratio=widen(np.exp(coef)),
        ci_lower=widen(np.exp(coef - Z95 * se)), ci_upper=widen(np.exp(coef + Z95 * se)),
        deviance=fit.deviance, pearson_chi2=pearson, df_residual=df,
        dispersion=pearson / df if df > 0 else np.nan, working_dispersion=working / df if df > 0 else np.nan,
        n_rows=n_rows, converged=fit.converged, iterations=fit.iterations,
        aliased=[names[j] for j in prepared.aliased], no_events=[names[j] for j in prepared.no_events],
        note="; ".join(notes) or None, **extra)


# ------------------------------------------------------------------------------------ Poisson

def _poisson_fit(prepared: _Prepared) -> _Fit:
    eta = np.log(prepared.y + 0.1)      # poisson()$initialize: mustart = y + 0.1; eta = log(mustart)
    fit = _irls(prepared.X, prepared.y, prepared.offset, _Poisson, eta)
    if prepared.rows_left_out:
        # The limit of R's fit on all rows: R keeps iterating while the infinite coefficients drift
        # (18 steps where the reduced fit needs 6-8), so its last working weights have settled on the
        # final mu; here, after fewer steps, they still lag one step. The information at the final mu
        # (Poisson: W = mu) is that limit: R's SEs to ~1e-7, where the lagging weights were 3.5e-4 off.
        info = prepared.X.T @ (prepared.X * fit.mu[:, None])
        fit.cov, fit.weights = np.linalg.inv(info), fit.mu.copy()
    return fit


def poisson_glm(y, offset, X, names=None) -> GLMResult:
    """Poisson regression of counts y with offset (log person-years) on the design X (intercept
    column included; a DataFrame gives the names), as R's glm(family = poisson) and summary.glm:
    coefficients, SE from the inverse Fisher information, Wald z and two-sided p, rate ratios
    exp(coef) with Wald 95% CI exp(coef -+ qnorm(0.975) SE), deviance, Pearson chi2, residual df
    and the Pearson dispersion statistic. Aliased and no-event columns: see the module docstring."""
    y, offset, X, names = _inputs(y, offset, X, names)
    prepared = _prepare(y, offset, X, names)
    if y.sum() == 0 or not prepared.columns:
        return _result("poisson", names, prepared, None, _Poisson, len(y))
    return _result("poisson", names, prepared, _poisson_fit(prepared), _Poisson, len(y))


# ------------------------------------------------------------------------------------ negative binomial

def _nb_loglik(theta, mu, y) -> float:
    """glm.nb's loglik (prior weights 1)."""
    return float(np.sum(special.gammaln(theta + y) - special.gammaln(theta) - special.gammaln(y + 1)
                        + theta * np.log(theta) + y * np.log(mu + (y == 0)) - (theta + y) * np.log(theta + mu)))


def theta_ml(y, mu, n: float | None = None, limit: int = MAXIT, extra_start_terms: float = 0.0):
    """MASS::theta.ml: Newton-Raphson on the score of theta from the moment start
    n / sum((y / mu - 1)^2), while the step exceeds .Machine$double.eps^0.25 and fewer than `limit`
    iterations; SE = 1 / sqrt(information at the last theta the step was computed from).
    extra_start_terms adds to that start's denominator (rows left out with y = 0 and mu -> 0 add 1
    each, as they do in R). Returns (theta, se, warning or None)."""
    y = np.asarray(y, float)
    mu = np.asarray(mu, float)
    n = float(len(y)) if n is None else float(n)
    t0 = n / (np.sum((y / mu - 1) ** 2) + extra_start_terms)
    it, delta, info = 0, 1.0, np.nan
    while True:
        it += 1
        if not (it < limit and abs(delta) > THETA_EPS):
            break
        t0 = abs(t0)
        score = np.sum(special.digamma(t0 + y) - special.digamma(t0) + np.log(t0) + 1 - np.log(t0 + mu)
                       - (y + t0) / (mu + t0))
        info = np.sum(-special.polygamma(1, t0 + y) + special.polygamma(1, t0) - 1 / t0 + 2 / (mu + t0)
                      - (y + t0) / (mu + t0) ** 2)
        delta = score / info
        t0 = t0 + delta
    warning = None
    if t0 < 0:
        t0, warning = 0.0, "theta estimate truncated at zero"
    if it == limit:
        warning = "theta.ml iteration limit reached"
    with np.errstate(divide="ignore", invalid="ignore"):
        se = float(np.sqrt(1 / info))
    return float(t0), se, warning


def negative_binomial_glm(y, offset, X, names=None) -> GLMResult:
    """Negative-binomial (NB2, log link) regression on the same rows, as MASS::glm.nb(y ~ X +
    offset(offset)) with its defaults, and summary.negbin (dispersion 1, Wald z):
      1. the Poisson fit (glm.fit from mu = y + 0.1); theta = theta.ml(y, mu);
      2. d1 = sqrt(2 max(1, residual df)), Lm = loglik(theta, mu), Lm0 = Lm + 2 d1, del = 1; while at
         most 25 alternations and |Lm0 - Lm| / d1 + |del| > 1e-8: IRLS at the current theta from
         eta = log(mu); theta.ml on the mu BEFORE that IRLS (glm.nb updates mu after theta);
         mu = the new fit; del = old theta - new theta; Lm0 = Lm; Lm = loglik(new theta, mu);
      3. coefficients and their SEs are those of the last IRLS (its working weights, at the theta it
         was fitted with), theta and SE(theta) from the last theta.ml, deviance that of the last IRLS,
         twologlik = 2 Lm.
    converged is False (with a note) when an IRLS did not converge, the alternation limit was
    reached, or theta.ml warned (iteration limit, theta truncated at 0)."""
    y, offset, X, names = _inputs(y, offset, X, names)
    prepared = _prepare(y, offset, X, names)
    if y.sum() == 0 or not prepared.columns:
        return _result("negative_binomial", names, prepared, None, _Poisson, len(y))
    fit = _poisson_fit(prepared)
    n_all, left_out = float(len(y)), float(prepared.rows_left_out)
    yy, mu = prepared.y, fit.mu
    theta, se_theta, warning = theta_ml(yy, mu, n_all, extra_start_terms=left_out)
    d1 = np.sqrt(2 * max(1, prepared.df_residual))
    d2 = delta = 1.0
    lm = _nb_loglik(theta, mu, yy)
    lm0 = lm + 2 * d1
    alternations = 0
    family = fitted_with = _NegativeBinomial(theta)
    while True:
        alternations += 1
        if not (alternations <= MAXIT and abs(lm0 - lm) / d1 + abs(delta) / d2 > EPSILON):
            break
        fit = _irls(prepared.X, yy, prepared.offset, family, np.log(mu))
        fitted_with = family
        old = theta
        theta, se_theta, warning = theta_ml(yy, mu, n_all, extra_start_terms=left_out)   # mu before this IRLS
        family = _NegativeBinomial(theta)
        mu = fit.mu
        delta = old - theta
        lm0, lm = lm, _nb_loglik(theta, mu, yy)
    warnings_ = [w for w in (warning, "glm.nb alternation limit reached" if alternations > MAXIT else None) if w]
    result = _result("negative_binomial", names, prepared, fit, fitted_with, len(y),
                     theta=theta, se_theta=se_theta, twologlik=2 * lm, alternations=alternations - 1)
    if warnings_:
        result.converged = False
        result.note = "; ".join(filter(None, [result.note] + warnings_))
    return result


# ------------------------------------------------------------------------------------ design

def treatment_design(frame, levels: dict[str, list[str]]) -> tuple[np.ndarray, list[str]]:
    """An intercept column and one 0/1 column per non-reference level of each variable (treatment
    contrasts; levels[variable] lists the levels, reference first), named "(Intercept)" and
    "variable=level". A row whose value is not among the levels raises ValueError. A level absent
    from the data gives a column of zeros, which the fits report as aliased (R's glm drops unused
    factor levels instead)."""
    columns, names = [np.ones(len(frame))], ["(Intercept)"]  # frame: a polars or pandas data frame
    for variable, lv in levels.items():
        values = np.asarray(frame[variable]).astype(str)
        unknown = set(values) - set(lv)
        if unknown:
            raise ValueError(f"{variable}: values not among the levels: {sorted(unknown)}")
        for level in lv[1:]:
            columns.append((values == level).astype(float))
            names.append(f"{variable}={level}")
    return np.column_stack(columns), names
