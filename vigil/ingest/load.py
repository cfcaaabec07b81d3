"""Loading a checked delivery into the warehouse: raw, quarantine, staging and audit, all or nothing.

One delivery is one DuckDB transaction. Row rules come from the contract (vigil.ingest.rules) and are
evaluated twice, by SQL (which decides the quarantine) and by Great Expectations (the
validation record, run on its own thread while the delivery is stored); a disagreement refuses
the delivery before COMMIT rather than loading something the record does not describe.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from vigil import progress
from vigil.contract import Contract, Table, load_contract, sql_literal
from vigil.ingest.delivery import (MAX_LINE_BYTES, Delivery, Refusal, csv_line_ending_problem, csv_record_line,
                            csv_row_lines, find_deliveries, inspect_delivery, ManifestFacts)
from vigil.ingest import validation as gx_validation
from vigil.ingest.rules import frame_columns, typed_expression, violation_sql
from vigil.inert import inert
from vigil.warehouse import LoadFailed, create_layout, damage_on, error_line, rollback
from vigil.warehouse import checkpoint as checkpoint_warehouse

log = logging.getLogger(__name__)


@dataclass
class TableCounts:
    received: int
    loaded: int
    quarantined: int


@dataclass
class LoadOutcome:
    folder: Path
    status: str  # accepted | refused | already_loaded | failed (the warehouse could not take it)
    site_id: str | None = None
    data_cut: date | None = None
    delivery_id: int | None = None
    message: str = ""
    tables: dict[str, TableCounts] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    current: bool = False  # became the site's current delivery in staging
    replaced_rows: int = 0  # rows of the site's earlier delivery deleted from raw and staging
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each load step


def _q(con: duckdb.DuckDBPyConnection, sql: str, params=None):
    return con.execute(sql, params or [])


# The in-memory database where a delivery is read, checked and cascaded before its transaction
# (attached for one load, detached after it). A transaction may write to one database only:
# everything in it is written before BEGIN.
SCRATCH = "vigil_load"


def _delivered(table_name: str) -> str:
    """The scratch view of a delivered table (see _read_table)."""
    return f"{SCRATCH}.load_{table_name}"


def _read_table(con, delivery: Delivery, table: Table) -> None:
    """Delivered rows as view load_<table> of the scratch database: _row (1-based) and every
    column as text."""
    f = delivery.files[table.name]
    if delivery.fmt == "csv":
        columns = "{" + ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in f.columns) + "}"
        source = (f"read_csv($path, header = true, delim = ',', quote = '\"', escape = '\"', "
                  f"columns = {columns}, auto_detect = false, strict_mode = true, null_padding = false, "
                  f"encoding = 'utf-8', nullstr = '', max_line_size = {MAX_LINE_BYTES})")
        select = ", ".join(f'"{c}"' for c in table.column_names)
    else:
        source = "read_parquet($path)"
        select = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in table.column_names)
    try:
        _q(con, f"CREATE OR REPLACE TABLE {_delivered(table.name)}_src AS SELECT {select} FROM {source}",
           {"path": str(f.path)})
    except duckdb.Error as exc:
        raise _parse_refusal(exc, delivery, table) from None
    # Insertion order is file order and rowids are consecutive in it: a view numbers the rows
    # without a second copy of the text.
    first_rowid = _q(con, f"SELECT coalesce(min(rowid), 0) FROM {_delivered(table.name)}_src").fetchone()[0]
    _q(con, f"CREATE OR REPLACE VIEW {_delivered(table.name)} AS "
            f"SELECT rowid - {int(first_rowid)} + 1 AS _row, * FROM {_delivered(table.name)}_src")
    rows = _q(con, f"SELECT count(*) FROM {_delivered(table.name)}").fetchone()[0]
    if rows != f.rows:
        raise Refusal(f"row count mismatch: manifest says {f.rows}, file has {rows}", f.name)
    if delivery.fmt == "parquet":
        _refuse_non_text(con, delivery, table)


def _refuse_non_text(con, delivery: Delivery, table: Table) -> None:
    """The CSV text rules for Parquet values (the CSV scan enforces them on the bytes, vigil.ingest.delivery):
    no NUL character, no value longer than a CSV line may be."""
    def first_column(condition: str) -> str:  # the first column whose value meets the condition, or NULL
        quoted = {c: f'"{c}"' for c in table.column_names}
        cases = [f"CASE WHEN {condition.format(c=quoted[c])} THEN {sql_literal(c)} END" for c in table.column_names]
        return f"coalesce({', '.join(cases)})"

    row = _q(con, f"""SELECT * FROM (SELECT _row, {first_column("contains({c}, chr(0))")} AS nul,
                                            {first_column(f"strlen({{c}}) > {MAX_LINE_BYTES}")} AS long
                                     FROM {_delivered(table.name)})
                      WHERE nul IS NOT NULL OR long IS NOT NULL ORDER BY _row LIMIT 1""").fetchone()
    if row:
        problem = ("holds a NUL character: binary data, not text" if row[1] else
                   f"holds a value longer than {MAX_LINE_BYTES} bytes")
        raise Refusal(problem, delivery.files[table.name].name, row[0], row[1] or row[2])


def _parse_refusal(exc: duckdb.Error, delivery: Delivery, table: Table) -> Refusal:
    """DuckDB's reading error as a refusal at the line where the record starts in the file."""
    f = delivery.files[table.name]
    # DuckDB's text: "CSV Error on Line: N", "Original Line: <the raw row, may span lines>", the
    # problem, then "Possible fixes" and its options. Only the problem is kept (the row may hold data).
    lines = [ln.strip() for ln in str(exc).split("\nPossible", 1)[0].splitlines() if ln.strip()]
    first = lines[0].split("Error:", 1)[-1].strip() if lines else str(exc)
    marker = "CSV Error on Line:"
    if not first.startswith(marker) or delivery.fmt != "csv":
        problem = csv_line_ending_problem(f.path) if delivery.fmt == "csv" else None
        if problem:
            return Refusal(f"cannot be parsed: {problem[1]}", f.name, problem[0])
        return Refusal(f"cannot be parsed: {first}", f.name)
    record = first.removeprefix(marker).strip()
    line = csv_record_line(f.path, int(record)) if record.isdigit() else None
    return Refusal(f"cannot be parsed: {lines[-1]}", f.name, line)


