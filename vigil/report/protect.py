"""The report's disclosure plan: every published count (and person-time) as a cell, the additive
relations that tie them across tables, and one complementary-suppression pass over all of them
(vigil.report.disclosure). A value that appears in several tables is one cell, so it is suppressed
everywhere or nowhere: a stratum's patients appear in the incidence tables, Table 1 and the
numbers at risk at day 0; the cohort size ends the attrition; the all-serious events and
person-years are the total of the risk windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from vigil.report.disclosure import cell_key, format_count, is_small, pinned_cells, protect_relations
from vigil.analysis import describe
from vigil.analysis.describe import TABLE1_CATEGORICAL
from vigil.report.data import RunData

OVERALL = ("overall", "all")


class _Registry:
    def __init__(self) -> None:
        self.cells: dict[str, tuple[float, str, bool]] = {}
        self.relations: list[tuple[str, str, str]] = []
        self.relation_ids: set[str] = set()
        self.dependents: dict[str, set[str]] = {}  # key -> cells to hide whenever key is hidden

    def depends(self, key: str, dependents: list[str]) -> None:
        self.dependents.setdefault(key, set()).update(k for k in dependents if k in self.cells)

    def add(self, key: str, value, kind: str = "count", suppressed: bool | None = None) -> str:
        value = 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        primary = is_small(value) if kind == "count" else False
        if suppressed:
            primary = True
        if key in self.cells:
            old_value, old_kind, old_primary = self.cells[key]
            if abs(old_value - value) > 1e-6 * max(1.0, abs(value)):
                raise ValueError(f"cell {key!r} has two values: {old_value} and {value}")
            self.cells[key] = (old_value, old_kind, old_primary or primary)
        else:
            self.cells[key] = (value, kind, primary)
        return key

    def relate(self, relation: str, total: str, parts: list[str]) -> None:
        if relation in self.relation_ids or not parts:
            return
        self.relation_ids.add(relation)
        self.relations.append((relation, total, "total"))
        self.relations += [(relation, p, "part") for p in parts]

    def value(self, key: str) -> float:
        return self.cells[key][0]


def patients_key(stratifier: str, stratum: str) -> str:
    return cell_key("patients", stratifier, stratum)


@dataclass
class Protection:
    """Exact values and final suppression of every published cell."""

    values: dict[str, float]
    suppressed: dict[str, bool]
    cells: pl.DataFrame
    relations: pl.DataFrame
    residual: list[str] = field(default_factory=list)  # relations fully suppressed yet pinned

    def is_suppressed(self, key: str) -> bool:
        return self.suppressed[key]

    def count(self, key: str) -> str:
        return format_count(self.values[key], self.suppressed[key])

    def value(self, key: str) -> float:
        return self.values[key]


def build_protection(data: RunData, at_risk: pl.DataFrame) -> Protection:
    """at_risk: outcome, stratifier, stratum, day, n_at_risk (the numbers at risk the report shows,
    day 0 excluded: day 0 is the stratum's patients)."""
    reg = _Registry()
    inc = data.incidence

    # incidence: patients (shared by all outcomes), events and person-years per outcome
    for row in inc.iter_rows(named=True):
        reg.add(patients_key(row["stratifier"], row["stratum"]), row["n_patients"])
        few = is_small(row["n_patients"])  # events of fewer than 5 patients (recurrent: possibly >= 5) are hidden
        reg.add(cell_key("events", row["outcome"], row["stratifier"], row["stratum"]), row["n_events"],
                suppressed=few and (row["n_events"] or 0) > 0)
        reg.add(cell_key("py", row["outcome"], row["stratifier"], row["stratum"]), row["person_years"],
                kind="amount", suppressed=few)
    total_p = patients_key(*OVERALL)
    for stratifier in inc["stratifier"].unique().to_list():
        if stratifier == "overall":
            continue
        strata = inc.filter(pl.col("stratifier") == stratifier)["stratum"].unique().to_list()
        reg.relate(cell_key("patients", stratifier), total_p, [patients_key(stratifier, s) for s in strata])
    for (outcome, stratifier), part in inc.group_by("outcome", "stratifier"):
        if stratifier == "overall":
            continue
        strata = part["stratum"].to_list()
        for what in ("events", "py"):
            reg.relate(cell_key(what, outcome, stratifier), cell_key(what, outcome, *OVERALL),
                       [cell_key(what, outcome, stratifier, s) for s in strata])

    # risk windows: the windows add up to the all-serious events and person-years
    rw = data.risk_windows
    for row in rw.iter_rows(named=True):
        if "n_patients" in row:  # patients with follow-up in the window: no additive relation (overlap)
            reg.add(cell_key("rw_patients", row["window"]), row["n_patients"])
        reg.add(cell_key("rw_events", row["window"]), row["n_events"])
        reg.add(cell_key("rw_py", row["window"]), row["person_years"], kind="amount")
    windows = rw["window"].to_list()
    for what, total_key, column in (("rw_events", cell_key("events", "all_serious", *OVERALL), "n_events"),
                                    ("rw_py", cell_key("py", "all_serious", *OVERALL), "person_years")):
        total = float(rw[column].sum() or 0)
        if total_key in reg.cells and abs(reg.value(total_key) - total) <= 1e-6 * max(1.0, total):
            reg.relate(cell_key(what), total_key, [cell_key(what, w) for w in windows])
        else:  # the windows do not add up to the incidence total: the table shows its own total
            own = reg.add(cell_key(what, "total"), total, kind="count" if what == "rw_events" else "amount")
            reg.relate(cell_key(what), own, [cell_key(what, w) for w in windows])

    # A8 incidence proportion: cases and denominators of the strata add up to the overall ones, per day
    ip = data.table("incidence_proportion")
    for row in ip.iter_rows(named=True):
        for what, column in (("ip_cases", "n_cases"), ("ip_denominator", "n_denominator")):
            reg.add(cell_key(what, row["stratifier"], row["stratum"], row["day"]), row[column])
    if ip.height:
        for (stratifier, day), part in ip.group_by("stratifier", "day"):
            if stratifier == "overall":
                continue
            for what in ("ip_cases", "ip_denominator"):
                reg.relate(cell_key(what, stratifier, day), cell_key(what, *OVERALL, day),
                           [cell_key(what, stratifier, s, day) for s in part["stratum"].to_list()])

    # A12: each variant's overall patients, events and person-years of the primary outcome; leaving a site
    # out, the main total = the variant's + the site's (so a site's suppressed count stays hidden)
    sens = data.sensitivity.get("incidence", pl.DataFrame())
    left_out = data.left_out_sites
    for row in sens.iter_rows(named=True):
        v, outcome = row["variant"], row["outcome"]
        keys = {"patients": reg.add(cell_key("v_patients", v), row["n_patients"]),
                "events": reg.add(cell_key("v_events", v), row["n_events"]),
                "py": reg.add(cell_key("v_py", v), row["person_years"], kind="amount",
                              suppressed=is_small(row["n_patients"]))}
        site = left_out.get(v)
        if site is not None:
            site_keys = {"patients": patients_key("site", site), "events": cell_key("events", outcome, "site", site),
                         "py": cell_key("py", outcome, "site", site)}
            totals = {"patients": total_p, "events": cell_key("events", outcome, *OVERALL),
                      "py": cell_key("py", outcome, *OVERALL)}
            for what, key in keys.items():
                if site_keys[what] in reg.cells and totals[what] in reg.cells:
                    reg.relate(cell_key("v_site", v, what), totals[what], [key, site_keys[what]])
    # the risk windows of a variant add up to the all-serious total as the main windows do
    sens_rw = data.sensitivity.get("risk_windows", pl.DataFrame())
    for (v,), part in (sens_rw.group_by("variant") if sens_rw.height else []):
        for what, column, total_key in (("v_rw_events", "n_events", cell_key("events", "all_serious", *OVERALL)),
                                        ("v_rw_py", "person_years", cell_key("py", "all_serious", *OVERALL))):
            keys = [reg.add(cell_key(what, v, w), value, kind="count" if column == "n_events" else "amount")
                    for w, value in zip(part["window"], part[column])]
            total = float(part[column].sum() or 0)
            if total_key in reg.cells and abs(reg.value(total_key) - total) <= 1e-6 * max(1.0, total):
                reg.relate(cell_key(what, v), total_key, keys)
            else:
                reg.relate(cell_key(what, v), reg.add(cell_key(what, v, "total"), total,
                                                      kind="count" if column == "n_events" else "amount"), keys)

    # numbers at risk: the strata add up to the overall curve on each day
    for row in at_risk.iter_rows(named=True):
        reg.add(cell_key("at_risk", row["outcome"], row["stratifier"], row["stratum"], row["day"]), row["n_at_risk"])
    for (outcome, stratifier, day), part in at_risk.group_by("outcome", "stratifier", "day"):
        if stratifier == "overall":
            continue
        total = cell_key("at_risk", outcome, *OVERALL, day)
        if total in reg.cells:
            reg.relate(cell_key("at_risk", outcome, stratifier, day), total,
                       [cell_key("at_risk", outcome, stratifier, s, day) for s in part["stratum"].to_list()])

    # Table 1: overall column = the strata's patients; by EDSS: rows and columns add up
    edss_levels = data.levels.get("edss", [])
    counts = data.table1_counts
    lookup = {(v, lv, e): n for v, lv, e, n in counts.iter_rows()}
    column_n = dict(zip(data.table1_stats["edss"].to_list(), data.table1_stats["n"].to_list()))
    for variable in TABLE1_CATEGORICAL:
        levels = table1_levels(data, variable)
        overall_keys = []
        for level in levels:
            n = lookup.get((variable, level, None), 0)
            key = (patients_key(variable, level) if variable in data.levels
                   else cell_key("t1", variable, level, "overall"))
            overall_keys.append(reg.add(key, n))
        reg.relate(cell_key("patients", variable), total_p, overall_keys)
        for e in edss_levels:
            keys = [reg.add(cell_key("t1", variable, level, e), lookup.get((variable, level, e), 0)) for level in levels]
            reg.relate(cell_key("t1col", variable, e), reg.add(patients_key("edss", e), column_n.get(e, 0)), keys)
        for level, overall_key in zip(levels, overall_keys):
            reg.relate(cell_key("t1row", variable, level), overall_key,
                       [cell_key("t1", variable, level, e) for e in edss_levels])

    # attrition: remaining(k-1) = remaining(k) + excluded(k); the last step is the cohort
    att = data.attrition.sort("step")
    steps = att["step"].to_list()
    for i, row in enumerate(att.iter_rows(named=True)):
        rem = (total_p if i == len(steps) - 1 and total_p in reg.cells
               and reg.value(total_p) == row["n_remaining"] else cell_key("attr_remaining", row["step"]))
        reg.add(rem, row["n_remaining"])
        reg.add(cell_key("attr_excluded", row["step"]), row["n_excluded"])
    rem_keys = [total_p if (i == len(steps) - 1 and total_p in reg.cells
                            and reg.value(total_p) == att["n_remaining"][-1]) else cell_key("attr_remaining", s)
                for i, s in enumerate(steps)]
    if steps:  # patient rows received = remaining after step 1 + excluded at step 1
        received = reg.add(cell_key("attr_received"), att["n_remaining"][0] + att["n_excluded"][0])
        reg.relate(cell_key("attrition", steps[0]), received, [rem_keys[0], cell_key("attr_excluded", steps[0])])
    for i in range(1, len(steps)):
        reg.relate(cell_key("attrition", steps[i]), rem_keys[i - 1],
                   [rem_keys[i], cell_key("attr_excluded", steps[i])])

    # data quality: received = loaded + quarantined; quarantined = sum over reasons
    reasons = data.quarantine
    for row in data.delivery_tables.iter_rows(named=True):
        d, t = row["delivery_id"], row["table_name"]
        rec = reg.add(cell_key("dq", d, t, "received"), row["rows_received"])
        load = reg.add(cell_key("dq", d, t, "loaded"), row["rows_loaded"])
        quar = reg.add(cell_key("dq", d, t, "quarantined"), row["rows_quarantined"])
        reg.relate(cell_key("dq_rows", d, t), rec, [load, quar])
        mine = reasons.filter((pl.col("delivery_id") == d) & (pl.col("table_name") == t))
        keys = [reg.add(cell_key("dq_reason", d, t, r), n) for r, n in zip(mine["reason"], mine["n"])]
        if keys and int(mine["n"].sum()) == row["rows_quarantined"]:
            reg.relate(cell_key("dq_reasons", d, t), quar, keys)
    for row in reasons.iter_rows(named=True):  # reasons of deliveries without a table row
        reg.add(cell_key("dq_reason", row["delivery_id"], row["table_name"], row["reason"]), row["n"])
    # patients loaded from the analysed deliveries = attrition step 1
    analysed = data.deliveries.filter(pl.col("status_at_run") == "accepted")["delivery_id"].to_list() \
        if not data.deliveries.is_empty() else []
    for what, total in (("loaded", rem_keys[0] if steps else None),
                        ("quarantined", cell_key("attr_excluded", steps[0]) if steps else None),
                        ("received", cell_key("attr_received") if steps else None)):
        parts = [cell_key("dq", d, "patients", what) for d in analysed]
        if total and parts and all(k in reg.cells for k in parts) \
                and sum(reg.value(k) for k in parts) == reg.value(total):
            reg.relate(cell_key("dq_patients", what), total, parts)

    cells = pl.DataFrame(
        [(k, v, kind, prim) for k, (v, kind, prim) in reg.cells.items()],
        schema={"key": pl.Utf8, "value": pl.Float64, "kind": pl.Utf8, "suppressed": pl.Boolean}, orient="row")
    relations = pl.DataFrame(reg.relations, schema={"relation": pl.Utf8, "key": pl.Utf8, "role": pl.Utf8},
                             orient="row")
    # A stratum's person-years and numbers at risk betray its patient count (0 patients: 0 person-years),
    # so they are hidden wherever the count is; hiding them may need more complementary cells: repeat.
    for row in inc.iter_rows(named=True):
        s, st = row["stratifier"], row["stratum"]
        reg.depends(patients_key(s, st), [cell_key("py", o, s, st) for o in inc["outcome"].unique().to_list()])
    for row in at_risk.iter_rows(named=True):
        reg.depends(patients_key(row["stratifier"], row["stratum"]),
                    [cell_key("at_risk", row["outcome"], row["stratifier"], row["stratum"], row["day"])])
    solved = protect_relations(cells, relations)
    for _ in range(100):
        hidden = dict(zip(solved["key"].to_list(), solved["suppressed"].to_list()))
        more = {d for k, deps in reg.dependents.items() if hidden.get(k) for d in deps if not hidden[d]}
        if not more:
            break
        solved = protect_relations(
            solved.drop("complementary").with_columns(pl.col("suppressed") | pl.col("key").is_in(list(more))),
            relations)
    primary = dict(zip(cells["key"].to_list(), cells["suppressed"].to_list()))
    solved = solved.with_columns(
        (pl.col("suppressed") & ~pl.col("key").replace_strict(primary, return_dtype=pl.Boolean)).alias("complementary"))
    pinned = pinned_cells(solved, relations)
    if pinned.filter(~pl.col("all_suppressed")).height:
        raise RuntimeError(f"disclosure: suppressed cells still recoverable: {pinned.rows()[:5]}")
    values = dict(zip(solved["key"].to_list(), solved["value"].to_list()))
    return Protection(values, dict(zip(solved["key"].to_list(), solved["suppressed"].to_list())), solved, relations,
                      sorted(set(pinned["relation"].to_list())))


def table1_levels(data: RunData, variable: str) -> list[str]:
    seen = data.table1_counts.filter(pl.col("variable") == variable)["level"].unique().to_list()
    return describe.table1_levels(variable, data.levels, seen)
