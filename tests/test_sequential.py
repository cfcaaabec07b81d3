"""vigil.stats.sequential (SAP 7) against R's Sequential 4.5, and on small known answers.

tests/reference/sequential_reference.R ran AnalyzeSetUp.Poisson + Analyze.Poisson on the series of
tests/reference/data/sequential_series.csv and wrote tests/reference/expected/sequential/looks.csv;
here the Python function must give, look by look, the same critical values, signals and report
branches, and the same alpha (target and actual), LLR and SIR to 1e-6.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from vigil.stats import sequential as sq
from vigil.stats.sequential import LookResult, llr, maxsprt_poisson

REFERENCE = Path(__file__).parent / "reference"
SERIES = pl.read_csv(REFERENCE / "data" / "sequential_series.csv")
EXPECTED = pl.read_csv(REFERENCE / "expected" / "sequential" / "looks.csv")  # R's NA: an empty cell, null
TOL = 1e-6


def _run(series: str) -> list[LookResult]:
    s = SERIES.filter(pl.col("series") == series).sort("look")
    return maxsprt_poisson(s["observed"].to_list(), s["expected"].to_list())


def expected_rows(series: str) -> list[dict]:
    """R's looks of a series, in look order (None where R reports NA)."""
    return EXPECTED.filter(pl.col("series") == series).sort("look").to_dicts()


# ------------------------------------------------------------------------------ against R

def test_reference_was_made_by_sequential_4_5():
    versions = pl.read_csv(REFERENCE / "expected" / "sequential" / "versions.csv", infer_schema_length=0)
    assert versions["Sequential"][0] == "4.5"
    assert set(EXPECTED["series"]) == set(SERIES["series"])
    assert EXPECTED.height == SERIES.height


@pytest.mark.parametrize("series", sorted(set(SERIES["series"])))
def test_matches_sequential_look_by_look(series):
    got = _run(series)
    want = expected_rows(series)
    assert [r.look for r in got] == [w["look"] for w in want]
    for r, w in zip(got, want, strict=True):
        where = f"{series} look {r.look}"
        assert r.observed == w["observed"] and r.expected == pytest.approx(w["expected"], abs=1e-12), where
        assert r.status == w["status"], where
        assert r.signal == w["signal"], where
        if w["critical_events"] is None:
            assert r.critical_events is None and r.critical_llr is None, where
        else:
            assert r.critical_events == w["critical_events"], where
            assert r.critical_llr == pytest.approx(w["critical_llr"], abs=TOL), where
        for field in ("alpha_target", "alpha_spent"):
            mine, theirs = getattr(r, field), w[field]
            if theirs is None:
                assert mine is None, f"{where} {field}"
            else:
                assert mine == pytest.approx(theirs, abs=TOL), f"{where} {field}"
        assert r.llr == pytest.approx(w["llr"], abs=TOL), where
        assert r.sir == pytest.approx(w["sir"], abs=TOL), where


def test_reference_covers_every_branch():
    assert set(EXPECTED["status"]) == {sq.BEFORE_M, sq.NO_SIGNAL, sq.END_ALPHA_LEFT, sq.SIGNAL,
                                    sq.SIGNALLED_EARLIER}


# ------------------------------------------------------------------------------ known answers

def test_llr_formula():
    assert llr(0, 3.0) == 0.0
    assert llr(3, 3.0) == 0.0
    assert llr(2, 3.0) == 0.0
    assert llr(10, 5.0) == pytest.approx(-5 + 10 * math.log(2), abs=1e-14)
    assert llr(30, 15.0) == pytest.approx(5.794415416798359, abs=1e-12)


