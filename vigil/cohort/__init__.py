"""Build the study cohort and the analysis datasets (SAP sections 1-3) from the staging tables.

`build_cohort` loads the code lists (schema codelists), runs sql/cohort and sql/analysis, and
appends the run's attrition to results.attrition. It runs inside the caller's transaction: no
BEGIN/COMMIT here, so a failure leaves nothing half-built once the caller rolls back.
The definitions themselves are in the SQL files and docs/cohort-definitions.md.
"""

from __future__ import annotations

import re

import duckdb

from vigil.cohort.codelists import load_codelists
from vigil.warehouse.sqlfiles import build_layer, sql_file

COURSES_SQL = sql_file("cohort", "infusion_courses")
_COURSE_GAP = re.compile(r"days_since_previous_infusion\s*>\s*(\d+)")


def course_gap_days() -> int:
    """The gap that starts a new alemtuzumab course: an infusion more than this many days after the previous
    one. Read from the cohort SQL that applies it (sql/cohort/infusion_courses.sql), so the number a run
    records is the number the run used; an edit that the pattern no longer finds is an error, not a guess."""
    text = COURSES_SQL.path.read_text(encoding="utf-8")
    text = re.sub(r"--[^\n]*", "", text)  # the rule as executed, not as described in comments
    found = set(_COURSE_GAP.findall(text))
    if len(found) != 1:
        raise RuntimeError(f"{COURSES_SQL.path.name}: cannot find the one course gap "
                           f"('days_since_previous_infusion > N'), found {sorted(found)}")
    return int(found.pop())


def build_cohort(con: duckdb.DuckDBPyConnection, run_id: int) -> dict:
    """Build codelists.*, cohort.*, analysis.* and add run `run_id` to results.attrition.

    Returns counts for the run log: the attrition, the cohort size, course disagreements,
    outcome events, person-years, the relations built and the code list versions.
    """
    from vigil.analysis import results  # the one writer of results.*

    results.check_run_id(run_id)
    codelists = load_codelists(con)
    relations = build_layer(con, "cohort")
    relations += build_layer(con, "analysis")
    relations.append(results.insert_attrition(con, run_id))

    attrition = [
        {"step": step, "description": description, "n_remaining": n_remaining, "n_excluded": n_excluded}
        for step, description, n_remaining, n_excluded in con.execute(
            "SELECT step, description, n_remaining, n_excluded FROM cohort.attrition ORDER BY step").fetchall()
    ]
    (n_disagreeing_courses, n_disagreeing_patients, n_disagreeing_courses_cohort) = con.execute("""
        SELECT count(*), count(DISTINCT patient_id), count(*) FILTER (WHERE in_cohort)
        FROM cohort.course_disagreements""").fetchone()
    (n_courses,) = con.execute("SELECT count(*) FROM cohort.courses").fetchone()
    events = dict(con.execute("""
        SELECT outcome, count(*) FILTER (WHERE status = 1) FROM analysis.outcomes GROUP BY outcome""").fetchall())
    (serious_episodes, person_years, deaths) = con.execute("""
        SELECT coalesce(sum(n_events), 0), coalesce(sum(person_years), 0.0),
               (SELECT count(*) FROM cohort.patients WHERE died)
        FROM analysis.all_serious""").fetchone()

    return {
        "run_id": run_id,
        "patients_in_deliveries": attrition[0]["n_remaining"],
        "cohort_size": attrition[-1]["n_remaining"],
        "excluded": {row["step"]: row["n_excluded"] for row in attrition},
        "attrition": attrition,
        "courses": n_courses,
        "course_disagreements": n_disagreeing_courses,
        "course_disagreements_in_cohort": n_disagreeing_courses_cohort,
        "patients_with_course_disagreement": n_disagreeing_patients,
        "deaths_in_follow_up": deaths,
        "events": {
            "first_serious": events.get("first_serious", 0),
            "first_opportunistic": events.get("first_opportunistic", 0),
            "all_serious": int(serious_episodes),
        },
        "person_years": float(person_years),
        "relations": relations,
        "codelists": codelists,
    }
