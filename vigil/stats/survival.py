"""Estimators of SAP section 4 (A1, A3-A5) as plain functions over numpy arrays.

Every function takes counts that DuckDB has already aggregated (per distinct day, per stratum,
per covariate pattern), never one row per patient, and returns numpy arrays in which an
undefined value is NaN; vigil.analysis.sap turns NaN into SQL NULL. The methods, their variances
and how each was checked against R's survival package are in docs/analysis-methods.md; the
tests compare every quantity with committed R output at 1e-6.

  poisson_ci            exact Poisson CI from chi-square quantiles (A1, A2)
  kaplan_meier          1 - S with Greenwood variance and log(-log) CI = survfit(conf.type="log-log") (A3)
  aalen_johansen        cumulative incidence with a competing event, exact on tied days, infinitesimal
                        jackknife variance and log CI = survfit multi-state (A4)
  at_days               read a step curve at given days (summary.survfit(times=, extend=FALSE))
  logrank               lifelines multivariate_logrank_test on the counts = survdiff (A3)
  cox_fit               Cox PH, Efron ties, Newton-Raphson on the exact partial likelihood over covariate
                        patterns, Wald CI and p = coxph(ties="efron") = lifelines CoxPHFitter (A5);
                        optional strata (coxph's strata()); log-likelihood at 0 and AIC as coxph
  cox_zph               score test of proportional hazards per term and global = cox.zph(transform="km") (A5)
  cox_score_information Efron log-likelihood, score and information at a given beta (strata summed)
  cox_concordance       Harrell's C of the linear predictor = coxph's fit$concordance
  cox_term_tests        per term: Wald chi-square and the likelihood-ratio test of drop1(fit, test = "Chisq")
  lifelines_cox         the same model by lifelines' CoxPHFitter, for checks

Study policy (SAP levels, references, what is reported when a level has no events) is in
vigil.analysis.cox, not here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))


# ------------------------------------------------------------------------------------ A1, A2

def poisson_ci(k, person_years, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) CI of a Poisson rate per person-year: lower = chi2(a/2; 2k)/2/PY (0 when k = 0),
    upper = chi2(1 - a/2; 2k + 2)/2/PY. NaN where person_years <= 0."""
    k = np.asarray(k, dtype=float)
    py = np.asarray(person_years, dtype=float)
    alpha = 1 - level
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = np.where(k > 0, stats.chi2.ppf(alpha / 2, 2 * k) / 2, 0.0) / py
        upper = stats.chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2 / py
    bad = ~(py > 0)
    return np.where(bad, np.nan, lower), np.where(bad, np.nan, upper)


# ------------------------------------------------------------------------------------ A3, A4

@dataclass
class Curve:
    """A step curve at the distinct times of a stratum (every time someone leaves follow-up, as in
    R's survfit). estimate is the cumulative incidence (KM: 1 - S; AJ: P(event by t))."""
    time: np.ndarray
    n_at_risk: np.ndarray
    n_events: np.ndarray
    n_competing: np.ndarray
    n_censored: np.ndarray
    estimate: np.ndarray
    std_err: np.ndarray   # KM: of -log S (R's survfit std.err); AJ: of the estimate itself
    ci_lower: np.ndarray
    ci_upper: np.ndarray

    @property
    def n_patients(self) -> int:
        return int(self.n_at_risk[0]) if len(self.time) else 0


def _at_risk(n_events, n_competing, n_censored):
    leaving = np.asarray(n_events, float) + np.asarray(n_competing, float) + np.asarray(n_censored, float)
    return leaving[::-1].cumsum()[::-1]


def kaplan_meier(time, n_events, n_censored, level: float = 0.95) -> Curve:
    """Kaplan-Meier 1 - S from per-time counts (time sorted, distinct; n_censored = every other exit,
    deaths included). Greenwood variance of log S; CI on the log(-log S) scale as survfit's
    conf.type = "log-log": undefined (NaN) where S is 0 or 1."""
    time = np.asarray(time)
    d = np.asarray(n_events, float)
    c = np.asarray(n_censored, float)
    n = _at_risk(d, 0, c)
    surv = np.cumprod(1 - d / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(d > 0, d / (n * (n - d)), 0.0))
        std_err = np.sqrt(greenwood)
        z = stats.norm.ppf(1 - (1 - level) / 2)
        ok = (surv > 0) & (surv < 1) & np.isfinite(std_err)
        s = np.where(ok, surv, 0.5)
        loglog = np.log(-np.log(s))
        half = z * std_err / np.log(s)
        lower_s = np.exp(-np.exp(loglog - half))   # R: temp1 = lower of S
        upper_s = np.exp(-np.exp(loglog + half))
    return Curve(time, n, d, np.zeros_like(d), c, 1 - surv, std_err,
                 np.where(ok, 1 - upper_s, np.nan), np.where(ok, 1 - lower_s, np.nan))


