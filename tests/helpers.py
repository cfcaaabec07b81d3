"""Tiny hand-made deliveries for tests: a valid two-patient delivery that a test edits row by row."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from vigil.contract import load_contract

SITE = "DK01"
CUT = "2026-06-30"
P1 = f"{SITE}-00000000000000A1"
P2 = f"{SITE}-00000000000000B2"


def valid_rows(site: str = SITE) -> dict[str, list[dict]]:
    """Two RRMS patients, one course each, one serious infection, one death: breaks no rule."""
    p1, p2 = P1.replace(SITE, site), P2.replace(SITE, site)
    return {
        "patients": [
            {"patient_id": p1, "sex": "F", "birth_year": "1980", "ms_onset_year": "2005", "ms_course": "RRMS"},
            {"patient_id": p2, "sex": "M", "birth_year": "1975", "ms_onset_year": "", "ms_course": "RRMS"},
        ],
        "alemtuzumab_infusions": [
            {"patient_id": p, "infusion_date": f"2020-01-0{d}", "course_number": "1", "dose_mg": "12"}
            for p in (p1, p2) for d in range(1, 6)
        ],
        "dmt_history": [
            {"patient_id": p1, "dmt_code": "NTZ", "start_date": "2016-03-01", "stop_date": "2019-06-30"},
        ],
        "comorbidities": [
            {"patient_id": p1, "icd10_code": "E11.9", "diagnosis_date": "2015-05-05"},
            {"patient_id": p2, "icd10_code": "I21", "diagnosis_date": ""},
        ],
        "edss_assessments": [
            {"patient_id": p1, "assessment_date": "2019-12-01", "edss": "3.5"},
        ],
        "infections": [
            {"patient_id": p1, "event_id": "E1", "onset_date": "2020-03-01", "meddra_pt": "Pneumonia",
             "meddra_pt_code": "10035664", "serious": "Y", "seriousness_criteria": "hospitalisation",
             "pathogen": "", "outcome": "recovered"},
        ],
        "follow_up": [
            {"patient_id": p1, "followup_end_date": CUT, "end_reason": "data_cut", "death_date": ""},
            {"patient_id": p2, "followup_end_date": "2022-02-02", "end_reason": "death", "death_date": "2022-02-02"},
        ],
    }


def write_delivery(root: Path, rows: dict[str, list[dict]] | None = None, site: str = SITE, cut: str = CUT,
                   created_at: str = "2026-07-04T09:12:00Z", fmt: str = "csv", manifest_edit=None) -> Path:
    """Write <root>/<site>_<cut>/ with the seven tables and a manifest whose hashes and counts are right."""
    contract = load_contract()
    rows = rows if rows is not None else valid_rows(site)
    folder = root / f"{site}_{cut}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for table in contract.tables.values():
        path = folder / f"{table.name}.{fmt}"
        table_rows = rows.get(table.name, [])
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=table.column_names, lineterminator="\n")
                writer.writeheader()
                writer.writerows(table_rows)
        else:
            import polars as pl
            pl.DataFrame({c: [r.get(c) or None for r in table_rows] for c in table.column_names},
                         schema={c: pl.Utf8 for c in table.column_names}).write_parquet(path)
        files[path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": len(table_rows)}
    manifest = {"study_id": contract.study_id, "spec_version": contract.spec_version, "site_id": site,
                "data_cut": cut, "created_at": created_at, "files": files}
    if manifest_edit:
        manifest_edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def rehash(folder: Path) -> None:
    """Recompute the manifest after a test edited a file, so that only the edit is wrong."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        entry["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def many_rows(n: int, site: str = SITE, sex: str = "F") -> dict[str, list[dict]]:
    """n valid patients shaped like valid_rows' first one, for tests that need a load that takes a while."""
    rows: dict[str, list[dict]] = {t: [] for t in valid_rows(site)}
    for i in range(n):
        pid = f"{site}-{i:016X}"
        rows["patients"].append({"patient_id": pid, "sex": sex, "birth_year": "1980", "ms_onset_year": "2005",
                                 "ms_course": "RRMS"})
        rows["alemtuzumab_infusions"] += [{"patient_id": pid, "infusion_date": f"2020-01-0{d}",
                                           "course_number": "1", "dose_mg": "12"} for d in range(1, 6)]
        rows["infections"].append({"patient_id": pid, "event_id": f"E{i}", "onset_date": "2020-03-01",
                                   "meddra_pt": "Pneumonia", "serious": "Y",
                                   "seriousness_criteria": "hospitalisation", "outcome": "recovered"})
        rows["follow_up"].append({"patient_id": pid, "followup_end_date": CUT, "end_reason": "data_cut"})
    return rows


# Ingest one delivery in a child process; it prints its status, its message and its own peak memory in MB.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) test process it was forked from.
_INGEST_ONE = ("import re, sys; from pathlib import Path; from vigil import warehouse; "
               "from vigil.ingest.load import ingest_delivery; db = Path(sys.argv[2]); con = warehouse.connect(db); "
               "warehouse.create_layout(con); o = ingest_delivery(con, Path(sys.argv[1]), warehouse.gx_dir_for(db)); "
               "print(o.status); print(o.message); "
               "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)")


def ingest_in_child(folder: Path, db: Path) -> tuple[str, str, int, str]:
    """(status, message, peak MB, everything the child printed) of ingesting `folder` into `db` in a child."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _INGEST_ONE, str(folder), str(db)], capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    status, message, peak_mb = done.stdout.splitlines()[-3:]
    return status, message, int(peak_mb), output
