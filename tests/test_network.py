"""The study network (SAP 8) end to end on one machine, without Prefect: three sites, each with its own
warehouse, write result packages; the coordinator refuses bad packages whole and pools the others
(P1, P2); P3 over the sites' warehouses equals the pooled warehouse's site-stratified model. The
estimators themselves are checked against R in test_meta_analysis.py and test_network_cox.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from vigil import warehouse
from vigil.analysis.runs import analyse
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery
from vigil.network import package as pkg
from vigil.network.distributed import distributed_cox, local_site
from vigil.network.pool import pool_packages, record_distributed_cox

pytestmark = pytest.mark.slow  # three sites' warehouses and a pooled one, analysed (the module fixture)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Three sites of one synthetic study, each loaded and analysed in its own warehouse, their packages,
    and a pooled warehouse of all three deliveries (what one warehouse would have computed)."""
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("network")
    synth = synthesize_study(root / "landing", patients=1500, sites=3, seed=5)
    pooled = warehouse.connect(root / "pooled" / "vigil.duckdb")
    warehouse.create_layout(pooled)
    sites, packages = {}, {}
    for folder in synth.deliveries:
        site = folder.name.split("_")[0]
        db = root / site / "vigil.duckdb"
        for target in (db, root / "pooled" / "vigil.duckdb"):
            con = pooled if target.parent.name == "pooled" else warehouse.connect(target)
            if con is not pooled:
                warehouse.create_layout(con)
            ingest_delivery(con, folder, warehouse.gx_dir_for(target), validator=validation.SQL_RULE_COUNTS)
            if con is not pooled:
                analyse(con)
                con.close()
        sites[site] = db
        packages[site] = pkg.write_package(db, root / f"package-{site}").folder
    analyse(pooled)
    yield {"root": root, "sites": sites, "packages": packages, "pooled": pooled}
    pooled.close()


def _coordinator(network, name: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(network["root"] / f"{name}.duckdb"))


def test_a_package_holds_aggregates_only_and_every_file_is_in_its_manifest(network):
    for site, folder in network["packages"].items():
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted([pkg.MARKER, pkg.MANIFEST, *pkg.FILES])
        manifest = json.loads((folder / pkg.MANIFEST).read_text())
        assert manifest["site_id"] == site and manifest["sap_version"] == "1.1"
        assert set(manifest["files"]) == set(pkg.FILES) and list(manifest["data_cuts"]) == [site]
        package = pkg.read_package(folder)
        counts = [float(r["estimate_value"]) for r in package.results
                  if r["estimate_name"] == "count" and r["estimate_value"] not in (None, "-")]
        assert counts and not [c for c in counts if 1 <= c <= 4]
        text = "\n".join(p.read_text() for p in folder.iterdir() if p.is_file())
        ids = [r[0] for r in duckdb.connect(str(network["sites"][site]), read_only=True).execute(
            "SELECT patient_id FROM cohort.patients LIMIT 50").fetchall()]
        assert not [i for i in ids if i in text]  # no patient row, not even an id


def test_the_writer_refuses_a_count_of_one_to_four_slipped_into_the_results(network, monkeypatch, tmp_path):
    from vigil import export

    real = export.run_tidy

    def slipping(con, data, tables=None):
        tidy = real(con, data, tables)
        row = next(r for r in tidy.rows if r["estimate_name"] == "count" and r["estimate_value"] not in ("-", "0"))
        row["estimate_value"] = "3"
        return tidy
    monkeypatch.setattr(export, "run_tidy", slipping)
    site = "DK01"
    with pytest.raises(pkg.PackageError, match=r"site DK01: results.csv: a count of 3 .*counts 1-4 never leave a site"):
        pkg.write_package(network["sites"][site], tmp_path / "p")
    assert not (tmp_path / "p").exists()  # nothing published


