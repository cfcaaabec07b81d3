"""Disclosure control (SAP section 5) for everything that leaves the database.

The database keeps exact values; every report, figure and export goes through this module.

Rules, as applied here
----------------------
- **Primary suppression.** A count of patients, events or rows from 1 to 4 is shown as `<5`.
  0 is shown as `0`. Every estimate computed from such a cell (rate, its CI, person-years of
  fewer than 5 patients, percentage, cumulative incidence, hazard ratio) is shown as `[c]`.
- **Complementary suppression.** Published cells are tied by additive *relations*: a total and
  its parts (the overall row and the strata of one stratifier; the patients remaining before an
  attrition step and the patients remaining and excluded after it; rows received, loaded and
  quarantined; person-years of the risk windows and of the whole follow-up...). A suppressed
  cell must not be recoverable from a relation: `total - other parts` must not give it, and
  neither may the public display rule narrow it to a single value (a cell shown `<5` is known to
  be 1-4; a cell shown `[c]` is known to be 0 or at least 5). `protect_relations` adds
  complementary suppressions, the smallest helpful part first (a total last), until no relation
  pins a suppressed value, repeating over all relations because a cell can sit in several
  (a stratum's patient count is in the incidence table, Table 1 and the numbers at risk).
  The one case it cannot repair is a relation whose cells are all suppressed and whose bounds
  still pin a value (a total `<5` whose four parts are all `<5` must be 1+1+1+1): nothing is
  left to suppress there, so it is reported by `pinned_cells`, which tests and the report call.
- **Curves** are cut where the number at risk drops below 5 (`cut_curves`), and an estimate
  resting on 1-4 cumulative events is not shown (`suppress_small_cumulative`).
- **Formula injection.** Text cells of CSV/XLSX exports that start with `=`, `+`, `-`, `@`, tab
  or carriage return get a leading apostrophe (`neutralise_formula`), also after leading spaces
  and for the full-width forms of those signs (defensive: a spreadsheet's import may trim spaces
  or fold full-width characters); numbers such as `-0.12` are not text and are left alone, so are
  labels such as `>=2` or `<5`. The workbook also stores every text cell as a string, never a
  formula (vigil/report/render.py). Delivered text is made inert (vigil/inert.py) before this.

Display markers: `<5` (a count of 1-4), `[c]` (suppressed by disclosure control: an estimate from
a small cell, or a complementary suppression), `—` (not applicable / not estimable).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import polars as pl

MIN_SHOWN = 5  # smallest count shown as itself (besides 0)
LESS_THAN_5 = "<5"
SUPPRESSED = "[c]"
NOT_APPLICABLE = "—"
KEY_SEP = "\x1f"  # separator of the parts of a cell key (cannot occur in labels)

RULE_TEXT = (
    "Disclosure control (SAP section 5): counts of 1 to 4 patients, events or rows are shown as "
    "<5, and every estimate computed from such a cell (rate and its confidence interval, "
    "person-years of fewer than 5 patients, percentage, cumulative incidence, hazard ratio, "
    "standardised difference) is shown as [c]; 0 is shown. Where a suppressed value could be "
    "recovered by subtracting the other strata (or steps, windows, reasons) from a total, the "
    "next smallest cell is also shown as [c] (complementary suppression). Curves stop where "
    "fewer than 5 patients remain at risk and are drawn only from the fifth event on. "
    "— means not applicable or not estimable. The database keeps the exact values."
)

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # and full-width =+-@
_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?%?$")


# ---------------------------------------------------------------------------------------------
# cells


def is_small(value) -> bool:
    """A count of 1 to 4 (the cells SAP 5 hides)."""
    return value is not None and not _isnan(value) and 1 <= value < MIN_SHOWN


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def small_expr(column: str | pl.Expr) -> pl.Expr:
    """Polars expression: the count column is 1-4."""
    col = pl.col(column) if isinstance(column, str) else column
    return (col >= 1) & (col < MIN_SHOWN)


def cell_key(*parts) -> str:
    """Key of one published cell, e.g. cell_key('patients', 'sex', 'M')."""
    return KEY_SEP.join(str(p) for p in parts)


def format_count(value, suppressed: bool = False) -> str:
    """A count as shown: 0, `<5` for 1-4, `[c]` if suppressed otherwise, else with thousands separators."""
    if value is None or _isnan(value):
        return NOT_APPLICABLE
    if is_small(value):
        return LESS_THAN_5
    if suppressed:
        return SUPPRESSED
    return f"{int(round(value)):,}"


def format_estimate(value, suppressed: bool = False, digits: int = 2, percent: bool = False) -> str:
    """An estimate as shown: `[c]` if suppressed, `—` if missing or not finite, else rounded."""
    if suppressed:
        return SUPPRESSED
    if value is None or not math.isfinite(value):
        return NOT_APPLICABLE
    if percent:
        value = 100 * value
    text = f"{value:,.{digits}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:
        text = text[1:]  # no "-0.00"
    return text


def format_interval(lower, upper, suppressed: bool = False, digits: int = 2, percent: bool = False) -> str:
    """`lower–upper` (en dash), `[c]` if suppressed, `—` if either bound is missing."""
    if suppressed:
        return SUPPRESSED
    lo = format_estimate(lower, digits=digits, percent=percent)
    hi = format_estimate(upper, digits=digits, percent=percent)
    if NOT_APPLICABLE in (lo, hi):
        return NOT_APPLICABLE
    return f"{lo}–{hi}"


def format_p(value, suppressed: bool = False) -> str:
    if suppressed:
        return SUPPRESSED
    if value is None or not math.isfinite(value):
        return NOT_APPLICABLE
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}"


# ---------------------------------------------------------------------------------------------
# complementary suppression over additive relations

_INF = math.inf
Interval = tuple[float, float]


def _merge(intervals: Iterable[Interval], integer: bool) -> list[Interval]:
    out: list[list[float]] = []
    for lo, hi in sorted(intervals):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + (1 if integer else 0):
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _add(a: list[Interval], b: list[Interval], integer: bool) -> list[Interval]:
    return _merge(((x0 + y0, x1 + y1) for x0, x1 in a for y0, y1 in b), integer)


def _neg(a: list[Interval]) -> list[Interval]:
    return [(-hi, -lo) for lo, hi in reversed(a)]


def _intersect(a: list[Interval], b: list[Interval], integer: bool) -> list[Interval]:
    return _merge(((max(x0, y0), min(x1, y1)) for x0, x1 in a for y0, y1 in b), integer)


@dataclass
class _Cell:
    key: str
    value: float
    count: bool  # integer count (else a non-negative amount such as person-years)
    suppressed: bool
    cost: float

    def domain(self) -> list[Interval]:
        """What a reader knows about the value from the display."""
        if not self.suppressed:
            return [(self.value, self.value)]
        if not self.count:
            return [(0.0, _INF)]
        if is_small(self.value):
            return [(1, MIN_SHOWN - 1)]  # shown "<5"
        return [(0, 0), (MIN_SHOWN, _INF)]  # shown "[c]": the rule shows 1-4 as "<5"


def _pinned_in(relation: list[tuple[_Cell, int]]) -> list[str]:
    """Keys of suppressed cells that the relation sum(sign * value) = 0 narrows to one value."""
    unknown = [(c, s) for c, s in relation if c.suppressed]
    if not unknown:
        return []
    integer = all(c.count for c, _ in relation)
    known = sum(s * c.value for c, s in relation if not c.suppressed)
    pinned = []
    for i, (cell, sign) in enumerate(unknown):
        others: list[Interval] = [(-known, -known)]  # sign*x = -known - sum(others)
        for j, (other, other_sign) in enumerate(unknown):
            if j != i:
                dom = other.domain()
                others = _add(others, _neg(dom) if other_sign > 0 else dom, integer)
        feasible = others if sign > 0 else _neg(others)
        if not integer:
            if len(unknown) == 1:
                pinned.append(cell.key)
            continue
        feasible = _intersect(feasible, cell.domain(), integer)
        if not feasible or (len(feasible) == 1 and feasible[0][0] == feasible[0][1]):
            pinned.append(cell.key)
    return pinned


def _prepare(cells: pl.DataFrame, relations: pl.DataFrame):
    missing = {"key", "value", "suppressed"} - set(cells.columns)
    if missing:
        raise ValueError(f"cells lacks columns {sorted(missing)}")
    if cells["key"].is_duplicated().any():
        dupes = cells.filter(pl.col("key").is_duplicated())["key"].unique().to_list()[:5]
        raise ValueError(f"duplicate cell keys: {dupes}")
    kinds = cells["kind"].to_list() if "kind" in cells.columns else ["count"] * cells.height
    costs = cells["cost"].to_list() if "cost" in cells.columns else [None] * cells.height
    by_key: dict[str, _Cell] = {}
    for key, value, suppressed, kind, cost in zip(cells["key"].to_list(), cells["value"].to_list(),
                                                  cells["suppressed"].to_list(), kinds, costs):
        value = 0.0 if value is None or _isnan(value) else float(value)
        by_key[key] = _Cell(key, value, kind != "amount", bool(suppressed),
                            value if cost is None else float(cost))
    rels: dict[str, list[tuple[_Cell, int]]] = defaultdict(list)
    for rel, key, role in zip(relations["relation"].to_list(), relations["key"].to_list(),
                              relations["role"].to_list()):
        if key not in by_key:
            raise ValueError(f"relation {rel!r} names an unknown cell {key!r}")
        if role not in ("total", "part"):
            raise ValueError(f"relation {rel!r}: role must be total or part, not {role!r}")
        rels[rel].append((by_key[key], 1 if role == "total" else -1))
    for rel, members in rels.items():
        if sum(1 for _, s in members if s > 0) != 1:
            raise ValueError(f"relation {rel!r} needs exactly one total")
    return by_key, rels


def _candidates(relation: list[tuple[_Cell, int]]) -> list[_Cell]:
    """Cells that could be suppressed to protect the relation, preferred first: parts before the
    total, non-zero before zero (a suppressed 0 hides little), then cheapest."""
    return sorted((c for c, _ in relation if not c.suppressed),
                  key=lambda c: (c is next(t for t, s in relation if s > 0), c.value == 0, c.cost, c.key))


def protect_relations(cells: pl.DataFrame, relations: pl.DataFrame, max_rounds: int = 10_000) -> pl.DataFrame:
    """Add complementary suppressions until no relation pins a suppressed cell.

    cells: key (str), value (number), suppressed (bool: the primary suppressions), optional kind
    (`count` default, or `amount` for non-negative continuous values such as person-years) and
    cost (preference among candidates, default the value: smaller is suppressed first).
    relations: relation (id), key (a cell), role (`total` or `part`): total = sum of the parts.
    Returns cells with `suppressed` updated and a `complementary` column (added by this step).
    """
    by_key, rels = _prepare(cells, relations)
    primary = {k for k, c in by_key.items() if c.suppressed}
    rel_of_cell: dict[str, list[str]] = defaultdict(list)
    for rel, members in rels.items():
        for c, _ in members:
            rel_of_cell[c.key].append(rel)
    queue = list(rels)
    queued = set(queue)
    rounds = 0
    while queue:
        rel = queue.pop(0)
        queued.discard(rel)
        members = rels[rel]
        while _pinned_in(members):
            rounds += 1
            if rounds > max_rounds:
                raise RuntimeError("complementary suppression did not converge")
            options = _candidates(members)
            if not options:
                break  # everything suppressed: nothing more to do here (see pinned_cells)
            chosen = None
            for option in options:  # the first single suppression that protects the relation
                option.suppressed = True
                ok = not _pinned_in(members)
                option.suppressed = False
                if ok:
                    chosen = option
                    break
            if chosen is None:
                chosen = next((o for o in options if o.value != 0), options[0])
            chosen.suppressed = True
            for other in rel_of_cell[chosen.key]:
                if other != rel and other not in queued:
                    queue.append(other)
                    queued.add(other)
    keys = cells["key"].to_list()
    return cells.with_columns(
        pl.Series("suppressed", [by_key[k].suppressed for k in keys], dtype=pl.Boolean),
        pl.Series("complementary", [by_key[k].suppressed and k not in primary for k in keys], dtype=pl.Boolean),
    )


def pinned_cells(cells: pl.DataFrame, relations: pl.DataFrame) -> pl.DataFrame:
    """Suppressed cells that some relation still determines: relation, key, all_suppressed
    (True when every cell of the relation is suppressed, the case suppression cannot repair)."""
    by_key, rels = _prepare(cells, relations)
    rows = []
    for rel, members in rels.items():
        everything = all(c.suppressed for c, _ in members)
        rows += [(rel, key, everything) for key in _pinned_in(members)]
    return pl.DataFrame(rows, schema={"relation": pl.Utf8, "key": pl.Utf8, "all_suppressed": pl.Boolean},
                        orient="row")


def recoverable_by_subtraction(cells: pl.DataFrame, relations: pl.DataFrame) -> list[str]:
    """Relations whose total is shown and exactly one part suppressed: total - other parts gives it."""
    by_key, rels = _prepare(cells, relations)
    bad = []
    for rel, members in rels.items():
        total = next(c for c, s in members if s > 0)
        hidden = [c for c, s in members if s < 0 and c.suppressed]
        if not total.suppressed and len(hidden) == 1:
            bad.append(rel)
    return bad


def cut_curves(curves: pl.DataFrame, group_cols: list[str], time_col: str = "day",
               at_risk_col: str = "n_at_risk") -> pl.DataFrame:
    """Keep each curve up to the last time with at least 5 at risk: from the first time the number
    at risk is below 5 (1-4, or 0), the curve is cut."""
    ordered = curves.sort([*group_cols, time_col])
    below = (pl.col(at_risk_col) < MIN_SHOWN).cast(pl.Int32).cum_sum().over(group_cols)
    return ordered.filter(below == 0)


def suppress_small_cumulative(curves: pl.DataFrame, group_cols: list[str], events_col: str,
                              time_col: str = "day") -> pl.DataFrame:
    """Drop the points of each curve whose cumulative number of events is 1-4 (estimates from a
    small cell); the points before the first event (estimate 0) stay. `events_col` holds the
    events at each time (not cumulative)."""
    ordered = curves.sort([*group_cols, time_col])
    cumulative = pl.col(events_col).cum_sum().over(group_cols)
    return ordered.filter(~small_expr(cumulative))


def from_fifth_event(curves: pl.DataFrame, group_cols: list[str], events_col: str,
                     time_col: str = "day") -> pl.DataFrame:
    """Keep each curve from its 5th cumulative event on: what a plot may draw (every point of a drawn
    curve then rests on at least 5 events). `events_col` holds the events at each time."""
    ordered = curves.sort([*group_cols, time_col])
    return ordered.filter(pl.col(events_col).cum_sum().over(group_cols) >= MIN_SHOWN)


# ---------------------------------------------------------------------------------------------
# spreadsheet formula injection


def looks_numeric(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


def neutralise_formula(value):
    """Prefix an apostrophe to a text cell a spreadsheet would read as a formula.

    Only text: numbers (also as text, e.g. `-0.12`, `1,234`) and non-strings pass unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value.lstrip(" ").startswith(FORMULA_TRIGGERS) and not looks_numeric(value):
        return "'" + value
    return value


def neutralise_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """neutralise_formula on every text column."""
    text_cols = [name for name, dtype in frame.schema.items() if dtype == pl.Utf8]
    if not text_cols:
        return frame
    return frame.with_columns(
        pl.col(c).map_elements(neutralise_formula, return_dtype=pl.Utf8, skip_nulls=True) for c in text_cols)


_COUNT_CELL = re.compile(r"^'?\s*(\d{1,3}(?:,\d{3})*|\d+)(?:\s*\([^()]*\))?\s*$")


def shown_small_counts(frame: pl.DataFrame, columns: Iterable[str] | None = None) -> list[tuple[str, int, str]]:
    """(column, row, text) of every cell of `columns` (default: all) that shows a count of 1-4:
    a whole number 1-4, alone or as the n of an `n (%)` cell. What must never be exported."""
    found = []
    for name in (frame.columns if columns is None else columns):
        for i, value in enumerate(frame[name].cast(pl.Utf8).to_list()):
            if value is None:
                continue
            match = _COUNT_CELL.match(value)
            if match and is_small(int(match.group(1).replace(",", ""))):
                found.append((name, i, value))
    return found
