"""Fine-Gray subdistribution hazards (SAP A10) as R's cmprsk::crr computes them, over patient arrays
or over rows of identical patients with their counts.

  fine_gray   crr(ftime, fstatus, cov1) with its defaults (failcode = 1, cencode = 0, one censoring
              group, no time-varying covariates, gtol = 1e-6, maxiter = 10, init = 0): the same
              Newton-Raphson with backtracking and stopping rule, the robust (sandwich) variance crr
              reports as `var`, Wald CI and p, crr's `loglik` and `loglik.null`.

What crr computes (cmprsk 2.2-11/12, R/cmprsk.R and src/crr.f), in the notation used below:
patients sorted by time; G(t-) the Kaplan-Meier of the censoring distribution (status 0 is the
"event" of survfit; deaths and outcome events are exits) read just before t, as crr's
approx(xout = ftime * (1 - 100 eps)) does; at each distinct outcome time s with d(s) events the
risk set holds everyone with t >= s at weight exp(x b) and everyone with the competing event before
s at weight exp(x b) G(s-)/G(t-). The pseudo log-likelihood is Breslow's on these weighted sets:
sum over events of x b - sum_s d(s) log S0(s). Censored patients and outcome events before s are
not in the set. The variance is H^-1 (sum_i u_i u_i') H^-1 with H the information and u_i = eta_i
+ psi_i: eta_i the patient's score residual on the weighted sets and psi_i the correction for the
estimated censoring distribution, the integral of q(u)/R(u) against the patient's censoring
martingale (R(u) patients with t >= u, q(u) below), as crrvv does.

Every sum over risk sets is a cumulative sum over the distinct times (the competing part is
G(s-) times a cumulative sum of exp(x b)/G(t-) over competing events before s), so a fit costs
O(n p^2) per Newton step and O(n p) memory (crr's Fortran is O(n^2) per step and O(n^3) for the
variance): 10^5 patients with 13 dummy columns take about a second.

Data the model cannot estimate (crr itself stops with an error or returns a diverging value):
  - no outcome events, or no covariate column: no model, every value NaN, a note;
  - a 0/1 column whose patients with 1 have no event: its coefficient tends to -inf; one whose
    patients with 0 have no event (every event has 1): +inf; with `terms` (one-hot columns of a
    variable), a variable's reference patients (0 in all its columns) with no event: its
    coefficients are infinite. Those coefficients are NaN ("not estimable") and the model is
    the limit of crr's as they diverge: the patients concerned leave every risk set (weight 0)
    but stay in the censoring Kaplan-Meier and in R(u), as in crr's likelihood at the limit.
    crr, left to itself, stops after 10 iterations at e.g. -10 with a meaningless standard error
    and converged = FALSE;
  - a column that is a linear combination of the columns before it and a constant over the
    patients of the risk sets (crr's solve() fails: "system is computationally singular") is
    dropped with a note, as cox_fit in vigil.stats.survival does.
The reference test (tests/test_finegray.py, tests/reference/finegray_reference.R) checks all of
these against crr at 1e-6.

Aggregated rows (`counts`): patients with the same time, status and covariate row are
exchangeable, so one row per distinct (time, status, x) with its number of patients gives crr's
fit on the patients exactly (an aggregation, not crr's `cengroup` nor a weighted likelihood).
Everything above is a sum over patients of a term that depends only on the patient's
(t, status, x), given b and sums over all patients: d(s), c(s) and R(s) of the Kaplan-Meier, S0,
S1, the log-likelihood, score and information, and the middle of the sandwich sum_i u_i u_i'
(eta_i and psi_i are such terms). A row's patients contribute count times its term; the rules for
diverging and aliased columns depend only on which rows occur and on count-weighted moments. So
Newton takes the same steps to the same numbers, up to rounding. At 10^6 patients over 3650 days
a one-variable model has a few 10^4 rows (about 10 times faster, polars group_by included); the
six-variable model's 864 covariate patterns leave ~7 10^5 rows, hardly fewer than patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from vigil.stats.survival import ALIAS_TOLERANCE, Z95

GTOL = 1e-6      # crr's gtol
MAXITER = 10     # crr's maxiter


@dataclass
class FineGrayFit:
    """One crr fit. Per column of X: coef, se (sqrt of the diagonal of crr's `var`), shr = exp(coef),
    Wald CI exp(coef -+ 1.959964 se), two-sided Wald p; NaN where not estimable. var is crr's
    sandwich variance over all columns (NaN rows and columns for those without a coefficient).
    loglik is crr's `loglik` (pseudo log-likelihood at the estimate), loglik_null its
    `loglik.null` (at b = 0, every patient in the risk sets). iterations = Newton steps taken."""
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    shr: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    p_value: np.ndarray
    var: np.ndarray
    loglik: float
    loglik_null: float
    converged: bool
    iterations: int
    n: int
    n_events: int
    n_competing: int
    note: str | None = None


class _Data:
    """Rows (patients, or identical patients `count` times) sorted by time, the per-time numbers of
    patients and the censoring Kaplan-Meier G(t-). Terms per row are per patient; sums over
    patients weight them by count."""

    def __init__(self, time: np.ndarray, status: np.ndarray, X: np.ndarray, active: np.ndarray,
                 count: np.ndarray):
        order = np.argsort(time, kind="stable")
        self.X = X[order]
        self.status = status[order]
        self.count = count[order]
        self.active = np.asarray(active, bool)[order]   # False: left out of the risk sets (masked)
        times, self.ti = np.unique(time[order], return_inverse=True)
        m = len(times)
        self.event = (self.status == 1)
        self.competing = (self.status == 2)
        self.censored = (self.status == 0)
        self.d = np.bincount(self.ti, weights=self.count * self.event, minlength=m)
        self.c = np.bincount(self.ti, weights=self.count * self.censored, minlength=m)
        total = np.bincount(self.ti, weights=self.count, minlength=m)
        self.R = total[::-1].cumsum()[::-1]         # patients with t >= time
        g_after = np.cumprod(1 - self.c / self.R)    # censoring KM at the time
        self.G = np.concatenate(([1.0], g_after[:-1]))   # ... just before it: G(t-)
        self.m = m
        self.ev_times = np.flatnonzero(self.d > 0)
        self.x_events = self.count[self.event] @ self.X[self.event]
        # competing patients enter later risk sets at weight exp(x b) G(s-)/G(t-)
        self.comp_scale = np.where(self.competing, 1.0 / self.G[self.ti], 0.0)
        self.comp = np.flatnonzero(self.competing)
        self.comp_ti = self.ti[self.comp]
        self.comp_X = self.X[self.comp]

    def _by_time(self, index, values):
        """Sums per distinct time (m, or m x columns) by bincount, one pass per column."""
        if values.ndim == 1:
            return np.bincount(index, weights=values, minlength=self.m)
        return np.column_stack([np.bincount(index, weights=values[:, k], minlength=self.m)
                                for k in range(values.shape[1])]).reshape(self.m, values.shape[1])

    def sums(self, b: np.ndarray, with_first: bool):
        """exp(x b) per patient of each row, S0 (and S1) of the weighted risk sets at the event times,
        and the competing part before each distinct time: sum over competing j with t_j < time of
        exp(x_j b)/G(t_j-) (and times x_j)."""
        with np.errstate(over="ignore", invalid="ignore"):
            w = np.where(self.active, np.exp(self.X @ b), 0.0)
        cw = self.count * w                          # the row's patients together
        wc = cw[self.comp] * self.comp_scale[self.comp]
        e = self.ev_times
        a0 = self._by_time(self.ti, cw)[::-1].cumsum()[::-1]                       # t >= time
        b0 = np.concatenate(([0.0], self._by_time(self.comp_ti, wc).cumsum()[:-1]))  # competing, t < time
        s0 = a0[e] + self.G[e] * b0[e]
        if not with_first:
            return w, s0, None, None
        a1 = self._by_time(self.ti, cw[:, None] * self.X)[::-1].cumsum(axis=0)[::-1]
        b1 = np.vstack((np.zeros((1, self.X.shape[1])),
                        self._by_time(self.comp_ti, wc[:, None] * self.comp_X).cumsum(axis=0)[:-1]))
        s1 = a1[e] + self.G[e][:, None] * b1[e]
        return w, s0, s1, (b0, b1)

    def minus_loglik(self, b: np.ndarray) -> float:
        """crr's objective (crrf): minus the pseudo log-likelihood."""
        _, s0, _, _ = self.sums(b, with_first=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(-(self.x_events @ b) + self.d[self.ev_times] @ np.log(s0))

    def _cumulated(self, s0, s1):
        """Per distinct time: a = d/S0 and xbar at event times (0 elsewhere); C0, C1 = cumulative sums
        of a, a xbar over event times <= t; D0, D1 the same with a G(s-)."""
        m, p = self.m, self.X.shape[1]
        a = np.zeros(m)
        xbar = np.zeros((m, p))
        a[self.ev_times] = self.d[self.ev_times] / s0
        xbar[self.ev_times] = s1 / s0[:, None]
        ag = a * self.G
        return a, xbar, np.cumsum(a), np.cumsum(a[:, None] * xbar, axis=0), \
            np.cumsum(ag), np.cumsum(ag[:, None] * xbar, axis=0)

    def fsv(self, b: np.ndarray):
        """crrfsv: objective, its gradient and Hessian (the information) at b."""
        w, s0, s1, _ = self.sums(b, with_first=True)
        d = self.d[self.ev_times]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = float(-(self.x_events @ b) + d @ np.log(s0))
            xbar_e = s1 / s0[:, None]
            grad = -self.x_events + d @ xbar_e
            _, _, c0, _, d0, _ = self._cumulated(s0, s1)
            h = self.count * w * (c0[self.ti] + self.comp_scale * (d0[-1] - d0[self.ti]))
            info = self.X.T @ (h[:, None] * self.X) - (xbar_e * d[:, None]).T @ xbar_e
        return f, grad, info

    def score_terms(self, b: np.ndarray) -> np.ndarray:
        """eta_i + psi_i of crrvv for a patient of each row (rows x p): the same for the row's
        patients, so the middle of the sandwich is sum over rows of count u u'."""
        w, s0, s1, (b0, b1) = self.sums(b, with_first=True)
        a, xbar, c0, c1, d0, d1 = self._cumulated(s0, s1)
        ti, X = self.ti, self.X
        scale = self.comp_scale[:, None]
        # eta: the dN part at the patient's own event, minus the d Lambda part over the event times
        # at which the patient is in the risk set (s <= t; for a competing event also s > t)
        eta = np.where(self.event[:, None], X - xbar[ti], 0.0) - w[:, None] * (
            X * c0[ti][:, None] - c1[ti] + scale * (X * (d0[-1] - d0[ti])[:, None] - (d1[-1] - d1[ti])))
        # q(u) = sum over event times s >= u of a(s) G(s-) sum over competing j with t_j < u of
        # exp(x_j b)/G(t_j-) (x_j - xbar(s))
        ag = a * self.G
        d0_before = d0 - ag                         # event times < u
        d1_before = d1 - ag[:, None] * xbar
        q = b1 * (d0[-1] - d0_before)[:, None] - b0[:, None] * (d1[-1] - d1_before)
        # psi_i = int q/R dM^c_i: its own censoring minus the compensator over u <= t_i
        compensator = np.cumsum((self.c / self.R ** 2)[:, None] * q, axis=0)
        psi = np.where(self.censored[:, None], q[ti] / self.R[ti][:, None], 0.0) - compensator[ti]
        return eta + psi


def _newton(data: _Data, p: int, gtol: float, maxiter: int):
    """crr's Newton-Raphson from b = 0: stop when max|g| max(|b|, 1) < max(|f|, 1) gtol; else a Newton
    step halved (up to 20 times) until f decreases by 1e-4 of the predicted decrease."""
    b = np.zeros(p)
    for iteration in range(maxiter + 1):
        f, grad, info = data.fsv(b)
        if np.max(np.abs(grad) * np.maximum(np.abs(b), 1)) < max(abs(f), 1) * gtol:
            return b, f, info, iteration, True
        if iteration == maxiter:
            return b, f, info, iteration, False
        step = -np.linalg.solve(info, grad)
        new = b + step
        f_new = data.minus_loglik(new)
        halvings = 0
        while not f_new <= f + 1e-4 * float(step @ grad):   # also when f_new is NaN
            halvings += 1
            step = step * 0.5
            new = b + step
            f_new = data.minus_loglik(new)
            if halvings > 20:
                break
        if halvings > 20:
            return b, f, info, iteration, False
        b = new
    raise AssertionError("unreachable")


def _diverging(X, event, in_risk, terms):
    """Patients to take out of the risk sets and columns without a finite coefficient: see the
    module docstring. Returns (masked rows, {column: reason})."""
    masked = np.zeros(len(event), bool)
    reasons: dict[int, str] = {}
    binary = np.all((X == 0) | (X == 1), axis=0)
    for j in np.flatnonzero(binary):
        one = X[:, j] == 1
        if (one & in_risk).any() and not (one & event).any():
            masked |= one
            reasons[j] = "no events in this level: not estimable (coefficient tends to -inf)"
        elif (~one & in_risk).any() and not (~one & event).any():
            masked |= ~one
            reasons[j] = "every event is in this level: not estimable (coefficient tends to +inf)"
    for term, cols in (terms or {}).items():
        cols = list(cols)
        if not cols or not binary[cols].all() or (X[:, cols].sum(axis=1) > 1).any():
            continue   # not one-hot dummies
        reference = X[:, cols].sum(axis=1) == 0
        if (reference & in_risk).any() and not (reference & event).any():
            masked |= reference
            for j in cols:
                reasons.setdefault(j, f"no events in the reference level of {term}: not estimable")
    return masked, reasons


def _aliased(X, rows, count):
    """Columns that are, over the patients of `rows`, a linear combination of the columns before them
    and a constant: {column: the kept columns it depends on}. As cox_fit's check in
    vigil.stats.survival (Gram-Schmidt in column order, relative tolerance ALIAS_TOLERANCE),
    computed by Householder QR of the centred columns, redone without each aliased column found (a
    QR is one LAPACK call, a Python loop over the columns of 10^5 rows is not). A row of `count`
    patients is scaled by sqrt(count): the same R'R, so the same |R|, as the patients' rows."""
    p = X.shape[1]
    if not rows.any():
        return {j: [] for j in range(p)}
    sub, share = X[rows], count[rows] / count[rows].sum()
    centred = (sub - share @ sub) * np.sqrt(share)[:, None]
    norms = np.linalg.norm(centred, axis=0)
    columns, aliased = list(range(p)), {}
    while columns:
        r = np.linalg.qr(centred[:, columns], mode="r")
        diagonal = np.zeros(len(columns))  # fewer rows than columns: those past the rank are aliased
        diagonal[:min(r.shape)] = np.abs(np.diag(r))
        small = diagonal <= ALIAS_TOLERANCE * np.maximum(norms[columns], 1.0)
        if not small.any():
            break
        k = int(np.argmax(small))
        aliased[columns[k]] = [columns[i] for i in range(min(k, r.shape[0])) if abs(r[i, k]) > ALIAS_TOLERANCE]
        del columns[k]
    return aliased


def fine_gray(time, status, X, *, names: list[str], terms: dict[str, list[int]] | None = None,
              counts=None, gtol: float = GTOL, maxiter: int = MAXITER) -> FineGrayFit:
    """Fine-Gray regression of the subdistribution hazard of status 1 with status 2 competing and 0
    censored, as cmprsk::crr(time, status, X) with its defaults (see the module docstring).

    time: follow-up per patient (> 0, e.g. whole days); status: 0, 1 or 2; X: patients x columns
    (treatment-coded dummies or any numeric covariates), `names` one per column. `terms` maps a
    variable to the indices of its one-hot columns, so that a reference level without events is
    recognised. `counts` (integers >= 1, default 1): the number of patients a row stands for, to
    fit on one row per distinct (time, status, x) instead of one per patient, with the same result
    (the module docstring says why); n, n_events and n_competing count patients. Returns NaN for
    what is not estimable, with the reasons in `note`."""
    time = np.asarray(time, dtype=float)
    status = np.asarray(status)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    rows, p = X.shape
    counts = np.ones(rows) if counts is None else np.asarray(counts, dtype=float)
    if len(time) != rows or len(status) != rows or len(counts) != rows or len(names) != p:
        raise ValueError("time, status, counts, the rows of X and names (one per column) must have matching lengths")
    if not np.all(np.isfinite(counts) & (counts >= 1) & (counts == np.floor(counts))):
        raise ValueError("counts must be whole numbers >= 1 (patients per row)")
    if not np.all(np.isfinite(time)) or (rows and time.min() <= 0):
        raise ValueError("time must be finite and > 0")
    if not np.all(np.isin(status, (0, 1, 2))):
        raise ValueError("status must be 0 (censored), 1 (event) or 2 (competing event)")
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite (no missing covariate values)")
    status = status.astype(np.int64)
    event = status == 1
    n, n_events, n_competing = int(counts.sum()), int(counts[event].sum()), int(counts[status == 2].sum())

    def empty(note: str, loglik=np.nan, loglik_null=np.nan, converged=False, iterations=0) -> FineGrayFit:
        nan = np.full(p, np.nan)
        return FineGrayFit(list(names), nan, nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy(),
                           np.full((p, p), np.nan), loglik, loglik_null, converged, iterations, n,
                           n_events, n_competing, note)

    if n_events == 0:
        return empty("no events of the outcome: no model" if n else "no patients: no model")
    if p == 0:
        return empty("no covariates: no model")

    # patients in some risk set: t >= the first event time, or a competing event (at any time)
    in_risk = (time >= time[event].min()) | (status == 2)
    masked, reasons = _diverging(X, event, in_risk, terms)
    # a diverging column is 0 (or 1) on every patient left in the risk sets: aliased with the baseline
    aliased = _aliased(X, in_risk & ~masked, counts)
    keep = [j for j in range(p) if j not in aliased]
    notes = []
    for j in range(p):
        if j in reasons:
            notes.append(f"{names[j]}: {reasons[j]}")
        elif j in aliased:
            on = aliased[j]
            notes.append(f"{names[j]} aliased with " + (" + ".join(names[k] for k in on) if on else "the baseline")
                         + ": no coefficient")
    if masked.any():
        notes.append(f"{int(counts[masked].sum())} patients of levels without a finite coefficient left out of the "
                     "risk sets (the limit as those coefficients diverge)")

    null_data = _Data(time, status, X[:, :0], np.ones(rows, bool), counts)
    loglik_null = -null_data.minus_loglik(np.zeros(0))
    if not keep:
        return empty("; ".join(notes + ["no estimable column: no model"]), loglik_null=loglik_null)

    data = _Data(time, status, X[:, keep], ~masked, counts)
    try:
        b, f, info, iterations, converged = _newton(data, len(keep), gtol, maxiter)
        bread = np.linalg.inv(info)
    except np.linalg.LinAlgError as exc:
        return empty("; ".join(notes + [f"information matrix singular: no model ({exc})"]), loglik_null=loglik_null)
    u = data.score_terms(b)
    var_kept = bread @ (u.T @ (data.count[:, None] * u)) @ bread
    if not converged:
        notes.append(f"crr's Newton-Raphson did not converge in {iterations} iterations (as crr: converged = FALSE)")

    coef = np.full(p, np.nan)
    var = np.full((p, p), np.nan)
    report = [k for k, j in enumerate(keep) if j not in reasons]   # kept only to adjust: still NaN
    cols = [keep[k] for k in report]
    coef[cols] = b[report]
    var[np.ix_(cols, cols)] = var_kept[np.ix_(report, report)]
    se = np.sqrt(np.diag(var))
    with np.errstate(invalid="ignore"):
        p_value = 2 * stats.norm.sf(np.abs(coef / se))
    return FineGrayFit(
        names=list(names), coef=coef, se=se, shr=np.exp(coef), ci_lower=np.exp(coef - Z95 * se),
        ci_upper=np.exp(coef + Z95 * se), p_value=p_value, var=var, loglik=-f, loglik_null=loglik_null,
        converged=converged, iterations=iterations, n=n, n_events=n_events, n_competing=n_competing,
        note="; ".join(notes) or None)
