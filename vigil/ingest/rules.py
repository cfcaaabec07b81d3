"""Row rules of the contract compiled to SQL over a table's *validation frame*.

The validation frame of a spec table is one row per delivered row with:
  _row                 the row's ordinal in its file (1-based)
  <col>                the typed value (NULL when missing or unparseable); for str columns the text
  <col>__raw           the delivered text (only for non-str columns)
  <col>__year          year(<col>), for date columns compared with op `year>=`
  <context columns>    values joined from the delivery's other tables (contract `context:`)

Semantics shared with the Great Expectations compilation (vigil/gx_validation.py), rule by rule:
a rule is violated where its `when` condition holds and
  required   the value is missing
  parses     the text is present but did not convert
  in_set / pattern / between      the typed value is present and breaks the rule
  compare    both values are present and the comparison is false (op `exists`: the value is
             present and the other column is missing)
  absent     the value is present
  unique     the key is present and occurs more than once (every copy counts)
"""

from __future__ import annotations

from datetime import date

from vigil.contract import Contract, Rule, Table, sql_literal


def raw_column(table: Table, column: str) -> str:
    """The frame column holding the delivered text of a spec column."""
    return column if table.column(column).type == "str" else f"{column}__raw"


def year_column(column: str) -> str:
    """The frame column holding year(<column>)."""
    return f"{column}__year"


def resolve_bound(value, data_cut: date):
    """A `between` bound: a number, or an expression over {data_cut} / {data_cut_year}."""
    if not isinstance(value, str):
        return value
    if value == "{data_cut}":
        return data_cut
    expression = value.replace("{data_cut_year}", str(data_cut.year))
    if not all(ch in "0123456789 +-" for ch in expression):
        raise ValueError(f"contract: unsupported bound expression {value!r}")
    return eval(expression, {"__builtins__": {}}, {})  # digits, spaces, + and - only (checked above)


def _sql_value(value) -> str:
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, (int, float)):
        return repr(value)
    return sql_literal(value)


def typed_expression(contract: Contract, type_name: str, raw: str) -> str:
    """SQL that converts delivered text to the column's type, NULL when it is not a valid value.

    The text must match the type's pattern first: DuckDB's casts alone would accept more
    than the spec (for example '2026-6-3' or ' 12').
    """
    if type_name == "str":
        return raw
    pattern = sql_literal(contract.type_pattern(type_name))
    sql_type = contract.sql_type(type_name)
    return f"CASE WHEN regexp_full_match({raw}, {pattern}) THEN TRY_CAST({raw} AS {sql_type}) END"


def violation_sql(contract: Contract, rule: Rule, data_cut: date, frame: str) -> str:
    """A boolean SQL expression over the validation frame (the relation named `frame`): TRUE where
    the row breaks the rule."""
    table = contract.tables[rule.table]
    col = rule.column
    p = rule.params
    if rule.kind == "required":
        condition = f"{raw_column(table, col)} IS NULL"
    elif rule.kind == "parses":
        condition = f"{raw_column(table, col)} IS NOT NULL AND {col} IS NULL"
    elif rule.kind == "absent":
        condition = f"{col} IS NOT NULL"
    elif rule.kind == "in_set":
        values = ", ".join(_sql_value(v) for v in p["values"])
        condition = f"{col} IS NOT NULL AND {col} NOT IN ({values})"
    elif rule.kind == "pattern":
        condition = f"{col} IS NOT NULL AND NOT regexp_full_match({col}, {sql_literal(p['regex'])})"
    elif rule.kind == "between":
        checks = []
        if "min" in p:
            op = "<=" if p.get("strict_min") else "<"
            checks.append(f"{col} {op} {_sql_value(resolve_bound(p['min'], data_cut))}")
        if "max" in p:
            checks.append(f"{col} > {_sql_value(resolve_bound(p['max'], data_cut))}")
        condition = f"{col} IS NOT NULL AND ({' OR '.join(checks)})"
    elif rule.kind == "compare":
        other, op = p["column"], p["op"]
        if op == "exists":
            condition = f"{col} IS NOT NULL AND {other} IS NULL"
        else:
            left = year_column(col) if op == "year>=" else col
            sql_op = {">=": ">=", "<=": "<=", "==": "=", "year>=": ">="}[op]
            condition = f"{left} IS NOT NULL AND {other} IS NOT NULL AND NOT ({left} {sql_op} {other})"
    elif rule.kind == "unique":
        key = f"({', '.join(p['columns'])})"
        present = " AND ".join(f"{c} IS NOT NULL" for c in p["columns"])
        # The duplicated keys by GROUP BY: half the work of count(*) OVER (PARTITION BY key).
        condition = (f"{present} AND {key} IN "
                     f"(SELECT {key} FROM {frame} WHERE {present} GROUP BY ALL HAVING count(*) > 1)")
    else:
        raise ValueError(f"unknown rule kind {rule.kind}")
    if rule.when:
        when_col, when_val = rule.when
        condition = f"{when_col} = {sql_literal(when_val)} AND {condition}"
    return f"coalesce(({condition}), false)"


def year_columns(table: Table) -> list[str]:
    """Date columns whose year a rule compares (the frame carries <col>__year for them)."""
    return [r.column for r in table.rules if r.kind == "compare" and r.params["op"] == "year>="]


def frame_columns(contract: Contract, table: Table, alias: str = "") -> list[str]:
    """SELECT items of the validation frame built from the delivered text columns of `table`
    (prefixed with `alias.` when given): typed, raw and year columns; not _row or context."""
    prefix = f"{alias}." if alias else ""
    items = []
    for c in table.columns:
        if c.type == "str":
            items.append(f"{prefix}{c.name}")
        else:
            items.append(f"{typed_expression(contract, c.type, prefix + c.name)} AS {c.name}")
            items.append(f"{prefix}{c.name} AS {raw_column(table, c.name)}")
    for c in year_columns(table):
        items.append(f"year({typed_expression(contract, table.column(c).type, prefix + c)}) AS {year_column(c)}")
    return items
