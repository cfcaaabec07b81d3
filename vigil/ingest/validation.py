"""The contract's row rules as Great Expectations expectations: GX is the validation record.

Every row rule of the contract (`vigil.contract.Table.rules`) becomes exactly one built-in GX
expectation over the table's *validation frame* (defined in vigil/rules.py), with the semantics
of its SQL form `vigil.ingest.rules.violation_sql`: on any frame, GX's unexpected count of a rule is
the number of rows the SQL marks as breaking it. Rule kind by kind:

  required   ExpectColumnValuesToNotBeNull(<raw column>)
  parses     ExpectColumnValuesToNotBeNull(<col>) on the rows where <col>__raw is not null
  in_set     ExpectColumnValuesToBeInSet(<col>)                     (GX skips nulls)
  pattern    ExpectColumnValuesToMatchRegex(<col>, "^(?:REGEX)$")      (GX skips nulls)
  between    ExpectColumnValuesToBeBetween(<col>, strict_min)        (GX skips nulls)
  compare    >=, year>= (on <col>__year): ExpectColumnPairValuesAToBeGreaterThanB(or_equal=True)
             <=: the same with the columns swapped; ==: ExpectColumnPairValuesToBeEqual;
             all with ignore_row_if="either_value_is_missing"
             exists: ExpectColumnValuesToNotBeNull(<other>) on the rows where <col> is not null
  absent     ExpectColumnValuesToBeNull(<col>)
  unique     one column: ExpectColumnValuesToBeUnique (GX skips nulls); several:
             ExpectCompoundColumnsToBeUnique(ignore_row_if="any_value_is_missing"); both flag
             every copy of a duplicated key, like the SQL
  when       one more row condition, `<column> == <value>`, and-ed with the rule's own

GX reads the frames with its SQL engine, in DuckDB, where they are: an ingest's frames in the
scratch database of its warehouse connection, other frames copied into the process's own
workspace (vigil/gx_workspace.py, which says what GX 1.24 needs for that). On pandas, GX took
49 s of a 1M-patient ingest and its fixed cost per expectation dominated small ones; in DuckDB
each rule is one aggregate query over a typed table.

Facts of GX 1.24 (SQL engine) this relies on, read in the installed source:
  - `row_condition` takes Condition objects from great_expectations.expectations.row_conditions
    (`Column(c) == v`, `Column(c).is_not_null()`, `a & b`), rendered to a SQL WHERE clause.
    String row conditions with `condition_parser` are deprecated since 1.9.
  - ExpectColumnValuesToMatchRegex is `column ~ regex` (PostgreSQL's operator, RE2 in DuckDB): a
    search, hence the ^(?:REGEX)$ wrapping; RE2's `$` is the end of the text (a trailing newline
    does not match), like DuckDB's regexp_full_match in the SQL rules.
  - Result format BASIC is the cheapest that reports unexpected_count (BOOLEAN_ONLY drops it);
    it keeps at most `partial_unexpected_count` example values in `partial_unexpected_list`
    (SUMMARY/COMPLETE collect more: value counts, index lists). vigil sets that count to 0: the
    stored results, audit.validation_results and the Data Docs hold counts and percentages, never
    a delivered value (docs/ingest.md, "Delivered text on rendered surfaces"). With 0, GX's
    query for example values is `LIMIT 0` and the list is `[]`; `_delivered_values` checks every
    result for anything else, in case a GX upgrade changes that.
  - GX renders the run name (vigil's delivery label) into the Data Docs pages, their file paths
    and the index page's JavaScript data without escaping it: the label must be a plain name
    (`PLAIN_LABEL`), as every delivery folder name that the contract accepts is.
  - One ValidationDefinition per table (a table asset of the workspace), run on its own: a
    Checkpoint without actions adds nothing but a second freshness check. The delivery's Data
    Docs are built once (context.build_data_docs with the run's result and suite identifiers),
    not per table: every build rewrites the site index, which reads every validation result
    stored so far.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from vigil.contract import Contract, Rule, load_contract
from vigil.inert import inert
from vigil.ingest.rules import raw_column, resolve_bound, violation_sql, year_column, year_columns

if TYPE_CHECKING:  # importing GX takes ~4 s: only inside the functions that use it
    import pandas as pd
    import pyarrow as pa
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

# GX must not phone home: the pipeline and its tests run without network. The context's own
# config also says analytics_enabled: false (see _context).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

DATASOURCE_NAME = "vigil_workspace"  # GX's SQL data source on the validation workspace
BATCH_DEFINITION_NAME = "whole_frame"
DATA_DOCS_SITE = "local_site"
# Example values GX keeps per rule: none. Delivered values can be identifiers (a pseudonym, a name in
# free text) and hostile markup; Data Docs are plain HTML files that render GX's samples unescaped.
# Counts and percentages are exact without them.
PARTIAL_UNEXPECTED_COUNT = 0
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT}
# Keys of a GX expectation result that hold delivered values (samples, value counts, row indexes, rows).
VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
              "unexpected_list", "unexpected_index_list", "unexpected_rows")
# A delivery label (GX's run name): a plain name, shown by GX unescaped and used in its file paths.
PLAIN_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class GxValidationError(RuntimeError):
    """GX could not evaluate an expectation: its result holds an exception instead of a count."""


def suite_name(contract: Contract, table_name: str) -> str:
    return f"extract-v{contract.spec_version}.{table_name}"


# ---------------------------------------------------------------------------------------------
# Rules -> expectations


def _when_value(contract: Contract, rule: Rule):
    """The value of the rule's `when`, typed like the frame column it is compared with (the SQL
    compares the typed column with a literal)."""
    when_col, when_val = rule.when
    table = contract.tables[rule.table]
    col_type = table.column(when_col).type if when_col in table.column_names else "str"
    if col_type in ("str", "flag"):
        return when_val
    if col_type == "int":
        return int(when_val)
    if col_type == "dec":
        return float(when_val)
    raise ValueError(f"contract: `when` on a {col_type} column is not supported ({rule.rule_id})")


def _row_condition(contract: Contract, rule: Rule, own=None) -> dict:
    """{'row_condition': ...} for the rule's `when` and its own condition, or {}."""
    from great_expectations.expectations.row_conditions import Column

    conditions = []
    if rule.when:
        conditions.append(Column(rule.when[0]) == _when_value(contract, rule))
    if own is not None:
        conditions.append(own)
    if not conditions:
        return {}
    condition = conditions[0]
    for other in conditions[1:]:
        condition = condition & other
    return {"row_condition": condition}


