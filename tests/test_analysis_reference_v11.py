"""run_analyses' SAP v1.1 tables (A8-A11) and the A5 extras against R on three reference datasets.

The datasets (tests/reference/data/{ordinary,few_events}.csv, written by make_datasets.py, and
edge_cases.csv, written by make_v11_datasets.py: whole-day times on a 14-day grid, so events, deaths and
censorings tie on most days; sites of one patient, with an event (D04) and with a death only (E05);
charlson >=2 with patients but no event or episode) are loaded as analysis tables (tests/analysis_data.py), run_analyses fills the results tables, and every number of
results.incidence_proportion, results.rate_ratios, results.fine_gray, results.standardised_rates,
results.cox (model multivariable_site_stratified; the other models: test_analysis_reference.py),
results.cox_models and results.cox_tests is compared with the committed output of
tests/reference/analysis_v11_reference.R (`make reference`), which rebuilds the same inputs from the CSV
in R: binom.test (A8), glm(family = poisson) and MASS::glm.nb on the risk windows aggregated by window x
the A5 covariates (A9), cmprsk::crr (A10), epitools::ageadjust.direct (A11), and for A5
coxph(ties = "efron") (+ strata(site)) with cox.zph, AIC, fit$concordance, survival:::coxph.wtest and
drop1(test = "Chisq"), both first-event outcomes (first_opportunistic: a copy of the data in ordinary,
without events in few_events).

Tolerances: 1e-6 absolute on proportions, coefficients, SEs, CI limits of proportions, p-values,
person-years, the Pearson dispersion and the standardised rates and their CIs (per 1,000
person-years), and on the A5 log hazard ratios, SEs, p-values, PH-test, Wald and likelihood-ratio
chi-squares, log-likelihoods, AIC and concordance (with its SE); 1e-6 relative on rate ratios,
(subdistribution) hazard ratios, their CIs and glm.nb's theta. Counts and degrees of freedom are exact
(NULL exactly where R's are NA). R fits the Cox models with coxph's default control (its iteration
stop leaves ~1e-9 here: with coxph.control(eps = 1e-12) no value moves by more than 3e-9). The row sets
must be the same, and a value is NULL here exactly where R's is NA (R says why in `reason`; the row here
then has a note). One documented convention differs: with no
event in a stratum, ageadjust.direct's lower limit is NaN (gamma shape 0/0) and ours is 0
(vigil.stats.rates, the note says so). The Poisson SEs of A9 where a window has no episode are R's
limit (vigil.stats.glm._poisson_fit: the information at the final mu of the fit without those rows).

`python tests/test_analysis_reference_v11.py` prints the largest difference per quantity.
"""

from __future__ import annotations

import sys
from functools import cache

import numpy as np
import polars as pl
import pytest
from analysis_data import REFERENCE, analysed


DATASETS = ("ordinary", "few_events", "edge_cases")
TABLES = ("incidence_proportion", "rate_ratios", "fine_gray", "standardised_rates", "cox", "cox_models",
          "cox_tests")
# results.cox: only the site-stratified model here; R's file per table
WHERE = {"cox": pl.col("model") == "multivariable_site_stratified"}
EXPECTED_FILE = {"cox": "cox_site_stratified"}
ABS = 1e-6
REL = 1e-6

TEXT = {"outcome", "stratifier", "stratum", "model", "covariates", "variance", "variable", "level", "reason",
        "warnings", "converged"}
INTEGER = {"day", "n_cases", "n_denominator", "n_censored_before", "n_rows", "n_events", "n_patients",
           "n_competing", "n_cells", "ph_df", "wald_df", "lr_df"}

# per table: the join keys, the exact counts, the values compared absolutely and relatively
SPEC = {
    "incidence_proportion": (["stratifier", "stratum", "day"], ["n_cases", "n_denominator", "n_censored_before"],
                             ["proportion", "ci_lower", "ci_upper"], []),
    "rate_ratios": (["model", "covariates", "variance", "variable", "level"], ["n_rows", "n_events"],
                    ["coef", "se", "p_value", "dispersion", "person_years"],
                    ["rate_ratio", "ci_lower", "ci_upper", "theta"]),
    "fine_gray": (["model", "covariates", "variable", "level"], ["n_patients", "n_events", "n_competing"],
                  ["coef", "se", "p_value"], ["shr", "ci_lower", "ci_upper"]),
    "standardised_rates": (["stratifier", "stratum"], ["n_events", "n_cells"],
                           ["person_years", "crude_rate", "standardised_rate", "ci_lower", "ci_upper"], []),
    "cox": (["outcome", "model", "covariates", "variable", "level"], ["n_patients", "n_events", "ph_df"],
            ["coef", "se", "p_value", "ph_chisq", "ph_p_value"], ["hr", "ci_lower", "ci_upper"]),
    "cox_models": (["outcome", "model", "covariates"], ["n_patients", "n_events"],
                   ["loglik", "loglik_null", "aic", "concordance", "concordance_se"], []),
    "cox_tests": (["outcome", "model", "covariates", "variable"], ["wald_df", "lr_df"],
                  ["wald_chisq", "wald_p", "lr_chisq", "lr_p"], []),
}
# A11 with no event: R's lower limit is NaN, ours 0 by design (vigil.stats.rates)
R_NAN_LOWER = "no events: lower limit NaN"
OUR_NAN_NOTE = "R's ageadjust.direct gives NaN"


