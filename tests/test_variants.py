"""Sensitivity analyses (SAP A12) as named variants of a run: the cohort parameters they change, what
they compute, and that the main analysis is the same with or without them."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest
from test_cohort import INDEX, Study, course

from vigil import warehouse
from vigil.analysis.runs import analyse
from vigil.analysis.variants import SENSITIVITY_ANALYSES, Variant, sensitivity_variants
from vigil.cohort import ANALYSIS_DATASETS, build_layers, build_variant_datasets, cohort_parameters
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery
from vigil.warehouse.sqlfiles import drop_apart, relations_apart


# ---------------------------------------------------------------- the cohort parameters


def test_course_gap_60_joins_infusions_45_days_apart_into_one_course():
    study = Study()
    pid = study.patient(1, infusions=course(INDEX, 3, 1) + course("2020-02-22", 2, 2))  # 45 days after day 3
    study.build()
    main = study.rows("SELECT course_number FROM cohort.infusion_courses WHERE patient_id = ? ORDER BY infusion_date", pid)
    assert [r["course_number"] for r in main] == [1, 1, 1, 2, 2]
    build_layers(study.con, cohort_parameters({"course_gap_days": 60}))
    gap60 = study.rows("SELECT course_number FROM cohort.infusion_courses WHERE patient_id = ? ORDER BY infusion_date", pid)
    assert [r["course_number"] for r in gap60] == [1, 1, 1, 1, 1]
    # the risk windows follow: one course, so every day counts from 2020-01-06
    windows = study.rows("SELECT risk_window, days FROM analysis.risk_windows WHERE patient_id = ? ORDER BY window_order", pid)
    assert windows[0] == {"risk_window": "0-30", "days": 31}


def test_censor_at_switch_ends_follow_up_on_the_start_of_another_dmt_after_index():
    study = Study()
    switched = study.patient(1)
    study.dmt(switched, "NTZ", "2022-01-01")           # after index: follow-up ends that day
    study.infection(switched, "2022-06-01")            # after the switch: not counted in the variant
    before = study.patient(2)
    study.dmt(before, "IFNB", "2018-01-01", "2019-12-01")  # before index: no effect
    study.infection(before, "2021-03-03")
    study.build()
    main = {r["patient_id"]: r for r in study.rows(
        "SELECT patient_id, o.exit_date, exit_reason, status, t FROM analysis.outcomes o JOIN cohort.patients USING "
        "(patient_id) WHERE outcome = 'first_serious'")}
    assert main[switched]["status"] == 1 and main[switched]["exit_date"] == date(2026, 6, 30)
    build_layers(study.con, cohort_parameters({"censor_at_switch": True}))
    variant = {r["patient_id"]: r for r in study.rows(
        "SELECT patient_id, o.exit_date, exit_reason, status, t FROM analysis.outcomes o JOIN cohort.patients USING "
        "(patient_id) WHERE outcome = 'first_serious'")}
    assert variant[switched]["exit_date"] == date(2022, 1, 1) and variant[switched]["exit_reason"] == "dmt_switch"
    assert variant[switched]["status"] == 0
    assert variant[switched]["t"] == (date(2022, 1, 1) - date.fromisoformat(INDEX)).days + 1
    assert variant[before] == main[before]


def test_a_death_after_the_switch_is_censored_in_the_variant():
    study = Study()
    pid = study.patient(1, death="2023-01-01")
    study.dmt(pid, "OCR", "2021-01-01")
    study.build()
    assert study.cohort_patient(pid)["died"] is True
    build_layers(study.con, cohort_parameters({"censor_at_switch": True}))
    p = study.cohort_patient(pid)
    assert (p["exit_date"], p["died"], p["exit_reason"]) == (date(2021, 1, 1), False, "dmt_switch")


def _variant_study() -> Study:
    study = Study()
    gap = study.patient(1, infusions=course(INDEX, 3, 1) + course("2020-02-22", 2, 2))  # 45 days after day 3
    study.infection(gap, "2020-03-10")
    switched = study.patient(2)
    study.dmt(switched, "NTZ", "2022-01-01")
    study.infection(switched, "2022-06-01")
    study.patient(3, site="SE02", death="2023-01-01")
    study.build()
    return study


def _contents(con, relation: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {relation} ORDER BY ALL").fetchall()


@pytest.mark.parametrize("changes", [{"course_gap_days": 60}, {"censor_at_switch": True}])
def test_a_variants_datasets_built_apart_equal_a_whole_rebuild_and_leave_the_main_ones(changes):
    study = _variant_study()
    main = {name: _contents(study.con, name) for name in ANALYSIS_DATASETS}
    datasets = build_variant_datasets(study.con, changes)
    built = {name: _contents(study.con, relation) for name, relation in datasets.items()}
    temporary = study.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary ORDER BY 1").fetchall()
    assert temporary == [("analysis__outcomes",), ("analysis__risk_windows",)]  # those between are dropped
    assert {name: _contents(study.con, name) for name in ANALYSIS_DATASETS} == main  # the main ones untouched
    drop_apart(study.con, datasets.values())
    assert not study.con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()[0][0]
    build_layers(study.con, cohort_parameters(changes))
    assert built == {name: _contents(study.con, name) for name in ANALYSIS_DATASETS}
    assert built != main  # the study's patients make each variant differ


@pytest.mark.parametrize("changed, apart", [
    ({"course_gap_days"}, ["cohort.infusion_courses", "cohort.courses", "cohort.patients", "analysis.serious_episodes",
                           "analysis.infections_in_follow_up", "analysis.outcomes", "analysis.risk_windows"]),
    ({"censor_at_switch"}, ["cohort.patients", "analysis.serious_episodes", "analysis.infections_in_follow_up",
                            "analysis.outcomes", "analysis.risk_windows"]),
])
def test_only_the_relations_between_a_changed_parameter_and_the_datasets_are_built_again(changed, apart):
    files = relations_apart(["cohort", "analysis"], changed, list(ANALYSIS_DATASETS))
    assert [f.qualified_name for f in files] == apart


def test_datasets_of_unchanged_parameters_are_the_main_ones():
    study = _variant_study()
    assert build_variant_datasets(study.con, {"course_gap_days": 30}) == {n: n for n in ANALYSIS_DATASETS}


def test_an_unknown_or_mistyped_cohort_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown cohort parameter"):
        cohort_parameters({"course_gap": 60})
    with pytest.raises(TypeError, match="course_gap_days must be int"):
        cohort_parameters({"course_gap_days": "60"})
    with pytest.raises(ValueError, match="at least 1 day"):
        cohort_parameters({"course_gap_days": 0})


# ---------------------------------------------------------------- naming


def test_the_sap_variants_are_named_and_leave_one_site_out_gives_one_per_site():
    variants = sensitivity_variants(list(SENSITIVITY_ANALYSES), ["DK01", "SE02"])
    assert [v.name for v in variants] == ["censor-at-switch", "leave-out-dk01", "leave-out-se02", "course-gap-60"]
    assert {v.name: v.analyses for v in variants}["course-gap-60"] == ("A2", "A9")
    assert sensitivity_variants(["leave-one-site-out"], ["DK01"]) == []  # one site: nothing to leave out
    with pytest.raises(ValueError, match="unknown sensitivity analysis"):
        sensitivity_variants(["censor"], ["DK01"])


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "main"}, "other than 'main'"),
    ({"name": "Gap 45"}, "lower-case name"),
    ({"description": ""}, "description is required"),
    ({"analyses": ("A3",)}, "analyses must be some of"),
    ({"cohort": {"gap": 45}}, "unknown cohort parameter"),
    ({"leave_out_site": "DK01"}, "not both"),
])
def test_a_variant_without_a_proper_name_or_parameters_is_refused(kwargs, message):
    given = {"name": "course-gap-45", "description": "courses with a 45-day gap", "analyses": ("A2", "A9"),
             "cohort": {"course_gap_days": 45}, **kwargs}
    with pytest.raises(ValueError, match=message):
        Variant(**given)


# ---------------------------------------------------------------- in a run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: main only; run 2: main and every SAP variant, plus a statistician's own; same deliveries."""
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("variants")
    synth = synthesize_study(root / "landing", patients=300, sites=3, seed=5)
    con = warehouse.connect(root / "vigil.duckdb")
    warehouse.create_layout(con)
    for folder in synth.deliveries:
        ingest_delivery(con, folder, warehouse.gx_dir_for(root / "vigil.duckdb"), validator=validation.SQL_RULE_COUNTS)
    analyse(con)
    own = Variant("course-gap-45", "Courses with a 45-day gap.", ("A1", "A2"), cohort={"course_gap_days": 45})
    analyse(con, variants=[*SENSITIVITY_ANALYSES, own])
    yield con
    con.close()


