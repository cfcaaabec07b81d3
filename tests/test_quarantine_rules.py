"""Every row rule of extract-spec section 3: the bad row is quarantined with its reason, file and
line; the rest of the delivery loads; received = staging + quarantined."""

import pytest
from helpers import CUT, P1, P2, valid_rows, write_delivery

# A warehouse file and a load per test (validated by SQL, see the `validator` fixture): a second each.
pytestmark = pytest.mark.slow

P3 = "DK01-00000000000000C3"


@pytest.fixture(autouse=True)
def quarantine_any_share(monkeypatch):
    """These two-patient deliveries quarantine a large share of a table on purpose: the study's limit
    on that share (tested in test_delivery_integrity.py) is lifted here."""
    monkeypatch.setenv("VIGIL_MAX_QUARANTINE_SHARE", "1")


def _set(table, index, **values):
    def edit(rows):
        rows[table][index].update(values)
    return edit


def _add(table, **values):
    def edit(rows):
        rows[table].append(values)
    return edit


INFECTION = {"patient_id": P1, "event_id": "E9", "onset_date": "2021-01-01", "meddra_pt": "Cellulitis",
             "meddra_pt_code": "", "serious": "N", "seriousness_criteria": "", "pathogen": "",
             "outcome": "recovered"}

# (case id, edit, table, line of the bad row, reason, column)
CASES = [
    ("missing required value", _set("patients", 1, sex=""), "patients", 3, "missing_required", "sex"),
    ("sex outside code list", _set("patients", 0, sex="X"), "patients", 2, "not_in_code_list", "sex"),
    ("malformed patient_id", _add("comorbidities", patient_id="DK01-xyz", icd10_code="I50"),
     "comorbidities", 4, "orphan_patient", "patient_id"),
    ("unparseable birth year", _set("patients", 0, birth_year="19x0"), "patients", 2, "unparseable", "birth_year"),
    ("birth year too late for the cut", _set("patients", 0, birth_year="2020"), "patients", 2,
     "out_of_range", "birth_year"),
    ("onset year before birth", _set("patients", 0, ms_onset_year="1970"), "patients", 2,
     "out_of_range", "ms_onset_year"),
    ("ms course outside code list", _set("patients", 1, ms_course="RR"), "patients", 3,
     "not_in_code_list", "ms_course"),
    ("unparseable date", _set("alemtuzumab_infusions", 2, infusion_date="2020-02-30"),
     "alemtuzumab_infusions", 4, "unparseable", "infusion_date"),
    ("date not ISO", _set("alemtuzumab_infusions", 2, infusion_date="03/01/2020"),
     "alemtuzumab_infusions", 4, "unparseable", "infusion_date"),
    ("infusion after the data cut", _set("alemtuzumab_infusions", 9, infusion_date="2026-07-01"),
     "alemtuzumab_infusions", 11, "after_data_cut", "infusion_date"),
    ("infusion before birth year", _set("alemtuzumab_infusions", 0, infusion_date="1979-12-31"),
     "alemtuzumab_infusions", 2, "out_of_range", "infusion_date"),
    ("infusion after death", _set("alemtuzumab_infusions", 9, infusion_date="2022-02-03"),
     "alemtuzumab_infusions", 11, "after_death", "infusion_date"),
    ("course number out of range", _set("alemtuzumab_infusions", 1, course_number="6"),
     "alemtuzumab_infusions", 3, "out_of_range", "course_number"),
    ("zero dose", _set("alemtuzumab_infusions", 1, dose_mg="0"), "alemtuzumab_infusions", 3,
     "out_of_range", "dose_mg"),
    ("decimal comma", _set("alemtuzumab_infusions", 1, dose_mg="12,0"), "alemtuzumab_infusions", 3,
     "unparseable", "dose_mg"),
    ("duplicate infusion day", _add("alemtuzumab_infusions", patient_id=P1, infusion_date="2020-01-01",
                                    course_number="1", dose_mg="12"),
     "alemtuzumab_infusions", 12, "duplicate_key", "patient_id"),
    ("unknown dmt code", _set("dmt_history", 0, dmt_code="XYZ"), "dmt_history", 2, "not_in_code_list", "dmt_code"),
    ("stop before start", _set("dmt_history", 0, stop_date="2016-02-28"), "dmt_history", 2,
     "stop_before_start", "stop_date"),
    ("orphan patient", _add("dmt_history", patient_id="DK01-0000000000000999", dmt_code="GA",
                            start_date="2010-01-01", stop_date=""), "dmt_history", 3, "orphan_patient", "patient_id"),
    ("icd10 malformed", _set("comorbidities", 0, icd10_code="E11-9"), "comorbidities", 2, "bad_format", "icd10_code"),
    ("diagnosis after the cut", _set("comorbidities", 0, diagnosis_date="2027-01-01"), "comorbidities", 2,
     "after_data_cut", "diagnosis_date"),
    ("edss 0.5", _set("edss_assessments", 0, edss="0.5"), "edss_assessments", 2, "not_in_code_list", "edss"),
    ("edss over 10", _set("edss_assessments", 0, edss="10.5"), "edss_assessments", 2, "not_in_code_list", "edss"),
    ("serious without criteria", _set("infections", 0, seriousness_criteria=""), "infections", 2,
     "seriousness_mismatch", "seriousness_criteria"),
    ("non-serious with criteria", _add("infections", **(INFECTION | {"seriousness_criteria": "hospitalisation"})),
     "infections", 3, "seriousness_mismatch", "seriousness_criteria"),
    ("unknown criterion", _set("infections", 0, seriousness_criteria="hospitalisation|bad"), "infections", 2,
     "not_in_code_list", "seriousness_criteria"),
    ("serious flag not Y/N", _set("infections", 0, serious="yes"), "infections", 2, "unparseable", "serious"),
    ("fatal without death criterion", _set("infections", 0, outcome="fatal"), "infections", 2,
     "fatal_inconsistent", "seriousness_criteria"),
    ("fatal but not serious", _add("infections", **(INFECTION | {"outcome": "fatal"})), "infections", 3,
     "fatal_inconsistent", "serious"),
    ("meddra code not 8 digits", _set("infections", 0, meddra_pt_code="1003566"), "infections", 2,
     "bad_format", "meddra_pt_code"),
    ("infection after death", _add("infections", **(INFECTION | {"patient_id": P2, "onset_date": "2022-03-01"})),
     "infections", 3, "after_death", "onset_date"),
    ("duplicate event id", _add("infections", **(INFECTION | {"event_id": "E1"})), "infections", 2,
     "duplicate_key", "event_id"),
    ("end reason outside list", _set("follow_up", 0, end_reason="moved"), "follow_up", 2,
     "not_in_code_list", "end_reason"),
    ("death without death date", _set("follow_up", 1, death_date=""), "follow_up", 3,
     "death_inconsistent", "death_date"),
    ("death date not end date", _set("follow_up", 1, death_date="2022-02-01"), "follow_up", 3,
     "death_inconsistent", "death_date"),
    ("follow-up after the cut", _set("follow_up", 0, followup_end_date="2026-07-01"), "follow_up", 2,
     "after_data_cut", "followup_end_date"),
]


