"""Baseline strata at the index date (SAP section 3): Charlson, prior DMT, EDSS, age group, levels.

Every patient has the default course from INDEX = 2020-01-06 unless stated.
"""

from __future__ import annotations

from datetime import date

import pytest

from test_cohort import INDEX, Study


@pytest.fixture
def study() -> Study:
    return Study()


def charlson(study: Study, pid: str) -> tuple[int, str]:
    p = study.cohort_patient(pid)
    return p["charlson_score"], p["charlson"]


# ---------------------------------------------------------------- Charlson: every category

# (category, a code of it as a site might send it, Charlson 1987 weight)
CATEGORIES = [
    ("myocardial_infarction", "I21.4", 1),
    ("congestive_heart_failure", "I50", 1),
    ("peripheral_vascular_disease", "I73.9", 1),
    ("cerebrovascular_disease", "I63.5", 1),
    ("dementia", "G30.1", 1),
    ("chronic_pulmonary_disease", "J45.0", 1),
    ("rheumatic_disease", "M05.3", 1),
    ("peptic_ulcer_disease", "K25.7", 1),
    ("mild_liver_disease", "K70.3", 1),
    ("diabetes_without_complication", "E11.9", 1),
    ("diabetes_with_complication", "E11.2", 2),
    ("hemiplegia_paraplegia", "G81.1", 2),
    ("renal_disease", "N18.5", 2),
    ("any_malignancy", "C50.9", 2),
    ("moderate_severe_liver_disease", "K72.9", 3),
    ("metastatic_solid_tumour", "C78.7", 6),
    ("aids_hiv", "B20", 6),
]


@pytest.mark.parametrize("category, code, weight", CATEGORIES, ids=[c[0] for c in CATEGORIES])
def test_each_charlson_category_with_its_weight(study, category, code, weight):
    pid = study.patient(1)
    study.diagnosis(pid, code, "2019-05-01")
    study.build()
    assert study.row("SELECT category, weight, weight_counted FROM cohort.charlson_conditions WHERE patient_id = ?",
                     pid) == {"category": category, "weight": weight, "weight_counted": weight}
    assert charlson(study, pid) == (weight, "1" if weight == 1 else ">=2")


def test_all_17_categories_are_covered_by_the_tests():
    assert len({c[0] for c in CATEGORIES}) == 17


def test_multiple_sclerosis_itself_and_unlisted_codes_score_zero(study):
    pid = study.patient(1)
    study.diagnosis(pid, "G35", "2015-01-01")   # MS
    study.diagnosis(pid, "J18.9", "2019-01-01")  # pneumonia: not a Charlson condition
    study.build()
    assert charlson(study, pid) == (0, "0")


def test_categories_add_up_and_a_category_counts_once(study):
    # MI twice (I21.0, I22.1) counts 1; CHF I50.9 1; renal N18.3 2 -> 1 + 1 + 2 = 4, level >=2
    pid = study.patient(1)
    for code in ("I21.0", "I22.1", "I50.9", "N18.3"):
        study.diagnosis(pid, code, "2018-01-01")
    study.build()
    assert charlson(study, pid) == (4, ">=2")
    assert study.row("SELECT n_diagnoses, icd10_codes FROM cohort.charlson_conditions "
                     "WHERE patient_id = ? AND category = 'myocardial_infarction'", pid) == {
        "n_diagnoses": 2, "icd10_codes": "I21.0,I22.1"}


# ---------------------------------------------------------------- Charlson: hierarchy

@pytest.mark.parametrize("mild, severe, expected", [
    ("K70.3", "K76.6", 3),  # mild liver 1 + moderate/severe liver 3 -> 3, not 4
    ("E11.9", "E11.2", 2),  # diabetes without 1 + with complication 2 -> 2, not 3
    ("C50.9", "C79.5", 6),  # any malignancy 2 + metastatic solid tumour 6 -> 6, not 8
], ids=["liver", "diabetes", "cancer"])
def test_only_the_severe_form_counts_when_both_are_present(study, mild, severe, expected):
    pid = study.patient(1)
    study.diagnosis(pid, mild, "2018-01-01")
    study.diagnosis(pid, severe, None)
    study.build()
    assert charlson(study, pid) == (expected, ">=2")
    flags = study.rows("SELECT superseded, weight_counted FROM cohort.charlson_conditions WHERE patient_id = ? "
                       "ORDER BY weight", pid)
    assert flags == [{"superseded": True, "weight_counted": 0}, {"superseded": False, "weight_counted": expected}]


def test_the_hierarchy_only_touches_its_own_pair(study):
    # mild liver 1 + diabetes with complication 2 + metastatic 6 (no pair present twice) -> 9
    pid = study.patient(1)
    for code in ("K70.0", "E10.7", "C77.0"):
        study.diagnosis(pid, code, None)
    study.build()
    assert charlson(study, pid) == (9, ">=2")


