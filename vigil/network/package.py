"""A site's result package (SAP 8): what a site of the network shares with the coordinator, and how the
coordinator checks one before pooling it.

`write_package(db, out)` writes, from the site's latest completed run (or `run_id`), the folder `out`:

  results.csv     the run's disclosure-controlled results (SAP 5) as the export's tidy table (an
                  omopgenerics summarised_result, vigil.export.tidy), cdm_name = the site
  profiles.csv    for each hazard ratio of A5's multivariable model that results.csv shows, the site's
                  profile partial log-likelihood of its log HR on the network's grid (PROFILE_GRID), so
                  the coordinator can pool without the normal approximation (vigil.stats.meta.pool_profiles)
  manifest.json   the study, the site, the vigil, SAP, code-list and reference-rate versions, the data cuts,
                  the run, and the sha256 of every file
  .vigil-package  marks the folder as a package (a later package replaces only such a folder)

Nothing else: no patient row, no exact file. Before a package is published, `check_rows` refuses it if
any count (estimate_name "count") is 1-4 or any column or value names a patient; the coordinator's
`read_package` runs the same check and the manifest's, and refuses the package whole with one line
naming the site and the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from vigil.inert import inert

FORMAT = "vigil-network-package/1"
MARKER = ".vigil-package"
RESULTS, PROFILES, MANIFEST = "results.csv", "profiles.csv", "manifest.json"
FILES = (RESULTS, PROFILES)
# Tables a package must hold for P1 and P2 (result_type of the tidy table's settings).
REQUIRED_TABLES = ("incidence", "cox")
# The network's grid of log hazard ratios (HR 0.018 to 55, step 0.1; the pooled estimate and limits are
# within ~1e-9 of the exact ones at this step, vigil.stats.meta.pool_profiles): every site profiles on it.
PROFILE_GRID = np.round(np.linspace(-4.0, 4.0, 81), 10)
PROFILE_COLUMNS = ("outcome", "model", "variable", "level", "log_hr", "loglik")
_PATIENT_WORDS = ("patient_id", "patient")


class PackageError(RuntimeError):
    """A package cannot be written or is refused; the message, one line, names the site and the file."""


@dataclass
class Package:
    folder: Path
    manifest: dict
    manifest_sha256: str
    results: list[dict]     # rows of results.csv (the tidy table; settings rows apart)
    settings: list[dict]
    profiles: list[dict]

    @property
    def site(self) -> str:
        return self.manifest["site_id"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_rows(rows: list[dict], where: str) -> None:
    """Refuse a count 1-4 or anything that names a patient (SAP 5 and 8): one line naming `where`."""
    for row in rows:
        for column, value in row.items():
            if any(word in str(column).lower() for word in _PATIENT_WORDS) and column != "variable_name":
                raise PackageError(f"{where}: column {inert(column)} names a patient: a package holds aggregates only")
        if row.get("estimate_name") == "count" and row.get("estimate_value") not in (None, "", "-"):
            try:
                value = float(row["estimate_value"])
            except ValueError:
                raise PackageError(f"{where}: a count that is not a number ({inert(row['estimate_value'])})") from None
            if 1 <= value <= 4:
                raise PackageError(f"{where}: a count of {value:g} ({inert(row.get('variable_name'))}, "
                                   f"{inert(row.get('strata_level'))}): counts 1-4 never leave a site (SAP 5)")


# ---------------------------------------------------------------------------------------------- site side


def site_profiles(con: duckdb.DuckDBPyConnection, shown: set[tuple[str, str, str]], grid=PROFILE_GRID) -> list[dict]:
    """The site's profile log-likelihood of each shown (outcome, variable, level) hazard ratio of A5's
    multivariable model, on `grid`: the same design as the run's model (vigil.analysis.cox.cox_design)."""
    from vigil.analysis.cox import cox_design, level_presence
    from vigil.cohort import strata
    from vigil.network.distributed import _counts
    from vigil.stats.meta import cox_profile

    rows = []
    variables = list(strata.multivariable())
    for outcome in sorted({o for o, _, _ in shown}):
        counts = _counts(con, outcome)
        design = cox_design(counts, variables, strata.sap_levels(), level_presence(counts, variables))
        if design.data is None:
            continue
        for column, name in enumerate(design.data.names):
            variable, level = name[:-1].split("[", 1)
            if (outcome, variable, level) not in shown:
                continue
            loglik = cox_profile(design.data, column, grid)
            rows += [{"outcome": outcome, "model": "multivariable", "variable": variable, "level": level,
                      "log_hr": float(b), "loglik": float(ll)} for b, ll in zip(grid, loglik)]
    return rows


def _shown_hazard_ratios(results: list[dict], settings: list[dict]) -> set[tuple[str, str, str]]:
    """(outcome, variable, level) of the main multivariable model whose hazard ratio results.csv shows."""
    cox_ids = {s["result_id"] for s in settings if s.get("result_type") == "cox" and s.get("variant") == "main"}
    shown = set()
    for r in results:
        if (r["result_id"] in cox_ids and r["estimate_name"] == "hazard_ratio" and r["estimate_value"] not in ("-", None)
                and "model &&& covariates" == r["additional_name"]
                and r["additional_level"].split(" &&& ")[0] == "multivariable"):
            shown.add((r["group_level"], r["variable_name"], r["variable_level"]))
    return shown


