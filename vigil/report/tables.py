"""The report's tables as shown: polars frames of text, after disclosure control.

The same frame is rendered into the HTML/PDF and written to CSV and XLSX, so the exports are the
tables exactly as shown (exports additionally neutralise spreadsheet formulas). Every text cell of a
Table is inert (`vigil.inert.inert`: one line, control and formatting characters shown as escapes):
some cells hold delivered text (folder names, refusal reasons, site ids), and a table does not know
which. HTML escaping is the template's (Jinja autoescape), formulas the exports'."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import polars as pl

from vigil.report.disclosure import (
    LESS_THAN_5, NOT_APPLICABLE, SUPPRESSED, cell_key, format_estimate, format_interval, format_p,
    is_small,
)
from vigil.analysis.describe import CONTINUOUS, TABLE1_CATEGORICAL
from vigil.inert import inert
from vigil.report.data import METHODS, OUTCOMES, STRATIFIERS, WINDOW_ORDER, RunData
from vigil.report.protect import OVERALL, Protection, patients_key, table1_levels

LEGEND = (f"{LESS_THAN_5}: a count of 1 to 4. {SUPPRESSED}: suppressed by disclosure control (SAP 5). "
          f"{NOT_APPLICABLE}: not applicable or not estimable.")


# A label cell with an unbroken word longer than this (a hash aside) may wrap anywhere (CSS td.long): the
# spec's file names and folder names are shorter; a delivered name can be 255 characters.
LONG_WORD = 40
LABEL_CHARS = 28  # a label column wraps beyond this many characters (Table.column_widths)
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Table:
    id: str  # file stem of the exports and HTML anchor
    title: str
    frame: pl.DataFrame  # every column text, as shown
    label_columns: list[str]  # text labels (never counts); every other column holds values
    count_columns: list[str]  # columns that show counts (checked: never 1-4)
    group_column: str | None = None  # printed once per group in the HTML
    notes: list[str] = field(default_factory=list)
    wide: bool = False  # printed on a landscape page
    header_groups: list[tuple[str, int]] = field(default_factory=list)  # (label, columns spanned) above the header
    short_names: dict[str, str] = field(default_factory=dict)  # column -> header under a header group

    def __post_init__(self) -> None:
        self.frame = inert_frame(self.frame)

    def header(self, column: str) -> str:
        return self.short_names.get(column, column)

    @property
    def n_rows(self) -> int:
        return self.frame.height

    def column_widths(self) -> list[float]:
        """Each column's share of the table width in %, from the text it holds (the PDF lays tables out with
        these fixed widths: WeasyPrint's automatic layout measured every cell twice and took two thirds of
        the report's layout time). A value column is as wide as its longest value and its header (neither
        wraps); a label column as its longest word, and up to LABEL_CHARS characters of its longest text."""
        weights = []
        for name in self.frame.columns:
            texts = [v for v in self.frame[name].to_list() if v]
            if name in self.label_columns:
                words = max((len(w) for v in texts + [self.header(name)] for w in v.split()), default=1)
                chars = max(min(max((len(v) for v in texts), default=1), LABEL_CHARS), min(words, 64))
            else:
                chars = max([len(self.header(name))] + [len(v) for v in texts])
            weights.append(chars + 1.5)  # + the cell's padding, in characters
        total = sum(weights)
        return [round(100 * w / total, 2) for w in weights]

    def html_groups(self) -> list[list[list[tuple[str, str]]]]:
        """Rows for the HTML, grouped by group_column (one <tbody> each, kept on one page when it fits):
        each cell (text, css class); the group label is printed on the group's first row only."""
        groups: list[list[list[tuple[str, str]]]] = []
        previous = object()
        for row in self.frame.iter_rows(named=True):
            key = row.get(self.group_column) if self.group_column else None
            if not groups or (self.group_column and key != previous):
                groups.append([])
            cells = []
            for name, value in row.items():
                text = "" if value is None else value
                if self.group_column and name == self.group_column and groups[-1]:
                    text = ""
                cls = "label" if name in self.label_columns else "num"
                if cls == "label" and any(len(w) > LONG_WORD and not SHA256.fullmatch(w) for w in text.split()):
                    cls += " long"  # e.g. a delivered folder name: wrapped anywhere, not off the page
                cells.append((text, cls))
            groups[-1].append(cells)
            previous = key
        return groups


