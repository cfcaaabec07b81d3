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
from vigil.warehouse.sqlfiles import execute_file, sql_file

SAP_VERSION = "1.0"  # ../shared/study/analysis-plan.md, "Statistical analysis plan (SAP) v1.0"
RUNS_SQL = sql_file("results", "runs")


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


def analyse(con: duckdb.DuckDBPyConnection, parameters: dict | None = None, flow_run_id: str | None = None,
            earlier_steps: dict[str, float] | None = None) -> RunSummary:
    """Build cohort, analysis datasets and every results table as run N+1, all or nothing.
    earlier_steps: timings of what the same flow run did before (the ingest), recorded with the run's own."""
    from vigil.analysis.sap import run_analyses
    from vigil.cohort import build_cohort

    started_at = datetime.now(timezone.utc)
    steps: dict[str, float] = dict(earlier_steps or {})
    execute_file(con, RUNS_SQL)
    con.execute("BEGIN")
    try:
        (run_id,) = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM results.runs").fetchone()
        t0 = time.perf_counter()
        cohort = build_cohort(con, run_id)
        steps["cohort"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        analyses = run_analyses(con, run_id)
        steps["analyses"] = round(time.perf_counter() - t0, 3)
        con.execute("""INSERT INTO results.runs VALUES ($run_id, $started, current_timestamp, 'completed',
                       $code, $sap, $codelists, $parameters, $deliveries, $flow_run_id, $steps)""", {
            "run_id": run_id, "started": started_at, "code": code_version(), "sap": SAP_VERSION,
            "codelists": json.dumps(cohort.get("codelists"), default=str),
            "parameters": json.dumps(parameters or {}, default=str),
            "deliveries": json.dumps(_current_deliveries(con), default=str),
            "flow_run_id": flow_run_id, "steps": json.dumps(steps)})
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
