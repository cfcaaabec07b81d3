"""SAP A9: rate ratios of serious infection episodes by risk window (days since the start of the most
recent course, reference >365), Poisson and negative binomial, unadjusted and adjusted for the A5
multivariable covariates (vigil.stats.glm, as R glm(family = poisson) and MASS::glm.nb).

Both models are fitted on the same rows: person-time and episodes aggregated in DuckDB by risk window
x covariate pattern (analysis.risk_windows), so that the unadjusted and adjusted fits, and the Poisson
and negative-binomial fits, are comparable (for the Poisson rate ratios any aggregation gives the same
estimate; the negative binomial's extra variance and the Pearson dispersion are per row, and these rows
are the SAP's). A pattern cell with person-time but no episode is a row with y = 0.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from vigil.analysis import sap
from vigil.stats.glm import GLMResult, negative_binomial_glm, poisson_glm, treatment_design

OUTCOME = "all_serious"
TABLE = "rate_ratios"
WINDOW = "window"
REFERENCE_WINDOW = ">365"
INTERCEPT = "(Intercept)"
FITS = (("poisson", poisson_glm), ("negative_binomial", negative_binomial_glm))


def window_levels() -> list[str]:
    """The risk windows with the SAP's reference (>365) first, then in window order."""
    return [REFERENCE_WINDOW] + [w for w in sap.RISK_WINDOWS if w != REFERENCE_WINDOW]


def aggregated_person_time(con, risk_windows: str = "analysis.risk_windows") -> pl.DataFrame:
    """Episodes and person-years per risk window x multivariable covariate pattern."""
    covariates = ", ".join(sap.MULTIVARIABLE)
    return con.sql(f"""
        SELECT risk_window AS "{WINDOW}", {covariates},
               CAST(sum(n_events) AS BIGINT) AS n_events, sum(days) / 365.25 AS person_years
        FROM {risk_windows}
        GROUP BY ALL
        HAVING sum(days) > 0
        ORDER BY ALL""").pl()


def rate_ratios(con, levels: dict[str, list[str]], risk_windows: str = "analysis.risk_windows") -> pl.DataFrame:
    """The rows of results.rate_ratios (without run_id/variant): for each model and variance, one row per
    coefficient (the intercept, each non-reference window, and in the adjusted model each
    non-reference covariate level)."""
    rows = aggregated_person_time(con, risk_windows)
    models = {"univariable": [WINDOW], "multivariable": [WINDOW, *sap.MULTIVARIABLE]}
    all_levels = {WINDOW: window_levels(), **{v: levels[v] for v in sap.MULTIVARIABLE}}
    out = []
    y = rows["n_events"].to_numpy().astype(float)
    offset = np.log(rows["person_years"].to_numpy())
    for model, variables in models.items():
        model_levels = {v: all_levels[v] for v in variables}
        X, names = treatment_design(rows, model_levels)
        for variance, fit in FITS:
            try:
                result = fit(y, offset, X, names)
            except (FloatingPointError, np.linalg.LinAlgError) as exc:  # no estimate, said per row
                result = _failed(names, f"model not estimable: {str(exc).splitlines()[0][:200]}")
            for i, name in enumerate(names):
                variable, _, level = name.partition("=")
                out.append({
                    "outcome": OUTCOME, "model": model, "covariates": ", ".join(variables), "variance": variance,
                    "variable": variable, "level": level or None,
                    "reference_level": model_levels[variable][0] if level else None,
                    "level_order": model_levels[variable].index(level) + 1 if level else None,
                    "coef": result.coef[i], "se": result.se[i], "rate_ratio": result.rate_ratio[i],
                    "ci_lower": result.ci_lower[i], "ci_upper": result.ci_upper[i], "p_value": result.p_value[i],
                    "dispersion": result.dispersion, "theta": result.theta if variance != "poisson" else None,
                    "n_rows": rows.height, "n_events": int(y.sum()), "person_years": float(rows["person_years"].sum()),
                    "note": _note(result, name)})
    return pl.DataFrame(out, schema={
        "outcome": pl.Utf8, "model": pl.Utf8, "covariates": pl.Utf8, "variance": pl.Utf8, "variable": pl.Utf8,
        "level": pl.Utf8, "reference_level": pl.Utf8, "level_order": pl.Int32, "coef": pl.Float64,
        "se": pl.Float64, "rate_ratio": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64,
        "p_value": pl.Float64, "dispersion": pl.Float64, "theta": pl.Float64, "n_rows": pl.Int64,
        "n_events": pl.Int64, "person_years": pl.Float64, "note": pl.Utf8})


def _failed(names: list[str], note: str) -> GLMResult:
    nan = np.full(len(names), np.nan)
    return GLMResult("", list(names), nan, nan, nan, nan, nan, nan, nan, np.nan, np.nan, 0, np.nan, np.nan, 0,
                     False, 0, note=note)


def _note(result, name: str) -> str | None:
    """The fit's note where this coefficient has no value (aliased, no events); else the fit's own note
    only when it concerns the whole fit (no convergence)."""
    if name in result.aliased:
        return "no patients' person-time distinguishes this level (aliased): no estimate"
    if name in result.no_events:
        return "no episodes in this level (or its reference): rate ratio not estimable"
    return None if result.converged else result.note
