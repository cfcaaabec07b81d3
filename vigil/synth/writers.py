"""Writing deliveries: CSV or Parquet files, the manifest and the file hashes."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import polars as pl

from vigil.contract import Contract
from vigil.hashing import file_sha256
from vigil.synth.parameters import _POLARS_TYPES


def _created_at_text(data_cut: date, created_at: datetime | None) -> str:
    """ISO UTC with Z; by default four days after the cut at 09:12, so that output is reproducible."""
    if created_at is None:
        created_at = datetime.combine(data_cut + timedelta(days=4), time(9, 12), tzinfo=timezone.utc)
    elif created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Writing deliveries.
# ---------------------------------------------------------------------------------------------

def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _rehash(folder: Path, manifest: dict) -> None:
    for name, entry in manifest["files"].items():
        entry["sha256"] = file_sha256(folder / name)


def _for_parquet(contract: Contract, name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Typed Parquet columns (DATE for dates); a column holding a value of the wrong type (an
    injected fault) stays text, which the spec allows for dates and the loader reads as text."""
    columns = []
    for c in contract.tables[name].columns:
        column = frame[c.name]
        if column.dtype == pl.String and c.type in ("int", "dec", "date"):
            converted = (column.str.to_date("%Y-%m-%d", strict=False) if c.type == "date"
                         else column.cast(_POLARS_TYPES[c.type], strict=False))
            back = converted.dt.to_string("%Y-%m-%d") if c.type == "date" else converted.cast(pl.String)
            if (back == column).fill_null(column.is_null()).all():
                column = converted
        columns.append(column)
    return pl.DataFrame(columns)


def _write_delivery(contract: Contract, folder: Path, site: str, data_cut: date, stamp: str, fmt: str,
                    tables: dict[str, pl.DataFrame]) -> Path:
    folder.mkdir(parents=True)
    files = {}
    for name, table in contract.tables.items():
        path = folder / f"{name}.{fmt}"
        frame = tables[name].select(table.column_names)
        if fmt == "csv":
            frame.write_csv(path)
        else:
            _for_parquet(contract, name, frame).write_parquet(path)
        files[path.name] = {"sha256": file_sha256(path), "rows": frame.height}
    _write_manifest(folder, {"study_id": contract.study_id, "spec_version": contract.spec_version, "site_id": site,
                             "data_cut": data_cut.isoformat(), "created_at": stamp, "files": files})
    return folder
