import os
import sys
import tempfile
from pathlib import Path

import pytest

# Prefect and GX settings before either is imported: private home, no telemetry, patient start-up.
_PREFECT_HOME = tempfile.mkdtemp(prefix="vigil-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "False"
os.environ["DO_NOT_TRACK"] = "1"
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the few tests that run whole flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def warehouse_con(tmp_path):
    from vigil import warehouse

    con = warehouse.connect(tmp_path / "wh" / "vigil.duckdb")
    warehouse.create_layout(con)
    yield con
    con.close()


@pytest.fixture
def ingest_folder(tmp_path, warehouse_con):
    """Ingest one delivery folder into the test warehouse (plain function, no Prefect)."""
    from vigil import warehouse
    from vigil.ingest.load import ingest_delivery

    def run(folder: Path):
        return ingest_delivery(warehouse_con, folder, warehouse.gx_dir_for(tmp_path / "wh" / "vigil.duckdb"))

    return run
