"""The contract's row rules as Great Expectations expectations: GX is the validation record.

Every row rule of the contract (`vigil.contract.Table.rules`) becomes exactly one built-in GX
expectation over the table's *validation frame* (defined in vigil/rules.py), with the semantics
of its SQL form `vigil.rules.violation_sql`: on any frame, GX's unexpected count of a rule is
the number of rows the SQL marks as breaking it. Rule kind by kind:

  required   ExpectColumnValuesToNotBeNull(<raw column>)
  parses     ExpectColumnValuesToNotBeNull(<col>) on the rows where <col>__raw is not null
  in_set     ExpectColumnValuesToBeInSet(<col>)                     (GX skips nulls)
  pattern    ExpectColumnValuesToMatchRegex(<col>, r"\\A(?:REGEX)\\Z")  (GX skips nulls)
  between    ExpectColumnValuesToBeBetween(<col>, strict_min)        (GX skips nulls)
  compare    >=, year>= (on <col>__year): ExpectColumnPairValuesAToBeGreaterThanB(or_equal=True)
             <=: the same with the columns swapped; ==: ExpectColumnPairValuesToBeEqual;
             all with ignore_row_if="either_value_is_missing"
             exists: ExpectColumnValuesToNotBeNull(<other>) on the rows where <col> is not null
  absent     ExpectColumnValuesToBeNull(<col>)
  unique     one column: ExpectColumnValuesToBeUnique (GX skips nulls); several:
             ExpectCompoundColumnsToBeUnique(ignore_row_if="any_value_is_missing"); both flag
             every copy of a duplicated key (pandas `duplicated(keep=False)`), like the SQL
  when       one more row condition, `<column> == <value>`, and-ed with the rule's own

Facts of GX 1.24 (pandas engine) this relies on, read in the installed source:
  - `row_condition` takes Condition objects from great_expectations.expectations.row_conditions
    (`Column(c) == v`, `Column(c).is_not_null()`, `a & b`); the pandas engine renders them to a
    DataFrame.query() string (`~c.isnull()`, `c == 'v'`, `(a and b)`). String row conditions
    with `condition_parser` are deprecated since 1.9.
  - ExpectColumnValuesToMatchRegex is `column.astype(str).str.contains(regex)`: re.search, where
    `$` also matches before a trailing newline. DuckDB's regexp_full_match (RE2) matches the
    whole text, hence the \\A(?:...)\\Z wrapping.
  - ExpectColumnValuesToBeBetween compares vectorised only int64/float64 and datetime64[ns]
    columns, anything else value by value in Python; a pandas Timestamp does not compare with a
    datetime.date (TypeError), so date bounds are given as datetime.datetime. Numeric bounds are
    stored as float (pydantic `Comparable`), exact for the contract's bounds.
  - Result format BASIC is the cheapest that reports unexpected_count; it keeps at most
    `partial_unexpected_count` example values. COMPLETE/SUMMARY would collect more.
  - A dataframe asset gets its dataframe only through batch_parameters, which a Checkpoint
    would give to all its validation definitions: hence one ValidationDefinition per table, run
    on its own (a Checkpoint without actions adds nothing but a second freshness check). The
    delivery's Data Docs are built once (context.build_data_docs with the run's result and
    suite identifiers), not per table: every build rewrites the site index, which reads every
    validation result stored so far.
  - GX metrics are computed once per (metric, domain) in one graph per suite, but a domain with
    a row_condition is re-filtered (DataFrame.query + copy of the whole batch) for each metric
    that needs it, and every non-null filter copies the batch: narrow batches of cheap-to-copy
    dtypes are cheaper (see prepare_frame).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from vigil.contract import Contract, Rule, load_contract
from vigil.rules import raw_column, resolve_bound, year_column, year_columns

if TYPE_CHECKING:  # importing GX takes ~4 s: only inside the functions that use it
    import pandas as pd
    import pyarrow as pa
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

# GX must not phone home: the pipeline and its tests run without network. The context's own
# config also says analytics_enabled: false (see _context).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

DATASOURCE_NAME = "vigil_deliveries"
BATCH_DEFINITION_NAME = "whole_frame"
DATA_DOCS_SITE = "local_site"
PARTIAL_UNEXPECTED_COUNT = 20  # example values GX keeps per rule for Data Docs; counts are exact
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT}


class GxValidationError(RuntimeError):
    """GX could not evaluate an expectation: its result holds an exception instead of a count."""


def suite_name(contract: Contract, table_name: str) -> str:
    return f"extract-v{contract.spec_version}.{table_name}"


# ---------------------------------------------------------------------------------------------
# Rules -> expectations


def _gx_bound(value):
    """A `between` bound as GX compares it: a date becomes a datetime at midnight."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time())
    return value


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
    (the rows where `vigil.rules.violation_sql(contract, rule, data_cut)` is true)."""
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
            column=col, regex=rf"\A(?:{p['regex']})\Z", **_row_condition(contract, rule), **kw)
    if rule.kind == "between":
        bounds: dict[str, Any] = {}
        if "min" in p:
            bounds["min_value"] = _gx_bound(resolve_bound(p["min"], data_cut))
            bounds["strict_min"] = bool(p.get("strict_min"))
        if "max" in p:
            bounds["max_value"] = _gx_bound(resolve_bound(p["max"], data_cut))
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


def paired_columns(contract: Contract, table_name: str) -> set[str]:
    """The frame columns a `compare` rule compares with another column (`exists` only tests
    presence)."""
    pairs = [(year_column(r.column) if r.params["op"] == "year>=" else r.column, r.params["column"])
             for r in contract.tables[table_name].rules if r.kind == "compare" and r.params["op"] != "exists"]
    return {c for pair in pairs for c in pair}


_FLOAT_EXACT = 2**53 - 1  # integers of magnitude below 2**53 are exact float64 values


def prepare_frame(frame: "pa.Table | pd.DataFrame", columns: list[str],
                  paired: Collection[str] = ()) -> "pd.DataFrame":
    """The batch GX validates: the frame's `columns` (fewer columns, cheaper GX: it copies the
    whole batch for each filtered domain), in dtypes on which GX's row operations are cheap and
    give the same answers as on the values themselves.

    Read from Arrow (a pandas frame is converted to Arrow first), column by column:
      text   -> pandas Categorical (dictionary-encoded): GX's per-domain copies, null filters,
                isin, ==, duplicated and the batch fingerprint then work on int codes instead of
                Python strings (~10x cheaper); every value is kept, regexes still see the text
                (`astype(str)`), and codes compare equal exactly when the texts do. Text in
                `paired` columns stays plain: two Categoricals compare only if their
                categories are the same.
      int    -> float64 when every value is within +-(2**53 - 1) (exact; NULL becomes NaN,
                still null): GX's `between` compares only int64/float64 vectorised and Int64
                value by value in Python (~1.5 s per million). Otherwise nullable Int64.
      date   -> datetime64[ns] when every value is within pandas' ns range (1677-09-22 ..
                2262-04-11), for the same reason; otherwise datetime64[us] (slower, as exact).
    Columns with values outside those ranges get the slower dtypes: equally exact.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(frame, pa.Table):
        frame = pa.Table.from_pandas(frame[[c for c in columns if c in frame.columns]], preserve_index=False)
    names, arrays = [], []
    for name in columns:
        if name not in frame.column_names:
            continue  # a missing spec column fails ExpectTableColumnsToMatchSet
        values = frame[name]
        kind = values.type
        if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and name not in paired:
            values = values.dictionary_encode()
        elif pa.types.is_integer(kind):
            lo, hi = pc.min_max(values).values()
            if lo.as_py() is None or (-_FLOAT_EXACT <= lo.as_py() and hi.as_py() <= _FLOAT_EXACT):
                values = values.cast(pa.float64())
        elif pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            try:  # a safe cast: fails on a value outside the ns range
                values = values.cast(pa.timestamp("ns"))
            except pa.ArrowInvalid:
                values = values.cast(pa.timestamp("us"))
        names.append(name)
        arrays.append(values)
    # One conversion for the whole table (~10% cheaper than column by column); the integers
    # still int64 here are those outside the exact float range.
    return pa.table(arrays, names=names).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


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
    data_docs_index: Path  # the Data Docs site's index.html

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables.values())


