"""vigil.ingest.validation: the contract's rules as GX expectations, reconciled with the SQL rules.

Validation frames are built the way the ingest builds them: raw text rows into DuckDB, typed
with vigil.ingest.rules.typed_expression, handed over as Arrow (`con.sql(sql).to_arrow_table()`); the SQL
side counts violations with vigil.ingest.rules.violation_sql over the same frame.
"""

from __future__ import annotations

import json
import random
import socket
from datetime import date

import duckdb
import pytest

from vigil.ingest import validation as gv
from vigil.contract import load_contract
from vigil.ingest.rules import frame_columns, typed_expression, violation_sql

pytestmark = pytest.mark.gx

CONTRACT = load_contract()
DATA_CUT = date(2026, 6, 30)
LABEL = "DK01_2026-06-30"


# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module", autouse=True)
def network_attempts():
    """For the whole module (module fixtures included): every attempt to open an internet
    connection is recorded and refused."""
    attempts: list = []
    real_connect = socket.socket.connect

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network access attempted in a test: {address}")
        return real_connect(self, address, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield attempts


@pytest.fixture(autouse=True)
def no_network(network_attempts):
    yield
    assert network_attempts == [], f"something tried to reach the network: {network_attempts}"


def _context_type(column: str) -> str:
    src = CONTRACT.context[column]
    return CONTRACT.tables[src["from"]].column(src["column"]).type


def build_frame(table_name: str, rows: list[dict], data_cut: date = DATA_CUT, pandas: bool = False):
    """(validation frame as the ingest hands it to GX, {rule_id: SQL violation count}).

    rows: one dict per delivered row, column -> text or None, spec and context columns. pandas:
    the frame as a pandas DataFrame (DuckDB's dtypes) instead of Arrow."""
    contract, table = CONTRACT, CONTRACT.tables[table_name]
    context_columns = table.context_columns
    text_columns = table.column_names + context_columns
    con = duckdb.connect()
    con.execute("CREATE TABLE raw (_row BIGINT, " + ", ".join(f"{c} VARCHAR" for c in text_columns) + ")")
    con.executemany(f"INSERT INTO raw VALUES ({', '.join(['?'] * (len(text_columns) + 1))})",
                    [[i] + [row.get(c) for c in text_columns] for i, row in enumerate(rows, start=1)])
    select = ["_row", *frame_columns(contract, table)]
    for c in context_columns:
        select.append(f"{typed_expression(contract, _context_type(c), c)} AS {c}")
    con.execute(f"CREATE TABLE frame AS SELECT {', '.join(select)} FROM raw")
    result = con.sql("SELECT * FROM frame ORDER BY _row")
    frame = result.df() if pandas else result.to_arrow_table()
    rules = table.rules
    flags = ", ".join(f"{violation_sql(contract, r, data_cut, 'frame')} AS v{i}" for i, r in enumerate(rules))
    counts = ", ".join(f"count(*) FILTER (WHERE v{i})" for i in range(len(rules)))
    sql_counts = con.execute(f"SELECT {counts} FROM (SELECT {flags} FROM frame)").fetchone()
    return frame, {r.rule_id: int(n) for r, n in zip(rules, sql_counts)}


# Adversarial raw values per column: valid ones, invalid ones, edge cases of each rule, NULLs.
POOLS = {
    "str": [None, "", "x", " F", "F\n"],
    "int": [None, "", "0", "1", "3", "5", "6", "-1", "+3", "007", "1899", "1900", "1950", "2016", "2017",
            "2026", "2027", "9999999", "10000000", "99999999", "100000000", "1.0", " 5", "abc",
            "99999999999999999999"],
    "dec": [None, "0", "0.0", "-0", ".5", "5.", "0.5", "1.5", "9.5", "10", "12", "60", "60.0", "60.01",
            "1e3", "nan", "inf", "abc", "9" * 400],
    "date": [None, "1950-05-05", "2019-12-31", "2020-01-01", "2026-06-30", "2026-07-01", "2026-02-30",
             "2026-6-1", "0001-01-01", "9999-12-31", "x"],
    "flag": [None, "Y", "Y", "N", "N", "y", "YES", ""],
}
PATIENT_IDS = ["DK01-0000AAAA", "DK01-0000AAAB", "DK01-0000AAAC", "DK01-0000aaaa", "DK01-0000AAAA\n", "X", None]
COLUMN_POOLS = {
    "patient_id": PATIENT_IDS,
    "patient__patient_id": ["DK01-0000AAAA", None],
    "follow_up__patient_id": ["DK01-0000AAAA", None],
    "icd10_code": [None, "E11.9", "E119", "E11", "G35", "e11", "E11.", "E11.12345", "E11\n", ""],
    "seriousness_criteria": [None, None, "death", "hospitalisation|death", "life_threatening|disability",
                             "death|", "Death", "hospitalisation", "", "death\n"],
    "event_id": [None] + [f"EV{i:03d}" for i in range(150)],
    "meddra_pt": [None, "Pneumonia", "Cytomegalovirus infection"],
    "pathogen": [None, "CMV"],
}


def _pool(table_name: str, column: str) -> list:
    if column in COLUMN_POOLS:
        return COLUMN_POOLS[column]
    if column in CONTRACT.context:
        return POOLS[_context_type(column)]
    col = CONTRACT.tables[table_name].column(column)
    if col.type != "str":
        return POOLS[col.type]
    code_lists = [r.params["values"] for r in col.rules if r.kind == "in_set" and not r.when]
    return POOLS["str"] + [str(v) for values in code_lists for v in values] * 2


def adversarial_rows(table_name: str, n: int, seed: int, exclude=()) -> list[dict]:
    rng = random.Random(f"{table_name}-{seed}")
    table = CONTRACT.tables[table_name]
    columns = table.column_names + table.context_columns
    pools = {c: [v for v in _pool(table_name, c) if v not in exclude] for c in columns}
    return [{c: rng.choice(pools[c]) for c in columns} for _ in range(n)]


CLEAN_ROWS = {
    "patients": [{"patient_id": "DK01-0000AAAA", "sex": "F", "birth_year": "1980", "ms_onset_year": "2001",
                  "ms_course": "RRMS", "follow_up__patient_id": "DK01-0000AAAA"},
                 {"patient_id": "DK01-0000AAAB", "sex": "M", "birth_year": "1975", "ms_onset_year": None,
                  "ms_course": "CIS", "follow_up__patient_id": "DK01-0000AAAB"}],
    "alemtuzumab_infusions": [
        {"patient_id": "DK01-0000AAAA", "infusion_date": f"2024-03-0{d}", "course_number": "1", "dose_mg": "12",
         "patient__patient_id": "DK01-0000AAAA", "patient__birth_year": "1980", "patient__death_date": None}
        for d in range(1, 6)],
    "dmt_history": [{"patient_id": "DK01-0000AAAA", "dmt_code": "NTZ", "start_date": "2018-01-01",
                     "stop_date": "2023-12-01", "patient__patient_id": "DK01-0000AAAA"},
                    {"patient_id": "DK01-0000AAAB", "dmt_code": "OTHER", "start_date": "2020-01-01",
                     "stop_date": None, "patient__patient_id": "DK01-0000AAAB"}],
    "comorbidities": [{"patient_id": "DK01-0000AAAA", "icd10_code": "E11.9", "diagnosis_date": None,
                       "patient__patient_id": "DK01-0000AAAA"}],
    "edss_assessments": [{"patient_id": "DK01-0000AAAA", "assessment_date": "2026-06-30", "edss": "0",
                          "patient__patient_id": "DK01-0000AAAA"},
                         {"patient_id": "DK01-0000AAAA", "assessment_date": "2025-06-30", "edss": "9.5",
                          "patient__patient_id": "DK01-0000AAAA"}],
    "infections": [{"patient_id": "DK01-0000AAAA", "event_id": "EV1", "onset_date": "2025-01-01",
                    "meddra_pt": "Pneumonia", "meddra_pt_code": "10035664", "serious": "Y",
                    "seriousness_criteria": "hospitalisation|death", "pathogen": None, "outcome": "fatal",
                    "patient__patient_id": "DK01-0000AAAA", "patient__death_date": "2025-02-01"},
                   {"patient_id": "DK01-0000AAAB", "event_id": "EV2", "onset_date": "2025-01-01",
                    "meddra_pt": "Nasopharyngitis", "meddra_pt_code": None, "serious": "N",
                    "seriousness_criteria": None, "pathogen": "rhinovirus", "outcome": "recovered",
                    "patient__patient_id": "DK01-0000AAAB", "patient__death_date": None}],
    "follow_up": [{"patient_id": "DK01-0000AAAA", "followup_end_date": "2025-02-01", "end_reason": "death",
                   "death_date": "2025-02-01", "patient__patient_id": "DK01-0000AAAA"},
                  {"patient_id": "DK01-0000AAAB", "followup_end_date": "2026-06-30", "end_reason": "data_cut",
                   "death_date": None, "patient__patient_id": "DK01-0000AAAB"}],
}


def frames_of(rows_by_table: dict[str, list[dict]]):
    built = {t: build_frame(t, rows) for t, rows in rows_by_table.items()}
    return {t: f for t, (f, _) in built.items()}, {t: c for t, (_, c) in built.items()}


# --------------------------------------------------------------------------------------------
# suites


def test_suite_has_one_expectation_per_rule_carrying_its_rule_id():
    for table_name, table in CONTRACT.tables.items():
        suite = gv.build_suite(CONTRACT, table_name, DATA_CUT, expected_rows=10)
        rule_ids = [e.meta["rule_id"] for e in suite.expectations if "rule_id" in (e.meta or {})]
        assert rule_ids == [r.rule_id for r in table.rules]
        assert suite.name == f"extract-v1.0.{table_name}"
        checks = {e.meta["check"]: e for e in suite.expectations if "check" in (e.meta or {})}
        assert checks["row_count"].value == 10
        assert set(checks["columns"].column_set) == set(table.column_names)


def test_suite_without_manifest_count_has_no_row_count_expectation():
    suite = gv.build_suite(CONTRACT, "patients", DATA_CUT, expected_rows=None)
    assert [e.meta["check"] for e in suite.expectations if "check" in e.meta] == ["columns"]


def test_date_bounds_come_from_the_data_cut():
    rule = next(r for r in CONTRACT.tables["follow_up"].rules if r.rule_id == "follow_up.followup_end_date.after_data_cut.1")
    expectation = gv.expectation_for(CONTRACT, rule, date(2027, 3, 31))
    assert expectation.max_value == date(2027, 3, 31)
    rule = next(r for r in CONTRACT.tables["patients"].rules if r.rule_id == "patients.birth_year.out_of_range.1")
    expectation = gv.expectation_for(CONTRACT, rule, date(2027, 3, 31))
    assert (expectation.min_value, expectation.max_value) == (1900, 2017)


# --------------------------------------------------------------------------------------------
# GX counts == SQL counts


@pytest.fixture(scope="module")
def adversarial_delivery(tmp_path_factory, network_attempts):
    """One delivery whose every table breaks every rule several times, NULLs mixed in, run twice:
    with values outside float64/ns ranges (GX's slow paths) and without (vectorised paths)."""
    gx_dir = tmp_path_factory.mktemp("gx")
    runs = []
    for seed, exclude in ((1, ()), (2, ("0001-01-01", "9999-12-31", "99999999999999999999"))):
        frames, sql_counts = frames_of({t: adversarial_rows(t, 300, seed, exclude) for t in CONTRACT.tables})
        validation = gv.validate_delivery(gx_dir, f"{LABEL}-{seed}", frames, DATA_CUT,
                                          {t: len(f) for t, f in frames.items()})
        runs.append((validation, sql_counts))
    return gx_dir, runs


def test_gx_unexpected_counts_equal_sql_violation_counts_for_every_rule(adversarial_delivery):
    _, runs = adversarial_delivery
    for validation, sql_counts in runs:
        for table_name in CONTRACT.tables:
            assert validation.tables[table_name].unexpected_counts == sql_counts[table_name], table_name


def test_adversarial_frames_break_every_rule_several_times(adversarial_delivery):
    _, runs = adversarial_delivery
    for _, sql_counts in runs:
        for table_name, counts in sql_counts.items():
            too_few = {rule_id: n for rule_id, n in counts.items() if n < 2}
            assert not too_few, f"{table_name}: rules the fixture does not break twice: {too_few}"


def test_broken_rules_fail_the_validation(adversarial_delivery):
    _, runs = adversarial_delivery
    validation, _ = runs[0]
    assert validation.success is False
    assert all(t.success is False for t in validation.tables.values())
    assert all(t.table_checks == {"columns": True, "row_count": True} for t in validation.tables.values())


def test_validation_results_are_json_and_name_their_rules(adversarial_delivery):
    _, runs = adversarial_delivery
    table = runs[0][0].tables["infections"]
    stored = json.loads(json.dumps(table.result, allow_nan=False))
    by_rule = {r["expectation_config"]["meta"].get("rule_id"): r for r in stored["results"]}
    rule_id = "infections.event_id.duplicate_key"
    assert by_rule[rule_id]["result"]["unexpected_count"] == table.unexpected_counts[rule_id]
    assert len(by_rule[rule_id]["result"]["partial_unexpected_list"]) <= gv.PARTIAL_UNEXPECTED_COUNT


def test_data_docs_site_is_built_in_gx_dir(adversarial_delivery):
    gx_dir, runs = adversarial_delivery
    index = runs[-1][0].data_docs_index
    assert index.name == "index.html" and index.is_file()
    assert gx_dir in index.parents
    html = index.read_text(encoding="utf-8")
    assert f"{LABEL}-1" in html and f"{LABEL}-2" in html  # both deliveries listed


def test_clean_delivery_passes(shared_gx_dir):
    frames, sql_counts = frames_of(CLEAN_ROWS)
    validation = gv.validate_delivery(shared_gx_dir, LABEL, frames, DATA_CUT,
                                      {t: len(rows) for t, rows in CLEAN_ROWS.items()})
    assert validation.success is True
    for table_name, table in validation.tables.items():
        assert table.success is True, table_name
        assert set(table.unexpected_counts.values()) == {0}, table_name
        assert table.unexpected_counts == sql_counts[table_name]
    assert validation.data_docs_index.is_file()


def test_a_reused_gx_dir_validates_each_delivery_against_its_own_data_cut(tmp_path):
    earlier_cut = date(2025, 12, 31)
    for cut, label in ((DATA_CUT, "DK01_2026-06-30"), (earlier_cut, "DK01_2025-12-31")):
        frame, sql_counts = build_frame("follow_up", CLEAN_ROWS["follow_up"], cut)
        validation = gv.validate_delivery(tmp_path / "gx", label, {"follow_up": frame}, cut, {"follow_up": 2})
        assert validation.tables["follow_up"].unexpected_counts == sql_counts
    assert sql_counts["follow_up.followup_end_date.after_data_cut.1"] == 1  # 2026-06-30 > 2025-12-31
    assert validation.success is False


def test_row_count_other_than_the_manifest_fails(shared_gx_dir):
    frames, _ = frames_of({"patients": CLEAN_ROWS["patients"]})
    validation = gv.validate_delivery(shared_gx_dir, LABEL, frames, DATA_CUT, {"patients": 3})
    table = validation.tables["patients"]
    assert table.success is False
    assert table.table_checks == {"columns": True, "row_count": False}
    assert set(table.unexpected_counts.values()) == {0}


# --------------------------------------------------------------------------------------------
# the semantics that GX's defaults would get wrong


def _one_table_counts(gx_dir, table_name, rows):
    frames, sql_counts = frames_of({table_name: rows})
    validation = gv.validate_delivery(gx_dir, LABEL, frames, DATA_CUT, {})
    return validation.tables[table_name].unexpected_counts, sql_counts[table_name]


def test_pattern_is_a_full_match_so_a_trailing_newline_breaks_it(shared_gx_dir):
    good = dict(CLEAN_ROWS["patients"][0])
    rows = [good, {**good, "patient_id": "DK01-0000AAAA\n"}, {**good, "patient_id": "xDK01-0000AAAA"}]
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "patients", rows)
    assert gx_counts["patients.patient_id.bad_format.1"] == sql_counts["patients.patient_id.bad_format.1"] == 2