def _line_numbers(con, delivery: Delivery, table: Table) -> str:
    """SQL template for a row's line in its file (header = line 1; Parquet: row number); {row} is
    the row ordinal column to use."""
    f = delivery.files[table.name]
    if delivery.fmt != "csv" or f.one_line_per_row:
        return "{row} + 1" if delivery.fmt == "csv" else "{row}"
    # Quoted newlines or blank lines: rows and lines differ, so count them the way a CSV reader does.
    starts = csv_row_lines(f.path)
    map_table = f"{SCRATCH}.line_map_{table.name}"
    _q(con, f"CREATE OR REPLACE TABLE {map_table} (_row BIGINT, line_number BIGINT)")
    con.executemany(f"INSERT INTO {map_table} VALUES (?, ?)", list(enumerate(starts, start=1)))
    return f"(SELECT m.line_number FROM {map_table} m WHERE m._row = {{row}})"


def _lines(delivery: Delivery, table: Table, rows: list[int]) -> list[int | None]:
    """Lines of rows in a refused file: header = line 1 in CSV, the row number in Parquet."""
    f = delivery.files[table.name]
    if delivery.fmt != "csv":
        return rows
    if f.one_line_per_row:
        return [row + 1 for row in rows]
    starts = csv_row_lines(f.path)
    return [starts[row - 1] if row <= len(starts) else None for row in rows]


