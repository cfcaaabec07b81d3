"""Issue 16, parts 5 and 6: one test (or a few) per defect found in review.

  demo --out     replaces only a folder that an earlier `vigil demo` made (marker file .vigil-demo)
  stderr at exit a late error after Great Expectations was used is still printed
  receipts       a refused delivery whose manifest was read keeps site, data cut and manifest hash
  Cox            an aliased column is dropped with a note (R coxph: NA), the others are kept
  dependencies   great-tables, never imported, is not declared
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from helpers import CUT, SITE, write_delivery
from typer.testing import CliRunner

from vigil import cli
from vigil.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# ------------------------------------------------------------------------------------ demo --out

def test_demo_refuses_to_replace_a_folder_that_is_not_a_demo_study(tmp_path):
    precious = tmp_path / "checkout"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work", encoding="utf-8")
    result = runner.invoke(app, ["demo", "--out", str(precious)])
    assert result.exit_code == 2, result.output
    assert (precious / "thesis.tex").read_text(encoding="utf-8") == "years of work"
    assert "not a demo study" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_demo_refuses_a_file_and_a_symlinked_folder(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep", encoding="utf-8")
    assert runner.invoke(app, ["demo", "--out", str(a_file)]).exit_code == 2
    assert a_file.read_text(encoding="utf-8") == "keep"
    target = tmp_path / "target"
    target.mkdir()
    (target / cli.DEMO_MARKER).write_text("", encoding="utf-8")
    (target / "x").write_text("keep", encoding="utf-8")
    (tmp_path / "link").symlink_to(target)
    assert runner.invoke(app, ["demo", "--out", str(tmp_path / "link")]).exit_code == 2
    assert (target / "x").exists()


def test_demo_replaces_an_earlier_demo_study_and_uses_a_new_or_empty_folder(tmp_path, monkeypatch):
    calls = []

    def fake_series(out, cuts, **kwargs):
        calls.append(out)
        out.mkdir(parents=True)
        return SimpleNamespace(deliveries={cut: [] for cut in cuts})

    monkeypatch.setattr("vigil.synth.synthesize_series", fake_series)
    for step in ("ingest", "analyse", "run"):
        monkeypatch.setattr(cli, step, lambda *a, **k: None)
    monkeypatch.setattr("vigil.report.render.current_report", lambda folder: folder)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / cli.DEMO_MARKER).write_text("", encoding="utf-8")
    (earlier / "old-file").write_text("stale", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (earlier, empty, tmp_path / "new"):
        result = runner.invoke(app, ["demo", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (out / cli.DEMO_MARKER).is_file() and not (out / "old-file").exists()
    assert calls == [earlier / "landing", empty / "landing", tmp_path / "new" / "landing"]


# ------------------------------------------------------------------------------------ stderr at exit

LATE_ERROR = """
import atexit, sys
# Registered before GX is imported, so it runs after every handler GX's use registers.
atexit.register(lambda: sys.stderr.write("late error: the last checkpoint failed\\n"))
sys.path.insert(0, {tests!r})
from pathlib import Path
from helpers import write_delivery
from vigil import warehouse
from vigil.ingest.load import ingest_delivery
root = Path({root!r})
db = root / "wh" / "vigil.duckdb"
con = warehouse.connect(db)
warehouse.create_layout(con)
print(ingest_delivery(con, write_delivery(root / "in"), warehouse.gx_dir_for(db)).status)
con.close()
"""


@pytest.mark.slow
@pytest.mark.gx
def test_a_late_error_at_exit_after_gx_was_used_is_still_printed(tmp_path):
    script = LATE_ERROR.format(tests=str(ROOT / "tests"), root=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "accepted"
    assert "late error: the last checkpoint failed" in result.stderr


# ------------------------------------------------------------------------------------ receipts of refusals

def _receipt(con, delivery_id):
    return con.execute("SELECT status, site_id, data_cut, created_at, manifest_sha256, reason "
                       "FROM audit.delivery_receipts WHERE delivery_id = ?", [delivery_id]).fetchone()


@pytest.mark.gx
def test_a_delivery_refused_for_a_checksum_mismatch_keeps_site_cut_and_manifest_hash(
        tmp_path, warehouse_con, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    with (folder / "patients.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{SITE}-00000000000000C3,F,1990,2010,RRMS\n")  # after the manifest was written
    outcome = ingest_folder(folder)
    assert outcome.status == "refused" and "sha256 mismatch" in outcome.message
    status, site, cut, created, manifest_sha, reason = _receipt(warehouse_con, outcome.delivery_id)
    assert status == "refused" and "sha256 mismatch" in reason
    assert (site, cut.isoformat()) == (SITE, CUT)
    assert created is not None
    assert manifest_sha == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert (outcome.site_id, outcome.data_cut.isoformat()) == (SITE, CUT)


def test_a_refused_manifest_keeps_what_it_could_read(tmp_path, warehouse_con, ingest_folder):
    # Another study: refused at the first manifest check, yet the manifest was read.
    folder = write_delivery(tmp_path / "in", manifest_edit=lambda m: m.update(study_id="OTHER"))
    outcome = ingest_folder(folder)
    status, site, cut, _, manifest_sha, _ = _receipt(warehouse_con, outcome.delivery_id)
    assert (status, site, cut.isoformat()) == ("refused", SITE, CUT)
    assert manifest_sha == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    # A data cut that is not a date: the site and hash are kept, the cut stays NULL.
    other = write_delivery(tmp_path / "in2", manifest_edit=lambda m: m.update(data_cut="30/06/2026"))
    outcome = ingest_folder(other)
    status, site, cut, _, manifest_sha, _ = _receipt(warehouse_con, outcome.delivery_id)
    assert (status, site, cut, manifest_sha is not None) == ("refused", SITE, None, True)


def test_an_unreadable_manifest_leaves_site_cut_and_hash_null(tmp_path, warehouse_con, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    outcome = ingest_folder(folder)
    assert _receipt(warehouse_con, outcome.delivery_id)[:5] == ("refused", None, None, None, None)


# ------------------------------------------------------------------------------------ Cox: aliased column

def _cox_counts(seed: int = 3, n: int = 400) -> pl.DataFrame:
    """Patients with a, c in {0, 1} and b = a (b's level coincides with a's in every patient)."""
    rng = np.random.default_rng(seed)
    a, c = rng.integers(0, 2, n), rng.integers(0, 2, n)
    event_t = np.ceil(rng.exponential(200 / np.exp(0.6 * a - 0.4 * c)))
    censor_t = np.ceil(rng.uniform(20, 400, n))
    t, event = np.minimum(event_t, censor_t).astype(int), (event_t <= censor_t).astype(int)
    frame = pl.DataFrame({"t": t, "a": np.where(a, "a1", "a0"), "b": np.where(a, "b1", "b0"),
                          "c": np.where(c, "c1", "c0"), "event": event})
    return frame.group_by("t", "a", "b", "c").agg(n_events=pl.col("event").sum(), n_leaving=pl.len()).sort(
        "t", "a", "b", "c")


def test_cox_fit_drops_an_aliased_column_and_keeps_the_others():
    from vigil.stats.survival import CoxData, cox_fit

    counts = _cox_counts()
    patterns = counts.select("a", "b", "c").unique(maintain_order=True)
    index = counts.join(patterns.with_row_index("_p"), on=["a", "b", "c"], how="left",
                        maintain_order="left")["_p"].to_numpy().astype(np.int64)
    cols = {"a[a1]": patterns["a"] == "a1", "b[b1]": patterns["b"] == "b1", "c[c1]": patterns["c"] == "c1"}

    def data(names, terms):
        return CoxData(time=counts["t"].to_numpy(), pattern=index, n_events=counts["n_events"].to_numpy().astype(float),
                       n_leaving=counts["n_leaving"].to_numpy().astype(float),
                       X=np.column_stack([cols[n].to_numpy().astype(float) for n in names]), names=names, terms=terms)

    full = cox_fit(data(["a[a1]", "b[b1]", "c[c1]"], {"a": [0], "b": [1], "c": [2]}))
    reduced = cox_fit(data(["a[a1]", "c[c1]"], {"a": [0], "c": [1]}))
    assert full.names == ["a[a1]", "b[b1]", "c[c1]"]
    assert np.isnan(full.coef[1]) and np.isnan(full.se[1]) and np.isnan(full.hr[1]) and np.isnan(full.p_value[1])
    for field in ("coef", "se", "hr", "ci_lower", "ci_upper", "p_value"):
        np.testing.assert_allclose(getattr(full, field)[[0, 2]], getattr(reduced, field), rtol=1e-10)
    assert full.loglik == pytest.approx(reduced.loglik, rel=1e-12)
    assert "b[b1]" in full.note and "aliased" in full.note
    assert "b" not in full.zph  # a term with no column left has no PH test (as cox.zph)
    for term in ("a", "c", "GLOBAL"):
        np.testing.assert_allclose(full.zph[term], reduced.zph[term], rtol=1e-8)


def test_cox_model_reports_the_aliased_level_and_keeps_the_others():
    from vigil.analysis.cox import cox_model

    counts = _cox_counts()
    levels = {"a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0", "c1"]}
    full = {(r.variable, r.level): r for r in cox_model(counts, ["a", "b", "c"], levels).rows}
    reduced = {(r.variable, r.level): r for r in cox_model(counts.drop("b"), ["a", "c"], levels).rows}
    for key in [("a", "a1"), ("c", "c1")]:
        assert np.isfinite(full[key].coef), full[key].note
        for field in ("coef", "se", "hr", "ci_lower", "ci_upper", "p_value", "ph_chisq", "ph_p_value"):
            assert getattr(full[key], field) == pytest.approx(getattr(reduced[key], field), rel=1e-8), field
    aliased = full[("b", "b1")]
    assert np.isnan(aliased.coef) and "aliased" in aliased.note and "a[a1]" in aliased.note
    assert "aliased" in full[("GLOBAL", None)].note
    assert full[("GLOBAL", None)].ph_chisq == pytest.approx(reduced[("GLOBAL", None)].ph_chisq, rel=1e-8)


def test_cox_model_with_an_aliased_level_equals_r_coxph():
    # tests/reference/aliased_reference.R: coxph(Surv(t, status) ~ a + b + c, ties = "efron") with b = a:
    # NA for b; a and c, their PH tests and the global test as fitted.
    from vigil.analysis.cox import cox_model

    reference = ROOT / "tests" / "reference"
    patients = pl.read_csv(reference / "data" / "aliased.csv")
    counts = patients.group_by("t", "a", "b", "c").agg(n_events=pl.col("status").sum(), n_leaving=pl.len())
    levels = {"a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0", "c1"]}
    model = {(r.variable, r.level): r for r in cox_model(counts, ["a", "b", "c"], levels).rows}
    r_cox = {row["term"]: row for row in pl.read_csv(reference / "expected" / "aliased" / "cox.csv").iter_rows(named=True)}
    r_zph = {row["term"]: row for row in pl.read_csv(reference / "expected" / "aliased" / "zph.csv").iter_rows(named=True)}
    for variable, level in [("a", "a1"), ("c", "c1")]:
        row, r = model[variable, level], r_cox[f"{variable}{level}"]
        assert row.coef == pytest.approx(r["coef"], abs=1e-6)
        assert row.se == pytest.approx(r["se"], abs=1e-6)
        assert row.p_value == pytest.approx(r["p"], rel=1e-6)
        assert row.ph_chisq == pytest.approx(r_zph[variable]["chisq"], abs=1e-6)
    assert r_cox["bb1"]["coef"] is None and np.isnan(model["b", "b1"].coef)
    assert model["GLOBAL", None].ph_chisq == pytest.approx(r_zph["GLOBAL"]["chisq"], abs=1e-6)
    assert model["GLOBAL", None].ph_df == r_zph["GLOBAL"]["df"]


# ------------------------------------------------------------------------------------ dependencies

def test_great_tables_never_imported_is_neither_declared_nor_locked():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert not [d for d in declared if d.startswith("great-tables")]
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    assert 'name = "great-tables"' not in lock