def test_when_condition_restricts_a_rule_to_its_rows(shared_gx_dir):
    base = CLEAN_ROWS["follow_up"][1]
    rows = [{**base, "end_reason": "death", "death_date": None},           # death without date
            {**base, "end_reason": "death", "death_date": "2026-01-01"},   # date != end of follow-up
            {**base, "end_reason": "withdrawal", "death_date": None},      # not a death: no rule
            {**base, "end_reason": "other", "death_date": "2026-01-01"}]   # not a death: no rule
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "follow_up", rows)
    assert gx_counts["follow_up.death_date.death_inconsistent.2"] == 1
    assert gx_counts["follow_up.death_date.death_inconsistent.3"] == 1
    assert gx_counts == sql_counts


def test_every_copy_of_a_duplicate_key_counts_and_missing_keys_do_not(shared_gx_dir):
    base = CLEAN_ROWS["alemtuzumab_infusions"][0]
    rows = [base, base, base,
            {**base, "infusion_date": "2024-03-02"},
            {**base, "infusion_date": None}, {**base, "infusion_date": None},
            {**base, "infusion_date": "2024-13-01"}, {**base, "infusion_date": "2024-13-01"}]
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "alemtuzumab_infusions", rows)
    assert gx_counts["alemtuzumab_infusions.patient_id+infusion_date.duplicate_key"] == 3
    assert gx_counts == sql_counts