def _refuse_foreign_or_duplicate_patients(con, delivery: Delivery, contract: Contract) -> None:
    """Refusals that need the rows: a patient_id of another site, a duplicate patient_id."""
    patient_id_format = next(r.params["regex"] for r in contract.tables["patients"].column("patient_id").rules
                             if r.kind == "pattern")
    for table in contract.tables.values():
        row = _q(con, f"""
            SELECT _row, patient_id FROM {_delivered(table.name)}
            WHERE NOT starts_with(patient_id, $site || '-') AND regexp_full_match(patient_id, $fmt)
            ORDER BY _row LIMIT 1""", {"fmt": patient_id_format, "site": delivery.site_id}).fetchone()
        if row:
            raise Refusal(f"patient_id {row[1]!r} belongs to another site (delivery is {delivery.site_id})",
                          delivery.files[table.name].name, _lines(delivery, table, [row[0]])[0], "patient_id")
        for key in table.refuse_duplicate:
            dup = _q(con, f"""
                SELECT {key}, list(_row ORDER BY _row) FROM {_delivered(table.name)}
                WHERE {key} IS NOT NULL GROUP BY {key} HAVING count(*) > 1 ORDER BY min(_row) LIMIT 1""").fetchone()
            if dup:
                lines = _lines(delivery, table, dup[1][:5])
                raise Refusal(f"duplicate {key} {dup[0]!r} (lines {', '.join(map(str, lines))})",
                              delivery.files[table.name].name, lines[1], key)


def _build_frames(con, delivery: Delivery, contract: Contract) -> None:
    """Table frame_<table> of the scratch database: the validation frame described in vigil.ingest.rules."""
    # Context (contract `context:`): per patient, values from another table of the delivery.
    # max() because a duplicated follow_up row must not multiply rows (those rows are quarantined).
    sources: dict[str, list[tuple[str, str]]] = {}
    for name, spec in contract.context.items():
        sources.setdefault(spec["from"], []).append((name, spec["column"]))
    per_source = []
    for source, columns in sources.items():
        table = contract.tables[source]
        select = ", ".join(f"max({typed_expression(contract, table.column(c).type, c)}) AS {name}"
                           for name, c in columns)
        per_source.append(f"(SELECT patient_id AS ctx_key, {select} FROM {_delivered(source)} "
                          f"WHERE patient_id IS NOT NULL GROUP BY patient_id)")
    # One context table, so that a frame joins once however many tables its context comes from.
    _q(con, f"CREATE OR REPLACE TABLE {SCRATCH}.context AS SELECT * FROM "
            + " FULL JOIN ".join(f"{sql} s{i}" + (" USING (ctx_key)" if i else "") for i, sql in enumerate(per_source)))
    for table in contract.tables.values():
        select = ["t._row", *frame_columns(contract, table, "t"), *(f"c.{name}" for name in table.context_columns)]
        join = f"LEFT JOIN {SCRATCH}.context c ON c.ctx_key = t.patient_id" if table.context_columns else ""
        _q(con, f"CREATE OR REPLACE TABLE {SCRATCH}.frame_{table.name} AS "
                f"SELECT {', '.join(select)} FROM {_delivered(table.name)} t {join}")


def _evaluate_rules(con, delivery: Delivery, contract: Contract) -> dict[str, int]:
    """Table broken_<table>(_row, rules) of the scratch database: rows breaking any rule; returns
    the SQL count per rule."""
    counts: dict[str, int] = {}
    for table in contract.tables.values():
        frame = f"{SCRATCH}.frame_{table.name}"
        flags = ", ".join(f"{violation_sql(contract, r, delivery.data_cut, frame)} AS v{i}"
                          for i, r in enumerate(table.rules))
        rule_ids = ", ".join(f"CASE WHEN v{i} THEN {sql_literal(r.rule_id)} END" for i, r in enumerate(table.rules))
        broken_anywhere = " OR ".join(f"v{i}" for i in range(len(table.rules)))
        # The list of a row's rules is built for the rows that break one, not for every row.
        _q(con, f"""CREATE OR REPLACE TABLE {SCRATCH}.broken_{table.name} AS
            SELECT _row, list_filter([{rule_ids}], lambda x: x IS NOT NULL) AS rules
            FROM (SELECT _row, {flags} FROM {frame}) WHERE {broken_anywhere}""")
        per_rule = dict(_q(con, f"SELECT r, count(*) FROM (SELECT unnest(rules) AS r FROM {SCRATCH}.broken_{table.name}) "
                                f"GROUP BY r").fetchall())
        counts.update({r.rule_id: per_rule.get(r.rule_id, 0) for r in table.rules})
    return counts


