"""A fuzzer that keeps looking (issue 15, class 8): hostile and broken deliveries, for a set time.

    .venv/bin/python tests/fuzz/fuzz_deliveries.py --minutes 10 [--seed 1] [--out DIR] [--cli-every 6]

Not a test (pytest collects test_*.py only): a script that runs until the time is up and reports.

Where the deliveries come from. Valid deliveries in both formats, CSV and Parquet: the tiny hand-made
one of tests/helpers.py (write_delivery(valid_rows(site))) and a small generated study
(vigil.synth.synthesize_study, 3 sites). Each example starts from a fresh copy with its own created_at,
so that it is a new correction of its site rather than a clash with an earlier example.

What is mutated (hypothesis draws a plan: format, base, family, the family's operations, whether to
re-hash; one family per example, so each is tested as a class):

    csv_bytes       bytes of one CSV file: insert/delete/replace bytes (NUL, CR, LF, quotes, BOMs,
                    invalid UTF-8, ANSI, bidi), line-ending variants, very long fields, truncation
    cells           single values: rich markup, HTML, ANSI escapes, newlines that forge a log line,
                    bidi controls, spreadsheet formulas, NUL, huge numbers, odd dates, free text
    header          renamed / duplicated / extra / missing / reordered columns, odd names
    manifest        lying row counts and hashes, odd or future created_at and data_cut, wrong JSON
                    types, markup and newlines in fields, extra keys and files, odd JSON bytes
    folder          folder name with a newline, markup, ANSI, SQL; symlinked folder; name and
                    manifest that disagree; a site_id that is hostile in both
    parquet_schema  struct / list / map / binary / timestamp / decimal / dictionary / null columns,
                    NUL in strings, wrong types, one row per row group, hostile key-value metadata,
                    fewer rows with or without the manifest following
    file_kind       a table or the manifest replaced by a directory, a symlink (inside, outside,
                    dangling), a FIFO, a hard link; extra files and folders
    control         unchanged or tolerated variants (BOM, CRLF, later created_at, an identical
                    re-delivery): these should load, so the checks are not vacuous

After a mutation the manifest is mostly re-hashed (helpers.rehash), so that it reaches past the
sha256 check; sometimes not.

How each delivery is run (the paths a user has):

    cli        every Nth example: `vigil ingest <folder> --db <file>` as a subprocess, against ONE local
               Prefect server started for the session on 127.0.0.1 (PREFECT_API_URL for the child)
    inprocess  the rest: vigil.ingest.load.ingest_all (find_deliveries -> ingest_delivery -> checkpoint)
               into a warehouse opened with vigil.warehouse.connect / create_layout, then
               vigil.cli.print_ingest_summary into a recording Rich console; any exception is a failure

What is checked after each delivery (a failure is recorded, the delivery saved under
DIR/failures/ for replay, and the fuzzer goes on):

    - no traceback; the CLI exits 0 or 3; no delivery ends "failed"
    - the output: no line starts with a marker injected after a newline (a forged line), markup
      injected by the delivery is shown, not interpreted; no ESC, CR, NUL or bidi control from
      delivered text reaches the terminal
    - in the warehouse, read with a separate read-only connection after the writer closed:
      for every accepted delivery and table rows_received = rows_loaded + rows_quarantined, and
      audit.quarantine holds rows_quarantined rows; the site's current delivery has rows_loaded rows
      in staging and rows_received in raw, a superseded one none; a refused delivery has nothing in
      raw, staging, quarantine or the audit tables of loads; a refusal or an identical re-delivery
      changes no stored row; raw, staging and audit have exactly the tables and columns of a freshly
      created layout (which must hold the contract's columns); no stored text in raw, staging or
      audit.quarantine holds a NUL; no accepted delivery has a created_at in the future
    - for the delivery just accepted, against the files themselves (independently of vigil): the
      row count (Python's csv module / Parquet metadata) equals rows_received; raw holds exactly the
      delivered CSV values row by row and the delivered Parquet text values; no Parquet column
      that was accepted is nested (struct/list/map), so no stored text is a rendering of one
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py
for key, value in {"GX_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(key, value)

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pyarrow.types as pat  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rich.console import Console  # noqa: E402

import vigil.cli  # noqa: E402
from helpers import rehash, valid_rows, write_delivery  # noqa: E402
from vigil import warehouse  # noqa: E402
from vigil.contract import load_contract  # noqa: E402
from vigil.ingest.load import ingest_all  # noqa: E402
from vigil.synth import synthesize_study  # noqa: E402

CONTRACT = load_contract()
TABLES = list(CONTRACT.tables)
COLUMNS = {name: table.column_names for name, table in CONTRACT.tables.items()}
CUT = "2026-06-30"
BASE_CREATED = datetime(2026, 7, 4, 9, 12, tzinfo=timezone.utc)
SITES = ["DK01", "SE02", "NO03"]  # synthesize_study's first three site ids; the tiny base uses them too

# Markers injected into delivered text; the output checks look for them.
FORGED = "VIGILFORGED"  # follows a line break: a line of output starting with it was forged
MARKUP = "VIGILMARKUP"  # inside Rich markup: shown without its "[...]" before it, the markup was obeyed
BOM = b"\xef\xbb\xbf"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

HOSTILE_TEXT = [
    f"x\n{FORGED} forged line", f"x\r\n{FORGED}", f"x\r{FORGED}", f"\n{FORGED}", f"x\u2028{FORGED}",
    f"x\x85{FORGED}", "[/x]", "[/]", f"[bold]{MARKUP}[/bold]", f"[link=https://example.invalid]{MARKUP}[/link]",
    f"[red on white]{MARKUP}", "<script>alert('vigil')</script>", "<b>bold</b>", "&lt;&amp;",
    "\x1b[2J\x1b[31mred\x1b[0m", "\x1b]8;;https://example.invalid\x1b\\link\x1b]8;;\x1b\\", "\x07bell",
    "abc\u202eevil", "\u2066isolate\u2069", "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1",
    "\0", "a\0b", "9" * 400, "-" + "9" * 30, "1e309", "-0", "NaN", "inf", "0x1F", "1_000", "١٢٣", "１２",
    "12.", ".5", "1,5", "2020-02-30", "0000-01-01", "9999-12-31", "99999-01-01", "2020-1-1", " 2020-01-01",
    "2020-01-01T00:00:00", "20200101", "2020-01-01\n", "", " ", '"', '""', "'", ",", "\\", "%s%n", "{0}",
    "${jndi:ldap://example.invalid/a}", "{'a': 1}", "[1, 2]", "NULL", "None", "\ufeff", "\u200b", "Y ", "y",
    "é" * 50, "\U0001f600", "\ufffd",
]
INTERESTING_BYTES = [b"\0", b"\r", b"\n", b"\r\n", b'"', b",", b'","', BOM, b"\xff", b"\xc3", b"\xc0\x80",
                     b"\xe2\x80\xae", b"\x1b[31m", b"\t", b";", b"\\", b"\x85", b"\xed\xa0\x80",
                     f"\n{FORGED},".encode(), f"[bold]{MARKUP}[/bold]".encode()]
HOSTILE_NAMES = ["name", "birth_date", "", "patient_id ", " patient_id", "Patient_ID", "PATIENT_ID",
                 "x'; DROP TABLE raw.patients; --", '"', "a\nVIGILFORGED", f"[bold]{MARKUP}[/bold]",
                 "../../etc/passwd", "/etc/passwd", "rowid", "_row", "delivery_id", "site_id", "line_number",
                 "source_file", "ctx_key", "*", "\x1b[31m", "col\u202e", "\ufeffpatient_id", "patient\0id",
                 "manifest.json", ".hidden", "patients.csv"]
ODD_CREATED_AT = ["2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2030-01-01T00:00:00Z", "2026-07-04",
                  "2026-07-04T09:12:00", "2026-07-04T09:12:00+14:00", "2026-07-04T09:12:00-12:00",
                  "2026-07-04 09:12:00Z", "2026-07-04T09:12:00.123456Z", "20260704T091200Z",
                  "0001-01-01T00:00:00Z", "2026-07-04T24:00:00Z", "2026-W27-6", "2026-06-29T23:59:59Z",
                  "2026-07-04T09:12:00+99:00", f"2026-07-04T09:12:00Z\n{FORGED}", f"[bold]{MARKUP}[/bold]"]
ODD_DATA_CUT = ["2026-06-31", "2026-6-30", "2026-06-30 ", "2027-06-30", "2025-06-30", "1899-12-31",
                "0001-01-01", "9999-12-31", "2026-06-30\n", "+2026-06-30"]


# ---------------------------------------------------------------------------------------------
# Plans: what hypothesis draws for one example.
# ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    fmt: str
    base: str  # tiny | synth
    site: str
    family: str
    ops: list
    rehash: bool

    def describe(self) -> str:
        return f"{self.fmt} {self.base} {self.site} {self.family} rehash={self.rehash} ops={self.ops!r}"


FAMILIES = {  # family -> formats it applies to
    "csv_bytes": ("csv",), "cells": ("csv", "parquet"), "header": ("csv", "parquet"),
    "manifest": ("csv", "parquet"), "folder": ("csv", "parquet"), "parquet_schema": ("parquet",),
    "file_kind": ("csv", "parquet"), "control": ("csv", "parquet"),
}

position = st.integers(0, 2 ** 31)
table_name = st.sampled_from(TABLES)
hostile_text = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=40),
    st.tuples(st.sampled_from(HOSTILE_TEXT), st.sampled_from(HOSTILE_TEXT)).map("".join),
    st.integers(-2 ** 80, 2 ** 80).map(str),
    st.floats().map(repr),
    st.dates().map(date.isoformat),
)
cell_value = st.one_of(hostile_text, hostile_text.map(lambda h: "{SITE}-00000000000000A1" + h),
                       hostile_text.map(lambda h: "{VALUE}" + h), st.just("{SITE}-00000000000000A1"))
hostile_name = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=20))
byte_chunk = st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(min_size=1, max_size=12))
json_value = st.one_of(hostile_text, st.sampled_from(ODD_CREATED_AT), st.sampled_from(ODD_DATA_CUT),
                       st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2))
file_choice = table_name  # the table whose file (in the delivery's format) an op targets

OPS = {
    "csv_bytes": st.one_of(
        st.tuples(st.just("insert"), table_name, position, byte_chunk),
        st.tuples(st.just("delete"), table_name, position, st.integers(1, 40)),
        st.tuples(st.just("replace"), table_name, position, byte_chunk),
        st.tuples(st.just("line_endings"), table_name,
                  st.sampled_from(["crlf", "cr", "mixed", "no_final", "blank_lines", "crlf_last_only"])),
        st.tuples(st.just("long_field"), table_name, position,
                  st.sampled_from([70_000, 1_000_000, 1_999_000, 2_000_001, 2_600_000])),
        st.tuples(st.just("prefix"), table_name,
                  st.sampled_from([BOM, BOM + BOM, b"\xfe\xff", b"\n", b"sep=,\n", b"\r\n"])),
        st.tuples(st.just("truncate"), table_name, position),
        st.tuples(st.just("duplicate_line"), table_name, position),
    ),
    "cells": st.tuples(st.just("cell"), table_name, position, position, cell_value),
    "header": st.one_of(
        st.tuples(st.just("rename"), table_name, position, hostile_name),
        st.tuples(st.just("duplicate"), table_name, position),
        st.tuples(st.just("extra"), table_name, hostile_name),
        st.tuples(st.just("drop"), table_name, position),
        st.tuples(st.just("reorder"), table_name, st.integers(1, 10)),
        st.tuples(st.just("upper"), table_name, position),
        st.tuples(st.just("pad"), table_name, position, st.sampled_from([" ", "\t", "\ufeff", "\u200b", '"', "\r"])),
    ),
    "manifest": st.one_of(
        st.tuples(st.just("rows"), file_choice,
                  st.sampled_from([-1, 1, 2 ** 63, -(2 ** 63), "2", 2.0, True, None, [], 1e100, 10 ** 30, "delta-1",
                                   "delta+1"])),
        st.tuples(st.just("sha256"), file_choice,
                  st.sampled_from(["upper", "short", "nonhex", "other_file", "empty", None, 123, "newline"])),
        st.tuples(st.just("field"), st.sampled_from(["study_id", "spec_version", "site_id", "data_cut", "created_at"]),
                  json_value, st.booleans()),
        st.tuples(st.just("drop_key"), st.sampled_from(["study_id", "spec_version", "site_id", "data_cut",
                                                        "created_at", "files"])),
        st.tuples(st.just("extra_key"), hostile_name, json_value),
        st.tuples(st.just("files_extra"), hostile_name),
        st.tuples(st.just("files_drop"), file_choice),
        st.tuples(st.just("files_entry"), file_choice, hostile_name, json_value),
        st.tuples(st.just("bytes"), st.sampled_from(["bom", "duplicate_site_key", "nan", "trailing_garbage", "utf16",
                                                     "deep", "array", "empty", "latin1_value", "escaped_nul"])),
    ),
    "folder": st.one_of(
        st.tuples(st.just("suffix"), st.sampled_from([f"\n{FORGED}", f"[bold]{MARKUP}[/bold]", " ", "\x1b[31m",
                                                      "\u202e", "'; DROP TABLE raw.patients; --", "\t", "\r",
                                                      "\\", ".bak"])),
        st.tuples(st.just("site_both"), st.sampled_from([f"DK01\n{FORGED}", f"[bold]{MARKUP}[/bold]", "dk01", "D",
                                                          "DK01 ", "DK0\u202e1", "X" * 17, "DK01'--", "ZZ99"])),
        st.tuples(st.just("lowercase")),
        st.tuples(st.just("symlink"), st.sampled_from(["same_name", "other_name"])),
        st.tuples(st.just("mismatch"), st.sampled_from(SITES + ["2026-05-31", "2025-06-30"])),
        st.tuples(st.just("long_name"), st.integers(60, 250)),
        st.tuples(st.just("leading_dot")),
    ),
    "parquet_schema": st.one_of(
        st.tuples(st.just("column"), table_name, position,
                  st.sampled_from(["struct", "list", "map", "list_struct", "binary", "binary_invalid", "large_string",
                                   "nul_string", "timestamp_ms", "timestamp_ns_tz", "date32", "int64", "uint64_max",
                                   "int8", "float64", "float_inf", "decimal", "bool", "dictionary", "null",
                                   "fixed_size_binary", "time", "duration", "long_string"])),
        st.tuples(st.just("row_groups"), table_name),
        st.tuples(st.just("metadata"), table_name, hostile_text),
        st.tuples(st.just("fewer_rows"), table_name, st.integers(0, 3), st.booleans()),
    ),
    "file_kind": st.tuples(st.just("kind"), st.sampled_from(TABLES + ["manifest.json"]),
                           st.sampled_from(["dir", "symlink_inside", "symlink_outside", "symlink_dangling",
                                            "symlink_dir", "fifo", "hardlink_outside", "extra_file", "extra_dir",
                                            "empty"])),
    "control": st.one_of(st.tuples(st.just("none")), st.tuples(st.just("later_created_at"), st.integers(1, 600)),
                         st.tuples(st.just("bom")), st.tuples(st.just("crlf")), st.tuples(st.just("same_again")),
                         st.tuples(st.just("row_groups"))),
}


@st.composite
def plans(draw) -> Plan:
    family = draw(st.sampled_from(list(FAMILIES)))
    fmt = draw(st.sampled_from(FAMILIES[family]))
    base = draw(st.sampled_from(["synth", "synth", "tiny"]))
    site = draw(st.sampled_from(SITES))
    ops = draw(st.lists(OPS[family], min_size=1, max_size=1 if family in ("folder", "control", "file_kind") else 3))
    if fmt == "parquet":  # the CSV-only control variants become plain controls
        ops = [op if op[0] not in ("bom", "crlf") else ("none",) for op in ops]
    elif family == "control":
        ops = [op if op[0] != "row_groups" else ("none",) for op in ops]
    return Plan(fmt, base, site, family, ops, rehash=draw(st.integers(0, 9)) > 0)


# ---------------------------------------------------------------------------------------------
# Building one example: a fresh valid delivery, then the plan's mutations.
# ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    number: int
    plan: Plan
    root: Path  # work/<number>: landing/ holds the delivery, outside/ what must not be read
    folder: Path  # the delivery folder as the user names it (may have been renamed or be a symlink)
    notes: list[str] = field(default_factory=list)

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def outside(self) -> Path:
        return self.root / "outside"


def build_example(number: int, plan: Plan, work: Path, synth_bases: dict[tuple[str, str], Path]) -> Example:
    root = work / f"{number:05d}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "landing").mkdir(parents=True)
    (root / "outside").mkdir()
    created = (BASE_CREATED + timedelta(minutes=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if plan.base == "tiny":
        folder = write_delivery(root / "landing", valid_rows(plan.site), site=plan.site, cut=CUT,
                                created_at=created, fmt=plan.fmt)
    else:
        folder = root / "landing" / f"{plan.site}_{CUT}"
        shutil.copytree(synth_bases[(plan.fmt, plan.site)], folder)
        set_manifest(folder, lambda m: m.update(created_at=created))
    example = Example(number, plan, root, folder)
    example.folder = MUTATE[plan.family](example)
    return example


def file_path(folder: Path, table: str, fmt: str) -> Path:
    return folder / f"{table}.{fmt}"


def set_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def maybe_rehash(example: Example) -> None:
    if example.plan.rehash:
        rehash(example.folder)


def read_csv_records(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def write_csv_records(path: Path, records: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="", errors="surrogatepass") as handle:
        csv.writer(handle, lineterminator="\n").writerows(records)


def mutate_csv_bytes(example: Example) -> Path:
    for op, table, *args in example.plan.ops:
        path = file_path(example.folder, table, "csv")
        path.write_bytes(byte_op(path.read_bytes(), op, args))
    maybe_rehash(example)
    return example.folder


def byte_op(data: bytes, op: str, args: list) -> bytes:
    at = args[0] % (len(data) + 1) if args and isinstance(args[0], int) and op != "line_endings" else 0
    if op == "insert":
        return data[:at] + args[1] + data[at:]
    if op == "delete":
        return data[:at] + data[at + args[1]:]
    if op == "replace":
        return data[:at] + args[1] + data[at + len(args[1]):]
    if op == "truncate":
        return data[:at]
    if op == "prefix":
        return args[0] + data
    if op == "duplicate_line":
        lines = data.split(b"\n")
        i = args[0] % len(lines)
        return b"\n".join(lines[:i + 1] + lines[i:])
    if op == "long_field":  # a long value just before a field separator, so the row keeps its shape
        separators = [i for i, b in enumerate(data) if b in b",\n"] or [len(data)]
        at = separators[args[0] % len(separators)]
        return data[:at] + b"A" * args[1] + data[at:]
    return line_endings(data, args[0])


def line_endings(data: bytes, kind: str) -> bytes:
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "cr":
        return data.replace(b"\n", b"\r")
    if kind == "mixed":
        return data.replace(b"\n", b"\r\n", 2)
    if kind == "no_final":
        return data.rstrip(b"\n")
    if kind == "blank_lines":
        return data.replace(b"\n", b"\n\n", 2) + b"\n\n"
    return data[:-1] + b"\r\n" if data.endswith(b"\n") else data  # crlf_last_only


def mutate_cells(example: Example) -> Path:
    for _, table, row, column, value in example.plan.ops:
        set_cell(example, table, row, column, value)
    maybe_rehash(example)
    return example.folder


def set_cell(example: Example, table: str, row: int, column: int, value: str) -> None:
    path = file_path(example.folder, table, example.plan.fmt)
    if example.plan.fmt == "csv":
        records = read_csv_records(path)
        if len(records) < 2:
            return
        r, c = 1 + row % (len(records) - 1), column % len(records[0])
        records[r][c] = fill(value, example.plan.site, records[r][c])
        write_csv_records(path, records)
        return
    frame = read_parquet(path)
    if frame.num_rows == 0:
        return
    r, c = row % frame.num_rows, column % frame.num_columns
    values = frame.column(c).cast(pa.string()).to_pylist()
    values[r] = fill(value, example.plan.site, values[r] or "")
    pq.write_table(frame.set_column(c, frame.field(c).name, pa.array(values, pa.string())), path)


def read_parquet(path: Path) -> pa.Table:
    """The whole file (ParquetFile, not read_table: that refuses repeated column names)."""
    return pq.ParquetFile(path).read()


def fill(value: str, site: str, current: str) -> str:
    return value.replace("{SITE}", site).replace("{VALUE}", current)


def mutate_header(example: Example) -> Path:
    for op, table, *args in example.plan.ops:
        path = file_path(example.folder, table, example.plan.fmt)
        if example.plan.fmt == "csv":
            records = read_csv_records(path)
            names, reshape = header_op(records[0], op, args)
            write_csv_records(path, [names] + [reshape(r) for r in records[1:]])
        else:
            frame = read_parquet(path)
            names, reshape = header_op(frame.column_names, op, args)
            columns = reshape([frame.column(i) for i in range(frame.num_columns)],
                              filler=pa.array(["x"] * frame.num_rows, pa.string()))
            pq.write_table(pa.Table.from_arrays(columns, names=names), path)
    maybe_rehash(example)
    return example.folder


def header_op(names: list[str], op: str, args: list):
    """New header names and a function that reshapes a row (list of values) to them."""
    names = list(names)
    i = args[0] % len(names) if args and isinstance(args[0], int) else 0

    def same(row, filler=""):
        return list(row)

    if op == "rename":
        names[i] = args[1]
        return names, same
    if op == "upper":
        names[i] = names[i].upper()
        return names, same
    if op == "pad":
        names[i] = names[i] + args[1] if args[1] != "\ufeff" else args[1] + names[i]
        return names, same
    if op == "duplicate":
        return names + [names[i]], lambda row, filler="x": list(row) + [row[i]]
    if op == "extra":
        return names + [args[0]], lambda row, filler="x": list(row) + [filler]
    if op == "drop":
        return names[:i] + names[i + 1:], lambda row, filler="": list(row)[:i] + list(row)[i + 1:]
    k = args[0] % len(names)  # reorder: rotate
    return names[k:] + names[:k], lambda row, filler="": list(row)[k:] + list(row)[:k]


def mutate_manifest(example: Example) -> Path:
    folder = example.folder
    for op in example.plan.ops:
        try:
            if op[0] == "bytes":
                path = folder / "manifest.json"
                path.write_bytes(manifest_bytes(path.read_bytes(), op[1]))
            elif op[0] == "field" and op[3] and op[1] in ("site_id", "data_cut"):
                folder = set_identity(folder, example, **{op[1]: op[2]})  # folder renamed to match
            else:
                set_manifest(folder, lambda m: manifest_op(m, op, example.plan.fmt))
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration) as exc:
            # an earlier op left no JSON object (or no such entry) to edit: this one is a no-op
            example.notes.append(f"manifest op {op!r} skipped: {exc!r}")
    return folder


def manifest_op(m: dict, op: tuple, fmt: str) -> None:
    kind, *args = op
    files = m.get("files")
    name = f"{args[0]}.{fmt}" if kind in ("rows", "sha256", "files_drop", "files_entry") else None
    if kind == "rows":
        value = args[1]
        if isinstance(value, str) and value.startswith("delta"):
            value = files[name]["rows"] + int(value[5:])
        files[name]["rows"] = value
    elif kind == "sha256":
        files[name]["sha256"] = sha_variant(files, name, args[1])
    elif kind == "field":
        m[args[0]] = args[1]
    elif kind == "drop_key":
        m.pop(args[0], None)
    elif kind == "extra_key":
        m[args[0]] = args[1]
    elif kind == "files_extra":
        files[args[0]] = dict(files[next(iter(files))])
    elif kind == "files_drop":
        files.pop(name, None)
    elif kind == "files_entry":
        files[name][args[1]] = args[2]


def sha_variant(files: dict, name: str, how):
    sha = files[name]["sha256"]
    return {"upper": sha.upper(), "short": sha[:63], "nonhex": "g" * 64, "empty": "",
            "other_file": next(e["sha256"] for n, e in files.items() if n != name),
            "newline": sha[:32] + "\n" + sha[33:]}.get(how, how) if isinstance(how, str) else how


def manifest_bytes(data: bytes, how: str) -> bytes:
    text = data.decode("utf-8")
    if how == "bom":
        return BOM + data
    if how == "duplicate_site_key":  # JSON keeps the last of two equal keys
        return text.replace('"site_id":', '"site_id": "ZZ99", "site_id":', 1).encode()
    if how == "nan":
        return text.replace('"study_id":', '"nan": NaN, "big": 1e999, "study_id":', 1).encode()
    if how == "trailing_garbage":
        return data + b"\n}garbage"
    if how == "utf16":
        return text.encode("utf-16")
    if how == "deep":
        return text.replace('"study_id":', '"deep": ' + "[" * 5000 + "]" * 5000 + ', "study_id":', 1).encode()
    if how == "array":
        return b"[" + data + b"]"
    if how == "empty":
        return b""
    if how == "latin1_value":
        return text.replace('"study_id":', '"note": "caf\xe9", "study_id":', 1).encode("latin-1")
    return text.replace('"study_id":', '"note": "a\\u0000b\\u001b[31m", "study_id":', 1).encode()  # escaped_nul


def set_identity(folder: Path, example: Example, site_id=None, data_cut=None) -> Path:
    """Manifest site_id / data_cut changed and the folder renamed to match (the check past the name)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    site = manifest["site_id"] if site_id is None else site_id
    cut = manifest["data_cut"] if data_cut is None else data_cut
    set_manifest(folder, lambda m: m.update(site_id=site, data_cut=cut))
    return rename_folder(folder, f"{site}_{cut}", example)


