"""Outcomes and analysis datasets (SAP section 2, A2): first events, competing death, recurrent
serious episodes, person-time, and the risk-window split.

Every patient has the default course from INDEX = 2020-01-06 and follow-up to the data cut
2026-06-30 unless stated: t for censored patients = 2026-06-30 - 2020-01-06 + 1 = 2368 days.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from test_cohort import INDEX, Study, course

FULL_T = (date(2026, 6, 30) - date(2020, 1, 6)).days + 1  # 2368


@pytest.fixture
def study() -> Study:
    return Study()


def outcome(study: Study, pid: str, name: str = "first_serious") -> dict:
    return study.row("SELECT event_date, event_id, t, status, person_years FROM analysis.outcomes "
                     "WHERE patient_id = ? AND outcome = ?", pid, name)


def test_full_t_worked_out():
    # 2020-01-06 .. 2026-01-06 = 6 years incl. 2 leap days (2020, 2024) = 2192 days; to 06-30: +175; +1
    assert FULL_T == 2192 + 175 + 1 == 2368


# ---------------------------------------------------------------- first serious infection

def test_event_on_the_index_day_counts_with_t_1(study):
    pid = study.patient(1)
    study.infection(pid, INDEX, event_id="E-IDX")
    study.build()
    assert outcome(study, pid) == {"event_date": date(2020, 1, 6), "event_id": "E-IDX", "t": 1, "status": 1,
                                   "person_years": pytest.approx(1 / 365.25)}


def test_event_on_the_exit_day_counts(study):
    # exit 2022-03-31 (lost to follow-up); t = 2022-03-31 - 2020-01-06 + 1 = 816
    pid = study.patient(1, followup_end="2022-03-31")
    study.infection(pid, "2022-03-31")
    study.build()
    got = outcome(study, pid)
    assert (got["t"], got["status"]) == ((date(2022, 3, 31) - date(2020, 1, 6)).days + 1, 1) == (816, 1)


def test_events_before_index_or_after_exit_do_not_count(study):
    pid = study.patient(1, followup_end="2022-03-31")
    study.infection(pid, "2020-01-05")  # the day before index
    study.infection(pid, "2022-04-01")  # the day after exit
    study.build()
    # censored at exit: t = 816, status 0
    assert outcome(study, pid) == {"event_date": None, "event_id": None, "t": 816, "status": 0,
                                   "person_years": pytest.approx(816 / 365.25)}
    assert study.row("SELECT count(*) AS n FROM analysis.serious_episodes") == {"n": 0}


def test_first_serious_is_the_earliest_serious_event_non_serious_ignored(study):
    pid = study.patient(1)
    study.infection(pid, "2020-03-01", serious="N")
    study.infection(pid, "2020-05-10", event_id="E-B")
    study.infection(pid, "2020-05-10", event_id="E-A")  # same day: the lowest event_id is reported
    study.infection(pid, "2021-01-01")
    study.build()
    got = outcome(study, pid)
    # t = 2020-05-10 - 2020-01-06 + 1 = 26 + 29 + 31 + 30 + 10 = 126 -> (125 days difference) + 1
    assert (got["event_date"], got["event_id"], got["t"], got["status"]) == (date(2020, 5, 10), "E-A", 126, 1)


def test_no_event_is_censored_at_the_data_cut(study):
    pid = study.patient(1)
    study.build()
    assert outcome(study, pid)["t"] == FULL_T and outcome(study, pid)["status"] == 0


# ---------------------------------------------------------------- death as competing status

def test_death_without_the_event_is_status_2(study):
    # died 2021-07-01: t = 2021-07-01 - 2020-01-06 + 1 = 543, status 2 for both outcomes
    pid = study.patient(1, death="2021-07-01")
    study.infection(pid, "2021-06-01", serious="N")  # non-serious, not opportunistic: no event
    study.build()
    assert (outcome(study, pid)["t"], outcome(study, pid)["status"]) == (543, 2)
    assert (outcome(study, pid, "first_opportunistic")["t"], outcome(study, pid, "first_opportunistic")["status"]) == (543, 2)


def test_event_before_death_is_status_1(study):
    pid = study.patient(1, death="2021-07-01")
    study.infection(pid, "2021-06-20")
    study.build()
    assert outcome(study, pid)["status"] == 1


def test_event_on_the_day_of_death_is_status_1(study):
    pid = study.patient(1, death="2021-07-01")
    study.infection(pid, "2021-07-01")
    study.build()
    assert (outcome(study, pid)["t"], outcome(study, pid)["status"]) == (543, 1)


def test_death_after_exit_is_censored_not_competing(study):
    pid = study.patient(1, followup_end="2021-01-01", end_reason="lost_to_follow_up", death="2022-01-01")
    study.build()
    assert outcome(study, pid)["status"] == 0


# ---------------------------------------------------------------- first opportunistic infection

def test_opportunistic_of_any_seriousness_matched_ignoring_case(study):
    pid = study.patient(1)
    study.infection(pid, "2020-02-01", serious="N", pt="Pneumonia")                   # not on the list
    study.infection(pid, "2020-03-01", serious="N", pt="cytomegalovirus INFECTION")   # on the list, non-serious
    study.build()
    got = outcome(study, pid, "first_opportunistic")
    # t = 2020-03-01 - 2020-01-06 + 1 = 25 + 29 + 1 + 1 = 56
    assert (got["event_date"], got["t"], got["status"]) == (date(2020, 3, 1), 56, 1)
    assert outcome(study, pid)["status"] == 0  # neither was serious


def test_outcomes_has_two_rows_per_patient_and_every_stratum(study):
    study.patient(1)
    study.patient(2, sex="M")
    study.build()
    assert study.row("SELECT count(*) AS n FROM analysis.outcomes") == {"n": 4}
    columns = [r["column_name"] for r in study.rows(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'analysis' AND table_name = 'outcomes'")]
    assert {"site", "sex", "age_group", "charlson", "prior_dmt", "prior_high_efficacy", "edss"} <= set(columns)


# ---------------------------------------------------------------- recurrent serious episodes

def test_serious_episodes_are_recurrent_and_person_time_runs_to_exit(study):
    pid = study.patient(1)
    study.infection(pid, INDEX)                       # on the index day
    study.infection(pid, "2020-06-01")
    study.infection(pid, "2020-06-01")                # a second distinct event the same day
    study.infection(pid, "2021-01-01", serious="N")   # not serious
    study.infection(pid, "2026-06-30")                # on the exit day
    study.build()
    assert study.row("SELECT count(*) AS n FROM analysis.serious_episodes WHERE patient_id = ?", pid) == {"n": 4}
    assert study.row("SELECT t, n_events FROM analysis.all_serious WHERE patient_id = ?", pid) == {
        "t": FULL_T, "n_events": 4}  # person-time not stopped by the events


def test_all_serious_person_time_of_a_patient_without_events(study):
    pid = study.patient(1, death="2021-07-01")
    study.build()
    got = study.row("SELECT t, person_years, n_events FROM analysis.all_serious WHERE patient_id = ?", pid)
    assert got == {"t": 543, "person_years": pytest.approx(543 / 365.25), "n_events": 0}


def test_first_serious_is_the_first_serious_episode(study):
    for n in range(1, 6):
        pid = study.patient(n)
        study.infection(pid, (date(2020, 1, 6) + timedelta(days=100 * n)).isoformat())
        study.infection(pid, (date(2020, 1, 6) + timedelta(days=50 * n)).isoformat())
    study.build()
    mismatches = study.rows("""
        SELECT o.patient_id FROM analysis.outcomes AS o
        JOIN (SELECT patient_id, min(onset_date) AS first_onset FROM analysis.serious_episodes GROUP BY 1) AS e
          USING (patient_id)
        WHERE o.outcome = 'first_serious' AND o.event_date IS DISTINCT FROM e.first_onset""")
    assert mismatches == []


# ---------------------------------------------------------------- risk windows

def windows(study: Study, pid: str) -> list[tuple]:
    return [(r["course_number"], r["risk_window"], r["window_start_date"].isoformat(), r["window_end_date"].isoformat(),
             r["days"], r["n_events"])
            for r in study.rows("SELECT * FROM analysis.risk_windows WHERE patient_id = ? "
                                "ORDER BY course_number, window_order", pid)]


def test_risk_window_split_worked_example(study):
    # Course 1 starts 2020-01-06 (day 0), course 2 starts 2021-01-11, exit 2022-06-30.
    # Course 1 runs to 2021-01-10 (the day before course 2): d = 0..370, 371 days.
    #   0-30   2020-01-06..2020-02-05   31 days
    #   31-90  2020-02-06..2020-04-05   60 days (2020 is a leap year: day 90 = 2020-04-05)
    #   91-365 2020-04-06..2021-01-05  275 days (day 365 = 2021-01-05, the leap year has 366 days)
    #   >365   2021-01-06..2021-01-10    5 days
    # Course 2 runs 2021-01-11..2022-06-30: d = 0..535, 536 days.
    #   0-30   2021-01-11..2021-02-10   31 days
    #   31-90  2021-02-11..2021-04-11   60 days
    #   91-365 2021-04-12..2022-01-11  275 days (2021 is not a leap year: day 365 = 2022-01-11)
    #   >365   2022-01-12..2022-06-30  170 days (20 + 28 + 31 + 30 + 31 + 30)
    # Total 371 + 536 = 907 = (2022-06-30 - 2020-01-06) + 1.
    # Events: d=30 of course 1 (2020-02-05) -> 0-30; d=31 (2020-02-06) -> 31-90;
    # 2021-01-10 (last day of course 1, d=370) -> >365 of course 1; 2021-01-11 -> 0-30 of course 2;
    # the exit day 2022-06-30 -> >365 of course 2.
    pid = study.patient(1, followup_end="2022-06-30",
                        infusions=course("2020-01-06", 5, 1) + course("2021-01-11", 3, 2))
    for onset in ("2020-02-05", "2020-02-06", "2021-01-10", "2021-01-11", "2022-06-30"):
        study.infection(pid, onset)
    study.build()
    assert windows(study, pid) == [
        (1, "0-30", "2020-01-06", "2020-02-05", 31, 1),
        (1, "31-90", "2020-02-06", "2020-04-05", 60, 1),
        (1, "91-365", "2020-04-06", "2021-01-05", 275, 0),
        (1, ">365", "2021-01-06", "2021-01-10", 5, 1),
        (2, "0-30", "2021-01-11", "2021-02-10", 31, 1),
        (2, "31-90", "2021-02-11", "2021-04-11", 60, 0),
        (2, "91-365", "2021-04-12", "2022-01-11", 275, 0),
        (2, ">365", "2022-01-12", "2022-06-30", 170, 1),
    ]
    assert sum(w[4] for w in windows(study, pid)) == 907 == study.row(
        "SELECT t FROM analysis.all_serious WHERE patient_id = ?", pid)["t"]


def test_short_follow_up_has_only_the_windows_it_reaches(study):
    # exit on day 40 after index (2020-02-15): 0-30 has 31 days, 31-90 has 10 days (d 31..40)
    pid = study.patient(1, followup_end="2020-02-15")
    study.build()
    assert windows(study, pid) == [(1, "0-30", "2020-01-06", "2020-02-05", 31, 0),
                                   (1, "31-90", "2020-02-06", "2020-02-15", 10, 0)]


def test_a_course_started_after_exit_adds_no_person_time(study):
    # follow-up ends 2020-12-31, a second course on 2021-01-11 is after exit: course 1 only, 361 days
    pid = study.patient(1, followup_end="2020-12-31",
                        infusions=course("2020-01-06", 5, 1) + course("2021-01-11", 3, 2))
    study.build()
    got = windows(study, pid)
    assert {w[0] for w in got} == {1}
    assert sum(w[4] for w in got) == (date(2020, 12, 31) - date(2020, 1, 6)).days + 1 == 361


def test_a_course_split_mid_window_restarts_day_0(study):
    # An infusion on 2020-01-26 is 16 days after 2020-01-10: the same course. The infusion on
    # 2020-03-01 is 35 days after 2020-01-26: a new course, day 0 again.
    # Course 1 follow-up: 2020-01-06..2020-02-29 = 55 days: 0-30 31 days, 31-90 24 days (d 31..54).
    # Course 2 from 2020-03-01, exit 2020-03-10: 0-30 10 days.  Total 65 = (03-10 - 01-06) + 1.
    pid = study.patient(1, followup_end="2020-03-10",
                        infusions=course("2020-01-06", 5, 1) + [("2020-01-26", 1), ("2020-03-01", 2)])
    study.build()
    assert windows(study, pid) == [(1, "0-30", "2020-01-06", "2020-02-05", 31, 0),
                                   (1, "31-90", "2020-02-06", "2020-02-29", 24, 0),
                                   (2, "0-30", "2020-03-01", "2020-03-10", 10, 0)]


@pytest.mark.slow  # a few hundred random patients through the cohort SQL
def test_risk_windows_add_up_to_follow_up_and_hold_each_episode_once_on_random_patients(study):
    # 200 random patients: random courses (gaps of 1 to 800 days), exits, deaths and serious
    # infections (some before index or after exit). For every patient the window days add up to
    # t of all_serious, and every serious episode lies in exactly one window row.
    rng = random.Random(20261125)
    for n in range(1, 201):
        index = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 2500))
        infusions, day, number = [], index, 1
        for _ in range(rng.randrange(1, 8)):
            infusions.append((day.isoformat(), number))
            gap = rng.choice([1, 1, 1, 29, 30, 31, 45, 365, 400, 800])
            number += gap > 30
            day += timedelta(days=gap)
        infusions = [i for i in infusions if i[0] <= "2026-06-30"]
        exit_day = min(index + timedelta(days=rng.randrange(0, 3000)), date(2026, 6, 30))
        died = rng.random() < 0.2
        pid = study.patient(n, infusions=infusions, followup_end=exit_day.isoformat(),
                            death=exit_day.isoformat() if died else None)
        for _ in range(rng.randrange(0, 6)):
            onset = index + timedelta(days=rng.randrange(-20, (exit_day - index).days + 20))
            study.infection(pid, min(onset, date(2026, 6, 30)).isoformat(), serious=rng.choice("YYN"))
    study.build()
    assert study.row("SELECT count(*) AS n FROM cohort.patients") == {"n": 200}
    assert study.rows("""
        SELECT a.patient_id, a.t, sum(w.days) AS days
        FROM analysis.all_serious AS a LEFT JOIN analysis.risk_windows AS w USING (patient_id)
        GROUP BY a.patient_id, a.t HAVING sum(w.days) IS DISTINCT FROM a.t""") == []
    assert study.rows("""
        SELECT e.patient_id, e.event_id, count(w.patient_id) AS n_windows
        FROM analysis.serious_episodes AS e
        LEFT JOIN analysis.risk_windows AS w
          ON w.patient_id = e.patient_id AND e.onset_date BETWEEN w.window_start_date AND w.window_end_date
        GROUP BY e.patient_id, e.event_id HAVING count(w.patient_id) <> 1""") == []
    # the windows' event counts agree with the episodes, and with all_serious
    totals = study.row("""SELECT (SELECT sum(n_events) FROM analysis.risk_windows) AS in_windows,
                                 (SELECT count(*) FROM analysis.serious_episodes) AS episodes,
                                 (SELECT sum(n_events) FROM analysis.all_serious) AS all_serious""")
    assert totals["in_windows"] == totals["episodes"] == totals["all_serious"] > 0
    # windows never overlap and each starts the day after the previous one ends
    assert study.rows("""
        SELECT patient_id FROM (
            SELECT patient_id, window_start_date,
                   lag(window_end_date) OVER (PARTITION BY patient_id ORDER BY window_start_date) AS previous_end
            FROM analysis.risk_windows)
        WHERE previous_end IS NOT NULL AND window_start_date <> previous_end + 1""") == []
