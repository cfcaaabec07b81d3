"""The coordinator (SAP 8): check the sites' result packages, pool P1 and P2, and record P3, in the
coordinator's DuckDB (schema network, sql/network/).

`pool_packages(folders, con)` reads every package (vigil.network.package.read_package: manifest, sha256
of each file, study, SAP, code-list and reference-rate versions, the tables it needs, no count 1-4); a
package that fails, or a second package of a site already accepted, is refused whole with one line
naming the site and the file (network.sites), and pooling goes on with the ones accepted. Then, from
what the packages show:

  P1 network.pooled_rates  per outcome x stratum (not the stratifier site: each site is its own stratum)
     fixed      sum(events) / sum(PY), exact CI, only where no site's events or person-years are suppressed
     random_dl  DerSimonian-Laird over the sites with >= 5 events (log rate, variance 1 / events), k >= 2
     profile    the sum of the sites' Poisson log-likelihoods (the sites of fixed), likelihood-ratio CI
  P2 network.pooled_hr     per outcome x level of A5's multivariable model, over the sites whose
                           package shows the HR (level and reference with >= 5 patients and events)
     fixed, random_dl (k >= 2) on (coef, se); profile on the packages' profile log-likelihoods

Every pooled row names its sites and the sha256 of their manifests (provenance). The estimators are
vigil.stats.meta; this module is the study's policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from vigil.network.package import PROFILE_GRID, Package, PackageError, read_package
from vigil.warehouse.sqlfiles import build_layer

MIN_EVENTS = 5         # SAP 8: random effects over the sites with at least 5 events
PER = 1000.0           # rates per 1,000 person-years
RATE_GRID_HALF_WIDTH = 3.0   # the rate profile's grid: log(fixed rate) +- 3 (a factor 20), step 0.05
NETWORK_TABLES = ("pools", "sites", "site_estimates", "pooled_rates", "pooled_hr")


@dataclass
class PoolSummary:
    pool_id: int
    accepted: list[str]
    refused: list[tuple[str, str]]   # (package, reason)
    rows: dict[str, int]


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    build_layer(con, "network")


def next_pool_id(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT coalesce(max(pool_id), 0) + 1 FROM network.pools").fetchall()[0][0])


def network_expectations() -> dict:
    """What every package of the network must carry: this vigil's study, SAP and code-list versions."""
    from vigil.analysis.runs import SAP_VERSION
    from vigil.cohort.codelists import codelist_versions
    from vigil.contract import load_contract

    versions = codelist_versions()
    return {"study_id": load_contract().study_id, "sap_version": SAP_VERSION,
            "codelist_versions": {n: v["version"] for n, v in sorted(versions.items()) if n != "reference_rates"},
            "reference_rate_version": versions["reference_rates"]["version"]}


def _value(text):
    return None if text in (None, "", "-", "NA") else float(text)


def site_estimates(package: Package) -> pl.DataFrame:
    """The package's main-analysis rates (A1) and multivariable hazard ratios (A5), as it shows them."""
    kinds = {s["result_id"]: s for s in package.settings if s.get("variant") == "main"}
    cells: dict[tuple, dict] = {}
    for r in package.results:
        setting = kinds.get(r["result_id"])
        if setting is None:
            continue
        if setting["result_type"] == "incidence":
            stratifier = r["strata_name"] if r["strata_name"] != "overall" else "overall"
            stratum = r["strata_level"] if stratifier != "overall" else "all"
            key = ("rate", r["group_level"], stratifier, stratum)
            name = {("number_events", "count"): "n_events", ("person_years", "sum"): "person_years",
                    ("incidence_rate_per_1000_person_years", "estimate"): "estimate",
                    ("incidence_rate_per_1000_person_years", "ci_lower"): "ci_lower",
                    ("incidence_rate_per_1000_person_years", "ci_upper"): "ci_upper"}.get(
                (r["variable_name"], r["estimate_name"]))
        elif setting["result_type"] == "cox" and (r["additional_level"] or "").startswith("multivariable &&& "):
            key = ("hazard_ratio", r["group_level"], r["variable_name"], r["variable_level"])
            name = {"hazard_ratio": "estimate", "ci_lower": "ci_lower", "ci_upper": "ci_upper", "coef": "log_estimate",
                    "se": "se"}.get(r["estimate_name"])
        else:
            continue
        if name is not None and key[3] is not None:
            cells.setdefault(key, {})[name] = _value(r["estimate_value"])
    rows = []
    for (quantity, outcome, variable, level), values in sorted(cells.items()):
        if quantity == "rate":
            events, py = values.get("n_events"), values.get("person_years")
            values["log_estimate"] = float(np.log(events / py)) if events and py else None
            values["se"] = float(np.sqrt(1 / events)) if events else None
        rows.append({"site_id": package.site, "quantity": quantity, "outcome": outcome, "variable": variable,
                     "level": level, "n_events": None if values.get("n_events") is None else int(values["n_events"]),
                     **{c: values.get(c) for c in ("person_years", "estimate", "ci_lower", "ci_upper",
                                                   "log_estimate", "se")}})
    schema = {"site_id": pl.Utf8, "quantity": pl.Utf8, "outcome": pl.Utf8, "variable": pl.Utf8, "level": pl.Utf8,
              "n_events": pl.Int64, **{c: pl.Float64 for c in ("person_years", "estimate", "ci_lower", "ci_upper",
                                                               "log_estimate", "se")}}
    return pl.DataFrame(rows, schema=schema)


