"""Finding deliveries and checking them against the contract before anything is loaded.

Everything here answers one question per delivery: refuse it whole (DTS section 3), or go on
to load it. A refusal names the delivery folder, the file (and line/column where known) and
what is wrong; it never raises past `inspect_delivery`.

CSV line endings: the spec asks for `"` quoting and a comma (RFC 4180) and says nothing more, so a
file's rows end in CRLF (RFC 4180) or LF (common practice), one of them per file. A bare CR (old Mac
files) and a mix of endings are not CSV of the spec: DuckDB cannot parse a mix, so both are refused
with the line where they start. A "line" is what ends in LF, as in an editor; a quoted newline
continues the row on the next line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path

from vigil.contract import Column, Contract, Table
from vigil.inert import inert

HASH_CHUNK = 1 << 20
SCAN_THREADS = 2
# A header line longer than this is not a header of this spec (protects against garbage files).
MAX_HEADER_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 10 * 1024 * 1024
# Longest CSV line, passed to DuckDB as max_line_size. Checked here too: DuckDB 2.0 silently drops a
# last line of tens of MB instead of refusing it. Larger than HASH_CHUNK, which the check relies on.
MAX_LINE_BYTES = 2_000_000
# The csv module counts lines for messages and lineage; its default 128 KB field limit is below what
# DuckDB loads, and a file DuckDB loaded must not fail to be counted.
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))


@dataclass(frozen=True)
class ManifestFacts:
    """What a refused delivery's manifest said, as far as it could be read: for its receipt (site_id,
    data_cut, created_at, manifest_sha256 in audit.delivery_receipts). A field that is missing or not
    of its type is None; a manifest that could not be read (not JSON, too large) gives no facts."""

    manifest_sha256: str
    site_id: str | None = None
    data_cut: date | None = None
    created_at: datetime | None = None

    @classmethod
    def of(cls, manifest: dict, manifest_sha256: str) -> "ManifestFacts":
        site = manifest.get("site_id")
        try:
            data_cut = _parse_data_cut(manifest.get("data_cut"))
        except Refusal:
            data_cut = None
        try:
            created_at = _parse_created_at(manifest.get("created_at"))
        except Refusal:
            created_at = None
        return cls(manifest_sha256, None if site is None or isinstance(site, (dict, list)) else str(site),
                   data_cut, created_at)


class Refusal(Exception):
    """The delivery breaks the contract and is refused whole. `manifest`: what its manifest said, when
    it could be read (set by inspect_delivery)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: str | None = None):
        self.message, self.line = message, line
        self.file = None if file is None else inert(file)
        self.column = None if column is None else inert(column)
        self.manifest: ManifestFacts | None = None
        super().__init__(message)

    def describe(self, folder: Path) -> str:
        where = [inert(folder)]
        if self.file:
            where.append(self.file)
        if self.line is not None:  # a Parquet file has rows, not lines
            where.append(f"{'row' if (self.file or '').endswith('.parquet') else 'line'} {self.line}")
        if self.column:
            where.append(f"column {self.column}")
        # One line per problem: a parser's message is joined, delivered names show their escapes.
        return f"{', '.join(where)}: " + inert(" ".join(self.message.splitlines()))


@dataclass
class DeliveryFile:
    name: str
    path: Path
    sha256: str
    rows: int  # from the manifest
    columns: list[str] = field(default_factory=list)  # as found in the file, in file order
    newline_count: int = 0  # CSV only, with final_newline: tells whether quoted newlines shift line numbers
    final_newline: bool = False

    @property
    def one_line_per_row(self) -> bool:
        """CSV without quoted newlines or blank lines: data row r is line r + 1 (valid once the row
        count matched the manifest)."""
        return self.newline_count == self.rows + self.final_newline


