"""The validation workspace: an in-memory DuckDB database of this process where Great Expectations
reads each delivery's validation frames, through SQLAlchemy (URL `duckdb+vigil://`).

GX 1.24 runs its SQL engine on DuckDB only with two things it lacks (found in its and
duckdb_engine's source; issue great_expectations#10738):
  - Results must outlive the connection. GX fetches a query's rows after closing the connection it
    ran on; SQLAlchemy 2 ends that connection with a ROLLBACK, which discards DuckDB's pending
    result, and every metric came back empty ("list index out of range", success=False, nothing
    raised). GX only reads the workspace, so this dialect issues no BEGIN, COMMIT or ROLLBACK:
    every statement runs in DuckDB's own autocommit and its result stays fetchable.
  - A regex dialect. GX knows no DuckDB and refuses regex expectations for it. duckdb_engine's
    dialect is SQLAlchemy's PostgreSQL dialect underneath and DuckDB's `~` is PostgreSQL's
    (regexp_matches), so the dialect names itself postgresql and GX renders `column ~ regex`.
The test suite checks GX's counts against the SQL rules (vigil.rules) on adversarial frames, and
every load refuses a delivery on which the two disagree.

Imported only where GX is (vigil.gx_validation imports it inside its functions): duckdb_engine
pulls in SQLAlchemy's PostgreSQL dialect, which only a validation needs.
"""

from __future__ import annotations

import atexit
import os
import sys

import duckdb
import duckdb_engine

URL = "duckdb+vigil://"
_workspace: duckdb.DuckDBPyConnection | None = None


def workspace() -> duckdb.DuckDBPyConnection:
    """This process's workspace (created on first use); each SQLAlchemy connection is a cursor of it."""
    global _workspace
    if _workspace is None:
        _workspace = duckdb.connect(":memory:")
    return _workspace


class WorkspaceDialect(duckdb_engine.Dialect):
    name = "postgresql"
    supports_statement_cache = True

    def connect(self, *cargs, **cparams):
        return duckdb_engine.ConnectionWrapper(workspace().cursor())

    def do_begin(self, dbapi_connection) -> None:
        pass

    def do_commit(self, dbapi_connection) -> None:
        pass

    def do_rollback(self, dbapi_connection) -> None:
        pass


def register_dialect() -> None:
    from sqlalchemy.dialects import registry

    registry.register("duckdb.vigil", __name__, "WorkspaceDialect")


def _quiet_teardown() -> None:
    """With duckdb_engine and GX both imported, DuckDB's extension reports at interpreter exit that
    its ~27 module-level type constants "leaked" (nanobind's check runs after Python's teardown):
    some 60 lines of stderr after every command, about no object of ours. atexit runs after the
    program's output, any traceback and the joins of its threads: stderr goes to /dev/null only
    for the teardown."""
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


atexit.register(_quiet_teardown)