def _provenance(sites: list[str], hashes: dict[str, str]) -> dict:
    return {"n_sites": len(sites), "sites": ", ".join(sites), "packages": ", ".join(hashes[s] for s in sites)}


def pooled_rates(estimates: pl.DataFrame, sites: list[str], hashes: dict[str, str]) -> list[dict]:
    from vigil.stats import meta

    rows = []
    rates = estimates.filter(pl.col("quantity") == "rate", pl.col("variable") != "site")
    for (outcome, stratifier, stratum), part in rates.group_by(["outcome", "variable", "level"], maintain_order=True):
        key = {"outcome": outcome, "stratifier": stratifier, "stratum": stratum}
        by_site = {r["site_id"]: r for r in part.iter_rows(named=True)}
        shown = [s for s in sites if s in by_site and by_site[s]["n_events"] is not None
                 and by_site[s]["person_years"] is not None]
        hidden = [s for s in sites if s not in shown]
        if hidden:
            note = f"not pooled: suppressed or missing at {', '.join(hidden)} (SAP 8: fixed only where none is)"
            for method in ("fixed", "profile"):
                rows.append({**key, "method": method, **_provenance([], hashes), "note": note})
        else:
            events = np.array([by_site[s]["n_events"] for s in shown], float)
            py = np.array([by_site[s]["person_years"] for s in shown], float)
            fixed = meta.pooled_rate_fixed(events, py)
            rows.append({**key, "method": "fixed", "estimate": fixed.rate * PER, "ci_lower": fixed.ci_lower * PER,
                         "ci_upper": fixed.ci_upper * PER, **_provenance(shown, hashes)})
            if events.sum() > 0 and py.sum() > 0:
                grid = np.log(events.sum() / py.sum()) + np.linspace(-RATE_GRID_HALF_WIDTH, RATE_GRID_HALF_WIDTH,
                                                                     int(2 * RATE_GRID_HALF_WIDTH / 0.05) + 1)
                profile = meta.pool_profiles(grid, [meta.poisson_profile(e, p, grid) for e, p in zip(events, py)])
                rows.append({**key, "method": "profile", "estimate": np.exp(profile.estimate) * PER,
                             "ci_lower": np.exp(profile.ci_lower) * PER, "ci_upper": np.exp(profile.ci_upper) * PER,
                             **_provenance(shown, hashes), "note": profile.note})
            else:
                rows.append({**key, "method": "profile", **_provenance(shown, hashes),
                             "note": "no events at any site: no likelihood maximum"})
        enough = [s for s in sites if s in by_site and (by_site[s]["n_events"] or 0) >= MIN_EVENTS
                  and by_site[s]["person_years"]]
        if len(enough) >= 2:
            yi, vi = meta.log_rate_inputs([by_site[s]["n_events"] for s in enough],
                                          [by_site[s]["person_years"] for s in enough])
            dl = meta.random_effects_dl(yi, vi)
            rows.append({**key, "method": "random_dl", "estimate": np.exp(dl.estimate) * PER,
                         "ci_lower": np.exp(dl.ci_lower) * PER, "ci_upper": np.exp(dl.ci_upper) * PER,
                         "tau2": dl.tau2, "i2": dl.i2, **_provenance(enough, hashes)})
        else:
            rows.append({**key, "method": "random_dl", **_provenance(enough, hashes),
                         "note": f"{len(enough)} site(s) with >= {MIN_EVENTS} events: random effects need two"})
    return rows


