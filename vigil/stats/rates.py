"""Estimators of SAP A8 and A11 as plain functions over numpy arrays (counts already aggregated).

  clopper_pearson           exact binomial CI from beta quantiles = binom.test(k, n)$conf.int (A8)
  direct_standardised_rate  directly standardised rate with the gamma CI of Fay & Feuer (1997)
                            = epitools::ageadjust.direct(count, pop, stdpop = ...) (A11)

Both are compared with committed R output at 1e-6 in tests/test_rates_reference.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats


# ------------------------------------------------------------------------------------ A8

def clopper_pearson(k, n, level: float = 0.95):
    """Exact (Clopper-Pearson) CI of a proportion k/n as R's binom.test(k, n, conf.level = level):
    lower = qbeta(a/2, k, n - k + 1) (0 when k = 0), upper = qbeta(1 - a/2, k + 1, n - k) (1 when
    k = n). Vectorised (k and n broadcast); NaN where n < 1, k < 0, k > n or k, n not whole numbers
    (binom.test refuses those). Returns (lower, upper): floats for scalar input, else arrays."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    alpha = (1 - level) / 2
    ok = (n >= 1) & (k >= 0) & (k <= n) & (k == np.round(k)) & (n == np.round(n))
    ks, ns = np.where(ok, k, 0.0), np.where(ok, n, 1.0)
    with np.errstate(all="ignore"):
        lower = np.where(ks == 0, 0.0, stats.beta.ppf(alpha, np.maximum(ks, 1), ns - ks + 1))
        upper = np.where(ks == ns, 1.0, stats.beta.ppf(1 - alpha, ks + 1, np.maximum(ns - ks, 1)))
    lower, upper = np.where(ok, lower, np.nan), np.where(ok, upper, np.nan)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


# ------------------------------------------------------------------------------------ A11

class StandardisedRate(NamedTuple):
    crude_rate: float       # sum(counts) / sum(person_time), per unit of person-time
    adjusted_rate: float    # sum(w_i counts_i / person_time_i), w = standard / sum(standard)
    ci_lower: float
    ci_upper: float
    n_cells: int            # cells used (person_time > 0)
    note: str | None = None


def direct_standardised_rate(counts, person_time, standard_person_time, level: float = 0.95) -> StandardisedRate:
    """Directly standardised rate of one stratum over its cells (e.g. age_group x sex) with the
    gamma-method CI of Fay & Feuer (1997), as epitools::ageadjust.direct(count, pop, stdpop):
      w_i = std_i / sum(std), dsr = sum(w_i k_i / pt_i), v = sum(w_i^2 k_i / pt_i^2), wm = max(w_i / pt_i),
      lower = qgamma(a/2, shape = dsr^2 / v, scale = v / dsr),
      upper = qgamma(1 - a/2, shape = (dsr + wm)^2 / (v + wm^2), scale = (v + wm^2) / (dsr + wm)).
    Rates are per unit of person_time (multiply by 1000 for per 1,000 person-years).

    SAP A11: cells where the stratum has no person-time are left out of its standard. Such cells may
    be passed (person_time 0, count 0): they are dropped here before the weights are formed, which is
    ageadjust.direct on the remaining cells (with them R would give NaN). A count > 0 on no
    person-time is an error.

    One difference from R, on purpose: with no event in any cell (dsr = 0) R's lower limit is NaN
    (shape 0/0); here it is 0, the limit of the gamma interval as dsr -> 0 and the convention of
    the exact Poisson CI of A1. The upper limit is R's (a gamma with shape 1 and scale wm)."""
    k = np.asarray(counts, dtype=float).ravel()
    pt = np.asarray(person_time, dtype=float).ravel()
    std = np.asarray(standard_person_time, dtype=float).ravel()
    if not (len(k) == len(pt) == len(std)):
        raise ValueError("counts, person_time and standard_person_time must have one value per cell")
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(pt)) and np.all(np.isfinite(std))):
        raise ValueError("counts and person-time must be finite")
    if np.any(k < 0) or np.any(pt < 0) or np.any(std < 0):
        raise ValueError("counts and person-time must be >= 0")
    if np.any((pt == 0) & (k > 0)):
        raise ValueError("a cell has events but no person-time")
    keep = pt > 0
    k, pt, std = k[keep], pt[keep], std[keep]
    n_cells = int(keep.sum())
    if n_cells == 0:
        return StandardisedRate(np.nan, np.nan, np.nan, np.nan, 0, "no person-time in the stratum")
    if std.sum() <= 0:
        return StandardisedRate(float(k.sum() / pt.sum()), np.nan, np.nan, np.nan, n_cells,
                                "no standard person-time in the stratum's cells")
    alpha = 1 - level
    crude = k.sum() / pt.sum()
    w = std / std.sum()
    dsr = float(np.sum(w * k / pt))
    var = float(np.sum(w ** 2 * k / pt ** 2))
    wm = float(np.max(w / pt))
    note = None
    if dsr > 0:
        lower = float(stats.gamma.ppf(alpha / 2, dsr ** 2 / var, scale=var / dsr))
    else:
        lower = 0.0
        note = "no events: lower limit 0 (R's ageadjust.direct gives NaN)"
    upper = float(stats.gamma.ppf(1 - alpha / 2, (dsr + wm) ** 2 / (var + wm ** 2), scale=(var + wm ** 2) / (dsr + wm)))
    if n_cells < len(keep):
        left = f"{len(keep) - n_cells} cell(s) without person-time left out of the standard"
        note = f"{left}; {note}" if note else left
    return StandardisedRate(float(crude), dsr, lower, upper, n_cells, note)
