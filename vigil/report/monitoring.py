"""The report's "Safety monitoring" section (SAP 7: A13-A15) and the words on the first page, from the run's
results (vigil.report.data.Monitoring). Disclosure control (SAP 5): a count of 1-4 is shown as <5 and every
estimate computed from it (SIR and its CI, LLR) is suppressed; complementary suppression keeps a stratum's
observed count from being recovered from the overall one. E, the critical value and alpha are not counts of
patients or events and are shown."""

from __future__ import annotations

import json
import math

import polars as pl

from vigil.inert import inert
from vigil.report import figures as F
from vigil.report import tables as T
from vigil.report.data import OUTCOMES, STRATIFIERS, Monitoring, RunData
from vigil.report.disclosure import (
    NOT_APPLICABLE, SUPPRESSED, format_count, format_estimate, format_interval, is_small, protect_relations,
)
from vigil.report.tables import LEGEND

TERM_SETS = {"serious": "Serious infections", "opportunistic": "Opportunistic infections (any seriousness)"}


def signal_statement(data: RunData) -> str | None:
    """One sentence for the first page: whether the sequential test has signalled by this run's look."""
    m = data.monitoring
    if m is None:
        return None
    now = m.current
    look = m.look["look"]
    if now["signal"]:
        return (f"SIGNAL: the rate of first serious infection exceeds the reference rates. The sequential test "
                f"(SAP A14) signalled at look {now['signal_look']}; this report is look {look}.")
    if now["status"] == "before_M":
        return (f"No signal: look {look}; the sequential test cannot signal before "
                f"{json.loads(m.look['settings'])['M']} events (SAP A14).")
    return (f"No signal: at look {look} the observed first serious infections are below the critical value of "
            "the sequential test (SAP A14).")


def _observed_shown(m: Monitoring) -> set[tuple[str, str, str]]:
    """(outcome, stratifier, stratum) whose observed count may be shown, after primary (1-4) and
    complementary suppression within each stratifier."""
    oe = m.observed_expected
    keys = ["|".join(k) for k in oe.select("outcome", "stratifier", "stratum").rows()]
    cells = pl.DataFrame({"key": keys, "value": oe["observed"].cast(pl.Float64),
                          "suppressed": [is_small(v) for v in oe["observed"].to_list()]})
    relations = []
    for (outcome, stratifier), group in oe.group_by(["outcome", "stratifier"], maintain_order=True):
        if stratifier == "overall":
            continue
        relation = f"{outcome}|{stratifier}"
        relations.append((relation, f"{outcome}|overall|all", "total"))
        relations += [(relation, f"{outcome}|{stratifier}|{s}", "part") for s in group["stratum"].to_list()]
    protected = protect_relations(cells, pl.DataFrame(relations, schema=["relation", "key", "role"], orient="row"))
    return {tuple(k.split("|")) for k, hidden in zip(protected["key"], protected["suppressed"]) if not hidden}


def look_table(m: Monitoring) -> T.Table:
    rows = []
    for r in m.history.iter_rows(named=True):
        hidden = is_small(r["observed"])
        rows.append({
            "Look": str(r["look"]), "O": format_count(r["observed"]),
            "E": format_estimate(r["expected"], digits=2),
            "SIR": format_estimate(r["sir"], hidden, digits=2),
            "LLR": format_estimate(r["llr"], hidden, digits=3),
            "Critical value (events)": NOT_APPLICABLE if r["critical_events"] is None else str(r["critical_events"]),
            "Critical value (LLR)": format_estimate(r["critical_llr"], digits=3),
            "Alpha target": format_estimate(r["alpha_target"], digits=5),
            "Alpha spent": format_estimate(r["alpha_spent"], digits=5),
            "Signal": "yes" if r["signal"] else "no",
            "Note": r["note"] or "",
        })
    cols = ["Look", "O", "E", "SIR", "LLR", "Critical value (events)", "Critical value (LLR)", "Alpha target",
            "Alpha spent", "Signal", "Note"]
    return T.Table("monitoring_looks", "Sequential test of the primary outcome at each look (SAP A14)",
                   # the critical value is a threshold computed from E alone, not a count of patients or events
                   T._text_frame(rows, cols), ["Look", "Critical value (events)", "Signal", "Note"], ["O"], wide=True,
                   notes=["O, E: cumulative observed and expected first serious infections; SIR = O/E. A signal when O "
                          "reaches the critical value (Poisson MaxSPRT, power-type alpha spending, ρ = 1, M = 4, "
                          "T = 60 expected events, α = 0.05; as R Sequential 4.5). A signal is final.", LEGEND])


