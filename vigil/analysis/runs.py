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
import polars as pl

from vigil import resources, warehouse
from vigil.analysis import results
from vigil.analysis import monitoring
from vigil.analysis.monitoring import SAP_SURVEILLANCE, Surveillance
from vigil.analysis.variants import MAIN, Variant, check_unique, sensitivity_variants

SAP_VERSION = "1.1"  # ../shared/study/analysis-plan.md, "Statistical analysis plan (SAP) v1.1"
# What the main analysis of a run computes (SAP 4 and 7); A12 are the variants.
MAIN_ANALYSES = ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10", "A11", "A13", "A14", "A15"]


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


def analysis_parameters(codelists: dict | None, surveillance: Surveillance = SAP_SURVEILLANCE,
                        variants: list[Variant] = ()) -> dict:
    """Every parameter that changes a number of the run, read from where it is defined (not retyped):
    the SAP days (A3, A4), risk windows (A2), outcomes, stratifiers and multivariable model
    (vigil.analysis.sap), the course gap of the cohort SQL (vigil.cohort.course_gap_days), the SAP
    version, the code-list and reference-rate versions (name -> version; the sha256 are in
    results.runs.codelist_versions), the surveillance of the monitoring (SAP 7: name and settings) and
    each sensitivity analysis's parameters (SAP A12, also in results.variants)."""
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
        "variants": {v.name: v.parameters() for v in variants},
    }


def run_parameters(given: dict | None, codelists: dict | None, surveillance: Surveillance = SAP_SURVEILLANCE,
                   variants: list[Variant] = ()) -> dict:
    """What results.runs.parameters records: the caller's parameters (e.g. paths) and analysis_parameters.
    A caller's key that names an analysis parameter must agree with it (it cannot change it)."""
    recorded = analysis_parameters(codelists, surveillance, variants)
    given = dict(given or {})
    for key in set(given) & set(recorded):
        if json.dumps(given[key], default=str) != json.dumps(recorded[key], default=str):
            raise ValueError(f"parameter {key}={given[key]!r}: the analysis uses {recorded[key]!r}, "
                             "defined in the code, not by the caller")
    return {**given, **recorded}


def resolve_variants(given: list[Variant | str], sites: list[str]) -> list[Variant]:
    """The SAP A12 variants named (leave-one-site-out: one per site) and the Variants given, each once."""
    if any(not isinstance(g, (str, Variant)) for g in given):
        raise TypeError("variants: names of SAP sensitivity analyses or vigil.analysis.variants.Variant")
    names = [g for g in given if isinstance(g, str)]
    variants = sensitivity_variants(names, sites) + [g for g in given if isinstance(g, Variant)]
    check_unique(variants)
    return variants


def record_variants(con: duckdb.DuckDBPyConnection, run_id: int, variants: list[Variant]) -> None:
    """results.variants: the run's main analysis and each sensitivity analysis with its parameters."""
    from vigil.cohort import cohort_parameters

    results.prepare(con, run_id, [results.VARIANTS])
    rows = [{"variant": MAIN, "sensitivity": None, "description": "The SAP's primary analysis.",
             "analyses": json.dumps(MAIN_ANALYSES), "parameters": json.dumps({"cohort": cohort_parameters()})}]
    rows += [{"variant": v.name, "sensitivity": v.sensitivity, "description": v.description,
              "analyses": json.dumps(list(v.analyses)), "parameters": json.dumps(v.parameters())} for v in variants]
    results.insert_frame(con, results.VARIANTS, pl.DataFrame(rows, schema={c: pl.Utf8 for c in rows[0]}), run_id,
                         variant=None)


def analyse(con: duckdb.DuckDBPyConnection, parameters: dict | None = None, flow_run_id: str | None = None,
            earlier_steps: dict[str, float] | None = None, surveillance: Surveillance = SAP_SURVEILLANCE,
            variants: list[Variant | str] | None = None) -> RunSummary:
    """Build cohort, analysis datasets and every results table as run N+1, all or nothing.
    parameters: what the caller wants recorded (e.g. paths), kept beside every parameter that changes a
    number (run_parameters). earlier_steps: timings of what the same flow run did before (the ingest),
    recorded with the run's own. surveillance: the sequential settings of SAP 7 (A14), fixed at its first
    look (vigil.analysis.monitoring). variants: sensitivity analyses (SAP A12, vigil.analysis.variants: a
    name of SENSITIVITY_ANALYSES, or a statistician's own Variant) computed in the same run after the main
    analysis, each under its name in the results tables' column variant; those that change the cohort
    build their datasets apart (vigil.cohort.build_variant_datasets), so cohort.* and analysis.* are built
    once and hold the main analysis's datasets. started_at and finished_at are taken in Python: the start before the
    transaction begins, the end after the last result is written (DuckDB's current_timestamp would be the
    transaction's start)."""
    from vigil.analysis.describe import run_descriptives
    from vigil.analysis.sap import run_analyses, run_variant, strata_levels
    from vigil.cohort import build_cohort

    started_at = datetime.now(timezone.utc)
    steps: dict[str, float] = dict(earlier_steps or {})
    results.create_tables(con, [results.RUNS])  # with the columns an older warehouse lacks
    con.execute("BEGIN")
    run_id = None
    try:
        run_id = results.next_run_id(con)
        given = list(variants or [])
        resolve_variants(given, [])  # a wrong variant is refused before anything is built
        t0 = time.perf_counter()
        cohort = build_cohort(con, run_id)
        steps["cohort"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        analyses = run_analyses(con, run_id)
        deliveries = _current_deliveries(con)
        analyses["descriptives"] = run_descriptives(con, run_id, [int(d["delivery_id"]) for d in deliveries])
        steps["analyses"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        analyses["monitoring"] = monitoring.run_monitoring(con, run_id, deliveries, surveillance)
        steps["monitoring"] = round(time.perf_counter() - t0, 3)  # the look: A13-A15 (SAP 7)
        t0 = time.perf_counter()
        levels = strata_levels(con)
        variants = resolve_variants(given, levels["site"])
        analyses["variants"] = [run_variant(con, run_id, v, levels) for v in variants]
        record_variants(con, run_id, variants)
        recorded_parameters = run_parameters(parameters, cohort.get("codelists"), surveillance, variants)
        steps["variants"] = round(time.perf_counter() - t0, 3)
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