def pooled_hazard_ratios(estimates: pl.DataFrame, packages: dict[str, Package], hashes: dict[str, str]) -> list[dict]:
    from vigil.stats import meta

    profiles = {}
    for site, package in packages.items():
        for r in package.profiles:
            profiles.setdefault((site, r["outcome"], r["variable"], r["level"]), []).append(float(r["loglik"]))
    rows = []
    hrs = estimates.filter(pl.col("quantity") == "hazard_ratio")
    for (outcome, variable, level), part in hrs.group_by(["outcome", "variable", "level"], maintain_order=True):
        key = {"outcome": outcome, "model": "multivariable", "variable": variable, "level": level}
        shown = [r for r in part.iter_rows(named=True) if r["log_estimate"] is not None and r["se"] is not None]
        sites = [r["site_id"] for r in shown]
        if not shown:
            for method in ("fixed", "random_dl", "profile"):
                rows.append({**key, "method": method, **_provenance([], hashes),
                             "note": "no site's package shows this hazard ratio (5+ patients and events needed)"})
            continue
        coef = np.array([r["log_estimate"] for r in shown])
        se = np.array([r["se"] for r in shown])
        fits = {"fixed": meta.fixed_effect(coef, sei=se)}
        if len(shown) >= 2:
            fits["random_dl"] = meta.random_effects_dl(coef, sei=se)
        else:
            rows.append({**key, "method": "random_dl", **_provenance(sites, hashes),
                         "note": "one site shows this hazard ratio: random effects need two"})
        for method, fit in fits.items():
            rows.append({**key, "method": method, "hr": np.exp(fit.estimate), "ci_lower": np.exp(fit.ci_lower),
                         "ci_upper": np.exp(fit.ci_upper), "coef": fit.estimate, "se": fit.se,
                         "tau2": fit.tau2 if method == "random_dl" else None,
                         "i2": fit.i2 if method == "random_dl" else None, **_provenance(sites, hashes)})
        curves = [profiles.get((s, outcome, variable, level)) for s in sites]
        if any(c is None or len(c) != len(PROFILE_GRID) for c in curves):
            rows.append({**key, "method": "profile", **_provenance(sites, hashes),
                         "note": "a site's package has no profile of this hazard ratio on the network's grid"})
        else:
            profile = meta.pool_profiles(PROFILE_GRID, curves)
            rows.append({**key, "method": "profile", "hr": np.exp(profile.estimate),
                         "ci_lower": np.exp(profile.ci_lower), "ci_upper": np.exp(profile.ci_upper),
                         "coef": profile.estimate, **_provenance(sites, hashes), "note": profile.note})
    return rows