def _cascade(con, contract: Contract) -> None:
    """Table quarantined_<table>(_row, rule_id, all_rules) of the scratch database: own rule breaks
    plus rows whose patient is quarantined (DTS section 3), and patients left without a valid
    follow_up row."""
    _q(con, f"CREATE OR REPLACE TABLE {SCRATCH}.bad_patients AS SELECT DISTINCT f.patient_id FROM {SCRATCH}.frame_patients f "
            f"JOIN {SCRATCH}.broken_patients b USING (_row) WHERE f.patient_id IS NOT NULL")
    # A follow_up row of a quarantined patient goes too; then a patient with no follow_up row left.
    _own_plus_cascade(con, "follow_up")
    _q(con, f"""INSERT INTO {SCRATCH}.bad_patients
        SELECT DISTINCT p.patient_id FROM {SCRATCH}.frame_patients p
        WHERE p.patient_id IS NOT NULL AND p.patient_id NOT IN (SELECT patient_id FROM {SCRATCH}.bad_patients)
          AND NOT EXISTS (SELECT 1 FROM {SCRATCH}.frame_follow_up f WHERE f.patient_id = p.patient_id
                          AND f._row NOT IN (SELECT _row FROM {SCRATCH}.quarantined_follow_up))""")
    for table in contract.tables.values():
        if table.name == "patients":
            _q(con, f"""CREATE OR REPLACE TABLE {SCRATCH}.quarantined_patients AS
                SELECT p._row, coalesce(b.rules[1], 'no_follow_up') AS rule_id,
                       coalesce(b.rules, ['no_follow_up']) AS all_rules
                FROM {SCRATCH}.frame_patients p LEFT JOIN {SCRATCH}.broken_patients b USING (_row)
                WHERE b._row IS NOT NULL OR p.patient_id IN (SELECT patient_id FROM {SCRATCH}.bad_patients)""")
        elif table.name != "follow_up":
            _own_plus_cascade(con, table.name)


def _own_plus_cascade(con, table_name: str) -> None:
    _q(con, f"""CREATE OR REPLACE TABLE {SCRATCH}.quarantined_{table_name} AS
        SELECT f._row,
               coalesce(b.rules[1], 'patient_quarantined') AS rule_id,
               CASE WHEN f.patient_id IN (SELECT patient_id FROM {SCRATCH}.bad_patients)
                    THEN list_append(coalesce(b.rules, []), 'patient_quarantined') ELSE b.rules END AS all_rules
        FROM {SCRATCH}.frame_{table_name} f LEFT JOIN {SCRATCH}.broken_{table_name} b USING (_row)
        WHERE b._row IS NOT NULL OR f.patient_id IN (SELECT patient_id FROM {SCRATCH}.bad_patients)""")


def _reason_sql(contract: Contract) -> tuple[str, str]:
    """CASE expressions mapping a rule_id to its reason and its column."""
    derived = {"patient_quarantined": ("patient_quarantined", "patient_id"),
               "no_follow_up": ("no_follow_up", "patient_id")}
    pairs = {r.rule_id: (r.reason, r.column) for r in contract.rules} | derived
    reason = " ".join(f"WHEN {sql_literal(k)} THEN {sql_literal(v[0])}" for k, v in pairs.items())
    column = " ".join(f"WHEN {sql_literal(k)} THEN {sql_literal(v[1])}" for k, v in pairs.items())
    return f"CASE rule_id {reason} END", f"CASE rule_id {column} END"


def already_loaded(con, delivery: Delivery) -> int | None:
    """The accepted delivery with this content, if any. A refused one is judged again: a limit of the
    study's (VIGIL_MAX_QUARANTINE_SHARE) may have changed since."""
    row = _q(con, "SELECT delivery_id FROM audit.delivery_receipts WHERE fingerprint = $fp AND status = 'accepted' "
                  "ORDER BY delivery_id LIMIT 1", {"fp": delivery.fingerprint}).fetchone()
    return row[0] if row else None


