"""The tidy table of an export: one run's results as an omopgenerics `summarised_result`, disclosure-controlled.

Shape (omopgenerics 1.3.0, R/classSummarisedResult.R and R/exportSummarisedResult.R, checked by
tests/reference/export_reference.R with `importSummarisedResult` and `validateResultArgument`):
the 13 columns result_id (integer), cdm_name, group_name, group_level, strata_name, strata_level,
variable_name, variable_level, estimate_name, estimate_type, estimate_value, additional_name,
additional_level (text); several names joined with " &&& " (levels alike), "overall" where there is no
grouping; estimate_type one of numeric, integer, date, character, proportion, percentage, logical;
NA allowed only in variable_level and estimate_value; no two rows that differ only in estimate_value.
The settings (one row per result_id: result_type, package_name, package_version, group, strata,
additional, min_cell_count, then the others alphabetically) are written as exportSummarisedResult
writes them, as rows of the same CSV after the results: variable_name "settings", estimate_name the
setting, estimate_type "character", estimate_value its value, group/strata/additional "overall",
variable_level and cdm_name NA. Every field is quoted but NA, as R's write.csv does.

One result_id per results table x variant (x method for cumulative incidence, x variance for rate
ratios): settings result_type = the results table, package_name vigil, package_version the run's
code_version, analysis = the SAP analysis (A1-A15, SAP1 attrition, SAP2 term list), variant (main or a
sensitivity analysis of SAP A12), run_id, sap_version, data_cuts (site:cut of the deliveries
analysed), min_cell_count 5. cdm_name names the data the run analysed: the site's id when the run
analysed one site's deliveries (a site of the network sharing its result package, SAP 8), else the
study id of the extract contract (ALZ-PASS-INF: the pooled warehouse, where sites are the strata
`site`).

Disclosure control (SAP 5), the same as the report's:
- A suppressed value is written "-" (omopgenerics::suppress's marker); min_cell_count 5 is recorded, so
  suppress() does not run again on it. 0 is shown.
- For the main analysis every value the report publishes is the report's cell (vigil.report.protect:
  build_protection, the report's disclosure plan: primary suppression of counts 1-4, complementary
  suppression over every additive relation, a stratum's person-time and numbers at risk hidden with its
  patient count), and every estimate is hidden by the rule the report's table applies (incidence:
  its events or person-years hidden or fewer than 5 patients; cumulative incidence: the stratum's
  patients hidden, 1-4 cumulative events or fewer than 5 at risk; Cox: vigil.report.tables.cox_rows;
  Table 1, its SMDs, the A13 observed counts (vigil.report.monitoring's own complementary pass) and
  SIRs, the A14 SIR and LLR: as their tables), so the export suppresses exactly what the report
  suppresses (tests/test_export.py compares them). Where the export shows a value the report shows
  elsewhere under another name, it is the same cell: A13's observed counts and person-years are the
  incidence table's first-event counts and person-years, and the A14 O is the overall one. A cell is
  then hidden wherever either of the report's tables hides it (the report's A13 table runs a
  complementary pass of its own, vigil.report.monitoring, and shows every stratum's person-years): the
  export is stricter than the report only where the report's own tables disagree about one value,
  which would let one table reopen the other's suppression.
- Values the report does not show are left out rather than suppressed when they would reopen a
  suppressed cell: the cumulative events behind each cumulative incidence (their column exists for
  disclosure control), the patients and events of the log-rank tests and of results.cox (a total of
  the same patients as the incidence table's), Table 1's count of patients with an EDSS score (the
  overall minus the `unknown` column), per-time counts of the step curves, and `note` texts. A model's
  patients and events that are published (results.cox_models, fine_gray, rate_ratios) are the overall
  cells of the same patients when equal, else suppressed; a model's fit statistics (log-likelihood,
  AIC, concordance) resting on 1-4 events are suppressed; the joint Wald and LR tests of
  results.cox_tests and the PH tests are shown, as the report shows the PH tests.
- results.cumulative_incidence_curves is not in the tidy table: its rows at every exit time reveal,
  by differences, how many patients left at each time (mostly 1-4). The fixed-day estimates of
  results.cumulative_incidence are the published quantity; the curves are in the exact files.
- Tables the report does not show (A8 incidence proportion, A9 rate ratios, A10 Fine-Gray, A11
  standardised rates, and every sensitivity-analysis variant): counts 1-4 suppressed, estimates
  computed from a suppressed or small cell suppressed, and the additive relations of the table (strata
  add up to the overall row; a stratum's patients = A8's denominator + those censored before the day;
  the risk windows add up to the all-serious total, also of the main analysis when a variant's
  windows add up to it; a variant that leaves a site out plus that site's stratum of the main analysis
  add up to the main total) protected by complementary suppression. A count that is a total of the same
  patients as a published cell is that cell; one that should be and differs is suppressed. A
  variant's Cox estimate is hidden when the main analysis hides it, or the model, the level or its
  reference has 1-4 patients or events in the variant's own data (results.cox level_* and reference_*).
- All cells (the report's plan and the export's own) are solved together once more
  (vigil.report.disclosure.protect_relations), so a relation across tables cannot reopen a cell; a
  relation left pinned with a cell not suppressed stops the export.

Delivered text (site ids, MedDRA terms, folder names, refusal reasons) stays data: every text field is
made inert (vigil.inert: one line, control characters as escapes) and neutralised against spreadsheet
formulas (a leading apostrophe: vigil.report.disclosure.neutralise_formula), as the report's CSVs are;
the suppression marker "-" of a number is left as omopgenerics writes it. Of the delivery folders only
the folder's name is shown (not the landing area's path), as in the report.

Every results table must have an entry in MAPPINGS (a builder, or the reason it is not in the tidy
table); tests/test_export.py fails naming a table without one.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import polars as pl

from vigil.analysis.variants import MAIN
from vigil.inert import inert
from vigil.report.data import json_value
from vigil.report.disclosure import MIN_SHOWN, cell_key, is_small, neutralise_formula, pinned_cells, protect_relations

COLUMNS = ("result_id", "cdm_name", "group_name", "group_level", "strata_name", "strata_level", "variable_name",
           "variable_level", "estimate_name", "estimate_type", "estimate_value", "additional_name", "additional_level")
ESTIMATE_TYPES = ("numeric", "integer", "date", "character", "proportion", "percentage", "logical")
OVERALL = "overall"
SEP = " &&& "
SUPPRESSED = "-"  # omopgenerics::suppress
MIN_CELL_COUNT = MIN_SHOWN
PACKAGE = "vigil"
FIRST_SETTINGS = ("result_type", "package_name", "package_version", "group", "strata", "additional", "min_cell_count")
NA = None


class TidyError(RuntimeError):
    """The tidy table cannot be made (the results disagree, or disclosure control cannot be satisfied)."""


# ---------------------------------------------------------------------------------------------
# rows


@dataclass
class Estimate:
    group: tuple = ()  # ((name, level), ...)
    strata: tuple = ()
    variable_name: str = ""
    variable_level: str | None = None
    estimate_name: str = ""
    estimate_type: str = "numeric"
    value: object = None
    additional: tuple = ()
    cell: str | None = None  # the disclosure cell this value is (counts, person-years)
    depends: tuple = ()  # cells whose suppression hides this value
    hidden: bool = False  # hidden by the rule of the report's table (an estimate from a small cell)


@dataclass
class Mapping:
    table: str
    analysis: str | Callable[[dict], str]  # SAP analysis, or a function of the split values
    build: Callable | None = None  # (ctx, frame) -> list[Estimate]
    split: tuple[str, ...] = ()  # columns whose values make results of their own (a setting each)
    excluded: str | None = None  # why the table is not in the tidy table


@dataclass
class Result:
    mapping: Mapping
    variant: str
    split: dict
    rows: list[Estimate]


def _strata(stratifier: str, stratum: str) -> tuple:
    return () if stratifier == OVERALL else ((stratifier, stratum),)


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# the context: cells of the report's plan and the export's own


class Context:
    """What a builder needs: the report's plan (main analysis) and the export's own cells and relations."""

    def __init__(self, data, prot, cox_hidden: dict, observed_shown: set | None) -> None:
        self.data = data
        self.prot = prot
        self.cox_hidden = cox_hidden  # (outcome, model, variable, level) -> hidden, main analysis
        self.observed_shown = observed_shown  # A13 cells the report's monitoring section shows
        self.variant = MAIN
        self.left_out: dict[str, str] = data.left_out_sites  # variant -> the site it leaves out (SAP A12 b)
        self.cells: dict[str, tuple[float, str, bool]] = {}  # the export's own: key -> (value, kind, primary)
        self.relations: list[tuple[str, str, str]] = []
        self.relation_ids: set[str] = set()
        self.dependents: dict[str, set[str]] = {}
        self.forced: set[str] = set()  # cells of the plan another table of the report hides
        self._serial = 0

    @property
    def main(self) -> bool:
        return self.variant == MAIN

    def key(self, *parts) -> str:
        """A cell's key: the report's plan's for the main analysis, the variant's own otherwise."""
        return cell_key(*parts) if self.main else cell_key("variant", self.variant, *parts)

    def known(self, key: str) -> bool:
        return key in self.prot.values or key in self.cells

    def value(self, key: str) -> float | None:
        if key in self.prot.values:
            return self.prot.values[key]
        if key in self.cells:
            return self.cells[key][0]
        return None

    def cell(self, key: str, value, kind: str = "count", primary: bool = False) -> str:
        """The cell `key` holding `value`: the plan's or an earlier one when it holds the same value; a
        count that should be it and differs is hidden (a second total of the same patients could give the
        difference away)."""
        value = 0.0 if value is None else float(value)
        known = self.value(key)
        if known is not None:
            if abs(known - value) <= 1e-6 * max(1.0, abs(value)):
                if primary and key in self.cells:
                    old = self.cells[key]
                    self.cells[key] = (old[0], old[1], True)
                elif primary:
                    self.forced.add(key)
                return key
            self._serial += 1
            other = cell_key("differs", key, self._serial)
            self.cells[other] = (value, kind, True)
            return other
        self.cells[key] = (value, kind, primary or (kind == "count" and is_small(value)))
        return key

    def total(self, candidates: Iterable[str], value: float) -> str | None:
        """The first known cell of `candidates` holding `value` (a total to relate parts to), or None."""
        for key in candidates:
            known = self.value(key)
            if known is not None and abs(known - value) <= 1e-6 * max(1.0, abs(value)):
                return key
        return None

    def relate(self, relation: str, total: str | None, parts: list[str]) -> None:
        parts = [p for p in parts if p and p != total]
        rid = cell_key("export", self.variant, relation)
        if total is None or not parts or rid in self.relation_ids or not all(self.known(k) for k in (total, *parts)):
            return
        self.relation_ids.add(rid)
        self.relations.append((rid, total, "total"))
        self.relations += [(rid, p, "part") for p in parts]

    def depend(self, key: str, dependents: list[str]) -> None:
        self.dependents.setdefault(key, set()).update(dependents)

    def plan_hidden(self, key: str) -> bool:
        return bool(self.prot.suppressed.get(key))


# ---------------------------------------------------------------------------------------------
# builders, one per results table


def _counted(ctx, rows, group, strata, variable, value, key, kind="count", estimate="count", additional=(),
             primary=False, level=None, hidden=False):
    if value is None:
        return None
    cell = ctx.cell(key, value, kind, primary or hidden)
    rows.append(Estimate(group, strata, variable, level, estimate, "integer" if kind == "count" else "numeric",
                         value, additional, cell=cell, hidden=hidden))
    return cell


def _estimates(rows, group, strata, variable, values: dict, depends=(), hidden=False, additional=(), level=None,
               kind="numeric"):
    for name, value in values.items():
        if value is None or (kind == "character" and value == ""):
            continue
        rows.append(Estimate(group, strata, variable, level, name, kind, value, additional, depends=tuple(depends),
                             hidden=hidden))


def _strata_relations(ctx, frame: pl.DataFrame, what: str, key_of, value_col: str, by: tuple[str, ...]):
    """Strata of each stratifier add up to the overall row (per `by`): relate their cells."""
    for keys, part in frame.group_by(list(by), maintain_order=True):
        keys = dict(zip(by, keys))
        for stratifier, strata in part.group_by("stratifier", maintain_order=True):
            stratifier = stratifier[0]
            if stratifier == OVERALL:
                continue
            overall = part.filter(pl.col("stratifier") == OVERALL)
            if overall.is_empty():
                continue
            total = key_of(keys, OVERALL, "all")
            parts = [key_of(keys, stratifier, s) for s in strata["stratum"].to_list()]
            if total in ctx.cells or total in ctx.prot.values:
                ctx.relate(cell_key(what, *keys.values(), stratifier), total, [p for p in parts if ctx.known(p)])


def build_attrition(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    att = frame.sort("step")
    steps = att["step"].to_list()
    total_p = ctx.key("patients", "overall", "all")
    if att.height:
        received = att["n_remaining"][0] + att["n_excluded"][0]
        received_key = _counted(ctx, rows, (), (("reason", "Patient rows in the accepted deliveries"),),
                                "number_subjects", received, ctx.key("attr_received"),
                                additional=(("reason_id", "0"),))
    rem_keys = []
    for i, r in enumerate(att.iter_rows(named=True)):
        strata = (("reason", r["description"]),)
        additional = (("reason_id", str(r["step"])),)
        last = i == len(steps) - 1
        key = (total_p if last and ctx.value(total_p) == r["n_remaining"] else ctx.key("attr_remaining", r["step"]))
        rem_keys.append(_counted(ctx, rows, (), strata, "number_subjects", r["n_remaining"], key,
                                 additional=additional))
        excluded = _counted(ctx, rows, (), strata, "excluded_subjects", r["n_excluded"],
                            ctx.key("attr_excluded", r["step"]), additional=additional)
        previous = received_key if i == 0 else rem_keys[i - 1]
        ctx.relate(cell_key("attrition", r["step"]), previous, [rem_keys[i], excluded])
    return rows


def build_incidence(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, s, st = r["outcome"], r["stratifier"], r["stratum"]
        group, strata = (("outcome", o),), _strata(s, st)
        few = is_small(r["n_patients"])
        p = _counted(ctx, rows, group, strata, "number_subjects", r["n_patients"], ctx.key("patients", s, st))
        e = _counted(ctx, rows, group, strata, "number_events", r["n_events"], ctx.key("events", o, s, st),
                     primary=few and (r["n_events"] or 0) > 0)
        py = _counted(ctx, rows, group, strata, "person_years", _num(r["person_years"]), ctx.key("py", o, s, st),
                      kind="amount", estimate="sum", primary=few)
        ctx.depend(p, [k for k in (py,) if k])
        _estimates(rows, group, strata, "incidence_rate_per_1000_person_years",
                   {"estimate": _num(r["rate_per_1000py"]), "ci_lower": _num(r["ci_lower"]),
                    "ci_upper": _num(r["ci_upper"])}, depends=[k for k in (e, py) if k], hidden=few)
    site = ctx.left_out.get(ctx.variant)
    if site is not None:  # a site left out (SAP A12 b): the main total = the variant's + the site's stratum
        for r in frame.filter(pl.col("stratifier") == OVERALL).iter_rows(named=True):
            o = r["outcome"]
            for what, parts in (("patients", ("patients",)), ("events", ("events", o)), ("py", ("py", o))):
                ctx.relate(cell_key("left_out", what, o), cell_key(*parts, "overall", "all"),
                           [ctx.key(*parts, "overall", "all"), cell_key(*parts, "site", site)])
    _strata_relations(ctx, frame, "patients", lambda k, s, st: ctx.key("patients", s, st), "n_patients", ("outcome",))
    for what in ("events", "py"):
        _strata_relations(ctx, frame, what, lambda k, s, st, w=what: ctx.key(w, k["outcome"], s, st), "", ("outcome",))
    return rows


def build_risk_windows(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    group = (("outcome", "all_serious"),)
    event_keys, py_keys = [], []
    for r in frame.iter_rows(named=True):
        w = r["window"]
        strata = (("risk_window", w),)
        if "n_patients" in r:
            _counted(ctx, rows, group, strata, "number_subjects", r["n_patients"], ctx.key("rw_patients", w))
        e = _counted(ctx, rows, group, strata, "number_events", r["n_events"], ctx.key("rw_events", w))
        py = _counted(ctx, rows, group, strata, "person_years", _num(r["person_years"]), ctx.key("rw_py", w),
                      kind="amount", estimate="sum")
        event_keys.append(e)
        py_keys.append(py)
        _estimates(rows, group, strata, "incidence_rate_per_1000_person_years",
                   {"estimate": _num(r["rate_per_1000py"]), "ci_lower": _num(r["ci_lower"]),
                    "ci_upper": _num(r["ci_upper"])}, depends=[k for k in (e, py) if k])
    for what, keys, column in (("events", event_keys, "n_events"), ("py", py_keys, "person_years")):
        total = float(frame[column].sum() or 0)
        candidates = [ctx.key(what, "all_serious", "overall", "all"), cell_key(what, "all_serious", "overall", "all"),
                      ctx.key("rw_" + what, "total"), cell_key("rw_" + what, "total")]
        ctx.relate(cell_key("risk_windows", what), ctx.total(candidates, total), [k for k in keys if k])
    return rows


def build_cumulative_incidence(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    seen = set()
    for r in frame.iter_rows(named=True):
        o, s, st, day = r["outcome"], r["stratifier"], r["stratum"], r["day"]
        group, strata = (("outcome", o),), _strata(s, st)
        p = ctx.key("patients", s, st)
        if (o, s, st) not in seen:
            seen.add((o, s, st))
            p = _counted(ctx, rows, group, strata, "number_subjects", r["n_patients"], p)
        additional = (("day", str(day)),)
        at_risk = _counted(ctx, rows, group, strata, "number_at_risk", r["n_at_risk"],
                           ctx.key("at_risk", o, s, st, day), additional=additional)
        ctx.depend(p, [at_risk])
        hidden = is_small(r.get("cumulative_events")) or (r["n_at_risk"] or 0) < MIN_SHOWN
        _estimates(rows, group, strata, "cumulative_incidence",
                   {"estimate": _num(r["estimate"]), "ci_lower": _num(r["ci_lower"]), "ci_upper": _num(r["ci_upper"]),
                    "std_err": _num(r["std_err"])}, depends=[p], hidden=hidden, additional=additional)
    _strata_relations(ctx, frame, "at_risk", lambda k, s, st: ctx.key("at_risk", k["outcome"], s, st, k["day"]), "",
                      ("outcome", "day"))
    return rows


def build_logrank(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        hidden = is_small(r.get("n_events"))  # a test resting on 1-4 events (the report's rule)
        group = (("outcome", r["outcome"]),)
        _estimates(rows, group, (), "log_rank_test", {"chi_square": _num(r["chisq"]), "p_value": _num(r["p_value"])},
                   hidden=hidden, level=r["stratifier"])
        _estimates(rows, group, (), "log_rank_test", {"df": r["df"]}, level=r["stratifier"], kind="integer")
    return rows


def _cox_like(ctx: Context, frame: pl.DataFrame, column: str, ratio: str, events_outcome: str | None) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, model, variable, level = r["outcome"], r["model"], r["variable"], r.get("level")
        group = (("outcome", o),)
        additional = (("model", model), ("covariates", r["covariates"]))
        if variable == "GLOBAL":
            _estimates(rows, group, (), "global_ph_test", {"ph_chisq": _num(r.get("ph_chisq")),
                                                           "ph_p_value": _num(r.get("ph_p_value"))},
                       additional=additional)
            _estimates(rows, group, (), "global_ph_test", {"ph_df": r.get("ph_df")}, additional=additional,
                       kind="integer")
            continue
        reference = r.get("reference_level")
        main_hidden = ctx.cox_hidden.get((o, model, variable, level))
        if ctx.main and ratio == "hazard_ratio" and main_hidden is not None:  # a model the report shows
            hidden, depends = main_hidden, ()
        else:  # not in the report: the level's and the reference's patients and first events, as the report's Cox
            keys = [cell_key("patients", variable, lv) for lv in (level, reference)]
            events = [ctx.value(cell_key("events", events_outcome or o, variable, lv)) for lv in (level, reference)]
            hidden = (bool(main_hidden) or any(is_small(n) for n in events) or is_small(r.get("n_events"))
                      or any(is_small(r.get(c)) for c in ("level_patients", "level_events", "reference_patients",
                                                          "reference_events")))
            depends = keys
        _estimates(rows, group, (), variable, {
            ratio: _num(r.get(column)), "ci_lower": _num(r.get("ci_lower")), "ci_upper": _num(r.get("ci_upper")),
            "coef": _num(r.get("coef")), "se": _num(r.get("se")), "p_value": _num(r.get("p_value"))},
            depends=depends, hidden=hidden, additional=additional, level=level)
        _estimates(rows, group, (), variable, {"ph_chisq": _num(r.get("ph_chisq")),
                                               "ph_p_value": _num(r.get("ph_p_value"))},
                   additional=additional, level=level)
        _estimates(rows, group, (), variable, {"ph_df": r.get("ph_df")}, additional=additional, level=level,
                   kind="integer")
        _estimates(rows, group, (), variable, {"reference_level": reference}, additional=additional, level=level,
                   kind="character")
    return rows


def build_cox(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    return _cox_like(ctx, frame, "hr", "hazard_ratio", None)


def _model_counts(ctx: Context, rows: list, frame: pl.DataFrame, extra: tuple = ()) -> dict[tuple, list[str]]:
    """A model's patients and events (once per outcome, model, covariates): the overall cells of the same
    patients when equal, else hidden. Returns (outcome, model, covariates) -> those cells."""
    cells = {}
    for (o, model, covariates), part in frame.group_by("outcome", "model", "covariates", maintain_order=True):
        r = part.row(0, named=True)
        group, additional = (("outcome", o),), (("model", model), ("covariates", covariates))
        keys = [_counted(ctx, rows, group, (), "number_subjects", r["n_patients"], ctx.key("patients", "overall", "all"),
                         additional=additional),
                _counted(ctx, rows, group, (), "number_events", r["n_events"], ctx.key("events", o, "overall", "all"),
                         additional=additional)]
        for column, variable in extra:
            keys.append(_counted(ctx, rows, group, (), variable, r[column], ctx.key(column, o, model, covariates),
                                 additional=additional))
        cells[(o, model, covariates)] = [k for k in keys if k]
    return cells


def build_cox_models(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    _model_counts(ctx, rows, frame)
    for r in frame.iter_rows(named=True):
        o, model, covariates = r["outcome"], r["model"], r["covariates"]
        _estimates(rows, (("outcome", o),), (), "model_fit",  # a model resting on 1-4 events is not shown
                   {name: _num(r.get(name)) for name in ("loglik", "loglik_null", "aic", "concordance", "concordance_se")},
                   hidden=is_small(r["n_events"]),
                   additional=(("model", model), ("covariates", covariates)))
    return rows


def build_cox_tests(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        group, additional = (("outcome", r["outcome"]),), (("model", r["model"]), ("covariates", r["covariates"]))
        _estimates(rows, group, (), r["variable"], {name: _num(r.get(name)) for name in
                                                     ("wald_chisq", "wald_p", "lr_chisq", "lr_p")},
                   additional=additional)
        _estimates(rows, group, (), r["variable"], {"wald_df": r.get("wald_df"), "lr_df": r.get("lr_df")},
                   additional=additional, kind="integer")
    return rows


def build_fine_gray(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows = _cox_like(ctx, frame, "shr", "subdistribution_hazard_ratio", "first_serious")
    _model_counts(ctx, rows, frame, extra=(("n_competing", "number_competing_events"),))
    return rows


def build_rate_ratios(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, variable, level, reference = r["outcome"], r["variable"], r.get("level"), r.get("reference_level")
        group = (("outcome", o),)
        additional = (("model", r["model"]), ("covariates", r["covariates"]))
        if variable == "window":
            depends = [ctx.key("rw_events", lv) for lv in (level, reference)]
            hidden = any(is_small(ctx.value(k)) for k in depends)
        elif level is None:  # the intercept: the rate of the reference window (the report's risk window cell)
            depends, hidden = [ctx.key("rw_events", ">365")], False
        else:
            depends = [cell_key("patients", variable, lv) for lv in (level, reference)]
            hidden = any(is_small(ctx.value(cell_key("events", o, variable, lv))) for lv in (level, reference))
        hidden = hidden or is_small(r.get("n_events"))
        name = "intercept" if variable == "(Intercept)" else variable
        _estimates(rows, group, (), name, {
            "rate_ratio": _num(r.get("rate_ratio")), "ci_lower": _num(r.get("ci_lower")),
            "ci_upper": _num(r.get("ci_upper")), "coef": _num(r.get("coef")), "se": _num(r.get("se")),
            "p_value": _num(r.get("p_value"))}, depends=depends, hidden=hidden, additional=additional, level=level)
        _estimates(rows, group, (), name, {"reference_level": reference}, additional=additional, level=level,
                   kind="character")
    for (o, model, covariates), part in frame.group_by("outcome", "model", "covariates", maintain_order=True):
        r = part.row(0, named=True)
        group, additional = (("outcome", o),), (("model", model), ("covariates", covariates))
        events = _counted(ctx, rows, group, (), "number_events", r["n_events"],
                          ctx.key("events", o, "overall", "all"), additional=additional)
        py = _counted(ctx, rows, group, (), "person_years", _num(r["person_years"]), ctx.key("py", o, "overall", "all"),
                      kind="amount", estimate="sum", additional=additional)
        _estimates(rows, group, (), "model_fit", {"dispersion": _num(r.get("dispersion")),
                                                  "theta": _num(r.get("theta"))},
                   depends=[k for k in (events, py) if k], additional=additional)
        _estimates(rows, group, (), "model_fit", {"aggregated_rows": r.get("n_rows")}, additional=additional,
                   kind="integer")
    return rows


def build_incidence_proportion(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, s, st, day = r["outcome"], r["stratifier"], r["stratum"], r["day"]
        group, strata, additional = (("outcome", o),), _strata(s, st), (("day", str(day)),)
        cases = _counted(ctx, rows, group, strata, "number_cases", r["n_cases"], ctx.key("ip_cases", s, st, day),
                         additional=additional)  # the report's keys (A8 is the primary outcome's only)
        denominator = _counted(ctx, rows, group, strata, "denominator", r["n_denominator"],
                               ctx.key("ip_denominator", s, st, day), additional=additional)
        censored = _counted(ctx, rows, group, strata, "censored_before_day", r["n_censored_before"],
                            ctx.key("ip_censored", o, s, st, day), additional=additional)
        patients = ctx.total([ctx.key("patients", s, st), cell_key("patients", s, st)],
                             (r["n_denominator"] or 0) + (r["n_censored_before"] or 0))
        ctx.relate(cell_key("ip_patients", o, s, st, day), patients, [denominator, censored])
        hidden = is_small(r["n_cases"]) or is_small(r["n_denominator"])
        _estimates(rows, group, strata, "incidence_proportion",
                   {"estimate": _num(r["proportion"]), "ci_lower": _num(r["ci_lower"]), "ci_upper": _num(r["ci_upper"])},
                   depends=[cases, denominator] + ([patients] if patients else []), hidden=hidden,
                   additional=additional)
    for what in ("ip_cases", "ip_denominator"):
        _strata_relations(ctx, frame, what, lambda k, s, st, w=what: ctx.key(w, s, st, k["day"]), "",
                          ("outcome", "day"))
    _strata_relations(ctx, frame, "ip_censored", lambda k, s, st: ctx.key("ip_censored", k["outcome"], s, st, k["day"]),
                      "", ("outcome", "day"))
    return rows


def build_standardised_rates(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, s, st = r["outcome"], r["stratifier"], r["stratum"]
        group, strata = (("outcome", o),), _strata(s, st)
        e = _counted(ctx, rows, group, strata, "number_events", r["n_events"], ctx.key("events", o, s, st))
        py = _counted(ctx, rows, group, strata, "person_years", _num(r["person_years"]), ctx.key("py", o, s, st),
                      kind="amount", estimate="sum")
        depends = [k for k in (e, py) if k] + [ctx.key("patients", s, st)]
        _estimates(rows, group, strata, "crude_rate_per_1000_person_years", {"estimate": _num(r["crude_rate"])},
                   depends=depends)
        _estimates(rows, group, strata, "standardised_rate_per_1000_person_years",
                   {"estimate": _num(r["standardised_rate"]), "ci_lower": _num(r["ci_lower"]),
                    "ci_upper": _num(r["ci_upper"])}, depends=depends)
        _estimates(rows, group, strata, "standard_cells", {"n_cells": r["n_cells"]}, kind="integer")
    for what in ("events", "py"):
        _strata_relations(ctx, frame, what, lambda k, s, st, w=what: ctx.key(w, k["outcome"], s, st), "", ("outcome",))
    return rows


def _table1_count_key(ctx: Context, variable: str, level: str, edss: str | None) -> str:
    if edss is None:
        return (cell_key("patients", variable, level) if variable in ctx.data.levels
                else cell_key("t1", variable, level, "overall"))
    return cell_key("t1", variable, level, edss)


def _column_key(edss: str | None) -> str:
    return cell_key("patients", "overall", "all") if edss is None else cell_key("patients", "edss", edss)


def build_table1_counts(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        e = r["edss"]
        strata = () if e is None else (("edss", e),)
        key = _counted(ctx, rows, (), strata, r["variable"], r["n_patients"],
                       _table1_count_key(ctx, r["variable"], r["level"], e), level=r["level"])
        column = _column_key(e)
        n_column = ctx.value(column)
        if r["n_patients"] and n_column:
            _estimates(rows, (), strata, r["variable"], {"percentage": 100 * r["n_patients"] / n_column},
                       depends=[key, column], level=r["level"], kind="percentage")
    return rows


_CONTINUOUS = {"age_at_index": ("age", ("mean", "sd")),
               "edss_score": ("edss", ("mean", "sd", "median", "q1", "q3")),
               "follow_up_years": ("fu", ("mean", "sd", "median", "q1", "q3"))}
_ESTIMATE_NAMES = {"mean": "mean", "sd": "sd", "median": "median", "q1": "q25", "q3": "q75"}


def build_table1_summary(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        e = r["edss"]
        strata = () if e is None else (("edss", e),)
        column = _counted(ctx, rows, (), strata, "number_subjects", r["n_patients"], _column_key(e))
        few = is_small(r["n_patients"])
        for variable, (prefix, stats) in _CONTINUOUS.items():
            hidden = few or (prefix == "edss" and is_small(r["edss_n"]))
            _estimates(rows, (), strata, variable,
                       {_ESTIMATE_NAMES[s]: _num(r.get(f"{prefix}_{s}")) for s in stats},
                       depends=[column], hidden=hidden)
    return rows


def build_table1_smd(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    from vigil.report.protect import table1_levels

    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        variable, e, reference = r["variable"], r["edss"], r["reference_edss"]
        columns = [_column_key(e), _column_key(reference)]
        hidden = any(is_small(ctx.value(k)) for k in columns)
        depends: list[str] = []
        if variable not in _CONTINUOUS:
            levels = table1_levels(ctx.data, variable)
            depends = [_table1_count_key(ctx, variable, lv, x) for lv in levels for x in (e, reference)]
            depends = [k for k in depends if ctx.known(k)]
        _estimates(rows, (), (("edss", e),), variable, {"smd": _num(r["smd"])}, depends=depends, hidden=hidden,
                   additional=(("reference_edss", reference),))
    return rows


def _timestamp(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ" if value.tzinfo else "%Y-%m-%dT%H:%M:%S")
    return str(value)


def build_dq_deliveries(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        group = (("delivery_id", str(r["delivery_id"])),)
        path = r["folder"] or ""
        folder = path.rstrip("/").split("/")[-1]
        reason = r.get("reason") or None
        if reason and path and reason.startswith(path):  # the landing area's path is not the study's business
            reason = folder + reason[len(path):]
        _estimates(rows, group, (), "delivery", {
            "site_id": r.get("site_id"), "folder": folder or None, "file_format": r.get("file_format"),
            "status": r.get("status"), "reason": reason, "created_at": _timestamp(r.get("created_at")),
            "received_at": _timestamp(r.get("received_at"))}, kind="character")
        _estimates(rows, group, (), "delivery", {"data_cut": r.get("data_cut")}, kind="date")
        _estimates(rows, group, (), "delivery", {"superseded_by": r.get("superseded_by")}, kind="integer")
    return rows


def build_dq_rows(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        d, t = r["delivery_id"], r["table_name"]
        group, strata = (("delivery_id", str(d)),), (("table_name", t),)
        keys = [_counted(ctx, rows, group, strata, f"rows_{what}", r[f"rows_{what}"], ctx.key("dq", d, t, what))
                for what in ("received", "loaded", "quarantined")]
        ctx.relate(cell_key("dq_rows", d, t), keys[0], keys[1:])
    return rows


def build_dq_quarantine(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for (d, t), part in frame.group_by("delivery_id", "table_name", maintain_order=True):
        group, strata = (("delivery_id", str(d)),), (("table_name", t),)
        keys = [_counted(ctx, rows, group, strata, "rows_quarantined", r["n_rows"],
                         ctx.key("dq_reason", d, t, r["reason"]), level=r["reason"]) for r in part.iter_rows(named=True)]
        total = ctx.total([ctx.key("dq", d, t, "quarantined")], float(part["n_rows"].sum()))
        ctx.relate(cell_key("dq_reasons", d, t), total, keys)
    return rows


def build_opportunistic_terms(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    return [Estimate((), (), "opportunistic_term", r["meddra_pt"], "listed", "logical", True)
            for r in frame.iter_rows(named=True)]


def build_looks(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        group = (("surveillance", r["surveillance"]),)
        _estimates(rows, group, (), "look", {"look": r["look"]}, kind="integer")
        _estimates(rows, group, (), "look", {"new_look": r["new_look"]}, kind="logical")
        _estimates(rows, group, (), "look", {"note": r.get("note")}, kind="character")
        for site, cut in sorted((json_value(r["data_cuts"]) or {}).items()):
            _estimates(rows, group, (), "data_cut", {"date": cut}, level=site, kind="date")
        for site, delivery in sorted((json_value(r["delivery_ids"]) or {}).items()):
            _estimates(rows, group, (), "delivery", {"id": delivery}, level=site, kind="integer")
        for name, value in sorted((json_value(r["settings"]) or {}).items()):
            kind = ("logical" if isinstance(value, bool) else "integer" if isinstance(value, int)
                    else "numeric" if isinstance(value, float) else "character")
            _estimates(rows, group, (), "sequential_settings", {"value": value}, level=name, kind=kind)
    return rows


def _observed_hidden(ctx: Context, outcome: str, stratifier: str, stratum: str) -> bool:
    """Hidden by the report's monitoring section (primary or its own complementary suppression)."""
    if not ctx.main or ctx.observed_shown is None:
        return False
    return (outcome, stratifier, stratum) not in ctx.observed_shown