def expectation_for(contract: Contract, rule: Rule, data_cut: date) -> "Expectation":
    """The one built-in GX expectation whose unexpected rows are the rows that break `rule`
    (the rows where `vigil.ingest.rules.violation_sql(contract, rule, data_cut)` is true)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    table = contract.tables[rule.table]
    col, p = rule.column, rule.params
    meta: dict[str, Any] = {"rule_id": rule.rule_id, "table": rule.table, "column": col,
                            "kind": rule.kind, "reason": rule.reason}
    if rule.when:
        meta["when"] = {rule.when[0]: rule.when[1]}
    kw: dict[str, Any] = {"meta": meta, "notes": f"`{rule.rule_id}`: {contract.reasons[rule.reason]}"}

    if rule.kind == "required":
        return gxe.ExpectColumnValuesToNotBeNull(
            column=raw_column(table, col), **_row_condition(contract, rule), **kw)
    if rule.kind == "parses":
        present = Column(raw_column(table, col)).is_not_null()
        return gxe.ExpectColumnValuesToNotBeNull(column=col, **_row_condition(contract, rule, present), **kw)
    if rule.kind == "absent":
        return gxe.ExpectColumnValuesToBeNull(column=col, **_row_condition(contract, rule), **kw)
    if rule.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(
            column=col, value_set=list(p["values"]), **_row_condition(contract, rule), **kw)
    if rule.kind == "pattern":
        return gxe.ExpectColumnValuesToMatchRegex(
            column=col, regex=f"^(?:{p['regex']})$", **_row_condition(contract, rule), **kw)
    if rule.kind == "between":
        bounds: dict[str, Any] = {}
        if "min" in p:
            bounds["min_value"] = resolve_bound(p["min"], data_cut)
            bounds["strict_min"] = bool(p.get("strict_min"))
        if "max" in p:
            bounds["max_value"] = resolve_bound(p["max"], data_cut)
        return gxe.ExpectColumnValuesToBeBetween(column=col, **bounds, **_row_condition(contract, rule), **kw)
    if rule.kind == "compare":
        other, op = p["column"], p["op"]
        if op == "exists":
            present = Column(col).is_not_null()
            return gxe.ExpectColumnValuesToNotBeNull(
                column=other, **_row_condition(contract, rule, present), **kw)
        left = year_column(col) if op == "year>=" else col
        pair: dict[str, Any] = {"ignore_row_if": "either_value_is_missing", **_row_condition(contract, rule), **kw}
        if op in (">=", "year>="):  # left >= other
            return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=left, column_B=other, or_equal=True, **pair)
        if op == "<=":  # left <= other, i.e. other >= left
            return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=other, column_B=left, or_equal=True, **pair)
        if op == "==":
            return gxe.ExpectColumnPairValuesToBeEqual(column_A=left, column_B=other, **pair)
        raise ValueError(f"contract: unknown compare op {op!r} ({rule.rule_id})")
    if rule.kind == "unique":
        columns = list(p["columns"])
        if len(columns) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=columns[0], **_row_condition(contract, rule), **kw)
        return gxe.ExpectCompoundColumnsToBeUnique(
            column_list=columns, ignore_row_if="any_value_is_missing", **_row_condition(contract, rule), **kw)
    raise ValueError(f"unknown rule kind {rule.kind} ({rule.rule_id})")


def build_suite(contract: Contract, table_name: str, data_cut: date,
                expected_rows: int | None) -> "ExpectationSuite":
    """The table's suite: the spec's columns exist, the table has the manifest's row count (when
    given), and one expectation per row rule (its rule_id in the expectation's meta)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    table = contract.tables[table_name]
    expectations = [gxe.ExpectTableColumnsToMatchSet(
        column_set=table.column_names, exact_match=False, meta={"check": "columns", "table": table_name},
        notes="Every column of the spec is in the delivered table.")]
    if expected_rows is not None:
        expectations.append(gxe.ExpectTableRowCountToEqual(
            value=int(expected_rows), meta={"check": "row_count", "table": table_name},
            notes="The table has the number of rows its manifest declares."))
    expectations += [expectation_for(contract, rule, data_cut) for rule in table.rules]
    # Given to the constructor: suite.add_expectation() needs a Data Context (and saves each one).
    suite = gx.ExpectationSuite(
        name=suite_name(contract, table_name),
        expectations=expectations,
        meta={"study_id": contract.study_id, "spec_version": contract.spec_version, "table": table_name,
              "data_cut": data_cut.isoformat(), "contract": contract.source.name},
    )
    if len(suite.expectations) != len(expectations):
        raise GxValidationError(f"GX dropped expectations of {suite.name}")
    return suite


# ---------------------------------------------------------------------------------------------
# The batch GX validates


def suite_columns(contract: Contract, table_name: str) -> list[str]:
    """The frame columns the table's suite reads: spec, raw, year, context and `when` columns."""
    table = contract.tables[table_name]
    names: list[str] = []
    for c in table.columns:
        names.append(c.name)
        names.append(raw_column(table, c.name))
    names += [year_column(c) for c in year_columns(table)]
    for rule in table.rules:
        if rule.kind == "compare":
            names.append(rule.params["column"])
        if rule.when:
            names.append(rule.when[0])
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------
# Validation of a delivery


@dataclass(frozen=True)
class TableValidation:
    table: str
    suite_name: str
    success: bool  # every expectation of the suite met
    unexpected_counts: dict[str, int]  # rule_id -> rows that break the rule, for every rule
    table_checks: dict[str, bool]  # "columns" (and "row_count" when expected) -> met
    result: dict  # the GX validation result, JSON-serialisable


@dataclass(frozen=True)
class DeliveryValidation:
    delivery_label: str
    run_time: str  # ISO, UTC: the GX run_id is (delivery_label, run_time)
    tables: dict[str, TableValidation]
    data_docs_index: Path | None  # the Data Docs site's index.html (None: SqlRuleCounts builds none)

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables.values())


