"""prefect.yaml is accepted by `prefect deploy` against a real (test) Prefect server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.mark.flow
def test_prefect_deploy_accepts_both_deployments(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), VIGIL_HOME=str(ROOT),
               VIGIL_LANDING=str(tmp_path / "landing"), VIGIL_DB=str(tmp_path / "vigil.duckdb"))

    def prefect(*args):
        return subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    created = prefect("work-pool", "create", "vigil-process", "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stderr
    deployed = prefect("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    listed = prefect("deployment", "ls")
    assert "study-pipeline/landing-watch" in listed.stdout and "study-pipeline/nightly-rerun" in listed.stdout
    watch = prefect("deployment", "inspect", "study-pipeline/landing-watch")
    assert "'only_if_new': True" in watch.stdout and "'interval': 900" in watch.stdout.replace("900.0", "900")