def test_pooled_fixed_rates_equal_the_pooled_warehouse_where_no_site_suppressed(network):
    con = _coordinator(network, "p1")
    summary = pool_packages(list(network["packages"].values()), con)
    assert summary.accepted == sorted(network["packages"]) and not summary.refused
    fixed = con.sql("SELECT outcome, stratifier, stratum, estimate, ci_lower, ci_upper FROM network.pooled_rates "
                    "WHERE method = 'fixed' AND estimate IS NOT NULL").pl()
    assert len(fixed) >= 5
    central = network["pooled"].sql("SELECT outcome, stratifier, stratum, rate_per_1000py, ci_lower, ci_upper "
                                    "FROM results.incidence WHERE variant = 'main'").pl()
    joined = fixed.join(central, on=["outcome", "stratifier", "stratum"], suffix="_central")
    assert len(joined) == len(fixed)
    for column, other in (("estimate", "rate_per_1000py"), ("ci_lower", "ci_lower_central"),
                          ("ci_upper", "ci_upper_central")):
        assert (joined[column] - joined[other]).abs().max() < 1e-9
    # where a site suppressed a count, no fixed estimate, and the note says why
    notes = con.sql("SELECT note FROM network.pooled_rates WHERE method = 'fixed' AND estimate IS NULL").pl()
    assert all("suppressed" in n for n in notes["note"])
    # every pooled row names its sites' package manifests
    hashes = dict(con.execute("SELECT site_id, manifest_sha256 FROM network.sites WHERE status = 'accepted'").fetchall())
    for sites, packages in con.execute("SELECT sites, packages FROM network.pooled_rates WHERE n_sites > 0").fetchall():
        assert packages.split(", ") == [hashes[s] for s in sites.split(", ")]


def test_pooled_hazard_ratios_use_the_sites_that_show_them(network):
    from vigil.stats import meta

    con = _coordinator(network, "p2")
    pool_packages(list(network["packages"].values()), con)
    site = con.sql("SELECT * FROM network.site_estimates WHERE quantity = 'hazard_ratio' AND se IS NOT NULL").pl()
    pooled = con.sql("SELECT * FROM network.pooled_hr WHERE hr IS NOT NULL").pl()
    assert set(pooled["method"]) == {"fixed", "random_dl", "profile"}
    row = pooled.filter(pl.col("method") == "random_dl").row(0, named=True)
    part = site.filter(pl.col("outcome") == row["outcome"], pl.col("variable") == row["variable"],
                       pl.col("level") == row["level"]).sort("site_id")
    assert row["sites"] == ", ".join(part["site_id"])
    dl = meta.random_effects_dl(part["log_estimate"].to_numpy(), sei=part["se"].to_numpy())
    assert row["coef"] == pytest.approx(dl.estimate, abs=1e-12) and row["tau2"] == pytest.approx(dl.tau2, abs=1e-12)
    # the sites' own HRs are those of their warehouses
    mine = duckdb.connect(str(network["sites"][part["site_id"][0]]), read_only=True).execute(
        "SELECT coef, se FROM results.cox WHERE model = 'multivariable' AND variant = 'main' AND outcome = ? "
        "AND variable = ? AND level = ?", [row["outcome"], row["variable"], row["level"]]).fetchall()[0]
    assert (part["log_estimate"][0], part["se"][0]) == pytest.approx(mine, abs=1e-12)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _rehash(folder: Path) -> None:
    manifest = json.loads((folder / pkg.MANIFEST).read_text())
    manifest["files"] = {name: pkg._sha256(folder / name) for name in pkg.FILES}
    (folder / pkg.MANIFEST).write_text(json.dumps(manifest))


def _edit_manifest(key, value):
    def edit(folder: Path) -> None:
        manifest = json.loads((folder / pkg.MANIFEST).read_text())
        manifest[key] = value
        (folder / pkg.MANIFEST).write_text(json.dumps(manifest))
    return edit


def _wrong_hash(folder: Path) -> None:
    with (folder / pkg.RESULTS).open("a", encoding="utf-8") as handle:
        handle.write("\n")