def test_first_look_critical_value_from_the_poisson_tail():
    # target 0.05 * 6/60 = 0.005; c = smallest count with P(X >= c) <= 0.005, X ~ Poisson(6)
    (r,) = maxsprt_poisson([5], [6.0])
    assert r.alpha_target == pytest.approx(0.005, abs=1e-15)
    c = r.critical_events
    assert stats.poisson.sf(c - 1, 6.0) <= 0.005 < stats.poisson.sf(c - 2, 6.0)
    assert c == 14
    assert r.alpha_spent == pytest.approx(stats.poisson.sf(c - 1, 6.0), abs=1e-15)
    assert r.critical_llr == pytest.approx(llr(14, 6.0), abs=1e-15)
    assert r.sir == pytest.approx(5 / 6) and not r.signal and r.status == sq.NO_SIGNAL


def test_target_is_power_type_spending():
    E = [6.0, 13.5, 21.0, 30.0]
    for r in maxsprt_poisson([5, 12, 20, 29], E):
        assert r.alpha_target == pytest.approx(0.05 * r.expected / 60, abs=1e-15)
    rho2 = maxsprt_poisson([5, 12], [6.0, 13.5], rho=2.0)
    assert [r.alpha_target for r in rho2] == pytest.approx([0.05 * (6 / 60) ** 2, 0.05 * (13.5 / 60) ** 2])


def test_alpha_spent_is_the_exact_null_probability_of_a_signal():
    # Independent dynamic programme on the counts: P_H0(O_j >= c_j for some j <= k), start at look 1.
    E = [6.0, 12.0, 18.0, 24.0, 30.0, 36.0, 42.0]
    rows = maxsprt_poisson([5, 12, 18, 24, 30, 36, 42], E)
    n = 200
    alive = np.zeros(n)
    alive[0] = 1.0                       # P(count = x, no signal yet)
    signalled, prev_e = 0.0, 0.0
    for r in rows:
        step = stats.poisson.pmf(np.arange(n), r.expected - prev_e)
        dist = np.convolve(alive, step)[:n]
        signalled += dist[r.critical_events:].sum()
        alive = dist.copy()
        alive[r.critical_events:] = 0.0
        prev_e = r.expected
        assert r.alpha_spent == pytest.approx(signalled, abs=1e-12)
        assert r.alpha_spent <= r.alpha_target


def test_critical_values_never_fall():
    rows = maxsprt_poisson([5, 12, 13, 15, 40], [6.0, 12.0, 12.3, 20.0, 59.0])
    cvs = [r.critical_events for r in rows]
    assert cvs == sorted(cvs)


def test_no_signal_before_M_events_whatever_the_llr():
    rows = maxsprt_poisson([3, 3, 4], [0.01, 0.02, 0.03])
    assert [r.status for r in rows] == [sq.BEFORE_M, sq.BEFORE_M, sq.SIGNAL]
    assert rows[0].llr > 14 and not rows[0].signal and rows[0].critical_events is None
    assert rows[0].alpha_target == 0.0 and rows[0].alpha_spent == 0.0      # as Sequential reports
    assert "before M = 4" in rows[0].note
    # the first test is unconditional: cumulative Poisson(E_3), target alpha * E_3 / T
    assert rows[2].alpha_target == pytest.approx(0.05 * 0.03 / 60)
    assert rows[2].alpha_spent == pytest.approx(stats.poisson.sf(rows[2].critical_events - 1, 0.03), rel=1e-12)


def test_a_signal_is_final():
    rows = maxsprt_poisson([7, 14, 30, 30, 31], [5.0, 10.0, 15.0, 40.0, 55.0])
    assert [r.signal for r in rows] == [False, False, True, True, True]
    assert rows[2].status == sq.SIGNAL
    for r in rows[3:]:
        assert r.status == sq.SIGNALLED_EARLIER and r.llr == 0.0
        assert r.critical_events is None and r.alpha_target is None and r.alpha_spent is None
        assert "signal at look 3" in r.note


def test_signal_when_observed_reaches_the_critical_value():
    base = maxsprt_poisson([7, 0], [5.0, 10.0])[1]           # O = 0: just to get c_2
    c = base.critical_events
    assert maxsprt_poisson([7, c], [5.0, 10.0])[1].signal
    assert not maxsprt_poisson([7, c - 1], [5.0, 10.0])[1].signal