def inert_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with every text cell inert (the frame itself when all are printable already)."""
    changed = []
    for name, dtype in frame.schema.items():
        if dtype != pl.Utf8:
            continue
        values = frame[name].to_list()
        if not all(v is None or v.isprintable() for v in values):
            changed.append(pl.Series(name, [None if v is None else inert(v) for v in values], dtype=pl.Utf8))
    return frame.with_columns(changed) if changed else frame


def _text_frame(rows: list[dict], columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame([[r.get(c) for c in columns] for r in rows], schema={c: pl.Utf8 for c in columns},
                        orient="row")


def stratum_order(data: RunData) -> list[tuple[str, str]]:
    order = [OVERALL]
    for stratifier in STRATIFIERS:
        if stratifier == "overall":
            continue
        order += [(stratifier, level) for level in data.levels.get(stratifier, [])]
    return order


def _ordered(frame: pl.DataFrame, data: RunData) -> pl.DataFrame:
    rank = {key: i for i, key in enumerate(stratum_order(data))}
    present = frame.select("stratifier", "stratum").rows()
    extra = sorted({k for k in present if k not in rank})
    for k in extra:
        rank[k] = len(rank)
    return frame.with_columns(
        pl.Series("__rank", [rank[k] for k in present])).sort("__rank").drop("__rank")


# ---------------------------------------------------------------------------------------------
# attrition


def attrition_table(data: RunData, prot: Protection, rem_keys: list[str]) -> Table:
    rows = []
    att = data.attrition.sort("step")
    if att.height:
        rows.append({"Step": "Received", "Criterion": "Patient rows in the accepted deliveries",
                     "Patients remaining": prot.count(cell_key("attr_received")), "Patients excluded": ""})
    for r, rem in zip(att.iter_rows(named=True), rem_keys):
        step, description = r["step"], r["description"]
        rows.append({"Step": str(step), "Criterion": description, "Patients remaining": prot.count(rem),
                     "Patients excluded": prot.count(cell_key("attr_excluded", step))})
    cols = ["Step", "Criterion", "Patients remaining", "Patients excluded"]
    return Table("attrition", "Cohort attrition (SAP section 1)", _text_frame(rows, cols), ["Step", "Criterion"],
                 ["Patients remaining", "Patients excluded"],
                 notes=["Patients excluded at a step are those failing it first; remaining = previous remaining "
                        "− excluded. Step 1 excludes the patient rows that broke the extract contract and were "
                        "quarantined (Annex A).", LEGEND])


def attrition_keys(data: RunData, prot: Protection) -> list[str]:
    att = data.attrition.sort("step")
    total = patients_key(*OVERALL)
    keys = []
    for i, r in enumerate(att.iter_rows(named=True)):
        step, n_remaining = r["step"], r["n_remaining"]
        last = i == att.height - 1
        keys.append(total if last and total in prot.values and prot.values[total] == n_remaining
                    else cell_key("attr_remaining", step))
    return keys


# ---------------------------------------------------------------------------------------------
# Table 1


# The SMDs are computed by the analysis run (vigil.analysis.describe, results.table1_smd) from the exact
# counts; the report only decides whether to show them.


def table1(data: RunData, prot: Protection) -> Table:
    edss_levels = data.levels.get("edss", [])
    reference = edss_levels[0] if edss_levels else None
    compared = edss_levels[1:]
    columns = [("Overall", None)] + [(f"EDSS {e}", e) for e in edss_levels]
    smd_cols = [f"SMD {e}" for e in compared]
    stats = {row["edss"]: row for row in data.table1_stats.iter_rows(named=True)}
    n_key = {None: patients_key(*OVERALL), **{e: patients_key("edss", e) for e in edss_levels}}
    smd_variable = {prefix: variable for variable, prefix in CONTINUOUS.items()}  # results.table1_smd.variable

    def count_key(variable, level, edss):
        if edss is None:
            return patients_key(variable, level) if variable in data.levels else cell_key("t1", variable, level, "overall")
        return cell_key("t1", variable, level, edss)

    def column_hidden(edss) -> bool:  # estimates of the column: fewer than 5 patients
        return is_small(prot.value(n_key[edss]))

    rows = [{"Characteristic": "Patients", "Level": "n", **{c: prot.count(n_key[e]) for c, e in columns},
             **{c: "" for c in smd_cols}}]

    def continuous(label, stat, fmt):
        row = {"Characteristic": label[0], "Level": label[1]}
        for c, e in columns:
            s = stats.get(e)
            if prot.is_suppressed(n_key[e]) and not column_hidden(e):
                row[c] = SUPPRESSED  # the column's size is hidden: so is whether it has any patient
            elif s is None or s["n"] == 0:
                row[c] = NOT_APPLICABLE
            elif column_hidden(e) or (stat == "edss" and is_small(s["edss_n"])):
                row[c] = SUPPRESSED
            else:
                row[c] = fmt(s)
        for col, e in zip(smd_cols, compared):
            s1, s0 = stats.get(e), stats.get(reference)
            if s1 is None or s0 is None or stat == "edss":  # the columns are defined by the EDSS score
                row[col] = NOT_APPLICABLE
            elif column_hidden(e) or column_hidden(reference):
                row[col] = SUPPRESSED
            else:
                row[col] = format_estimate(data.smd(smd_variable[stat], e), digits=2)
        rows.append(row)

    def mean_sd(prefix):
        return lambda s: (NOT_APPLICABLE if s[f"{prefix}_mean"] is None else
                          f"{s[f'{prefix}_mean']:.1f} ({format_estimate(s[f'{prefix}_sd'], digits=1)})")

    def median_iqr(prefix):
        return lambda s: (NOT_APPLICABLE if s[f"{prefix}_median"] is None else
                          f"{s[f'{prefix}_median']:.1f} ({s[f'{prefix}_q1']:.1f}–{s[f'{prefix}_q3']:.1f})")

    continuous(("Age at index (years)", "mean (SD)"), "age", mean_sd("age"))
    continuous(("Baseline EDSS score", "median (IQR)"), "edss", median_iqr("edss"))
    continuous(("Follow-up (years)", "median (IQR)"), "fu", median_iqr("fu"))

    for variable, (label, _) in TABLE1_CATEGORICAL.items():
        levels = table1_levels(data, variable)
        for level in levels:
            row = {"Characteristic": label, "Level": level}
            for c, e in columns:
                key = count_key(variable, level, e)
                n = prot.value(key)
                shown = prot.count(key)
                if prot.is_suppressed(key) or n == 0 or prot.is_suppressed(n_key[e]):
                    row[c] = shown
                else:
                    row[c] = f"{shown} ({100 * n / prot.value(n_key[e]):.1f})"
            for col, e in zip(smd_cols, compared):
                row[col] = ""
            rows.append(row)
        # one SMD per variable, on its first level's row
        first_row = rows[-len(levels)]
        for col, e in zip(smd_cols, compared):
            keys = [count_key(variable, lv, x) for lv in levels for x in (e, reference)]
            if any(prot.is_suppressed(k) for k in keys) or column_hidden(e) or column_hidden(reference):
                first_row[col] = SUPPRESSED
            else:
                first_row[col] = format_estimate(data.smd(variable, e), digits=2)
    cols = ["Characteristic", "Level"] + [c for c, _ in columns] + smd_cols
    return Table("table1", "Baseline characteristics at the index date, overall and by baseline EDSS (Table 1)",
                 _text_frame(rows, cols), ["Characteristic", "Level"], [c for c, _ in columns],
                 group_column="Characteristic", wide=True,
                 notes=["Categorical rows: n (% of the column). SMD <category>: absolute standardised mean difference of "
                        f"that EDSS category against the reference category {reference} (continuous: difference of means over the "
                        "pooled SD; categorical: Yang & Dalton's multivariate SMD, see Methods), on the "
                        "characteristic's first row. SMDs of 0.1 or more suggest imbalance.", LEGEND])


# ---------------------------------------------------------------------------------------------
# incidence


def incidence_table(data: RunData, prot: Protection, outcome: str) -> Table:
    frame = _ordered(data.incidence.filter(pl.col("outcome") == outcome), data)
    rows = []
    for r in frame.iter_rows(named=True):
        s, st = r["stratifier"], r["stratum"]
        p, e, py = (patients_key(s, st), cell_key("events", outcome, s, st), cell_key("py", outcome, s, st))
        hidden = prot.is_suppressed(e) or prot.is_suppressed(py) or is_small(r["n_patients"])
        rows.append({
            "Stratifier": STRATIFIERS.get(s, s), "Stratum": "All patients" if s == "overall" else st,
            "Patients": prot.count(p), "Events": prot.count(e),
            "Person-years": format_estimate(r["person_years"], prot.is_suppressed(py), digits=1),
            "Rate per 1,000 PY": format_estimate(r["rate_per_1000py"], hidden, digits=2),
            "95% CI": format_interval(r["ci_lower"], r["ci_upper"], hidden, digits=2),
        })
    cols = ["Stratifier", "Stratum", "Patients", "Events", "Person-years", "Rate per 1,000 PY", "95% CI"]
    return Table(f"incidence_{outcome}", f"Incidence: {OUTCOMES.get(outcome, outcome)}", _text_frame(rows, cols),
                 ["Stratifier", "Stratum"], ["Patients", "Events"], group_column="Stratifier",
                 notes=["Rate per 1,000 person-years (PY) with the exact Poisson 95% confidence interval "
                        "(χ² quantiles; lower limit 0 when there are no events).", LEGEND])


def risk_window_table(data: RunData, prot: Protection) -> Table:
    rw = data.risk_windows
    order = {w: i for i, w in enumerate(WINDOW_ORDER)}
    rw = rw.sort(pl.col("window").replace_strict(order, default=len(order)))
    rows = []
    for r in rw.iter_rows(named=True):
        e, py = cell_key("rw_events", r["window"]), cell_key("rw_py", r["window"])
        hidden = prot.is_suppressed(e) or prot.is_suppressed(py)
        rows.append({"Days since course start": r["window"],
                     "Patients": prot.count(cell_key("rw_patients", r["window"])) if "n_patients" in r else NOT_APPLICABLE,
                     "Events": prot.count(e),
                     "Person-years": format_estimate(r["person_years"], prot.is_suppressed(py), digits=1),
                     "Rate per 1,000 PY": format_estimate(r["rate_per_1000py"], hidden),
                     "95% CI": format_interval(r["ci_lower"], r["ci_upper"], hidden)})
    total_e = cell_key("events", "all_serious", *OVERALL)
    total_py = cell_key("py", "all_serious", *OVERALL)
    if cell_key("rw_events", "total") in prot.values:
        total_e = cell_key("rw_events", "total")
    if cell_key("rw_py", "total") in prot.values:
        total_py = cell_key("rw_py", "total")
    if total_e in prot.values and total_py in prot.values:
        rows.append({"Days since course start": "All windows", "Patients": prot.count(patients_key(*OVERALL)),
                     "Events": prot.count(total_e),
                     "Person-years": format_estimate(prot.value(total_py), prot.is_suppressed(total_py), digits=1),
                     "Rate per 1,000 PY": NOT_APPLICABLE, "95% CI": NOT_APPLICABLE})
        # the total's rate is the all-serious overall rate of the incidence table
        inc = data.incidence.filter((pl.col("outcome") == "all_serious") & (pl.col("stratifier") == "overall"))
        if inc.height and total_e.startswith("events"):
            r = inc.row(0, named=True)
            hidden = prot.is_suppressed(total_e) or prot.is_suppressed(total_py)
            rows[-1]["Rate per 1,000 PY"] = format_estimate(r["rate_per_1000py"], hidden)
            rows[-1]["95% CI"] = format_interval(r["ci_lower"], r["ci_upper"], hidden)
    cols = ["Days since course start", "Patients", "Events", "Person-years", "Rate per 1,000 PY", "95% CI"]
    return Table("risk_windows", "Serious infection episodes by time since the start of the most recent course",
                 _text_frame(rows, cols), ["Days since course start"], ["Patients", "Events"],
                 notes=["Day 0 = first infusion day of the most recent alemtuzumab course (derived courses). "
                        "Every serious episode and every day of follow-up falls in exactly one window; "
                        "‘All windows’ equals the all-serious overall row of the incidence table. Patients: those with "
                        "follow-up in the window (a patient is in several windows).", LEGEND])


# ---------------------------------------------------------------------------------------------
# cumulative incidence


def cumulative_events(data: RunData) -> pl.DataFrame | None:
    """method, outcome, stratifier, stratum, day, cum_events: the events each fixed-day estimate rests on
    (results.cumulative_incidence.cumulative_events, else summed from the step curves)."""
    ci = data.cumulative_incidence
    if "cumulative_events" in ci.columns:
        return ci.select("method", "outcome", "stratifier", "stratum", "day",
                         pl.col("cumulative_events").alias("cum_events"))
    curves = data.curves
    if "n_events" not in curves.columns:
        return None
    keys = ["method", "outcome", "stratifier", "stratum"]
    days = sorted(ci["day"].unique().to_list())
    return pl.concat([curves.filter(pl.col("day") <= day).group_by(keys).agg(
        pl.col("n_events").sum().alias("cum_events")).with_columns(pl.lit(day).alias("day")) for day in days])


def cumulative_incidence_table(data: RunData, prot: Protection, method: str, outcome: str,
                               cum_events: pl.DataFrame | None) -> Table:
    ci = data.cumulative_incidence.filter((pl.col("method") == method) & (pl.col("outcome") == outcome))
    days = sorted(ci["day"].unique().to_list())
    ev = {}
    if cum_events is not None:
        for r in cum_events.filter((pl.col("method") == method) & (pl.col("outcome") == outcome)).iter_rows(named=True):
            ev[(r["stratifier"], r["stratum"], r["day"])] = r["cum_events"]
    by = {(r["stratifier"], r["stratum"], r["day"]): r for r in ci.iter_rows(named=True)}
    strata = [k for k in stratum_order(data) if any((k[0], k[1], d) in by for d in days)]
    rows = []
    for s, st in strata:
        row = {"Stratifier": STRATIFIERS.get(s, s), "Stratum": "All patients" if s == "overall" else st}
        for d in days:
            r = by.get((s, st, d))
            col = f"Day {d}"
            if r is None:
                row[col] = NOT_APPLICABLE
                continue
            small_events = is_small(ev.get((s, st, d)))
            hidden = (prot.is_suppressed(patients_key(s, st)) or small_events
                      or (r["n_at_risk"] or 0) < 5)
            est = format_estimate(r["estimate"], hidden, digits=2, percent=True)
            interval = format_interval(r["ci_lower"], r["ci_upper"], digits=2, percent=True)
            row[col] = est if est in (SUPPRESSED, NOT_APPLICABLE) or interval == NOT_APPLICABLE else f"{est} ({interval})"
        rows.append(row)
    cols = ["Stratifier", "Stratum"] + [f"Day {d}" for d in days]
    title = f"Cumulative incidence (%) of {OUTCOMES.get(outcome, outcome).lower()}: {METHODS.get(method, method)}"
    ci_text = ("Greenwood variance, log(−log) transformed" if method == "kaplan_meier"
               else "as computed by the analysis (Aalen–Johansen)")
    return Table(f"cuminc_{method}_{outcome}", title, _text_frame(rows, cols), ["Stratifier", "Stratum"], [],
                 group_column="Stratifier", wide=len(days) > 4,
                 notes=[f"Cumulative incidence in % with 95% CI ({ci_text}). Estimates resting on 1–4 events, "
                        "or where fewer than 5 patients remain at risk, are suppressed.", LEGEND])


def at_risk_frame(data: RunData) -> pl.DataFrame:
    """outcome, stratifier, stratum, day, n_at_risk at the fixed days (from the Kaplan–Meier rows; the
    Aalen–Johansen risk set is the same patients)."""
    ci = data.cumulative_incidence
    methods = ci["method"].unique().to_list()
    base = "kaplan_meier" if "kaplan_meier" in methods else (methods[0] if methods else None)
    frame = (ci.filter(pl.col("method") == base)
             .select("outcome", "stratifier", "stratum", "day", pl.col("n_at_risk").cast(pl.Float64)))
    return frame.unique(["outcome", "stratifier", "stratum", "day"]).sort("outcome", "stratifier", "stratum", "day")


def at_risk_table(data: RunData, prot: Protection, outcome: str, stratifier: str) -> Table:
    ar = data.cumulative_incidence.filter((pl.col("outcome") == outcome) & (pl.col("stratifier") == stratifier))
    days = sorted(ar["day"].unique().to_list())
    strata = [st for s, st in stratum_order(data) if s == stratifier
              and ar.filter(pl.col("stratum") == st).height]
    rows = []
    for st in strata:
        row = {"Stratum": "All patients" if stratifier == "overall" else st,
               "Day 0": prot.count(patients_key(stratifier, st))}
        for d in days:
            key = cell_key("at_risk", outcome, stratifier, st, d)
            row[f"Day {d}"] = prot.count(key) if key in prot.values else NOT_APPLICABLE
        rows.append(row)
    cols = ["Stratum", "Day 0"] + [f"Day {d}" for d in days]
    label = STRATIFIERS.get(stratifier, stratifier)
    return Table(f"at_risk_{outcome}_{stratifier}", f"Numbers at risk: {OUTCOMES.get(outcome, outcome).lower()}, "
                 f"{label.lower() if stratifier != 'overall' else 'all patients'}",
                 _text_frame(rows, cols), ["Stratum"], cols[1:])


def logrank_table(data: RunData) -> Table:
    lr = data.logrank
    order = {s: i for i, s in enumerate(STRATIFIERS)}
    outcome_order = {o: i for i, o in enumerate(OUTCOMES)}
    rows = []
    for r in lr.sort(pl.col("outcome").replace_strict(outcome_order, default=99),
                     pl.col("stratifier").replace_strict(order, default=99)).iter_rows(named=True):
        hidden = is_small(r.get("n_events"))  # a test resting on 1-4 events
        rows.append({"Outcome": OUTCOMES.get(r["outcome"], r["outcome"]),
                     "Stratifier": STRATIFIERS.get(r["stratifier"], r["stratifier"]),
                     "Chi-square": format_estimate(r["chisq"], hidden, digits=2),
                     "df": NOT_APPLICABLE if r["df"] is None else str(int(r["df"])),
                     "p": format_p(r["p_value"], hidden)})
    cols = ["Outcome", "Stratifier", "Chi-square", "df", "p"]
    return Table("logrank", "Log-rank tests across the levels of each stratifier", _text_frame(rows, cols),
                 ["Outcome", "Stratifier", "df"], [], group_column="Outcome",
                 notes=["Log-rank test of equal hazards across the levels of the stratifier (death censored); df = levels "
                        "with patients at risk at an event time − 1. Tests resting on 1–4 events are suppressed; — : no "
                        "test possible (fewer than two levels with patients, or no events).", LEGEND])


# ---------------------------------------------------------------------------------------------
# Cox


def cox_rows(data: RunData, prot: Protection, outcome: str) -> list[dict]:
    """One row per variable level (reference first) with both models' estimates and suppression:
    an HR is suppressed when its level or the reference level has 1-4 patients or events."""
    cox = data.cox.filter((pl.col("outcome") == outcome) & (pl.col("variable") != "GLOBAL"))
    present = set(cox["variable"].to_list())
    variables = [v for v in STRATIFIERS if v in present] + sorted(present - set(STRATIFIERS))
    est = {(r["model"], r["variable"], r["level"]): r for r in cox.iter_rows(named=True)}
    term_ph = {}
    for r in cox.iter_rows(named=True):
        term_ph.setdefault((r["model"], r["variable"]), r.get("ph_p_value"))
    out = []
    for v in variables:
        refs = [r for r in cox.filter(pl.col("variable") == v)["reference_level"].to_list() if r is not None] \
            if "reference_level" in cox.columns else []
        levels = list(data.levels.get(v, []))
        reference = refs[0] if refs else (levels[0] if levels else None)
        if reference in levels:
            levels.remove(reference)
        levels = [reference] + levels if reference is not None else levels

        def small(level):
            p = patients_key(v, level)
            return ((p in prot.values and prot.is_suppressed(p))
                    or is_small(prot.values.get(cell_key("events", outcome, v, level))))

        for level in levels:
            row = {"variable": v, "level": level, "reference": level == reference}
            for model in ("univariable", "multivariable"):
                in_model = (model, v) in term_ph
                if level == reference:
                    row[model] = {"reference": True, "present": in_model, "ph_p_value": term_ph.get((model, v))}
                    continue
                r = est.get((model, v, level))
                if r is None:
                    row[model] = None
                    continue
                hidden = small(level) or (reference is not None and small(reference))
                finite = (r["hr"] is not None and math.isfinite(r["hr"]) and r["hr"] > 0
                          and r.get("ci_lower") is not None and r.get("ci_upper") is not None
                          and math.isfinite(r["ci_upper"]))
                row[model] = {"reference": False, "hidden": hidden, "finite": finite, **r}
            out.append(row)
    return out


def _ph_global(data: RunData, outcome: str) -> list[tuple[str, str, float | None]]:
    """(model, covariates, p) of each model's global PH test (rows with variable GLOBAL)."""
    cox = data.cox.filter((pl.col("outcome") == outcome) & (pl.col("variable") == "GLOBAL"))
    order = {v: i for i, v in enumerate(STRATIFIERS)}
    rows = [(r["model"], r.get("covariates") or "", r.get("ph_p_value")) for r in cox.iter_rows(named=True)]
    return sorted(rows, key=lambda x: (x[0] != "univariable", order.get(x[1], 99), x[1]))