MAIN_TABLES = ("incidence", "risk_windows", "cumulative_incidence", "logrank", "cox", "cox_models", "cox_tests",
               "incidence_proportion", "rate_ratios", "fine_gray", "standardised_rates", "table1_counts",
               "observed_expected")


@pytest.mark.slow  # a generated study analysed twice (the module fixture)
@pytest.mark.parametrize("table", MAIN_TABLES)
def test_the_main_analysis_is_the_same_with_or_without_variants(runs, table):
    def main(run_id):
        return runs.sql(f"SELECT * EXCLUDE (run_id) FROM results.{table} WHERE run_id = {run_id} AND variant = 'main' "
                        "ORDER BY ALL").pl()

    assert main(2).equals(main(1))


@pytest.mark.slow
def test_each_variant_is_recorded_with_its_parameters(runs):
    rows = runs.sql("SELECT variant, sensitivity, analyses, parameters FROM results.variants WHERE run_id = 2 "
                    "ORDER BY variant").pl()
    sites = sorted(runs.sql("SELECT DISTINCT site FROM analysis.outcomes").pl()["site"])
    assert sorted(rows["variant"]) == sorted(["main", "censor-at-switch", "course-gap-60", "course-gap-45"]
                                             + [f"leave-out-{s.lower()}" for s in sites])
    by_name = {r["variant"]: r for r in rows.iter_rows(named=True)}
    assert json.loads(by_name["course-gap-60"]["parameters"])["cohort"]["course_gap_days"] == 60
    assert json.loads(by_name["course-gap-45"]["parameters"])["cohort"]["course_gap_days"] == 45
    assert by_name["course-gap-45"]["sensitivity"] == "custom" and by_name["main"]["sensitivity"] is None
    assert json.loads(by_name[f"leave-out-{sites[0].lower()}"]["parameters"])["leave_out_site"] == sites[0]
    parameters = json.loads(runs.sql("SELECT parameters FROM results.runs WHERE run_id = 2").fetchall()[0][0])
    assert set(parameters["variants"]) == set(by_name) - {"main"}
    assert runs.sql("SELECT count(*) FROM results.variants WHERE run_id = 1").fetchall() == [(1,)]  # main only