def test_observed_falls_the_test_goes_on():
    plain = maxsprt_poisson([6, 14, 15, 20], [6.0, 12.0, 18.0, 24.0])
    fell = maxsprt_poisson([6, 14, 11, 20], [6.0, 12.0, 18.0, 24.0])
    for a, b in zip(plain, fell, strict=True):
        assert (a.critical_events, a.alpha_spent, a.alpha_target) == \
            (b.critical_events, b.alpha_spent, b.alpha_target)
    assert "O fell since the previous look (14 -> 11)" in fell[2].note
    assert fell[2].observed == 11 and fell[2].sir == pytest.approx(11 / 18)


def test_observed_falls_below_M_after_the_start():
    # Sequential stops with an error here; the test goes on, and no signal is possible below M
    rows = maxsprt_poisson([5, 3, 6], [2.0, 2.1, 3.0])
    assert [r.status for r in rows] == [sq.NO_SIGNAL] * 3
    assert rows[1].critical_events is not None and not rows[1].signal
    assert "fewer than M = 4" in rows[1].note


def test_expected_falls_the_exposure_does_not():
    rows = maxsprt_poisson([6, 13, 13, 20], [6.0, 12.0, 10.5, 18.0])
    ref = maxsprt_poisson([6, 13, 20], [6.0, 12.0, 18.0])
    assert rows[2].critical_events == rows[1].critical_events
    assert rows[2].alpha_spent == rows[1].alpha_spent
    assert rows[2].alpha_target == rows[1].alpha_target
    assert rows[2].llr == pytest.approx(llr(13, 10.5)) and rows[2].critical_llr == pytest.approx(llr(22, 10.5))
    assert "E fell since the previous look (12 -> 10.5)" in rows[2].note
    # measured from the largest E so far, the next look is the one without the fall
    assert (rows[3].critical_events, rows[3].alpha_spent) == (ref[2].critical_events, ref[2].alpha_spent)
    assert "E unchanged" in maxsprt_poisson([6, 7], [6.0, 6.0])[1].note


def test_end_of_surveillance():
    rows = maxsprt_poisson([10, 25, 37, 50, 66], [12.0, 24.0, 36.0, 48.0, 63.0])
    assert rows[-1].alpha_target == 0.05 and rows[-1].status == sq.END_ALPHA_LEFT
    assert rows[-1].alpha_spent < 0.05 and "end of surveillance (E >= T)" in rows[-1].note
    with pytest.raises(ValueError, match="surveillance ended at look 5"):
        maxsprt_poisson([10, 25, 37, 50, 66, 70], [12.0, 24.0, 36.0, 48.0, 63.0, 70.0])
    O, E = list(range(5, 55, 5)), [4.0 * k for k in range(1, 11)]
    assert "end of surveillance (last look)" in maxsprt_poisson(O, E)[-1].note
    with pytest.raises(ValueError, match="surveillance ends at look 10"):
        maxsprt_poisson(O + [60], E + [44.0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        maxsprt_poisson([1, 2], [1.0])
    with pytest.raises(ValueError):
        maxsprt_poisson([-1], [1.0])
    with pytest.raises(ValueError):
        maxsprt_poisson([1.5], [1.0])
    with pytest.raises(ValueError):
        maxsprt_poisson([1], [0.0])
    with pytest.raises(ValueError):
        maxsprt_poisson([1], [float("nan")])
    assert maxsprt_poisson([], []) == []


def test_a_ten_look_series_is_fast():
    O, E = [4, 9, 15, 19, 26, 30, 36, 41, 44, 52], [5.0 * k for k in range(1, 11)]
    maxsprt_poisson(O, E)
    start = time.perf_counter()
    for _ in range(20):
        maxsprt_poisson(O, E)
    assert (time.perf_counter() - start) / 20 < 0.05
