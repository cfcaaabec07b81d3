"""The extract contract (schemas/extract-v1.0.yaml) as Python objects.

The YAML is the only place the contract is written; this module reads it and derives
what the rest of vigil needs from it: the row rules, the raw/staging DDL and comments,
and the contract documentation.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vigil.resources import SCHEMA_DIR

CONTRACT_PATH = SCHEMA_DIR / "extract-v1.0.yaml"

# Columns every raw and staging table carries besides the spec's own.
LINEAGE_COLUMNS = {
    "delivery_id": ("BIGINT", "The delivery the row came from (audit.deliveries.delivery_id)."),
    "site_id": ("VARCHAR", "Site that delivered the row."),
    "data_cut": ("DATE", "Data cut of the delivery."),
    # An ENUM of the spec's file names: the same text on every row cost 0.2-0.3 s to write per
    # 333k-patient site in raw alone.
    "source_file": ("extract_file", "File of the delivery the row was read from (type extract_file: the spec's file names)."),
    "line_number": ("BIGINT", "Line of the row in its CSV file (header = line 1), or row number in a Parquet file."),
}


@dataclass(frozen=True)
class Rule:
    """One row rule: a check on one column (or one key) whose failure quarantines the row."""

    rule_id: str  # stable, e.g. "infections.onset_date.after_death.2"
    table: str
    column: str  # the column the rule is about (first key column for `unique`)
    kind: str  # required | parses | in_set | pattern | between | compare | absent | unique
    reason: str
    params: dict = field(default_factory=dict, hash=False, compare=False)
    when: tuple[str, str] | None = None  # (column, value): the rule applies only where column = value


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    description: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    grain: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...]  # key whose duplicates are quarantined
    refuse_duplicate: tuple[str, ...]  # key whose duplicates refuse the delivery

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def rules(self) -> list[Rule]:
        rules = [r for c in self.columns for r in c.rules]
        if self.unique:
            rules.append(Rule(f"{self.name}.{'+'.join(self.unique)}.duplicate_key", self.name,
                              self.unique[0], "unique", "duplicate_key", {"columns": list(self.unique)}))
        return rules

    @property
    def context_columns(self) -> list[str]:
        """Context columns (from other tables of the delivery) that this table's rules use."""
        used = [r.params["column"] for r in self.rules if r.kind == "compare"]
        return [c for c in dict.fromkeys(used) if "__" in c]


@dataclass(frozen=True)
class Contract:
    study_id: str
    spec_version: str
    folder_pattern: re.Pattern
    formats: tuple[str, ...]
    manifest_keys: tuple[str, ...]
    types: dict
    reasons: dict
    context: dict
    tables: dict  # name -> Table, in the spec's order
    acceptance: dict
    source: Path

    def sql_type(self, type_name: str) -> str:
        return self.types[type_name]["sql"]

    def type_pattern(self, type_name: str) -> str | None:
        return self.types[type_name].get("pattern")

    def parquet_classes(self, type_name: str) -> tuple[str, ...]:
        """Arrow type classes (string, integer, floating, decimal, date) a Parquet column may have."""
        return tuple(self.types[type_name]["parquet"])

    @property
    def max_quarantine_share(self) -> float:
        """The study's limit on the share of a table's rows a delivery may lose to quarantine."""
        override = os.environ.get("VIGIL_MAX_QUARANTINE_SHARE")
        if override:
            try:
                share = float(override)
            except ValueError:
                share = -1.0
            if not 0 <= share <= 1:
                raise ValueError(f"VIGIL_MAX_QUARANTINE_SHARE={override!r} is not a share between 0 and 1")
            return share
        return float(self.acceptance["max_quarantine_share"])

    @property
    def rules(self) -> list[Rule]:
        return [r for t in self.tables.values() for r in t.rules]

    def file_names(self, fmt: str) -> list[str]:
        return [f"{t}.{fmt}" for t in self.tables]


_RULE_KINDS = ("in_set", "pattern", "between", "compare", "absent", "required")