@pytest.mark.slow
def test_a_variant_writes_only_its_analyses(runs):
    written = runs.sql("SELECT 'incidence' AS t, variant FROM results.incidence WHERE run_id = 2 UNION ALL "
                       "SELECT 'cox', variant FROM results.cox WHERE run_id = 2 UNION ALL "
                       "SELECT 'risk_windows', variant FROM results.risk_windows WHERE run_id = 2 UNION ALL "
                       "SELECT 'rate_ratios', variant FROM results.rate_ratios WHERE run_id = 2").pl().unique()
    tables = {v: set(g["t"]) for (v,), g in written.group_by("variant")}
    assert tables["censor-at-switch"] == {"incidence", "cox"}
    assert tables["course-gap-60"] == {"risk_windows", "rate_ratios"}
    assert tables["course-gap-45"] == {"incidence", "risk_windows"}
    variant_incidence = runs.sql("SELECT DISTINCT outcome, stratifier FROM results.incidence "
                                 "WHERE run_id = 2 AND variant <> 'main'").fetchall()
    assert variant_incidence == [("first_serious", "overall")]
    for table in ("cox", "cox_models"):
        variant_cox = runs.sql(f"SELECT DISTINCT outcome, model FROM results.{table} WHERE run_id = 2 "
                               "AND variant <> 'main' ORDER BY ALL").fetchall()
        assert variant_cox == [("first_serious", "multivariable")]
    assert runs.sql("SELECT count(*) FROM results.cox_tests WHERE variant <> 'main'").fetchall() == [(0,)]