_contexts: dict[Path, Any] = {}  # gx_dir -> its file context, kept for the process's later deliveries
_validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gx-validation")  # one at a time
_preloaded: Future | None = None


def _import_gx() -> None:
    import great_expectations.expectations  # noqa: F401

    from vigil.ingest import gx_workspace  # noqa: F401  (duckdb_engine)


def preload() -> None:
    """Import GX (~5 s) on the validation thread, once per process: a load calls this first, so
    the import runs while DuckDB reads the delivery (DuckDB releases the GIL), and the
    validation queued after it finds GX imported."""
    global _preloaded
    if _preloaded is None:
        _preloaded = _validator.submit(_import_gx)


def _context(gx_dir: Path):
    """The file-backed GX context rooted at gx_dir (created on first use), analytics and
    progress bars off; opened once per process (~0.3 s) while its config file is there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from vigil.ingest import gx_workspace

    gx_dir = Path(gx_dir).resolve()
    gx_workspace.register_dialect()  # before GX opens the stored data source
    context = _contexts.get(gx_dir)
    if context is not None and Path(context.root_directory, "great_expectations.yml").is_file():
        return context
    gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    bars = context.progress_bars
    if context.config.analytics_enabled is not False or not bars or bars.get("globally") is not False:
        context.config.analytics_enabled = False
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.save()  # into gx_dir/gx/great_expectations.yml
    _contexts[gx_dir] = context
    return context


def _get_or_add(factory, wanted, same):
    """The stored object named like `wanted` if `same(stored)`, else `wanted` stored (added or
    updated). Skipping an unchanged update saves ~0.1 s per object and delivery."""
    from great_expectations.exceptions import DataContextError

    try:
        stored = factory.get(wanted.name)
    except DataContextError:
        return factory.add(wanted)
    return stored if same(stored) else factory.add_or_update(wanted)


def _workspace_table(table_name: str) -> str:
    return f"frame_{table_name}"


def _copy_to_own_workspace(frame, columns: list[str], table_name: str) -> None:
    """The frame's `columns` (those it has: a missing spec column fails ExpectTableColumnsToMatchSet)
    as table frame_<table> of the process's own workspace. Fewer columns, less to copy."""
    from vigil.ingest import gx_workspace

    with gx_workspace.own().cursor() as workspace:
        workspace.register("incoming_frame", frame)
        present = set(workspace.sql("SELECT * FROM incoming_frame LIMIT 0").columns)
        select = ", ".join(f'"{c}"' for c in columns if c in present)
        workspace.execute(f"CREATE OR REPLACE TABLE {_workspace_table(table_name)} AS SELECT {select} FROM incoming_frame")


