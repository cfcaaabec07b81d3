"""An analysis run (results.runs.run_id): cohort, analysis datasets and results in one transaction.

Not to be confused with a Prefect flow run (results.runs.flow_run_id records the one that made it)
or the `vigil run` command (the study flow: ingest, analyse, publish, report).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from vigil import resources, warehouse
from vigil.analysis import results
from vigil.analysis import monitoring
from vigil.analysis.monitoring import SAP_SURVEILLANCE, Surveillance

SAP_VERSION = "1.0"  # ../shared/study/analysis-plan.md, "Statistical analysis plan (SAP) v1.0"


@dataclass
class RunSummary:
    run_id: int
    cohort: dict
    analyses: dict
    step_seconds: dict[str, float] = field(default_factory=dict)
    snapshot: Path | None = None


def code_version() -> str:
    """git describe of the checkout when there is one (with -dirty for local changes), else the package version."""
    if not resources.in_checkout():
        return _package_version()
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=resources.CHECKOUT,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return _package_version()


def _package_version() -> str:
    from importlib.metadata import version

    return version("vigil")


def _current_deliveries(con: duckdb.DuckDBPyConnection) -> list[dict]:
    rows = con.execute("""
        SELECT delivery_id, site_id, data_cut, created_at, file_hashes FROM audit.deliveries
        WHERE status = 'accepted' ORDER BY site_id""").fetchall()
    return [{"delivery_id": d, "site_id": s, "data_cut": str(c), "created_at": str(t), "file_hashes": dict(h)}
            for d, s, c, t, h in rows]


def analysis_parameters(codelists: dict | None, surveillance: Surveillance = SAP_SURVEILLANCE) -> dict:
    """Every parameter that changes a number of the run, read from where it is defined (not retyped):
    the SAP days (A3, A4), risk windows (A2), outcomes, stratifiers and multivariable model
    (vigil.analysis.sap), the course gap of the cohort SQL (vigil.cohort.course_gap_days), the SAP
    version, the code-list and reference-rate versions (name -> version; the sha256 are in
    results.runs.codelist_versions) and the surveillance of the monitoring (SAP 7: name and settings)."""
    from vigil.analysis import sap
    from vigil.cohort import course_gap_days

    return {
        "sap_version": SAP_VERSION,
        "days": list(sap.DAYS),
        "risk_windows": list(sap.RISK_WINDOWS),
        "course_gap_days": course_gap_days(),
        "incidence_outcomes": list(sap.INCIDENCE_OUTCOMES),
        "first_event_outcomes": list(sap.FIRST_EVENT_OUTCOMES),
        "stratifiers": list(sap.STRATIFIERS),
        "multivariable": list(sap.MULTIVARIABLE),
        "codelists": {name: (info or {}).get("version") for name, info in sorted((codelists or {}).items())},
        "surveillance": {"name": surveillance.name, **surveillance.settings},
    }


def run_parameters(given: dict | None, codelists: dict | None, surveillance: Surveillance = SAP_SURVEILLANCE) -> dict:
    """What results.runs.parameters records: the caller's parameters (e.g. paths) and analysis_parameters.
    A caller's key that names an analysis parameter must agree with it (it cannot change it)."""
    recorded = analysis_parameters(codelists, surveillance)
    given = dict(given or {})
    for key in set(given) & set(recorded):
        if json.dumps(given[key], default=str) != json.dumps(recorded[key], default=str):
            raise ValueError(f"parameter {key}={given[key]!r}: the analysis uses {recorded[key]!r}, "
                             "defined in the code, not by the caller")
    return {**given, **recorded}


def analyse(con: duckdb.DuckDBPyConnection, parameters: dict | None = None, flow_run_id: str | None = None,
            earlier_steps: dict[str, float] | None = None, surveillance: Surveillance = SAP_SURVEILLANCE) -> RunSummary:
    """Build cohort, analysis datasets and every results table as run N+1, all or nothing.
    parameters: what the caller wants recorded (e.g. paths), kept beside every parameter that changes a
    number (run_parameters). earlier_steps: timings of what the same flow run did before (the ingest),
    recorded with the run's own. surveillance: the sequential settings of SAP 7 (A14), fixed at its first
    look (vigil.analysis.monitoring). started_at and finished_at are taken in Python: the start before the
    transaction begins, the end after the last result is written (DuckDB's current_timestamp would be the
    transaction's start)."""
    from vigil.analysis.describe import run_descriptives
    from vigil.analysis.sap import run_analyses
    from vigil.cohort import build_cohort

    started_at = datetime.now(timezone.utc)
    steps: dict[str, float] = dict(earlier_steps or {})
    results.create_tables(con, [results.RUNS])  # with the columns an older warehouse lacks
    con.execute("BEGIN")
    run_id = None
    try:
        run_id = results.next_run_id(con)
        t0 = time.perf_counter()
        cohort = build_cohort(con, run_id)
        steps["cohort"] = round(time.perf_counter() - t0, 3)
        recorded_parameters = run_parameters(parameters, cohort.get("codelists"), surveillance)
        t0 = time.perf_counter()
        analyses = run_analyses(con, run_id)
        deliveries = _current_deliveries(con)
        analyses["descriptives"] = run_descriptives(con, run_id, [int(d["delivery_id"]) for d in deliveries])
        steps["analyses"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        analyses["monitoring"] = monitoring.run_monitoring(con, run_id, deliveries, surveillance)
        steps["monitoring"] = round(time.perf_counter() - t0, 3)  # the look: A13-A15 (SAP 7)
        results.insert_run(con, {
            "run_id": run_id, "started_at": started_at, "finished_at": datetime.now(timezone.utc),
            "status": "completed", "code_version": code_version(), "sap_version": SAP_VERSION,
            "codelist_versions": json.dumps(cohort.get("codelists"), default=str),
            "parameters": json.dumps(recorded_parameters, default=str),
            "deliveries": json.dumps(deliveries, default=str),
            "flow_run_id": flow_run_id, "step_seconds": json.dumps(steps)})
        con.execute("COMMIT")
    except duckdb.Error as exc:  # e.g. disk full: a named failure; the previous run's results stay
        warehouse.rollback(con)
        if damage := warehouse.damage_on(con, exc):  # a block that cannot be read: the file, not the run
            raise damage from exc
        raise warehouse.LoadFailed(f"run {run_id}: the analysis failed and was rolled back, no result of it was "
                                   f"kept ({warehouse.error_line(exc)})") from exc
    except BaseException:
        warehouse.rollback(con)
        raise
    kept = con.execute("SELECT count(*) FROM results.runs WHERE run_id = ?", [run_id]).fetchone()[0]
    if kept != 1:
        raise warehouse.LoadFailed(f"run {run_id}: the warehouse did not keep the results (commit lost)")
    con.execute("CHECKPOINT")
    return RunSummary(run_id, cohort, analyses, steps)