def _count_of_three(folder: Path) -> None:
    lines = (folder / pkg.RESULTS).read_text(encoding="utf-8").splitlines()
    i = next(i for i, line in enumerate(lines) if '"count","integer","0"' in line)
    lines[i] = lines[i].replace('"count","integer","0"', '"count","integer","3"')
    (folder / pkg.RESULTS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    _rehash(folder)


def _no_incidence(folder: Path) -> None:
    lines = (folder / pkg.RESULTS).read_text(encoding="utf-8").splitlines()
    ids = {line.split(",")[0] for line in lines if '"result_type","character","incidence"' in line}
    (folder / pkg.RESULTS).write_text("\n".join(l for l in lines if l.split(",")[0] not in ids) + "\n",
                                      encoding="utf-8")
    _rehash(folder)


@pytest.mark.parametrize("spoil, message", [
    (_wrong_hash, r"site SE02: .*results.csv does not match its sha256 in manifest.json"),
    (_edit_manifest("study_id", "OTHER-STUDY"), r"site SE02: .*manifest.json: study_id OTHER-STUDY, the network's is"),
    (_edit_manifest("sap_version", "1.0"), r"site SE02: .*manifest.json: sap_version 1.0, the network's is 1.1"),
    (_count_of_three, r"site SE02: .*results.csv: a count of 3"),
    (_no_incidence, r"site SE02: .*results.csv has no incidence table"),
])
def test_a_bad_package_is_refused_whole_in_one_line_and_the_others_are_pooled(network, tmp_path, spoil, message):
    bad = _copy(network["packages"]["SE02"], tmp_path / "package-SE02")
    spoil(bad)
    con = _coordinator(network, f"bad-{tmp_path.name}")
    others = [network["packages"][s] for s in ("DK01", "NO03")]
    summary = pool_packages([others[0], bad, others[1]], con)
    assert summary.accepted == ["DK01", "NO03"]
    (reason,) = [r for _, r in summary.refused]
    assert "\n" not in reason
    import re
    assert re.search(message, reason), reason
    status = con.execute("SELECT site_id, status FROM network.sites ORDER BY position").fetchall()
    assert status == [("DK01", "accepted"), ("SE02", "refused"), ("NO03", "accepted")]
    assert con.execute("SELECT count(*) FROM network.pooled_rates WHERE sites LIKE '%SE02%'").fetchall()[0][0] == 0


def test_a_second_package_of_a_site_is_refused(network):
    con = _coordinator(network, "twice")
    folders = list(network["packages"].values())
    summary = pool_packages(folders + folders[:1], con)
    assert len(summary.accepted) == 3 and "second package of the site" in summary.refused[0][1]


def test_p3_over_the_site_warehouses_equals_the_pooled_warehouses_site_stratified_model(network):
    connections = {s: duckdb.connect(str(db), read_only=True) for s, db in network["sites"].items()}
    answers = {s: local_site(c) for s, c in connections.items()}
    fit = distributed_cox(lambda site, request: answers[site](request), sorted(answers), "first_serious")
    central = network["pooled"].sql(
        "SELECT variable, level, coef, se, ci_lower, ci_upper FROM results.cox WHERE variant = 'main' AND outcome = "
        "'first_serious' AND model = 'multivariable_site_stratified' AND coef IS NOT NULL").pl()
    assert len(central) == len(fit.names)
    for r in central.iter_rows(named=True):
        i = fit.names.index(f"{r['variable']}[{r['level']}]")
        assert fit.coef[i] == pytest.approx(r["coef"], abs=1e-8) and fit.se[i] == pytest.approx(r["se"], abs=1e-8)
    con = _coordinator(network, "p3")
    summary = record_distributed_cox(con, {"first_serious": fit}, fit.sites)
    rows = con.execute("SELECT count(*), min(rounds) FROM network.pooled_hr WHERE method = 'distributed' AND "
                       "model = 'multivariable_site_stratified' AND pool_id = ?", [summary.pool_id]).fetchall()
    assert rows == [(len(fit.names), fit.rounds)]
    # as the pooled warehouse's report would: a level (or reference) with 1-4 patients or events is hidden
    hidden = {(v, lv) for v, lv in con.execute("SELECT variable, level FROM network.pooled_hr WHERE pool_id = ? AND "
                                               "hr IS NULL AND note LIKE 'hidden:%'", [summary.pool_id]).fetchall()}
    small = {(v, lv) for v, lv in network["pooled"].execute(
        "SELECT variable, level FROM results.cox WHERE variant = 'main' AND outcome = 'first_serious' AND model = "
        "'multivariable_site_stratified' AND coef IS NOT NULL AND (least(level_patients, level_events, "
        "reference_patients, reference_events) BETWEEN 1 AND 4)").fetchall()}
    assert small <= hidden and hidden  # every small level hidden; the synthetic study has some
