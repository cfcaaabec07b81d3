"""Build the study cohort and the analysis datasets (SAP sections 1-3) from the staging tables.

`build_cohort` loads the code lists (schema codelists), runs sql/cohort and sql/analysis, and
appends the run's attrition to results.attrition. It runs inside the caller's transaction: no
BEGIN/COMMIT here, so a failure leaves nothing half-built once the caller rolls back.
The definitions themselves are in the SQL files and docs/cohort-definitions.md.
"""

from __future__ import annotations

import duckdb

from vigil.cohort.codelists import load_codelists
from vigil.warehouse.sqlfiles import build_apart, build_layer

# The parameters of the cohort SQL ($name in sql/cohort and sql/analysis), as the SAP sets them. A
# sensitivity analysis (vigil.analysis.variants) builds the cohort again with some of them changed.
COHORT_PARAMETERS = {
    "course_gap_days": 30,       # SAP 1: a new course at an infusion more than 30 days after the previous
    "censor_at_switch": False,   # SAP A12(a): follow-up also ends at the start of another DMT after index
}


def course_gap_days() -> int:
    """The SAP's course gap: an infusion more than this many days after the previous one starts a course."""
    return COHORT_PARAMETERS["course_gap_days"]


def cohort_parameters(changes: dict | None = None) -> dict:
    """The SAP's cohort parameters with `changes` applied; a name the cohort SQL does not know is refused."""
    unknown = set(changes or {}) - set(COHORT_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown cohort parameter(s) {sorted(unknown)}: the cohort SQL takes "
                         f"{sorted(COHORT_PARAMETERS)}")
    for name, value in (changes or {}).items():
        if type(value) is not type(COHORT_PARAMETERS[name]):
            raise TypeError(f"cohort parameter {name} must be {type(COHORT_PARAMETERS[name]).__name__}, "
                            f"not {value!r}")
    if (changes or {}).get("course_gap_days", 1) < 1:
        raise ValueError(f"course_gap_days must be at least 1 day, not {changes['course_gap_days']}")
    return {**COHORT_PARAMETERS, **(changes or {})}


def build_layers(con: duckdb.DuckDBPyConnection, parameters: dict | None = None) -> list[str]:
    """Build cohort.* and analysis.* (from staging and codelists) with the given cohort parameters, default the SAP's."""
    parameters = parameters or COHORT_PARAMETERS
    return build_layer(con, "cohort", parameters) + build_layer(con, "analysis", parameters)


# What a sensitivity analysis reads (vigil.analysis.sap.run_variant).
ANALYSIS_DATASETS = ("analysis.outcomes", "analysis.risk_windows")


def build_variant_datasets(con: duckdb.DuckDBPyConnection, changes: dict) -> dict[str, str]:
    """The analysis datasets (ANALYSIS_DATASETS) with the cohort parameters `changes`, built apart from the
    main analysis's after it: only the relations downstream of a changed parameter are built again, as
    temporary tables (e.g. for the course gap: infusion_courses, courses, patients and what reads them;
    for censoring at a switch: patients onwards), and cohort.* and analysis.* stay the main analysis's.
    Returns dataset -> the relation that holds it; vigil.warehouse.sqlfiles.drop_apart drops them."""
    parameters = cohort_parameters(changes)
    changed = {name for name, value in parameters.items() if value != COHORT_PARAMETERS[name]}
    return build_apart(con, ["cohort", "analysis"], parameters, changed, list(ANALYSIS_DATASETS))


def build_cohort(con: duckdb.DuckDBPyConnection, run_id: int) -> dict:
    """Build codelists.*, cohort.*, analysis.* and add run `run_id` to results.attrition.

    Returns counts for the run log: the attrition, the cohort size, course disagreements,
    outcome events, person-years, the relations built and the code list versions.
    """
    from vigil.analysis import results  # the one writer of results.*

    results.check_run_id(run_id)
    codelists = load_codelists(con)
    relations = build_layers(con)
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