def cox_table(data: RunData, prot: Protection, outcome: str) -> Table:
    rows = []
    for r in cox_rows(data, prot, outcome):
        row = {"Variable": STRATIFIERS.get(r["variable"], r["variable"]), "Level": r["level"]}
        for model, tag in (("univariable", "Univariable"), ("multivariable", "Multivariable")):
            m = r.get(model)
            if m is None or (m.get("reference") and not m.get("present")):
                vals = [NOT_APPLICABLE, "", "", ""]
            elif m.get("reference"):
                vals = ["1.00 (ref.)", "", "", format_p(m.get("ph_p_value"))]
            elif m["hidden"]:
                vals = [SUPPRESSED, SUPPRESSED, SUPPRESSED, ""]
            elif not m["finite"]:
                vals = [NOT_APPLICABLE, NOT_APPLICABLE, NOT_APPLICABLE, ""]
            else:
                vals = [format_estimate(m["hr"]), format_interval(m["ci_lower"], m["ci_upper"]),
                        format_p(m["p_value"]), ""]
            for name, value in zip(("HR", "95% CI", "p", "PH p"), vals):
                row[f"{tag} {name}"] = value
        rows.append(row)
    for model, covariates, p in _ph_global(data, outcome):
        if model == "univariable":
            continue  # one term: the model's global test is the term's test, on the reference row
        label = "all terms" if model == "multivariable" else STRATIFIERS.get(covariates, covariates)
        row = {"Variable": f"Global PH test, {model}", "Level": label}
        for tag in ("Univariable", "Multivariable"):
            for name in ("HR", "95% CI", "p", "PH p"):
                row[f"{tag} {name}"] = ""
        row[f"{'Univariable' if model == 'univariable' else 'Multivariable'} PH p"] = format_p(p)
        rows.append(row)
    cols = ["Variable", "Level"] + [f"{t} {n}" for t in ("Univariable", "Multivariable")
                                    for n in ("HR", "95% CI", "p", "PH p")]
    short = {c: c.split(" ", 1)[1] for c in cols[2:]}
    return Table(f"cox_{outcome}", f"Cox proportional hazards: {OUTCOMES.get(outcome, outcome).lower()}",
                 _text_frame(rows, cols), ["Variable", "Level"], [], group_column="Variable", wide=True,
                 header_groups=[("", 2), ("Univariable", 4), ("Multivariable", 4)], short_names=short,
                 notes=["Hazard ratios (HR) against the reference level with Wald 95% CI and Wald p; Efron ties; death "
                        "censored. Univariable: one model per stratum variable. Multivariable: age group, sex, Charlson, "
                        "prior DMTs, prior high-efficacy DMT and EDSS together. PH p (on the reference row): "
                        "proportional-hazards test of the variable's term (for a univariable model also its global test); "
                        "the last row tests all terms of the multivariable model together. An HR whose "
                        "level or reference level has 1–4 patients or events is suppressed; — : not estimable (no "
                        "events in the level, or the level is not in the model).", LEGEND])


