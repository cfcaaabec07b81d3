"""The baseline strata (SAP section 3) are defined once, in codelists/strata.csv (issue 16).

The cohort SQL bins by the loaded table codelists.strata, analysis.strata_levels lists it, and the
Python constants (vigil.analysis.sap, the report's labels, vigil.synth, the tests) derive from the
file through vigil.cohort.strata. These tests check the binning at the cut-points, in the SQL, in
vigil.cohort.strata and in the synthetic truth, and that no level is spelled anywhere else in code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from vigil.cohort import strata as st
from vigil.cohort.codelists import CODELIST_DIR, CODELISTS, CodeListError, load_codelists, read_codelist
from vigil.cohort import COHORT_PARAMETERS
from vigil.warehouse.sqlfiles import execute_file, sql_file

ROOT = Path(__file__).resolve().parent.parent
STRATA_CSV = CODELIST_DIR / "strata.csv"


# ------------------------------------------------------------------------------- one definition

def _binned_levels() -> list[str]:
    """The levels that only the strata file should spell: those of the range and missing rules that
    are not bare numbers ('0', '1' and the single letters of sex and Y/N are too common to grep)."""
    return [lv.level for s in st.strata().values() for lv in s.levels
            if lv.rule in ("range", "missing") and not lv.level.isdigit() and lv.level != "unknown"]


def test_binned_levels_are_the_ones_expected():
    assert set(_binned_levels()) == {"18-29", "30-39", "40-49", ">=50", ">=2", "0-2.5", "3.0-5.5", ">=6.0"}


@pytest.mark.parametrize("level", _binned_levels())
def test_each_level_is_spelled_in_the_strata_file_only(level):
    """As a quoted literal ('30-39', "3.0-5.5", '>=2'): no code of vigil/, sql/ or pipelines/ spells a
    level; only codelists/strata.csv does. (Prose in SQL comments is not a definition.)"""
    assert level in STRATA_CSV.read_text(encoding="utf-8")
    found = subprocess.run(
        ["git", "grep", "--untracked", "-n", "-F", "-e", f"'{level}'", "-e", f'"{level}"', "--",
         "vigil", "sql", "pipelines"],
        cwd=ROOT, capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    assert found.stdout == "", f"level {level} spelled outside codelists/strata.csv:\n{found.stdout}"


def test_level_lists_are_not_spelled_in_code():
    """No level list (two consecutive levels of a variable, in any quoting) in vigil/, sql/, pipelines/."""
    for s in st.strata().values():
        for a, b in zip(s.level_names, s.level_names[1:]):
            if len(a) == 1 and len(b) == 1:
                continue  # F, M / N, Y / 0, 1: too common to grep as a list
            pattern = rf"['\"]{re.escape(a)}['\"][^'\"\n]{{0,12}}['\"]{re.escape(b)}['\"]"
            found = subprocess.run(["git", "grep", "--untracked", "-n", "-P", pattern, "--", "vigil", "sql", "pipelines"],
                                   cwd=ROOT, capture_output=True, text=True)
            assert found.returncode in (0, 1), found.stderr
            assert found.stdout == "", f"{s.variable} levels {a}, {b} spelled in code:\n{found.stdout}"


def test_python_constants_derive_from_the_file():
    from vigil.analysis import sap
    from vigil.analysis.describe import TABLE1_CATEGORICAL
    from vigil.report import data
    from vigil.synth import SERIOUS_INFECTION_HAZARD_RATIOS

    assert sap.STRATIFIERS == ("charlson", "prior_dmt", "prior_high_efficacy", "edss", "age_group", "sex", "site")
    assert sap.MULTIVARIABLE == ("age_group", "sex", "charlson", "prior_dmt", "prior_high_efficacy", "edss")
    assert list(data.STRATIFIERS) == ["overall", "age_group", "sex", "charlson", "prior_dmt", "prior_high_efficacy",
                                      "edss", "site"]
    assert all(TABLE1_CATEGORICAL[v][0] == st.labels()[v] for v in TABLE1_CATEGORICAL if v in st.labels())
    for variable, ratios in SERIOUS_INFECTION_HAZARD_RATIOS.items():
        levels = st.strata()[variable].level_names
        assert set(ratios) <= set(levels[1:]), variable  # the reference has hazard ratio 1


def test_the_sap_levels_and_references():
    """SAP section 3: levels and reference levels (first listed)."""
    levels = st.sap_levels()
    assert {v: lv[0] for v, lv in levels.items()} == {
        "age_group": "18-29", "sex": "F", "charlson": "0", "prior_dmt": "0", "prior_high_efficacy": "N", "edss": "0-2.5"}
    assert [len(lv) for lv in levels.values()] == [4, 3, 3, 3, 2, 4]
    assert st.strata()["site"].from_data and st.strata()["edss"].missing_level == "unknown"


def test_the_strata_list_is_loaded_hashed_and_versioned():
    con = duckdb.connect()
    versions = load_codelists(con)
    assert versions["strata"]["version"] == "1.0" and len(versions["strata"]["sha256"]) == 64
    assert con.execute("SELECT n_rows FROM codelists.versions WHERE codelist = 'strata'").fetchone() == (20,)
    assert con.execute("SELECT count(*) FROM codelists.strata").fetchone() == (20,)


# ------------------------------------------------------------------------------- the loader's checks

@pytest.fixture
def lists_copy(tmp_path):
    for name in CODELISTS:
        shutil.copy(CODELIST_DIR / f"{name}.csv", tmp_path / f"{name}.csv")
    return tmp_path


@pytest.mark.parametrize("old, new, message", [
    ("range,30-39,2,30,40", "range,30-39,2,31,40", "contiguous"),  # a gap: age 30 would have no level
    ("range,30-39,2,30,40", "range,30-39,2,29,40", "contiguous"),  # an overlap: age 29 would have two
    ("range,0-2.5,1,0,3.0", "range,0-2.5,1,0,", "contiguous"),  # an open range that is not the last
    ("equals,M,2,,,M", "equals,M,2,,,F", "same value"),
    ("charlson_score,range,>=2,3,2,,", "charlson_score,range,>=2,4,2,,", "level_order"),
    ("Sex,2,6,Y,sex,equals,U", "Sex,2,6,Y,sex,range,U", "mixes rules"),
    ("edss_score,missing,unknown,4,,,", "edss_score,missing,unknown,4,1,,", "missing has no bounds"),
    ("Site,7,7,N", "Site,7,7,Yes", "multivariable"),
    ("Site,7,7,N", "Site,8,7,N", "variable_order"),
    ("range,>=50,4,50,,,1.0", "range,>=50,4,fifty,,,1.0", "not a number"),
])
def test_loader_refuses_a_broken_strata_file(lists_copy, old, new, message):
    path = lists_copy / "strata.csv"
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    with pytest.raises(CodeListError, match=message):
        read_codelist("strata", lists_copy)


# ------------------------------------------------------------------------------- binning at the cut-points

AGES = [(18, "18-29"), (29, "18-29"), (30, "30-39"), (39, "30-39"), (40, "40-49"), (49, "40-49"), (50, ">=50"),
        (75, ">=50")]
EDSS = [(0.0, "0-2.5"), (2.5, "0-2.5"), (3.0, "3.0-5.5"), (5.5, "3.0-5.5"), (6.0, ">=6.0"), (9.5, ">=6.0"),
        (None, "unknown")]
COUNTS = [(0, "0"), (1, "1"), (2, ">=2"), (7, ">=2")]
SEXES = [("F", "F"), ("M", "M"), ("U", "U")]


def _cohort_inputs(con: duckdb.DuckDBPyConnection, n: int, age, edss, charlson, prior_dmt, high_efficacy, sex):
    """Minimal cohort.* inputs of sql/cohort/patients.sql: n cohort patients with the given baseline."""
    con.execute("CREATE SCHEMA IF NOT EXISTS cohort")
    ids = [f"P{i:03d}" for i in range(n)]
    frame = pl.DataFrame({
        "patient_id": ids, "site_id": "DK01", "delivery_id": 1, "data_cut": date(2026, 6, 30),
        "birth_year": [2020 - a for a in age], "ms_course": "RRMS", "index_date": date(2020, 1, 1),
        "age_at_index": pl.Series(age, dtype=pl.Int32), "followup_end_date": date(2025, 1, 1),
        "end_reason": "data_cut", "death_date": pl.Series([None] * n, dtype=pl.Date),
        "exit_date": date(2025, 1, 1), "excluded_at_step": pl.Series([None] * n, dtype=pl.Int32), "sex": sex})
    con.register("_e", frame.to_arrow())
    con.execute("CREATE OR REPLACE TABLE cohort.eligibility AS SELECT * FROM _e")
    conditions = [(pid, 1) for pid, k in zip(ids, charlson) for _ in range(k)]
    con.execute("CREATE OR REPLACE TABLE cohort.charlson_conditions (patient_id VARCHAR, weight_counted INTEGER)")
    if conditions:
        con.executemany("INSERT INTO cohort.charlson_conditions VALUES (?, ?)", conditions)
    dmts = [(pid, "Y" if he and j == 0 else "N") for pid, k, he in zip(ids, prior_dmt, high_efficacy) for j in range(k)]
    con.execute("CREATE OR REPLACE TABLE cohort.prior_dmts (patient_id VARCHAR, high_efficacy VARCHAR)")
    if dmts:
        con.executemany("INSERT INTO cohort.prior_dmts VALUES (?, ?)", dmts)
    con.execute("CREATE OR REPLACE TABLE cohort.courses (patient_id VARCHAR, course_start_date DATE)")
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute("CREATE OR REPLACE TABLE staging.dmt_history (patient_id VARCHAR, dmt_code VARCHAR, start_date DATE)")
    con.execute("CREATE OR REPLACE TABLE cohort.baseline_edss (patient_id VARCHAR, edss_score DECIMAL(3, 1), "
                "edss_date DATE)")
    con.executemany("INSERT INTO cohort.baseline_edss VALUES (?, ?, DATE '2019-12-01')",
                    [(pid, e) for pid, e in zip(ids, edss) if e is not None])


@pytest.fixture(scope="module")
def binned():
    """cohort.patients for one patient per cut-point case (cases of unequal length are cycled)."""
    n = max(len(AGES), len(EDSS), len(COUNTS) * 2, len(SEXES))
    age = [AGES[i % len(AGES)][0] for i in range(n)]
    edss = [EDSS[i % len(EDSS)][0] for i in range(n)]
    charlson = [COUNTS[i % len(COUNTS)][0] for i in range(n)]
    prior_dmt = [COUNTS[(i + 1) % len(COUNTS)][0] for i in range(n)]
    high_efficacy = [i % 2 == 0 and prior_dmt[i] > 0 for i in range(n)]
    sex = [SEXES[i % len(SEXES)][0] for i in range(n)]
    con = duckdb.connect()
    load_codelists(con)
    _cohort_inputs(con, n, age, edss, charlson, prior_dmt, high_efficacy, sex)
    execute_file(con, sql_file("cohort", "patients"), COHORT_PARAMETERS)
    patients = con.sql("SELECT * FROM cohort.patients ORDER BY patient_id").pl()
    inputs = pl.DataFrame({"age": age, "edss_in": edss, "charlson_n": charlson, "prior_dmt_n": prior_dmt,
                           "he": high_efficacy, "sex_in": sex}, schema_overrides={"edss_in": pl.Float64})
    return pl.concat([patients, inputs], how="horizontal")


def test_sql_bins_age_at_the_cut_points(binned):
    expected = dict(AGES)
    assert [(r["age_at_index"], r["age_group"]) for r in binned.iter_rows(named=True)] == \
        [(a, expected[a]) for a in binned["age"]]


def test_sql_bins_edss_at_the_cut_points_and_null_is_unknown(binned):
    expected = {e: lv for e, lv in EDSS}
    got = [(None if r["edss_score"] is None else float(r["edss_score"]), r["edss"]) for r in binned.iter_rows(named=True)]
    assert got == [(e, expected[e]) for e in binned["edss_in"]]
    assert {lv for _, lv in got} == {"0-2.5", "3.0-5.5", ">=6.0", "unknown"}


def test_sql_bins_charlson_and_prior_dmt_counts(binned):
    expected = dict(COUNTS)
    assert [(r["charlson_score"], r["charlson"]) for r in binned.iter_rows(named=True)] == \
        [(k, expected[k]) for k in binned["charlson_n"]]
    assert [(r["prior_dmt_count"], r["prior_dmt"]) for r in binned.iter_rows(named=True)] == \
        [(k, expected[k]) for k in binned["prior_dmt_n"]]
    assert set(binned["charlson"]) == {"0", "1", ">=2"} and set(binned["prior_dmt"]) == {"0", "1", ">=2"}


def test_sql_maps_sex_and_prior_high_efficacy(binned):
    assert binned["sex"].to_list() == binned["sex_in"].to_list()
    assert binned["prior_high_efficacy"].to_list() == ["Y" if he else "N" for he in binned["he"]]
    assert set(binned["prior_high_efficacy"]) == {"N", "Y"}


def test_python_binning_agrees_with_the_sql(binned):
    strata = st.strata()
    for r in binned.iter_rows(named=True):
        edss = None if r["edss_score"] is None else float(r["edss_score"])
        assert strata["age_group"].level_of(r["age_at_index"]) == r["age_group"]
        assert strata["edss"].level_of(edss) == r["edss"]
        assert strata["charlson"].level_of(r["charlson_score"]) == r["charlson"]
        assert strata["prior_dmt"].level_of(r["prior_dmt_count"]) == r["prior_dmt"]
        assert strata["sex"].level_of(r["sex_in"]) == r["sex"]


def test_synth_truth_binning_agrees_with_the_sql(binned):
    from vigil.synth.truth import _level

    frame = binned.select(pl.col("age_at_index"), pl.col("edss_score").cast(pl.Float64),
                          pl.col("charlson_score"), pl.col("prior_dmt_count"))
    got = frame.select(age_group=_level("age_group", pl.col("age_at_index")), edss=_level("edss", pl.col("edss_score")),
                       charlson=_level("charlson", pl.col("charlson_score")),
                       prior_dmt=_level("prior_dmt", pl.col("prior_dmt_count")))
    for column in got.columns:
        assert got[column].to_list() == binned[column].to_list(), column


def test_strata_levels_lists_every_level_of_the_file_and_the_sites(binned):
    con = duckdb.connect()
    load_codelists(con)
    con.execute("CREATE SCHEMA cohort; CREATE SCHEMA analysis")
    con.execute("CREATE TABLE cohort.patients AS SELECT * FROM (VALUES ('A', '18-29', 'F', '0', '0', 'N', 'unknown', 'SE02'), "
                "('B', '>=50', 'M', '1', '>=2', 'Y', '0-2.5', 'DK01')) t(patient_id, age_group, sex, charlson, "
                "prior_dmt, prior_high_efficacy, edss, site)")
    con.execute(sql_file("analysis", "strata_levels").path.read_text(encoding="utf-8"))
    rows = con.execute("SELECT variable, variable_order, level, level_order, is_reference FROM analysis.strata_levels "
                       "ORDER BY variable_order, level_order").fetchall()
    expected = [(v, s.variable_order, lv, j + 1, j == 0) for v, s in st.strata().items()
                for j, lv in enumerate(s.level_names if not s.from_data else ["DK01", "SE02"])]
    assert rows == expected
