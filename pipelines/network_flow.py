"""The study network on Prefect (SAP 8): each site's flows run on the site's own work pool, the
coordinator's flow submits them with run_deployment and gathers what they return.

  site-node/<SITE>       on work pool site-<SITE>: the study pipeline on the site's landing folder and
                         warehouse (VIGIL_LANDING, VIGIL_DB in the site worker's environment, never a
                         parameter: a site's worker sees only its own data), then the site's result package
                         (vigil.network.package); returns the package's files (name -> base64 of the bytes)
  site-cox-round/<SITE>  on work pool site-<SITE>: one answer of P3 (vigil.network.distributed.local_site on
                         the site's warehouse, read-only): the presence of the levels, or the score and
                         information at the coordinator's coefficients
  network-coordinator    on work pool coordinator: runs every site's site-node, writes the packages into its
                         inbox, checks and pools them (vigil.network.pool), then fits P3 with one
                         site-cox-round flow run per site and round

What a site returns travels as the flow run's persisted result (Prefect result storage: a folder on one
machine, an object-store block across machines; docs/network.md); the coordinator checks every package
file against the manifest's sha256 as it would a folder it was sent. A site whose flow run does not end
Completed within `timeout_seconds` fails the round, naming the site.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from prefect import flow, get_run_logger

from vigil.inert import inert

SITE_NODE, SITE_COX_ROUND = "site-node", "site-cox-round"


def _site_paths() -> tuple[Path, Path]:
    try:
        return Path(os.environ["VIGIL_LANDING"]), Path(os.environ["VIGIL_DB"])
    except KeyError as exc:
        raise RuntimeError(f"{exc.args[0]} is not set in this site worker's environment (docs/network.md)") from None


@flow(name=SITE_NODE, persist_result=True)
def site_node() -> dict:
    """Ingest, analyse, report and package the site's own data; return the package's files."""
    from pipelines.study_flow import study_pipeline
    from vigil.network.package import FILES, MANIFEST, write_package

    landing, db = _site_paths()
    study_pipeline([landing], db)
    package = write_package(db, db.parent / "network-package")
    get_run_logger().info("%s", inert(f"package of site {package.site}: manifest sha256 {package.manifest_sha256}"))
    # as bytes (base64): the coordinator checks each file's sha256, to the last line ending
    return {name: base64.b64encode((package.folder / name).read_bytes()).decode("ascii") for name in (*FILES, MANIFEST)}


@flow(name=SITE_COX_ROUND, persist_result=True)
def site_cox_round(request: dict) -> dict:
    """One P3 answer of the site, on its own warehouse (read-only)."""
    import duckdb

    from vigil.network.distributed import local_site

    _, db = _site_paths()
    con = duckdb.connect(str(db), read_only=True)
    try:
        return local_site(con)(request)
    finally:
        con.close()


def _run_site(flow_name: str, site: str, parameters: dict, timeout_seconds: float) -> dict:
    from prefect.deployments import run_deployment

    from vigil.network.distributed import SiteUnavailable

    # polled every second, not 5: a P3 round waits for its slowest site, and there are a dozen rounds
    run = run_deployment(f"{flow_name}/{site}", parameters=parameters, timeout=timeout_seconds, poll_interval=1,
                         as_subflow=True)
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "no state"
        raise SiteUnavailable(f"site {site}: {flow_name} flow run {run.name} is {state} after {timeout_seconds:g} s")
    return run.state.result()


@flow(name="network-coordinator")
def network_coordinator(sites: list[str], db: str, inbox: str, timeout_seconds: float = 900,
                        cox_timeout_seconds: float = 600, outcomes: list[str] | None = None) -> dict:
    """Run every site's node, pool the packages (P1, P2), fit P3 across the sites for `outcomes` (default: both
    first-event outcomes, at once); write network.* in `db`."""
    import duckdb

    from vigil.analysis.sap import FIRST_EVENT_OUTCOMES
    from vigil.network.distributed import at_once, distributed_cox
    from vigil.network.pool import pool_packages, pooled_start, record_distributed_cox

    log = get_run_logger()
    # the sites work at the same time
    returned = dict(zip(sites, at_once(lambda s: _run_site(SITE_NODE, s, {}, timeout_seconds), sites)))
    folders = []
    for site, files in returned.items():
        folder = Path(inbox) / site
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(base64.b64decode(data))
        folders.append(folder)
    con = duckdb.connect(db)
    try:
        pooled = pool_packages(folders, con)
        for _, reason in pooled.refused:
            log.warning("%s", inert(f"refused: {reason}"))
        accepted = pooled.accepted
        if not accepted:
            raise RuntimeError("no site's package was accepted: nothing to pool, no P3 (network.sites says why)")

        def ask(site: str, request: dict) -> dict:
            return _run_site(SITE_COX_ROUND, site, {"request": request}, cox_timeout_seconds)

        outcomes = list(outcomes or FIRST_EVENT_OUTCOMES)
        # from P2's fixed-effect estimates: fewer rounds, each a flow run per site
        starts = {o: pooled_start(con, pooled.pool_id, o) for o in outcomes}

        def fit(outcome: str):
            return distributed_cox(ask, accepted, outcome, start=starts[outcome])

        fits = dict(zip(outcomes, at_once(fit, outcomes)))  # the outcomes' rounds at the same time
        p3 = record_distributed_cox(con, fits, accepted)
    finally:
        con.close()
    log.info("%s", inert(f"pooling {pooled.pool_id}: {len(accepted)} sites; P3 (pooling {p3.pool_id}) "
                         + ", ".join(f"{o} in {f.rounds} rounds" for o, f in fits.items())))
    return {"pool_id": pooled.pool_id, "p3_pool_id": p3.pool_id, "accepted": accepted,
            "refused": [r for _, r in pooled.refused], "rounds": {o: f.rounds for o, f in fits.items()}}


def deploy(sites: list[str], source: Path | None = None) -> list[str]:
    """Create the network's work pools (site-<SITE> per site, coordinator; process type) where missing and
    its deployments: site-node/<SITE> and site-cox-round/<SITE> on site-<SITE>, network-coordinator/network
    on coordinator. The flows' code is pulled from `source` (default: this checkout or installed package)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from vigil import resources

    source = str(source or resources.CHECKOUT)
    with get_client(sync_client=True) as client:
        for pool in [f"site-{s}" for s in sites] + ["coordinator"]:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass
    made = []
    entry = "pipelines/network_flow.py"
    for site in sites:
        for name in ("site_node", "site_cox_round"):
            made.append(str(flow.from_source(source, f"{entry}:{name}").deploy(
                name=site, work_pool_name=f"site-{site}", print_next_steps=False)))
    made.append(str(flow.from_source(source, f"{entry}:network_coordinator").deploy(
        name="network", work_pool_name="coordinator", print_next_steps=False)))
    return made