def rename_folder(folder: Path, name: str, example: Example) -> Path:
    name = name.replace("/", "_").replace("\0", "_") or "_"
    try:
        target = folder.with_name(name)
        folder.rename(target)
        return target
    except (OSError, ValueError) as exc:  # a name the file system refuses (too long)
        example.notes.append(f"rename to {name!r} failed: {exc}; folder kept")
        return folder


def mutate_folder(example: Example) -> Path:
    folder = example.folder
    kind, *args = example.plan.ops[0]
    if kind == "suffix":
        return rename_folder(folder, folder.name + args[0], example)
    if kind == "site_both":
        return set_identity(folder, example, site_id=args[0])
    if kind == "lowercase":
        return rename_folder(folder, folder.name.lower(), example)
    if kind == "mismatch":
        site, cut = folder.name.split("_")
        return rename_folder(folder, f"{args[0]}_{cut}" if args[0] in SITES else f"{site}_{args[0]}", example)
    if kind == "long_name":
        return rename_folder(folder, folder.name + "A" * args[0], example)
    if kind == "leading_dot":
        return rename_folder(folder, "." + folder.name, example)
    real = example.outside / "real" / folder.name  # symlink: the landing entry links to the real folder
    real.parent.mkdir()
    folder.rename(real)
    link = folder if args[0] == "same_name" else folder.with_name(f"{SITES[(SITES.index(folder.name[:4]) + 1) % 3]}_{CUT}")
    link.symlink_to(os.path.relpath(real, link.parent))
    return link


