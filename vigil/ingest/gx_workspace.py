"""The validation workspace: the DuckDB database where Great Expectations reads a delivery's
validation frames, through SQLAlchemy (URL `duckdb+vigil://`). An ingest's frames stay where it
built them, in the scratch database of its warehouse connection, and GX reads them through cursors
of that connection; frames handed over from outside DuckDB are copied into this process's own
in-memory database.

GX 1.24 runs its SQL engine on DuckDB only with two things it lacks, and fast only with a third
(found in its and duckdb_engine's source; issue great_expectations#10738):
  - Results must outlive the connection. GX fetches a query's rows after closing the connection it
    ran on; SQLAlchemy 2 ends that connection with a ROLLBACK, which discards DuckDB's pending
    result, and every metric came back empty ("list index out of range", success=False, nothing
    raised). GX only reads the workspace, so this dialect issues no BEGIN, COMMIT or ROLLBACK:
    every statement runs in DuckDB's own autocommit and its result stays fetchable.
  - A regex dialect. GX knows no DuckDB and refuses regex expectations for it. duckdb_engine's
    dialect is SQLAlchemy's PostgreSQL dialect underneath and DuckDB's `~` is PostgreSQL's
    (regexp_matches), so the dialect names itself postgresql and GX renders `column ~ regex`.
  - Column reflection from DuckDB's own catalog (get_columns, get_pk_constraint below).
The test suite checks GX's counts against the SQL rules (vigil.ingest.rules) on adversarial frames, and
every load refuses a delivery on which the two disagree.

Imported only where GX is (vigil.ingest.validation imports it inside its functions): duckdb_engine
pulls in SQLAlchemy's PostgreSQL dialect, which only a validation needs.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import duckdb
import duckdb_engine
from sqlalchemy.engine import reflection

URL = "duckdb+vigil://"


@dataclass(frozen=True)
class Workspace:
    """Where GX reads validation frames: the tables of database `catalog`, through cursors of
    `connection` (an ingest's warehouse connection and its scratch database, or this process's own).
    Equal when both are the same, so a pooled cursor serves every validation of one connection."""

    connection: duckdb.DuckDBPyConnection
    catalog: str

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self.connection.cursor()
        cursor.execute(f'USE "{self.catalog}"')
        return cursor


_own: Workspace | None = None
_reading: Workspace | None = None


def own() -> Workspace:
    """This process's own workspace (an in-memory database, created on first use), for frames that
    come from outside DuckDB."""
    global _own
    if _own is None:
        _own = Workspace(duckdb.connect(":memory:"), "memory")
    return _own


def read_from(workspace: Workspace) -> None:
    """Point GX's SQLAlchemy connections at `workspace`. Validations run one at a time."""
    global _reading
    _reading = workspace


class _Connection(duckdb_engine.ConnectionWrapper):
    """A pooled SQLAlchemy connection: a cursor of the workspace being read, renewed when a
    validation reads another workspace (SQLAlchemy keeps connections across validations). DuckDB
    closes a cursor with the connection it came from, so a warehouse closes with its owner's
    connection."""

    def __init__(self) -> None:
        self.notices = []
        self._bound: tuple[Workspace, duckdb.DuckDBPyConnection] | None = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        workspace = _reading or own()
        if self._bound is None or self._bound[0] != workspace:
            self.close()
            self._bound = (workspace, workspace.cursor())
        return self._bound[1]

    def cursor(self) -> duckdb_engine.CursorWrapper:
        return duckdb_engine.CursorWrapper(self._cursor(), self)

    def __getattr__(self, name: str):
        return getattr(self._cursor(), name)

    def close(self) -> None:
        if self._bound is not None:
            with suppress(duckdb.Error):  # closed already, with the connection it came from
                self._bound[1].close()
            self._bound = None


# DuckDB's types of frame columns by the names its PostgreSQL catalog gives them (format_type).
_POSTGRESQL_TYPE_NAMES = {"BIGINT": "int8", "INTEGER": "int4", "DOUBLE": "float8", "BOOLEAN": "bool",
                          "VARCHAR": "varchar", "DATE": "date"}


class WorkspaceDialect(duckdb_engine.Dialect):
    name = "postgresql"
    supports_statement_cache = True

    def connect(self, *cargs, **cparams):
        return _Connection()

    def do_begin(self, dbapi_connection) -> None:
        pass

    def do_commit(self, dbapi_connection) -> None:
        pass

    def do_rollback(self, dbapi_connection) -> None:
        pass

    @reflection.cache  # per GX inspector, as duckdb_engine's
    def get_columns(self, connection, table_name, schema=None, **kw) -> list[dict]:
        # GX reflects every validated table. duckdb_engine reads PostgreSQL's catalog, which DuckDB
        # emulates over every table of the database (~0.1 s per table in a warehouse); DuckDB's own
        # catalog answers in ms. The same answer for the types a frame holds, else duckdb_engine's.
        rows = connection.exec_driver_sql(
            "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = coalesce(?, current_schema()) AND table_name = ? ORDER BY column_index",
            (schema, str(table_name))).fetchall()
        if not rows or any(data_type not in _POSTGRESQL_TYPE_NAMES for _, data_type, _ in rows):
            return super().get_columns(connection, table_name, schema, **kw)
        return [{"name": name, "type": self.ischema_names[_POSTGRESQL_TYPE_NAMES[data_type]](), "nullable": nullable,
                 "default": None, "autoincrement": False, "comment": None} for name, data_type, nullable in rows]

    def get_pk_constraint(self, connection, table_name, schema=None, **kw) -> dict:
        # GX asks for every validated table; frames have no keys, and the PostgreSQL reflection query
        # fails on DuckDB (no REGCLASS) after two catalog queries (~0.1 s per table).
        return {"constrained_columns": [], "name": None}


def register_dialect() -> None:
    from sqlalchemy.dialects import registry

    registry.register("duckdb.vigil", __name__, "WorkspaceDialect")
