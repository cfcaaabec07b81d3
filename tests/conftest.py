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
# One BLAS thread per test worker: the matrices are small, and two xdist workers each spinning two
# OpenBLAS threads on two cores made the estimator tests several times slower under load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

# The fast tier (`make test-fast`, `pytest --fast`): the unit tests, none marked by cost (markers in
# pyproject.toml). It must stay free of what makes the other tiers slow; --fast fails any test, or
# the collection, that imports one of these, naming it, so that it gets its marker.
FAST_TIER = "not slow and not gx and not flow and not faults"
NOT_IN_FAST_TIER = {"great_expectations": "gx", "prefect": "flow", "weasyprint": "slow (PDF rendering)"}


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help=f"the fast tier: -m '{FAST_TIER}', failing any test that imports "
                          f"{', '.join(NOT_IN_FAST_TIER)}")


def pytest_configure(config):
    if config.getoption("--fast"):
        given = config.option.markexpr
        config.option.markexpr = f"({FAST_TIER}) and ({given})" if given else FAST_TIER


# The modules that take longest (minutes each: a whole demo, kill -9 loops, rendered studies), first:
# pytest-xdist hands out whole modules (--dist loadfile; --no-loadscope-reorder in the Makefile keeps
# collection order, where xdist would put the modules with most tests first), and the longest last
# would leave one worker running it alone at the end. Longest first, as measured (docs/benchmarks.md).
LONGEST_FIRST = ("test_wheel", "test_network_topology", "test_faults", "test_crash_safety", "test_report", "test_results_per_run",
                 "test_hostile_input", "test_cli_messages", "test_study_flow", "test_warehouse_integrity",
                 "test_gx_validation", "test_quarantine_rules", "test_export", "test_rendered_surfaces",
                 "test_variants")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each module's order kept


def _imported_heavy() -> list[str]:
    return [name for name in NOT_IN_FAST_TIER if name in sys.modules]


def pytest_collection_finish(session):
    heavy = _imported_heavy()
    if session.config.getoption("--fast") and heavy:
        raise pytest.UsageError(f"--fast: collecting the tests imported {', '.join(heavy)}: a test module "
                                "imports it at module level; import it inside the tests that need it, and mark them")


_reported: set[str] = set()


@pytest.fixture(autouse=True)
def _fast_tier_guard(request):
    """Under --fast: the first test after which GX, Prefect or WeasyPrint is imported (by the test or
    by a fixture of its module) fails, naming the marker it lacks."""
    yield
    if not request.config.getoption("--fast"):
        return
    new = [name for name in _imported_heavy() if name not in _reported]
    _reported.update(new)
    if new:
        pytest.fail(f"{request.node.nodeid} imported {', '.join(new)} in the fast tier: mark it "
                    + " / ".join(NOT_IN_FAST_TIER[n] for n in new), pytrace=False)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the few tests that run whole flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def shared_gx_dir(tmp_path_factory) -> Path:
    """One GX project for the session's `gx` tests that do not read their GX directory: its context
    is opened once (vigil.ingest.validation keeps it per directory), and its data source, assets and
    validation definitions are made once, instead of once per test."""
    return tmp_path_factory.mktemp("gx-shared") / "gx"


@pytest.fixture
def validator(request):
    """The load's validation: Great Expectations for a test marked `gx` (whose subject is the
    validation record), else the SQL rule counts (vigil.ingest.validation.SqlRuleCounts): the same
    audit rows without GX's seconds per delivery."""
    from vigil.ingest import validation

    if request.node.get_closest_marker("gx"):
        return validation.GREAT_EXPECTATIONS
    return validation.SQL_RULE_COUNTS


@pytest.fixture
def warehouse_con(tmp_path):
    from vigil import warehouse

    con = warehouse.connect(tmp_path / "wh" / "vigil.duckdb")
    warehouse.create_layout(con)
    yield con
    con.close()


@pytest.fixture
def ingest_folder(request, tmp_path, warehouse_con, validator):
    """Ingest one delivery folder into the test warehouse (plain function, no Prefect), validated by
    the `validator` fixture; a `gx` test's results go to the session's shared GX project."""
    from vigil import warehouse
    from vigil.ingest.load import ingest_delivery

    gx_dir = (request.getfixturevalue("shared_gx_dir") if request.node.get_closest_marker("gx")
              else warehouse.gx_dir_for(tmp_path / "wh" / "vigil.duckdb"))

    def run(folder: Path):
        return ingest_delivery(warehouse_con, folder, gx_dir, validator=validator)

    return run