def _drop_from_own_workspace(table_names: list[str]) -> None:
    from vigil.ingest import gx_workspace

    with gx_workspace.own().cursor() as workspace:
        for table_name in table_names:
            workspace.execute(f"DROP TABLE IF EXISTS {_workspace_table(table_name)}")


def _datasource(context):
    from vigil.ingest import gx_workspace

    try:
        return context.data_sources.get(DATASOURCE_NAME)
    except KeyError:
        return context.data_sources.add_sql(DATASOURCE_NAME, connection_string=gx_workspace.URL)


def _definition_for(context, datasource, contract: Contract, table_name: str, suite):
    """The table's ValidationDefinition: the workspace table's asset, whole table, the table's
    suite. Run without a Checkpoint: with no actions, a Checkpoint would only check the
    definition's freshness against the stores a second time (~0.3 s per delivery)."""
    import great_expectations as gx

    name = suite_name(contract, table_name)
    try:
        asset = datasource.get_asset(table_name)
    except LookupError:
        asset = datasource.add_table_asset(name=table_name, table_name=_workspace_table(table_name))
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_table(BATCH_DEFINITION_NAME)
    return _get_or_add(
        context.validation_definitions,
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite),
        lambda vd: vd.data.id == batch_definition.id and (vd.suite.name, vd.suite.id) == (suite.name, suite.id))