# ---------------------------------------------------------------------------------------------
# data quality


def deliveries_table(data: RunData) -> Table:
    rows = []
    for r in data.deliveries.iter_rows(named=True):
        reason = r["reason"] or ""
        if r["status_at_run"] == "accepted":
            reason = "analysed in this run"
        elif r["status_at_run"] == "superseded" and r["status"] != "superseded":
            reason = "not the site's current delivery at the time of the run"
        path = r["folder"] or ""
        folder = path.rstrip("/").split("/")[-1]
        # The reason starts with the folder's path (as stored: a refusal makes it one line and inert): shown
        # from the folder's name on, the path being the landing area's.
        reason = inert(reason)
        for shown_path in (inert(path), inert(" ".join(path.splitlines()))):
            if folder and path and reason.startswith(shown_path):
                reason = inert(folder) + reason[len(shown_path):]
                break
        rows.append({"Delivery": str(r["delivery_id"]), "Folder": folder, "Site": r["site_id"] or NOT_APPLICABLE,
                     "Data cut": str(r["data_cut"]) if r["data_cut"] else NOT_APPLICABLE,
                     "Status": r["status_at_run"], "Reason": reason,
                     "Received": r["received_at"].strftime("%Y-%m-%d %H:%M UTC") if r["received_at"] else ""})
    cols = ["Delivery", "Folder", "Site", "Data cut", "Status", "Reason", "Received"]
    return Table("dq_deliveries", "Deliveries received, with their status at the time of the run",
                 _text_frame(rows, cols), cols, [],
                 notes=["accepted: the site's current delivery, analysed in this run; superseded: replaced by a later "
                        "delivery of the site; refused: nothing of it was loaded (the reason names the file)."])


