"""The cohort (SAP section 1): index date, courses, exit date, attrition; results.attrition; comments.

Tiny hand-made patients are inserted straight into the staging tables of an in-memory DuckDB.
`Study` (also used by tests/test_cohort_*.py) builds them; expected values are worked out in
the comments. Dates are whole days; t and follow-up include the index day and the exit day.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import duckdb
import pytest

from vigil.cohort import build_cohort
from vigil.contract import ddl_for_layer, load_contract
from vigil.resources import SQL_DIR
from vigil.warehouse.sqlfiles import build_layer

CUT = "2026-06-30"
INDEX = "2020-01-06"


def d(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def course(start: str, n_days: int, number: int) -> list[tuple[str, int]]:
    """A course of n_days consecutive infusion days from start, recorded by the site as `number`."""
    return [((d(start) + timedelta(days=i)).isoformat(), number) for i in range(n_days)]


class Study:
    """An in-memory warehouse with the staging tables; each method adds hand-made rows."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        for statement in ddl_for_layer(load_contract(), "staging"):
            self.con.execute(statement)
        build_layer(self.con, "audit")
        self._line = 1
        self._events = 0

    def _insert(self, table: str, site: str, data_cut: str, **values) -> None:
        self._line += 1
        row = {"delivery_id": sum(map(ord, site)), "site_id": site, "data_cut": d(data_cut),
               "source_file": f"{table}.csv", "line_number": self._line, **values}
        columns = ", ".join(row)
        self.con.execute(f"INSERT INTO staging.{table} ({columns}) VALUES ({', '.join('?' for _ in row)})",
                         list(row.values()))

    def patient(self, n: int, *, site: str = "DK01", sex: str = "F", birth_year: int = 1980,
                ms_course: str = "RRMS", data_cut: str = CUT, infusions: list | None = None,
                followup_end: str | None = None, end_reason: str | None = None, death: str | None = None) -> str:
        """Add a patient with follow_up row and infusions (default: one 5-day course from INDEX).

        followup_end defaults to the death date, else the data cut; end_reason follows from it.
        """
        pid = f"{site}-{n:08X}"
        self._insert("patients", site, data_cut, patient_id=pid, sex=sex, birth_year=birth_year,
                     ms_onset_year=None, ms_course=ms_course)
        followup_end = followup_end or death or data_cut
        if end_reason is None:
            end_reason = "death" if death == followup_end else "data_cut" if followup_end == data_cut else "lost_to_follow_up"
        self._insert("follow_up", site, data_cut, patient_id=pid, followup_end_date=d(followup_end),
                     end_reason=end_reason, death_date=d(death) if death else None)
        for infusion_date, number in (course(INDEX, 5, 1) if infusions is None else infusions):
            self._insert("alemtuzumab_infusions", site, data_cut, patient_id=pid, infusion_date=d(infusion_date),
                         course_number=number, dose_mg=12.0)
        return pid

    def _site(self, pid: str) -> tuple[str, str]:
        return self.con.execute("SELECT site_id, CAST(data_cut AS VARCHAR) FROM staging.patients WHERE patient_id = ?",
                                [pid]).fetchone()

    def infection(self, pid: str, onset: str, *, serious: str = "Y", pt: str = "Pneumonia",
                  event_id: str | None = None) -> str:
        self._events += 1
        event_id = event_id or f"E{self._events}"
        site, cut = self._site(pid)
        self._insert("infections", site, cut, patient_id=pid, event_id=event_id, onset_date=d(onset), meddra_pt=pt,
                     meddra_pt_code=None, serious=serious,
                     seriousness_criteria="hospitalisation" if serious == "Y" else None, pathogen=None,
                     outcome="recovered")
        return event_id

    def diagnosis(self, pid: str, code: str, diagnosis_date: str | None = None) -> None:
        site, cut = self._site(pid)
        self._insert("comorbidities", site, cut, patient_id=pid, icd10_code=code,
                     diagnosis_date=d(diagnosis_date) if diagnosis_date else None)

    def dmt(self, pid: str, code: str, start: str, stop: str | None = None) -> None:
        site, cut = self._site(pid)
        self._insert("dmt_history", site, cut, patient_id=pid, dmt_code=code, start_date=d(start),
                     stop_date=d(stop) if stop else None)

    def edss(self, pid: str, assessment_date: str, score: float) -> None:
        site, cut = self._site(pid)
        self._insert("edss_assessments", site, cut, patient_id=pid, assessment_date=d(assessment_date), edss=score)

    def build(self, run_id: int = 1) -> dict:
        self.con.execute("BEGIN")
        result = build_cohort(self.con, run_id)
        self.con.execute("COMMIT")
        return result

    def rows(self, sql: str, *params) -> list[dict]:
        cursor = self.con.execute(sql, list(params))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, r)) for r in cursor.fetchall()]

    def row(self, sql: str, *params) -> dict:
        rows = self.rows(sql, *params)
        assert len(rows) == 1, rows
        return rows[0]

    def cohort_patient(self, pid: str) -> dict:
        return self.row("SELECT * FROM cohort.patients WHERE patient_id = ?", pid)