@cache
def results(name: str) -> dict[str, pl.DataFrame]:
    frames = analysed(name)
    return {t: frames[t].filter(pl.col("variant") == "main", WHERE.get(t, True)) for t in TABLES}


def read_expected(name: str, table: str) -> pl.DataFrame:
    path = REFERENCE / "expected" / name / f"{EXPECTED_FILE.get(table, table)}.csv"
    columns = pl.read_csv(path, n_rows=0).columns
    schema = {c: pl.String if c in TEXT else pl.Int64 if c in INTEGER else pl.Float64 for c in columns}
    return pl.read_csv(path, schema_overrides=schema)


def _np(values: pl.Series) -> np.ndarray:
    """A float column as numpy, NULL as NaN."""
    return values.cast(pl.Float64).fill_null(np.nan).to_numpy()


def joined(name: str, table: str) -> pl.DataFrame:
    """R's rows joined 1:1 with ours (ours suffixed _ours); asserts the row sets are the same and that
    every row where R has a reason (a value NA) has a note here."""
    keys, counts, *_ = SPEC[table]
    ours = results(name)[table]
    expected = read_expected(name, table)
    if table == "cox_tests":  # R's tests of the site-stratified model too; the pipeline tests the multivariable one
        expected = expected.filter(pl.col("model") == "multivariable")
    # the intercept of A9 has no level: NULL in both, joined as ""
    ours = ours.with_columns(pl.col(k).fill_null("") for k in keys if ours.schema[k] == pl.String)
    expected = expected.with_columns(pl.col(k).fill_null("") for k in keys if expected.schema[k] == pl.String)
    ours = ours.with_columns(pl.col(k).cast(expected.schema[k]) for k in keys)
    assert ours.select(keys).is_duplicated().sum() == 0 and expected.select(keys).is_duplicated().sum() == 0
    only_r = expected.join(ours, on=keys, how="anti")
    only_ours = ours.join(expected, on=keys, how="anti")
    assert only_r.height == 0, f"{table}: rows only in R: {only_r.select(keys).rows()}"
    assert only_ours.height == 0, f"{table}: rows only here: {only_ours.select(keys).rows()}"
    j = expected.join(ours, on=keys, how="inner", suffix="_ours", validate="1:1")
    assert j.height == expected.height
    for c in counts:   # NULL only where R's is NA
        bad = j.filter(pl.col(c).ne_missing(pl.col(f"{c}_ours")))
        assert bad.height == 0, f"{table}.{c}: {bad.select(*keys, c, f'{c}_ours').rows()}"
    no_note = j.filter(pl.col("reason").is_not_null() & pl.col("note").is_null())
    assert no_note.height == 0, f"{table}: NA in R without a note here: {no_note.select(keys).rows()}"
    return j


def _max_diff(j: pl.DataFrame, table: str, column: str, relative: bool = False) -> float:
    r, o = _np(j[column]), _np(j[f"{column}_ours"])
    keys = SPEC[table][0]
    mismatch = np.isnan(r) != np.isnan(o)
    assert not mismatch.any(), (f"{table}.{column}: NULL in one and not the other at "
                                f"{j.filter(pl.Series(mismatch)).select(*keys, column, f'{column}_ours').rows()}")
    ok = ~np.isnan(r)
    if not ok.any():
        return 0.0
    diff = np.abs(o[ok] - r[ok])
    return float(np.max(diff / np.abs(r[ok]) if relative else diff))


def table_differences(name: str, table: str) -> dict[str, float]:
    j = joined(name, table)
    if table == "standardised_rates":
        # the one documented convention: no event -> R's lower limit NaN, ours 0 with a note
        nan_lower = j["reason"] == R_NAN_LOWER
        conv = j.filter(nan_lower)
        assert conv["ci_lower"].null_count() == conv.height and (conv["ci_lower_ours"] == 0).all()
        assert conv["note"].str.contains(OUR_NAN_NOTE, literal=True).all()
        j = j.with_columns(pl.when(nan_lower).then(0.0).otherwise(pl.col("ci_lower")).alias("ci_lower"))
    _, _, absolute, relative = SPEC[table]
    # A9: the Poisson and the negative-binomial fits apart
    parts = ([(f"{table}.{v}", j.filter(pl.col("variance") == v)) for v in ("poisson", "negative_binomial")]
             if table == "rate_ratios" else [(table, j)])
    out = {}
    for prefix, part in parts:
        out.update({f"{prefix}.{c}": _max_diff(part, table, c) for c in absolute})
        out.update({f"{prefix}.{c} (relative)": _max_diff(part, table, c, relative=True) for c in relative})
    if table == "rate_ratios":
        del out["rate_ratios.poisson.theta (relative)"]   # NULL in both (asserted above): nothing to print
    return out