def _refuse_same_moment(con, delivery: Delivery) -> None:
    """Two deliveries of one site and cut with the same created_at but other content: which one is
    the correction cannot be told (DTS section 1 orders by created_at), so the later arrival is refused
    rather than silently winning."""
    row = _q(con, """SELECT delivery_id FROM audit.delivery_receipts WHERE status = 'accepted' AND site_id = $site
                     AND data_cut = $cut AND created_at = $created AND fingerprint <> $fp ORDER BY delivery_id LIMIT 1""",
             {"site": delivery.site_id, "cut": delivery.data_cut, "created": delivery.created_at,
              "fp": delivery.fingerprint}).fetchone()
    if row:
        raise Refusal(f"delivery {row[0]} of site {delivery.site_id}, cut {delivery.data_cut} has the same created_at "
                      f"({delivery.created_at.isoformat()}) and other content: a correction needs a later created_at",
                      "manifest.json")


def _refuse_mostly_quarantined(con, delivery: Delivery, contract: Contract) -> None:
    """A delivery that would lose more than the study's share of a table's rows to quarantine is refused:
    accepted, it would replace the site's current data with little of it (contract `acceptance`)."""
    limit = contract.max_quarantine_share
    for table in contract.tables.values():
        received = delivery.files[table.name].rows
        quarantined = _q(con, f"SELECT count(*) FROM {SCRATCH}.quarantined_{table.name}").fetchone()[0]
        if received and quarantined / received > limit:
            raise Refusal(f"{quarantined} of {received} rows ({quarantined / received:.0%}) would be quarantined, "
                          f"more than the study accepts ({limit:.0%}, VIGIL_MAX_QUARANTINE_SHARE); nothing loaded",
                          delivery.files[table.name].name)


def _insert_receipt(con, delivery: Delivery | None, folder: Path, status: str, reason: str | None,
                    refused_file: str | None, manifest: ManifestFacts | None = None) -> int:
    """`manifest`: for a refusal before the delivery was inspected whole, what its manifest said."""
    d, m = delivery, manifest
    return _q(con, """
        INSERT INTO audit.delivery_receipts (site_id, data_cut, created_at, folder, file_format, fingerprint,
            manifest_sha256, file_hashes, status, reason, refused_file, loaded_at, supersedes)
        VALUES ($site, $cut, $created, $folder, $fmt, $fp, $msha, $hashes, $status, $reason, $file,
                CASE WHEN $status = 'accepted' THEN current_timestamp END,
                (SELECT max(delivery_id) FROM audit.deliveries WHERE $status = 'accepted' AND status = 'accepted'
                   AND site_id = $site AND (data_cut, created_at) < ($cut, $created)))
        RETURNING delivery_id""", {
        "site": d.site_id if d else m and m.site_id, "cut": d.data_cut if d else m and m.data_cut,
        "created": d.created_at if d else m and m.created_at, "folder": str(folder), "fmt": d.fmt if d else None,
        "fp": d.fingerprint if d else None, "msha": d.manifest_sha256 if d else m and m.manifest_sha256,
        "hashes": {f.name: f.sha256 for f in d.files.values()} if d else None,
        "status": status, "reason": reason, "file": refused_file}).fetchone()[0]


def _same_refusal(con, folder: Path, refusal: Refusal) -> int | None:
    """The receipt of this folder's last judgement if it was this same refusal: a bad delivery left in
    the landing folder is on record once, not again at every run of the landing watch."""
    row = _q(con, """SELECT delivery_id, status, reason FROM audit.delivery_receipts WHERE folder = $folder
                     ORDER BY delivery_id DESC LIMIT 1""", {"folder": str(folder)}).fetchone()
    return row[0] if row and row[1] == "refused" and row[2] == refusal.describe(folder) else None


def record_refusal(con, folder: Path, refusal: Refusal, delivery: Delivery | None = None) -> int:
    """A refused delivery is on record, in its own small transaction."""
    con.execute("BEGIN")
    try:
        delivery_id = _insert_receipt(con, delivery, folder, "refused", refusal.describe(folder), refusal.file,
                                      refusal.manifest)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return delivery_id