def test_bounds_are_inclusive_except_a_strict_minimum(shared_gx_dir):
    base = CLEAN_ROWS["alemtuzumab_infusions"][0]
    rows = [{**base, "infusion_date": "2026-06-30", "dose_mg": "60"},   # on the data cut, on the max
            {**base, "infusion_date": "2026-07-01", "dose_mg": "0"},    # a day after, on a strict min
            {**base, "infusion_date": "2024-01-01", "dose_mg": "-0"}]
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "alemtuzumab_infusions", rows)
    assert gx_counts["alemtuzumab_infusions.infusion_date.after_data_cut.1"] == 1
    assert gx_counts["alemtuzumab_infusions.dose_mg.out_of_range.1"] == 2
    assert gx_counts == sql_counts


def test_extreme_values_count_like_the_sql(shared_gx_dir):
    rows = [{"birth_year": "99999999999999999"}, {"birth_year": None}, {"birth_year": "1980"}]
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "patients", rows)
    assert gx_counts == sql_counts
    rows = [{"death_date": "2020-01-01"}, {"death_date": "9999-12-31"}, {"death_date": "0001-01-01"}]
    gx_counts, sql_counts = _one_table_counts(shared_gx_dir, "follow_up", rows)
    assert gx_counts["follow_up.death_date.after_data_cut.1"] == 1
    assert gx_counts == sql_counts