def _table_validation(contract: Contract, table_name: str, result) -> TableValidation:
    result_dict = result.to_json_dict()
    counts: dict[str, int] = {}
    checks: dict[str, bool] = {}
    errors: list[str] = []
    for r in result_dict["results"]:
        meta = r["expectation_config"].get("meta") or {}
        label = meta.get("rule_id") or meta.get("check")
        values = _delivered_values(r.get("result") or {})
        if values:
            errors.append(f"{label}: GX kept delivered values ({', '.join(values)}), which vigil's result "
                          "format excludes")
        exception = r.get("exception_info") or {}
        if exception.get("raised_exception"):
            errors.append(f"{label}: {exception.get('exception_message')}")
        elif "rule_id" in meta:
            unexpected = r["result"].get("unexpected_count")
            if unexpected is None and r["result"].get("element_count") == 0:
                unexpected = 0  # SQL's sum() over no rows (a row condition no row meets) is NULL
            if unexpected is None:
                errors.append(f"{label}: GX gave no unexpected_count")
            else:
                counts[meta["rule_id"]] = int(unexpected)
        else:
            checks[meta["check"]] = bool(r["success"])
    if errors:
        raise GxValidationError(f"GX could not evaluate {table_name}: " + "; ".join(errors))
    expected = {rule.rule_id for rule in contract.tables[table_name].rules}
    if set(counts) != expected:
        raise GxValidationError(f"{table_name}: GX results do not cover the rules {sorted(expected ^ set(counts))}")
    return TableValidation(table_name, suite_name(contract, table_name), bool(result_dict["success"]),
                           counts, checks, result_dict)


def _delivered_values(result: dict) -> list[str]:
    """The keys of one expectation result that hold delivered values (non-empty samples, counts of
    values, indexes or rows): none with vigil's RESULT_FORMAT."""
    return [key for key in VALUE_KEYS if result.get(key) not in (None, [], {}, "")]


def validate_delivery(gx_dir: Path, delivery_label: str, frames: Mapping[str, "pa.Table | pd.DataFrame"],
                      data_cut: date, expected_rows: dict[str, int] | None,
                      contract: Contract | None = None) -> DeliveryValidation:
    """Validate each table's validation frame against its suite (one ValidationDefinition per
    table, results stored in gx_dir, Data Docs updated there). The frames are copied into the
    process's own workspace for the validation."""
    from vigil.ingest import gx_workspace

    contract = contract or load_contract()
    unknown = set(frames) - set(contract.tables)
    if unknown:
        raise ValueError(f"not tables of the contract: {sorted(unknown)}")
    table_names = [t for t in contract.tables if t in frames]
    try:
        for table_name in table_names:
            _copy_to_own_workspace(frames[table_name], suite_columns(contract, table_name), table_name)
        workspace = gx_workspace.own()
        return start_validation(gx_dir, delivery_label, workspace.connection, workspace.catalog, table_names,
                                data_cut, expected_rows, contract).result()
    finally:
        _drop_from_own_workspace(table_names)