def _store(con, delivery: Delivery, contract: Contract, delivery_id: int, current: bool,
           line_exprs: dict[str, str]) -> tuple[dict[str, TableCounts], int]:
    """Quarantine, counts and (when current) the site's rows; returns the counts per table and the
    number of the site's earlier rows replaced."""
    reason_case, column_case = _reason_sql(contract)
    counts: dict[str, TableCounts] = {}
    replaced = 0
    lineage = {"id": delivery_id, "site": delivery.site_id, "cut": delivery.data_cut}
    for table in contract.tables.values():
        f = delivery.files[table.name]
        line_expr = line_exprs[table.name]
        raw_struct = ", ".join(f"{sql_literal(c)}: t.{c}" for c in table.column_names)
        _q(con, f"""INSERT INTO audit.quarantine
            SELECT $id, {sql_literal(table.name)}, $site, $cut, {sql_literal(f.name)}, {line_expr.format(row="q._row")},
                   {column_case}, {reason_case}, rule_id, all_rules, to_json({{{raw_struct}}})
            FROM {SCRATCH}.quarantined_{table.name} q JOIN {_delivered(table.name)} t USING (_row) ORDER BY q._row""", lineage)
        quarantined = _q(con, f"SELECT count(*) FROM {SCRATCH}.quarantined_{table.name}").fetchone()[0]
        counts[table.name] = TableCounts(f.rows, f.rows - quarantined, quarantined)
        _q(con, "INSERT INTO audit.delivery_tables VALUES ($id, $t, $file, $sha, $rec, $loaded, $quar)",
           {"id": delivery_id, "t": table.name, "file": f.name, "sha": f.sha256, "rec": f.rows,
            "loaded": f.rows - quarantined, "quar": quarantined})
        if current:
            replaced += _replace_site_rows(con, table, f.name, line_expr, lineage)
    return counts, replaced


def _store_validation(con, contract: Contract, delivery_id: int, validation, sql_counts: dict[str, int]) -> None:
    """Each rule's SQL and GX counts, and each table's GX validation result, with the delivery."""
    for table in contract.tables.values():
        tv = validation.tables[table.name]
        for rule in table.rules:
            _q(con, "INSERT INTO audit.rule_results VALUES ($id, $t, $rule, $reason, $sql, $gx)",
               {"id": delivery_id, "t": table.name, "rule": rule.rule_id, "reason": rule.reason,
                "sql": sql_counts[rule.rule_id], "gx": tv.unexpected_counts[rule.rule_id]})
        stats = tv.result["statistics"]
        _q(con, "INSERT INTO audit.validation_results VALUES ($id, $t, $suite, $ok, $n, $nok, $result)",
           {"id": delivery_id, "t": table.name, "suite": tv.suite_name, "ok": tv.success,
            "n": stats["evaluated_expectations"], "nok": stats["successful_expectations"],
            "result": json.dumps(tv.result, default=str)})


def _replace_site_rows(con, table: Table, file_name: str, line_expr: str, lineage: dict) -> int:
    """raw gets every delivered row, staging the typed valid ones; the site's earlier rows go (their
    number is returned)."""
    lineage_cols = f"$id, $site, $cut, {sql_literal(file_name)}, {line_expr.format(row='t._row')}"
    replaced = 0
    for layer in ("raw", "staging"):
        replaced += _q(con, f"DELETE FROM {layer}.{table.name} WHERE site_id = $site",
                       {"site": lineage["site"]}).fetchone()[0]
    cols = ", ".join(table.column_names)
    # File order without a sort: DuckDB keeps a scan's order in an INSERT (preserve_insertion_order).
    _q(con, f"INSERT INTO raw.{table.name} SELECT {lineage_cols}, {cols} FROM {_delivered(table.name)} t", lineage)
    _q(con, f"""INSERT INTO staging.{table.name}
        SELECT {lineage_cols}, {cols} FROM {SCRATCH}.frame_{table.name} t
        WHERE t._row NOT IN (SELECT _row FROM {SCRATCH}.quarantined_{table.name})""", lineage)
    return replaced


