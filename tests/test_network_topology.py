"""The study network's Prefect topology once, with a real server (SAP 8, docs/network.md): a work pool
and a process worker per site, each worker given only its own landing folder and warehouse, and a
coordinator worker whose flow submits the sites' flow runs with run_deployment. The pooled numbers are
tested without a server in test_network.py; here, that what travels through Prefect gives the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.flow]

SITES = ("DK01", "SE02")
OUTCOME = "first_serious"


def _worker(pool: str, env: dict, log: Path) -> subprocess.Popen:
    prefect = Path(sys.executable).parent / "prefect"
    return subprocess.Popen([str(prefect), "worker", "start", "--pool", pool], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_the_coordinator_gathers_site_packages_through_prefect_and_p3_equals_the_plain_functions(prefect_harness,
                                                                                                 tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from pipelines.network_flow import deploy
    from vigil.network.distributed import distributed_cox, local_site
    from vigil.network.pool import pooled_start
    from vigil.synth import synthesize_study

    synth = synthesize_study(tmp_path / "synth", patients=1200, sites=len(SITES), seed=5)
    for folder in synth.deliveries:  # each site's landing folder holds its own deliveries only
        site = folder.name.split("_")[0]
        (tmp_path / site / "landing").mkdir(parents=True, exist_ok=True)
        shutil.move(folder, tmp_path / site / "landing" / folder.name)
    deploy(list(SITES))
    base = {k: v for k, v in os.environ.items() if k not in ("VIGIL_DB", "VIGIL_LANDING")}
    base.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_WORKER_QUERY_SECONDS="1")
    workers = [_worker(f"site-{s}", {**base, "VIGIL_LANDING": str(tmp_path / s / "landing"),
                                     "VIGIL_DB": str(tmp_path / s / "warehouse" / "vigil.duckdb")},
                       tmp_path / f"worker-{s}.log") for s in SITES]
    workers.append(_worker("coordinator", base, tmp_path / "worker-coordinator.log"))
    coordinator_db = tmp_path / "coordinator" / "coordinator.duckdb"
    coordinator_db.parent.mkdir()
    try:
        run = run_deployment("network-coordinator/network", timeout=900, poll_interval=1, parameters={
            "sites": list(SITES), "db": str(coordinator_db), "inbox": str(tmp_path / "coordinator" / "inbox"),
            "outcomes": [OUTCOME]})  # one outcome: a P3 round is a process per site, seconds each
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("worker-*.log"))
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{logs}"

    # each site's node ran on its own data, in its own warehouse
    for site in SITES:
        con = duckdb.connect(str(tmp_path / site / "warehouse" / "vigil.duckdb"), read_only=True)
        assert con.execute("SELECT DISTINCT site_id FROM cohort.patients").fetchall() == [(site,)]
        con.close()
    con = duckdb.connect(str(coordinator_db), read_only=True)
    assert sorted(con.execute("SELECT site_id, status FROM network.sites").fetchall()) == [(s, "accepted") for s in SITES]
    assert con.execute("SELECT count(*) FROM network.pooled_hr WHERE method = 'random_dl'").fetchone()[0] > 0

    # P3 through Prefect, a flow run per site and round, equals P3 over the same warehouses in-process
    sites = {s: duckdb.connect(str(tmp_path / s / "warehouse" / "vigil.duckdb"), read_only=True) for s in SITES}
    answers = {s: local_site(c) for s, c in sites.items()}
    pooling = con.execute("SELECT max(pool_id) FROM network.pooled_hr WHERE method = 'fixed'").fetchone()[0]
    plain = distributed_cox(lambda site, request: answers[site](request), list(SITES), OUTCOME,
                            start=pooled_start(con, pooling, OUTCOME))  # where the coordinator's flow starts
    through_prefect = dict(con.execute(
        "SELECT variable || '[' || level || ']', ln(hr) FROM network.pooled_hr WHERE method = 'distributed' AND "
        "hr IS NOT NULL").fetchall())
    rounds = con.execute("SELECT DISTINCT outcome, rounds FROM network.pooled_hr WHERE method = 'distributed'").fetchall()
    assert through_prefect and rounds == [(OUTCOME, plain.rounds)]
    for name, log_hr in through_prefect.items():
        assert log_hr == pytest.approx(plain.coef[plain.names.index(name)], abs=1e-12), name