PARQUET_KINDS = {
    "struct": lambda v: pa.array([None if x is None else {"v": x, "n": i} for i, x in enumerate(v)]),
    "list": lambda v: pa.array([None if x is None else [x, x] for x in v], pa.list_(pa.string())),
    "map": lambda v: pa.array([None if x is None else [("k", x)] for x in v], pa.map_(pa.string(), pa.string())),
    "list_struct": lambda v: pa.array([None if x is None else [{"v": x}] for x in v]),
    "binary": lambda v: pa.array([None if x is None else x.encode() for x in v], pa.binary()),
    "binary_invalid": lambda v: pa.array([None if x is None else b"\xff\xfe" + x.encode() for x in v], pa.binary()),
    "large_string": lambda v: pa.array(v, pa.large_string()),
    "nul_string": lambda v: pa.array([None if x is None else x[:1] + "\0" + x[1:] for x in v], pa.string()),
    "timestamp_ms": lambda v: pa.array([as_datetime(x) for x in v], pa.timestamp("ms")),
    "timestamp_ns_tz": lambda v: pa.array([as_datetime(x) for x in v], pa.timestamp("ns", tz="Europe/Copenhagen")),
    "date32": lambda v: pa.array([as_date(x) for x in v], pa.date32()),
    "int64": lambda v: pa.array([as_int(x) for x in v], pa.int64()),
    "uint64_max": lambda v: pa.array([2 ** 64 - 1 for _ in v], pa.uint64()),
    "int8": lambda v: pa.array([None if as_int(x) is None else as_int(x) % 128 for x in v], pa.int8()),
    "float64": lambda v: pa.array([as_float(x) for x in v], pa.float64()),
    "float_inf": lambda v: pa.array([float("inf") if i % 2 else float("nan") for i, _ in enumerate(v)], pa.float64()),
    "decimal": lambda v: pa.array([as_decimal(x) for x in v], pa.decimal128(38, 10)),
    "bool": lambda v: pa.array([None if x is None else x == "Y" for x in v], pa.bool_()),
    "dictionary": lambda v: pa.array(v, pa.string()).dictionary_encode(),
    "null": lambda v: pa.nulls(len(v)),
    "fixed_size_binary": lambda v: pa.array([(x or "").encode()[:16].ljust(16, b"\0") for x in v], pa.binary(16)),
    "time": lambda v: pa.array([datetime(2020, 1, 1, 12, 0).time() for _ in v], pa.time64("us")),
    "duration": lambda v: pa.array([timedelta(days=1) for _ in v], pa.duration("s")),
    "long_string": lambda v: pa.array(["L" * 2_100_000 if i == 0 else x for i, x in enumerate(v)], pa.large_string()),
}