def load_delivery(con: duckdb.DuckDBPyConnection, delivery: Delivery, gx_dir: Path,
                  contract: Contract | None = None,
                  validator: gx_validation.Validator | None = None) -> LoadOutcome:
    """Load one inspected delivery in one transaction. Raises Refusal (nothing loaded) or LoadFailed.

    The delivery is first read, checked and cascaded into the scratch database (in memory, its own
    autocommit, nothing of the warehouse touched); Great Expectations then validates the frames
    there on its own thread while one transaction stores the delivery in the warehouse.
    `validator` is that validation (vigil.ingest.validation.Validator): Great Expectations unless
    given; the tests that are not about the validation record give SqlRuleCounts.
    """
    contract = contract or load_contract()
    validator = validator or gx_validation.GREAT_EXPECTATIONS
    outcome = LoadOutcome(delivery.folder, "accepted", delivery.site_id, delivery.data_cut)
    started = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        outcome.seconds[step] = round(now - started[0], 2)
        started[0] = now

    validator.preload()
    validating = None
    try:
        _q(con, f"ATTACH IF NOT EXISTS ':memory:' AS {SCRATCH}")
        for table in contract.tables.values():
            _read_table(con, delivery, table)
        _refuse_foreign_or_duplicate_patients(con, delivery, contract)
        _build_frames(con, delivery, contract)
        sql_counts = _evaluate_rules(con, delivery, contract)
        lap("read_and_rules")
        # GX reads the frames where they are, through cursors of this connection, while the delivery
        # is stored; both finish before COMMIT.
        validating = validator.start(
            gx_dir, delivery.label, con, SCRATCH, list(contract.tables), delivery.data_cut,
            {t: f.rows for t, f in delivery.files.items()}, contract)
        _cascade(con, contract)
        _refuse_mostly_quarantined(con, delivery, contract)
        line_exprs = {t.name: _line_numbers(con, delivery, t) for t in contract.tables.values()}
        lap("cascade")
        con.execute("BEGIN")
        outcome.delivery_id = _insert_receipt(con, delivery, delivery.folder, "accepted", None, None)
        # Current unless the site already has a later accepted delivery (audit.deliveries decides).
        outcome.current = _q(con, "SELECT status = 'accepted' FROM audit.deliveries WHERE delivery_id = $id",
                             {"id": outcome.delivery_id}).fetchone()[0]
        outcome.tables, outcome.replaced_rows = _store(con, delivery, contract, outcome.delivery_id,
                                                       outcome.current, line_exprs)
        lap("store")
        validation = validating.result()
        lap("great_expectations")  # what GX took beyond the store
        gx_counts = {r: n for tv in validation.tables.values() for r, n in tv.unexpected_counts.items()}
        disagreements = [f"{rule}: SQL {n}, GX {gx_counts.get(rule)}"
                         for rule, n in sql_counts.items() if gx_counts.get(rule) != n]
        if disagreements:
            raise Refusal("quarantine rules and Great Expectations disagree (" + "; ".join(disagreements[:3])
                          + "); nothing loaded, please report this as a vigil defect")
        _store_validation(con, contract, outcome.delivery_id, validation, sql_counts)
        outcome.quarantine_reasons = dict(_q(con, "SELECT reason, count(*) FROM audit.quarantine "
                                                  "WHERE delivery_id = $id GROUP BY reason ORDER BY reason",
                                             {"id": outcome.delivery_id}).fetchall())
        con.execute("COMMIT")
        lap("commit")
    except (duckdb.Error, OSError) as exc:  # e.g. disk full: a named failure, nothing of the delivery kept
        rollback(con)
        cause = damage_on(con, exc) or error_line(exc)  # a damaged warehouse is named as such
        raise LoadFailed(f"{inert(delivery.folder)}: the load failed and was rolled back, nothing of it was kept "
                         f"({cause})") from exc
    except BaseException:
        rollback(con)
        raise
    finally:
        if validating is not None:
            futures.wait([validating])  # never leave a validation running into the next delivery
        with suppress(duckdb.Error):  # a connection DuckDB invalidated (IO error) has nothing left to free
            _q(con, f"DETACH DATABASE IF EXISTS {SCRATCH}")  # the delivery's scratch tables, all at once
    # DuckDB's COMMIT after a failed statement returns normally and keeps nothing: check it stuck.
    stuck = _q(con, "SELECT count(*) FROM audit.delivery_receipts WHERE delivery_id = $id",
               {"id": outcome.delivery_id}).fetchone()[0]
    if stuck != 1:
        raise LoadFailed(f"{inert(delivery.folder)}: the warehouse did not keep the load (commit lost)")
    return outcome


