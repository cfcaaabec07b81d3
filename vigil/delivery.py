"""Finding deliveries and checking them against the contract before anything is loaded.

Everything here answers one question per delivery: refuse it whole (DTS section 3), or go on
to load it. A refusal names the delivery folder, the file (and line/column where known) and
what is wrong; it never raises past `inspect_delivery`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from vigil.contract import Contract

HASH_CHUNK = 1 << 20
# A header line longer than this is not a header of this spec (protects against garbage files).
MAX_HEADER_BYTES = 64 * 1024


class Refusal(Exception):
    """The delivery breaks the contract and is refused whole."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: str | None = None):
        self.message, self.file, self.line, self.column = message, file, line, column
        super().__init__(message)

    def describe(self, folder: Path) -> str:
        where = [str(folder)]
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}"


@dataclass
class DeliveryFile:
    name: str
    path: Path
    sha256: str
    rows: int  # from the manifest
    columns: list[str] = field(default_factory=list)  # as found in the file, in file order
    newline_count: int = 0  # CSV only: tells whether quoted newlines shift line numbers


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
    """PATH is a delivery folder (it has a manifest or a delivery name) or a folder of them."""
    found: list[Path] = []
    for path in paths:
        if (path / "manifest.json").exists() or contract.folder_pattern.match(path.name):
            found.append(path)
        else:
            found.extend(sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")))
    return list(dict.fromkeys(p.resolve() for p in found))


def sha256_and_newlines(path: Path) -> tuple[str, int]:
    digest, newlines = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
    return digest.hexdigest(), newlines


def _read_manifest(folder: Path, contract: Contract) -> tuple[dict, str]:
    path = folder / "manifest.json"
    if path.is_symlink() or not path.is_file():
        raise Refusal("missing manifest.json", "manifest.json")
    data = path.read_bytes()
    if len(data) > 10 * 1024 * 1024:
        raise Refusal("manifest.json is larger than 10 MB", "manifest.json")
    try:
        manifest = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Refusal("manifest.json is not UTF-8", "manifest.json") from None
    except json.JSONDecodeError as exc:
        raise Refusal(f"manifest.json is not valid JSON: {exc.msg}", "manifest.json", exc.lineno,
                      str(exc.colno)) from None
    if not isinstance(manifest, dict):
        raise Refusal("manifest.json must hold a JSON object", "manifest.json")
    missing = [k for k in contract.manifest_keys if k not in manifest]
    if missing:
        raise Refusal(f"manifest.json lacks {', '.join(missing)}", "manifest.json")
    return manifest, hashlib.sha256(data).hexdigest()


def _parse_manifest_dates(manifest: dict) -> tuple[date, datetime]:
    try:
        data_cut = date.fromisoformat(str(manifest["data_cut"]))
    except ValueError:
        raise Refusal(f"data_cut {manifest['data_cut']!r} is not an ISO date", "manifest.json") from None
    try:
        created_at = datetime.fromisoformat(str(manifest["created_at"]).replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(f"created_at {manifest['created_at']!r} is not an ISO timestamp", "manifest.json") from None
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return data_cut, created_at


def _check_identity(folder: Path, manifest: dict, contract: Contract, today: date) -> tuple[str, date, datetime]:
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
    if data_cut > today:
        raise Refusal(f"data_cut {data_cut} is in the future", "manifest.json")
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
    header = next(csv.reader(io.StringIO(text), delimiter=",", quotechar='"'), [])
    return header


def check_columns(found: list[str], expected: list[str], name: str) -> None:
    duplicates = sorted({c for c in found if found.count(c) > 1})
    if duplicates:
        raise Refusal(f"duplicate column {duplicates[0]!r} in the header", name, 1, duplicates[0])
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing:
        hint = f" (found {', '.join(repr(e) for e in extra)})" if extra else ""
        raise Refusal(f"missing column {missing[0]!r}{hint}", name, 1, missing[0])
    if extra:
        raise Refusal(f"column {extra[0]!r} is not in the spec (never deliver other columns)", name, 1, extra[0])


def inspect_delivery(folder: Path, contract: Contract, today: date | None = None) -> Delivery:
    """Check manifest, file list, hashes and headers. Raises Refusal; reads no data rows."""
    today = today or date.today()
    manifest, manifest_sha = _read_manifest(folder, contract)
    site_id, data_cut, created_at = _check_identity(folder, manifest, contract, today)
    fmt, listed = _check_file_list(folder, manifest, contract)
    files: dict[str, DeliveryFile] = {}
    for table in contract.tables.values():
        name = f"{table.name}.{fmt}"
        path, rows, expected_sha = _file_entry(folder, name, listed[name])
        actual_sha, newlines = sha256_and_newlines(path)
        if actual_sha != expected_sha:
            raise Refusal(f"sha256 mismatch: manifest says {expected_sha}, file has {actual_sha}", name)
        columns = read_csv_header(path, name) if fmt == "csv" else parquet_columns(path, name)
        check_columns(columns, table.column_names, name)
        files[table.name] = DeliveryFile(name, path, actual_sha, rows, columns, newlines)
    return Delivery(folder, site_id, data_cut, created_at, fmt, manifest_sha, files)


def parquet_columns(path: Path, name: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise Refusal(f"cannot be read as Parquet: {exc}", name) from None