def as_date(text):
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def as_datetime(text):
    d = as_date(text)
    return None if d is None else datetime(d.year, d.month, d.day)


def as_int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def as_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def as_decimal(text):
    try:
        value = Decimal(text)
        return value if value.is_finite() and abs(value) < Decimal(10) ** 27 else None
    except (TypeError, InvalidOperation):
        return None


def mutate_parquet_schema(example: Example) -> Path:
    for op, table, *args in example.plan.ops:
        path = file_path(example.folder, table, "parquet")
        frame = read_parquet(path)
        if op == "column":
            c = args[0] % frame.num_columns
            if pa.types.is_nested(frame.field(c).type):  # an earlier op of the plan made it nested already
                continue
            values = frame.column(c).cast(pa.string()).to_pylist()
            frame = frame.set_column(c, frame.field(c).name, PARQUET_KINDS[args[1]](values))
            pq.write_table(frame, path)
        elif op == "row_groups":
            pq.write_table(frame, path, row_group_size=1)
        elif op == "metadata":
            meta = {b"pandas": args[0].encode("utf-8", "surrogatepass"), args[0].encode("utf-8", "surrogatepass"): b"x"}
            pq.write_table(frame.replace_schema_metadata(meta), path)
        else:  # fewer_rows: the first k rows; the manifest follows (or keeps lying)
            pq.write_table(frame.slice(0, args[0]), path)
            if args[1]:
                set_manifest(example.folder, lambda m: m["files"][path.name].update(rows=min(args[0], frame.num_rows)))
    maybe_rehash(example)
    return example.folder