def aalen_johansen(time, n_events, n_competing, n_censored, level: float = 0.95) -> Curve:
    """Aalen-Johansen cumulative incidence of the event with a competing event, exact on tied times:
    F(t) = sum_{s <= t} S(s-) d1(s)/n(s), S the all-cause Kaplan-Meier.

    Variance: the infinitesimal jackknife, sum over patients of the squared derivative of F(t) with
    respect to the patient's case weight, which is what survfit uses for multi-state curves (it has
    no other). Patients leaving at the same time with the same status have the same derivative, so
    the sum runs over (time, status) cells. A patient still at risk after t_j has derivative B_j
    (recursion below); one leaving at t_m has b_m + a_m (F_j - F_m)/S_m at t_j >= t_m, so
    Var F_j = N(>t_j) B_j^2 + sum_{m<=j} sum_s c_ms (u_ms + F_j v_ms)^2 with u = b - a F_m/S_m,
    v = a/S_m: three cumulative sums, O(times).
    CI as survfit's default for multi-state curves (conf.type = "log" on the probability itself):
    F exp(-+ z se/F), upper capped at 1; undefined (NaN) where F = 0.
    """
    time = np.asarray(time)
    d1 = np.asarray(n_events, float)
    d2 = np.asarray(n_competing, float)
    c = np.asarray(n_censored, float)
    n = _at_risk(d1, d2, c)
    h1, h = d1 / n, (d1 + d2) / n
    surv = np.cumprod(1 - h)
    surv_before = np.concatenate(([1.0], surv[:-1]))
    cif = np.cumsum(surv_before * h1)

    # A_j, B_j: derivatives of S_j and F_j for a patient still at risk after t_j. Linear recursions
    # A_j = A_{j-1}(1 - h_j) + S_{j-1} h_j/n_j and B_j = B_{j-1} + h1_j A_{j-1} - S_{j-1} h1_j/n_j.
    # Closed form of the A recursion: A_j / S_j = A_{j-1} / S_{j-1} + h_j / (n_j (1 - h_j)) while S_j > 0.
    size = len(time)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(h < 1, h / (n * (1 - h)), 0.0)
    a_path = surv * np.cumsum(step)
    # at a time where h = 1 everyone left: S_j = 0 and A_j = S_{j-1} h_j/n_j + A_{j-1} * 0
    last = h >= 1
    if last.any():
        a_path = np.where(last, surv_before * h / n, a_path)
    a_before = np.concatenate(([0.0], a_path[:-1]))
    b_path = np.cumsum(h1 * a_before - surv_before * h1 / n)
    b_before = np.concatenate(([0.0], b_path[:-1]))

    # leaving at t_m with status s: a_m(s), b_m(s)
    total_u2 = np.zeros(size)
    total_uv = np.zeros(size)
    total_v2 = np.zeros(size)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = np.where(surv > 0, 1 / surv, 0.0)
    for count, any_event, is_event in ((d1, 1.0, 1.0), (d2, 1.0, 0.0), (c, 0.0, 0.0)):
        a_m = a_before * (1 - h) - surv_before * (any_event - h) / n
        b_m = b_before + h1 * a_before + surv_before * (is_event - h1) / n
        u = b_m - a_m * cif * inv_s
        v = a_m * inv_s
        total_u2 += count * u * u
        total_uv += count * u * v
        total_v2 += count * v * v
    still_at_risk = n - (d1 + d2 + c)
    variance = (still_at_risk * b_path ** 2 + np.cumsum(total_u2) + 2 * cif * np.cumsum(total_uv)
                + cif ** 2 * np.cumsum(total_v2))
    std_err = np.sqrt(np.maximum(variance, 0.0))
    z = stats.norm.ppf(1 - (1 - level) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(std_err == 0, 0.0, std_err / cif)
        lower = np.where(cif > 0, cif * np.exp(-z * rel), np.nan)
        upper = np.where(cif > 0, np.minimum(cif * np.exp(z * rel), 1.0), np.nan)
    return Curve(time, n, d1, d2, c, cif, std_err, lower, upper)


@dataclass
class AtDays:
    day: np.ndarray
    estimate: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    std_err: np.ndarray
    n_at_risk: np.ndarray
    cumulative_events: np.ndarray
    note: list


def at_days(curve: Curve, days) -> AtDays:
    """The curve at each day as summary.survfit(times = days, extend = FALSE): the last step at or
    before the day; n_at_risk = patients with t >= day. A day before the first time has estimate 0;
    a day after the last time has no estimate (NaN; R leaves the row out)."""
    days = np.asarray(days)
    if len(curve.time) == 0:
        nan = np.full(len(days), np.nan)
        return AtDays(days, nan, nan, nan, nan, np.zeros(len(days), int), np.zeros(len(days), int),
                      ["no patients in the stratum"] * len(days))
    idx = np.searchsorted(curve.time, days, side="right") - 1
    after = np.searchsorted(curve.time, days, side="left")   # first time >= day
    leaving = curve.n_events + curve.n_competing + curve.n_censored
    total = curve.n_at_risk[0]
    n_at_risk = np.where(after < len(curve.time), total - np.concatenate(([0.0], np.cumsum(leaving)))[after], 0)
    before_first = idx < 0
    beyond = days > curve.time[-1]
    safe = np.maximum(idx, 0)
    estimate = np.where(before_first, 0.0, curve.estimate[safe])
    estimate = np.where(beyond, np.nan, estimate)
    ci_lower = np.where(before_first | beyond, np.nan, curve.ci_lower[safe])
    ci_upper = np.where(before_first | beyond, np.nan, curve.ci_upper[safe])
    std_err = np.where(before_first, 0.0, np.where(beyond, np.nan, curve.std_err[safe]))
    cumulative = np.where(before_first, 0, np.cumsum(curve.n_events)[safe])
    notes = []
    for b, e, lo in zip(beyond, estimate, ci_lower):
        if b:
            notes.append("day after the last follow-up time of the stratum: not estimable")
        elif e == 0:
            notes.append("no event by this day: confidence interval undefined")
        elif np.isnan(lo):
            notes.append("every patient at risk had the event: confidence interval undefined")
        else:
            notes.append(None)
    return AtDays(days, estimate, ci_lower, ci_upper, std_err, n_at_risk.astype(int),
                  cumulative.astype(int), notes)


# ------------------------------------------------------------------------------------ log-rank

@dataclass
class LogRank:
    chisq: float
    df: int
    p_value: float
    note: str | None = None


def logrank(group, time, n_events, n_censored) -> LogRank:
    """Log-rank test across groups from per (group, time) counts, by lifelines'
    multivariate_logrank_test with the counts as weights (weights enter its at-risk and event
    counts, so this is the test on the patient rows). df as R's survdiff: groups with expected > 0,
    minus 1 (lifelines counts every group; its chi-square uses a pseudo-inverse and does not change)."""
    from lifelines.statistics import multivariate_logrank_test

    group = np.asarray(group)
    time = np.asarray(time, float)
    d = np.asarray(n_events, float)
    c = np.asarray(n_censored, float)
    present = np.unique(group[(d + c) > 0])
    if len(present) < 2:
        return LogRank(np.nan, 0, np.nan, "fewer than two levels with patients: no test")
    if d.sum() == 0:
        return LogRank(np.nan, len(present) - 1, np.nan, "no events: no test")
    # expected > 0 in a group iff one of its patients is at risk at an event time
    first_event = time[d > 0].min()
    df = len(np.unique(group[((d + c) > 0) & (time >= first_event)])) - 1
    if df < 1:
        return LogRank(np.nan, 0, np.nan, "fewer than two levels at risk at an event time: no test")
    durations = np.concatenate([time[d > 0], time[c > 0]])
    observed = np.concatenate([np.ones(int((d > 0).sum())), np.zeros(int((c > 0).sum()))])
    weights = np.concatenate([d[d > 0], c[c > 0]])
    groups = np.concatenate([group[d > 0], group[c > 0]])
    result = multivariate_logrank_test(durations, groups, observed, weights=weights)
    chisq = float(result.test_statistic)
    return LogRank(chisq, df, float(stats.chi2.sf(chisq, df)))


# ------------------------------------------------------------------------------------ Cox

@dataclass
class CoxData:
    """Rows for a Cox model, aggregated per (time, covariate pattern[, stratum]): counts of events and
    of every exit (events included). X holds one row per pattern, treatment-coded columns `names`;
    `terms` maps each term (variable) to its column indices. With `stratum` (R's strata()), risk sets
    are formed within each stratum and the partial likelihood is the sum over strata."""
    time: np.ndarray        # per row
    pattern: np.ndarray     # per row, index into X
    n_events: np.ndarray    # per row
    n_leaving: np.ndarray   # per row, events + censored + competing
    X: np.ndarray           # patterns x columns
    names: list[str]
    terms: dict[str, list[int]]
    stratum: np.ndarray | None = None   # per row, stratum code (any sortable values); None: one stratum


@dataclass
class Concordance:
    """Harrell's C of the linear predictor as coxph reports it (fit$concordance): pairs counted by
    survival::concordancefit(timewt = "n", reverse = TRUE) within strata; concordance =
    (concordant + tied_x / 2) / (concordant + discordant + tied_x); std_err its infinitesimal
    jackknife standard error (R's "std")."""
    concordant: float
    discordant: float
    tied_x: float
    tied_y: float
    tied_xy: float
    concordance: float
    std_err: float


@dataclass
class CoxResult:
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    hr: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    p_value: np.ndarray
    loglik: float
    n_patients: int
    n_events: int
    note: str | None = None
    zph: dict = field(default_factory=dict)   # term or GLOBAL -> (chisq, df, p)
    loglik_null: float = np.nan      # at beta = 0: coxph's fit$loglik[1] (loglik is fit$loglik[2])
    aic: float = np.nan              # -2 loglik + 2 * estimated coefficients = AIC(fit)
    cov: np.ndarray | None = None    # inverse information (fit$var), NaN rows and columns where aliased


def cox_fit(data: CoxData, check_with_lifelines: bool = False, zph: bool = True,
            init: np.ndarray | None = None) -> CoxResult:
    """Cox PH, Efron ties: Newton-Raphson on the exact Efron partial likelihood computed from the
    (time x pattern) counts (cox_efron), within strata if the data has them, Wald CI and p from the
    inverse information, the proportional-hazards test of cox_zph at the estimate, and coxph's
    log-likelihood at beta = 0 and AIC (its concordance is cox_concordance, not computed here: it
    costs about as much as the fit, which cox_term_tests repeats per term).

    An aliased column (a linear combination of the columns before it and the intercept in the data, e.g.
    the dummy of a level that coincides with another variable's level) has no coefficient, as in R's
    coxph (NA): it is dropped, the model is fitted on the other columns, its values are NaN and the
    result's note names it; a term whose columns are all aliased has no PH test (as cox.zph).

    With check_with_lifelines, lifelines' CoxPHFitter is also fitted on the patient-equivalent rows
    (one row per event, weight 1; one weighted row per (time, pattern) of other exits); a difference
    in coefficient or standard error above 1e-6 relative is noted. The
    tests make that comparison on the reference datasets; it is off at run time because lifelines'
    per-time Python loop costs seconds per model at 10^5-10^6 patients.

    zph=False skips the PH test and init starts Newton-Raphson there instead of at 0 (NaN as 0): the
    refits of cox_term_tests need neither the test nor coxph's path, only the maximum.
    """
    aliased = _aliased_columns(data)
    if aliased:
        return _without_aliased(data, aliased, check_with_lifelines, zph, init)
    n_patients = int(data.n_leaving.sum())
    n_events = int(data.n_events.sum())
    tables = _EfronTables(data)
    beta, loglik, info, iterations, converged = cox_efron(tables, init=init)
    if converged:
        cov = np.linalg.inv(info)
        with np.errstate(invalid="ignore"):
            se = np.sqrt(np.diag(cov))
        converged = np.isfinite(se).all()  # else it stopped along a flat direction: information ~0 there
    if not converged:
        raise FloatingPointError(f"Newton-Raphson did not converge in {iterations} iterations: a hazard ratio may be "
                                 "0 or infinite (monotone likelihood)")
    with np.errstate(over="ignore"):  # a limit beyond the float range is inf, as R's exp gives it
        hr, ci_lower, ci_upper = np.exp(beta), np.exp(beta - Z95 * se), np.exp(beta + Z95 * se)
    result = CoxResult(
        names=list(data.names), coef=beta, se=se, hr=hr, ci_lower=ci_lower, ci_upper=ci_upper,
        p_value=2 * stats.norm.sf(np.abs(beta / se)), loglik=loglik,
        n_patients=n_patients, n_events=n_events, loglik_null=_efron_totals(tables, np.zeros(tables.p))[0],
        aic=-2 * loglik + 2 * len(beta), cov=cov)
    result.zph = cox_zph(data, beta, tables=tables) if zph else {}
    if check_with_lifelines:
        try:
            ll_coef, ll_se = lifelines_cox(data)
        except Exception as exc:  # lifelines' ConvergenceError and the like
            result.note = f"lifelines CoxPHFitter failed: {type(exc).__name__}"
            return result
        worst = max(np.max(np.abs(ll_coef - beta) / np.maximum(1, np.abs(beta))), np.max(np.abs(ll_se / se - 1)))
        if worst > 1e-6:
            result.note = f"lifelines CoxPHFitter differs by {worst:.1e} (relative)"
    return result


ALIAS_TOLERANCE = 1e-9


def _aliased_columns(data: CoxData) -> dict[int, list[int]]:
    """Columns that are, over the patients in the data, a linear combination of the columns before
    them and a constant per stratum (as coxph's Cholesky with pivoting in column order finds them; a
    column constant within every stratum is aliased with the baseline hazards): {column: the kept
    columns it depends on}. Found by Gram-Schmidt on the patient-weighted columns centred within
    stratum, one row per (stratum, pattern), relative tolerance ALIAS_TOLERANCE."""
    n_patterns = data.X.shape[0]
    cells, cell = np.unique(_stratum_index(data) * n_patterns + data.pattern, return_inverse=True)
    weight = np.bincount(cell, weights=data.n_leaving)
    if weight.sum() <= 0:
        return {}
    cell_stratum, X = cells // n_patterns, data.X[cells % n_patterns]
    in_stratum = np.bincount(cell_stratum, weights=weight)[:, None]
    sums = np.zeros((len(in_stratum), X.shape[1]))
    np.add.at(sums, cell_stratum, weight[:, None] * X)
    means = np.divide(sums, in_stratum, out=np.zeros_like(sums), where=in_stratum > 0)
    root = np.sqrt(weight / weight.sum())
    centred = (X - means[cell_stratum]) * root[:, None]
    basis, kept, aliased = [], [], {}
    for j in range(centred.shape[1]):
        column = centred[:, j]
        residual = column.copy()
        for q in basis:
            residual -= (q @ residual) * q
        norm = np.linalg.norm(residual)
        if norm <= ALIAS_TOLERANCE * max(np.linalg.norm(column), 1.0):
            aliased[j] = [k for k, q in zip(kept, basis) if abs(q @ column) > ALIAS_TOLERANCE]
        else:
            basis.append(residual / norm)
            kept.append(j)
    return aliased


def _without_aliased(data: CoxData, aliased: dict[int, list[int]], check_with_lifelines: bool, zph: bool = True,
                     init: np.ndarray | None = None) -> CoxResult:
    """cox_fit on the columns that are not aliased, with NaN in the aliased ones' places."""
    keep = [j for j in range(len(data.names)) if j not in aliased]
    new_index = {j: i for i, j in enumerate(keep)}
    terms = {term: [new_index[c] for c in cols if c in new_index] for term, cols in data.terms.items()}
    reduced = CoxData(time=data.time, pattern=data.pattern, n_events=data.n_events, n_leaving=data.n_leaving,
                      X=data.X[:, keep], names=[data.names[j] for j in keep],
                      terms={term: cols for term, cols in terms.items() if cols}, stratum=data.stratum)
    fit = cox_fit(reduced, check_with_lifelines, zph, None if init is None else init[keep]) if keep else None

    def widen(values) -> np.ndarray:
        out = np.full(len(data.names), np.nan)
        if fit is not None:
            out[keep] = values
        return out

    said = "; ".join(
        f"{data.names[j]} aliased with " + (" + ".join(data.names[k] for k in on) if on else "the baseline hazard")
        + ": no coefficient (NA in R coxph)" for j, on in aliased.items())
    if fit is None:
        return CoxResult(names=list(data.names), coef=widen(None), se=widen(None), hr=widen(None),
                         ci_lower=widen(None), ci_upper=widen(None), p_value=widen(None), loglik=np.nan,
                         n_patients=int(data.n_leaving.sum()), n_events=int(data.n_events.sum()), note=said)
    cov = np.full((len(data.names), len(data.names)), np.nan)
    cov[np.ix_(keep, keep)] = fit.cov
    return CoxResult(names=list(data.names), coef=widen(fit.coef), se=widen(fit.se), hr=widen(fit.hr),
                     ci_lower=widen(fit.ci_lower), ci_upper=widen(fit.ci_upper), p_value=widen(fit.p_value),
                     loglik=fit.loglik, n_patients=fit.n_patients, n_events=fit.n_events,
                     note="; ".join(filter(None, [said, fit.note])), zph=fit.zph, loglik_null=fit.loglik_null,
                     aic=fit.aic, cov=cov)


def lifelines_cox(data: CoxData) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and standard errors from lifelines' CoxPHFitter (Efron, penalizer 0) on rows that
    give the same partial likelihood as the patient rows: one row per event (weight 1) and one row
    per (time, pattern) for the other exits, weighted by their number. Censored rows enter Efron's
    formula only through the risk-set sums, where a weight w is w copies; event rows are not
    aggregated because weighted Efron (lifelines' and coxph's) averages the weights of tied events,
    which is not the same as copies. Convergence is tightened: by default lifelines stops on a
    Newton decrement < 1e-7 without taking the last step, which leaves ~1e-6 in the coefficients."""
    from lifelines import CoxPHFitter

    censored = data.n_leaving - data.n_events
    ev_rows = np.repeat(np.flatnonzero(data.n_events > 0), data.n_events[data.n_events > 0].astype(int))
    cens_rows = np.flatnonzero(censored > 0)
    rows = np.concatenate([ev_rows, cens_rows])
    frame = pd.DataFrame(data.X[data.pattern[rows]], columns=data.names)
    frame["_t"] = data.time[rows].astype(float)
    frame["_e"] = np.concatenate([np.ones(len(ev_rows)), np.zeros(len(cens_rows))])
    frame["_w"] = np.concatenate([np.ones(len(ev_rows)), censored[cens_rows]]).astype(float)
    if data.stratum is not None:
        frame["_s"] = data.stratum[rows]
    fitter = CoxPHFitter(penalizer=0.0, strata=None if data.stratum is None else ["_s"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter.fit(frame, duration_col="_t", event_col="_e", weights_col="_w", batch_mode=True,
                   fit_options={"precision": 1e-14, "r_precision": 1e-15, "max_steps": 100})
    summary = fitter.summary.loc[data.names]
    return summary["coef"].to_numpy(float), summary["se(coef)"].to_numpy(float)


def _stratum_index(data: CoxData) -> np.ndarray:
    """Per row, the stratum as 0, 1, ... (all 0 without strata)."""
    if data.stratum is None:
        return np.zeros(len(data.time), np.int64)
    return np.unique(data.stratum, return_inverse=True)[1].astype(np.int64)


class _Steps:
    """The rows' distinct (stratum, time) pairs, sorted, and per pair its leaving and event counts
    per group of patterns (group = pattern unless given) and the number at risk in its stratum at
    that time (everyone of the stratum leaving then or later)."""

    def __init__(self, data: CoxData, group: np.ndarray | None = None, n_groups: int | None = None):
        times, t_index = np.unique(data.time, return_inverse=True)
        n_times = len(times)
        group = data.pattern if group is None else group[data.pattern]
        n_groups = data.X.shape[0] if n_groups is None else n_groups
        keys, row_step = np.unique(_stratum_index(data) * n_times + t_index, return_inverse=True)
        self.stratum, self.time_index = keys // n_times, keys % n_times
        self.times = times
        n_steps = len(keys)
        cell = row_step * n_groups + group
        size = n_steps * n_groups
        self.leaving = np.bincount(cell, weights=data.n_leaving, minlength=size).reshape(n_steps, n_groups)
        self.events = np.bincount(cell, weights=data.n_events, minlength=size).reshape(n_steps, n_groups)
        # within stratum: the reverse cumulative sum over all steps less that from the next stratum on
        behind = self.leaving[::-1].cumsum(0)[::-1]
        next_stratum = np.searchsorted(self.stratum, self.stratum, side="right")
        self.at_risk = behind - np.vstack([behind, np.zeros((1, n_groups))])[next_stratum]
        # all strata together (cox.zph's Kaplan-Meier)
        self.d_all = np.bincount(t_index, weights=data.n_events, minlength=n_times)
        self.n_all = np.bincount(t_index, weights=data.n_leaving, minlength=n_times)[::-1].cumsum()[::-1]


class _EfronTables:
    """What the Efron partial likelihood needs from the data, independent of beta: per event time
    (per stratum) the risk-set and tied-event counts of each covariate pattern, the event count m and
    the events' covariate sum; the covariates centred (as coxph does) and their outer products per
    pattern."""

    def __init__(self, data: CoxData):
        steps = _Steps(data)
        n_patterns = data.X.shape[0]
        has_event = steps.events.sum(1) > 0
        self.times = steps.times
        self.d_all = steps.d_all                   # events per distinct time (all times, all strata)
        self.n_all = steps.n_all                   # at risk per distinct time (all times, all strata)
        self.at_risk, self.events = steps.at_risk[has_event], steps.events[has_event]
        self.event_time_index = steps.time_index[has_event]   # into times
        self.event_times = self.times[self.event_time_index]
        self.m = self.events.sum(1)
        per_pattern = np.bincount(data.pattern, weights=data.n_leaving, minlength=n_patterns)
        self.center = per_pattern @ data.X / per_pattern.sum()
        self.Xc = data.X - self.center
        p = data.X.shape[1]
        self.p = p
        self.xx = (self.Xc[:, :, None] * self.Xc[:, None, :]).reshape(n_patterns, p * p)
        self.x_events = self.events @ self.Xc
        mi = self.m.astype(np.int64)
        self.k_time = np.repeat(np.arange(len(mi)), mi)            # Efron term -> event time
        self.k_frac = (np.arange(mi.sum()) - np.repeat(np.cumsum(mi) - mi, mi)) / np.repeat(self.m, mi)


def _efron(tables: _EfronTables, beta: np.ndarray):
    """Efron log partial likelihood, and per event time the residual (events' x minus the sum of the
    m Efron means) and the information (sum of the m Efron covariances), all over patterns.

    At an event time with m tied events and c_k = k/m (k = 0..m-1), term k has risk-set total
    den_k = R0 - c_k T0, mean (R1 - c_k T1)/den_k and second moment (R2 - c_k T2)/den_k (R = risk set,
    T = tied events; 0, 1, 2 = sums of phi, phi x, phi x x'). Summed over k they need only the
    scalars sum 1/den, c/den, 1/den^2, c/den^2, c^2/den^2 per time."""
    t = tables
    phi, r1, t1, (a0, a1, b0, b1, b2), loglik = _efron_terms(t, beta)
    phi_xx = phi[:, None] * t.xx
    r2, t2 = t.at_risk @ phi_xx, t.events @ phi_xx
    mean_sum = r1 * a0[:, None] - t1 * a1[:, None]
    resid = t.x_events - mean_sum
    p = t.p
    second = (r2 * a0[:, None] - t2 * a1[:, None]).reshape(-1, p, p)
    outer = (b0[:, None, None] * (r1[:, :, None] * r1[:, None, :])
             - b1[:, None, None] * (r1[:, :, None] * t1[:, None, :] + t1[:, :, None] * r1[:, None, :])
             + b2[:, None, None] * (t1[:, :, None] * t1[:, None, :]))
    info_t = second - outer
    return loglik, resid, info_t


def _efron_totals(tables: _EfronTables, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """_efron's log-likelihood, and its residuals and information summed over the event times: the score
    and the information, which is all Newton-Raphson needs. The sums over time are taken before the
    products with the patterns' outer products (sum_t a_t (R2_t) = (sum_t a_t at_risk_t) phi_xx), so the
    cost is times x patterns x p, not x p^2: at 100k patients and p = 13 about a tenth of _efron's."""
    t = tables
    phi, r1, t1, (a0, a1, b0, b1, b2), loglik = _efron_terms(t, beta)
    score = t.x_events.sum(0) - (a0 @ r1 - a1 @ t1)
    p = t.p
    second = ((a0 @ t.at_risk - a1 @ t.events) @ (phi[:, None] * t.xx)).reshape(p, p)
    cross = r1.T @ (b1[:, None] * t1)
    outer = r1.T @ (b0[:, None] * r1) - cross - cross.T + t1.T @ (b2[:, None] * t1)
    return loglik, score, second - outer


def _efron_terms(t: _EfronTables, beta: np.ndarray):
    """What _efron and _efron_totals share: phi = exp(x beta) per pattern, the risk sets' and tied events'
    sums of phi x per time (r1, t1), the per-time sums of 1/den, c/den, 1/den^2, c/den^2, c^2/den^2 over
    the Efron terms, and the log partial likelihood."""
    phi = np.exp(t.Xc @ beta)
    phi_x = phi[:, None] * t.Xc
    r0, r1 = t.at_risk @ phi, t.at_risk @ phi_x
    t0, t1 = t.events @ phi, t.events @ phi_x
    j, c = t.k_time, t.k_frac
    den = r0[j] - c * t0[j]
    n_times = len(t.m)

    def per_time(values):
        return np.bincount(j, weights=values, minlength=n_times)

    sums = (per_time(1 / den), per_time(c / den), per_time(1 / den ** 2), per_time(c / den ** 2),
            per_time(c * c / den ** 2))
    loglik = float((t.x_events @ beta).sum() - np.log(den).sum())
    return phi, r1, t1, sums, loglik


def cox_efron(tables: _EfronTables, max_iter: int = 50, tol: float = 1e-10, init: np.ndarray | None = None):
    """Newton-Raphson from beta = 0 as coxph (or from init): a step that lowers the log-likelihood is
    halved. Converged when the largest step is below tol (the estimate then has about tol^2 left).
    Returns beta, log-likelihood, information, iterations, converged."""
    beta = np.zeros(tables.p) if init is None else np.nan_to_num(np.asarray(init, dtype=float))
    loglik, score, info = _efron_totals(tables, beta)
    for iteration in range(1, max_iter + 1):
        step = np.linalg.solve(info, score)
        for _ in range(40):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                new_loglik, new_score, new_info = _efron_totals(tables, beta + step)
            if np.isfinite(new_loglik) and new_loglik >= loglik - 1e-12 * abs(loglik):
                break
            step = step / 2
        else:
            return beta, loglik, info, iteration, False
        beta = beta + step
        loglik, score, info = new_loglik, new_score, new_info
        if np.max(np.abs(step)) < tol:
            return beta, loglik, info, iteration, True
    return beta, loglik, info, max_iter, False


def cox_score_information(data: CoxData, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Efron log partial likelihood, score and information at beta, each the sum over the data's
    strata (risk sets within stratum). They do not depend on how the covariates are centred, so
    datasets with no patient in common (e.g. sites, each its own stratum) can be summed."""
    return _efron_totals(_EfronTables(data), np.asarray(beta, float))


def cox_zph(data: CoxData, beta: np.ndarray, transform: str = "km", tables: _EfronTables | None = None) -> dict:
    """Proportional-hazards test of R's cox.zph (survival >= 3.0), ported from its C routine zph1:
    the score test, at the fitted beta, of adding x * g(t) for each term (and for all terms: GLOBAL),
    g(t) = the transformed time centred at its mean over the events. transform "km" (R's default):
    g = 1 - S(t-), S the left-continuous Kaplan-Meier of the model's data (events = the model's
    events, everything else censored; with strata, as R, one curve over all strata while the risk
    sets stay within stratum); the only transform implemented.
    The score vector is (0, sum_t g_t r_t) with r_t the Schoenfeld residual sum at t, and the
    information [[sum I_t, sum g_t I_t], [sum g_t I_t, sum g_t^2 I_t]]; a term's statistic is
    u' I^-1 u over the model's columns plus the term's x * g columns.
    Returns {term: (chisq, df, p)} with "GLOBAL" last."""
    tables = tables or _EfronTables(data)
    _, resid, info_t = _efron(tables, np.asarray(beta, float))
    m = tables.m
    if transform != "km":
        raise ValueError(f"only R's default transform 'km' is implemented, not {transform!r}")
    surv = np.cumprod(1 - tables.d_all / tables.n_all)
    surv_before = np.concatenate(([1.0], surv[:-1]))
    g = (1 - surv_before)[tables.event_time_index]
    g = g - (g * m).sum() / m.sum()
    p = tables.p
    u = np.concatenate([np.zeros(p), (g[:, None] * resid).sum(0)])   # the beta part is 0 at the MLE, as in R
    info = np.zeros((2 * p, 2 * p))
    info[:p, :p] = info_t.sum(0)
    info[:p, p:] = info[p:, :p] = (g[:, None, None] * info_t).sum(0)
    info[p:, p:] = (g[:, None, None] ** 2 * info_t).sum(0)
    out = {}
    for term, cols in list(data.terms.items()) + [("GLOBAL", list(range(p)))]:
        keep = list(range(p)) + [p + col for col in cols]
        sub_u = u[keep]
        try:
            chisq = float(sub_u @ np.linalg.solve(info[np.ix_(keep, keep)], sub_u))
        except np.linalg.LinAlgError:
            chisq = np.nan
        out[term] = (chisq, len(cols), float(stats.chi2.sf(chisq, len(cols))) if np.isfinite(chisq) else np.nan)
    return out


def cox_concordance(data: CoxData, coef: np.ndarray) -> Concordance:
    """Harrell's C of the linear predictor x'coef as coxph's fit$concordance (concordancefit with
    timewt "n", reverse = TRUE, within strata), from the counts: cumulative sums over (stratum, time)
    steps and over the distinct values of the predictor, O(steps x values) as the fit's own tables.

    A pair is comparable when the first to leave has the event and the other leaves later or is
    censored at that time; it is concordant when the event has the larger predictor, tied_x when
    they are equal (a half in C); two events at one time are tied_y (tied_xy if their predictors are
    equal too), outside C. Patients of one (stratum, time, pattern, status) cell share one
    influence on Somers' d, so R's jackknife variance, the sum over patients of the squared
    influence, is a sum over cells. An aliased (NaN) coefficient counts as 0, as in coxph's linear
    predictor; predictors are tied when exactly equal as computed here (R compares its own doubles)."""
    lp = data.X @ np.where(np.isnan(coef), 0.0, coef)
    values, group = np.unique(lp, return_inverse=True)
    steps = _Steps(data, group, len(values))
    deaths = steps.events
    died = deaths.cumsum(0)
    first = np.searchsorted(steps.stratum, steps.stratum, side="left")
    died_by = died - np.vstack([np.zeros((1, len(values))), died])[first]   # in the stratum, up to the step
    k, g = np.nonzero(steps.leaving)               # the cells with patients

    def split(m):
        """At each cell, m summed over the smaller, the equal and the larger predictors of its step."""
        below = m.cumsum(1)
        equal = m[k, g]
        smaller = below[k, g] - equal
        return smaller, equal, below[k, -1] - smaller - equal

    after = split(steps.at_risk - deaths)         # leaving later, or censored at the step
    by = split(died_by)
    now = split(deaths)
    before = [a - b for a, b in zip(by, now)]      # events earlier in the stratum
    d = deaths[k, g]
    concordant, tied_x, discordant = (float(d @ part) for part in after)
    per_step = deaths.sum(1)
    tied_xy = float((d * (d - 1)).sum() / 2)
    tied_y = float((per_step * (per_step - 1)).sum() / 2) - tied_xy
    pairs = concordant + discordant + tied_x
    if pairs == 0:
        return Concordance(concordant, discordant, tied_x, tied_y, tied_xy, np.nan, np.nan)
    somers_d = (concordant - discordant) / pairs

    def squared_influence(count, conc, tied, disc):
        return count @ ((conc - disc) / pairs - somers_d / pairs * (conc + disc + tied)) ** 2

    # an event's pairs: with those after it (concordant if their predictor is smaller) and with the
    # earlier events (concordant if theirs is larger); a censored patient's: with the events up to
    # its time (concordant if theirs is larger)
    variance = (squared_influence(d, after[0] + before[2], after[1] + before[1], after[2] + before[0])
                + squared_influence(steps.leaving[k, g] - d, by[2], by[1], by[0]))
    return Concordance(concordant, discordant, tied_x, tied_y, tied_xy, (somers_d + 1) / 2,
                       float(np.sqrt(variance) / 2))


@dataclass
class TermTest:
    """Joint tests of a term's coefficients: Wald b' V^-1 b over its estimated coefficients, and the
    likelihood-ratio test of dropping the term as drop1(fit, test = "Chisq") (df = estimated
    coefficients of the model less those of the refit without the term; p undefined at df 0)."""
    wald_chisq: float
    wald_df: int
    wald_p: float
    lr_chisq: float
    lr_df: int
    lr_p: float
    note: str | None = None


def cox_term_tests(data: CoxData, result: CoxResult) -> dict[str, TermTest]:
    """Per term of data.terms, the Wald and likelihood-ratio tests of the fit `result` of `data`.

    The likelihood-ratio test refits the model without the term's columns on the same rows (and
    strata); without any column left, the reduced model is the null one (its log-likelihood is at
    beta = 0). As in R, an aliased coefficient counts in neither df: a term whose columns are all
    aliased has no Wald test (NaN, df 0) and its drop1 test has df 0 and no p (R: Df 0, LRT 0,
    Pr NA); dropping a term other columns are aliased with can make them estimable, which R's df
    reflects the same way. A reduced model that cannot be estimated gives NaN with a note."""
    estimated = ~np.isnan(result.coef)
    out = {}
    for term, cols in data.terms.items():
        ok = [j for j in cols if estimated[j]]
        notes = []
        if ok:
            b = result.coef[ok]
            try:
                wald = float(b @ np.linalg.solve(result.cov[np.ix_(ok, ok)], b))
            except np.linalg.LinAlgError:  # e.g. a coefficient drifting to infinity in a sparse model
                wald = np.nan
                notes.append("the variance of its coefficients is singular: no Wald test")
        else:
            wald = np.nan
            notes.append("no estimated coefficient (aliased): no Wald test")
        rest = [j for j in range(len(data.names)) if j not in cols]
        if not rest:
            lr, lr_df = 2 * (result.loglik - result.loglik_null), int(estimated.sum())
        else:
            index = {j: i for i, j in enumerate(rest)}
            reduced = CoxData(time=data.time, pattern=data.pattern, n_events=data.n_events, n_leaving=data.n_leaving,
                              X=data.X[:, rest], names=[data.names[j] for j in rest],
                              terms={t: [index[j] for j in c] for t, c in data.terms.items() if t != term},
                              stratum=data.stratum)
            try:
                fit = cox_fit(reduced, zph=False, init=result.coef[rest])  # from the full model's estimate
                lr = 2 * (result.loglik - fit.loglik)
                lr_df = int(estimated.sum() - (~np.isnan(fit.coef)).sum())
            except (FloatingPointError, np.linalg.LinAlgError) as exc:
                lr, lr_df = np.nan, 0
                notes.append(f"model without {term} not estimable: {str(exc).splitlines()[0][:200]}")
        out[term] = TermTest(
            wald, len(ok), float(stats.chi2.sf(wald, len(ok))) if ok else np.nan,
            float(lr), lr_df, float(stats.chi2.sf(lr, lr_df)) if lr_df > 0 and np.isfinite(lr) else np.nan,
            "; ".join(notes) or None)
    return out