def delivery_rows_table(data: RunData, prot: Protection) -> Table:
    rows = []
    sites = dict(zip(data.deliveries["delivery_id"].to_list(), data.deliveries["site_id"].to_list())) \
        if not data.deliveries.is_empty() else {}
    for r in data.delivery_tables.iter_rows(named=True):
        d, t = r["delivery_id"], r["table_name"]
        rows.append({"Delivery": str(d), "Site": sites.get(d) or NOT_APPLICABLE, "Table": t,
                     "Rows received": prot.count(cell_key("dq", d, t, "received")),
                     "Rows loaded": prot.count(cell_key("dq", d, t, "loaded")),
                     "Rows quarantined": prot.count(cell_key("dq", d, t, "quarantined"))})
    cols = ["Delivery", "Site", "Table", "Rows received", "Rows loaded", "Rows quarantined"]
    return Table("dq_rows", "Rows received, loaded and quarantined per delivery and table", _text_frame(rows, cols),
                 ["Delivery", "Site", "Table"], cols[3:], group_column="Delivery",
                 notes=["Received = loaded + quarantined. Refused deliveries load nothing and are not listed.", LEGEND])


def quarantine_table(data: RunData, prot: Protection) -> Table:
    rows = []
    sites = dict(zip(data.deliveries["delivery_id"].to_list(), data.deliveries["site_id"].to_list())) \
        if not data.deliveries.is_empty() else {}
    for r in data.quarantine.iter_rows(named=True):
        d, t, reason = r["delivery_id"], r["table_name"], r["reason"]
        rows.append({"Delivery": str(d), "Site": sites.get(d) or NOT_APPLICABLE, "Table": t, "Reason": reason,
                     "Rows": prot.count(cell_key("dq_reason", d, t, reason))})
    cols = ["Delivery", "Site", "Table", "Reason", "Rows"]
    return Table("dq_quarantine", "Quarantined rows per delivery, table and reason", _text_frame(rows, cols),
                 ["Delivery", "Site", "Table", "Reason"], ["Rows"], group_column="Delivery",
                 notes=["Reason of the first contract rule a row broke (codes explained in the next table); "
                        "patient_quarantined and no_follow_up follow from another quarantined row. The rows of a "
                        "delivery and table add up to its quarantined rows in the table above.", LEGEND])