def start_validation(gx_dir: Path, delivery_label: str, connection, catalog: str, table_names: list[str],
                     data_cut: date, expected_rows: dict[str, int] | None,
                     contract: Contract | None = None) -> "Future[DeliveryValidation]":
    """Validate the tables frame_<table> of database `catalog`, read through cursors of `connection`,
    on the validation thread; the caller goes on (the ingest stores the delivery meanwhile) and
    must leave the frames in place until the result is in. Validations run one at a time.

    gx_dir holds one file-backed GX context, created on first use and reused by every later
    delivery. The suites carry this delivery's data cut and row counts; the stored validation
    results keep the expectations as they were run.
    """
    contract = contract or load_contract()
    if not isinstance(delivery_label, str) or not PLAIN_LABEL.fullmatch(delivery_label):
        raise ValueError(f"delivery label {inert(repr(delivery_label))} must be a plain name: letters, digits, "
                         "'.', '_', '-', starting with a letter or digit, at most 100 characters")
    return _validator.submit(_validate_workspace, gx_dir, delivery_label, connection, catalog, list(table_names),
                             data_cut, expected_rows or {}, contract)


class Validator(Protocol):
    """What the load (vigil.ingest.load.load_delivery) needs of a validation: the validation record
    of a delivery's frames, the tables frame_<table> of database `catalog` read through cursors of
    `connection`. `start` may return before the result is in (the load stores the delivery
    meanwhile and leaves the frames in place until then); the result must count, for every row rule
    of the contract, the rows that break it (the load refuses the delivery on any disagreement with
    its own SQL count) and give each table's result as a JSON-serialisable dict with GX's
    "statistics" (audit.rule_results and audit.validation_results store both)."""

    name: str

    def preload(self) -> None:
        """Called first by every load, before the delivery is read: heavy imports can start then."""

    def start(self, gx_dir: Path, delivery_label: str, connection, catalog: str, table_names: list[str],
              data_cut: date, expected_rows: dict[str, int] | None,
              contract: Contract | None = None) -> "Future[DeliveryValidation]": ...


class GreatExpectations:
    """The validation record of vigil: GX, its results and Data Docs in gx_dir (start_validation).
    The load's default; the CLI, the flows and the demo validate with it."""

    name = "great_expectations"

    def preload(self) -> None:
        preload()

    def start(self, gx_dir: Path, delivery_label: str, connection, catalog: str, table_names: list[str],
              data_cut: date, expected_rows: dict[str, int] | None,
              contract: Contract | None = None) -> "Future[DeliveryValidation]":
        return start_validation(gx_dir, delivery_label, connection, catalog, table_names, data_cut,
                                expected_rows, contract)