def ingest_delivery(con: duckdb.DuckDBPyConnection, folder: Path, gx_dir: Path, today: date | None = None,
                    contract: Contract | None = None,
                    validator: gx_validation.Validator | None = None) -> LoadOutcome:
    """Check, then load or refuse one delivery folder; a refusal is recorded, never raised. A load that
    fails for the warehouse's sake (disk full, a lost commit) is status 'failed': nothing of it kept."""
    contract = contract or load_contract()
    delivery = None
    # The files are loaded from private copies made while they are hashed (vigil.ingest.delivery.inspect_delivery),
    # beside the warehouse, where the space for a load is planned; removed after the load.
    gx_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=gx_dir.parent) as copies:
            delivery = inspect_delivery(folder, contract, today, Path(copies))
            existing = already_loaded(con, delivery)
            if existing is not None:
                return LoadOutcome(folder, "already_loaded", delivery.site_id, delivery.data_cut, existing,
                                   f"identical to delivery {existing}; nothing changed")
            _refuse_same_moment(con, delivery)
            return load_delivery(con, delivery, gx_dir, contract, validator)
    except LoadFailed as failure:
        return LoadOutcome(folder, "failed", delivery.site_id, delivery.data_cut, None, str(failure))
    except Refusal as refusal:
        delivery_id = _same_refusal(con, folder, refusal) or record_refusal(con, folder, refusal, delivery)
        facts = delivery or refusal.manifest
        return LoadOutcome(folder, "refused", facts.site_id if facts else None,
                           facts.data_cut if facts else None, delivery_id, refusal.describe(folder))


def delivery_order(folders: list[Path]) -> list[Path]:
    """Deliveries in created_at order (DTS section 1); unreadable manifests first (they get refused)."""

    def created(folder: Path) -> str:
        try:
            return str(json.loads((folder / "manifest.json").read_text(encoding="utf-8-sig"))["created_at"])
        except Exception:  # an unreadable manifest is refused by inspect_delivery with the reason
            return ""

    return sorted(folders, key=lambda f: (created(f), f.name))


def ingest_all(con: duckdb.DuckDBPyConnection, paths: list[Path], gx_dir: Path,
               today: date | None = None, validator: gx_validation.Validator | None = None,
               each: Callable[[Path], LoadOutcome] | None = None,
               warn: Callable[[str], None] = log.warning) -> list[LoadOutcome]:
    """The one path of an ingest, with or without Prefect: the warehouse layout, every delivery under
    `paths` in created_at order, then one checkpoint. `each(folder)` loads one delivery (default:
    ingest_delivery on `con`; the ingest flow passes its task, so each delivery is a task run);
    `warn` hears a checkpoint that failed after the deliveries were committed."""
    create_layout(con)
    folders = delivery_order(find_deliveries(paths, load_contract()))
    load_one = each or (lambda folder: ingest_delivery(con, folder, gx_dir, today, validator=validator))
    outcomes = []
    for done, folder in enumerate(folders):
        progress.report("ingest", done, len(folders), inert(folder.name))
        outcomes.append(load_one(folder))
    problem = checkpoint(con, outcomes)
    if problem:
        warn(problem)
    progress.report("ingest", len(folders), len(folders), f"{len(folders)} deliveries")
    return outcomes


def checkpoint(con: duckdb.DuckDBPyConnection, outcomes: list[LoadOutcome]) -> str | None:
    """CHECKPOINT once after an ingest run, not after every delivery: a COMMIT is already durable in
    DuckDB's write-ahead log, and a checkpoint per delivery cost 1.4 s each at 1M patients. With
    DuckDB's vacuum only when the run replaced a site's rows, to reclaim their space. Returns what
    went wrong, or None."""
    try:
        checkpoint_warehouse(con, vacuum=any(o.replaced_rows for o in outcomes))
    except duckdb.Error as exc:
        return (f"the deliveries are committed, but the checkpoint failed ({error_line(exc)}); they are kept "
                "in DuckDB's write-ahead log, which the next open of the warehouse replays")
    return None