# ---------------------------------------------------------------- Charlson: dates

def test_undated_and_index_day_diagnoses_count_post_index_do_not(study):
    pid = study.patient(1)
    study.diagnosis(pid, "I21.9", None)           # undated = history of: counts (1)
    study.diagnosis(pid, "J44.9", INDEX)          # on the index day: counts (1)
    study.diagnosis(pid, "N18.5", "2020-01-07")   # the day after index: does not count
    study.diagnosis(pid, "C78.0", "2023-01-01")   # long after index: does not count
    study.build()
    assert charlson(study, pid) == (2, ">=2")


def test_a_post_index_severe_form_does_not_supersede_a_baseline_mild_form(study):
    # mild liver before index counts 1; severe liver after index is not baseline -> 1
    pid = study.patient(1)
    study.diagnosis(pid, "K74.6", "2019-01-01")
    study.diagnosis(pid, "K72.1", "2021-01-01")
    study.build()
    assert charlson(study, pid) == (1, "1")


# ---------------------------------------------------------------- Charlson: code forms

@pytest.mark.parametrize("code, expected", [
    ("E11.9", 1),   # with the dot, 4 characters
    ("E119", 1),    # without the dot
    ("e11.9", 1),   # lower case is upper-cased
    ("E11.91", 1),  # 5 characters: starts with E119
    ("E1191", 1),   # 5 characters without the dot
    ("E11", 0),     # 3 characters, less specific than Quan's 4-character diabetes codes: no match
    ("I21", 1),     # 3 characters where Quan lists the 3-character category I21.x
    ("I25.2", 1),   # old MI, a 4-character Quan code
    ("I25.1", 0),   # I25 other than I25.2/I25.5 is not in the algorithm
    ("C44.9", 0),   # malignant neoplasm of skin is excluded
    ("C787", 6),    # metastatic without the dot
], ids=lambda v: str(v))
def test_codes_with_and_without_dot_and_of_3_to_5_characters(study, code, expected):
    pid = study.patient(1)
    study.diagnosis(pid, code, "2019-01-01")
    study.build()
    assert charlson(study, pid)[0] == expected


# ---------------------------------------------------------------- prior DMT

def test_prior_dmt_counts_distinct_codes_started_before_index(study):
    pid = study.patient(1)
    study.dmt(pid, "IFNB", "2012-01-01", "2014-01-01")
    study.dmt(pid, "IFNB", "2015-01-01", "2016-01-01")  # the same code again: still one
    study.dmt(pid, "GA", "2016-02-01", "2019-12-31")
    study.dmt(pid, "NTZ", INDEX)                         # started on the index day: not prior
    study.dmt(pid, "FTY", "2022-01-01")                  # started after index: not prior
    study.build()
    p = study.cohort_patient(pid)
    # IFNB, GA -> 2 distinct codes; no high-efficacy DMT before index
    assert (p["prior_dmt_count"], p["prior_dmt"], p["prior_high_efficacy"]) == (2, ">=2", "N")
    assert study.row("SELECT n_episodes, first_start_date FROM cohort.prior_dmts WHERE patient_id = ? "
                     "AND dmt_code = 'IFNB'", pid) == {"n_episodes": 2, "first_start_date": date(2012, 1, 1)}


def test_one_prior_high_efficacy_dmt(study):
    pid = study.patient(1)
    study.dmt(pid, "NTZ", "2017-01-01", "2019-06-30")
    study.build()
    p = study.cohort_patient(pid)
    assert (p["prior_dmt_count"], p["prior_dmt"], p["prior_high_efficacy"]) == (1, "1", "Y")


def test_no_prior_dmt(study):
    pid = study.patient(1)
    study.dmt(pid, "OCR", "2021-01-01")  # after index only
    study.build()
    p = study.cohort_patient(pid)
    assert (p["prior_dmt_count"], p["prior_dmt"], p["prior_high_efficacy"]) == (0, "0", "N")


# ---------------------------------------------------------------- EDSS

def edss(study: Study, pid: str) -> tuple:
    p = study.cohort_patient(pid)
    return p["edss_date"], p["edss_score"], p["edss"]


def test_edss_latest_in_the_year_before_index(study):
    pid = study.patient(1)
    study.edss(pid, "2019-03-01", 2.0)
    study.edss(pid, "2019-12-27", 3.5)  # latest before: chosen
    study.edss(pid, "2020-01-10", 6.0)  # after index: not needed
    study.build()
    assert edss(study, pid) == (date(2019, 12, 27), 3.5, "3.0-5.5")