class SqlRuleCounts:
    """The validation result computed by SQL alone (vigil.ingest.rules.violation_sql, one aggregate
    query per table), on the caller's thread: no Great Expectations, nothing written in gx_dir, no
    Data Docs. For the tests whose subject is not the validation record (a test that checks GX's
    results, its Data Docs or the SQL/GX agreement validates with GreatExpectations): it fills
    audit.rule_results and audit.validation_results as the load needs, but it is the SQL checking
    itself, so it is no second opinion on the quarantine. Not for a study's warehouse."""

    name = "sql_rule_counts"

    def preload(self) -> None:
        pass

    def start(self, gx_dir: Path, delivery_label: str, connection, catalog: str, table_names: list[str],
              data_cut: date, expected_rows: dict[str, int] | None,
              contract: Contract | None = None) -> "Future[DeliveryValidation]":
        contract = contract or load_contract()
        if not isinstance(delivery_label, str) or not PLAIN_LABEL.fullmatch(delivery_label):  # as GX's
            raise ValueError(f"delivery label {inert(repr(delivery_label))} must be a plain name")
        done: Future = Future()
        try:
            run_time = datetime.now(timezone.utc).isoformat()
            with connection.cursor() as cursor:
                cursor.execute(f'USE "{catalog}"')
                tables = {t: self._table(cursor, contract, t, data_cut, (expected_rows or {}).get(t))
                          for t in table_names}
            done.set_result(DeliveryValidation(delivery_label, run_time, tables, None))
        except Exception as exc:  # delivered like GX's: by result()
            done.set_exception(exc)
        return done

    @staticmethod
    def _table(cursor, contract: Contract, table_name: str, data_cut: date,
               expected_rows: int | None) -> TableValidation:
        table = contract.tables[table_name]
        frame = _workspace_table(table_name)
        present = {r[0] for r in cursor.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = current_schema() AND table_name = ?", [frame]).fetchall()}
        # coalesce: count_if over no rows (a header-only table) is NULL, as GX's sum() is
        counts_sql = ", ".join([f"coalesce(count_if({violation_sql(contract, r, data_cut, frame)}), 0)"
                                for r in table.rules]
                               + ["count(*)"])
        *broken, rows = cursor.execute(f"SELECT {counts_sql} FROM {frame}").fetchone()
        counts = {r.rule_id: int(n) for r, n in zip(table.rules, broken)}
        checks = {"columns": set(table.column_names) <= present}
        if expected_rows is not None:
            checks["row_count"] = rows == int(expected_rows)
        results = ([{"check": c, "success": ok} for c, ok in checks.items()]
                   + [{"rule_id": r, "success": n == 0, "unexpected_count": n, "element_count": rows}
                      for r, n in counts.items()])
        successful = sum(r["success"] for r in results)
        result = {"success": successful == len(results), "validator": SqlRuleCounts.name,
                  "statistics": {"evaluated_expectations": len(results), "successful_expectations": successful,
                                 "unsuccessful_expectations": len(results) - successful,
                                 "success_percent": 100.0 * successful / len(results)},
                  "results": results}
        return TableValidation(table_name, suite_name(contract, table_name), result["success"], counts, checks,
                               result)


GREAT_EXPECTATIONS = GreatExpectations()  # vigil.ingest.load's default validator
SQL_RULE_COUNTS = SqlRuleCounts()


def _validate_workspace(gx_dir: Path, delivery_label: str, connection, catalog: str, table_names: list[str],
                        data_cut: date, expected_rows: dict[str, int], contract: Contract) -> DeliveryValidation:
    """Run each table's suite on its workspace table, then build the delivery's Data Docs."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (ExpectationSuiteIdentifier,
                                                                            ValidationResultIdentifier)

    from vigil.ingest import gx_workspace

    gx_workspace.read_from(gx_workspace.Workspace(connection, catalog))
    context = _context(gx_dir)
    datasource = _datasource(context)
    run_time = datetime.now(timezone.utc)
    run_id = RunIdentifier(run_name=delivery_label, run_time=run_time)
    tables: dict[str, TableValidation] = {}
    docs_resources: list = []
    for table_name in table_names:
        suite = context.suites.add_or_update(
            build_suite(contract, table_name, data_cut, expected_rows.get(table_name)))
        definition = _definition_for(context, datasource, contract, table_name, suite)
        result = definition.run(result_format=RESULT_FORMAT, run_id=run_id)
        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        docs_resources += [ValidationResultIdentifier(suite_id, run_id, result.batch_id), suite_id]
        tables[table_name] = _table_validation(contract, table_name, result)

    # One incremental build for the delivery: its result and suite pages, and the index once.
    # (A build per table would rebuild the index per table, and the index reads every
    # validation result ever stored: ~7x the cost, growing.)
    context.build_data_docs(site_names=[DATA_DOCS_SITE], resource_identifiers=docs_resources)
    (site,) = context.get_docs_sites_urls(site_name=DATA_DOCS_SITE)
    index = Path(unquote(urlparse(site["site_url"]).path))
    _strip_context_id(index.parent)
    return DeliveryValidation(delivery_label, run_time.isoformat(), tables, index)


_TRACKING_QUERY = re.compile(r"(logo-long\.png)\?[^\"' ]*dataContextId=[0-9a-fA-F-]+")


def _strip_context_id(site_dir: Path) -> None:
    """GX's Data Docs load their logo with this context's id in the URL; a person opening the
    pages on a networked machine would send it out. Drop the query string."""
    for page in site_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if "dataContextId=" in text:
            page.write_text(_TRACKING_QUERY.sub(r"\1", text), encoding="utf-8")