_contexts: dict[Path, Any] = {}  # gx_dir -> its file context, kept for the process's later deliveries


def _context(gx_dir: Path):
    """The file-backed GX context rooted at gx_dir (created on first use), analytics and
    progress bars off; opened once per process (~0.3 s) while its config file is there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_dir = Path(gx_dir).resolve()
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


def _definition_for(context, datasource, contract: Contract, table_name: str, suite):
    """The table's ValidationDefinition: the table's dataframe asset, whole frame, the table's
    suite. Run without a Checkpoint: with no actions, a Checkpoint would only check the
    definition's freshness against the stores a second time (~0.3 s per delivery)."""
    import great_expectations as gx

    name = suite_name(contract, table_name)
    try:
        asset = datasource.get_asset(table_name)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=table_name)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)
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
        exception = r.get("exception_info") or {}
        if exception.get("raised_exception"):
            errors.append(f"{label}: {exception.get('exception_message')}")
        elif "rule_id" in meta:
            counts[meta["rule_id"]] = int(r["result"]["unexpected_count"])
        else:
            checks[meta["check"]] = bool(r["success"])
    if errors:
        raise GxValidationError(f"GX could not evaluate {table_name}: " + "; ".join(errors))
    expected = {rule.rule_id for rule in contract.tables[table_name].rules}
    if set(counts) != expected:
        raise GxValidationError(f"{table_name}: GX results do not cover the rules {sorted(expected ^ set(counts))}")
    return TableValidation(table_name, suite_name(contract, table_name), bool(result_dict["success"]),
                           counts, checks, result_dict)