@pytest.fixture
def study() -> Study:
    return Study()


# ---------------------------------------------------------------- index date and courses

def test_index_date_is_the_first_valid_infusion(study):
    # infusions inserted out of order; the earliest (2020-01-06) is the index date
    pid = study.patient(1, infusions=[("2020-01-08", 1), ("2020-01-06", 1), ("2020-01-07", 1)])
    study.build()
    assert study.cohort_patient(pid)["index_date"] == date(2020, 1, 6)


def test_retreatment_more_than_30_days_later_starts_a_new_course(study):
    # course 1: 5 days from 2020-01-06; course 2: 3 days from 2021-01-11 (about 12 months later);
    # a retreatment (course 3) on 2022-03-01. The site's numbers agree: no disagreement.
    pid = study.patient(1, infusions=course("2020-01-06", 5, 1) + course("2021-01-11", 3, 2) + [("2022-03-01", 3)])
    result = study.build()
    courses = study.rows("SELECT course_number, course_start_date, course_end_date, n_infusions, next_course_start_date "
                         "FROM cohort.courses WHERE patient_id = ? ORDER BY course_number", pid)
    assert courses == [
        {"course_number": 1, "course_start_date": date(2020, 1, 6), "course_end_date": date(2020, 1, 10),
         "n_infusions": 5, "next_course_start_date": date(2021, 1, 11)},
        {"course_number": 2, "course_start_date": date(2021, 1, 11), "course_end_date": date(2021, 1, 13),
         "n_infusions": 3, "next_course_start_date": date(2022, 3, 1)},
        {"course_number": 3, "course_start_date": date(2022, 3, 1), "course_end_date": date(2022, 3, 1),
         "n_infusions": 1, "next_course_start_date": None},
    ]
    assert study.cohort_patient(pid)["n_courses"] == 3
    assert result["courses"] == 3 and result["course_disagreements"] == 0


def test_gap_of_exactly_30_days_stays_in_the_course_31_days_starts_a_new_one(study):
    # 2020-01-06 -> 2020-02-05 is 30 days: same course; 2020-02-05 -> 2020-03-07 is 31 days: new course
    pid = study.patient(1, infusions=[("2020-01-06", 1), ("2020-02-05", 1), ("2020-03-07", 2)])
    study.build()
    got = study.rows("SELECT infusion_date, days_since_previous_infusion, starts_course, course_number "
                     "FROM cohort.infusion_courses WHERE patient_id = ? ORDER BY infusion_date", pid)
    assert [(r["days_since_previous_infusion"], r["starts_course"], r["course_number"]) for r in got] == [
        (None, True, 1), (30, False, 1), (31, True, 2)]