def reasons_table(data: RunData, contract_reasons: dict[str, str]) -> Table:
    used = set(data.quarantine["reason"].to_list()) if not data.quarantine.is_empty() else set()
    rows = [{"Reason": code, "Meaning": meaning} for code, meaning in contract_reasons.items() if code in used]
    rows += [{"Reason": code, "Meaning": ""} for code in sorted(used - set(contract_reasons))]
    return Table("dq_reasons", "Quarantine reason codes of the extract contract", _text_frame(rows, ["Reason", "Meaning"]),
                 ["Reason", "Meaning"], [])


# ---------------------------------------------------------------------------------------------
# SAP v1.1: A5's model summaries, joint tests and site-stratified model; A8-A11


def _level_hidden(data: RunData, prot: Protection, outcome: str):
    """An estimate of a level against its reference is hidden when either has 1-4 patients or events
    (or its count is suppressed)."""
    def small(variable: str, level: str | None) -> bool:
        if level is None:
            return False
        p, e = patients_key(variable, level), cell_key("events", outcome, variable, level)
        return ((p in prot.values and prot.is_suppressed(p)) or (e in prot.values and prot.is_suppressed(e))
                or is_small(prot.values.get(e)))

    def hidden(variable: str, level: str, reference: str | None) -> bool:
        return small(variable, level) or small(variable, reference)
    return hidden


def _ratio_cells(estimate, lower, upper, p, hidden: bool) -> list[str]:
    if hidden:
        return [SUPPRESSED, SUPPRESSED, SUPPRESSED]
    if estimate is None or not math.isfinite(estimate):
        return [NOT_APPLICABLE] * 3
    return [format_estimate(estimate), format_interval(lower, upper), format_p(p)]