@dataclass
class Delivery:
    folder: Path
    site_id: str
    data_cut: date
    created_at: datetime
    fmt: str
    manifest_sha256: str
    files: dict[str, DeliveryFile]  # by table name

    @property
    def label(self) -> str:
        return self.folder.name

    @property
    def fingerprint(self) -> str:
        """Identity of the delivery's content: same manifest and files = same delivery."""
        parts = [self.manifest_sha256] + [f"{f.name}:{f.sha256}" for f in self.files.values()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def find_deliveries(paths: list[Path], contract: Contract) -> list[Path]:
    """PATH is a delivery folder (it has a manifest or a delivery name) or a folder of them. A
    sub-folder that is a symlink is kept as the link (not its target), so that it is refused."""
    found: list[Path] = []
    for path in paths:
        if (path / "manifest.json").exists() or contract.folder_pattern.match(path.name):
            found.append(path)
        else:
            found.extend(sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")))
    return list(dict.fromkeys(Path(os.path.abspath(p)) for p in found))  # `..` folded, links kept


def scan_file(path: Path, name: str, text: bool, copy: Path | None = None) -> tuple[str, int, bool]:
    """sha256, number of LF bytes and whether the file ends in LF, read 1 MB at a time; with `copy`,
    each chunk hashed is also written there, so the copy holds exactly the bytes hashed. A text (CSV)
    file is refused at its first NUL byte or line longer than MAX_LINE_BYTES, without reading on:
    neither is text of the spec, and a 2 GB garbage file costs no more than its first bad megabyte."""
    digest, newlines, last = hashlib.sha256(), 0, b""
    run = 0  # bytes of the line still open at the end of the previous chunk
    with path.open("rb") as handle, (copy.open("xb") if copy else nullcontext()) as out:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            if out:
                out.write(chunk)
            if text:
                if (nul := chunk.find(b"\0")) >= 0:
                    raise Refusal("holds a NUL byte: binary data, not CSV text", name,
                                  newlines + chunk.count(b"\n", 0, nul) + 1)
                # Lines inside one chunk are shorter than HASH_CHUNK: only one that spans chunks can be too long.
                first = chunk.find(b"\n")
                if run + (first if first >= 0 else len(chunk)) > MAX_LINE_BYTES:
                    raise Refusal(f"line longer than {MAX_LINE_BYTES} bytes: not a row of the spec", name,
                                  newlines + 1)
                run = run + len(chunk) if first < 0 else len(chunk) - chunk.rfind(b"\n") - 1
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return digest.hexdigest(), newlines, last == b"\n"


def _read_manifest(folder: Path, contract: Contract, facts: list) -> tuple[dict, str]:
    """The manifest and its sha256; once it is a JSON object, its facts are appended to `facts`."""
    path = folder / "manifest.json"
    if not path.is_symlink() and not path.exists():
        raise Refusal("missing manifest.json", "manifest.json")
    if path.is_symlink() or not path.is_file():
        raise Refusal("not a regular file inside the delivery folder", "manifest.json")
    with path.open("rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise Refusal(f"manifest.json is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB", "manifest.json")
    try:
        manifest = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Refusal("manifest.json is not UTF-8", "manifest.json") from None
    except json.JSONDecodeError as exc:
        raise Refusal(f"manifest.json is not valid JSON: {exc.msg}", "manifest.json", exc.lineno,
                      str(exc.colno)) from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits, nesting too deep
        raise Refusal(f"manifest.json cannot be read as JSON: {exc}", "manifest.json") from None
    if not isinstance(manifest, dict):
        raise Refusal("manifest.json must hold a JSON object", "manifest.json")
    manifest_sha256 = hashlib.sha256(data).hexdigest()
    facts.append(ManifestFacts.of(manifest, manifest_sha256))
    missing = [k for k in contract.manifest_keys if k not in manifest]
    if missing:
        raise Refusal(f"manifest.json lacks {', '.join(missing)}", "manifest.json")
    return manifest, manifest_sha256


def _parse_manifest_dates(manifest: dict) -> tuple[date, datetime]:
    return _parse_data_cut(manifest["data_cut"]), _parse_created_at(manifest["created_at"])


def _parse_data_cut(value) -> date:
    try:
        data_cut = date.fromisoformat(str(value))
    except ValueError:
        data_cut = None
    # fromisoformat also takes 20260630; the spec's dates are YYYY-MM-DD.
    if data_cut is None or data_cut.isoformat() != value:
        raise Refusal(f"data_cut {value!r} is not an ISO date (YYYY-MM-DD)", "manifest.json")
    return data_cut


def _parse_created_at(value) -> datetime:
    try:
        created_at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(f"created_at {value!r} is not an ISO timestamp", "manifest.json") from None
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return created_at


def _check_identity(folder: Path, manifest: dict, contract: Contract, today: date | None) -> tuple[str, date, datetime]:
    if manifest["study_id"] != contract.study_id:
        raise Refusal(f"manifest is for study {manifest['study_id']!r}, not {contract.study_id}", "manifest.json")
    if str(manifest["spec_version"]) != contract.spec_version:
        raise Refusal(f"spec_version {manifest['spec_version']!r} is not supported (expected {contract.spec_version})",
                      "manifest.json")
    site_id = str(manifest["site_id"])
    data_cut, created_at = _parse_manifest_dates(manifest)
    expected_name = f"{site_id}_{data_cut.isoformat()}"
    if folder.name != expected_name or not contract.folder_pattern.match(folder.name):
        raise Refusal(f"folder name does not match the manifest (expected {expected_name!r})", "manifest.json")
    # `today` (a test's or --today's date) counts to its last moment; otherwise now.
    now = (datetime.combine(today, dt_time.max, timezone.utc) if today else datetime.now(timezone.utc))
    if data_cut > now.date():
        raise Refusal(f"data_cut {data_cut} is in the future", "manifest.json")
    tolerance = timedelta(minutes=contract.acceptance["created_at_tolerance_minutes"])
    if created_at > now + tolerance:
        raise Refusal(f"created_at {created_at.isoformat()} is in the future: a delivery dated ahead would "
                      "supersede every later correction of its site and cut", "manifest.json")
    if created_at.date() < data_cut:
        raise Refusal(f"created_at {created_at.isoformat()} is before data_cut {data_cut}: an extract cannot "
                      "be made before its data cut", "manifest.json")
    return site_id, data_cut, created_at


def _check_file_list(folder: Path, manifest: dict, contract: Contract) -> tuple[str, dict[str, dict]]:
    listed = manifest["files"]
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        raise Refusal("manifest 'files' must map file names to {sha256, rows}", "manifest.json")
    present = {p.name for p in folder.iterdir()} - {"manifest.json"}
    for fmt in contract.formats:
        expected = set(contract.file_names(fmt))
        if expected & (set(listed) | present):
            break
    else:
        raise Refusal("no table files found (expected <table>.csv or <table>.parquet)")
    for name in sorted(expected):
        if name not in listed:
            raise Refusal("table missing from the manifest", name)
        if name not in present:
            raise Refusal("table listed in the manifest is missing", name)
    unexpected = sorted((set(listed) | present) - expected)
    if unexpected:
        raise Refusal("file not in the spec (one format per delivery, no other files)", unexpected[0])
    return fmt, listed


def _file_entry(folder: Path, name: str, entry: dict) -> tuple[Path, int, str]:
    path = folder / name
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder.resolve():
        raise Refusal("not a regular file inside the delivery folder", name)
    sha, rows = entry.get("sha256"), entry.get("rows")
    if not isinstance(sha, str) or len(sha) != 64:
        raise Refusal("manifest sha256 must be 64 hex characters", name)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise Refusal("manifest rows must be a non-negative integer", name)
    return path, rows, sha.lower()


def read_csv_header(path: Path, name: str) -> list[str]:
    """The header row's names; reads at most MAX_HEADER_BYTES, so a garbage file is refused at once."""
    with path.open("rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES)
    if not first:
        raise Refusal("empty file (no header row)", name, 1)
    if not first.endswith(b"\n") and len(first) >= MAX_HEADER_BYTES:
        raise Refusal(f"first line longer than {MAX_HEADER_BYTES} bytes: not a header", name, 1)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refusal(f"not UTF-8 (byte {exc.start + 1} of the header)", name, 1) from None
    text = text.removesuffix("\n").removesuffix("\r")
    if "\r" in text:
        raise Refusal("line ends in a bare CR: rows must end in LF or CRLF", name, 1)
    header = next(csv.reader([text], delimiter=",", quotechar='"'), [])
    if len(header) == 1:
        other = next((d for d in ";\t|" if d in header[0]), None)
        if other:
            raise Refusal(f"not comma-separated: the header row is split by {other!r}", name, 1)
    return header


def check_columns(found: list[str], expected: list[str], name: str, line: int | None) -> None:
    """`line`: the header's line (1 in CSV; Parquet has none)."""
    duplicates = sorted({c for c in found if found.count(c) > 1})
    if duplicates:
        raise Refusal(f"duplicate column {duplicates[0]!r} in the header", name, line, duplicates[0])
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing:
        hint = f" (found {', '.join(repr(e) for e in extra)})" if extra else ""
        raise Refusal(f"missing column {missing[0]!r}{hint}", name, line, missing[0])
    if extra:
        raise Refusal(f"column {extra[0]!r} is not in the spec: never deliver other columns "
                      "(they may hold direct identifiers)", name, line, extra[0])


def inspect_delivery(folder: Path, contract: Contract, today: date | None = None,
                     copy_to: Path | None = None) -> Delivery:
    """Check manifest, file list, headers and hashes. Raises Refusal; reads no data rows.

    With `copy_to` (an empty private folder), each file is copied there as it is hashed and the
    Delivery's paths are the copies: what is loaded is exactly what was hashed, whatever happens to
    the delivery folder afterwards (a file swapped or rewritten between the hash and the load).

    A Refusal raised after the manifest was read as a JSON object carries its facts (Refusal.manifest)."""
    facts: list[ManifestFacts] = []
    try:
        try:
            return _inspect(folder, contract, today, copy_to, facts)
        except OSError as exc:  # unreadable, or gone while being read
            name = Path(exc.filename).name if exc.filename else None
            raise Refusal(f"cannot be read: {exc.strerror or exc}", name) from None
    except Refusal as refusal:
        refusal.manifest = facts[0] if facts else None
        raise


def _inspect(folder: Path, contract: Contract, today: date | None, copy_to: Path | None,
             facts: list) -> Delivery:
    if folder.is_symlink():
        raise Refusal("the delivery folder is a symlink: deliver the folder itself")
    manifest, manifest_sha = _read_manifest(folder, contract, facts)
    site_id, data_cut, created_at = _check_identity(folder, manifest, contract, today)
    fmt, listed = _check_file_list(folder, manifest, contract)
    entries = []
    for table in contract.tables.values():
        name = f"{table.name}.{fmt}"
        path, rows, expected_sha = _file_entry(folder, name, listed[name])
        # Headers (and Parquet metadata) before hashes: a garbage file is refused without reading all of it.
        columns = check_header(path, name, table, fmt, rows, contract)
        entries.append((table, name, path, rows, expected_sha, columns))
    # Two files at a time: sha256 releases the GIL, and one reader left a core idle (1.0 s of
    # 338 MB at 333k patients). Results are judged in file order, so the refusal is the same.
    with ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="scan") as pool:
        scans = pool.map(lambda e: scan_file(e[2], e[1], fmt == "csv", copy_to / e[1] if copy_to else None),
                         entries)
        files: dict[str, DeliveryFile] = {}
        try:
            for (table, name, path, rows, expected_sha, columns), scan in zip(entries, scans):
                actual_sha, newlines, final_newline = scan
                if actual_sha != expected_sha:
                    raise Refusal(f"sha256 mismatch: manifest says {expected_sha}, file has {actual_sha}", name)
                if copy_to:  # the header read above may have been of other bytes than those hashed
                    path = copy_to / name
                    columns = check_header(path, name, table, fmt, rows, contract)
                files[table.name] = DeliveryFile(name, path, actual_sha, rows, columns, newlines, final_newline)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a refused delivery reads no further file
            raise
    return Delivery(folder, site_id, data_cut, created_at, fmt, manifest_sha, files)


def check_header(path: Path, name: str, table: Table, fmt: str, rows: int, contract: Contract) -> list[str]:
    """The file's column names, checked against the spec; for Parquet also each column's type and the
    row count in the file's metadata (before any data is read: a small file may hold millions of rows)."""
    if fmt == "csv":
        columns = read_csv_header(path, name)
        check_columns(columns, table.column_names, name, 1)
        return columns
    schema, metadata_rows = parquet_schema(path, name)
    check_columns(schema.names, table.column_names, name, None)
    for column in table.columns:
        check_parquet_type(schema.field(column.name).type, contract.parquet_classes(column.type), name, column)
    if metadata_rows != rows:
        raise Refusal(f"row count mismatch: manifest says {rows}, the file's metadata says {metadata_rows}", name)
    return list(schema.names)


def parquet_schema(path: Path, name: str):
    """The Arrow schema and row count of a Parquet file, from its footer only."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
        return metadata.schema.to_arrow_schema(), metadata.num_rows
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise Refusal(f"cannot be read as Parquet: {exc}", name) from None


def check_parquet_type(arrow_type, classes: tuple[str, ...], name: str, column: Column) -> None:
    """A column's Arrow type must be scalar and of one of the contract's classes for its type (an
    all-missing column, Arrow null, is of every class). Dictionary encoding is looked through."""
    import pyarrow.types as pat

    is_class = {"string": lambda t: pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t),
                "integer": pat.is_integer, "floating": pat.is_floating, "decimal": pat.is_decimal,
                "date": pat.is_date}
    value_type = arrow_type.value_type if pat.is_dictionary(arrow_type) else arrow_type
    if pat.is_null(value_type) or any(is_class[c](value_type) for c in classes):
        return
    nested = pat.is_nested(value_type)
    raise Refusal(f"column {column.name!r} is Parquet type {value_type}"
                  + (", not a single value per cell" if nested else "")
                  + f": the spec's {column.type} column takes {' or '.join(classes)} values", name, None, column.name)


def csv_record_ends(path: Path) -> Iterator[tuple[int, bool]]:
    """For each record of an inspected CSV file (no line longer than MAX_LINE_BYTES), header first,
    the line it ends on and whether it is blank: DuckDB numbers records and blank lines in its errors.
    Stops early at what the csv module cannot parse."""
    # newline="\n": lines end in LF only, so a CR inside quotes stays in its value, as in DuckDB.
    with path.open(encoding="utf-8-sig", errors="replace", newline="\n") as handle:
        reader = csv.reader(handle, delimiter=",", quotechar='"')
        try:
            for record in reader:
                yield reader.line_num, not record
        except csv.Error:
            return


def csv_row_lines(path: Path) -> list[int]:
    """First line of each data row (DuckDB skips blank lines); shorter if counting stopped early."""
    lines, previous_end = [], None
    for end, blank in csv_record_ends(path):
        if previous_end is not None and not blank:
            lines.append(previous_end + 1)
        previous_end = end
    return lines


def csv_record_line(path: Path, record: int) -> int | None:
    """First line of the record DuckDB's error calls "Line: record" (header = 1, blank lines count)."""
    if record == 1:
        return 1
    for number, (end, _) in enumerate(csv_record_ends(path), start=1):
        if number == record - 1:
            return end + 1
    return None


def csv_line_ending_problem(path: Path) -> tuple[int, str] | None:
    """The first line that ends differently from line 1 (LF or CRLF), or holds a bare CR outside
    quotes: what DuckDB refuses without saying where."""
    names = {b"\r\n": "CRLF", b"\n": "LF"}
    quoted, first, number = False, None, 1
    with path.open("rb") as handle:
        for line in handle:
            ending = next((e for e in names if line.endswith(e)), b"")
            for part in line[:len(line) - len(ending)].split(b'"'):
                if not quoted and b"\r" in part:
                    return number, "line holds a bare CR outside quotes: rows must end in LF or CRLF"
                quoted = not quoted
            quoted = not quoted  # a line of n quotes has n + 1 parts: undo the last toggle
            if ending and not quoted:
                first = first or ending
                if ending != first:
                    return number, f"line ends in {names[ending]}, line 1 in {names[first]}: one line ending per file"
            number += 1
    return None
