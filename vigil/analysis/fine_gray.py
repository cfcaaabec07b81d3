"""SAP A10 policy for the Fine-Gray models: the primary outcome with death competing, univariable per
stratum variable and the A5 multivariable model, treatment contrasts against the SAP reference levels.
The estimator is vigil.stats.finegray (as R cmprsk::crr).

Patients are passed aggregated, one row per distinct (t, status, covariate pattern) with its count:
crr's pseudo-likelihood, censoring distribution and sandwich variance are sums over exchangeable
patients, so the fit is the per-patient fit (vigil.stats.finegray, `counts`). A level without patients
has no column (note "no patients in this level"); the estimator handles levels without events.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from vigil.analysis import sap
from vigil.stats.finegray import fine_gray
from vigil.stats.glm import treatment_design

OUTCOME = "first_serious"
TABLE = "fine_gray"
SCHEMA = {"outcome": pl.Utf8, "model": pl.Utf8, "covariates": pl.Utf8, "variable": pl.Utf8, "level": pl.Utf8,
          "reference_level": pl.Utf8, "level_order": pl.Int32, "coef": pl.Float64, "se": pl.Float64,
          "shr": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64, "p_value": pl.Float64,
          "n_patients": pl.Int64, "n_events": pl.Int64, "n_competing": pl.Int64, "note": pl.Utf8}


def fine_gray_models(con, levels: dict[str, list[str]], outcomes: str = "analysis.outcomes") -> pl.DataFrame:
    """The rows of results.fine_gray (without run_id/variant), univariable models in SAP order, then the
    multivariable model."""
    rows = []
    for variable in sap.STRATIFIERS:
        rows += model_rows(con, "univariable", [variable], levels, outcomes)
    rows += model_rows(con, "multivariable", list(sap.MULTIVARIABLE), levels, outcomes)
    return pl.DataFrame(rows, schema=SCHEMA)


def model_rows(con, model: str, variables: list[str], levels: dict[str, list[str]], outcomes: str) -> list[dict]:
    data = con.sql(f"""
        SELECT t, status, {", ".join(variables)}, count(*) AS n
        FROM {outcomes} WHERE outcome = $outcome
        GROUP BY ALL ORDER BY ALL""", params={"outcome": OUTCOME}).pl()
    present = {v: [lv for lv in levels[v] if lv in set(data[v].to_list())] for v in variables}
    # the reference column comes first in treatment_design; a variable whose reference level has no
    # patients has no contrast at all (nothing to compare with)
    fitted = {v: lv for v, lv in present.items() if levels[v][0] in lv and len(lv) > 1}
    fit = None
    if fitted:
        X, names = treatment_design(data, fitted)
        X, names = X[:, 1:], names[1:]  # crr has no intercept
        terms = {}
        for j, name in enumerate(names):
            terms.setdefault(name.partition("=")[0], []).append(j)
        fit = fine_gray(data["t"].to_numpy(), data["status"].to_numpy(), X, names=names, terms=terms,
                        counts=data["n"].to_numpy())
    n = data["n"].to_numpy()
    status = data["status"].to_numpy()
    totals = {"n_patients": int(n.sum()), "n_events": int(n[status == 1].sum()),
              "n_competing": int(n[status == 2].sum())}
    rows = []
    for v in variables:
        reference = levels[v][0]
        for order, level in enumerate(levels[v][1:], start=2):
            row = {"outcome": OUTCOME, "model": model, "covariates": ", ".join(variables), "variable": v,
                   "level": level, "reference_level": reference, "level_order": order, **totals}
            name = f"{v}={level}"
            if level not in present[v]:
                row["note"] = "no patients in this level"
            elif reference not in present[v]:
                row["note"] = f"no patients in the reference level {reference}"
            elif fit is None or name not in fit.names:
                row["note"] = "no model"
            else:
                i = fit.names.index(name)
                row.update(coef=fit.coef[i], se=fit.se[i], shr=fit.shr[i], ci_lower=fit.ci_lower[i],
                           ci_upper=fit.ci_upper[i], p_value=fit.p_value[i],
                           note=fit.note if np.isnan(fit.coef[i]) or not fit.converged else None)
            rows.append(row)
    return rows