def test_site_course_number_that_disagrees_is_reported_not_corrected(study):
    # The site calls the 2021 retreatment course 1 again (it restarted its numbering) and splits
    # the first course: day 5 recorded as course 2. Derived: 1,1,1,1,1 then 2,2,2.
    pid = study.patient(1, infusions=course("2020-01-06", 4, 1) + [("2020-01-10", 2)] + course("2021-01-11", 3, 1))
    result = study.build()
    infusions = study.rows("SELECT course_number, site_course_number, course_number_disagrees "
                           "FROM cohort.infusion_courses WHERE patient_id = ? ORDER BY infusion_date", pid)
    assert [r["course_number"] for r in infusions] == [1, 1, 1, 1, 1, 2, 2, 2]  # derived, not the site's
    assert [r["site_course_number"] for r in infusions] == [1, 1, 1, 1, 2, 1, 1, 1]  # kept as delivered
    assert [r["course_number_disagrees"] for r in infusions] == [False] * 4 + [True] * 4
    report = study.rows("SELECT course_number, site_course_numbers, n_infusions, n_infusions_disagreeing, in_cohort "
                        "FROM cohort.course_disagreements WHERE patient_id = ? ORDER BY course_number", pid)
    assert report == [
        {"course_number": 1, "site_course_numbers": "1,2", "n_infusions": 5, "n_infusions_disagreeing": 1, "in_cohort": True},
        {"course_number": 2, "site_course_numbers": "1", "n_infusions": 3, "n_infusions_disagreeing": 3, "in_cohort": True},
    ]
    assert result["course_disagreements"] == 2 and result["patients_with_course_disagreement"] == 1


def test_course_disagreement_of_an_excluded_patient_is_reported_with_in_cohort_false(study):
    pid = study.patient(1, ms_course="SPMS", infusions=[("2020-01-06", 2)])
    result = study.build()
    assert study.row("SELECT in_cohort FROM cohort.course_disagreements WHERE patient_id = ?", pid) == {"in_cohort": False}
    assert result["course_disagreements"] == 1 and result["course_disagreements_in_cohort"] == 0


# ---------------------------------------------------------------- exit date

def test_exit_at_followup_end_when_lost_to_follow_up(study):
    # exit = min(2023-03-31, no death, 2026-06-30) = 2023-03-31; follow-up = 2023-03-31 - 2020-01-06 + 1 = 1181 days
    pid = study.patient(1, followup_end="2023-03-31")
    study.build()
    p = study.cohort_patient(pid)
    assert (p["exit_date"], p["exit_reason"], p["died"]) == (date(2023, 3, 31), "followup_end", False)
    assert p["follow_up_days"] == (date(2023, 3, 31) - date(2020, 1, 6)).days + 1 == 1181
    assert p["person_years"] == pytest.approx(1181 / 365.25)


def test_exit_at_death(study):
    # end_reason death, death_date = followup_end_date = 2022-02-02: exit 2022-02-02, died
    pid = study.patient(1, death="2022-02-02")
    study.build()
    p = study.cohort_patient(pid)
    assert (p["exit_date"], p["exit_reason"], p["died"]) == (date(2022, 2, 2), "death", True)


def test_exit_at_death_before_a_later_followup_end(study):
    # end_reason other with followup_end 2024-01-01 but a death on 2023-05-05: exit is the death
    pid = study.patient(1, followup_end="2024-01-01", end_reason="other", death="2023-05-05")
    study.build()
    p = study.cohort_patient(pid)
    assert (p["exit_date"], p["exit_reason"], p["died"]) == (date(2023, 5, 5), "death", True)


def test_exit_at_data_cut(study):
    # follow-up to the data cut: exit = data cut 2026-06-30
    pid = study.patient(1)
    # and a (contract-breaking) followup_end after the cut is still capped at the cut
    pid2 = study.patient(2, followup_end="2026-12-31", end_reason="other")
    study.build()
    assert study.cohort_patient(pid)["exit_date"] == date(2026, 6, 30)
    p2 = study.cohort_patient(pid2)
    assert (p2["exit_date"], p2["exit_reason"]) == (date(2026, 6, 30), "data_cut")


def test_death_after_the_end_of_follow_up_is_not_a_death_in_follow_up(study):
    # lost on 2023-01-01, death later recorded on 2024-06-01: exit 2023-01-01, censored (died false)
    pid = study.patient(1, followup_end="2023-01-01", end_reason="lost_to_follow_up", death="2024-06-01")
    study.build()
    p = study.cohort_patient(pid)
    assert (p["exit_date"], p["died"]) == (date(2023, 1, 1), False)


# ---------------------------------------------------------------- attrition

