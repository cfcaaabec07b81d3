"""The exact files of an export: every results table of one run, typed and unformatted, for the study statisticians.

Which tables: every table of schema `results` that has a column `run_id`, found in the catalog
(`duckdb_columns()`), never from a list, so a table added to sql/results/ is exported without a change
here; results.runs is one of them (the run's row). Rows: `WHERE run_id = N`, every variant (the
column `variant` says which analysis a row belongs to), sorted by all columns so that the same run
exports the same bytes.

- Parquet: DuckDB's `COPY ... TO (FORMAT parquet)`: the warehouse's types (BIGINT, DOUBLE, DATE,
  TIMESTAMP WITH TIME ZONE, JSON, BOOLEAN...), NULL as null.
- CSV: DuckDB's `COPY ... TO (FORMAT csv, HEADER)`: UTF-8, a header row, numbers unformatted (integers
  whole, doubles in the shortest text that reads back to the same double, e.g. 0.1, 1e-300), NULL as an
  empty field (an empty text is written as "" ), dates ISO 8601 (2026-06-30), timestamps ISO 8601 in
  UTC (2026-06-30T12:00:00.000000Z; naive timestamps without the Z), booleans true/false, JSON as its
  text.

Text is written exactly as stored: no formula neutralisation and no escaping of control characters.
These files are the database's exact values for the study statisticians (SAP 5: "the database itself
keeps exact values for the study statisticians"): a statistician reading them with R, SAS, Python or
DuckDB must get what the warehouse holds, and the CSV must say the same as the Parquet. A delivered
text that a spreadsheet would run as a formula (it starts with = + - @, tab or CR) is therefore
counted instead (`formula_like_cells`), and the folder's README names each file and column that has
one and says to read the CSVs with R, SAS or Python, not a spreadsheet. What leaves the study team is
the tidy table (vigil.export.tidy), where delivered text is inert and neutralised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from vigil.report.disclosure import neutralise_formula

FORMATS = ("parquet", "csv")
TEXT_TYPES = ("VARCHAR", "JSON")


@dataclass
class ExactFile:
    table: str
    path: Path
    rows: int
    columns: list[tuple[str, str]]  # (name, DuckDB type) in table order
    formula_like: dict[str, int]  # column -> text cells a spreadsheet would read as a formula (CSV only)


def run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table of schema results with a run_id column, by name."""
    rows = con.execute("""
        SELECT c.table_name
        FROM duckdb_columns() c
        JOIN duckdb_tables() t USING (database_name, schema_name, table_name)
        WHERE c.database_name = current_database() AND c.schema_name = 'results' AND c.column_name = 'run_id'
        ORDER BY c.table_name""").fetchall()
    return [name for (name,) in rows]


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(name, dtype) for name, dtype in con.execute("""
        SELECT column_name, data_type FROM duckdb_columns()
        WHERE database_name = current_database() AND schema_name = 'results' AND table_name = ?
        ORDER BY column_index""", [table]).fetchall()]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_expression(name: str, dtype: str) -> str:
    column = _ident(name)
    if dtype == "TIMESTAMP WITH TIME ZONE":  # the connection's TimeZone is UTC (write_exact)
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {column}"
    if dtype.startswith("TIMESTAMP"):
        return f"strftime(CAST({column} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f') AS {column}"
    return column


def write_exact(con: duckdb.DuckDBPyConnection, run_id: int, folder: Path, fmt: str) -> list[ExactFile]:
    """One file per results table of run `run_id` (and results.runs' row) in `folder`: <table>.parquet or
    <table>.csv. `con` may be read-only; its TimeZone is set to UTC (timestamps in the CSV)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise TypeError(f"run_id must be an integer, not {run_id!r}")
    con.execute("SET TimeZone = 'UTC'")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in run_tables(con):
        columns = table_columns(con, table)
        source = f"results.{_ident(table)} WHERE run_id = {run_id}"
        path = folder / f"{table}.{fmt}"
        if fmt == "parquet":
            select = f"SELECT * FROM {source} ORDER BY ALL"
            options = "FORMAT parquet"
        else:
            select = f"SELECT {', '.join(_csv_expression(n, t) for n, t in columns)} FROM {source} ORDER BY ALL"
            options = "FORMAT csv, HEADER true, DELIMITER ','"
        con.execute(f"COPY ({select}) TO {_literal(str(path))} ({options})")
        [(rows,)] = con.execute(f"SELECT count(*) FROM {source}").fetchall()
        formula_like = formula_like_cells(con, table, run_id, columns) if fmt == "csv" else {}
        written.append(ExactFile(table, path, int(rows), columns, formula_like))
    return written


def formula_like_cells(con: duckdb.DuckDBPyConnection, table: str, run_id: int,
                       columns: list[tuple[str, str]]) -> dict[str, int]:
    """Text columns of the run's rows -> number of cells a spreadsheet would read as a formula (the cells
    vigil.report.disclosure.neutralise_formula would change); columns without any are left out."""
    found = {}
    for name, dtype in columns:
        if dtype not in TEXT_TYPES:
            continue
        rows = con.execute(f"SELECT CAST({_ident(name)} AS VARCHAR) AS v, count(*) FROM results.{_ident(table)} "
                           f"WHERE run_id = {run_id} AND {_ident(name)} IS NOT NULL GROUP BY v").fetchall()
        n = sum(count for value, count in rows if neutralise_formula(value) != value)
        if n:
            found[name] = n
    return found
