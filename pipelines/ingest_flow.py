"""Ingest flow: every delivery under the given paths, in created_at order, into the warehouse."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vigil import progress, warehouse
from vigil.contract import load_contract
from vigil.delivery import find_deliveries
from vigil.ingest import LoadOutcome, checkpoint, delivery_order, ingest_delivery


@task(name="find deliveries", cache_policy=NO_CACHE)
def find_deliveries_task(paths: list[Path]) -> list[Path]:
    return delivery_order(find_deliveries(paths, load_contract()))


@task(name="prepare warehouse", cache_policy=NO_CACHE)
def prepare_warehouse_task(db_path: Path) -> None:
    with warehouse.connect(db_path) as con:
        warehouse.create_layout(con)


# No retries: a refusal or a validation failure is an answer, not a transient error.
@task(name="ingest delivery", task_run_name="ingest {folder.name}", cache_policy=NO_CACHE)
def ingest_delivery_task(folder: Path, db_path: Path, today: date | None) -> LoadOutcome:
    with warehouse.connect(db_path) as con:
        outcome = ingest_delivery(con, folder, warehouse.gx_dir_for(db_path), today)
    logger = get_run_logger()
    if outcome.status == "accepted":
        received = sum(t.received for t in outcome.tables.values())
        quarantined = sum(t.quarantined for t in outcome.tables.values())
        logger.info("%s accepted as delivery %s: %d rows received, %d quarantined; seconds per step %s",
                    folder.name, outcome.delivery_id, received, quarantined, outcome.seconds)
    elif outcome.status == "refused":
        logger.warning("%s refused: %s", folder.name, outcome.message)
    elif outcome.status == "failed":
        logger.error("%s not loaded: %s", folder.name, outcome.message)
    else:
        logger.info("%s: %s", folder.name, outcome.message)
    return outcome


@task(name="checkpoint warehouse", cache_policy=NO_CACHE)
def checkpoint_task(db_path: Path, outcomes: list[LoadOutcome]) -> None:
    with warehouse.connect(db_path) as con:
        problem = checkpoint(con, outcomes)
    if problem:
        get_run_logger().warning("%s: %s", db_path, problem)


@flow(name="ingest", log_prints=True)
def ingest_flow(paths: list[Path], db_path: Path, today: date | None = None) -> list[LoadOutcome]:
    # The open connection keeps DuckDB's database open between the tasks: closing the last connection
    # checkpoints, and the run checkpoints once, at its end, rather than after every delivery.
    with warehouse.writer_lock(db_path), warehouse.connect(db_path):
        prepare_warehouse_task(db_path)
        folders = find_deliveries_task(paths)
        outcomes = []
        for done, folder in enumerate(folders):
            progress.report("ingest", done, len(folders), folder.name)
            outcomes.append(ingest_delivery_task(folder, db_path, today))
        checkpoint_task(db_path, outcomes)
        progress.report("ingest", len(folders), len(folders), f"{len(folders)} deliveries")
        return outcomes