def test_edss_on_the_index_day_is_before_index(study):
    pid = study.patient(1)
    study.edss(pid, INDEX, 1.5)
    study.edss(pid, "2020-01-07", 4.0)
    study.build()
    assert edss(study, pid) == (date(2020, 1, 6), 1.5, "0-2.5")


def test_edss_at_exactly_365_days_before_index_counts_366_does_not(study):
    # index 2020-01-06: index - 365 = 2019-01-06 (in), index - 366 = 2019-01-05 (out)
    inside = study.patient(1)
    study.edss(inside, "2019-01-06", 6.5)
    outside = study.patient(2)
    study.edss(outside, "2019-01-05", 6.5)
    study.build()
    assert edss(study, inside) == (date(2019, 1, 6), 6.5, ">=6.0")
    assert edss(study, outside) == (None, None, "unknown")


def test_edss_earliest_in_the_30_days_after_index_when_none_before(study):
    pid = study.patient(1)
    study.edss(pid, "2018-06-01", 1.0)   # more than 365 days before: ignored
    study.edss(pid, "2020-01-20", 6.0)   # earliest after: chosen
    study.edss(pid, "2020-02-01", 2.0)
    study.build()
    assert edss(study, pid) == (date(2020, 1, 20), 6.0, ">=6.0")


def test_edss_at_exactly_30_days_after_index_counts_31_does_not(study):
    # index + 30 = 2020-02-05 (in), index + 31 = 2020-02-06 (out)
    inside = study.patient(1)
    study.edss(inside, "2020-02-05", 5.5)
    outside = study.patient(2)
    study.edss(outside, "2020-02-06", 5.5)
    study.build()
    assert edss(study, inside) == (date(2020, 2, 5), 5.5, "3.0-5.5")
    assert edss(study, outside) == (None, None, "unknown")


def test_edss_none_is_unknown(study):
    pid = study.patient(1)
    study.build()
    assert edss(study, pid) == (None, None, "unknown")


def test_edss_two_assessments_on_the_same_date_take_the_highest(study):
    pid = study.patient(1)
    study.edss(pid, "2019-11-01", 2.5)
    study.edss(pid, "2019-11-01", 3.0)
    study.build()
    assert edss(study, pid) == (date(2019, 11, 1), 3.0, "3.0-5.5")
    assert study.row("SELECT n_assessments_on_date FROM cohort.baseline_edss WHERE patient_id = ?", pid) == {
        "n_assessments_on_date": 2}


@pytest.mark.parametrize("score, level", [(0.0, "0-2.5"), (2.5, "0-2.5"), (3.0, "3.0-5.5"), (5.5, "3.0-5.5"),
                                          (6.0, ">=6.0"), (10.0, ">=6.0")])
def test_edss_levels(study, score, level):
    pid = study.patient(1)
    study.edss(pid, "2019-10-01", score)
    study.build()
    assert study.cohort_patient(pid)["edss"] == level


# ---------------------------------------------------------------- age group, sex, site, levels

@pytest.mark.parametrize("birth_year, age, group", [(2002, 18, "18-29"), (1991, 29, "18-29"), (1990, 30, "30-39"),
                                                    (1971, 49, "40-49"), (1970, 50, ">=50")])
def test_age_groups(study, birth_year, age, group):
    pid = study.patient(1, birth_year=birth_year)  # index year 2020
    study.build()
    p = study.cohort_patient(pid)
    assert (p["age_at_index"], p["age_group"]) == (age, group)


def test_strata_levels_in_sap_order_with_reference_and_counts(study):
    study.patient(1, site="SE02", sex="M")
    study.patient(2, site="DK01", sex="M")
    study.patient(3, site="DK01", sex="U")
    study.build()
    levels = study.rows("SELECT variable, level, level_order, is_reference, n_patients FROM analysis.strata_levels "
                        "ORDER BY variable_order, level_order")
    by_variable: dict[str, list] = {}
    for r in levels:
        by_variable.setdefault(r["variable"], []).append((r["level"], r["n_patients"]))
    assert list(by_variable) == ["age_group", "sex", "charlson", "prior_dmt", "prior_high_efficacy", "edss", "site"]
    assert by_variable["sex"] == [("F", 0), ("M", 2), ("U", 1)]  # F is the reference even with no patient
    assert by_variable["edss"] == [("0-2.5", 0), ("3.0-5.5", 0), (">=6.0", 0), ("unknown", 3)]
    assert by_variable["site"] == [("DK01", 2), ("SE02", 1)]      # reference: first alphabetically
    references = {r["variable"]: r["level"] for r in levels if r["is_reference"]}
    assert references == {"age_group": "18-29", "sex": "F", "charlson": "0", "prior_dmt": "0",
                          "prior_high_efficacy": "N", "edss": "0-2.5", "site": "DK01"}