def observed_expected_table(m: Monitoring, outcome: str, shown: set) -> T.Table:
    rows = []
    frame = m.observed_expected.filter(pl.col("outcome") == outcome)
    for r in frame.iter_rows(named=True):
        visible = (outcome, r["stratifier"], r["stratum"]) in shown
        hidden = not visible or r["observed"] is None
        rows.append({
            "Stratifier": STRATIFIERS.get(r["stratifier"], r["stratifier"]),
            "Stratum": "All patients" if r["stratifier"] == "overall" else r["stratum"],
            "Observed": format_count(r["observed"], not visible),
            "Expected": format_estimate(r["expected"], digits=2),
            "Person-years": format_estimate(r["person_years"], digits=1),
            "SIR": format_estimate(r["sir"], hidden, digits=2),
            "95% CI": format_interval(r["ci_lower"], r["ci_upper"], hidden, digits=2),
        })
    cols = ["Stratifier", "Stratum", "Observed", "Expected", "Person-years", "SIR", "95% CI"]
    return T.Table(f"observed_expected_{outcome}", f"Observed against expected: {OUTCOMES.get(outcome, outcome)} "
                   "(SAP A13)", T._text_frame(rows, cols), ["Stratifier", "Stratum"], ["Observed"],
                   group_column="Stratifier",
                   notes=["Expected = Σ person-years × reference rate of the patient's outcome × sex × age group cell "
                          "(codelists/reference_rates.csv; sex U: mean of F and M). SIR 95% CI: exact Poisson limits "
                          "of O divided by E.", LEGEND])


def terms_table(m: Monitoring, term_set: str) -> T.Table:
    look = m.look["look"]
    rows = [{"MedDRA preferred term": r["meddra_pt"], "Events": format_count(r["n_events"]),
             "Onset ≤ 30 days after a course start": format_count(r["n_within_30_days"]),
             "First seen at look": str(r["first_look"]), "New at this look": "NEW" if r["first_look"] == look else ""}
            for r in m.terms.filter(pl.col("term_set") == term_set).iter_rows(named=True)]
    cols = ["MedDRA preferred term", "Events", "Onset ≤ 30 days after a course start", "First seen at look",
            "New at this look"]
    return T.Table(f"unexpected_{term_set}", f"{TERM_SETS[term_set]} by MedDRA preferred term at look {look} "
                   "(SAP A15)", T._text_frame(rows, cols), ["MedDRA preferred term", "First seen at look",
                                                            "New at this look"],
                   ["Events", "Onset ≤ 30 days after a course start"],
                   notes=["Cumulative counts at the look; NEW: the term appears for the first time at this look.",
                          LEGEND])


def _figure_looks(m: Monitoring) -> list[dict]:
    out = []
    for r in m.history.iter_rows(named=True):
        hidden = is_small(r["observed"])
        out.append({"look": r["look"], "observed": None if hidden else r["observed"], "expected": r["expected"],
                    "llr": None if hidden else r["llr"], "critical_llr": r["critical_llr"],
                    "signal_here": r["status"] == "signal" and not hidden})
    return out


def _forest_rows(m: Monitoring, outcome: str, table: T.Table) -> list[dict]:
    frame = m.observed_expected.filter(pl.col("outcome") == outcome)
    rows = []
    for r, shown in zip(frame.iter_rows(named=True), table.frame.iter_rows(named=True)):
        ok = shown["SIR"] not in (SUPPRESSED, NOT_APPLICABLE) and r["ci_upper"] is not None \
            and math.isfinite(r["ci_upper"])
        rows.append({"group": shown["Stratifier"], "label": shown["Stratum"], "sir": r["sir"], "lo": r["ci_lower"],
                     "hi": r["ci_upper"], "shown": ok, "note": "" if ok else shown["SIR"]})
    return rows


def monitoring_blocks(data: RunData, block) -> list:
    """The section's blocks (block: the report's Block constructor)."""
    m = data.monitoring
    if m is None:
        return [block("note", text="This run was made before the monitoring across data cuts (SAP 7) was kept "
                                   "with each run: no look.")]
    # the note names sites and data cuts from the manifests: delivered text, shown inert
    blocks = [block("text", text=f"Look {m.look['look']} of surveillance “{inert(m.look['surveillance'])}”: "
                                 f"{inert(m.look['note'])}.")]
    figure = F.monitoring_figure(_figure_looks(m))
    if figure:
        blocks.append(block("figure", figure=figure))
    blocks.append(block("table", table=look_table(m)))
    shown = _observed_shown(m)
    for outcome in m.observed_expected["outcome"].unique(maintain_order=True).to_list():
        table = observed_expected_table(m, outcome, shown)
        forest = F.sir_forest(OUTCOMES.get(outcome, outcome), _forest_rows(m, outcome, table), f"fig_sir_{outcome}")
        blocks.append(block("figure", figure=forest) if forest else
                      block("note", text=f"No SIR of {OUTCOMES.get(outcome, outcome).lower()} can be shown."))
        blocks.append(block("table", table=table))
    for term_set in TERM_SETS:
        blocks.append(block("table", table=terms_table(m, term_set)))
    return blocks
