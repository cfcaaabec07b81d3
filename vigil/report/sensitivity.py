"""The report's section on the sensitivity analyses (SAP A12): each variant of the run beside the main
analysis, from the run's results (results.variants and the variants' rows), under disclosure control.

  - the primary outcome's overall rate (A1) in each variant that computed it;
  - the risk windows (A2) under each course gap;
  - the multivariable hazard ratios (A5) of each variant beside the main ones, as a table and a forest plot.

A variant's hazard ratio is shown only where the main analysis shows that level's and where, in the
variant's own data, the level and its reference have no count of patients or events of 1-4 (results.cox
level_patients, level_events, reference_patients, reference_events); a variant's counts are cells of the report's disclosure plan (vigil.report.protect), where leaving
a site out ties the variant's total to the site's own counts.
"""

from __future__ import annotations

import math

import polars as pl

from vigil.analysis.variants import MAIN
from vigil.report import figures as F
from vigil.report import tables as T
from vigil.report.data import OUTCOMES, STRATIFIERS, RunData, json_value
from vigil.report.disclosure import (LESS_THAN_5, NOT_APPLICABLE, SUPPRESSED, cell_key, format_estimate,
                                     format_interval, is_small)
from vigil.report.protect import OVERALL, Protection, patients_key

OUTCOME = "first_serious"


def sensitivity_blocks(data: RunData, prot: Protection, block) -> list:
    """The section's blocks (block: the render module's Block class); a note for a run without variants."""
    if data.variants.is_empty():
        return [block("note", text="This run has no sensitivity analysis (vigil analyse --variant; vigil run runs "
                                   "all of them).")]
    blocks = [block("table", table=variants_table(data))]
    if (rates := overall_rate_table(data, prot)) is not None:
        blocks.append(block("table", table=rates))
    if (windows := risk_windows_table(data, prot)) is not None:
        blocks.append(block("table", table=windows))
    rows, variants = hazard_ratio_rows(data, prot)
    if rows:
        figure = F.variant_forest(OUTCOMES[OUTCOME], variants, [_drawable(r) for r in rows], "fig_sensitivity_hr")
        if figure is not None:
            blocks.append(block("figure", figure=figure))
        blocks.append(block("table", table=hazard_ratio_table(rows, variants)))
    return blocks


def variants_table(data: RunData) -> T.Table:
    rows = [{"Variant": MAIN, "Sensitivity analysis": "—", "What it changes": "The SAP's primary analysis.",
             "Analyses": "all"}]
    for r in data.variants.iter_rows(named=True):
        rows.append({"Variant": r["variant"], "Sensitivity analysis": r["sensitivity"] or "—",
                     "What it changes": r["description"], "Analyses": ", ".join(json_value(r["analyses"]))})
    cols = ["Variant", "Sensitivity analysis", "What it changes", "Analyses"]
    return T.Table("variants", "Sensitivity analyses of this run (SAP A12)", T._text_frame(rows, cols), cols, [],
                   notes=["Each sensitivity analysis is a named variant of the run, computed from the same deliveries "
                          "and stored beside the main results (results.variants). A1: the overall rate of the primary "
                          "outcome; A2: risk windows; A5: the multivariable Cox model; A9: rate ratios by risk window."])


def overall_rate_table(data: RunData, prot: Protection) -> T.Table | None:
    sens = data.sensitivity.get("incidence", pl.DataFrame())
    sens = sens.filter(pl.col("outcome") == OUTCOME) if sens.height else sens
    if sens.is_empty():
        return None
    main = data.incidence.filter((pl.col("outcome") == OUTCOME) & (pl.col("stratifier") == "overall")).row(0, named=True)
    rows = [_rate_row(MAIN, main, prot.count(patients_key(*OVERALL)), cell_key("events", OUTCOME, *OVERALL),
                      cell_key("py", OUTCOME, *OVERALL), prot)]
    for r in sens.iter_rows(named=True):
        v = r["variant"]
        rows.append(_rate_row(v, r, prot.count(cell_key("v_patients", v)), cell_key("v_events", v),
                              cell_key("v_py", v), prot))
    cols = ["Variant", "Patients", "Events", "Person-years", "Rate per 1,000 PY", "95% CI"]
    return T.Table("sensitivity_rates", f"{OUTCOMES[OUTCOME]}: overall rate in each sensitivity analysis (A1)",
                   T._text_frame(rows, cols), ["Variant"], ["Patients", "Events"],
                   notes=["Rate per 1,000 person-years with the exact Poisson 95% CI.", T.LEGEND])


def _rate_row(variant: str, r: dict, patients: str, events_key: str, py_key: str, prot: Protection) -> dict:
    hidden = prot.is_suppressed(events_key) or prot.is_suppressed(py_key) or is_small(r["n_patients"])
    return {"Variant": variant, "Patients": patients, "Events": prot.count(events_key),
            "Person-years": format_estimate(r["person_years"], prot.is_suppressed(py_key), digits=1),
            "Rate per 1,000 PY": format_estimate(r["rate_per_1000py"], hidden),
            "95% CI": format_interval(r["ci_lower"], r["ci_upper"], hidden)}