def write_package(db: Path, out: Path, run_id: int | None = None) -> Package:
    """Write the site's package of run `run_id` (default: its latest completed) of the warehouse `db` into
    `out` (a new or empty folder, or an earlier package, replaced whole)."""
    from vigil.analysis.runs import SAP_VERSION
    from vigil.contract import load_contract
    from vigil.export import _publish, _sync, run_tidy
    from vigil.export.tidy import read_csv, write_csv
    from vigil.report.data import ReportError, load_run

    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or (any(out.iterdir())
                                                                    and not (out / MARKER).is_file()))):
        raise PackageError(f"OUT {inert(out)} is not a new or empty folder nor an earlier package")
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        raise PackageError(f"cannot open the site's warehouse {inert(db)}: {str(exc).splitlines()[0]}") from None
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        try:
            data = load_run(con, run_id)
        except ReportError as exc:
            raise PackageError(str(exc)) from None
        run = data.run
        sites = sorted({str(d["site_id"]) for d in run.get("deliveries") or []})
        if len(sites) != 1:
            raise PackageError(f"run {run['run_id']} of {inert(db)} analysed {len(sites)} sites "
                               f"({', '.join(map(inert, sites)) or 'none'}): a site's package holds one site's run")
        tidy = run_tidy(con, data)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_csv(tidy, partial / RESULTS)
        results, settings = read_csv(partial / RESULTS)
        check_rows(results, f"site {sites[0]}: {RESULTS}")
        profiles = site_profiles(con, _shown_hazard_ratios(results, settings))
        with (partial / PROFILES).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=PROFILE_COLUMNS)
            writer.writeheader()
            writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in profiles)
        codelists = json.loads(run.get("codelist_versions") or "{}") if isinstance(run.get("codelist_versions"), str) \
            else (run.get("codelist_versions") or {})
        manifest = {
            "format": FORMAT, "study_id": load_contract().study_id, "site_id": sites[0],
            "vigil_version": str(run.get("code_version")), "sap_version": str(run.get("sap_version") or SAP_VERSION),
            "codelist_versions": {name: (info or {}).get("version") for name, info in sorted(codelists.items())
                                  if name != "reference_rates"},
            "reference_rate_version": (codelists.get("reference_rates") or {}).get("version"),
            "data_cuts": {str(d["site_id"]): str(d["data_cut"]) for d in run["deliveries"]},
            "run_id": int(run["run_id"]), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "profile_grid": {"start": float(PROFILE_GRID[0]), "stop": float(PROFILE_GRID[-1]),
                             "points": len(PROFILE_GRID)},
            "files": {name: _sha256(partial / name) for name in FILES},
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (partial / MARKER).write_text("Made by `vigil network package`: a later package to this folder replaces it.\n",
                                      encoding="utf-8")
        _sync(partial)
        _publish(partial, out)
    except OSError as exc:
        raise PackageError(f"cannot write the package to {inert(out)}: {exc.strerror or exc}") from None
    finally:
        con.close()
        shutil.rmtree(partial, ignore_errors=True)
    return read_package(out)


# ---------------------------------------------------------------------------------------------- coordinator side


def read_package(folder: Path, expected: dict | None = None) -> Package:
    """Read and check a package: its manifest, every file's sha256, the study, the SAP version and (with
    `expected`: study_id, sap_version, codelist_versions, reference_rate_version) the versions, the
    tables P1 and P2 need, no count 1-4. PackageError, one line naming the site and the file, if not."""
    from vigil.export.tidy import read_csv

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    try:
        manifest_bytes = manifest_path.read_bytes()
        manifest = json.loads(manifest_bytes)
        site = manifest["site_id"]
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"package {inert(folder)}: {MANIFEST} cannot be read ({type(exc).__name__})") from None
    who = f"site {inert(site)}"
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{who}: {inert(manifest_path)}: format {inert(manifest.get('format'))}, not {FORMAT}")
    for name in FILES:
        path = folder / name
        if name not in files or not path.is_file():
            raise PackageError(f"{who}: {inert(path)} is missing")
        if _sha256(path) != files[name]:
            raise PackageError(f"{who}: {inert(path)} does not match its sha256 in {MANIFEST} (altered or damaged)")
    for key, value in (expected or {}).items():
        if manifest.get(key) != value:
            raise PackageError(f"{who}: {inert(manifest_path)}: {key} {inert(manifest.get(key))}, the network's is "
                               f"{inert(value)}")
    try:
        results, settings = read_csv(folder / RESULTS)
    except (OSError, ValueError, KeyError) as exc:
        raise PackageError(f"{who}: {inert(folder / RESULTS)} cannot be read ({type(exc).__name__})") from None
    check_rows(results, f"{who}: {inert(folder / RESULTS)}")
    held = {s.get("result_type") for s in settings}
    missing = [t for t in REQUIRED_TABLES if t not in held]
    if missing:
        raise PackageError(f"{who}: {inert(folder / RESULTS)} has no {', '.join(missing)} table")
    if any(r.get("cdm_name") != site for r in results):
        raise PackageError(f"{who}: {inert(folder / RESULTS)} holds results of another site or of the pooled study")
    with (folder / PROFILES).open(newline="", encoding="utf-8") as handle:
        profiles = list(csv.DictReader(handle))
    if profiles and tuple(profiles[0]) != PROFILE_COLUMNS:
        raise PackageError(f"{who}: {inert(folder / PROFILES)}: columns {', '.join(map(inert, profiles[0]))}")
    check_rows(profiles, f"{who}: {inert(folder / PROFILES)}")
    return Package(folder, manifest, hashlib.sha256(manifest_bytes).hexdigest(), results, settings, profiles)
