"""Group-sequential Poisson MaxSPRT with power-type alpha spending (SAP 7), as R's Sequential 4.5 does it.

One pure function, `maxsprt_poisson`, takes the cumulative observed events O_k and expected events
E_k of every look so far and returns one `LookResult` per look. It reproduces, look by look,
``AnalyzeSetUp.Poisson(SampleSize=T, alpha, D=0, M, AlphaSpendType="power-type", rho)`` followed by
``Analyze.Poisson(test=k, cum.mu0=E_k, events=O_k - O_{k-1})`` of the CRAN package Sequential 4.5
(Silva & Kulldorff); tests/test_sequential.py compares it with that package's output in
tests/reference/expected/sequential (written by tests/reference/sequential_reference.R).

The method (Kulldorff, Davis, Kolczak, Lewis, Lieu & Platt 2011, "A maximized sequential probability
ratio test for drug and vaccine safety surveillance", Sequential Analysis 30:58-78; Silva & Kulldorff
2015, "Continuous versus group sequential analysis for post-market drug and vaccine safety
surveillance", Biometrics 71:851-858), exactly as Sequential 4.5 computes it:

* LLR_k = 0 if O_k <= E_k, else (E_k - O_k) + O_k ln(O_k / E_k)  (H0: RR <= 1, one-sided).
* The test starts at the first look s with O_s >= M. Earlier looks are no test: Sequential reports
  target and actual alpha 0 and no critical value there. Nothing of them enters the computation.
* Target alpha at a tested look: alpha (E_k / T)^rho, and alpha itself once E_k >= T.
* At the start look the critical value c_s is the smallest c with P(X >= c) <= target, X ~ Poisson(E_s)
  (R: ``qpois(1 - target, E_s) + 1``; the quantile's left-continuity fuzz of R 4.2 is reproduced);
  alpha spent = P(X >= c_s). The state kept is p[x] = P(X_s = x), x = 0 .. c_s - 1: the probability of
  each count without a signal.
* At a later look the increment d = E_k - E_{k-1} is Poisson(d) and independent. The critical value
  c_k is the smallest c >= c_{k-1} (Sequential never lowers it) with
  sum_x p[x] P(Y_d >= c - x) <= target_k - spent_{k-1}; spent_k = spent_{k-1} + that sum, and
  p becomes the no-signal count distribution sum_x p[x] P(Y_d = y - x), y = 0 .. c_k - 1.
  Sequential finds c by bisection over integers in [c_{k-1}, c_{k-1} + qpois(1 - a, d)]; the sum is
  monotone in c, so the smallest c passing is the same.
* Signal at look k if O_k >= c_k. A signal is final: later looks report it with no critical value and
  no alpha (NA in Sequential's table).
* Surveillance ends at the first look with E_k >= T (the target is then all of alpha; Sequential
  would allow further looks to spend what is left, the SAP does not) or at look `max_looks`.

Data cuts that Sequential refuses (it takes per-look increments and stops on events < 0 or
mu0 <= 0) follow SAP 7, "the test goes on with the new numbers":

* O falls: the critical values do not depend on O (only on the E's and on the start look), so they go
  on as before; the signal compares the new O_k with c_k (and needs O_k >= M). This is what
  Sequential computes when its stored per-look counts are corrected to the new cumulative O_k.
* E falls or stays: the null count process cannot lose expected events, so the computation uses the
  running maximum of E (no new exposure: c_k = c_{k-1}, no alpha spent, target unchanged; later
  increments are measured from that maximum, so the count at a new maximum is Poisson(E_k) as it
  should be). LLR, SIR and the critical LLR use the reported E_k. This is Sequential given an
  increment of mu0 -> 0 at that look.
Both are flagged in `note`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, pdtr, xlogy

# R >= 4.2 qpois(p): p *= 1 - 8 * DBL_EPSILON before searching the smallest y with ppois(y) >= p.
_QFUZZ = 1.0 - 8.0 * np.finfo(float).eps
_SPENT_TOL = 1e-8  # Sequential: alpha counts as fully spent when spent >= alpha - 1e-8

# status codes, one per branch of Analyze.Poisson's report
BEFORE_M = "before_M"                  # not started: cumulative events < M ("H0 cannot be rejected yet")
NO_SIGNAL = "no_signal"                # tested, no signal, E < T ("Do not reject H0")
END_ALPHA_LEFT = "end_alpha_left"      # E >= T, no signal, some alpha unspent
END_ALPHA_SPENT = "end_alpha_spent"    # E >= T, no signal, alpha spent
SIGNAL = "signal"                      # signal at this look ("Reject H0")
SIGNALLED_EARLIER = "signalled_earlier"  # signal at an earlier look, reported again


@dataclass(frozen=True)
class LookResult:
    """One look. `alpha_target`, `alpha_spent` are cumulative; None where Sequential reports NA."""
    look: int
    observed: int
    expected: float
    sir: float                      # O / E (Sequential's "RR estimate")
    llr: float
    critical_events: int | None     # signal when observed >= critical_events
    critical_llr: float | None      # LLR(critical_events, expected)
    alpha_target: float | None
    alpha_spent: float | None
    signal: bool                    # final once true
    status: str                     # one of the status codes above
    note: str


def llr(observed: float, expected: float) -> float:
    """Poisson MaxSPRT log-likelihood ratio, one-sided (0 when O <= E)."""
    if observed <= expected:
        return 0.0
    return (expected - observed) + observed * math.log(observed / expected)


def _qpois(p: float, mu: float) -> int:
    """R's qpois(p, mu) for 0 < p < 1, mu > 0: smallest y >= 0 with ppois(y, mu) >= p (1 - 8 eps)."""
    target = p * _QFUZZ
    n = int(mu + 12.0 * math.sqrt(mu) + 40.0)
    start = 0
    while True:
        cdf = pdtr(np.arange(start, n), mu)
        hit = np.flatnonzero(cdf >= target)
        if hit.size:
            return start + int(hit[0])
        start, n = n, 2 * n