def differences(name: str) -> dict[str, float]:
    """Largest |ours - R| per quantity (relative where marked); asserts rows, counts and NULLs agree."""
    out: dict[str, float] = {}
    for table in TABLES:
        out.update(table_differences(name, table))
    return out


def _tolerance(quantity: str) -> float:
    return REL if "relative" in quantity else ABS


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("table", TABLES)
def test_agrees_with_r(name, table):
    for quantity, diff in table_differences(name, table).items():
        assert diff <= _tolerance(quantity), (quantity, diff)


def test_few_events_nulls_are_explained():
    """The NA cases of the sparse dataset, as R names them, are NULL here with the matching note."""
    res = results("few_events")

    def notes(table, **where):
        frame = res[table]
        for column, value in where.items():
            frame = frame.filter(pl.col(column) == value)
        assert frame.height > 0 and frame["note"].null_count() == 0
        return set(frame["note"])

    # A8: edss >=6.0 has no patients
    assert notes("incidence_proportion", stratifier="edss", stratum=">=6.0") == {
        "no patient followed to the day: not estimable"}
    # A9: no episodes in windows 0-30 and 31-90 (with the ceil(t / 2) rule); sex M, U and edss >=6.0
    # have no rows (columns of zeros: R's NA)
    rr = res["rate_ratios"]
    for level in ("0-30", "31-90"):
        assert rr.filter(pl.col("level") == level)["rate_ratio"].null_count() == 4
        assert notes("rate_ratios", level=level) == {
            "no episodes in this level (or its reference): rate ratio not estimable"}
    for level in ("M", "U", ">=6.0"):
        assert notes("rate_ratios", level=level) == {
            "no patients' person-time distinguishes this level (aliased): no estimate"}
    # A10: edss unknown has patients but no event; sex M, U and edss >=6.0 no patients
    assert all(n.startswith("edss=unknown: no events in this level") for n in notes("fine_gray", level="unknown"))
    for level in ("M", "U", ">=6.0"):
        assert notes("fine_gray", level=level) == {"no patients in this level"}
    # A11: no age_group or sex strata; edss >=6.0 empty, edss unknown without events (lower limit 0)
    sr = res["standardised_rates"]
    assert not sr["stratifier"].is_in(["age_group", "sex"]).any()
    assert notes("standardised_rates", stratifier="edss", stratum=">=6.0") == {"no person-time in the stratum"}
    unknown = sr.filter((pl.col("stratifier") == "edss") & (pl.col("stratum") == "unknown")).row(0, named=True)
    assert unknown["ci_lower"] == 0 and unknown["standardised_rate"] == 0 and unknown["ci_upper"] > 0


def test_few_events_a5_nulls_are_explained():
    """A5 on the sparse dataset: what R leaves NA is NULL here with the matching note."""
    res = results("few_events")
    cox = res["cox"].filter(pl.col("outcome") == "first_serious")

    def notes(frame, **where):
        for column, value in where.items():
            frame = frame.filter(pl.col(column) == value)
        assert frame.height > 0 and frame["note"].null_count() == 0
        return set(frame["note"])

    # sex has patients in F only: not in the model, no PH test; edss >=6.0 no patients, unknown no events
    # (its patients left out: 533 of 600), both with the edss term's PH test
    for level in ("M", "U"):
        assert notes(cox, variable="sex", level=level) == {"no patients in this level"}
    assert cox.filter(pl.col("variable") == "sex")["ph_chisq"].null_count() == 2
    assert notes(cox, level="unknown") == {
        "no events in this level: hazard ratio not estimable (its patients are left out of the model)"}
    assert cox.filter(pl.col("variable") == "edss")["ph_chisq"].null_count() == 0
    assert set(cox["n_patients"]) == {533}
    tests = res["cox_tests"].filter(pl.col("outcome") == "first_serious")
    assert notes(tests, variable="sex") == {"not in the model (fewer than two levels with events)"}
    assert notes(res["cox_models"], outcome="first_serious", covariates="sex") == {
        "no variable with events in two or more levels: no model"}
    # first_opportunistic has no events: no model anywhere, every patient counted
    for table in ("cox", "cox_models", "cox_tests"):
        assert notes(res[table], outcome="first_opportunistic") == {"no events: no model"}
    assert set(res["cox_models"].filter(pl.col("outcome") == "first_opportunistic")["n_patients"]) == {600}


if __name__ == "__main__":
    for dataset in (sys.argv[1:] or DATASETS):
        print(dataset)
        for quantity, diff in differences(dataset).items():
            flag = "  > 1e-6" if diff > _tolerance(quantity) else ""
            print(f"  {quantity:52s} {diff:.2e}{flag}")