@pytest.mark.parametrize("edit, table, line, reason, column", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_row_is_quarantined_with_reason_file_and_line(tmp_path, ingest_folder, warehouse_con,
                                                          edit, table, line, reason, column):
    rows = valid_rows()
    edit(rows)
    outcome = ingest_folder(write_delivery(tmp_path / "in", rows))
    assert outcome.status == "accepted", outcome.message
    found = warehouse_con.execute(
        "SELECT source_file, reason, column_name FROM audit.quarantine WHERE table_name = ? AND line_number = ?",
        [table, line]).fetchall()
    assert found == [(f"{table}.csv", reason, column)]
    assert_received_equals_loaded_plus_quarantined(warehouse_con, rows)


def assert_received_equals_loaded_plus_quarantined(con, rows):
    for table, table_rows in rows.items():
        staged = con.execute(f"SELECT count(*) FROM staging.{table}").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM audit.quarantine WHERE table_name = ?", [table]).fetchone()[0]
        assert staged + quarantined == len(table_rows), table


def test_every_copy_of_a_duplicate_key_is_quarantined(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["infections"].append(INFECTION | {"event_id": "E1"})
    ingest_folder(write_delivery(tmp_path / "in", rows))
    lines = warehouse_con.execute("SELECT line_number FROM audit.quarantine WHERE reason = 'duplicate_key' "
                                  "ORDER BY 1").fetchall()
    assert lines == [(2,), (3,)]


def test_rows_of_a_quarantined_patient_are_quarantined_too(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["patients"][0]["sex"] = "X"
    ingest_folder(write_delivery(tmp_path / "in", rows))
    cascaded = dict(warehouse_con.execute(
        "SELECT table_name, count(*) FROM audit.quarantine WHERE reason = 'patient_quarantined' GROUP BY 1").fetchall())
    # P1 has 5 infusions, 1 DMT, 1 comorbidity, 1 EDSS, 1 infection and 1 follow-up row.
    assert cascaded == {"alemtuzumab_infusions": 5, "dmt_history": 1, "comorbidities": 1,
                        "edss_assessments": 1, "infections": 1, "follow_up": 1}
    for table in rows:
        assert warehouse_con.execute(f"SELECT count(*) FROM staging.{table} WHERE patient_id = ?",
                                     [P1]).fetchone()[0] == 0


def test_patient_without_valid_follow_up_is_quarantined(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["follow_up"][0]["end_reason"] = "moved"  # P1's only follow-up row is invalid
    rows["patients"].append({"patient_id": P3, "sex": "U", "birth_year": "1990", "ms_course": "CIS"})  # none at all
    ingest_folder(write_delivery(tmp_path / "in", rows))
    patients = warehouse_con.execute("SELECT line_number, reason FROM audit.quarantine "
                                     "WHERE table_name = 'patients' ORDER BY 1").fetchall()
    assert patients == [(2, "no_follow_up"), (4, "no_follow_up")]
    assert warehouse_con.execute("SELECT patient_id FROM staging.patients").fetchall() == [(P2,)]


def test_quarantine_keeps_every_rule_broken_and_the_raw_values(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["patients"][0].update(sex="X", birth_year="19x0")
    ingest_folder(write_delivery(tmp_path / "in", rows))
    rule_id, all_rules, raw = warehouse_con.execute(
        "SELECT rule_id, all_rules, raw_values::VARCHAR FROM audit.quarantine WHERE table_name = 'patients'").fetchone()
    assert rule_id == "patients.sex.not_in_code_list.1"
    assert all_rules == ["patients.sex.not_in_code_list.1", "patients.birth_year.unparseable"]
    assert '"birth_year":"19x0"' in raw and f'"patient_id":"{P1}"' in raw


def test_values_are_never_fixed_silently(tmp_path, ingest_folder, warehouse_con):
    """Leading spaces, lower-case codes and dotless ICD codes are kept or refused as delivered."""
    rows = valid_rows()
    rows["patients"][0]["sex"] = "f"
    rows["comorbidities"][0]["icd10_code"] = "E119"
    rows["alemtuzumab_infusions"][0]["dose_mg"] = " 12"
    ingest_folder(write_delivery(tmp_path / "in", rows))
    reasons = warehouse_con.execute("SELECT table_name, reason FROM audit.quarantine "
                                    "WHERE reason <> 'patient_quarantined' ORDER BY 1").fetchall()
    assert reasons == [("alemtuzumab_infusions", "unparseable"), ("patients", "not_in_code_list")]
    assert warehouse_con.execute("SELECT icd10_code FROM staging.comorbidities").fetchall() == [("I21",)]


def test_quoted_newline_gives_the_line_where_the_row_starts(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["infections"][0]["pathogen"] = "Strep\npneumoniae"
    rows["infections"].append(INFECTION | {"outcome": "cured"})
    ingest_folder(write_delivery(tmp_path / "in", rows))
    assert warehouse_con.execute("SELECT line_number, reason FROM audit.quarantine").fetchall() == [
        (4, "not_in_code_list")]
    assert warehouse_con.execute("SELECT pathogen FROM staging.infections").fetchall() == [("Strep\npneumoniae",)]


def test_staging_is_typed(tmp_path, ingest_folder, warehouse_con):
    ingest_folder(write_delivery(tmp_path / "in"))
    row = warehouse_con.execute("SELECT birth_year, data_cut FROM staging.patients ORDER BY patient_id").fetchone()
    assert row[0] == 1980 and str(row[1]) == CUT
    types = dict(warehouse_con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                       "WHERE table_schema = 'staging' AND table_name = 'edss_assessments'").fetchall())
    assert types["edss"] == "DOUBLE" and types["assessment_date"] == "DATE"