def _insert(con, table: str, rows: list[dict], pool_id: int) -> int:
    if not rows:
        return 0
    columns = [c for c, in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = "
        "'network' AND table_name = ? ORDER BY column_index", [table]).fetchall()]
    values = []
    for row in rows:
        row = {**row, "pool_id": pool_id}
        values.append([None if isinstance(row.get(c), float) and not np.isfinite(row[c]) else row.get(c)
                       for c in columns])
    con.executemany(f"INSERT INTO network.{table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    values)
    return len(rows)


def pool_packages(folders: list[Path], con: duckdb.DuckDBPyConnection) -> PoolSummary:
    """Check every package, pool the accepted ones (P1, P2) and write them as pooling N+1, all or nothing."""
    from vigil.analysis.runs import SAP_VERSION, code_version

    expected = network_expectations()
    accepted: dict[str, Package] = {}
    site_rows, refused = [], []
    for position, folder in enumerate(folders, start=1):
        row = {"position": position, "package": str(folder), "status": "refused"}
        try:
            package = read_package(folder, expected)
            if package.site in accepted:
                raise PackageError(f"site {package.site}: {folder} is a second package of the site (the first: "
                                   f"{accepted[package.site].folder}); one package per site")
        except PackageError as exc:
            refused.append((str(folder), str(exc)))
            site_rows.append({**row, "site_id": _site_of(folder), "reason": str(exc)})
            continue
        accepted[package.site] = package
        m = package.manifest
        site_rows.append({**row, "status": "accepted", "site_id": package.site,
                          "manifest_sha256": package.manifest_sha256, "vigil_version": m.get("vigil_version"),
                          "sap_version": m.get("sap_version"), "run_id": m.get("run_id"),
                          "data_cuts": ", ".join(f"{s}:{c}" for s, c in sorted(m.get("data_cuts", {}).items()))})
    sites = sorted(accepted)
    hashes = {s: accepted[s].manifest_sha256 for s in sites}
    estimates = pl.concat([site_estimates(accepted[s]) for s in sites]) if sites else None
    rates = pooled_rates(estimates, sites, hashes) if sites else []
    hrs = pooled_hazard_ratios(estimates, accepted, hashes) if sites else []
    create_tables(con)
    con.execute("BEGIN")
    try:
        pool_id = next_pool_id(con)
        written = {
            "sites": _insert(con, "sites", site_rows, pool_id),
            "site_estimates": _insert(con, "site_estimates", [] if estimates is None else estimates.to_dicts(), pool_id),
            "pooled_rates": _insert(con, "pooled_rates", rates, pool_id),
            "pooled_hr": _insert(con, "pooled_hr", hrs, pool_id),
        }
        _insert(con, "pools", [{"kind": "packages", "pooled_at": datetime.now(timezone.utc),
                                "code_version": code_version(), "sap_version": SAP_VERSION,
                                "n_accepted": len(sites), "n_refused": len(refused)}], pool_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return PoolSummary(pool_id, sites, refused, written)


def _site_of(folder: Path) -> str | None:
    try:
        return str(json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))["site_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pooled_start(con: duckdb.DuckDBPyConnection, pool_id: int, outcome: str) -> dict[str, float]:
    """P2's fixed-effect pooled log hazard ratios of the multivariable model (where shown), by design name:
    where P3's Newton-Raphson may start (vigil.network.distributed.distributed_cox)."""
    return dict(con.execute(
        "SELECT variable || '[' || level || ']', ln(hr) FROM network.pooled_hr WHERE pool_id = ? AND outcome = ? "
        "AND model = 'multivariable' AND method = 'fixed' AND hr > 0", [pool_id, outcome]).fetchall())


def record_distributed_cox(con: duckdb.DuckDBPyConnection, fits: dict, sites: list[str]) -> PoolSummary:
    """Write P3 fits (outcome -> vigil.network.distributed.DistributedCox) as pooling N+1 (kind distributed_cox):
    network.pooled_hr rows with model multivariable_site_stratified, method distributed, the rounds taken."""
    from vigil.analysis.runs import SAP_VERSION, code_version

    from vigil.cohort import strata
    from vigil.report.disclosure import MIN_SHOWN

    references = {v: levels[0] for v, levels in strata.sap_levels().items()}
    rows = []
    for outcome, fit in fits.items():
        for i, name in enumerate(fit.names):
            variable, level = name[:-1].split("[", 1)
            row = {"outcome": outcome, "model": "multivariable_site_stratified", "variable": variable,
                   "level": level, "method": "distributed", "n_sites": len(fit.sites), "sites": ", ".join(fit.sites),
                   "rounds": fit.rounds}
            least = [fit.least.get((variable, lv), (0, 0)) for lv in (level, references[variable])]
            if fit.least and min(n for pair in least for n in pair) < MIN_SHOWN:  # SAP 5, as the report's Cox rows
                row["note"] = (f"hidden: {variable} {level} or its reference level may have fewer than {MIN_SHOWN} "
                               "patients or events across the sites (SAP 5)")
            else:
                row.update(hr=fit.hr[i], ci_lower=fit.ci_lower[i], ci_upper=fit.ci_upper[i], coef=fit.coef[i],
                           se=fit.se[i])
            rows.append(row)
    create_tables(con)
    con.execute("BEGIN")
    try:
        pool_id = next_pool_id(con)
        written = {"pooled_hr": _insert(con, "pooled_hr", rows, pool_id)}
        _insert(con, "pools", [{"kind": "distributed_cox", "pooled_at": datetime.now(timezone.utc),
                                "code_version": code_version(), "sap_version": SAP_VERSION,
                                "n_accepted": len(sites), "n_refused": 0}], pool_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return PoolSummary(pool_id, list(sites), [], written)


def site_of_warehouse(con: duckdb.DuckDBPyConnection) -> str:
    """The site whose deliveries the warehouse's latest completed run analysed (one, for a site node)."""
    rows = con.execute("SELECT deliveries FROM results.runs WHERE status = 'completed' ORDER BY run_id DESC "
                       "LIMIT 1").fetchall()
    sites = sorted({str(d["site_id"]) for d in json.loads(rows[0][0])}) if rows else []
    if len(sites) != 1:
        raise PackageError(f"the warehouse's latest run analysed {len(sites)} sites: a site node holds one site")
    return sites[0]
