"""The report's figures (matplotlib, Agg), embedded as base64 PNG (200 dpi). Each figure is drawn only from
values that the tables show after disclosure control, and knows how many data points it drew
(`Figure.points`), so that an empty plot is never published."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import math
import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

plt.rcParams.update({
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.parse_math": False,  # labels (strata, site ids) are text: a `$` in one is not mathtext
})

COLOURS = ["#1f4e79", "#c0504d", "#4f8f3a", "#8064a2", "#d58b00", "#2c9ca6", "#7f7f7f", "#a0522d", "#e377c2",
           "#17becf"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
WIDTH = 7.0  # inches: the text width of an A4 portrait page


DPI = 200  # PNG: WeasyPrint lays raster images out ~10x faster than SVG, and the files are smaller


@dataclass
class Figure:
    id: str
    title: str
    uri: str  # data:image/png;base64,...
    points: int  # data points drawn
    caption: str = ""
    width_in: float = WIDTH  # printed width, inches

    @property
    def width_css(self) -> str:
        return f"{self.width_in:.2f}in"


# ---------------------------------------------------------------------------------------------
# Drawing a figure costs about half a second (most of a report's figure time); a run rendered again,
# or a later run whose figure has the same input, takes the PNG from a cache beside the reports.
# A figure is a pure function of its arguments and of this module, matplotlib and DPI, so the key is
# the hash of those; the cached file holds exactly what drawing it would return.

_cache_dir: ContextVar[Path | None] = ContextVar("figure_cache", default=None)
_CODE = hashlib.sha256(Path(__file__).read_bytes() + f"{matplotlib.__version__}|{DPI}".encode()).hexdigest()
CACHE_DAYS = 90  # entries not used for this long are removed


@contextmanager
def figure_cache(folder: Path) -> Iterator[None]:
    """Figures drawn inside this block are kept in (and taken from) `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    token = _cache_dir.set(folder)
    try:
        yield
    finally:
        _cache_dir.reset(token)
        stale = time.time() - CACHE_DAYS * 86400
        for entry in folder.glob("*.json"):
            try:
                if entry.stat().st_mtime < stale:
                    entry.unlink()
            except OSError:
                pass


def _cached(draw):
    @functools.wraps(draw)
    def cached(*args, **kwargs):
        folder = _cache_dir.get()
        if folder is None:
            return draw(*args, **kwargs)
        key = hashlib.sha256(f"{_CODE}|{draw.__name__}|{args!r}|{sorted(kwargs.items())!r}".encode()).hexdigest()
        path = folder / f"{key}.json"
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            os.utime(path)
            return None if kept is None else Figure(**kept)
        except (OSError, ValueError, TypeError):
            pass
        figure = draw(*args, **kwargs)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        try:  # a write that fails or is interrupted leaves no entry: the figure is drawn again next time
            partial.write_text(json.dumps(None if figure is None else asdict(figure)), encoding="utf-8")
            os.replace(partial, path)
        except OSError:
            partial.unlink(missing_ok=True)
        return figure
    return cached


def _render(fig) -> tuple[str, float]:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05, metadata={"Software": None})
    plt.close(fig)
    data = buffer.getvalue()
    width_px = int.from_bytes(data[16:20], "big")  # PNG IHDR
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width_px / DPI


def _figure(fig_id: str, title: str, fig, points: int, caption: str) -> Figure:
    uri, width = _render(fig)
    return Figure(fig_id, title, uri, points, caption, width)


# ---------------------------------------------------------------------------------------------
# attrition


@_cached
def attrition_figure(steps: list[tuple[str, str, str, str]]) -> Figure:
    """steps: (step, criterion, remaining, excluded) as shown in the attrition table; the exclusions of a
    step are drawn on the way into its box."""
    n = len(steps)
    box_h, gap = 0.62, 1.02
    height = gap * n + 0.1
    fig, ax = plt.subplots(figsize=(WIDTH, height))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, height)
    ax.axis("off")
    for i, (step, criterion, remaining, excluded) in enumerate(steps):
        y = height - 0.05 - (i + 0.5) * gap
        label = criterion if not step.isdigit() else f"{step}. {criterion}"
        text = "\n".join(textwrap.wrap(label, 58)) + f"\nn = {remaining}"
        ax.add_patch(FancyBboxPatch((0.2, y - box_h / 2), 6.0, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor="#eaf1f8", edgecolor="#1f4e79", linewidth=0.8))
        ax.text(3.2, y, text, ha="center", va="center", fontsize=7.5, linespacing=1.25)
        if i > 0:
            ax.annotate("", xy=(3.2, y + box_h / 2 + 0.02), xytext=(3.2, y + gap - box_h / 2 - 0.02),
                        arrowprops={"arrowstyle": "-|>", "color": "#1f4e79", "lw": 0.8})
            ymid = y + gap / 2
            ax.plot([3.2, 6.75], [ymid, ymid], color="#7f7f7f", lw=0.7)
            ax.add_patch(FancyBboxPatch((6.75, ymid - 0.17), 3.0, 0.34, boxstyle="round,pad=0.02,rounding_size=0.06",
                                        facecolor="#f7f7f7", edgecolor="#7f7f7f", linewidth=0.7))
            ax.text(8.25, ymid, f"Excluded: {excluded}", ha="center", va="center", fontsize=7.5)
    return _figure("fig_attrition", "Cohort attrition flow (SAP section 1)", fig, n,
                  "Patients remaining after each SAP step (boxes) and excluded at it (right).")


# ---------------------------------------------------------------------------------------------
# forest plots


def _forest_axis(ax, y, est, lo, hi, colour, marker="s", size=4.5):
    ax.errorbar(est, y, xerr=[[max(est - lo, 0)], [max(hi - est, 0)]], fmt=marker, color=colour, ms=size,
                elinewidth=1.0, capsize=2)


def _group_labels(rows: list[dict]) -> list[str]:
    """A forest plot's row labels: "group: label" on a group's first row, the label alone on the others."""
    labels, previous = [], None
    for r in rows:
        labels.append(f"{r['group']}: {r['label']}" if r["group"] != previous else r["label"])
        previous = r["group"]
    return labels


def _log_x(ax, ticks) -> None:
    """A log x axis with plain-number ticks (text, not mathtext: parse_math is off) among `ticks`."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xticks([t for t in ticks if low <= t <= high])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


@_cached
def incidence_forest(outcome_label: str, rows: list[dict], fig_id: str) -> Figure | None:
    """rows: group, label, rate, lo, hi, shown (bool), note (text for rows not drawn)."""
    drawable = [r for r in rows if r["shown"]]
    if not drawable:
        return None
    n = len(rows)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.17 * n + 0.9))
    ys = list(range(n, 0, -1))
    labels = _group_labels(rows)
    for y, r in zip(ys, rows):
        if r["shown"]:
            colour = "#000000" if r["group"] == "Overall" else COLOURS[0]
            _forest_axis(ax, y, r["rate"], r["lo"], r["hi"], colour, "D" if r["group"] == "Overall" else "s")
    overall = next((r for r in rows if r["group"] == "Overall" and r["shown"]), None)
    xmax = max(r["hi"] for r in drawable if r["hi"] is not None and math.isfinite(r["hi"]))
    xmax = xmax * 1.05 if xmax > 0 else 1
    for y, r in zip(ys, rows):
        if not r["shown"]:
            ax.text(xmax * 0.01, y, r["note"], va="center", ha="left", fontsize=7, color="#555555")
    if overall:
        ax.axvline(overall["rate"], color="#7f7f7f", lw=0.7, ls="--")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(0.3, n + 0.7)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("Rate per 1,000 person-years (95% CI)")
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    ax.set_title(outcome_label, loc="left")
    return _figure(fig_id, f"Incidence rates by stratum: {outcome_label.lower()}", fig, len(drawable),
                  "Rate per 1,000 person-years with exact 95% CI; dashed line: overall rate. "
                  "Rows marked [c] are suppressed (SAP 5).")


@_cached
def risk_window_figure(rows: list[dict]) -> Figure | None:
    drawable = [r for r in rows if r["shown"]]
    if not drawable:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH * 0.62, 2.2))
    xs = list(range(len(rows)))
    for x, r in zip(xs, rows):
        if r["shown"]:
            ax.errorbar(x, r["rate"], yerr=[[r["rate"] - r["lo"]], [r["hi"] - r["rate"]]], fmt="o", color=COLOURS[0],
                        ms=5, capsize=3, elinewidth=1)
        else:
            ax.text(x, 0, r["note"], ha="center", va="bottom", fontsize=7, color="#555555")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["label"] for r in rows])
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Days since the start of the most recent course")
    ax.set_ylabel("Rate per 1,000 PY (95% CI)")
    ax.grid(axis="y", color="#dddddd", lw=0.5)
    return _figure("fig_risk_windows", "Serious infection rate by time since course start", fig,
                  len(drawable), "Rate of serious infection episodes per 1,000 person-years with exact 95% CI.")


@_cached
def cox_forest(outcome_label: str, rows: list[dict], fig_id: str) -> Figure | None:
    """rows: label, group, uni (hr, lo, hi) or None, multi (hr, lo, hi) or None, reference (bool),
    uni_note / multi_note (text when not drawn)."""
    values = [v for r in rows for v in (r["uni"], r["multi"]) if v is not None]
    if not values:
        return None
    n = len(rows)
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 0.19 * n + 1.0), sharey=True)
    ys = list(range(n, 0, -1))
    lo_all = min(v[1] for v in values)
    hi_all = max(v[2] for v in values)
    lo_lim = min(0.5, lo_all / 1.2)
    hi_lim = max(2.0, hi_all * 1.2)
    for ax, model, title in ((axes[0], "uni", "Univariable"), (axes[1], "multi", "Multivariable")):
        for y, r in zip(ys, rows):
            v = r[model]
            if r["reference"]:
                ax.plot([1], [y], marker="o", mfc="white", mec="#555555", ms=4.5, ls="none")
            elif v is not None:
                _forest_axis(ax, y, v[0], v[1], v[2], COLOURS[0] if model == "uni" else COLOURS[1])
            elif r.get(f"{model}_note"):
                ax.text(lo_lim * 1.05, y, r[f"{model}_note"], va="center", fontsize=7, color="#555555")
        ax.axvline(1, color="#7f7f7f", lw=0.7)
        ax.set_xscale("log")
        ax.set_xlim(lo_lim, hi_lim)
        ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16) if lo_lim <= t <= hi_lim]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("Hazard ratio (95% CI, log scale)")
        ax.set_title(title, loc="left")
        ax.grid(axis="x", color="#dddddd", lw=0.5)
    labels = _group_labels(rows)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels)
    axes[0].set_ylim(0.3, n + 0.7)
    drawn = sum(1 for r in rows for m in ("uni", "multi") if r[m] is not None)
    return _figure(fig_id, f"Hazard ratios: {outcome_label.lower()}", fig, drawn,
                  "Hazard ratio with Wald 95% CI; ○ marks the reference level; [c]: suppressed (SAP 5), — not estimable.")


# ---------------------------------------------------------------------------------------------
# cumulative incidence curves


def _year_step(span_years: float, max_ticks: int) -> float:
    for step in (0.25, 0.5, 1, 2, 5, 10):
        if span_years / step <= max_ticks:
            return step
    return math.ceil(span_years / max_ticks)


@_cached
def curves_figure(title: str, panels: list[tuple[str, dict[str, dict]]], fig_id: str, caption: str,
                  max_day: int | None = None) -> Figure | None:
    """panels: (panel title, {stratum: {"day": [...], "estimate": [...], "lo": [...], "hi": [...]}}), curves
    already cut (disclosure). Strata without points are left out of the panel."""
    drawn = sum(len(c["day"]) for _, curves in panels for c in curves.values())
    if drawn == 0:
        return None
    strata = []
    for _, curves in panels:
        for name in curves:
            if name not in strata:
                strata.append(name)
    style = {name: (COLOURS[i % len(COLOURS)], LINESTYLES[i % len(LINESTYLES)]) for i, name in enumerate(strata)}
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 2.9), sharey=True, squeeze=False)
    ymax = 0.0
    xmax = 0
    for ax, (panel_title, curves) in zip(axes[0], panels):
        for name, c in curves.items():
            if not c["day"]:
                continue
            colour, ls = style[name]
            days = [d / 365.25 for d in c["day"]]
            est = [100 * v for v in c["estimate"]]
            lo = [100 * v for v in c["lo"]]
            hi = [100 * v for v in c["hi"]]
            ax.step(days, est, where="post", color=colour, ls=ls, lw=1.1, label=name)
            ax.plot(days[:1], est[:1], marker="o", ms=2.5, color=colour, ls="none")  # where the drawn curve starts
            ax.fill_between(days, lo, hi, step="post", color=colour, alpha=0.15, lw=0)
            ymax = max(ymax, max(hi) if hi else 0)
            xmax = max(xmax, max(days))
        ax.set_title(panel_title, loc="left")
        ax.set_xlabel("Years since index")
        ax.grid(color="#eeeeee", lw=0.5)
    xmax = (max_day / 365.25) if max_day else xmax
    step = _year_step(xmax, 7 if len(panels) > 1 else 12)
    for ax in axes[0]:
        ax.set_xlim(0, xmax * 1.02)
        ticks = [i * step for i in range(int(xmax / step) + 1)]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    axes[0][0].set_ylabel("Cumulative incidence (%)")
    axes[0][0].set_ylim(0, max(ymax * 1.08, 1.0))
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if len(labels) > 1 or (labels and labels[0] != "All patients"):
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.1 if len(labels) <= 5 else 0.16, 1, 1))
    else:
        fig.tight_layout()
    return _figure(fig_id, title, fig, drawn, caption)


# ---------------------------------------------------------------------------------------------
# monitoring across data cuts (SAP 7)


@_cached
def monitoring_figure(looks: list[dict]) -> Figure | None:
    """looks: look, observed (None = suppressed), expected, llr (None = suppressed), critical_llr, signal.
    Left: cumulative O against E; right: the LLR against its critical value."""
    if not looks:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 2.6))
    xs = [r["look"] for r in looks]
    left.plot(xs, [r["expected"] for r in looks], marker="o", ms=3.5, color="#7f7f7f", ls="--", label="Expected (E)")
    shown = [(r["look"], r["observed"]) for r in looks if r["observed"] is not None]
    if shown:
        left.plot(*zip(*shown), marker="s", ms=3.5, color=COLOURS[0], label="Observed (O)")
    left.set_xlabel("Look")
    left.set_ylabel("Cumulative events")
    left.set_ylim(bottom=0)
    left.legend(frameon=False, loc="upper left")
    llr = [(r["look"], r["llr"]) for r in looks if r["llr"] is not None]
    if llr:
        right.plot(*zip(*llr), marker="s", ms=3.5, color=COLOURS[0], label="LLR")
    bound = [(r["look"], r["critical_llr"]) for r in looks if r["critical_llr"] is not None]
    if bound:
        right.plot(*zip(*bound), marker="_", ms=9, color=COLOURS[1], ls=":", label="Critical value")
    for r in looks:
        if r["signal_here"]:
            right.annotate("signal", (r["look"], r["llr"] or 0), textcoords="offset points", xytext=(0, 6),
                           ha="center", fontsize=7, color=COLOURS[1])
    right.set_xlabel("Look")
    right.set_ylabel("Log-likelihood ratio")
    right.set_ylim(bottom=0)
    if llr or bound:  # before the first look with events there is nothing to label
        right.legend(frameon=False, loc="upper left")
    for ax in (left, right):
        ax.set_xticks(xs)
        ax.grid(color="#eeeeee", lw=0.5)
    fig.tight_layout()
    return _figure("fig_monitoring", "Primary outcome across the looks: observed against expected, and the "
                   "sequential test", fig, len(xs) + len(shown),
                   "Left: cumulative first serious infections observed and expected from the reference rates. "
                   "Right: the MaxSPRT log-likelihood ratio and its critical value at each look (SAP A14). "
                   "Counts of 1–4 are not drawn (SAP 5).")


@_cached
def sir_forest(outcome_label: str, rows: list[dict], fig_id: str) -> Figure | None:
    """rows: group, label, sir, lo, hi, shown (bool), note. Log scale, line at SIR = 1."""
    drawable = [r for r in rows if r["shown"] and r["sir"] and r["sir"] > 0 and r["lo"] and r["lo"] > 0
                and r["hi"] is not None and math.isfinite(r["hi"])]
    if not drawable:
        return None
    keys = {id(r) for r in drawable}
    n = len(rows)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.17 * n + 0.9))
    ys = list(range(n, 0, -1))
    labels = _group_labels(rows)
    lo_all = min(r["lo"] for r in drawable)
    for y, r in zip(ys, rows):
        if id(r) in keys:
            _forest_axis(ax, y, r["sir"], r["lo"], r["hi"], "#000000" if r["group"] == "Overall" else COLOURS[0],
                         "D" if r["group"] == "Overall" else "s")
        else:
            ax.text(lo_all, y, r["note"] or "not estimable", va="center", ha="left", fontsize=7, color="#555555")
    ax.axvline(1.0, color="#7f7f7f", lw=0.7, ls="--")
    _log_x(ax, (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200))
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(0.3, n + 0.7)
    ax.set_xlabel("Standardised incidence ratio O/E (95% CI, log scale)")
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    ax.set_title(outcome_label, loc="left")
    return _figure(fig_id, f"Observed against expected by stratum: {outcome_label.lower()}", fig, len(drawable),
                   "SIR = observed / expected events (reference rates, indirect standardisation) with the exact "
                   "Poisson 95% CI of O divided by E; dashed line: SIR = 1. Strata with 1–4 events are not drawn.")


@_cached
def variant_forest(outcome_label: str, variants: list[str], rows: list[dict], fig_id: str) -> Figure | None:
    """rows: group, label, estimates (variant -> (hr, lo, hi), or absent when not drawn). One line per level,
    the variants' estimates side by side (main first, in black), log scale, line at HR = 1."""
    return _series_forest(
        outcome_label, variants, rows, fig_id,
        f"Multivariable hazard ratios across the sensitivity analyses: {outcome_label.lower()}",
        "Hazard ratios of the multivariable Cox model (95% CI) in the main analysis (black diamonds) and in each "
        "sensitivity analysis; suppressed or not estimable estimates are not drawn.")


@_cached
def network_forest(outcome_label: str, series: list[str], rows: list[dict], fig_id: str) -> Figure | None:
    """The network's hazard ratios per level: each site's, then the pooled ones (the first series in black)."""
    return _series_forest(
        outcome_label, series, rows, fig_id, f"Hazard ratios by site and pooled: {outcome_label.lower()}",
        "Multivariable hazard ratios (95% CI) of each site (as its package shows them) and pooled across the sites: "
        "fixed and DerSimonian-Laird random effects on the log HRs, the sum of the sites' profile likelihoods, "
        "and the site-stratified model fitted by distributed Newton-Raphson (P3); not drawn where not shown.")


def _series_forest(outcome_label: str, series: list[str], rows: list[dict], fig_id: str, title: str,
                   caption: str) -> Figure | None:
    drawn = [(v, e) for r in rows for v, e in r["estimates"].items()]
    if not drawn:
        return None
    n, k = len(rows), len(series)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.32 * n * max(1, k / 4) + 1.2))
    ys = list(range(n, 0, -1))
    step = 0.7 / max(k, 1)
    colours = {v: ("#000000" if i == 0 else COLOURS[(i - 1) % len(COLOURS)]) for i, v in enumerate(series)}
    for y, r in zip(ys, rows):
        for i, v in enumerate(series):
            if v in r["estimates"]:
                hr, lo, hi = r["estimates"][v]
                _forest_axis(ax, y + 0.35 - step * (i + 0.5), hr, lo, hi, colours[v], "D" if i == 0 else "s", size=3.5)
    labels = _group_labels(rows)
    ax.axvline(1.0, color="#7f7f7f", lw=0.7)
    _log_x(ax, (0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(0.3, n + 0.7)
    ax.set_xlabel("Hazard ratio (95% CI, log scale)")
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    handles = [plt.Line2D([], [], marker="D" if i == 0 else "s", color=colours[v], ls="none", label=v)
               for i, v in enumerate(series)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(outcome_label, loc="left")
    return _figure(fig_id, title, fig, len(drawn), caption)
