"""Hostile and broken input (issue 7): every such delivery is refused with one line naming the
delivery folder, the file and, where they apply, line and column; never a traceback, never a partial
load, nothing outside the delivery read, and the warehouse (schema and rows) as it was.

Inputs the spec tolerates load row for row (UTF-8 BOM; CRLF or LF line endings, one per file;
quoted newlines; a header-only table that the manifest counts as 0 rows).

Already covered in test_delivery_refusals.py and not repeated here: missing manifest or table,
manifest not JSON, another study, sha256 and row-count mismatch, missing/misspelled column, a
`full_name` column, a short ragged row, a patient_id of another site, a duplicate patient_id, a
site_id that does not match the folder, a future data cut.
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from helpers import ingest_in_child, rehash, valid_rows, write_delivery

from vigil import warehouse
from vigil.contract import load_contract
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery
from vigil.synth import file_sha256

pytestmark = pytest.mark.faults

BOM = b"\xef\xbb\xbf"
GB = 1 << 30


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory) -> Path:
    """A warehouse already holding an accepted delivery (of site SE02), built once: refusals must
    leave its rows and schema exactly as they are."""
    root = tmp_path_factory.mktemp("loaded")
    db = root / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    outcome = ingest_delivery(con, write_delivery(root / "in", valid_rows("SE02"), site="SE02"),
                              warehouse.gx_dir_for(db), validator=validation.SQL_RULE_COUNTS)
    con.close()
    assert outcome.status == "accepted", outcome.message
    return db


@pytest.fixture
def con(loaded_db, tmp_path):
    db = tmp_path / "wh" / "vigil.duckdb"
    db.parent.mkdir()
    shutil.copy(loaded_db, db)
    connection = warehouse.connect(db)
    yield connection
    connection.close()


@pytest.fixture
def ingest(con, tmp_path, validator):
    return lambda folder: ingest_delivery(con, folder, warehouse.gx_dir_for(tmp_path / "wh" / "vigil.duckdb"),
                                          validator=validator)


def warehouse_state(con) -> tuple:
    """Schema (every table and column) and every row, except the receipts a refusal adds."""
    schema = con.execute("SELECT database_name, schema_name, table_name, column_name, data_type "
                         "FROM duckdb_columns() WHERE NOT internal ORDER BY ALL").fetchall()
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal "
                         "AND table_name <> 'delivery_receipts' ORDER BY ALL").fetchall()
    rows = {t: con.execute(f'SELECT * FROM "{s}"."{t}" ORDER BY ALL').fetchall() for s, t in tables}
    return schema, rows


@pytest.fixture
def refused(con, ingest):
    """Ingest `folder`; it must be refused with "<folder>, <where>: ..." holding every fragment, on one
    line, and leave the warehouse as it was."""
    def run(folder: Path, where: str, *fragments: str):
        before = warehouse_state(con)
        outcome = ingest(folder)
        assert outcome.status == "refused", outcome
        assert outcome.message.startswith(f"{folder}, {where}: "), outcome.message
        for fragment in fragments:
            assert fragment in outcome.message, outcome.message
        assert "\n" not in outcome.message and "Traceback" not in outcome.message
        assert warehouse_state(con) == before
        return outcome
    return run


def edit(folder: Path, name: str, change) -> None:
    path = folder / name
    path.write_bytes(change(path.read_bytes()))


def set_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def line_of(number: int, change):
    """Apply `change` to line `number` (1 = header) of a file's bytes."""
    def apply(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[number - 1] = change(lines[number - 1])
        return b"\n".join(lines)
    return apply


# (case, file, change of its bytes, where, message fragment); the manifest's hashes are right.
BROKEN_CSV = [
    ("semicolon-delimited", "patients.csv", lambda b: b.replace(b",", b";"),
     "patients.csv, line 1", "not comma-separated: the header row is split by ';'"),
    ("tab-delimited", "patients.csv", lambda b: b.replace(b",", b"\t"),
     "patients.csv, line 1", r"not comma-separated: the header row is split by '\t'"),
    ("Latin-1 byte in a row", "infections.csv", lambda b: b.replace(b"Pneumonia", "Pneumonía".encode("latin-1")),
     "infections.csv, line 2", "not utf-8 encoded"),
    ("Latin-1 byte in the header", "patients.csv", lambda b: b.replace(b"sex", "séx".encode("latin-1")),
     "patients.csv, line 1", "not UTF-8 (byte 13 of the header)"),
    ("UTF-16", "patients.csv", lambda b: b.decode().encode("utf-16"),
     "patients.csv, line 1", "not UTF-8 (byte 1 of the header)"),
    ("two byte-order marks", "patients.csv", lambda b: BOM + BOM + b,
     "patients.csv, line 1, column patient_id", r"missing column 'patient_id' (found '\ufeffpatient_id')"),
    ("CR-only line endings", "patients.csv", lambda b: b.replace(b"\n", b"\r"),
     "patients.csv, line 1", "line ends in a bare CR: rows must end in LF or CRLF"),
    ("a CRLF row among LF rows", "patients.csv", line_of(3, lambda ln: ln + b"\r"),
     "patients.csv, line 3", "line ends in CRLF, line 1 in LF: one line ending per file"),
    ("bare CR inside a row", "patients.csv", line_of(2, lambda ln: ln.replace(b",F,", b",F\r,")),
     "patients.csv, line 2", "bare CR outside quotes"),
    ("row with an extra field", "patients.csv", line_of(3, lambda ln: ln + b",extra"),
     "patients.csv, line 3", "Expected Number of Columns: 5 Found: 6"),
    ("unterminated quote", "patients.csv", line_of(3, lambda ln: b'"' + ln),
     "patients.csv, line 3", "unterminated quote"),
    ("empty file (0 bytes)", "patients.csv", lambda b: b"",
     "patients.csv, line 1", "empty file (no header row)"),
    ("header only while the manifest counts rows", "edss_assessments.csv", lambda b: b.split(b"\n")[0] + b"\n",
     "edss_assessments.csv", "row count mismatch: manifest says 1, file has 0"),
    ("duplicate header name", "patients.csv", lambda b: b.replace(b"ms_onset_year", b"sex", 1),
     "patients.csv, line 1, column sex", "duplicate column 'sex' in the header"),
    ("line longer than 2 MB", "infections.csv", lambda b: b.replace(b"Pneumonia", b"P" * 3_000_000),
     "infections.csv, line 2", "line longer than 2000000 bytes"),
    # DuckDB 2.0 would load the rows before it and drop this line without a word.
    ("40 MB garbage line at the end", "infections.csv", lambda b: b + b"garbage;" * (5 << 20),
     "infections.csv, line 3", "line longer than 2000000 bytes"),
    ("NUL byte", "infections.csv", lambda b: b.replace(b"Pneumonia", b"Pneu\0monia"),
     "infections.csv, line 2", "holds a NUL byte"),
]


@pytest.mark.parametrize("name, change, where, fragment", [c[1:] for c in BROKEN_CSV], ids=[c[0] for c in BROKEN_CSV])
def test_broken_csv_is_refused_naming_file_and_line(tmp_path, refused, name, change, where, fragment):
    folder = write_delivery(tmp_path / "in")
    edit(folder, name, change)
    rehash(folder)
    refused(folder, where, fragment)


def test_parquet_file_that_is_not_parquet_is_refused(tmp_path, refused):
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    (folder / "patients.parquet").write_bytes(b"patient_id,sex\nDK01-00000000000000A1,F\n")
    rehash(folder)
    refused(folder, "patients.parquet", "cannot be read as Parquet")


def tricky_values(rows: dict) -> None:
    rows["infections"][0]["pathogen"] = 'Streptococcus\npneumoniae, "serotype 3"'
    rows["comorbidities"][0]["icd10_code"] = "E11.9"


def crlf_rows(data: bytes) -> bytes:
    """The same CSV with CRLF after each row; newlines inside quoted values stay LF (as Excel writes)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(csv.reader(io.StringIO(data.decode(), newline="")))
    return out.getvalue().encode()


# (case, change of the rows, change of every file's bytes)
TOLERATED = [
    ("UTF-8 byte-order mark", None, lambda b: BOM + b),
    ("CRLF line endings, none after the last row", None, lambda b: b.replace(b"\n", b"\r\n").removesuffix(b"\r\n")),
    ("quoted newline, comma and quotes in a value", tricky_values, None),
    ("quoted LF inside CRLF rows", tricky_values, crlf_rows),
    ("header-only table counted as 0 rows", lambda rows: rows["edss_assessments"].clear(), None),
]


@pytest.mark.parametrize("change_rows, change_bytes", [c[1:] for c in TOLERATED], ids=[c[0] for c in TOLERATED])
def test_tolerated_csv_variant_loads_exactly_the_delivered_values(tmp_path, con, ingest, change_rows, change_bytes):
    rows = valid_rows()
    if change_rows:
        change_rows(rows)
    folder = write_delivery(tmp_path / "in", rows)
    for path in folder.glob("*.csv") if change_bytes else ():
        edit(folder, path.name, change_bytes)
    rehash(folder)
    outcome = ingest(folder)
    assert outcome.status == "accepted", outcome.message
    assert outcome.quarantine_reasons == {}  # a stray CR or BOM would break a code list or a date
    for table in load_contract().tables.values():
        columns = ", ".join(table.column_names)
        loaded = con.execute(f"SELECT {columns} FROM raw.{table.name} WHERE site_id = 'DK01' "
                             "ORDER BY line_number").fetchall()
        assert loaded == [tuple(r.get(c) or None for c in table.column_names) for r in rows[table.name]]


def infections_after_a_quoted_newline_and_a_blank_line(second_row: dict):
    """infections.csv: row 1 spans lines 2-4 (quoted newlines), line 5 is blank, row 2 is line 6."""
    rows = valid_rows()
    rows["infections"][0]["pathogen"] = "a\nb\nc"
    rows["infections"].append(dict(rows["infections"][0], event_id="E2", pathogen="", **second_row))
    return rows


def test_quarantined_row_after_quoted_newlines_and_a_blank_line_has_its_file_line(tmp_path, con, ingest):
    folder = write_delivery(tmp_path / "in", infections_after_a_quoted_newline_and_a_blank_line({"outcome": "bogus"}))
    edit(folder, "infections.csv", lambda b: b.replace(b'c",recovered\n', b'c",recovered\n\n'))
    rehash(folder)
    outcome = ingest(folder)
    assert outcome.status == "accepted", outcome.message
    assert con.execute("SELECT source_file, line_number, reason FROM audit.quarantine WHERE delivery_id = ?",
                       [outcome.delivery_id]).fetchall() == [("infections.csv", 6, "not_in_code_list")]
    assert con.execute("SELECT line_number FROM raw.infections WHERE site_id = 'DK01' ORDER BY 1").fetchall() \
        == [(2,), (6,)]


@pytest.mark.parametrize("second_row, cut_row, where, fragment", [
    ({"patient_id": "SE02-00000000000000A1"}, False, "infections.csv, line 6, column patient_id",
     "belongs to another site"),
    ({}, True, "infections.csv, line 6", "Expected Number of Columns: 9 Found: 2"),
], ids=["patient of another site", "ragged row"])
def test_refused_row_after_quoted_newlines_and_a_blank_line_is_named_by_its_file_line(
        tmp_path, refused, second_row, cut_row, where, fragment):
    folder = write_delivery(tmp_path / "in", infections_after_a_quoted_newline_and_a_blank_line(second_row))
    edit(folder, "infections.csv", lambda b: b.replace(b'c",recovered\n', b'c",recovered\n\n'))
    if cut_row:
        edit(folder, "infections.csv", line_of(6, lambda ln: b",".join(ln.split(b",")[:2])))
    rehash(folder)
    refused(folder, where, fragment)


def test_unreadable_table_file_is_refused(tmp_path, refused, monkeypatch):
    """Tests run as root here, so chmod cannot make a file unreadable: the read fails instead."""
    def no_permission(path, name, text, copy=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("vigil.ingest.delivery.scan_file", no_permission)
    refused(write_delivery(tmp_path / "in"), "patients.csv", "cannot be read: Permission denied")


def outside_copy(folder: Path) -> Path:
    """A valid copy of the delivery outside it: a symlink to it would load if it were followed."""
    return write_delivery(folder.parent.parent / "outside")


def add_manifest_entry(name: str):
    def setup(folder: Path) -> None:
        shutil.copy(outside_copy(folder) / "patients.csv", folder.parent / "patients.csv")
        set_manifest(folder, lambda m: m["files"].update({name: m["files"]["patients.csv"]}))
    return setup


def symlink_out(name: str):
    def setup(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to(outside_copy(folder) / name)
    return setup


def extra_file(name: str):
    return lambda folder: (folder / name).write_bytes(b"x")


def header(change):
    def setup(folder: Path) -> None:
        edit(folder, "patients.csv", line_of(1, change))
        rehash(folder)
    return setup


# (case, change of a valid delivery, where, fragment)
HOSTILE_NAMES = [
    ("file name with SQL", extra_file("x'; DROP TABLE raw.patients; --.csv"),
     "x'; DROP TABLE raw.patients; --.csv", "file not in the spec"),
    ("file name with a double quote", extra_file('pat"ients.csv'), 'pat"ients.csv', "file not in the spec"),
    ("file name with a newline", extra_file("a\nb.csv"), r"a\x0ab.csv", "file not in the spec"),
    ("file name that is not UTF-8", extra_file(os.fsdecode(b"\xff\xfe.csv")), r"\udcff\udcfe.csv",
     "file not in the spec"),
    ("manifest entry ../patients.csv", add_manifest_entry("../patients.csv"), "../patients.csv",
     "file not in the spec"),
    ("manifest entry with an absolute path", add_manifest_entry("/etc/passwd"), "/etc/passwd",
     "file not in the spec"),
    ("table symlinked out of the delivery", symlink_out("patients.csv"), "patients.csv",
     "not a regular file inside the delivery folder"),
    ("manifest symlinked out of the delivery", symlink_out("manifest.json"), "manifest.json",
     "not a regular file inside the delivery folder"),
    ("directory symlinked out of the delivery", lambda f: (f / "data").symlink_to("/"), "data",
     "file not in the spec"),
    ("column name with SQL", header(lambda h: h.replace(b"sex", b'"se""x; DROP TABLE raw.patients; --"')),
     "patients.csv, line 1, column sex", """missing column 'sex' (found 'se"x; DROP TABLE raw.patients; --')"""),
    ("column name that is a path", header(lambda h: h + b",../../etc/passwd"),
     "patients.csv, line 1, column ../../etc/passwd", "is not in the spec"),
]


@pytest.mark.parametrize("setup, where, fragment", [c[1:] for c in HOSTILE_NAMES], ids=[c[0] for c in HOSTILE_NAMES])
def test_hostile_name_is_refused_without_reading_outside_or_building_sql(tmp_path, refused, setup, where, fragment):
    folder = write_delivery(tmp_path / "in")
    setup(folder)
    refused(folder, where, fragment)


def test_folder_name_with_sql_is_refused(tmp_path, refused):
    folder = write_delivery(tmp_path / "in")
    hostile = folder.rename(folder.with_name(folder.name + "'; DROP TABLE raw.patients; --"))
    refused(hostile, "manifest.json", "folder name does not match the manifest")


def files_entry(**entry):
    return lambda m: m["files"]["patients.csv"].update(entry)


# (case, change of the parsed manifest or its new bytes, where, fragment)
LYING_MANIFESTS = [
    ("rows as text", files_entry(rows="2"), "patients.csv", "manifest rows must be a non-negative integer"),
    ("negative rows", files_entry(rows=-1), "patients.csv", "manifest rows must be a non-negative integer"),
    ("rows true", files_entry(rows=True), "patients.csv", "manifest rows must be a non-negative integer"),
    ("short sha256", files_entry(sha256="abc"), "patients.csv", "manifest sha256 must be 64 hex characters"),
    ("another spec version", lambda m: m.update(spec_version="2.0"), "manifest.json",
     "spec_version '2.0' is not supported"),
    ("data cut without dashes", lambda m: m.update(data_cut="20260630"), "manifest.json",
     "data_cut '20260630' is not an ISO date (YYYY-MM-DD)"),
    ("impossible data cut", lambda m: m.update(data_cut="2026-02-30"), "manifest.json", "is not an ISO date"),
    ("created_at not a timestamp", lambda m: m.update(created_at="last Tuesday"), "manifest.json",
     "created_at 'last Tuesday' is not an ISO timestamp"),
    ("files as a list", lambda m: m.update(files=["patients.csv"]), "manifest.json",
     "manifest 'files' must map file names to {sha256, rows}"),
    ("no site_id", lambda m: m.pop("site_id"), "manifest.json", "manifest.json lacks site_id"),
    ("a JSON array", b"[]", "manifest.json", "must hold a JSON object"),
    ("Latin-1", '{"study_id": "é"}'.encode("latin-1"), "manifest.json", "manifest.json is not UTF-8"),
    ("nested 100000 deep", b"[" * 100_000, "manifest.json", "cannot be read as JSON"),
    ("a 5000-digit number", b'{"rows": ' + b"9" * 5000 + b"}", "manifest.json", "cannot be read as JSON"),
    ("larger than 10 MB", b"{}" + b" " * (10 << 20), "manifest.json", "larger than 10 MB"),
]


@pytest.mark.parametrize("change, where, fragment", [c[1:] for c in LYING_MANIFESTS],
                         ids=[c[0] for c in LYING_MANIFESTS])
def test_lying_or_malformed_manifest_is_refused(tmp_path, refused, change, where, fragment):
    folder = write_delivery(tmp_path / "in")
    if isinstance(change, bytes):
        (folder / "manifest.json").write_bytes(change)
    else:
        set_manifest(folder, change)
    refused(folder, where, fragment)


@pytest.mark.parametrize("fmt, column, value, where", [
    ("csv", "name", "Jane Doe", "patients.csv, line 1, column name"),
    ("csv", "birth_date", "1980-02-03", "patients.csv, line 1, column birth_date"),
    ("parquet", "birth_date", date(1980, 2, 3), "patients.parquet, column birth_date"),
])
def test_direct_identifier_column_is_refused(tmp_path, refused, fmt, column, value, where):
    folder = write_delivery(tmp_path / "in", fmt=fmt)
    path = folder / f"patients.{fmt}"
    if fmt == "csv":
        lines = path.read_text().splitlines()
        path.write_text("\n".join([f"{lines[0]},{column}"] + [f"{ln},{value}" for ln in lines[1:]]) + "\n")
    else:
        import polars as pl
        frame = pl.read_parquet(path)
        frame.with_columns(pl.lit(value).alias(column)).write_parquet(path)
    rehash(folder)
    refused(folder, where, f"column '{column}' is not in the spec", "direct identifiers")


GARBAGE_LINES = (b"garbage;" * 15 + b"\n") * (64 * 1024 * 1024 // 121)


def sparse_zeros(handle) -> None:
    handle.truncate(2 * GB)  # a hole: 2 GB of zeros in no time and no disk


def text_lines(handle) -> None:
    while handle.tell() < 2 * GB:
        handle.write(GARBAGE_LINES)


# (case, garbage from the first byte (else after the rows), how the 2 GB are written, whether the
# manifest has the file's true hash, refusal). The NUL check comes before the hash comparison.
GARBAGE = [
    ("garbage from the first byte", True, sparse_zeros, False,
     "infections.csv, line 1", "first line longer than 65536 bytes: not a header"),
    ("zeros after the rows", False, sparse_zeros, False, "infections.csv, line 3", "holds a NUL byte"),
    ("text lines after the rows", False, text_lines, False, "infections.csv", "sha256 mismatch"),
    ("text lines after the rows, true hash", False, text_lines, True,
     "infections.csv, line 3", "Expected Number of Columns: 9 Found: 1"),
]


@pytest.mark.parametrize("first_byte, fill, true_hash, where, fragment", [c[1:] for c in GARBAGE],
                         ids=[c[0] for c in GARBAGE])
def test_two_gigabytes_of_garbage_are_refused_early_in_bounded_memory(tmp_path, first_byte, fill, true_hash, where,
                                                                      fragment):
    """A 2 GB table file (800 kB of garbage without a newline, then the fill), refused in a child
    process whose peak memory is measured."""
    folder = write_delivery(tmp_path / "in")
    path = folder / "infections.csv"
    try:
        with path.open("r+b") as handle:
            if not first_byte:
                handle.seek(0, os.SEEK_END)
            handle.write(b"garbage;" * 100_000)
            fill(handle)
        if true_hash:
            set_manifest(folder, lambda m: m["files"]["infections.csv"].update(sha256=file_sha256(path)))
        started = time.perf_counter()
        status, message, peak_mb, output = ingest_in_child(folder, tmp_path / "wh.duckdb")
        seconds = time.perf_counter() - started
    finally:
        path.unlink()
    print(f"2 GB, {where}: peak RSS {peak_mb} MB, {seconds:.1f} s")
    assert status == "refused", output
    assert message.startswith(f"{folder}, {where}: ") and fragment in message, message
    assert peak_mb < 512


@pytest.mark.flow  # the CLI's ingest is a flow: against the session's Prefect server
def test_cli_refuses_hostile_deliveries_one_line_each_without_traceback(tmp_path, prefect_harness):
    """The one CLI run: exit 3 and one line per problem."""
    from prefect.settings import PREFECT_API_URL

    landing = tmp_path / "landing"
    semicolons = write_delivery(landing, site="DK01")
    edit(semicolons, "patients.csv", lambda b: b.replace(b",", b";"))
    rehash(semicolons)
    escape = write_delivery(landing, valid_rows("SE02"), site="SE02")
    symlink_out("follow_up.csv")(escape)
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), COLUMNS="1000")  # no message is wrapped
    result = subprocess.run([str(Path(sys.executable).with_name("vigil")), "ingest", str(landing),
                             "--db", str(tmp_path / "wh" / "vigil.duckdb")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for folder, problem in [(semicolons, "patients.csv, line 1: not comma-separated: the header row is split by ';'"),
                            (escape, "follow_up.csv: not a regular file inside the delivery folder")]:
        assert any(f"{folder.name} refused: {folder}, {problem}" in line for line in lines), result.stdout
