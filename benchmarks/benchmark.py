"""Benchmark: synth, ingest and a bare DuckDB load at stated sizes; time and peak memory per stage.

Usage: python benchmarks/benchmark.py [--sizes 10000,100000,1000000] [--out benchmarks/out]
Each stage runs in its own process so its peak RSS is its own. Results go to stdout as a table
and to benchmarks/out/results.json. Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stage_synth(out: Path, patients: int) -> dict:
    from vigil.synth import synthesize_study

    result = synthesize_study(out, patients=patients, sites=3, seed=1)
    return {"rows": sum(result.rows.values())}


def stage_ingest(landing: Path, db: Path) -> dict:
    from vigil import warehouse
    from vigil.ingest import ingest_all

    con = warehouse.connect(db)
    warehouse.create_layout(con)
    statuses, steps = [], {}
    for outcome in ingest_all(con, [landing], warehouse.gx_dir_for(db)):
        statuses.append(outcome.status)
        for step, seconds in outcome.seconds.items():
            steps[step] = round(steps.get(step, 0) + seconds, 2)
    return {"statuses": statuses, "step_seconds": steps}


def stage_analyse(db: Path) -> dict:
    """Cohort, analysis datasets and every results table as one run (vigil analyse without the snapshot)."""
    from vigil import warehouse
    from vigil.run import analyse

    con = warehouse.connect(db)
    summary = analyse(con, {"benchmark": True})
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


STAGES = {"synth": stage_synth, "ingest": stage_ingest, "analyse": stage_analyse, "report": stage_report,
          "bare_load": stage_bare_load}


def run_stage(name: str, *args: str) -> dict:
    """Run one stage in a child process; return its wall time, peak RSS and what it reported."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--stage", name, *args], cwd=ROOT,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(elapsed, 2), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
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

    results = []
    for size in (int(s) for s in ns.sizes.split(",")):
        work = ns.out / f"n{size}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        landing, db, bare = work / "landing", work / "vigil.duckdb", work / "bare.duckdb"
        row = {"patients": size}
        row["synth"] = run_stage("synth", str(landing), str(size))
        row["ingest"] = run_stage("ingest", str(landing), str(db))
        row["analyse"] = run_stage("analyse", str(db))
        row["report"] = run_stage("report", str(db), str(work / "report"))
        row["bare_load"] = run_stage("bare_load", str(landing), str(bare))
        row["ingest_vs_bare"] = round(row["ingest"]["seconds"] / row["bare_load"]["seconds"], 1)
        results.append(row)
        print(json.dumps(row, default=str), flush=True)
        shutil.rmtree(landing)
    (ns.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n| patients | rows | synth s (MB) | ingest s (MB) | bare load s (MB) | ingest / bare | analyse s (MB) "
          "| report s (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cells = [f"{r[k]['seconds']} ({r[k]['peak_rss_mb']:,.0f})" for k in ("synth", "ingest", "bare_load")]
        print(f"| {r['patients']:,} | {r['synth']['rows']:,} | {' | '.join(cells)} | {r['ingest_vs_bare']}x "
              f"| {r['analyse']['seconds']} ({r['analyse']['peak_rss_mb']:,.0f}) "
              f"| {r['report']['seconds']} ({r['report']['peak_rss_mb']:,.0f}) |")


if __name__ == "__main__":
    main()