def mutate_file_kind(example: Example) -> Path:
    folder, fmt = example.folder, example.plan.fmt
    _, target, kind = example.plan.ops[0]
    name = target if target == "manifest.json" else f"{target}.{fmt}"
    path = folder / name
    outside_copy = example.outside / name
    shutil.copy(path, outside_copy)
    if kind in ("extra_file", "extra_dir"):
        extra = folder / (".DS_Store" if kind == "extra_file" else "notes")
        extra.mkdir() if kind == "extra_dir" else extra.write_bytes(b"\0\1")
        return folder
    if kind == "empty":
        path.write_bytes(b"")
        maybe_rehash(example)
        return folder
    path.unlink()
    if kind == "dir":
        path.mkdir()
        (path / "inner.csv").write_bytes(outside_copy.read_bytes())
    elif kind == "symlink_inside":
        other = next(p for p in sorted(folder.iterdir()) if p.suffix == f".{fmt}")
        path.symlink_to(other.name)
    elif kind == "symlink_outside":
        path.symlink_to(os.path.relpath(outside_copy, folder))
    elif kind == "symlink_dangling":
        path.symlink_to("does-not-exist")
    elif kind == "symlink_dir":
        path.symlink_to(os.path.relpath(example.outside, folder))
    elif kind == "fifo":
        os.mkfifo(path)
    else:  # hardlink_outside: a regular file of the delivery that is also a file elsewhere
        os.link(outside_copy, path)
    return folder