def incidence_proportion_table(data: RunData, prot: Protection) -> Table | None:
    ip = data.table("incidence_proportion")
    if ip.is_empty():
        return None
    days = sorted(ip["day"].unique().to_list())
    by = {(r["stratifier"], r["stratum"], r["day"]): r for r in ip.iter_rows(named=True)}
    rows = []
    for s, st in [k for k in stratum_order(data) if any((k[0], k[1], d) in by for d in days)]:
        row = {"Stratifier": STRATIFIERS.get(s, s), "Stratum": "All patients" if s == "overall" else st}
        for d in days:
            r = by[(s, st, d)]
            cases, denominator = cell_key("ip_cases", s, st, d), cell_key("ip_denominator", s, st, d)
            hidden = (prot.is_suppressed(cases) or prot.is_suppressed(denominator) or is_small(r["n_cases"])
                      or is_small(r["n_denominator"]))
            row[f"Day {d} cases"], row[f"Day {d} n"] = prot.count(cases), prot.count(denominator)
            estimate = format_estimate(r["proportion"], hidden, digits=1, percent=True)
            interval = format_interval(r["ci_lower"], r["ci_upper"], hidden, digits=1, percent=True)
            row[f"Day {d} %"] = estimate if interval in (SUPPRESSED, NOT_APPLICABLE) else f"{estimate} ({interval})"
        rows.append(row)
    cols = ["Stratifier", "Stratum"] + [f"Day {d} {c}" for d in days for c in ("cases", "n", "%")]
    return Table("incidence_proportion", "Incidence proportion of the first serious infection (A8)",
                 _text_frame(rows, cols), ["Stratifier", "Stratum"], [c for c in cols if c.endswith(("cases", " n"))],
                 group_column="Stratifier", wide=True,
                 header_groups=[("", 2)] + [(f"Day {d}", 3) for d in days],
                 short_names={c: c.rsplit(" ", 1)[1] for c in cols[2:]},
                 notes=["Cases: patients whose first serious infection falls on or before the day. n: the cases plus "
                        "the patients followed to the day without it, or who died before it without it; patients "
                        "censored alive before the day are left out. % with the exact Clopper–Pearson 95% CI.",
                        "A case counts whatever its follow-up would have been, a non-case only when followed to the "
                        "day: where many patients are censored before the day the proportion is biased upwards. "
                        "The cumulative incidence (A3, A4) above accounts for censoring.", LEGEND])


def standardised_rate_table(data: RunData, prot: Protection) -> Table | None:
    sr = data.table("standardised_rates")
    if sr.is_empty():
        return None
    rows = []
    for r in _ordered(sr, data).iter_rows(named=True):
        s, st, outcome = r["stratifier"], r["stratum"], r["outcome"]
        e, py, p = cell_key("events", outcome, s, st), cell_key("py", outcome, s, st), patients_key(s, st)
        hidden = (is_small(r["n_events"]) or (e in prot.values and prot.is_suppressed(e))
                  or (py in prot.values and prot.is_suppressed(py)) or (p in prot.values and prot.is_suppressed(p)))
        rows.append({"Stratifier": STRATIFIERS.get(s, s), "Stratum": "All patients" if s == "overall" else st,
                     "Crude rate": format_estimate(r["crude_rate"], hidden),
                     "Standardised rate": format_estimate(r["standardised_rate"], hidden),
                     "95% CI": format_interval(r["ci_lower"], r["ci_upper"], hidden)})
    cols = ["Stratifier", "Stratum", "Crude rate", "Standardised rate", "95% CI"]
    return Table("standardised_rates", "First serious infection: rates directly standardised to the cohort's "
                 "age and sex (A11)", _text_frame(rows, cols), ["Stratifier", "Stratum"], [],
                 group_column="Stratifier",
                 notes=["Per 1,000 person-years. Each stratum's rate standardised to the whole cohort's person-years "
                        "by age group × sex (cells where the stratum has no person-time left out of its standard), "
                        "gamma 95% CI of Fay & Feuer. Strata by age group or sex are not standardised. Events and "
                        "person-years: the incidence table.", LEGEND])


def rate_ratio_table(data: RunData, prot: Protection) -> Table | None:
    rr = data.table("rate_ratios").filter(pl.col("variable") != "(Intercept)") if data.table("rate_ratios").height \
        else pl.DataFrame()
    if rr.is_empty():
        return None
    by = {(r["model"], r["variance"], r["variable"], r["level"]): r for r in rr.iter_rows(named=True)}
    hidden_level = _level_hidden(data, prot, "all_serious")

    def window_hidden(window: str) -> bool:
        e = cell_key("rw_events", window)
        return prot.is_suppressed(e) or is_small(prot.values.get(e))

    fits = [(m, v) for m in ("univariable", "multivariable") for v in ("poisson", "negative_binomial")]
    rows = []
    seen = []
    for r in rr.filter(pl.col("model") == "multivariable").iter_rows(named=True):
        if (r["variable"], r["level"]) not in seen:
            seen.append((r["variable"], r["level"]))
    for variable, level in seen:
        reference = by[("multivariable", "poisson", variable, level)]["reference_level"]
        hidden = (window_hidden(level) or window_hidden(reference) if variable == "window"
                  else hidden_level(variable, level, reference))
        row = {"Variable": "Risk window (days)" if variable == "window" else STRATIFIERS.get(variable, variable),
               "Level": f"{level} vs {reference}"}
        for model, variance in fits:
            r = by.get((model, variance, variable, level))
            cells = _ratio_cells(*(r[c] for c in ("rate_ratio", "ci_lower", "ci_upper", "p_value")), hidden) \
                if r else [NOT_APPLICABLE, "", ""]
            row[f"{model} {variance} RR"], row[f"{model} {variance} CI"] = cells[0], cells[1]
        rows.append(row)
    cols = ["Variable", "Level"] + [f"{m} {v} {c}" for m, v in fits for c in ("RR", "CI")]
    dispersion = {(r["model"], r["variance"]): (r["dispersion"], r["theta"]) for r in rr.iter_rows(named=True)}
    fit_note = "; ".join(
        f"{m} {'Poisson' if v == 'poisson' else 'negative binomial'}: dispersion "
        f"{format_estimate(dispersion[(m, v)][0])}" + (f", theta {format_estimate(dispersion[(m, v)][1])}"
                                                     if v != "poisson" else "")
        for m, v in fits if (m, v) in dispersion)
    return Table("rate_ratios", "Serious infection episodes: rate ratios by time since course start (A9)",
                 _text_frame(rows, cols), ["Variable", "Level"], [], group_column="Variable", wide=True,
                 header_groups=[("", 2), ("Unadjusted, Poisson", 2), ("Unadjusted, neg. binomial", 2),
                                ("Adjusted, Poisson", 2), ("Adjusted, neg. binomial", 2)],
                 short_names={c: ("95% CI" if c.endswith("CI") else "RR") for c in cols[2:]},
                 notes=["Rate ratios (RR) with Wald 95% CI from regression of the episodes on the risk window "
                        "(reference >365 days), unadjusted and adjusted for the multivariable Cox covariates, on "
                        "person-time aggregated by window × covariate pattern; negative binomial: the same model "
                        f"with extra-Poisson variance between those rows. Pearson dispersion (χ²/df): {fit_note}.",
                        "An RR is suppressed when its level or the reference has 1–4 events or patients.", LEGEND])


