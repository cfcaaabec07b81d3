"""The one module that writes the results tables (schema results).

Every results table is defined by its file sql/results/<table>.sql (CREATE TABLE IF NOT EXISTS and a
COMMENT on the table and each column) and carries run_id and variant (main, or a sensitivity analysis
described in results.variants); results.runs has one row per run. Writers elsewhere compute frames; this module
creates the tables, refuses a run_id that a table already holds (a run's results are never
overwritten), inserts frames by column name (NaN and infinities become NULL), copies the run's
attrition from cohort.attrition, inserts the results.runs row and records the snapshot hash.

Nothing here begins or commits a transaction: the callers (vigil.analysis.runs.analyse,
vigil.cohort.build_cohort, vigil.analysis.sap.run_analyses) run inside the run's transaction, and
record_snapshot in its own short one after the run.
"""

from __future__ import annotations

import duckdb
import polars as pl

from vigil.analysis.variants import MAIN  # the variant of the SAP's primary analysis
from vigil.warehouse.sqlfiles import SqlFile, execute_file, sql_file

RUNS = "runs"
ATTRITION = "attrition"
VARIANTS = "variants"


def table_file(table: str) -> SqlFile:
    return sql_file("results", table)


def create_tables(con: duckdb.DuckDBPyConnection, tables) -> None:
    """CREATE TABLE IF NOT EXISTS (with its comments) for each named results table."""
    for table in tables:
        execute_file(con, table_file(table))


def prepare(con: duckdb.DuckDBPyConnection, run_id: int, tables, variant: str = MAIN) -> None:
    """Before a writer adds run run_id's variant to the tables: create them if needed and refuse a
    (run_id, variant) any holds."""
    check_run_id(run_id)
    create_tables(con, tables)
    refuse_existing_run(con, run_id, tables, variant)


def refuse_existing_run(con: duckdb.DuckDBPyConnection, run_id: int, tables, variant: str = MAIN) -> None:
    """ValueError when any of the tables already holds run_id (its variant; results.runs: the run): a run's
    results are never overwritten."""
    check_run_id(run_id)
    for table in tables:
        if table == RUNS:
            [(n,)] = con.execute("SELECT count(*) FROM results.runs WHERE run_id = ?", [run_id]).fetchall()
        else:
            [(n,)] = con.execute(f'SELECT count(*) FROM results."{table}" WHERE run_id = ? AND variant = ?',
                                 [run_id, variant]).fetchall()
        if n:
            what = f"run {run_id}" if variant == MAIN or table == RUNS else f"run {run_id} variant {variant}"
            raise ValueError(f"results.{table} already holds {what}: a run's results are never overwritten "
                             "(duplicate run_id)")


def check_run_id(run_id) -> None:
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise TypeError(f"run_id must be an integer, not {run_id!r}")


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, run_id: int | None = None,
                 variant: str | None = MAIN) -> int:
    """Append the frame to results.<table> by column name, with run_id and variant as columns when given
    (variant None: the frame has its own); NaN and infinities become NULL. Returns the rows written."""
    if run_id is not None:
        frame = frame.with_columns(pl.lit(run_id, dtype=pl.Int64).alias("run_id"))
    if run_id is not None and variant is not None:
        frame = frame.with_columns(pl.lit(variant).alias("variant"))
    floats = [c for c, t in frame.schema.items() if t in (pl.Float64, pl.Float32)]
    frame = frame.with_columns([pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
                                for c in floats])
    if frame.is_empty():
        return 0
    arrow = frame.to_arrow()
    con.register("_vigil_results_frame", arrow)
    try:
        con.execute(f'INSERT INTO results."{table}" BY NAME SELECT * FROM _vigil_results_frame')
    finally:
        con.unregister("_vigil_results_frame")
    return frame.height


def insert_attrition(con: duckdb.DuckDBPyConnection, run_id: int) -> str:
    """Copy cohort.attrition into results.attrition as run run_id; returns the relation written."""
    prepare(con, run_id, [ATTRITION])
    con.execute("""
        INSERT INTO results.attrition (run_id, step, description, n_remaining, n_excluded)
        SELECT $run_id, step, description, n_remaining, n_excluded FROM cohort.attrition ORDER BY step""",
                {"run_id": run_id})
    return table_file(ATTRITION).qualified_name


def add_variant_column(con: duckdb.DuckDBPyConnection) -> None:
    """Schema migration 1 -> 2 (vigil.warehouse.create_layout): each results table without the column variant
    is made again from its file (variant in its primary key) and its rows copied in as variant main."""
    tables = [name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'results' "
        "AND table_name NOT IN (SELECT table_name FROM duckdb_columns() WHERE schema_name = 'results' "
        "AND column_name = 'variant') AND table_name <> ?", [RUNS]).fetchall()]
    for table in tables:
        con.execute(f'ALTER TABLE results."{table}" RENAME TO "{table}_v1"')
        create_tables(con, [table])
        con.execute(f'INSERT INTO results."{table}" BY NAME SELECT * FROM results."{table}_v1"')
        con.execute(f'DROP TABLE results."{table}_v1"')


def next_run_id(con: duckdb.DuckDBPyConnection) -> int:
    (run_id,) = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM results.runs").fetchone()
    return int(run_id)


RUN_COLUMNS = ("run_id", "started_at", "finished_at", "status", "code_version", "sap_version", "codelist_versions",
               "parameters", "deliveries", "flow_run_id", "step_seconds")


def insert_run(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    """The results.runs row of a run (JSON columns given as JSON text). Refuses a run_id already present."""
    missing = set(RUN_COLUMNS) - set(row)
    if missing:
        raise ValueError(f"results.runs row lacks {sorted(missing)}")
    refuse_existing_run(con, row["run_id"], [RUNS])
    columns = ", ".join(RUN_COLUMNS)
    values = ", ".join(f"${c}" for c in RUN_COLUMNS)
    con.execute(f"INSERT INTO results.runs ({columns}) VALUES ({values})", {c: row[c] for c in RUN_COLUMNS})


def record_snapshot(con: duckdb.DuckDBPyConnection, run_id: int, sha256: str) -> bool:
    """Record the sha256 of run run_id's published snapshot in results.runs.snapshot_sha256. False (nothing
    written) when the warehouse has no results.runs row for the run (e.g. a snapshot published before any run)."""
    check_run_id(run_id)
    (exists,) = con.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema = 'results' AND table_name = 'runs'").fetchone()
    if not exists:
        return False
    create_tables(con, [RUNS])  # with the columns an older warehouse lacks (ALTER in runs.sql)
    (n,) = con.execute("SELECT count(*) FROM results.runs WHERE run_id = ?", [run_id]).fetchone()
    if not n:
        return False
    con.execute("UPDATE results.runs SET snapshot_sha256 = ? WHERE run_id = ?", [sha256, run_id])
    return True