def mutate_control(example: Example) -> Path:
    folder, kind, *args = example.folder, *example.plan.ops[0]
    if kind == "later_created_at":
        later = (BASE_CREATED + timedelta(minutes=example.number, seconds=args[0])).strftime("%Y-%m-%dT%H:%M:%SZ")
        set_manifest(folder, lambda m: m.update(created_at=later))
    elif kind in ("bom", "crlf"):
        for path in folder.glob("*.csv"):
            data = path.read_bytes()
            path.write_bytes(BOM + data if kind == "bom" else data.replace(b"\n", b"\r\n"))
        rehash(folder)
    elif kind == "row_groups":
        for path in folder.glob("*.parquet"):
            pq.write_table(read_parquet(path), path, row_group_size=1)
        rehash(folder)
    elif kind == "same_again":  # the manifest of example 0 for this base: an identical re-delivery
        set_manifest(folder, lambda m: m.update(created_at=BASE_CREATED.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return folder


MUTATE = {"csv_bytes": mutate_csv_bytes, "cells": mutate_cells, "header": mutate_header,
          "manifest": mutate_manifest, "folder": mutate_folder, "parquet_schema": mutate_parquet_schema,
          "file_kind": mutate_file_kind, "control": mutate_control}


# ---------------------------------------------------------------------------------------------
# Independent views of a delivery (not vigil's code): rows and values as delivered.
# ---------------------------------------------------------------------------------------------

def delivered_rows(path: Path, fmt: str) -> tuple[list[str], list[list]] | None:
    """Header and data rows of a delivered file, or None if Python cannot read it independently."""
    try:
        if fmt == "parquet":  # by position: column names may repeat
            frame = read_parquet(path)
            return frame.column_names, [list(r) for r in zip(*(c.to_pylist() for c in frame.columns))]
        records = [r for r in read_csv_records(path) if r]  # blank lines are no rows
        return records[0], records[1:]
    except Exception:  # noqa: BLE001 - an unreadable file is simply not compared
        return None


def nested_columns(path: Path) -> list[str]:
    try:
        schema = pq.read_schema(path)
    except Exception:  # noqa: BLE001
        return []
    return [f.name for f in schema if pat.is_nested(f.type)]


def expected_raw(header: list[str], rows: list[list], table: str, fmt: str, schema=None) -> list[tuple] | None:
    """The raw layer's values as the spec says: every value as delivered, an empty CSV field = missing.
    For Parquet only text columns are compared, exactly (the text of other types is DuckDB's)."""
    columns = COLUMNS[table]
    if any(header.count(c) != 1 for c in columns):
        return None
    index = {c: header.index(c) for c in columns}
    if fmt == "csv":
        return [tuple(r[index[c]] or None for c in columns) for r in rows]
    text = text_columns(schema, columns)
    return [tuple(r[index[c]] if c in text else None for c in columns) for r in rows]


def text_columns(schema, columns: list[str]) -> set[str]:
    """The columns delivered as Parquet text (a repeated or missing name is none of them)."""
    fields = [schema.field(i) for i in (schema.get_field_index(c) for c in columns) if i >= 0]
    return {f.name for f in fields if pat.is_string(f.type) or pat.is_large_string(f.type)}


# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------

@dataclass
class Failure:
    number: int
    path: str
    family: str
    fmt: str
    check: str
    detail: str
    saved: Path | None = None


def output_problems(text: str) -> list[tuple[str, str]]:
    """What delivered text must never do to a terminal or a log."""
    problems = []
    if "Traceback (most recent call last)" in text:
        problems.append(("traceback", text[text.index("Traceback"):][:1500]))
    lines = text.splitlines()
    forged = [f"{(lines[i - 1] if i else '')[-80:]!r} + {line[:80]!r}" for i, line in enumerate(lines)
              if line.lstrip(" \t│┃|─━╭╰╮╯┏┗┓┛├┤┡┩+-=").startswith(FORGED)]
    if forged:  # each with the line before it, which tells the surface (table, message, log)
        problems.append(("forged output line", f"{len(forged)} lines: " + " | ".join(forged[:4])))
    at = text.find(MARKUP)
    while at >= 0:
        if at == 0 or text[at - 1] != "]":
            problems.append(("markup obeyed", text[max(0, at - 120):at + 40]))
            break
        at = text.find(MARKUP, at + 1)
    for char, what in [("\x1b", "ANSI escape reached the output"), ("\r", "carriage return reached the output"),
                       ("\0", "NUL reached the output")] + [(c, "bidi control reached the output") for c in BIDI]:
        if char in text:
            i = text.index(char)
            problems.append((what, repr(text[max(0, i - 150):i + 60])))
    return problems


def self_test_output_checks() -> None:
    """The output checks must catch what they are for (guards against a vacuous fuzzer)."""
    assert output_problems(f"ok\n{FORGED} x") and output_problems(f"│ {FORGED}")
    assert output_problems(f"a {MARKUP} b") and not output_problems(f"a [bold]{MARKUP}[/bold] b")
    assert output_problems("a\x1b[31m") and output_problems("a\u202eb") and output_problems("Traceback (most recent call last):")
    assert not output_problems(f"a\\x0a{FORGED} b")


def layout_reference() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Tables and columns of a freshly created layout; it must hold every contract column in raw and staging."""
    con = duckdb.connect(":memory:")
    warehouse.create_layout(con)
    layout = table_columns(con)
    con.close()
    for layer in ("raw", "staging"):
        for table, columns in COLUMNS.items():
            names = [c for c, _ in layout[(layer, table)]]
            assert set(columns) <= set(names), f"fresh layout {layer}.{table} lacks contract columns"
    return layout


def table_columns(con) -> dict[tuple[str, str], list[tuple[str, str]]]:
    rows = con.execute("""SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns()
                          WHERE NOT internal AND schema_name IN ('raw', 'staging', 'audit')
                          ORDER BY schema_name, table_name, column_index""").fetchall()
    out: dict = defaultdict(list)
    for schema, table, column, data_type in rows:
        out[(schema, table)].append((column, data_type))
    return dict(out)


STATE_TABLES = [f"raw.{t}" for t in TABLES] + [f"staging.{t}" for t in TABLES] + [
    "audit.quarantine", "audit.delivery_tables", "audit.rule_results", "audit.validation_results"]


def state_digest(con) -> dict[str, tuple]:
    """Count and an order-free hash of every stored row (all but the receipts a refusal adds)."""
    return {t: con.execute(f"SELECT count(*), bit_xor(hash(x)), sum(hash(x) % 1000003) FROM {t} x").fetchone()
            for t in STATE_TABLES}


def warehouse_problems(con, layout: dict, before: dict, last_id: int, outcome: str,
                       example: Example) -> list[tuple[str, str]]:
    problems = []
    got = table_columns(con)
    if got != layout:  # the layout's SQL (read at each create_layout) may have changed on disk meanwhile
        layout.clear()
        layout.update(layout_reference())
    if got != layout:
        diff = {k: v for k, v in got.items() if layout.get(k) != v}
        problems.append(("stored outside the spec: tables/columns differ from a fresh layout",
                         f"{diff or set(layout) - set(got)}"[:800]))
    problems += receipt_problems(con, last_id, outcome)
    problems += accounting_problems(con)
    problems += text_problems(con)
    if outcome in ("refused", "already_loaded", "ignored") and state_digest(con) != before:
        after = state_digest(con)
        problems.append((f"{outcome} delivery changed stored rows",
                         ", ".join(t for t in STATE_TABLES if after[t] != before[t])))
    if outcome == "accepted":
        problems += delivered_problems(con, last_id, example)
    return problems


def receipt_problems(con, last_id: int, outcome: str) -> list[tuple[str, str]]:
    new = con.execute("SELECT delivery_id, status FROM audit.delivery_receipts WHERE delivery_id > ? "
                      "ORDER BY delivery_id", [last_id]).fetchall()
    expected = {"accepted": ["accepted"], "refused": ["refused"], "already_loaded": [], "ignored": []}.get(outcome)
    if expected is not None and [s for _, s in new] != expected:
        return [("receipts do not match the outcome", f"outcome {outcome}, new receipts {new}")]
    future = con.execute("SELECT delivery_id, created_at FROM audit.delivery_receipts WHERE status = 'accepted' "
                         "AND created_at > now() + INTERVAL 1 DAY").fetchall()
    return [("accepted a created_at in the future", f"{future}")] if future else []


def accounting_problems(con) -> list[tuple[str, str]]:
    """Rows received = loaded + quarantined, and where each of them is, for every delivery."""
    problems = []
    for delivery_id, status in con.execute("SELECT delivery_id, status FROM audit.deliveries").fetchall():
        for table in TABLES:
            counts = con.execute(f"""SELECT
                (SELECT count(*) FROM raw.{table} WHERE delivery_id = $id),
                (SELECT count(*) FROM staging.{table} WHERE delivery_id = $id),
                (SELECT count(*) FROM audit.quarantine WHERE delivery_id = $id AND table_name = $t),
                (SELECT list([rows_received, rows_loaded, rows_quarantined]) FROM audit.delivery_tables
                 WHERE delivery_id = $id AND table_name = $t)""", {"id": delivery_id, "t": table}).fetchone()
            raw, staging, quarantined, audit_rows = counts
            where = f"delivery {delivery_id} ({status}) {table}: raw {raw}, staging {staging}, " \
                    f"quarantine {quarantined}, delivery_tables {audit_rows}"
            if status == "refused":
                if raw or staging or quarantined or audit_rows:
                    problems.append(("refused delivery has stored rows", where))
                continue
            if not audit_rows or len(audit_rows) != 1:
                problems.append(("accepted delivery lacks its delivery_tables row", where))
                continue
            received, loaded, quarantine_count = audit_rows[0]
            current = status == "accepted"
            if received != loaded + quarantine_count or quarantine_count != quarantined \
                    or (current and (staging != loaded or raw != received)) or (not current and (raw or staging)):
                problems.append(("rows received != loaded + quarantined, or not where they should be", where))
    for table in TABLES:
        for layer in ("raw", "staging"):
            stale = con.execute(f"""SELECT site_id, list(DISTINCT delivery_id) FROM {layer}.{table} x
                WHERE delivery_id NOT IN (SELECT delivery_id FROM audit.deliveries WHERE status = 'accepted')
                GROUP BY site_id""").fetchall()
            if stale:
                problems.append((f"{layer} holds rows of a delivery that is not current", f"{table}: {stale}"))
    return problems


def text_problems(con) -> list[tuple[str, str]]:
    problems = []
    varchar = con.execute("""SELECT schema_name, table_name, column_name FROM duckdb_columns()
        WHERE schema_name IN ('raw', 'staging') AND data_type = 'VARCHAR' AND NOT internal""").fetchall()
    for schema, table, column in varchar:
        hit = con.execute(f'SELECT delivery_id, "{column}" FROM {schema}.{table} WHERE contains("{column}", chr(0)) '
                          "LIMIT 1").fetchone()
        if hit:
            problems.append(("NUL stored as text", f"{schema}.{table}.{column}: delivery {hit[0]}, {hit[1]!r}"[:300]))
    hit = con.execute("SELECT delivery_id, table_name, raw_values::VARCHAR FROM audit.quarantine "
                      "WHERE contains(raw_values::VARCHAR, '\\u0000') OR contains(raw_values::VARCHAR, chr(0)) "
                      "LIMIT 1").fetchone()
    if hit:
        problems.append(("NUL stored as text", f"audit.quarantine: delivery {hit[0]} {hit[1]}: {hit[2]!r}"[:300]))
    return problems


def delivered_problems(con, last_id: int, example: Example) -> list[tuple[str, str]]:
    """The delivery just accepted, against its files as Python reads them."""
    row = con.execute("SELECT delivery_id, file_format FROM audit.deliveries WHERE delivery_id > ? "
                      "AND status = 'accepted' ORDER BY delivery_id DESC LIMIT 1", [last_id]).fetchone()
    if not row:
        return []
    delivery_id, fmt = row
    problems = []
    for table in TABLES:
        path = file_path(example.folder, table, fmt)
        nested = nested_columns(path) if fmt == "parquet" else []
        if nested:
            problems.append(("accepted a non-scalar Parquet column (stored as a rendering)",
                             f"{path.name}: {nested}; stored e.g. {raw_sample(con, table, nested[0], delivery_id)}"))
        parsed = delivered_rows(path, fmt)
        received = con.execute("SELECT rows_received FROM audit.delivery_tables WHERE delivery_id = ? AND "
                               "table_name = ?", [delivery_id, table]).fetchone()[0]
        if fmt == "parquet":
            metadata_rows = pq.read_metadata(path).num_rows
            if metadata_rows != received:
                problems.append(("rows_received differs from the Parquet metadata",
                                 f"{path.name}: metadata {metadata_rows}, received {received}"))
        if parsed is None:
            continue
        header, rows = parsed
        if len(rows) != received:
            problems.append(("rows_received differs from the rows in the file",
                             f"{path.name}: file {len(rows)}, received {received}"))
        expected = expected_raw(header, rows, table, fmt, pq.read_schema(path) if fmt == "parquet" else None)
        stored = raw_values(con, table, delivery_id, fmt, header, path)
        if expected is not None and stored is not None and stored != expected:
            first = next((i for i, (a, b) in enumerate(zip(stored, expected)) if a != b), min(len(stored), len(expected)))
            problems.append(("raw does not hold the values as delivered",
                             f"{path.name} row {first + 1}: stored {stored[first:first + 1]!r}, "
                             f"delivered {expected[first:first + 1]!r} ({len(stored)} vs {len(expected)} rows)"[:600]))
    return problems


def raw_values(con, table: str, delivery_id: int, fmt: str, header: list[str], path: Path) -> list[tuple] | None:
    if not con.execute("SELECT count(*) FROM audit.deliveries WHERE delivery_id = ? AND status = 'accepted'",
                       [delivery_id]).fetchone()[0]:
        return None
    columns = COLUMNS[table]
    if fmt == "parquet":
        keep = text_columns(pq.read_schema(path), columns)
    else:
        keep = set(columns)
    select = ", ".join(f'"{c}"' if c in keep else "NULL" for c in columns)
    return [tuple(r) for r in con.execute(f"SELECT {select} FROM raw.{table} WHERE delivery_id = ? ORDER BY line_number",
                                          [delivery_id]).fetchall()]


def raw_sample(con, table: str, column: str, delivery_id: int) -> str:
    if column not in COLUMNS[table]:
        return "-"
    value = con.execute(f'SELECT "{column}" FROM raw.{table} WHERE delivery_id = ? AND "{column}" IS NOT NULL LIMIT 1',
                        [delivery_id]).fetchone()
    return repr(value[0])[:80] if value else "nothing in raw"


# ---------------------------------------------------------------------------------------------
# The two paths: in-process and the real CLI (against one Prefect server).
# ---------------------------------------------------------------------------------------------

class SetupFailed(Exception):
    """A fresh warehouse cannot be made: every later example would fail the same way."""


class Warehouse:
    """A warehouse file used for a number of deliveries, then replaced by a fresh one."""

    def __init__(self, root: Path, label: str, every: int):
        self.root, self.label, self.every = root, label, every
        self.count, self.generation = 0, 0
        self.db: Path | None = None
        self.before: dict = {}
        self.last_id = 0

    def next(self) -> Path:
        if self.db is None or self.count % self.every == 0:
            self.generation += 1
            self.db = self.root / f"{self.label}-{self.generation:03d}" / "vigil.duckdb"
            try:
                con = warehouse.connect(self.db)
                warehouse.create_layout(con)
                con.close()
            except Exception as exc:  # noqa: BLE001
                raise SetupFailed(f"{self.db}: {traceback.format_exc()[-1500:]}") from exc
            self.remember()
        self.count += 1
        return self.db

    def remember(self, con=None) -> None:
        """The state that the next delivery's checks compare with."""
        if con is None:
            with read_only(self.db) as con:
                return self.remember(con)
        self.before = state_digest(con)
        self.last_id = con.execute("SELECT coalesce(max(delivery_id), 0) FROM audit.delivery_receipts").fetchone()[0]


@contextmanager
def read_only(db: Path):
    con = duckdb.connect(str(db), read_only=True)
    try:
        yield con
    finally:
        con.close()


class Timeout(Exception):
    pass


@contextmanager
def watchdog(seconds: int):
    def expired(signum, frame):
        raise Timeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(example: Example, db: Path) -> tuple[str, str, list[tuple[str, str]]]:
    """(outcome, output, problems) of ingest_all + print_ingest_summary in this process."""
    buffer = io.StringIO()
    recorder = Console(file=buffer, width=20000, record=True, color_system=None, force_terminal=False)
    saved_console, vigil.cli.console = vigil.cli.console, recorder
    con = warehouse.connect(db)
    try:
        with watchdog(300):
            warehouse.create_layout(con)  # as `vigil ingest` does before each run
            outcomes = ingest_all(con, [example.landing], warehouse.gx_dir_for(db))
            vigil.cli.print_ingest_summary(outcomes)
    except Exception:  # noqa: BLE001 - any exception is a finding
        return "exception", buffer.getvalue(), [("exception in process", traceback.format_exc()[-3000:])]
    finally:
        vigil.cli.console = saved_console
        con.close()
    problems = [("outcome message spans lines", o.message[:300]) for o in outcomes if "\n" in o.message]
    problems += [("refusal does not name the folder as it is", f"folder {str(o.folder)!r}, message {o.message[:300]!r}")
                 for o in outcomes if o.status == "refused" and not names_folder(o.message, o.folder)]
    problems += [("load failed", o.message[:600]) for o in outcomes if o.status == "failed"]
    return (outcomes[0].status if outcomes else "ignored"), buffer.getvalue(), problems


def names_folder(message: str, folder: Path) -> bool:
    """A refusal starts with the delivery folder: its printable characters as they are, every other one
    as some escape (\\x0a, \\u202e, \\n), so that two folders never read the same."""
    escape = r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[nrt0])"
    pattern = "".join(re.escape(c) if c.isprintable() else escape for c in str(folder))
    return re.match(pattern, message) is not None


class PrefectServer:
    """One local Prefect server for the whole session, on a free port of 127.0.0.1."""

    def __init__(self, home: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.home = home
        self.api = f"http://127.0.0.1:{self.port}/api"
        home.mkdir(parents=True, exist_ok=True)
        self.log = (home / "server.log").open("wb")
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen([str(ROOT / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1",
                                         "--port", str(self.port)], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, seconds: int = 240) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prefect server exited ({self.process.returncode}); see {self.home / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"Prefect server not healthy after {seconds} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its children
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def run_cli(example: Example, db: Path, server: PrefectServer) -> tuple[str, str, list[tuple[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "VIGIL_DEBUG", "VIGIL_DB")}
    env.update(PREFECT_API_URL=server.api, PREFECT_HOME=str(server.home), COLUMNS="20000", NO_COLOR="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        result = subprocess.run([str(ROOT / ".venv/bin/vigil"), "ingest", str(example.folder), "--db", str(db)],
                                capture_output=True, env=env, timeout=300, cwd=example.root)
    except subprocess.TimeoutExpired as exc:
        return "exception", "", [("CLI did not finish within 300 s", str(exc))]
    output = (result.stdout.decode("utf-8", "backslashreplace") + "\n--- stderr ---\n"
              + result.stderr.decode("utf-8", "backslashreplace"))
    problems = [] if result.returncode in (0, 3) else [(f"CLI exit code {result.returncode}", output[-1500:])]
    if result.returncode == 0 and "no delivery folders found" in output:
        return "ignored", output, problems
    status = {3: "refused"}.get(result.returncode, "accepted_or_already" if result.returncode == 0 else "exception")
    return status, output, problems


# ---------------------------------------------------------------------------------------------
# The session: hypothesis draws plans until the time is up.
# ---------------------------------------------------------------------------------------------

class TimeUp(Exception):
    """Raised from the hypothesis test body to end the run when the time is up."""


class Session:
    def __init__(self, args):
        self.args, self.out = args, args.out
        self.deadline = time.monotonic() + args.minutes * 60
        self.started = time.monotonic()
        self.work = self.out / "work"
        self.layout = layout_reference()
        self.synth_bases = make_synth_bases(self.out / "bases", args.seed)
        self.inprocess = Warehouse(self.out / "warehouses", "inprocess", args.fresh_every)
        self.cli = Warehouse(self.out / "warehouses", "cli", max(1, args.fresh_every // 4))
        self.server: PrefectServer | None = None
        self.number = 0
        self.tried: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.seconds: Counter = Counter()
        self.failures: list[Failure] = []

    def run_plan(self, plan: Plan) -> None:
        if time.monotonic() > self.deadline:
            raise TimeUp
        self.number += 1
        path = "cli" if self.server and self.args.cli_every and self.number % self.args.cli_every == 0 else "inprocess"
        started = time.monotonic()
        try:
            example = build_example(self.number, plan, self.work, self.synth_bases)
            outcome, problems = self.run_example(example, path)
        except SetupFailed as exc:
            print(f"#{self.number} STOPPING: a fresh warehouse cannot be created: {exc}")
            self.failures.append(Failure(self.number, path, plan.family, plan.fmt,
                                         "a fresh warehouse cannot be created", str(exc)))
            raise TimeUp from exc
        except Exception:  # noqa: BLE001 - a defect of the fuzzer, not of vigil: say so and go on
            print(f"#{self.number} FUZZER ERROR {plan.describe()[:300]}: {traceback.format_exc()[-800:]}")
            self.outcomes[("fuzzer", "error")] += 1
            return
        elapsed = time.monotonic() - started
        self.seconds[path] += elapsed
        self.tried[("path", path)] += 1
        self.tried[("format", plan.fmt)] += 1
        self.tried[("family", plan.family)] += 1
        self.outcomes[(path, "failed" if problems else outcome)] += 1
        self.outcomes[("family", plan.family, outcome)] += 1
        self.report(example, path, outcome, problems, elapsed)

    def run_example(self, example: Example, path: str) -> tuple[str, list[tuple[str, str]]]:
        store = self.cli if path == "cli" else self.inprocess
        db = store.next()
        if path == "cli":
            outcome, output, problems = run_cli(example, db, self.server)
        else:
            outcome, output, problems = run_in_process(example, db)
        problems += output_problems(output)
        try:
            with read_only(db) as con:
                if outcome == "accepted_or_already":
                    new = con.execute("SELECT count(*) FROM audit.delivery_receipts WHERE delivery_id > ?",
                                      [store.last_id]).fetchone()[0]
                    outcome = "accepted" if new else "already_loaded"
                problems += warehouse_problems(con, self.layout, store.before, store.last_id, outcome, example)
                store.remember(con)
        except Exception:  # noqa: BLE001 - the warehouse cannot be read: a finding, and a fresh one next
            problems.append(("warehouse unreadable after the load", traceback.format_exc()[-1500:]))
            store.db = None
        example.notes.append(output[-4000:])
        return outcome, problems

    def report(self, example: Example, path: str, outcome: str, problems: list, elapsed: float) -> None:
        minutes = (time.monotonic() - self.started) / 60
        plan = example.plan
        mark = "FAIL" if problems else "ok"
        print(f"[{minutes:5.1f} min] #{example.number:<5} {path:<9} {plan.fmt:<7} {plan.family:<14} "
              f"{outcome:<14} {elapsed:5.1f}s {mark:<4} {one_line(repr(plan.ops))[:90]}", flush=True)
        saved = self.save(example, path, problems) if problems else None
        for check, detail in problems:
            self.failures.append(Failure(example.number, path, plan.family, plan.fmt, check, detail, saved))
            print(f"    {check}: {one_line(detail)[:240]}", flush=True)
        if not problems:
            shutil.rmtree(example.root, ignore_errors=True)

    def save(self, example: Example, path: str, problems: list) -> Path:
        target = self.out / "failures" / f"{example.number:05d}-{path}-{example.plan.family}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(example.root), target)  # a move keeps symlinks and FIFOs as they are
        folder = target / example.folder.relative_to(example.root)
        (target / "failure.txt").write_text(
            f"plan: {example.plan.describe()}\nseed: {self.args.seed}\npath: {path}\n\n"
            + "\n".join(f"CHECK {c}\n{d}\n" for c, d in problems)
            + f"\nreplay:\n  .venv/bin/vigil ingest {shlex_quote(folder)} --db /tmp/replay/vigil.duckdb\n"
            + f"  .venv/bin/python -c {shlex_quote(REPLAY.format(landing=str(folder.parent)))}\n\nnotes:\n"
            + "\n".join(example.notes), encoding="utf-8", errors="backslashreplace")
        return target

    def summary(self) -> int:
        minutes = (time.monotonic() - self.started) / 60
        print("\n" + "=" * 100)
        tried = sum(n for k, n in self.tried.items() if k[0] == "path")
        print(f"fuzz_deliveries: seed {self.args.seed}, {minutes:.1f} min, {tried} deliveries tried, out {self.out}")
        for key in ("path", "format", "family"):
            print(f"  by {key}: " + ", ".join(f"{k[1]} {n}" for k, n in sorted(self.tried.items()) if k[0] == key))
        for path in ("inprocess", "cli"):
            n = self.tried[("path", path)]
            rate = n / (self.seconds[path] / 60) if self.seconds[path] else 0
            counts = ", ".join(f"{k[1]} {v}" for k, v in sorted(self.outcomes.items()) if k[0] == path)
            print(f"  {path}: {n} deliveries, {rate:.1f} per minute of its own time; {counts}")
        print("  outcomes by family: " + "; ".join(
            f"{k[1]} {k[2]} {v}" for k, v in sorted(self.outcomes.items()) if k[0] == "family"))
        accepted = sum(v for k, v in self.outcomes.items() if k[0] == "family" and k[2] == "accepted")
        if not accepted:
            print("  WARNING: no delivery was accepted: the accepted-delivery checks never ran")
        by_check: dict[str, list[Failure]] = defaultdict(list)
        for failure in self.failures:
            by_check[failure.check].append(failure)
        print(f"\nfailures: {len(self.failures)} in {len({f.number for f in self.failures})} deliveries")
        for check, found in sorted(by_check.items(), key=lambda kv: -len(kv[1])):
            families = Counter(f"{f.fmt}/{f.family}" for f in found)
            print(f"\n  {check}: {len(found)} ({', '.join(f'{k} {v}' for k, v in families.most_common())})")
            for f in found:
                print(f"    #{f.number} {f.path} {f.fmt}/{f.family}: {one_line(f.detail)[:200]}  -> {f.saved}")
        return 1 if self.failures else 0


REPLAY = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from vigil import warehouse; "
          "from vigil.ingest.load import ingest_all; db = Path('/tmp/replay/vigil.duckdb'); con = warehouse.connect(db); "
          "warehouse.create_layout(con); [print(o.status, o.message) for o in ingest_all(con, [Path({landing!r})], "
          "warehouse.gx_dir_for(db))]")


def shlex_quote(value) -> str:
    return shlex.quote(str(value))


def one_line(text: str) -> str:
    return repr(text)[1:-1] if not text.isprintable() else text


def make_synth_bases(root: Path, seed: int) -> dict[tuple[str, str], Path]:
    bases = {}
    for fmt in ("csv", "parquet"):
        result = synthesize_study(root / fmt, patients=120, sites=3, seed=seed, fmt=fmt)
        for folder in result.deliveries:
            bases[(fmt, folder.name.split("_")[0])] = folder
    return bases


def sanity(session: Session) -> None:
    """Every base delivery, unchanged, must be accepted with rows, and pass every check."""
    for fmt in ("csv", "parquet"):
        for base in ("tiny", "synth"):
            plan = Plan(fmt, base, "DK01" if base == "tiny" else "SE02", "control", [("none",)], True)
            session.number += 1
            example = build_example(session.number, plan, session.work, session.synth_bases)
            outcome, problems = session.run_example(example, "inprocess")
            if outcome != "accepted" or problems:
                print(f"sanity: the valid {fmt} {base} delivery was {outcome}: {problems}\n{example.notes[-1]}")
                sys.exit(2)
            shutil.rmtree(example.root, ignore_errors=True)
    print(f"sanity: the four valid base deliveries load and pass every check "
          f"({session.inprocess.db})", flush=True)


def drive(session: Session, seed: int) -> None:
    """hypothesis draws plans until run_plan raises TimeUp (no shrinking: every example is new)."""
    @hypothesis_seed(seed)
    @settings(max_examples=10 ** 9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False)
    @given(plans())
    def fuzz_one(plan: Plan) -> None:
        session.run_plan(plan)

    try:
        fuzz_one()
    except TimeUp:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--cli-every", type=int, default=6, help="every Nth delivery through the CLI (0: never)")
    parser.add_argument("--fresh-every", type=int, default=20, help="a fresh warehouse every N in-process deliveries")
    args = parser.parse_args()
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="vigil-fuzz-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    self_test_output_checks()
    print(f"fuzz_deliveries: {args.minutes} min, seed {args.seed}, out {args.out}", flush=True)
    session = Session(args)
    if args.cli_every:
        session.server = PrefectServer(args.out / "prefect")
        print(f"Prefect server on {session.server.api}: healthy after {session.server.wait_healthy():.0f} s", flush=True)
    try:
        sanity(session)
        drive(session, args.seed)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if session.server:
            session.server.stop()
    return session.summary()


if __name__ == "__main__":
    sys.exit(main())
