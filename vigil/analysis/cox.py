"""SAP A5 policy for Cox models: treatment contrasts against the SAP's reference levels, and what
is reported where the data cannot give a finite estimate. The estimator is vigil.stats.survival."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from vigil.stats.survival import CoxData, TermTest, cox_concordance, cox_fit, cox_term_tests


@dataclass
class CoxRow:
    variable: str
    level: str | None
    coef: float = np.nan
    se: float = np.nan
    hr: float = np.nan
    ci_lower: float = np.nan
    ci_upper: float = np.nan
    p_value: float = np.nan
    ph_chisq: float = np.nan
    ph_df: int | None = None
    ph_p_value: float = np.nan
    n_patients: int | None = None
    n_events: int | None = None
    note: str | None = None
    # patients and events of the level and of its reference level in the counts given (before any is left
    # out): what disclosure control needs to decide on the row's estimates (SAP 5)
    level_patients: int | None = None
    level_events: int | None = None
    reference_patients: int | None = None
    reference_events: int | None = None


@dataclass
class CoxModel:
    """A fitted SAP Cox model: its rows (CoxRow, SAP order, GLOBAL last), what R's coxph reports for the
    model (partial log-likelihood at the estimate and at 0, AIC, Harrell's concordance) and the joint
    tests per variable (Wald, and drop1's likelihood ratio); NaN where no model could be fitted."""
    rows: list[CoxRow]
    n_patients: int = 0
    n_events: int = 0
    loglik: float = np.nan
    loglik_null: float = np.nan
    aic: float = np.nan
    concordance: float = np.nan
    concordance_se: float = np.nan
    note: str | None = None
    tests: dict[str, TermTest] = field(default_factory=dict)


@dataclass
class CoxDesign:
    """The SAP's Cox design on some counts: per variable, the SAP levels present and those with events;
    the variables in the model; the CoxData of the patients kept (None when no variable is in the model)."""
    info: dict[str, tuple[list[str], list[str]]]
    in_model: list[str]
    n_patients: int
    n_events: int
    data: CoxData | None


def level_sizes(counts: pl.DataFrame, variables: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """variable -> level -> (patients, events) in the counts."""
    return {v: {lv: (int(p), int(e)) for lv, p, e in counts.group_by(v).agg(
        pl.col("n_leaving").sum(), pl.col("n_events").sum()).iter_rows()} for v in variables}


def level_presence(counts: pl.DataFrame, variables: list[str]) -> dict[str, dict[str, tuple[bool, bool]]]:
    """variable -> level -> (has patients, has events) in the counts: all the design needs to know of them,
    so that sites of a network (vigil.network.distributed) agree on one design without sharing counts."""
    return {v: {lv: (p > 0, e > 0) for lv, (p, e) in by_level.items()}
            for v, by_level in level_sizes(counts, variables).items()}


def cox_design(counts: pl.DataFrame, variables: list[str], levels: dict[str, list[str]], presence: dict,
               stratum: str | None = None) -> CoxDesign:
    """The design of cox_model's rules from `presence` (level_presence of the counts, or of several sites'
    counts together): levels in SAP order; patients of a level without events left out; a variable in the
    model when two or more of its levels have events; treatment columns against its first level with events."""
    info = {}
    keep = pl.lit(True)
    for v in variables:
        present = [lv for lv in levels[v] if presence[v].get(lv, (False, False))[0]]
        with_events = [lv for lv in present if presence[v][lv][1]]
        info[v] = (present, with_events)
        keep = keep & pl.col(v).is_in(with_events)
    in_model = [v for v in variables if len(info[v][1]) >= 2]
    data = counts.filter(keep)
    n_patients, n_events = int(data["n_leaving"].sum()), int(data["n_events"].sum())
    if not in_model:
        return CoxDesign(info, in_model, n_patients, n_events, None)
    patterns = data.select(in_model).unique(maintain_order=True)
    pattern_index = data.select(in_model).join(patterns.with_row_index("_p"), on=in_model, how="left",
                                               maintain_order="left")["_p"].to_numpy()
    columns, names, terms = [], [], {}
    for v in in_model:
        values = patterns[v].to_numpy()
        terms[v] = []
        for lv in info[v][1][1:]:
            terms[v].append(len(names))
            names.append(f"{v}[{lv}]")
            columns.append((values == lv).astype(float))
    X = np.column_stack(columns) if len(patterns) else np.zeros((0, len(names)))
    cox_data = CoxData(time=data["t"].to_numpy(), pattern=pattern_index.astype(np.int64),
                       n_events=data["n_events"].to_numpy().astype(float),
                       n_leaving=data["n_leaving"].to_numpy().astype(float), X=X, names=names, terms=terms,
                       stratum=data[stratum].to_numpy() if stratum else None)
    return CoxDesign(info, in_model, n_patients, n_events, cox_data)


def cox_model(counts, variables: list[str], levels: dict[str, list[str]], stratum: str | None = None,
              check_with_lifelines: bool = False) -> CoxModel:
    """A Cox model of the SAP (treatment contrasts, reference = first level of `levels`) from counts
    per (t, levels of `variables`[, stratum]): a polars DataFrame with columns t, the variables, n_events
    and n_leaving (every exit, events included), and the column `stratum` names for a stratified model
    (R's strata(site): a baseline hazard per stratum). Returns the CoxModel: one row per non-reference
    SAP level of each variable and a row ("GLOBAL", None) with the global PH test, in SAP order.

    Rules where the data cannot give a finite estimate (docs/analysis-methods.md):
      - a level without patients has no coefficient;
      - patients of a level without events are left out: that level's coefficient tends to -inf
        and, in the limit, the likelihood of the other coefficients is that of the data without
        those patients, so the others are the MLE's limit (R reports them up to its iteration stop);
      - a variable enters the model when two or more of its levels have events; its hazard ratios
        are reported only when its reference level has events (else they are infinite).
    """
    counts = counts.filter(pl.col("n_leaving") > 0)
    if not counts["n_events"].sum():
        n_all = int(counts["n_leaving"].sum())
        note = "no events: no model" if n_all else "no patients: no model"
        return CoxModel([CoxRow(v, lv, n_patients=n_all, n_events=0, note=note)
                         for v in variables for lv in levels[v][1:]] + [
            CoxRow("GLOBAL", None, n_patients=n_all, n_events=0, note=note)], n_all, 0, note=note)
    sizes = level_sizes(counts, variables)
    presence = {v: {lv: (p > 0, e > 0) for lv, (p, e) in by_level.items()} for v, by_level in sizes.items()}
    design = cox_design(counts, variables, levels, presence, stratum)
    info, in_model, n_patients, n_events = design.info, design.in_model, design.n_patients, design.n_events
    result = None
    model_note = None
    if design.data is None:
        model_note = "no variable with events in two or more levels: no model"
    else:
        cox_data = design.data
        try:
            result = cox_fit(cox_data, check_with_lifelines=check_with_lifelines)
        except (FloatingPointError, np.linalg.LinAlgError) as exc:
            model_note = f"model not estimable: {str(exc).splitlines()[0][:200]}"

    rows = []
    for v in variables:
        present, with_events = info[v]
        reference = levels[v][0]
        zph = result.zph.get(v) if result is not None else None
        for lv in levels[v][1:]:
            row = CoxRow(v, lv, n_patients=n_patients, n_events=n_events)
            row.level_patients, row.level_events = sizes[v].get(lv, (0, 0))
            row.reference_patients, row.reference_events = sizes[v].get(reference, (0, 0))
            if lv not in present:
                row.note = "no patients in this level"
            elif lv not in with_events:
                row.note = "no events in this level: hazard ratio not estimable (its patients are left out of the model)"
            elif reference not in with_events:
                row.note = (f"no patients in the reference level {reference}" if reference not in present else
                            f"no events in the reference level {reference}: hazard ratio not estimable")
            elif v not in in_model:
                row.note = "fewer than two levels with events: not in the model"
            elif result is None:
                row.note = model_note
            else:
                i = result.names.index(f"{v}[{lv}]")
                row.coef, row.se, row.hr = result.coef[i], result.se[i], result.hr[i]
                row.ci_lower, row.ci_upper, row.p_value = result.ci_lower[i], result.ci_upper[i], result.p_value[i]
                row.note = result.note
            if zph is not None:
                row.ph_chisq, row.ph_df, row.ph_p_value = zph
            rows.append(row)
    global_row = CoxRow("GLOBAL", None, n_patients=n_patients, n_events=n_events)
    if result is None:
        global_row.note = model_note
    else:
        if "GLOBAL" in result.zph:  # not when every column is aliased (no term to test)
            global_row.ph_chisq, global_row.ph_df, global_row.ph_p_value = result.zph["GLOBAL"]
        dropped = [v for v in variables if v not in in_model]
        global_row.note = "; ".join(filter(None, [
            result.note,
            f"not in the model (fewer than two levels with events): {', '.join(dropped)}" if dropped else None]))
        global_row.note = global_row.note or None
    rows.append(global_row)
    model = CoxModel(rows, n_patients, n_events, note=model_note if result is None else global_row.note)
    if result is not None:
        concordance = cox_concordance(cox_data, result.coef)
        model.loglik, model.loglik_null, model.aic = result.loglik, result.loglik_null, result.aic
        model.concordance, model.concordance_se = concordance.concordance, concordance.std_err
        model.tests = cox_term_tests(cox_data, result)
    return model