def test_the_workspace_is_empty_after_a_validation(shared_gx_dir):
    from vigil.ingest import gx_workspace

    frames, _ = frames_of({"patients": CLEAN_ROWS["patients"]})
    gv.validate_delivery(shared_gx_dir, LABEL, frames, DATA_CUT, {"patients": 2})
    with gx_workspace.own().cursor() as workspace:
        assert workspace.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]


def test_pandas_and_arrow_frames_get_the_same_counts(shared_gx_dir):
    rows = {t: adversarial_rows(t, 100, 3) for t in ("patients", "infections")}
    for pandas in (False, True):
        built = {t: build_frame(t, r, pandas=pandas) for t, r in rows.items()}
        validation = gv.validate_delivery(shared_gx_dir, f"{LABEL}-{pandas}", {t: f for t, (f, _) in built.items()},
                                          DATA_CUT, {})
        for table_name, (_, sql_counts) in built.items():
            assert validation.tables[table_name].unexpected_counts == sql_counts, (pandas, table_name)


def test_the_context_is_opened_once_per_gx_dir_and_again_if_the_dir_went(tmp_path):
    import shutil

    frames, _ = frames_of({"patients": CLEAN_ROWS["patients"]})
    gx_dir = tmp_path / "gx"
    gv.validate_delivery(gx_dir, f"{LABEL}-1", frames, DATA_CUT, {"patients": 2})
    assert gv._context(gx_dir) is gv._context(tmp_path / "." / "gx")
    shutil.rmtree(gx_dir)
    validation = gv.validate_delivery(gx_dir, f"{LABEL}-2", frames, DATA_CUT, {"patients": 2})
    assert validation.success and validation.data_docs_index.is_file()


