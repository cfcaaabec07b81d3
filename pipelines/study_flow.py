"""The study pipeline: ingest every new delivery -> analyse -> publish the read-only snapshot."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from pipelines.ingest_flow import EXPECTED, expected_failures, ingest_flow, say
from vigil import progress, warehouse
from vigil.inert import inert
from vigil.report import ReportError, ReportResult, render_report
from vigil.analysis.monitoring import alert, look_history
from vigil.analysis.runs import RunSummary, analyse
from vigil.analysis.variants import SENSITIVITY_ANALYSES
from vigil.warehouse.snapshots import publish_snapshot

if ReportError not in EXPECTED:
    EXPECTED.append(ReportError)


@task(name="analyse", cache_policy=NO_CACHE)
def analyse_task(db_path: Path, parameters: dict, earlier_steps: dict[str, float]) -> RunSummary:
    """The main analysis and every SAP A12 sensitivity analysis, as one run."""
    with warehouse.connect(db_path) as con:
        summary = analyse(con, parameters, str(runtime.flow_run.id or "") or None, earlier_steps,
                          variants=list(SENSITIVITY_ANALYSES))
    say(get_run_logger().info, "run %d: %d patients in the cohort, %d first serious infections, %.0f person-years",
        summary.run_id, summary.cohort["cohort_size"], summary.cohort["events"]["first_serious"],
        summary.cohort["person_years"])
    return summary


@task(name="report", cache_policy=NO_CACHE)
def report_task(db_path: Path, out_dir: Path, run_id: int) -> ReportResult:
    try:
        result = render_report(db_path, out_dir, run_id)
    except duckdb.Error as exc:  # a block of the warehouse that cannot be read: its damage, not the report's
        if (damage := warehouse.damage(exc, db_path)) is None:
            raise
        raise damage from exc
    say(get_run_logger().info, "report of run %d: %s (%d PDF pages, %d tables)", run_id, result.html,
        result.pages, len(result.tables))
    return result


@task(name="safety monitoring", cache_policy=NO_CACHE)
def monitoring_task(db_path: Path, run_id: int) -> dict | None:
    """SAP 7 in Prefect: the look table as a flow-run artifact, and when the look is in signal the event
    vigil.monitoring.signal (an automation notifies on it: docs/monitoring.md) and a warning in the log. The
    flow run completes: a signal is a finding, not a failure."""
    with warehouse.connect(db_path) as con:
        look, history = look_history(con, run_id)
    if look is None:
        return None
    found = alert(look, history)
    create_table_artifact(found["table"], key="safety-monitoring", description=inert(found["message"]))
    if found["event"]:
        emit_event(**found["event"])
        say(get_run_logger().warning, "SAFETY SIGNAL (SAP A14): %s", found["message"])
    else:
        say(get_run_logger().info, "safety monitoring: %s", found["message"])
    return found


def _file_system_error(task, task_run, state) -> bool:
    """Retry only what can be repeated safely: a failed file copy (the snapshot appears only by an atomic
    rename). Never a refusal, a validation failure or a failed analysis: those are answers."""
    return isinstance(state.data, OSError)


@task(name="publish snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_file_system_error)
def publish_task(db_path: Path, run_id: int) -> Path:
    snapshot = publish_snapshot(db_path, run_id)
    say(get_run_logger().info, "published %s", snapshot)
    return snapshot


@flow(name="study-pipeline")
@expected_failures
def study_pipeline(landing: list[Path], db_path: Path, out: Path | None = None, only_if_new: bool = False,
                   today: date | None = None) -> dict:
    """Ingest -> analyse -> report -> snapshot. out: report folder (default: report/ beside the warehouse).
    only_if_new: skip the rest when no delivery was accepted (the landing-folder watch). An expected failure
    (a WarehouseError or ReportError) ends the run Failed with its one line, no traceback (ingest_flow)."""
    db_path = warehouse.resolve_db(db_path)
    out = out or warehouse.default_report_dir(db_path)
    with warehouse.writer_lock(db_path):
        warehouse.verify(db_path)  # whole and of this vigil's schema version (ingest_flow's check then reuses it)
        outcomes = ingest_flow(landing, db_path, today)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:  # the warehouse could not take a delivery: analysing the earlier state would mislead.
            # A returned Failed state ends the run as failed with the message, not an engine traceback;
            # a direct caller (the CLI) gets the LoadFailed raised.
            message = inert("; ".join(o.message for o in failed))
            return Failed(message=message, data=warehouse.LoadFailed(message))
        if only_if_new and not any(o.status == "accepted" for o in outcomes):
            say(get_run_logger().info, "no new or corrected delivery: nothing to analyse")
            return {"deliveries": outcomes, "run": None, "report": None, "monitoring": None}
        ingest_seconds = round(sum(sum(o.seconds.values()) for o in outcomes), 2)
        progress.report("analyse", 0, 1, "cohort, analysis datasets, A1-A5")
        summary = analyse_task(db_path, {"landing": [str(p) for p in landing], "db": str(db_path), "out": str(out)},
                               {"ingest": ingest_seconds})
        progress.report("analyse", 1, 1, f"run {summary.run_id}")
        signal = monitoring_task(db_path, summary.run_id)
        progress.report("report", 0, 1, "HTML, PDF, tables")
        report = report_task(db_path, out, summary.run_id)
        progress.report("report", 1, 1, f"{report.pages} PDF pages")
        progress.report("snapshot", 0, 1, "copying the warehouse")
        summary.snapshot = publish_task(db_path, summary.run_id)
        progress.report("snapshot", 1, 1, inert(summary.snapshot.name))
    return {"deliveries": outcomes, "run": summary, "report": report, "monitoring": signal}
