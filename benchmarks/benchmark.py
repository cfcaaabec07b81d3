"""Benchmark: synth, ingest and a bare DuckDB load at stated sizes; time and peak memory per stage.

Usage: python benchmarks/benchmark.py [--sizes 10000,100000,1000000] [--repeat R] [--out benchmarks/out]
       python benchmarks/benchmark.py --prefect-overhead [N] [--repeat R] [--out benchmarks/out]
       python benchmarks/benchmark.py --null-simulation [N]
       python benchmarks/benchmark.py --network 3,10 [--patients-per-site 100000]
Each stage runs in its own process so its peak RSS is its own. Results go to stdout as a table
and to benchmarks/out/results.json. Not a test: nothing here asserts on time. With --repeat R,
ingest (into a fresh warehouse each time) and bare load alternate R times at each size, and the pair
with the median ratio is reported beside every pair's ratio: one run on a shared machine varies by 15-20 %.

--prefect-overhead (N patients, default 10000) times the whole study pipeline three ways, each in its
own process on the same synthesized deliveries and each into a fresh warehouse: (a) the study_pipeline
flow against the Prefect server that PREFECT_API_URL names (skipped when none is set, in the environment
or the active Prefect profile, or it does not answer), (b) the same flow with no server configured
(Prefect starts a temporary one; fresh PREFECT_HOME), (c) the plain functions ingest_all, analyse,
render_report and publish_snapshot with no Prefect. It prints the three times and the overheads a - c
and b - c, and writes them to benchmarks/out/prefect_overhead.json. On a shared machine one round
varies by several seconds: --repeat R alternates the three R times and reports the median round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stage_synth(out: Path, patients: int) -> dict:
    from vigil.synth import synthesize_study

    result = synthesize_study(out, patients=patients, sites=3, seed=1)
    return {"rows": sum(result.rows.values())}


def stage_ingest(landing: Path, db: Path) -> dict:
    from vigil import warehouse
    from vigil.ingest.load import ingest_all

    con = warehouse.connect(db)
    warehouse.create_layout(con)
    statuses, steps = [], {}
    for outcome in ingest_all(con, [landing], warehouse.gx_dir_for(db)):
        statuses.append(outcome.status)
        for step, seconds in outcome.seconds.items():
            steps[step] = round(steps.get(step, 0) + seconds, 2)
    return {"statuses": statuses, "step_seconds": steps}


def stage_analyse(db: Path, variants: int = 0) -> dict:
    """Cohort, analysis datasets and every results table as one run (vigil analyse without the snapshot);
    variants = 1: with every SAP A12 sensitivity analysis (vigil analyse --variant all, as vigil run)."""
    from vigil import warehouse
    from vigil.analysis.runs import analyse
    from vigil.analysis.variants import SENSITIVITY_ANALYSES

    con = warehouse.connect(db)
    summary = analyse(con, {"benchmark": True}, variants=list(SENSITIVITY_ANALYSES) if variants else None)
    con.close()
    return {"cohort": summary.cohort["cohort_size"], "step_seconds": summary.step_seconds}


def stage_report(db: Path, out: Path) -> dict:
    from vigil.report import render_report

    result = render_report(db, out)
    return {"pages": result.pages, "tables": len(result.tables)}


def stage_bare_load(landing: Path, db: Path) -> dict:
    """What loading the same files costs with nothing checked: DuckDB read_csv straight into tables."""
    import duckdb

    from vigil.contract import load_contract

    con = duckdb.connect(str(db))
    rows = 0
    for table in load_contract().tables:
        files = sorted(str(p) for p in landing.glob(f"*/{table}.csv"))
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_csv($files, header = true)",
                    {"files": files})
        rows += con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    con.close()
    return {"rows": rows}


def stage_flow(landing: Path, db: Path) -> dict:
    """The study_pipeline flow (ingest subflow, analyse, report, snapshot) against the Prefect API the
    environment names, or a temporary server when it names none."""
    started = time.perf_counter()
    from pipelines.study_flow import study_pipeline

    imported = time.perf_counter()
    result = study_pipeline([landing], db)
    return {"import_seconds": round(imported - started, 2), "call_seconds": round(time.perf_counter() - imported, 2),
            "statuses": [o.status for o in result["deliveries"]], "cohort": result["run"].cohort["cohort_size"],
            "api": os.environ.get("PREFECT_API_URL") or "temporary server"}


def stage_plain(landing: Path, db: Path) -> dict:
    """What the flow runs, as the plain vigil functions and no Prefect: ingest_all, analyse, render_report,
    publish_snapshot (the report into report/ beside the warehouse, as the flow does)."""
    started = time.perf_counter()
    from vigil import warehouse
    from vigil.ingest.load import ingest_all
    from vigil.report import render_report
    from vigil.analysis.runs import analyse
    from vigil.warehouse.snapshots import publish_snapshot

    imported = time.perf_counter()
    steps = {}
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        outcomes = ingest_all(con, [landing], warehouse.gx_dir_for(db))
    steps["ingest_all"] = time.perf_counter()
    with warehouse.connect(db) as con:
        summary = analyse(con, {"landing": [str(landing)], "db": str(db)})
    steps["analyse"] = time.perf_counter()
    render_report(db, warehouse.default_report_dir(db), summary.run_id)
    steps["render_report"] = time.perf_counter()
    publish_snapshot(db, summary.run_id)
    steps["publish_snapshot"] = time.perf_counter()
    previous, step_seconds = imported, {}
    for step, at in steps.items():
        step_seconds[step], previous = round(at - previous, 2), at
    return {"import_seconds": round(imported - started, 2), "call_seconds": round(previous - imported, 2),
            "step_seconds": step_seconds, "statuses": [o.status for o in outcomes],
            "cohort": summary.cohort["cohort_size"]}


def stage_network_sites(out: Path, sites: int, patients_per_site: int) -> dict:
    """Synthesize `sites` sites of `patients_per_site` each, and at each site (its own warehouse, as a site
    node does) load (SQL rule counts; GX is the ingest benchmark's), analyse and write its result package."""
    from vigil import warehouse
    from vigil.analysis.runs import analyse
    from vigil.ingest import validation
    from vigil.ingest.load import ingest_delivery
    from vigil.network.package import write_package
    from vigil.synth import synthesize_study

    synth = synthesize_study(out / "landing", patients=sites * patients_per_site, sites=sites, seed=1)
    seconds = {}
    for folder in synth.deliveries:
        site = folder.name.split("_")[0]
        started = time.perf_counter()
        db = out / site / "vigil.duckdb"
        con = warehouse.connect(db)
        warehouse.create_layout(con)
        ingest_delivery(con, folder, warehouse.gx_dir_for(db), validator=validation.SQL_RULE_COUNTS)
        analyse(con)
        con.close()
        analysed = time.perf_counter()
        write_package(db, out / f"package-{site}")
        seconds[site] = {"load_and_analyse": round(analysed - started, 2),
                         "package": round(time.perf_counter() - analysed, 2)}
    return {"sites": seconds}


def stage_network_pool(out: Path) -> dict:
    """The coordinator: pool every package (P1, P2), then P3 over the site warehouses (plain functions, as
    `vigil network pool` and `vigil network cox`); the bytes each site shared."""
    import duckdb

    from vigil.analysis.sap import FIRST_EVENT_OUTCOMES
    from vigil.network.distributed import distributed_cox, local_site
    from vigil.network.pool import pool_packages

    packages = sorted(out.glob("package-*"))
    con = duckdb.connect(str(out / "coordinator.duckdb"))
    started = time.perf_counter()
    summary = pool_packages(packages, con)
    pooled = time.perf_counter() - started
    package_bytes = {p.name.removeprefix("package-"): sum(f.stat().st_size for f in p.iterdir() if f.is_file())
                     for p in packages}
    sites = {p.name.removeprefix("package-"): duckdb.connect(str(out / p.name.removeprefix("package-") / "vigil.duckdb"),
                                                             read_only=True) for p in packages}
    answers = {site: local_site(c) for site, c in sites.items()}
    shared = {site: 0 for site in sites}

    def ask(site, request):
        answer = answers[site](request)
        shared[site] += len(json.dumps(answer))
        return answer

    p3 = {}
    for outcome in FIRST_EVENT_OUTCOMES:
        started = time.perf_counter()
        fit = distributed_cox(ask, sorted(sites), outcome)
        elapsed = time.perf_counter() - started
        exchanges = 1 + 1 + sum(1 + h["halvings"] for h in fit.history)  # presence, beta 0, each step (+ halvings)
        p3[outcome] = {"rounds": fit.rounds, "exchanges": exchanges, "seconds": round(elapsed, 2),
                       "seconds_per_exchange": round(elapsed / exchanges, 3)}
    return {"pool_seconds": round(pooled, 2), "accepted": len(summary.accepted), "package_bytes": package_bytes,
            "p3": p3, "p3_bytes_per_site": shared}


def network_benchmark(site_counts: list[int], patients_per_site: int, out: Path) -> None:
    rows = []
    for sites in site_counts:
        work = out / f"network-{sites}x{patients_per_site}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        built = run_stage("network_sites", str(work), str(sites), str(patients_per_site))
        pooled = run_stage("network_pool", str(work))
        rows.append({"sites": sites, "patients_per_site": patients_per_site, "site_nodes": built, "coordinator": pooled})
        print(json.dumps(rows[-1], default=str), flush=True)
        shutil.rmtree(work)
    (out / "network.json").write_text(json.dumps(rows, indent=2, default=str))
    print("\n| sites x patients | per site: load+analyse s, package s (median) | pool s (peak MB) | P3 outcome: "
          "rounds, exchanges, s, s per exchange | package bytes per site (median) | P3 bytes per site |")
    print("|---|---|---:|---|---:|---:|")
    for r in rows:
        per = sorted(r["site_nodes"]["sites"].values(), key=lambda v: v["load_and_analyse"])
        mid = per[(len(per) - 1) // 2]
        c = r["coordinator"]
        p3 = "; ".join(f"{o}: {v['rounds']}, {v['exchanges']}, {v['seconds']}, {v['seconds_per_exchange']}"
                       for o, v in c["p3"].items())
        sizes = sorted(c["package_bytes"].values())
        shared = sorted(c["p3_bytes_per_site"].values())
        print(f"| {r['sites']} x {r['patients_per_site']:,} | {mid['load_and_analyse']}, {mid['package']} "
              f"| {c['pool_seconds']} ({c['peak_rss_mb']:,.0f}) | {p3} | {sizes[(len(sizes) - 1) // 2]:,} "
              f"| {shared[(len(shared) - 1) // 2]:,} |")


STAGES = {"network_sites": stage_network_sites, "network_pool": stage_network_pool, "synth": stage_synth, "ingest": stage_ingest, "analyse": stage_analyse, "report": stage_report,
          "bare_load": stage_bare_load, "flow": stage_flow, "plain": stage_plain}


def ratio(ingest: dict, bare_load: dict) -> float:
    return ingest["seconds"] / bare_load["seconds"]


def run_stage(name: str, *args: str, env: dict | None = None) -> dict:
    """Run one stage in a child process; return its wall time, peak RSS and what it reported."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--stage", name, *args], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(elapsed, 2), **report}


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment, else from the active Prefect profile (prefect config set)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    proc = subprocess.run([sys.executable, "-c", "from prefect.settings import PREFECT_API_URL; "
                           "print(PREFECT_API_URL.value() or '')"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


def server_answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def prefect_overhead(patients: int, out: Path, repeat: int = 1) -> None:
    """(a) the flow against the configured server, (b) the flow with a temporary server, (c) the plain
    functions; each in its own process, each into a fresh warehouse, on one set of deliveries. With
    repeat > 1 the three alternate round by round and the median round (by wall time) of each is reported."""
    work = out / f"prefect-overhead-n{patients}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    landing = work / "landing"
    row: dict = {"patients": patients, "synth": run_stage("synth", str(landing), str(patients))}
    print(json.dumps(row, default=str), flush=True)
    quiet = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    api_url = configured_api_url()
    envs = {"plain": None}
    if api_url and server_answers(api_url):
        envs["server"] = {**os.environ, **quiet, "PREFECT_API_URL": api_url}
    else:
        row["server_skipped"] = (f"no Prefect server answers at {api_url}" if api_url else
                                 "PREFECT_API_URL is not set (environment or active profile)")
        print(f"(a) skipped: {row['server_skipped']}; start one (docs/scheduling.md) and set PREFECT_API_URL "
              "to measure it", flush=True)
    # No server configured: no PREFECT_API_URL, and a fresh PREFECT_HOME (set per round below) so that no
    # profile names one; Prefect then starts a temporary server inside the flow's process.
    envs["temporary_server"] = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    envs["temporary_server"].update(quiet, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    samples: dict[str, list[dict]] = {name: [] for name in envs}
    for round_ in range(1, repeat + 1):
        for name, env in envs.items():
            folder = work / f"{name}-{round_}"  # a fresh warehouse (and PREFECT_HOME) every time
            folder.mkdir()  # Prefect creates PREFECT_HOME but not its parents
            if name == "temporary_server":
                env = {**env, "PREFECT_HOME": str(folder / "prefect-home")}
            result = run_stage("plain" if name == "plain" else "flow", str(landing), str(folder / "vigil.duckdb"),
                               env=env)
            samples[name].append(result)
            print(json.dumps({"round": round_, name: result}, default=str), flush=True)
            shutil.rmtree(folder)
    for name, runs in samples.items():
        row[name] = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
        row[name]["wall_samples"] = [r["seconds"] for r in runs]
    plain = row["plain"]
    row["overhead_seconds"] = {
        name: {"wall": round(row[name]["seconds"] - plain["seconds"], 2),
               "in_process": round(row[name]["call_seconds"] - plain["call_seconds"], 2)}
        for name in ("server", "temporary_server") if name in row}
    shutil.rmtree(landing)
    (out / "prefect_overhead.json").write_text(json.dumps(row, indent=2, default=str))

    rounds = f"median of {repeat} rounds" if repeat > 1 else "1 round"
    print(f"\nstudy pipeline, {patients:,} patients, {rounds}: seconds (wall of the process; in the process, after "
          "imports) and peak MB")
    print("| variant | wall s | in-process s | peak MB | overhead vs plain, wall s | overhead, in-process s "
          "| wall s, every round |")
    print("|---|---:|---:|---:|---:|---:|---|")
    labels = {"server": "(a) flow, local Prefect server", "temporary_server": "(b) flow, temporary server",
              "plain": "(c) plain functions, no Prefect"}
    for name in ("server", "temporary_server", "plain"):
        if name not in row:
            print(f"| {labels[name]} | skipped | | | | | |")
            continue
        r, over = row[name], row["overhead_seconds"].get(name)
        cells = f"{over['wall']:+} | {over['in_process']:+}" if over else "- | -"
        print(f"| {labels[name]} | {r['seconds']} | {r['call_seconds']} | {r['peak_rss_mb']:,.0f} | {cells} "
              f"| {', '.join(str(x) for x in r['wall_samples'])} |")


# Expected events per look under which the null is simulated: semi-annual looks reaching T = 60 at the fifth
# (as the demo's series, E about 16, 25, 36, 49, 64), and ten looks of 6 (T at the last).
NULL_SCHEDULES = {"demo-like, 5 looks": [16.0, 25.0, 36.0, 49.0, 64.0],
                  "10 equal looks": [6.0 * k for k in range(1, 11)]}


def null_simulation(series: int, seed: int = 20261203) -> None:
    """The sequential test's type I error under the null (rate = reference: O_k ~ Poisson(E_k) with
    independent increments), with the SAP's settings: the share of series that signal, with its Monte
    Carlo standard error; SAP 7 requires it to be <= alpha = 0.05."""
    import numpy as np

    from vigil.analysis.monitoring import SAP_SURVEILLANCE as S
    from vigil.stats.sequential import maxsprt_poisson

    rng = np.random.default_rng(seed)
    print(f"\nType I error of the sequential test under the null, {series:,} simulated series each "
          f"(alpha {S.alpha}, rho {S.rho}, M {S.M}, T {S.T:g}):")
    print("| schedule | signalled | share | Monte Carlo SE | share + 1.96 SE | seconds per series |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, expected in NULL_SCHEDULES.items():
        increments = np.diff(np.asarray(expected), prepend=0.0)
        started = time.perf_counter()
        hits = sum(maxsprt_poisson(np.cumsum(rng.poisson(increments)).tolist(), expected, alpha=S.alpha,
                                   rho=S.rho, M=S.M, T=S.T, max_looks=S.max_looks)[-1].signal
                   for _ in range(series))
        share = hits / series
        se = (share * (1 - share) / series) ** 0.5
        print(f"| {name} | {hits:,} | {share:.4f} | {se:.4f} | {share + 1.96 * se:.4f} "
              f"| {(time.perf_counter() - started) / series * 1000:.2f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--prefect-overhead", type=int, nargs="?", const=10000, metavar="N",
                        help="time the flow with a server, with a temporary server and as plain functions "
                             "(N patients, default 10000) instead of the stage sweep")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds: of ingest and bare load, alternating, at each size (the pair with the median "
                             "ratio is reported); with --prefect-overhead, of the three runs (the median round). "
                             "The lower middle one when R is even")
    parser.add_argument("--null-simulation", type=int, nargs="?", const=20000, metavar="N",
                        help="simulate N null series of the sequential test (default 20000) and print the share "
                             "that signals (its type I error) instead of the stage sweep")
    parser.add_argument("--network", metavar="SITES", help="the study network (SAP 8) instead of the stage sweep: for "
                        "each comma-separated number of sites (e.g. 3,10), sites of --patients-per-site each loaded, "
                        "analysed and packaged, then the coordinator's pooling and P3, and the bytes each site shared")
    parser.add_argument("--patients-per-site", type=int, default=100000)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.stage:
        fn = STAGES[ns.stage]
        args = [Path(a) if not a.isdigit() else int(a) for a in ns.args]
        report = fn(*args)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(report, default=str))
        return
    if ns.null_simulation:
        null_simulation(ns.null_simulation)
        return
    if ns.prefect_overhead:
        prefect_overhead(ns.prefect_overhead, ns.out, ns.repeat)
        return
    if ns.network:
        network_benchmark([int(n) for n in ns.network.split(",")], ns.patients_per_site, ns.out)
        return

    results = []
    for size in (int(s) for s in ns.sizes.split(",")):
        work = ns.out / f"n{size}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        landing, run = work / "landing", work / "run"
        db, bare = run / "vigil.duckdb", run / "bare.duckdb"
        row = {"patients": size}
        row["synth"] = run_stage("synth", str(landing), str(size))
        # Ingest and bare load alternate, so that both see the same state of a shared machine; each
        # round in a fresh folder (warehouse, its gx/, the bare load's database). The pair with the
        # median ratio is reported.
        pairs = []
        for _ in range(ns.repeat):
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir()
            pairs.append((run_stage("ingest", str(landing), str(db)), run_stage("bare_load", str(landing), str(bare))))
        row["ingest"], row["bare_load"] = sorted(pairs, key=lambda p: ratio(*p))[(len(pairs) - 1) // 2]
        row["ingest_vs_bare"] = round(ratio(row["ingest"], row["bare_load"]), 1)
        row["pair_seconds"] = [(i["seconds"], b["seconds"]) for i, b in pairs]  # (ingest, bare load), every round
        row["analyse"] = run_stage("analyse", str(db))
        row["analyse_variants"] = run_stage("analyse", str(db), "1")
        row["report"] = run_stage("report", str(db), str(work / "report"))
        results.append(row)
        print(json.dumps(row, default=str), flush=True)
        shutil.rmtree(landing)
    (ns.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n| patients | rows | synth s (MB) | ingest s (MB) | bare load s (MB) | ingest / bare | every pair "
          "| analyse s (MB) | of which the look s | analyse with every variant s (MB) | of which the variants s "
          "| report s (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        cells = [f"{r[k]['seconds']} ({r[k]['peak_rss_mb']:,.0f})" for k in ("synth", "ingest", "bare_load")]
        print(f"| {r['patients']:,} | {r['synth']['rows']:,} | {' | '.join(cells)} | {r['ingest_vs_bare']}x "
              f"| {', '.join(f'{i / b:.1f}x' for i, b in r['pair_seconds'])} "
              f"| {r['analyse']['seconds']} ({r['analyse']['peak_rss_mb']:,.0f}) "
              f"| {r['analyse']['step_seconds'].get('monitoring', '')} "
              f"| {r['analyse_variants']['seconds']} ({r['analyse_variants']['peak_rss_mb']:,.0f}) "
              f"| {r['analyse_variants']['step_seconds'].get('variants', '')} "
              f"| {r['report']['seconds']} ({r['report']['peak_rss_mb']:,.0f}) |")


if __name__ == "__main__":
    main()