def fine_gray_table(data: RunData, prot: Protection) -> Table | None:
    fg = data.table("fine_gray")
    if fg.is_empty():
        return None
    hidden = _level_hidden(data, prot, "first_serious")
    by = {(r["model"], r["variable"], r["level"]): r for r in fg.iter_rows(named=True)}
    rows = []
    for r in fg.filter(pl.col("model") == "univariable").iter_rows(named=True):
        row = {"Variable": STRATIFIERS.get(r["variable"], r["variable"]),
               "Level": f"{r['level']} vs {r['reference_level']}"}
        for model in ("univariable", "multivariable"):
            m = by.get((model, r["variable"], r["level"]))
            cells = _ratio_cells(m["shr"], m["ci_lower"], m["ci_upper"], m["p_value"],
                                 hidden(r["variable"], r["level"], r["reference_level"])) \
                if m else [NOT_APPLICABLE, "", ""]
            for name, value in zip(("SHR", "95% CI", "p"), cells):
                row[f"{model} {name}"] = value
        rows.append(row)
    cols = ["Variable", "Level"] + [f"{m} {c}" for m in ("univariable", "multivariable") for c in ("SHR", "95% CI", "p")]
    return Table("fine_gray", "First serious infection with death as a competing event: Fine–Gray "
                 "subdistribution hazard ratios (A10)", _text_frame(rows, cols), ["Variable", "Level"], [],
                 group_column="Variable", wide=True,
                 header_groups=[("", 2), ("Univariable", 3), ("Multivariable", 3)],
                 short_names={c: c.split(" ", 1)[1] for c in cols[2:]},
                 notes=["Subdistribution hazard ratios (SHR) with robust 95% CI and p (as R cmprsk::crr). The "
                        "multivariable model has the covariates of the Cox model. An SHR is suppressed when its level "
                        "or the reference has 1–4 patients or events; — : not estimable.", LEGEND])


def cox_site_stratified_table(data: RunData, prot: Protection, outcome: str) -> Table | None:
    cox = data.table("cox_site_stratified")
    cox = cox.filter((pl.col("outcome") == outcome) & (pl.col("variable") != "GLOBAL")) if cox.height else cox
    if cox.is_empty():
        return None
    hidden = _level_hidden(data, prot, outcome)
    rows = []
    for r in cox.iter_rows(named=True):
        cells = _ratio_cells(r["hr"], r["ci_lower"], r["ci_upper"], r["p_value"],
                             hidden(r["variable"], r["level"], r["reference_level"]))
        rows.append({"Variable": STRATIFIERS.get(r["variable"], r["variable"]),
                     "Level": f"{r['level']} vs {r['reference_level']}", "HR": cells[0], "95% CI": cells[1],
                     "p": cells[2]})
    cols = ["Variable", "Level", "HR", "95% CI", "p"]
    return Table(f"cox_site_stratified_{outcome}", f"Multivariable Cox model stratified by site: "
                 f"{OUTCOMES.get(outcome, outcome).lower()}", _text_frame(rows, cols), ["Variable", "Level"], [],
                 group_column="Variable",
                 notes=["The multivariable model with a baseline hazard of its own for each site (R "
                        "coxph(… + strata(site))): the hazard ratios compare patients within sites.", LEGEND])


def cox_fit_table(data: RunData, outcome: str) -> Table | None:
    models = data.table("cox_models")
    models = models.filter(pl.col("outcome") == outcome) if models.height else models
    if models.is_empty():
        return None
    tests = data.table("cox_tests")
    rows = []
    for r in models.iter_rows(named=True):
        few = is_small(r["n_events"]) or not r["n_events"]
        label = {"univariable": STRATIFIERS.get(r["covariates"], r["covariates"]),
                 "multivariable": "Multivariable", "multivariable_site_stratified": "Multivariable, strata(site)"}
        rows.append({"Model": label.get(r["model"], r["model"]),
                     "Log-likelihood": format_estimate(r["loglik"], few, digits=1),
                     "AIC": format_estimate(r["aic"], few, digits=1),
                     "Concordance": format_estimate(r["concordance"], few, digits=3)
                     + ("" if few or r["concordance_se"] is None else f" ({format_estimate(r['concordance_se'], digits=3)})"),
                     "Wald p / LR p": ""})
        if tests.height and r["model"] != "univariable":
            for t in tests.filter((pl.col("outcome") == outcome) & (pl.col("model") == r["model"])).iter_rows(named=True):
                rows.append({"Model": f"  {STRATIFIERS.get(t['variable'], t['variable'])} (joint)",
                             "Log-likelihood": "", "AIC": "", "Concordance": "",
                             "Wald p / LR p": f"{format_p(t['wald_p'], few)} / {format_p(t['lr_p'], few)}"})
    cols = ["Model", "Log-likelihood", "AIC", "Concordance", "Wald p / LR p"]
    return Table(f"cox_models_{outcome}", f"Cox models: fit and joint tests, {OUTCOMES.get(outcome, outcome).lower()}",
                 _text_frame(rows, cols), ["Model"], [],
                 notes=["Partial log-likelihood (Efron) at the estimate, AIC, and Harrell's concordance (standard "
                        "error) of each model, as R's coxph reports them. Joint tests of each variable of the "
                        "multivariable models: Wald, and likelihood ratio of dropping it (R drop1).", LEGEND])