def risk_windows_table(data: RunData, prot: Protection) -> T.Table | None:
    sens = data.sensitivity.get("risk_windows", pl.DataFrame())
    if sens.is_empty():
        return None
    variants = sens["variant"].unique(maintain_order=True).to_list()
    rows = []
    for window in T.WINDOW_ORDER:
        row = {"Days since course start": window}
        main = data.risk_windows.filter(pl.col("window") == window)
        for v, frame, key in [(MAIN, main, lambda what: cell_key(f"rw_{what}", window))] + [
                (v, sens.filter((pl.col("variant") == v) & (pl.col("window") == window)),
                 lambda what, v=v: cell_key(f"v_rw_{what}", v, window)) for v in variants]:
            if frame.is_empty():
                row[f"{v} events"] = row[f"{v} rate"] = NOT_APPLICABLE
                continue
            r = frame.row(0, named=True)
            e, py = key("events"), key("py")
            hidden = prot.is_suppressed(e) or prot.is_suppressed(py)
            row[f"{v} events"] = prot.count(e)
            rate = format_estimate(r["rate_per_1000py"], hidden)
            interval = format_interval(r["ci_lower"], r["ci_upper"], hidden)
            row[f"{v} rate"] = rate if interval in (SUPPRESSED, NOT_APPLICABLE) else f"{rate} ({interval})"
        rows.append(row)
    names = [MAIN, *variants]
    cols = ["Days since course start"] + [f"{v} {c}" for v in names for c in ("events", "rate")]
    return T.Table("sensitivity_risk_windows", "Serious infection episodes by risk window under each course "
                   "definition (A2)", T._text_frame(rows, cols), ["Days since course start"],
                   [f"{v} events" for v in names], header_groups=[("", 1)] + [(v, 2) for v in names],
                   short_names={c: ("Events" if c.endswith("events") else "Rate (95% CI)") for c in cols[1:]},
                   notes=["main: courses start at an infusion more than 30 days after the previous one; "
                          "course-gap-60: more than 60 days. Rate per 1,000 person-years (exact Poisson 95% CI).",
                          T.LEGEND])


def hazard_ratio_rows(data: RunData, prot: Protection) -> tuple[list[dict], list[str]]:
    """Per level of the multivariable model: the main and each variant's HR (hr, lo, hi) or a marker."""
    sens = data.sensitivity.get("cox", pl.DataFrame())
    sens = (sens.filter((pl.col("outcome") == OUTCOME) & (pl.col("model") == "multivariable")
                        & (pl.col("variable") != "GLOBAL")) if sens.height else sens)
    if sens.is_empty():
        return [], []
    variants = [MAIN, *sens["variant"].unique(maintain_order=True).to_list()]
    by_variant = {(r["variant"], r["variable"], r["level"]): r for r in sens.iter_rows(named=True)}
    rows = []
    for r in T.cox_rows(data, prot, OUTCOME):
        main = r.get("multivariable")
        if r["reference"] or not main or main.get("reference"):
            continue
        shown = not main["hidden"]
        estimates = {MAIN: _estimate(main, shown)}
        for v in variants[1:]:
            vr = by_variant.get((v, r["variable"], r["level"]))
            estimates[v] = _estimate(vr, shown and not _small_cells(vr)) if vr else None
        rows.append({"group": STRATIFIERS.get(r["variable"], r["variable"]), "label": r["level"],
                     "estimates": estimates})
    return rows, variants


def _small_cells(r: dict) -> bool:
    """The variant's model, the level or its reference has 1-4 patients or events in the variant's data."""
    return any(is_small(r.get(c)) for c in ("n_events", "level_patients", "level_events", "reference_patients",
                                               "reference_events"))


def _estimate(r: dict | None, shown: bool):
    if r is None:
        return None
    if not shown:
        return SUPPRESSED
    if r["hr"] is None or not math.isfinite(r["hr"]) or r["ci_lower"] is None or r["ci_upper"] is None \
            or not math.isfinite(r["ci_upper"]) or r["ci_lower"] <= 0:
        return NOT_APPLICABLE
    return (r["hr"], r["ci_lower"], r["ci_upper"])


def _drawable(row: dict) -> dict:
    return {**row, "estimates": {v: e for v, e in row["estimates"].items() if isinstance(e, tuple)}}


def hazard_ratio_table(rows: list[dict], variants: list[str]) -> T.Table:
    out = []
    for r in rows:
        item = {"Variable": r["group"], "Level": r["label"]}
        for v in variants:
            e = r["estimates"].get(v)
            item[v] = (NOT_APPLICABLE if e is None else e if isinstance(e, str)
                       else f"{format_estimate(e[0])} ({format_interval(e[1], e[2])})")
        out.append(item)
    cols = ["Variable", "Level", *variants]
    return T.Table("sensitivity_hazard_ratios", f"{OUTCOMES[OUTCOME]}: multivariable hazard ratios in each "
                   "sensitivity analysis (A5)", T._text_frame(out, cols), ["Variable", "Level"], [],
                   group_column="Variable", wide=len(variants) > 4,
                   notes=["Hazard ratio (95% CI) against the reference level; main: the primary analysis. An HR is "
                          f"suppressed ({SUPPRESSED}) where the main analysis suppresses it, or where in the variant "
                          f"the level or its reference has 1–4 patients or events ({LESS_THAN_5}).", T.LEGEND])