def _parse_rules(table: str, column: str, col_type: str, required: bool, raw_rules: list[dict]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    if required:
        rules.append(Rule(f"{table}.{column}.missing_required", table, column, "required", "missing_required"))
    if col_type != "str":
        rules.append(Rule(f"{table}.{column}.unparseable", table, column, "parses", "unparseable", {"type": col_type}))
    for i, raw in enumerate(raw_rules or [], start=1):
        raw = dict(raw)
        reason = raw.pop("reason")
        when = raw.pop("when", None)
        kinds = [k for k in raw if k in _RULE_KINDS]
        if len(kinds) != 1 or len(raw) != 1:
            raise ValueError(f"contract: rule {i} of {table}.{column} must have exactly one of {_RULE_KINDS}: {raw}")
        kind = kinds[0]
        value = raw[kind]
        params = {"values": value} if kind == "in_set" else {"regex": value} if kind == "pattern" else (
            dict(value) if isinstance(value, dict) else {})
        when_pair = None
        if when:
            ((when_col, when_val),) = when.items()
            when_pair = (when_col, str(when_val))
        rules.append(Rule(f"{table}.{column}.{reason}.{i}", table, column, kind, reason, params, when_pair))
    return tuple(rules)


@functools.cache
def load_contract(path: Path = CONTRACT_PATH) -> Contract:
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    tables = {}
    for name, t in doc["tables"].items():
        columns = tuple(
            Column(col, c["type"], bool(c.get("required")), c["description"],
                   _parse_rules(name, col, c["type"], bool(c.get("required")), c.get("rules", [])))
            for col, c in t["columns"].items()
        )
        tables[name] = Table(name, t["description"], t["grain"], columns,
                             tuple(t.get("unique", [])), tuple(t.get("refuse_duplicate", [])))
    contract = Contract(
        study_id=doc["study_id"],
        spec_version=str(doc["spec_version"]),
        folder_pattern=re.compile(doc["folder_pattern"]),
        formats=tuple(doc["formats"]),
        manifest_keys=tuple(doc["manifest"]["required_keys"]),
        types=doc["types"],
        reasons=doc["reasons"],
        context=doc["context"],
        tables=tables,
        acceptance=doc["acceptance"],
        source=Path(path),
    )
    unknown = {r.reason for r in contract.rules} - set(contract.reasons)
    if unknown:
        raise ValueError(f"contract: reasons used but not declared: {sorted(unknown)}")
    return contract


def sql_literal(value: str) -> str:
    """A SQL string literal. Only for contract text (code lists, regexes), never for delivered data."""
    return "'" + str(value).replace("'", "''") + "'"


def ddl_for_layer(contract: Contract, layer: str) -> list[str]:
    """CREATE TABLE and COMMENT ON statements for the `raw` or `staging` copy of every spec table.

    raw holds every delivered value as text; staging holds the valid rows, typed.
    """
    file_names = ", ".join(sql_literal(name) for fmt in contract.formats for name in contract.file_names(fmt))
    statements = [f"CREATE SCHEMA IF NOT EXISTS {layer}",
                  f"CREATE TYPE IF NOT EXISTS extract_file AS ENUM ({file_names})",
                  f"COMMENT ON TYPE extract_file IS {sql_literal(f'File names of extract spec v{contract.spec_version}.')}"]
    layer_text = {
        "raw": "As delivered, every value as text (empty field = NULL), rows of each site's current delivery.",
        "staging": "Typed, valid rows only (quarantined rows are in audit.quarantine), each site's current delivery, "
                   "in no particular order (line_number gives the file order).",
    }[layer]
    for table in contract.tables.values():
        cols = [(name, sql_type, text) for name, (sql_type, text) in LINEAGE_COLUMNS.items()]
        for c in table.columns:
            sql_type = "VARCHAR" if layer == "raw" else contract.sql_type(c.type)
            req = "required" if c.required else "optional"
            cols.append((c.name, sql_type, f"{c.description} [{c.type}, {req}; extract spec v{contract.spec_version}]"))
        body = ",\n  ".join(f"{name} {sql_type}" for name, sql_type, _ in cols)
        statements.append(f"CREATE TABLE IF NOT EXISTS {layer}.{table.name} (\n  {body}\n)")
        statements.append(
            f"COMMENT ON TABLE {layer}.{table.name} IS "
            f"{sql_literal(f'{table.description} Grain: {table.grain}. {layer_text}')}")
        for name, _, text in cols:
            statements.append(f"COMMENT ON COLUMN {layer}.{table.name}.{name} IS {sql_literal(text)}")
    return statements