def test_attrition_counts_each_step_in_the_sap_order(study):
    study.patient(1)                                          # kept
    study.patient(2, sex="M")                                 # kept
    study.patient(3, infusions=[])                            # step 2: no infusion
    study.patient(4, ms_course="SPMS")                        # step 3
    study.patient(5, ms_course="CIS")                         # step 3
    study.patient(6, birth_year=2003)                         # step 4: 2020 - 2003 = 17
    study.patient(7, followup_end="2020-01-05")               # step 5: follow-up ended the day before index
    result = study.build()
    # 7 patients; 7-1=6; 6-2=4; 4-1=3; 3-1=2
    assert study.rows("SELECT step, n_remaining, n_excluded FROM cohort.attrition ORDER BY step") == [
        {"step": 1, "n_remaining": 7, "n_excluded": 0},
        {"step": 2, "n_remaining": 6, "n_excluded": 1},
        {"step": 3, "n_remaining": 4, "n_excluded": 2},
        {"step": 4, "n_remaining": 3, "n_excluded": 1},
        {"step": 5, "n_remaining": 2, "n_excluded": 1},
    ]
    assert result["cohort_size"] == 2 and result["patients_in_deliveries"] == 7
    assert result["excluded"] == {1: 0, 2: 1, 3: 2, 4: 1, 5: 1}
    assert study.rows("SELECT patient_id FROM cohort.patients ORDER BY 1") == [
        {"patient_id": "DK01-00000001"}, {"patient_id": "DK01-00000002"}]


def test_attrition_step_1_counts_patient_rows_quarantined_in_current_deliveries(study):
    study.patient(1)
    # Two patient rows of the current DK01 delivery were quarantined, one of a superseded delivery was too.
    study.con.execute("""INSERT INTO audit.delivery_receipts (delivery_id, site_id, data_cut, created_at, folder, status)
        VALUES (1, 'DK01', DATE '2025-12-31', TIMESTAMPTZ '2026-01-02 00:00:00+00', 'a', 'accepted'),
               (2, 'DK01', DATE '2026-06-30', TIMESTAMPTZ '2026-07-02 00:00:00+00', 'b', 'accepted')""")
    for delivery_id, line in ((1, 5), (2, 3), (2, 4)):
        study.con.execute("""INSERT INTO audit.quarantine VALUES (?, 'patients', 'DK01', DATE '2026-06-30',
            'patients.csv', ?, 'sex', 'not_in_code_list', 'patients.sex.not_in_code_list.1', [], '{}')""",
                          [delivery_id, line])
    study.build()
    assert study.rows("SELECT n_remaining, n_excluded FROM cohort.attrition WHERE step = 1") == [
        {"n_remaining": 1, "n_excluded": 2}]


def test_a_patient_failing_several_steps_is_excluded_at_the_first(study):
    # SPMS, 16 years old and follow-up ended before index: counted once, at step 3
    pid = study.patient(1, ms_course="SPMS", birth_year=2004, followup_end="2019-12-31")
    study.build()
    assert study.row("SELECT excluded_at_step, exclusion_reason FROM cohort.eligibility WHERE patient_id = ?", pid) == {
        "excluded_at_step": 3, "exclusion_reason": "ms_course is not RRMS"}
    assert study.rows("SELECT n_excluded FROM cohort.attrition ORDER BY step") == [
        {"n_excluded": n} for n in (0, 0, 1, 0, 0)]


def test_age_at_index_uses_the_year_only_18_is_kept(study):
    # index 2020-01-06; born 2002 -> 2020 - 2002 = 18 (kept, though perhaps 17 on the day); born 2003 -> 17
    kept = study.patient(1, birth_year=2002)
    study.patient(2, birth_year=2003)
    study.build()
    assert study.cohort_patient(kept)["age_at_index"] == 18
    assert study.row("SELECT count(*) AS n FROM cohort.patients") == {"n": 1}


def test_follow_up_ending_on_the_index_day_is_kept_with_one_day(study):
    # step 5 keeps exit = index: follow-up 1 day
    pid = study.patient(1, followup_end=INDEX)
    study.build()
    assert study.cohort_patient(pid)["follow_up_days"] == 1


