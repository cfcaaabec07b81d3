"""run_analyses: every results table filled for every outcome and stratifier, no NaN stored,
one run never overwritten, the caller's transaction respected, comments on every column, and
the whole chain from staging rows (build_cohort) to results on a tiny hand-made cohort."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from analysis_data import SAP_LEVELS, load_analysis
from test_cohort import Study, course

from vigil.analysis.sap import (DAYS, FIRST_EVENT_OUTCOMES, INCIDENCE_OUTCOMES, MULTIVARIABLE, RESULT_TABLES,
                            STRATIFIERS, run_analyses)

# Every SAP analysis (Cox models included) per test: seconds each. The estimators' own tests
# (test_survival.py, test_analysis_reference.py) are in the fast tier.
pytestmark = pytest.mark.slow


@pytest.fixture
def ordinary():
    con = duckdb.connect()
    load_analysis(con, "ordinary")
    yield con
    con.close()


def _double_columns(con, table):
    return [name for name, dtype in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'results' "
        "AND table_name = ?", [table]).fetchall() if dtype == "DOUBLE"]


def test_every_table_for_every_outcome_and_stratifier(ordinary):
    con = ordinary
    con.execute("BEGIN")
    summary = run_analyses(con, 1)
    con.execute("COMMIT")
    n_levels = {v: len(SAP_LEVELS.get(v, [])) for v in STRATIFIERS}
    n_levels["site"] = 3
    strata = 1 + sum(n_levels.values())
    assert summary["rows"]["incidence"] == len(INCIDENCE_OUTCOMES) * strata
    assert summary["rows"]["risk_windows"] == 4
    assert summary["rows"]["cumulative_incidence"] == 2 * len(FIRST_EVENT_OUTCOMES) * strata * len(DAYS)
    assert summary["rows"]["logrank"] == len(FIRST_EVENT_OUTCOMES) * len(STRATIFIERS)
    # univariable (one per level incl. the GLOBAL row), multivariable and site-stratified (levels + GLOBAL each)
    per_outcome = sum(n_levels[v] for v in STRATIFIERS) + 2 * (sum(n_levels[v] - 1 for v in MULTIVARIABLE) + 1)
    assert summary["rows"]["cox"] == len(FIRST_EVENT_OUTCOMES) * per_outcome
    for table in RESULT_TABLES:
        (n,) = con.execute(f"SELECT count(*) FROM results.{table} WHERE run_id = 1").fetchone()
        assert n == summary["rows"][table] > 0

    got = con.execute("SELECT DISTINCT outcome, stratifier FROM results.incidence").fetchall()
    assert set(got) == {(o, s) for o in INCIDENCE_OUTCOMES for s in ("overall",) + STRATIFIERS}
    labels = con.execute("SELECT stratum FROM results.incidence WHERE outcome = 'first_serious' "
                         "AND stratifier = 'edss' ORDER BY stratum_order").fetchall()
    assert [r[0] for r in labels] == ["0-2.5", "3.0-5.5", ">=6.0", "unknown"]
    models = con.execute("SELECT DISTINCT model, covariates FROM results.cox").fetchall()
    assert set(models) == {("univariable", s) for s in STRATIFIERS} | {
        (m, ", ".join(MULTIVARIABLE)) for m in ("multivariable", "multivariable_site_stratified")}
    references = dict(con.execute("SELECT DISTINCT variable, reference_level FROM results.cox "
                                  "WHERE variable <> 'GLOBAL'").fetchall())
    assert references == {"age_group": "18-29", "sex": "F", "charlson": "0", "prior_dmt": "0",
                          "prior_high_efficacy": "N", "edss": "0-2.5", "site": "DK01"}
    windows = con.execute('SELECT "window" FROM results.risk_windows ORDER BY window_order').fetchall()
    assert [w[0] for w in windows] == ["0-30", "31-90", "91-365", ">365"]


@pytest.mark.parametrize("name", ["ordinary", "few_events"])
def test_no_nan_or_infinity_is_stored(name):
    con = duckdb.connect()
    load_analysis(con, name)
    run_analyses(con, 3)
    for table in RESULT_TABLES:
        for column in _double_columns(con, table):
            (bad,) = con.execute(f"SELECT count(*) FROM results.{table} WHERE isnan({column}) OR isinf({column})"
                                 ).fetchone()
            assert bad == 0, (table, column)
    # every NULL estimate says why
    for table, column in (("incidence", "rate_per_1000py"), ("cumulative_incidence", "estimate"),
                          ("logrank", "chisq")):
        (unexplained,) = con.execute(f"SELECT count(*) FROM results.{table} WHERE {column} IS NULL AND note IS NULL"
                                     ).fetchone()
        assert unexplained == 0, table
    (unexplained,) = con.execute("SELECT count(*) FROM results.cox WHERE variable <> 'GLOBAL' AND hr IS NULL "
                                 "AND note IS NULL").fetchone()
    assert unexplained == 0


def test_a_run_is_never_overwritten(ordinary):
    run_analyses(ordinary, 5)
    with pytest.raises(ValueError, match="already holds run 5"):
        run_analyses(ordinary, 5)
    run_analyses(ordinary, 6)
    assert ordinary.execute("SELECT count(DISTINCT run_id) FROM results.cox").fetchone() == (2,)
    with pytest.raises(TypeError):
        run_analyses(ordinary, "7")


def test_runs_inside_the_callers_transaction(ordinary):
    ordinary.execute("BEGIN")
    run_analyses(ordinary, 1)
    ordinary.execute("ROLLBACK")
    (n,) = ordinary.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'results'").fetchone()
    assert n == 0


def test_every_results_table_and_column_has_a_comment(ordinary):
    run_analyses(ordinary, 1)
    for table in RESULT_TABLES:
        (comment,) = ordinary.execute("SELECT comment FROM duckdb_tables() WHERE schema_name = 'results' "
                                      "AND table_name = ?", [table]).fetchone()
        assert comment and "SAP" in comment, table
        missing = ordinary.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'results' "
                                   "AND table_name = ? AND (comment IS NULL OR comment = '')", [table]).fetchall()
        assert missing == [], (table, missing)


def test_from_staging_rows_to_results():
    # Four patients (index 2020-01-06, data cut 2026-06-30):
    #   1: serious infection 2020-03-01 (t = 56), then followed to the cut;
    #   2: died 2022-02-02 without infection (status 2 for both outcomes);
    #   3: male, retreated 2021-01-11, serious infection 2021-01-20: day 9 of course 2 (window 0-30);
    #   4: followed to the cut, nothing.
    study = Study()
    p1 = study.patient(1)
    study.patient(2, death="2022-02-02")
    p3 = study.patient(3, sex="M", infusions=course("2020-01-06", 5, 1) + course("2021-01-11", 3, 2))
    study.patient(4)
    study.infection(p1, "2020-03-01")
    study.infection(p3, "2021-01-20")
    study.build()
    study.con.execute("BEGIN")
    summary = run_analyses(study.con, 1)
    study.con.execute("COMMIT")
    assert summary["rows"]["risk_windows"] == 4
    overall = study.row("SELECT * FROM results.incidence WHERE outcome = 'first_serious' AND stratifier = 'overall'")
    assert overall["n_patients"] == 4 and overall["n_events"] == 2
    assert overall["ci_lower"] > 0 and overall["rate_per_1000py"] > 0
    early = study.row("""SELECT * FROM results.risk_windows WHERE "window" = '0-30'""")
    assert early["n_events"] == 1
    km = study.row("SELECT * FROM results.cumulative_incidence WHERE method = 'kaplan_meier' "
                   "AND outcome = 'first_serious' AND stratifier = 'overall' AND day = 365")
    # events at t = 56 (4 at risk) and t = 380 (day 365 comes first): 1 - S(365) = 1/4
    assert km["estimate"] == pytest.approx(0.25) and km["n_at_risk"] == 3 and km["cumulative_events"] == 1
    opp = study.rows("SELECT * FROM results.cox WHERE outcome = 'first_opportunistic'")
    assert all(r["hr"] is None and r["note"] == "no events: no model" for r in opp)
    sex = study.rows("SELECT * FROM results.incidence WHERE outcome = 'first_serious' AND stratifier = 'sex' "
                     "ORDER BY stratum_order")
    assert [(r["stratum"], r["n_patients"]) for r in sex] == [("F", 3), ("M", 1), ("U", 0)]
    assert sex[2]["rate_per_1000py"] is None and sex[2]["note"].startswith("no patients")
    table = study.con.sql("SELECT * FROM results.cumulative_incidence_curves").pl()
    assert table.filter(pl.col("time") == 0)["estimate"].max() == 0


def test_a_rate_ratio_model_that_cannot_be_fitted_is_null_with_a_note(ordinary, monkeypatch):
    import numpy as np

    from vigil.analysis import rate_ratios

    def singular(*args):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(rate_ratios, "FITS", (("poisson", singular), ("negative_binomial", singular)))
    rows = rate_ratios.rate_ratios(ordinary, {**SAP_LEVELS, "site": ["DK01", "NO02", "SE03"]})
    assert rows.height > 0 and rows["rate_ratio"].is_nan().all() and rows["se"].is_nan().all()  # NULL when stored
    assert (rows["note"] == "model not estimable: Singular matrix").all()
