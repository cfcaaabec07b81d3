"""Build the study cohort and the analysis datasets (SAP sections 1-3) from the staging tables.

`build_cohort` loads the code lists (schema codelists), runs sql/cohort and sql/analysis, and
appends the run's attrition to results.attrition. It runs inside the caller's transaction: no
BEGIN/COMMIT here, so a failure leaves nothing half-built once the caller rolls back.
The definitions themselves are in the SQL files and docs/cohort-definitions.md.
"""

from __future__ import annotations

import duckdb

from vigil.cohort.codelists import load_codelists
from vigil.warehouse.sqlfiles import execute_file, build_layer, sql_file

ATTRITION_SQL = sql_file("results", "attrition")


def build_cohort(con: duckdb.DuckDBPyConnection, run_id: int) -> dict:
    """Build codelists.*, cohort.*, analysis.* and add run `run_id` to results.attrition.

    Returns counts for the run log: the attrition, the cohort size, course disagreements,
    outcome events, person-years, the relations built and the code list versions.
    """
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise TypeError(f"run_id must be an integer, not {run_id!r}")
    codelists = load_codelists(con)
    relations = build_layer(con, "cohort")
    relations += build_layer(con, "analysis")
    execute_file(con, ATTRITION_SQL, {"run_id": run_id})
    relations.append(ATTRITION_SQL.qualified_name)

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