def build_observed_expected(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        o, s, st = r["outcome"], r["stratifier"], r["stratum"]
        group, strata = (("outcome", o),), _strata(s, st)
        hidden = _observed_hidden(ctx, o, s, st)
        observed = _counted(ctx, rows, group, strata, "observed", r["observed"], ctx.key("events", o, s, st),
                            hidden=hidden)
        py = _counted(ctx, rows, group, strata, "person_years", _num(r["person_years"]), ctx.key("py", o, s, st),
                      kind="amount", estimate="sum")
        _estimates(rows, group, strata, "expected", {"estimate": _num(r["expected"])})
        _estimates(rows, group, strata, "standardised_incidence_ratio",
                   {"estimate": _num(r["sir"]), "ci_lower": _num(r["ci_lower"]), "ci_upper": _num(r["ci_upper"])},
                   depends=[observed], hidden=hidden)
        ctx.depend(ctx.key("patients", s, st), [py])
    _strata_relations(ctx, frame, "events", lambda k, s, st: ctx.key("events", k["outcome"], s, st), "", ("outcome",))
    return rows


def build_sequential_test(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        group = (("surveillance", r["surveillance"]),)
        hidden = _observed_hidden(ctx, r["outcome"], "overall", "all") or is_small(r["observed"])
        observed = _counted(ctx, rows, group, (), "observed", r["observed"],
                            ctx.key("events", r["outcome"], "overall", "all"), hidden=hidden)
        _estimates(rows, group, (), "sequential_test", {"expected": _num(r["expected"]),
                                                        "critical_llr": _num(r["critical_llr"]),
                                                        "alpha_target": _num(r["alpha_target"]),
                                                        "alpha_spent": _num(r["alpha_spent"])})
        _estimates(rows, group, (), "sequential_test", {"sir": _num(r["sir"]), "llr": _num(r["llr"])},
                   depends=[observed], hidden=hidden)
        _estimates(rows, group, (), "sequential_test", {
            "look": r["look"], "critical_events": r["critical_events"], "signal_look": r["signal_look"],
            "computed_by_run": r["computed_by_run"]}, kind="integer")
        _estimates(rows, group, (), "sequential_test", {"signal": r["signal"]}, kind="logical")
        _estimates(rows, group, (), "sequential_test", {"status": r["status"], "outcome": r["outcome"],
                                                        "note": r.get("note")}, kind="character")
    return rows


def build_unexpected_terms(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        group, additional = (("term_set", r["term_set"]),), (("look", str(r["look"])),)
        term = r["meddra_pt"]
        _counted(ctx, rows, group, (), "meddra_preferred_term", r["n_events"],
                 ctx.key("terms", r["term_set"], term, "events"), additional=additional, level=term)
        _counted(ctx, rows, group, (), "meddra_preferred_term", r["n_within_30_days"],
                 ctx.key("terms", r["term_set"], term, "within_30"), estimate="within_30_days_count",
                 additional=additional, level=term)
        _estimates(rows, group, (), "meddra_preferred_term", {"first_look": r["first_look"]}, additional=additional,
                   level=term, kind="integer")
        _estimates(rows, group, (), "meddra_preferred_term", {"new_at_look": r["first_look"] == r["look"]},
                   additional=additional, level=term, kind="logical")
    return rows


def build_variants(ctx: Context, frame: pl.DataFrame) -> list[Estimate]:
    rows: list[Estimate] = []
    for r in frame.iter_rows(named=True):
        values = {name: r.get(name) for name in ("sensitivity", "description", "analyses", "parameters")}
        values = {k: (v if isinstance(v, str) or v is None else json.dumps(v, sort_keys=True)) for k, v in values.items()}
        _estimates(rows, (), (), "variant", values, level=r["variant"], kind="character")
    return rows


def _cumulative_analysis(split: dict) -> str:
    return "A4" if split.get("method") == "aalen_johansen" else "A3"


# Every results table: how it maps, in the order of the tidy table (SAP order). A table without an entry
# fails tests/test_export.py::test_every_results_table_has_a_tidy_mapping.
MAPPINGS: dict[str, Mapping] = {m.table: m for m in (
    Mapping("runs", "SAP6", excluded="the run's row is the settings of every result: run_id, package_version "
                                     "(the run's code_version), sap_version and data_cuts"),
    Mapping("variants", "A12", build_variants),
    Mapping("attrition", "SAP1", build_attrition),
    Mapping("incidence", "A1", build_incidence),
    Mapping("risk_windows", "A2", build_risk_windows),
    Mapping("cumulative_incidence", _cumulative_analysis, build_cumulative_incidence, split=("method",)),
    Mapping("cumulative_incidence_curves", _cumulative_analysis,
            excluded="step curves at every exit time: differences of their rows give the patients leaving at each "
                     "time (mostly 1-4); the fixed-day estimates (cumulative_incidence) are published"),
    Mapping("logrank", "A3", build_logrank),
    Mapping("cox", "A5", build_cox),
    Mapping("cox_models", "A5", build_cox_models),
    Mapping("cox_tests", "A5", build_cox_tests),
    Mapping("table1_counts", "A6", build_table1_counts),
    Mapping("table1_summary", "A6", build_table1_summary),
    Mapping("table1_smd", "A6", build_table1_smd),
    Mapping("dq_deliveries", "A7", build_dq_deliveries),
    Mapping("dq_rows", "A7", build_dq_rows),
    Mapping("dq_quarantine", "A7", build_dq_quarantine),
    Mapping("opportunistic_terms", "SAP2", build_opportunistic_terms),
    Mapping("incidence_proportion", "A8", build_incidence_proportion),
    Mapping("rate_ratios", "A9", build_rate_ratios, split=("variance",)),
    Mapping("fine_gray", "A10", build_fine_gray),
    Mapping("standardised_rates", "A11", build_standardised_rates),
    Mapping("looks", "A14", build_looks),
    Mapping("observed_expected", "A13", build_observed_expected),
    Mapping("sequential_test", "A14", build_sequential_test),
    Mapping("unexpected_terms", "A15", build_unexpected_terms),
)}


def unmapped(tables: Iterable[str]) -> list[str]:
    """Results tables without an entry in MAPPINGS."""
    return sorted(t for t in tables if t not in MAPPINGS)


# ---------------------------------------------------------------------------------------------
# building the table


@dataclass
class TidyTable:
    rows: list[dict]  # the result rows, as written (text, NA as None)
    settings: list[dict]  # one dict per result_id, every value text
    cdm_name: str
    suppressed: int  # estimates written as "-"
    excluded: dict[str, str] = field(default_factory=dict)  # results table -> why it is not in the tidy table
    unmapped: list[str] = field(default_factory=list)  # results tables without a mapping (left out)
    residual: list[str] = field(default_factory=list)  # relations fully suppressed whose bounds still pin a value


def cdm_name_of(run: dict, study_id: str) -> str:
    sites = sorted({str(d.get("site_id")) for d in (run.get("deliveries") or []) if d.get("site_id")})
    return sites[0] if len(sites) == 1 else study_id


def data_cuts_of(run: dict) -> str:
    cuts = sorted({(str(d.get("site_id")), str(d.get("data_cut"))) for d in (run.get("deliveries") or [])})
    return ", ".join(f"{site}:{cut}" for site, cut in cuts)


def _report_plan(data):
    """The report's disclosure plan of the main analysis and the hiding rules its tables apply."""
    from vigil.report import tables as T
    from vigil.report.monitoring import _observed_shown
    from vigil.report.protect import build_protection

    try:
        prot = build_protection(data, T.at_risk_frame(data))
    except ValueError as exc:  # one published value with two different values in the results
        raise TidyError(f"run {data.run['run_id']}: the results tables disagree: {exc}") from exc
    cox_hidden = {}
    if not data.cox.is_empty():
        for outcome in data.cox["outcome"].unique().to_list():
            for r in T.cox_rows(data, prot, outcome):
                for model in ("univariable", "multivariable"):
                    m = r.get(model)
                    if m and not m.get("reference"):
                        cox_hidden[(outcome, model, r["variable"], r["level"])] = bool(m.get("hidden"))
    shown = _observed_shown(data.monitoring) if data.monitoring is not None else None
    return prot, cox_hidden, shown


def build_tidy(frames: dict[str, pl.DataFrame], data, study_id: str) -> TidyTable:
    """The tidy table of a run. frames: results table -> the run's rows (every variant); data: the report's
    RunData of the run (vigil.report.data.load_run), whose plan decides the main analysis' suppression. A
    table without a mapping is left out (TidyTable.unmapped; the tests refuse one)."""
    prot, cox_hidden, shown = _report_plan(data)
    ctx = Context(data, prot, cox_hidden, shown)
    results: list[Result] = []
    for table, mapping in MAPPINGS.items():
        if table not in frames or mapping.build is None:
            continue
        frame = frames[table]
        if "variant" not in frame.columns:
            frame = frame.with_columns(pl.lit(MAIN).alias("variant"))
        variants = sorted(set(frame["variant"].to_list()), key=lambda v: (v != MAIN, v))
        for variant in variants:
            part = frame.filter(pl.col("variant") == variant)
            splits = ([{}] if not mapping.split else
                      [dict(zip(mapping.split, k)) for k in part.select(mapping.split).unique(maintain_order=True).rows()])
            for split in splits:
                piece = part
                for column, value in split.items():
                    piece = piece.filter(pl.col(column) == value)
                ctx.variant = variant
                rows = mapping.build(ctx, piece)
                if rows:
                    results.append(Result(mapping, variant, split, rows))
    suppressed, residual = _solve(ctx)
    run = data.run
    cdm = cdm_name_of(run, study_id)
    out_rows, settings, n_suppressed = [], [], 0
    for result_id, result in enumerate(results, start=1):
        names = {"group": [], "strata": [], "additional": []}
        for e in result.rows:
            hide = e.hidden or (e.cell is not None and suppressed.get(e.cell, False)) \
                or any(suppressed.get(d, True) for d in e.depends)
            n_suppressed += hide
            out_rows.append(_row(result_id, cdm, e, hide, names))
        analysis = result.mapping.analysis
        settings.append({
            "result_id": result_id, "result_type": result.mapping.table, "package_name": PACKAGE,
            "package_version": str(run.get("code_version") or ""),
            **{k: SEP.join(v) for k, v in names.items()}, "min_cell_count": str(MIN_CELL_COUNT),
            "analysis": analysis(result.split) if callable(analysis) else analysis,
            "data_cuts": data_cuts_of(run), "run_id": str(run["run_id"]), "sap_version": str(run.get("sap_version")),
            "variant": result.variant, **{k: str(v) for k, v in result.split.items()}})
    excluded = {t: m.excluded for t, m in MAPPINGS.items() if m.excluded and t in frames}
    tidy = TidyTable(out_rows, settings, cdm, n_suppressed, excluded=excluded, unmapped=unmapped(frames),
                     residual=residual)
    problems = check_summarised_result(tidy.rows, tidy.settings)
    if problems:
        raise TidyError(f"the tidy table breaks the summarised_result rules: {'; '.join(problems[:3])}")
    return tidy


def _pair(pairs: tuple, names: list[str]) -> tuple[str, str]:
    if not pairs:
        return OVERALL, OVERALL
    for name, _ in pairs:
        if name not in names:
            names.append(name)
    return SEP.join(n for n, _ in pairs), SEP.join(str(level) for _, level in pairs)


def _text(value, kind: str) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if kind == "integer":
        return str(int(value))
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back to the same double
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _row(result_id: int, cdm: str, e: Estimate, hide: bool, names: dict) -> dict:
    group = _pair(e.group, names["group"])
    strata = _pair(e.strata, names["strata"])
    additional = _pair(e.additional, names["additional"])
    return {"result_id": result_id, "cdm_name": cdm, "group_name": group[0], "group_level": group[1],
            "strata_name": strata[0], "strata_level": strata[1], "variable_name": e.variable_name,
            "variable_level": None if e.variable_level is None else str(e.variable_level),
            "estimate_name": e.estimate_name, "estimate_type": e.estimate_type,
            "estimate_value": SUPPRESSED if hide else _text(e.value, e.estimate_type),
            "additional_name": additional[0], "additional_level": additional[1]}


def _solve(ctx: Context) -> tuple[dict[str, bool], list[str]]:
    """One complementary-suppression pass over the report's plan (as solved) and the export's own cells."""
    prot = ctx.prot
    kinds = dict(zip(prot.cells["key"].to_list(), prot.cells["kind"].to_list())) if "kind" in prot.cells.columns else {}
    rows = [(k, v, kinds.get(k, "count"), bool(prot.suppressed[k]) or k in ctx.forced) for k, v in prot.values.items()]
    rows += [(k, v, kind, primary) for k, (v, kind, primary) in ctx.cells.items() if k not in prot.values]
    cells = pl.DataFrame(rows, schema={"key": pl.Utf8, "value": pl.Float64, "kind": pl.Utf8, "suppressed": pl.Boolean},
                         orient="row")
    relations = pl.concat([prot.relations.select("relation", "key", "role"),
                           pl.DataFrame(ctx.relations, schema={"relation": pl.Utf8, "key": pl.Utf8, "role": pl.Utf8},
                                        orient="row")])
    known = set(cells["key"].to_list())
    relations = relations.filter(pl.col("key").is_in(list(known)))
    solved = protect_relations(cells, relations)
    for _ in range(100):  # cells that betray another's count are hidden with it (as build_protection does)
        hidden = dict(zip(solved["key"].to_list(), solved["suppressed"].to_list()))
        more = {d for k, deps in ctx.dependents.items() if hidden.get(k) for d in deps if d in hidden and not hidden[d]}
        if not more:
            break
        solved = protect_relations(
            solved.drop("complementary").with_columns(pl.col("suppressed") | pl.col("key").is_in(list(more))), relations)
    pinned = pinned_cells(solved, relations)
    if pinned.filter(~pl.col("all_suppressed")).height:
        raise TidyError(f"disclosure: suppressed cells still recoverable: {pinned.rows()[:5]}")
    return (dict(zip(solved["key"].to_list(), solved["suppressed"].to_list())),
            sorted(set(pinned["relation"].to_list())))


# ---------------------------------------------------------------------------------------------
# the rules of omopgenerics' summarised_result, checked before anything is written


_SNAKE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
GROUP_COUNT = ("number subjects", "number records")


def check_summarised_result(rows: list[dict], settings: list[dict]) -> list[str]:
    """What in `rows` and `settings` omopgenerics 1.3.0 would refuse (newSummarisedResult,
    validateResultArgument with every check, importSummarisedResult), or what SAP 5 forbids (a count
    estimate of 1-4). Empty when the table is valid."""
    problems: list[str] = []
    ids = [s["result_id"] for s in settings]
    if len(ids) != len(set(ids)):
        problems.append("result_id not unique in settings")
    described = [tuple(sorted((k, v) for k, v in s.items() if k != "result_id")) for s in settings]
    if len(described) != len(set(described)):
        problems.append("two result_ids with the same settings")
    for s in settings:
        for key in ("result_type", "package_name", "package_version"):
            if key not in s:
                problems.append(f"result {s['result_id']}: settings lack {key}")
        labels = {p: [n for n in (s.get(p) or "").split(SEP) if n and n != OVERALL] for p in ("group", "strata",
                                                                                                "additional")}
        for a, b in (("group", "strata"), ("group", "additional"), ("strata", "additional")):
            if set(labels[a]) & set(labels[b]):
                problems.append(f"result {s['result_id']}: {sorted(set(labels[a]) & set(labels[b]))} in {a} and {b}")
    known = set(ids)
    seen = set()
    group_counts: dict[tuple, int] = {}
    for row in rows:
        if list(row) != list(COLUMNS):
            problems.append(f"columns {list(row)}")
            break
        if row["result_id"] not in known:
            problems.append(f"result_id {row['result_id']} not in settings")
        for column in COLUMNS:
            if column not in ("variable_level", "estimate_value") and row[column] is None:
                problems.append(f"{column} is NA")
            elif column not in ("result_id",) and row[column] is not None and row[column] in ("", "NA"):
                problems.append(f"{column} is {row[column]!r}, which readr reads as NA")
        if row["estimate_type"] not in ESTIMATE_TYPES:
            problems.append(f"estimate_type {row['estimate_type']!r}")
        for prefix in ("group", "strata", "additional"):
            names, levels = row[f"{prefix}_name"].split(SEP), row[f"{prefix}_level"].split(SEP)
            if len(names) != len(levels):
                problems.append(f"{prefix}_name {row[f'{prefix}_name']!r} and level {row[f'{prefix}_level']!r} differ")
            if any(not _SNAKE.match(n) for n in names):
                problems.append(f"{prefix}_name {row[f'{prefix}_name']!r} is not snake_case")
        key = tuple(row[c] for c in COLUMNS if c != "estimate_value")
        if key in seen:
            problems.append(f"duplicated estimate {key}")
        seen.add(key)
        value = row["estimate_value"]
        if "count" in row["estimate_name"] and value not in (None, SUPPRESSED):
            if 0 < float(value) < MIN_CELL_COUNT:
                problems.append(f"a count of 1-4 is shown: {key}")
        label = row["variable_name"].replace("_", " ").lower()
        if label in GROUP_COUNT and "count" in row["estimate_name"]:
            gkey = tuple(row[c] for c in ("result_id", "cdm_name", "group_name", "group_level", "strata_name",
                                          "strata_level", "additional_name", "additional_level"))
            group_counts[gkey] = group_counts.get(gkey, 0) + 1
    problems += [f"{n} '{label}' counts in one grouping {k}" for k, n in group_counts.items() if n > 1]
    return problems


# ---------------------------------------------------------------------------------------------
# the CSV, as omopgenerics::exportSummarisedResult writes it


def settings_rows(settings: list[dict]) -> list[dict]:
    """The settings as rows of the CSV (exportSummarisedResult's pivotSettings): per result_id the first
    settings in FIRST_SETTINGS order, then the others alphabetically; NA values left out."""
    out = []
    for s in settings:
        others = sorted(k for k in s if k not in FIRST_SETTINGS and k != "result_id")
        for name in [*FIRST_SETTINGS, *others]:
            if s.get(name) is None:
                continue
            out.append({"result_id": s["result_id"], "cdm_name": None, "group_name": OVERALL, "group_level": OVERALL,
                        "strata_name": OVERALL, "strata_level": OVERALL, "variable_name": "settings",
                        "variable_level": None, "estimate_name": name, "estimate_type": "character",
                        "estimate_value": str(s[name]), "additional_name": OVERALL, "additional_level": OVERALL})
    return out


def csv_field(column: str, value, estimate_type: str) -> str | None:
    """A field of the tidy CSV: NA for None; delivered text inert and neutralised against formulas; the
    suppression marker of a number and the numbers themselves as they are."""
    if value is None:
        return None
    text = str(value)
    if column == "estimate_value" and estimate_type != "character" and (text == SUPPRESSED or _looks_number(text)):
        return text
    return neutralise_formula(inert(text))


def _looks_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_csv(tidy: TidyTable, path: Path) -> int:
    """The tidy table and its settings in one CSV (UTF-8, LF): every field quoted, NA bare, as R's
    write.csv writes exportSummarisedResult's file. Returns the rows written (settings rows included)."""
    rows = [*tidy.rows, *settings_rows(tidy.settings)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(f'"{c}"' for c in COLUMNS) + "\n")
        for row in rows:
            fields = []
            for column in COLUMNS:
                text = csv_field(column, row[column], row["estimate_type"])
                fields.append("NA" if text is None else '"' + text.replace('"', '""') + '"')
            handle.write(",".join(fields) + "\n")
    return len(rows)


def read_csv(path: Path) -> tuple[list[dict], list[dict]]:
    """A tidy CSV read back as importSummarisedResult reads it (bare NA and empty fields are NA): the
    result rows and the settings (one dict per result_id). For the tests and the R reference."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [{c: (None if v in ("", "NA") else v) for c, v in zip(header, line)} for line in reader]
    data, settings = [], {}
    for row in rows:
        row["result_id"] = int(row["result_id"])
        if row["variable_name"] == "settings":
            settings.setdefault(row["result_id"], {"result_id": row["result_id"]})[row["estimate_name"]] = \
                row["estimate_value"] if row["estimate_value"] is not None else ""
        else:
            data.append(row)
    return data, [settings[k] for k in sorted(settings)]