def _pmf(k: np.ndarray, mu: float) -> np.ndarray:
    return np.exp(xlogy(k, mu) - mu - gammaln(k + 1.0))


def maxsprt_poisson(observed: Sequence[int], expected: Sequence[float], *, alpha: float = 0.05,
                    rho: float = 1.0, M: int = 4, T: float = 60.0,
                    max_looks: int = 10) -> list[LookResult]:
    """Group-sequential Poisson MaxSPRT of SAP 7 on cumulative counts, one row per look.

    observed[k], expected[k] are the cumulative O and E at look k + 1. Power-type alpha spending
    alpha * min(1, E/T)^rho, no signal before M events, exact critical values in events: the same
    numbers as R's Sequential 4.5 AnalyzeSetUp.Poisson(SampleSize=T, alpha, D=0, M,
    AlphaSpendType="power-type", rho) + Analyze.Poisson (see the module docstring). Looks after the end
    of surveillance (E >= T, or look max_looks) are refused.
    """
    if len(observed) != len(expected):
        raise ValueError("observed and expected must have one value per look")
    if not 0 < alpha < 0.5 or rho <= 0 or T <= 0 or M < 1 or max_looks < 1:
        raise ValueError("need 0 < alpha < 0.5, rho > 0, T > 0, M >= 1, max_looks >= 1")
    if len(observed) > max_looks:
        raise ValueError(f"{len(observed)} looks given; surveillance ends at look {max_looks}")

    out: list[LookResult] = []
    started = False
    signal_look = 0
    cv = 0                           # critical value of the previous tested look
    p = np.empty(0)                  # P(count = x, no signal so far), x = 0 .. cv - 1
    spent = 0.0
    e_max = 0.0                      # running maximum of E: the null exposure so far
    prev_o: int | None = None
    prev_e: float | None = None

    for i, (o_raw, e_raw) in enumerate(zip(observed, expected, strict=True)):
        look = i + 1
        o, e = int(o_raw), float(e_raw)
        if o != o_raw or o < 0:
            raise ValueError(f"look {look}: observed must be a whole number >= 0, got {o_raw!r}")
        if not math.isfinite(e) or e <= 0:
            raise ValueError(f"look {look}: expected must be a finite number > 0, got {e_raw!r}")
        if out and e_max >= T:
            raise ValueError(f"look {look}: surveillance ended at look {len(out)}")

        notes = []
        if prev_o is not None and o < prev_o:
            notes.append(f"O fell since the previous look ({prev_o} -> {o})")
        if prev_e is not None and e < prev_e:
            notes.append(f"E fell since the previous look ({prev_e:g} -> {e:g})")
        elif prev_e is not None and e == prev_e:
            notes.append("E unchanged since the previous look")
        prev_o, prev_e = o, e

        d = max(0.0, e - e_max)      # new null exposure
        e_max = max(e_max, e)
        end = e_max >= T
        ratio, stat = o / e, llr(o, e)

        if signal_look:
            notes.append(f"signal at look {signal_look}")
            out.append(LookResult(look, o, e, ratio, stat, None, None, None, None, True,
                                  SIGNALLED_EARLIER, "; ".join(notes)))
            continue

        if not started and o < M:
            notes.append(f"no signal possible before M = {M} events")
            if end:
                notes.append("end of surveillance (E >= T)")
            elif look == max_looks:
                notes.append("end of surveillance (last look)")
            out.append(LookResult(look, o, e, ratio, stat, None, None, 0.0, 0.0, False,
                                  BEFORE_M, "; ".join(notes)))
            continue

        target = alpha if end else alpha * (e_max / T) ** rho
        if not started:
            # first test: the whole cumulative count, nothing conditioned on
            started = True
            cv = _qpois(1.0 - target, e_max) + 1
            p = _pmf(np.arange(cv, dtype=float), e_max)
            spent = 1.0 - float(pdtr(cv - 1, e_max))
            if look > 1:
                notes.append(f"first test (O >= M = {M})")
        elif d > 0.0 and target > spent:
            room = target - spent
            hi = cv + _qpois(1.0 - room, d)                      # cv_prev - 1 + qpois(1 - room, d) + 1
            # tail[c - cv] = sum_x p[x] P(Y_d >= c - x) for c = cv .. hi
            sf = 1.0 - pdtr(np.arange(hi, dtype=float), d)       # sf[j] = P(Y_d >= j + 1), j < hi
            tail = np.convolve(p, sf)[cv - 1:hi]
            ok = tail <= room                                    # monotone; true at c = hi in exact arithmetic
            new_cv = cv + (int(np.argmax(ok)) if ok.any() else len(tail) - 1)
            spent = spent + float(tail[new_cv - cv])
            p = np.convolve(p, _pmf(np.arange(new_cv, dtype=float), d))[:new_cv]
            cv = new_cv
        # else: no new exposure (or no alpha to spend), the critical value and the alpha spent stay

        signal = o >= cv and o >= M
        if o < M:
            notes.append(f"fewer than M = {M} events after a correction: no signal possible")
        if signal:
            signal_look = look
            status = SIGNAL
        elif end:
            status = END_ALPHA_LEFT if alpha - spent > _SPENT_TOL else END_ALPHA_SPENT
        else:
            status = NO_SIGNAL
        if end:
            notes.append("end of surveillance (E >= T)")
        elif look == max_looks:
            notes.append("end of surveillance (last look)")
        out.append(LookResult(look, o, e, ratio, stat, cv, llr(cv, e), target, spent, signal,
                              status, "; ".join(notes)))
    return out
