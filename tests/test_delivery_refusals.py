"""Every whole-delivery refusal of extract-spec section 3, on tiny hand-made deliveries."""

import json

import pytest
from helpers import P1, SITE, rehash, valid_rows, write_delivery


def refused(outcome, *fragments):
    assert outcome.status == "refused", outcome
    for fragment in fragments:
        assert fragment in outcome.message, outcome.message
    return outcome


def test_valid_delivery_is_accepted(tmp_path, ingest_folder):
    assert ingest_folder(write_delivery(tmp_path / "in")).status == "accepted"


def test_missing_manifest_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    (folder / "manifest.json").unlink()
    refused(ingest_folder(folder), "manifest.json", "missing manifest")


def test_manifest_that_is_not_json_is_refused_with_line(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    (folder / "manifest.json").write_text('{"study_id": "ALZ-PASS-INF",\n "files": }')
    refused(ingest_folder(folder), "manifest.json", "line 2", "not valid JSON")


def test_missing_table_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    (folder / "edss_assessments.csv").unlink()
    refused(ingest_folder(folder), "edss_assessments.csv", "missing")


def test_manifest_for_another_study_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in", manifest_edit=lambda m: m.update(study_id="OTHER-STUDY"))
    refused(ingest_folder(folder), "manifest.json", "OTHER-STUDY")


def test_checksum_mismatch_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    with (folder / "patients.csv").open("a") as handle:
        handle.write(f"{SITE}-00000000000000FF,F,1970,,RRMS\n")
    refused(ingest_folder(folder), "patients.csv", "sha256 mismatch")


def test_row_count_mismatch_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in", manifest_edit=lambda m: m["files"]["infections.csv"].update(rows=5))
    refused(ingest_folder(folder), "infections.csv", "row count mismatch", "manifest says 5, file has 1")


@pytest.mark.parametrize("old, new, message", [
    ("birth_year", "birthyear", "missing column 'birth_year' (found 'birthyear')"),
    (",ms_course", "", "missing column 'ms_course'"),
])
def test_missing_or_misspelled_column_is_refused(tmp_path, ingest_folder, old, new, message):
    folder = write_delivery(tmp_path / "in")
    path = folder / "patients.csv"
    header, *rest = path.read_text().splitlines()
    path.write_text("\n".join([header.replace(old, new)] + rest) + "\n")
    rehash(folder)
    refused(ingest_folder(folder), "patients.csv", "line 1", message)


def test_column_not_in_spec_is_refused(tmp_path, ingest_folder):
    """A direct identifier (a full name) must never enter the warehouse."""
    folder = write_delivery(tmp_path / "in")
    path = folder / "patients.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",full_name"] + [ln + ",Jane Doe" for ln in lines[1:]]) + "\n")
    rehash(folder)
    refused(ingest_folder(folder), "patients.csv", "'full_name' is not in the spec")


def test_ragged_row_is_refused_naming_the_line(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in")
    with (folder / "follow_up.csv").open("a") as handle:
        handle.write(f"{P1},2026-01-01\n")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["follow_up.csv"]["rows"] += 1
    path.write_text(json.dumps(manifest))
    rehash(folder)
    refused(ingest_folder(folder), "follow_up.csv", "line 4", "cannot be parsed")


def test_patient_id_of_another_site_is_refused(tmp_path, ingest_folder):
    rows = valid_rows()
    rows["infections"][0]["patient_id"] = "SE02-00000000000000A1"
    refused(ingest_folder(write_delivery(tmp_path / "in", rows)), "infections.csv", "line 2", "another site")


def test_duplicate_patient_id_is_refused(tmp_path, ingest_folder):
    rows = valid_rows()
    rows["patients"].append(dict(rows["patients"][0]))
    refused(ingest_folder(write_delivery(tmp_path / "in", rows)), "patients.csv", "duplicate patient_id")


def test_folder_name_must_match_manifest(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in", manifest_edit=lambda m: m.update(site_id="NO03"))
    refused(ingest_folder(folder), "does not match the manifest")


def test_future_data_cut_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in", cut="2999-12-31")
    refused(ingest_folder(folder), "in the future")


def test_refusal_is_recorded_and_leaves_the_earlier_load(tmp_path, ingest_folder, warehouse_con):
    assert ingest_folder(write_delivery(tmp_path / "a")).status == "accepted"
    before = warehouse_con.execute("SELECT count(*) FROM staging.patients").fetchone()[0]
    bad = write_delivery(tmp_path / "b", created_at="2026-08-01T00:00:00Z",
                         manifest_edit=lambda m: m["files"]["patients.csv"].update(sha256="0" * 64))
    refused(ingest_folder(bad), "sha256 mismatch")
    assert warehouse_con.execute("SELECT count(*) FROM staging.patients").fetchone()[0] == before
    statuses = warehouse_con.execute("SELECT status FROM audit.deliveries ORDER BY delivery_id").fetchall()
    assert statuses == [("accepted",), ("refused",)]
