"""The built wheel works outside the checkout: its code and its study data files (sql/, schemas/,
codelists/, reports/ as package data) are enough for `vigil demo` run from another folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vigil.resources import CHECKOUT

pytestmark = [pytest.mark.slow, pytest.mark.flow]

UV = CHECKOUT / ".tools" / "bin" / "uv"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not UV.exists():
        pytest.skip("uv is bootstrapped by `make install` into .tools/")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([str(UV), "build", "--wheel", "-o", str(out), str(CHECKOUT)], check=True, capture_output=True,
                   timeout=300)
    (built,) = out.glob("vigil-*.whl")
    return built


def test_wheel_carries_the_study_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("sql", "schemas", "codelists", "reports"):
        shipped = {p.relative_to(CHECKOUT).as_posix() for p in (CHECKOUT / folder).rglob("*") if p.is_file()}
        missing = {f for f in shipped if f"vigil/_study/{f}" not in names}
        assert not missing, f"not in the wheel: {sorted(missing)[:5]}"
    assert "vigil/warehouse/__init__.py" in names and "pipelines/study_flow.py" in names


def test_installed_wheel_runs_the_demo_from_another_folder(wheel, tmp_path):
    # Installed on its own (no dependencies: the test's environment has them) into a folder that
    # comes first on the path, so nothing of the checkout is imported.
    site = tmp_path / "site"
    subprocess.run([str(UV), "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIGIL_DB", "PREFECT_API_URL")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run([sys.executable, "-c", "import vigil.resources as r; print(r.DATA_ROOT)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()) == site / "vigil" / "_study"
    demo = subprocess.run([sys.executable, "-c", "from vigil.cli import main; main()", "demo", "--patients", "2000"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-2000:]
    report = elsewhere / "demo-study" / "warehouse" / "report" / "current" / "report.html"
    assert report.is_file() and "Table 1" in report.read_text(encoding="utf-8")
    assert (elsewhere / "demo-study" / "warehouse" / "snapshots" / "current.duckdb").exists()