@pytest.mark.slow
def test_leaving_a_site_out_removes_exactly_its_patients(runs):
    overall = runs.sql("SELECT variant, n_patients, n_events FROM results.incidence WHERE run_id = 2 "
                       "AND outcome = 'first_serious' AND stratifier = 'overall'").pl()
    by_site = runs.sql("SELECT stratum, n_patients, n_events FROM results.incidence WHERE run_id = 2 AND variant = "
                       "'main' AND outcome = 'first_serious' AND stratifier = 'site'").pl()
    main = overall.filter(pl.col("variant") == "main").row(0, named=True)
    for site, n, events in by_site.iter_rows():
        left = overall.filter(pl.col("variant") == f"leave-out-{site.lower()}").row(0, named=True)
        assert (left["n_patients"], left["n_events"]) == (main["n_patients"] - n, main["n_events"] - events)


@pytest.mark.slow
def test_censoring_at_a_switch_never_adds_events_or_person_time(runs):
    rows = {r["variant"]: r for r in runs.sql(
        "SELECT variant, n_patients, n_events, person_years FROM results.incidence WHERE run_id = 2 "
        "AND outcome = 'first_serious' AND stratifier = 'overall'").pl().iter_rows(named=True)}
    switch, main = rows["censor-at-switch"], rows["main"]
    assert switch["n_patients"] == main["n_patients"]
    assert switch["n_events"] <= main["n_events"] and switch["person_years"] <= main["person_years"]


@pytest.mark.slow
def test_leaving_out_a_site_without_patients_is_refused(runs):
    nowhere = Variant("leave-out-xx99", "no such site", ("A1",), leave_out_site="XX99")
    with pytest.raises(Exception, match="XX99.* has no patient in the cohort"):
        analyse(runs, variants=[nowhere])


@pytest.mark.slow
def test_a_second_run_of_the_same_variant_name_is_refused(runs):
    dup = Variant("censor-at-switch", "again", ("A1",), cohort={"censor_at_switch": True})
    with pytest.raises(ValueError, match="given twice"):
        analyse(runs, variants=["censor-at-switch", dup])


@pytest.mark.slow
def test_a_version_1_warehouse_is_migrated_its_rows_becoming_variant_main(tmp_path):
    db = tmp_path / "v1.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        study = Study.__new__(Study)  # the hand-made rows of test_cohort, in this warehouse
        study.con, study._line, study._events = con, 1, 0
        study.patient(1)
        analyse(con)
        before = con.sql("SELECT * EXCLUDE (variant) FROM results.incidence ORDER BY ALL").pl()
        # as vigil 1 made it: no results.variants, no column variant anywhere, schema version 1
        con.execute("DROP TABLE results.variants")
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'results' "
                                    "AND table_name <> 'runs'").fetchall():
            con.execute(f"CREATE TABLE results.{table}_old AS SELECT * EXCLUDE (variant) FROM results.{table}")
            con.execute(f"DROP TABLE results.{table}")
            con.execute(f"ALTER TABLE results.{table}_old RENAME TO {table}")
        con.execute("DELETE FROM audit.schema_version")
        con.execute("INSERT INTO audit.schema_version (version) VALUES (1)")
    warehouse.verify(db, write=True)  # version 1 is one this vigil migrates: not refused
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        assert con.execute("SELECT version FROM audit.schema_version ORDER BY recorded_at DESC LIMIT 1"
                           ).fetchall() == [(warehouse.SCHEMA_VERSION,)]
        assert con.sql("SELECT DISTINCT variant FROM results.incidence").fetchall() == [("main",)]
        assert con.sql("SELECT * EXCLUDE (variant) FROM results.incidence ORDER BY ALL").pl().equals(before)
        assert analyse(con, variants=["censor-at-switch"]).run_id == 2
