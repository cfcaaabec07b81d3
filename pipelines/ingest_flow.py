"""Ingest flow: every delivery under the given paths, in created_at order, into the warehouse.

What a delivery says (folder names, messages quoting its files, columns and manifest) reaches the Prefect
log only through `say`, as one inert line: a folder named with a newline cannot forge a log line. An
expected failure (vigil.warehouse.WarehouseError: busy, damaged, read-only, a load the warehouse did not
keep) ends a flow run Failed with its one line as the message (`expected_failures`), and Prefect's task
and flow loggers log it without a traceback (`_NoTracebackForExpected`); VIGIL_DEBUG=1 lets it propagate
with its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from vigil import warehouse
from vigil.inert import inert
from vigil.ingest.load import LoadOutcome, ingest_all, ingest_delivery

# Failures that are answers, said in one line, not defects: no traceback in the logs (the study flow adds
# ReportError).
EXPECTED: list[type[BaseException]] = [warehouse.WarehouseError]


def say(log: Callable[..., None], template: str, *args) -> None:
    """Log `template % args` as one inert line (each argument may be delivered text)."""
    log("%s", inert(template % args))


def expected_failures(fn):
    """Decorator under @flow: an EXPECTED failure ends the flow run Failed with the error's one line as its
    message, and a direct caller (the CLI, a parent flow) gets the error raised as it was. (Not for tasks:
    a task that returns a Failed state hands the state itself to its caller.)"""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except tuple(EXPECTED) as exc:
            if os.environ.get("VIGIL_DEBUG"):
                raise
            return Failed(message=inert(exc), data=exc)

    return run


class _NoTracebackForExpected(logging.Filter):
    """Prefect logs every failed task run (and a flow run that raises) with exc_info: for an EXPECTED
    failure the record keeps its message (the error's repr, one line) and loses the traceback, unless
    VIGIL_DEBUG is set. A failure that is a defect keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not os.environ.get("VIGIL_DEBUG"):
            exc = record.exc_info[1]
            if exc is None or isinstance(exc, tuple(EXPECTED)):
                record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    if not any(isinstance(f, _NoTracebackForExpected) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_NoTracebackForExpected())


def _ingest_run_name(parameters: dict) -> str:
    return f"ingest {inert(parameters['folder'].name)}"


# No retries: a refusal or a validation failure is an answer, not a transient error.
@task(name="ingest delivery", task_run_name=_ingest_run_name, cache_policy=NO_CACHE)
def ingest_delivery_task(folder: Path, db_path: Path, today: date | None) -> LoadOutcome:
    with warehouse.connect(db_path) as con:
        outcome = ingest_delivery(con, folder, warehouse.gx_dir_for(db_path), today)
    logger = get_run_logger()
    if outcome.status == "accepted":
        received = sum(t.received for t in outcome.tables.values())
        quarantined = sum(t.quarantined for t in outcome.tables.values())
        say(logger.info, "%s accepted as delivery %s: %d rows received, %d quarantined; seconds per step %s",
            folder.name, outcome.delivery_id, received, quarantined, outcome.seconds)
    elif outcome.status == "refused":
        say(logger.warning, "%s refused: %s", folder.name, outcome.message)
    elif outcome.status == "failed":
        say(logger.error, "%s not loaded: %s", folder.name, outcome.message)
    else:
        say(logger.info, "%s: %s", folder.name, outcome.message)
    return outcome


@flow(name="ingest", log_prints=True)
@expected_failures
def ingest_flow(paths: list[Path], db_path: Path, today: date | None = None) -> list[LoadOutcome]:
    """vigil.ingest.load.ingest_all with each delivery as a task run."""
    db_path = warehouse.resolve_db(db_path)
    # The open connection keeps DuckDB's database open between the tasks: closing the last connection
    # checkpoints, and the run checkpoints once, at its end, rather than after every delivery.
    with warehouse.writer_lock(db_path):
        warehouse.verify(db_path)  # whole and of this vigil's schema version, before anything writes
        with warehouse.connect(db_path) as con:
            return ingest_all(con, paths, warehouse.gx_dir_for(db_path), today,
                              each=lambda folder: ingest_delivery_task(folder, db_path, today),
                              warn=lambda problem: say(get_run_logger().warning, "%s: %s", db_path, problem))
