"""The report's figure cache (vigil.report.figures.figure_cache): a figure drawn again from the same
input is taken from the cache, byte for byte what drawing it returns; another input, a damaged entry
or no cache at all draws it."""

from __future__ import annotations

import json
import os
import time

from vigil.report import figures as F

ROWS = [{"label": "0-90", "rate": 40.0, "lo": 30.0, "hi": 52.0, "shown": True, "note": ""},
        {"label": "91-365", "rate": 20.0, "lo": 15.0, "hi": 26.0, "shown": True, "note": ""}]


def _drawn(monkeypatch) -> list[str]:
    """Every figure actually drawn from now on, by id."""
    drawn: list[str] = []
    render = F._render

    def counting(fig):
        drawn.append(fig.get_axes()[0].get_ylabel())
        return render(fig)

    monkeypatch.setattr(F, "_render", counting)
    return drawn


def test_a_figure_with_the_same_input_is_drawn_once_and_equal_from_the_cache(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch)
    with F.figure_cache(tmp_path):
        first = F.risk_window_figure(ROWS)
    with F.figure_cache(tmp_path):
        second = F.risk_window_figure(ROWS)
    assert len(drawn) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    assert second == first and second is not first
    assert F.risk_window_figure(ROWS) == first  # drawn without a cache: the same PNG
    assert len(drawn) == 2


def test_another_input_is_drawn_again(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch)
    with F.figure_cache(tmp_path):
        first = F.risk_window_figure(ROWS)
        other = F.risk_window_figure([ROWS[0], {**ROWS[1], "hi": 36.0}])
    assert len(drawn) == 2 and other.uri != first.uri


def test_no_figure_is_cached_as_no_figure(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch)
    hidden = [{**r, "shown": False} for r in ROWS]
    with F.figure_cache(tmp_path):
        assert F.risk_window_figure(hidden) is None
        assert F.risk_window_figure(hidden) is None
    assert drawn == [] and [json.loads(p.read_text()) for p in tmp_path.glob("*.json")] == [None]


def test_a_damaged_entry_is_drawn_again_and_replaced(tmp_path, monkeypatch):
    with F.figure_cache(tmp_path):
        first = F.risk_window_figure(ROWS)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text('{"id": "fig_risk_windows", "ur')  # a write cut short
    drawn = _drawn(monkeypatch)
    with F.figure_cache(tmp_path):
        again = F.risk_window_figure(ROWS)
    assert len(drawn) == 1 and again == first and json.loads(entry.read_text())["uri"] == first.uri


def test_entries_unused_for_the_cache_period_are_removed(tmp_path):
    with F.figure_cache(tmp_path):
        F.risk_window_figure(ROWS)
    (entry,) = tmp_path.glob("*.json")
    old = time.time() - (F.CACHE_DAYS + 1) * 86400
    os.utime(entry, (old, old))
    with F.figure_cache(tmp_path):
        pass
    assert not entry.exists()