def test_attrition_by_site(study):
    study.patient(1, site="DK01")
    study.patient(2, site="SE02", ms_course="PPMS")
    study.build()
    assert study.rows("SELECT site_id, n_remaining, n_excluded FROM cohort.attrition_by_site "
                      "WHERE step IN (1, 3) ORDER BY site_id, step") == [
        {"site_id": "DK01", "n_remaining": 1, "n_excluded": 0},
        {"site_id": "DK01", "n_remaining": 1, "n_excluded": 0},
        {"site_id": "SE02", "n_remaining": 1, "n_excluded": 0},
        {"site_id": "SE02", "n_remaining": 0, "n_excluded": 1},
    ]


def test_empty_staging_gives_five_attrition_steps_of_zero(study):
    result = study.build()
    assert [(r["step"], r["n_remaining"], r["n_excluded"]) for r in result["attrition"]] == [
        (s, 0, 0) for s in range(1, 6)]


# ---------------------------------------------------------------- results.attrition and the build

def test_results_attrition_rows_carry_the_run_id_and_runs_accumulate(study):
    study.patient(1)
    study.patient(2, ms_course="SPMS")
    study.build(run_id=7)
    study.build(run_id=8)
    got = study.rows("SELECT run_id, step, description, n_remaining, n_excluded FROM results.attrition "
                     "ORDER BY run_id, step")
    assert [(r["run_id"], r["step"]) for r in got] == [(run, s) for run in (7, 8) for s in range(1, 6)]
    assert got[2] == {"run_id": 7, "step": 3, "description": "MS course RRMS", "n_remaining": 1, "n_excluded": 1}


def test_results_attrition_refuses_a_second_insert_of_the_same_run(study):
    study.build(run_id=1)
    study.con.execute("BEGIN")
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        build_cohort(study.con, 1)
    study.con.execute("ROLLBACK")
    assert study.row("SELECT count(*) AS n FROM results.attrition") == {"n": 5}


def test_build_runs_inside_the_callers_transaction(study):
    study.patient(1)
    study.con.execute("BEGIN")
    build_cohort(study.con, 1)
    study.con.execute("ROLLBACK")  # nothing of the build survives: it did not commit on its own
    assert study.con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name IN "
                             "('cohort', 'analysis', 'results', 'codelists')").fetchone() == (0,)


def test_run_id_must_be_an_integer(study):
    with pytest.raises(TypeError):
        build_cohort(study.con, "1")


def test_build_returns_the_relations_and_code_list_versions(study):
    result = study.build()
    assert {"cohort.patients", "cohort.attrition", "cohort.course_disagreements", "analysis.outcomes",
            "analysis.serious_episodes", "analysis.all_serious", "analysis.risk_windows",
            "results.attrition"} <= set(result["relations"])
    assert set(result["codelists"]) == {"charlson_quan2005_icd10", "dmt_classes", "opportunistic_terms", "reference_rates", "strata"}
    assert all(v["version"] and len(v["sha256"]) == 64 for v in result["codelists"].values())


# ---------------------------------------------------------------- documentation in the database

def test_every_relation_and_every_column_has_a_comment(study):
    study.build()
    schemas = ("cohort", "analysis", "results", "codelists")
    tables = study.rows("SELECT schema_name, table_name, comment FROM duckdb_tables() WHERE schema_name IN ?",
                        list(schemas))
    assert len(tables) >= 19
    assert [t for t in tables if not (t["comment"] or "").strip()] == []
    columns = study.rows("SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
                         "WHERE schema_name IN ?", list(schemas))
    assert [c for c in columns if not (c["comment"] or "").strip()] == []


@pytest.mark.parametrize("path", sorted(
    [p for layer in ("cohort", "analysis") for p in (SQL_DIR / layer).glob("*.sql")]
    + [SQL_DIR / "results" / "attrition.sql"]), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_sql_file_has_a_header_naming_its_relation_grain_and_sap_section(path):
    text = path.read_text(encoding="utf-8")
    header = text.split("CREATE", 1)[0]
    assert header.startswith(f"-- {path.parent.name}.{path.stem}\n")
    assert "Purpose:" in header and "Grain:" in header and re.search(r"SAP \d", header)
    assert f"COMMENT ON TABLE {path.parent.name}.{path.stem} IS" in text