def validate_delivery(gx_dir: Path, delivery_label: str, frames: Mapping[str, "pa.Table | pd.DataFrame"],
                      data_cut: date, expected_rows: dict[str, int] | None,
                      contract: Contract | None = None) -> DeliveryValidation:
    """Validate each table's validation frame against its suite (one ValidationDefinition per
    table, results stored in gx_dir, Data Docs updated there).

    gx_dir holds one file-backed GX context, created on first use and reused by every later
    delivery. The suites carry this delivery's data cut and row counts; the stored validation
    results keep the expectations as they were run. Validate one delivery at a time per gx_dir.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (ExpectationSuiteIdentifier,
                                                                            ValidationResultIdentifier)

    contract = contract or load_contract()
    expected_rows = expected_rows or {}
    if not delivery_label or "/" in delivery_label or os.sep in delivery_label:
        raise ValueError(f"delivery label {delivery_label!r} must be a non-empty name without '/'")
    unknown = set(frames) - set(contract.tables)
    if unknown:
        raise ValueError(f"not tables of the contract: {sorted(unknown)}")

    context = _context(gx_dir)
    try:
        datasource = context.data_sources.get(DATASOURCE_NAME)
    except KeyError:
        datasource = context.data_sources.add_pandas(DATASOURCE_NAME)

    run_time = datetime.now(timezone.utc)
    run_id = RunIdentifier(run_name=delivery_label, run_time=run_time)
    tables: dict[str, TableValidation] = {}
    docs_resources: list = []
    for table_name in (t for t in contract.tables if t in frames):
        suite = context.suites.add_or_update(
            build_suite(contract, table_name, data_cut, expected_rows.get(table_name)))
        definition = _definition_for(context, datasource, contract, table_name, suite)
        batch = prepare_frame(frames[table_name], suite_columns(contract, table_name),
                              paired_columns(contract, table_name))
        with warnings.catch_warnings():  # pandas on the contract's capturing groups in str.contains
            warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
            result = definition.run(batch_parameters={"dataframe": batch}, result_format=RESULT_FORMAT,
                                    run_id=run_id)
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