def test_importing_the_module_does_not_import_gx():
    import subprocess
    import sys

    code = "import sys, vigil.ingest.validation; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_data_docs_carry_no_context_id(tmp_path):
    from vigil.ingest.validation import _strip_context_id

    page = tmp_path / "index.html"
    page.write_text('<img src="https://x/logo-long.png?d=20261125T1&dataContextId=de47ec67-8787-4387">')
    _strip_context_id(tmp_path)
    assert page.read_text() == '<img src="https://x/logo-long.png">'


def test_the_workspace_reflects_frame_columns_as_duckdb_engine_does(tmp_path):
    # The workspace dialect answers GX's column reflection from DuckDB's own catalog; it must give
    # what duckdb_engine's reflection through the PostgreSQL catalog gives, type by type.
    import duckdb_engine
    import sqlalchemy as sa

    from vigil.ingest import gx_workspace

    gx_workspace.register_dialect()
    frame, _ = build_frame("infections", [{"patient_id": "DK01-0000AAAA", "onset_date": "2026-01-02"}])
    gx_workspace.own().connection.register("incoming", frame)
    gx_workspace.own().connection.execute("CREATE TABLE frame_reflected AS SELECT *, true AS flag, "
                                          "1.5::DOUBLE AS dose, 7::INTEGER AS small FROM incoming")
    gx_workspace.read_from(gx_workspace.own())
    try:
        engine = sa.create_engine(gx_workspace.URL)
        with engine.connect() as connection:
            ours = engine.dialect.get_columns(connection, "frame_reflected")
            theirs = duckdb_engine.Dialect.get_columns(engine.dialect, connection, "frame_reflected")
    finally:
        gx_workspace.own().connection.execute("DROP TABLE frame_reflected")
    assert [(c["name"], repr(c["type"]), c["nullable"]) for c in ours] == \
        [(c["name"], repr(c["type"]), c["nullable"]) for c in theirs]
    assert {repr(c["type"]) for c in ours} == {"BigInteger()", "String()", "DATE()", "FLOAT()", "BOOLEAN()",
                                               "Integer()"}
