"""Hostile input, round two (issue 15): what a delivery can slip past the checks by its types, its
timing, its folder or a file changed after it was hashed. Each refusal names the file (and column or
row where there is one) and leaves the warehouse as it was; what is loaded is what was hashed."""

import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import P1, ingest_in_child, rehash, valid_rows, write_delivery

from vigil import warehouse
from vigil.ingest.load import ingest_delivery

pytestmark = pytest.mark.faults


def stored(con) -> dict:
    """Every row of raw, staging and the quarantine."""
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                         "WHERE schema_name IN ('raw', 'staging') OR table_name = 'quarantine' ORDER BY ALL").fetchall()
    return {f"{s}.{t}": con.execute(f"SELECT * FROM {s}.{t} ORDER BY ALL").fetchall() for s, t in tables}


def edit_parquet(folder: Path, table: str, column: str, values: pa.Array) -> None:
    path = folder / f"{table}.parquet"
    data = pq.read_table(path)
    data = data.set_column(data.schema.get_field_index(column), column, values)
    pq.write_table(data, path)
    rehash(folder)


NOT_SCALAR = {
    "struct holding identifiers": pa.array([{"patient_name": "Jane Doe", "birth_date": "1980-01-01"}]),
    "list": pa.array([["CMV", "EBV"]]),
    "map": pa.array([[("name", "Jane Doe")]], type=pa.map_(pa.string(), pa.string())),
    "binary": pa.array([b"CMV"], type=pa.binary()),
}
WRONG_CLASS = {  # (table, column, values): scalar, but not of the column's type class
    "timestamp as a date": ("infections", "onset_date", pa.array([1583020800000], type=pa.timestamp("ms"))),
    "boolean as a flag": ("infections", "serious", pa.array([True])),
    "float in an int column": ("patients", "birth_year", pa.array([1980.5, 1975.0])),
    "integer in a str column": ("patients", "sex", pa.array([1, 2])),
}


@pytest.mark.parametrize("values", NOT_SCALAR.values(), ids=NOT_SCALAR.keys())
def test_a_parquet_column_of_a_non_scalar_type_is_refused_naming_file_and_column(tmp_path, warehouse_con,
                                                                                ingest_folder, values):
    before = stored(warehouse_con)
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    edit_parquet(folder, "infections", "pathogen", values)
    outcome = ingest_folder(folder)
    assert outcome.status == "refused"
    assert "infections.parquet, column pathogen:" in outcome.message and "the spec's str column" in outcome.message
    assert stored(warehouse_con) == before


@pytest.mark.parametrize("case", WRONG_CLASS.values(), ids=WRONG_CLASS.keys())
def test_a_parquet_column_of_another_type_class_is_refused(tmp_path, ingest_folder, case):
    table, column, values = case
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    edit_parquet(folder, table, column, values)
    outcome = ingest_folder(folder)
    assert outcome.status == "refused"
    assert f"{table}.parquet, column {column}: column '{column}' is Parquet type" in outcome.message


def test_typed_parquet_columns_of_the_contracts_classes_load(tmp_path, ingest_folder, warehouse_con):
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    edit_parquet(folder, "patients", "birth_year", pa.array([1980, 1975], type=pa.int16()))
    edit_parquet(folder, "patients", "ms_onset_year", pa.array([None, None], type=pa.null()))
    edit_parquet(folder, "patients", "sex", pa.array(["F", "M"]).dictionary_encode())
    edit_parquet(folder, "edss_assessments", "assessment_date", pa.array([date(2019, 12, 1)]))
    assert ingest_folder(folder).status == "accepted"
    assert warehouse_con.execute("SELECT birth_year, ms_onset_year, sex FROM raw.patients ORDER BY 1").fetchall() == [
        ("1975", None, "M"), ("1980", None, "F")]


def test_a_nul_character_in_a_parquet_string_is_refused_as_in_csv(tmp_path, ingest_folder, warehouse_con):
    before = stored(warehouse_con)
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    edit_parquet(folder, "infections", "pathogen", pa.array(["CMV\0Jane Doe"]))
    outcome = ingest_folder(folder)
    assert outcome.status == "refused"
    assert outcome.message.endswith("infections.parquet, row 1, column pathogen: holds a NUL character: "
                                    "binary data, not text")
    assert stored(warehouse_con) == before
    csv_folder = write_delivery(tmp_path / "csv", valid_rows() | {"infections": [
        valid_rows()["infections"][0] | {"pathogen": "CMV\0Jane Doe"}]})
    assert "NUL byte" in ingest_folder(csv_folder).message


def test_parquet_row_count_is_checked_in_the_metadata_before_any_data_is_read(tmp_path, ingest_folder, monkeypatch):
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    edss = pq.read_table(folder / "edss_assessments.parquet")
    pq.write_table(pa.concat_tables([edss] * 1000), folder / "edss_assessments.parquet")
    rehash(folder)

    def no_reading(*args, **kwargs):
        raise AssertionError("data read before the metadata check")

    monkeypatch.setattr("vigil.ingest.load.load_delivery", no_reading)
    outcome = ingest_folder(folder)
    assert outcome.status == "refused"
    assert outcome.message.endswith("edss_assessments.parquet: row count mismatch: manifest says 1, "
                                    "the file's metadata says 1000")


def test_a_tiny_parquet_file_claiming_millions_of_rows_is_refused_in_little_memory(tmp_path):
    folder = write_delivery(tmp_path / "in", fmt="parquet")
    # Written a million rows at a time: this test process must stay small, as the child's peak is
    # measured (and a process forked from a large one starts with its peak).
    chunk = pa.table({c: pa.repeat(pa.scalar(v, pa.string()), 1_000_000)
                      for c, v in valid_rows()["edss_assessments"][0].items()})
    with pq.ParquetWriter(folder / "edss_assessments.parquet", chunk.schema, compression="zstd") as writer:
        for _ in range(18):
            writer.write_table(chunk)
    rehash(folder)
    assert (folder / "edss_assessments.parquet").stat().st_size < 1_000_000
    status, message, peak_mb, _ = ingest_in_child(folder, tmp_path / "wh" / "vigil.duckdb")
    assert status == "refused" and message.endswith("the file's metadata says 18000000")
    print(f"peak {peak_mb} MB")
    assert peak_mb < 300, f"peak {peak_mb} MB"  # reading the rows took 1.3 GB


def test_what_is_loaded_is_what_was_hashed_when_a_file_is_swapped_after_the_hash(tmp_path, ingest_folder,
                                                                                warehouse_con, monkeypatch):
    import vigil.ingest.load

    folder = write_delivery(tmp_path / "in")
    swapped = write_delivery(tmp_path / "other", valid_rows() | {"patients": [
        dict(r, sex="U", birth_year="1950") for r in valid_rows()["patients"]]})
    real_inspect = vigil.ingest.load.inspect_delivery

    def inspect_then_swap(*args, **kwargs):
        delivery = real_inspect(*args, **kwargs)
        # Another process replaces the file (rename) and rewrites another in place, after the hash.
        os.replace(swapped / "patients.csv", folder / "patients.csv")
        (folder / "follow_up.csv").write_text("patient_id,followup_end_date,end_reason,death_date\n")
        return delivery

    monkeypatch.setattr(vigil.ingest.load, "inspect_delivery", inspect_then_swap)
    outcome = ingest_folder(folder)
    assert outcome.status == "accepted", outcome.message
    assert warehouse_con.execute("SELECT sex, birth_year FROM raw.patients ORDER BY 1").fetchall() == [
        ("F", "1980"), ("M", "1975")]
    assert warehouse_con.execute("SELECT count(*) FROM staging.follow_up").fetchone() == (2,)
    assert not list((tmp_path / "wh").glob(".incoming-*"))  # the private copies are gone


def test_a_created_at_in_the_future_is_refused(tmp_path, ingest_folder):
    folder = write_delivery(tmp_path / "in", created_at="2099-01-01T00:00:00Z")
    outcome = ingest_folder(folder)
    assert outcome.status == "refused"
    assert "manifest.json: created_at 2099-01-01T00:00:00+00:00 is in the future" in outcome.message


def test_a_created_at_in_the_future_would_otherwise_pin_the_site(tmp_path, warehouse_con, validator):
    # With --today set, created_at counts against the end of that day.
    def ingest(folder, today):
        return ingest_delivery(warehouse_con, folder, warehouse.gx_dir_for(tmp_path / "wh" / "vigil.duckdb"), today,
                               validator=validator)

    assert ingest(write_delivery(tmp_path / "a", created_at="2026-07-04T23:30:00Z"), date(2026, 7, 4)).status == "accepted"
    late = ingest(write_delivery(tmp_path / "b", created_at="2026-07-05T01:30:00Z"), date(2026, 7, 4))
    assert late.status == "refused" and "is in the future" in late.message


def test_a_created_at_before_the_data_cut_is_refused(tmp_path, ingest_folder):
    outcome = ingest_folder(write_delivery(tmp_path / "in", created_at="2026-06-29T23:00:00Z"))
    assert outcome.status == "refused"
    assert "created_at 2026-06-29T23:00:00+00:00 is before data_cut 2026-06-30" in outcome.message


def test_a_second_delivery_with_the_same_created_at_and_other_content_is_refused(tmp_path, ingest_folder,
                                                                                warehouse_con):
    first = ingest_folder(write_delivery(tmp_path / "a"))
    rows = valid_rows()
    rows["patients"][0]["sex"] = "M"
    second = ingest_folder(write_delivery(tmp_path / "b", rows))
    assert second.status == "refused"
    assert second.message.endswith(f"manifest.json: delivery {first.delivery_id} of site DK01, cut 2026-06-30 has "
                                   "the same created_at (2026-07-04T09:12:00+00:00) and other content: a correction "
                                   "needs a later created_at")
    assert warehouse_con.execute("SELECT sex FROM staging.patients WHERE patient_id = ?", [P1]).fetchone() == ("F",)
    assert ingest_folder(write_delivery(tmp_path / "c")).status == "already_loaded"


def test_a_delivery_losing_most_of_a_table_to_quarantine_is_refused_with_the_share(tmp_path, ingest_folder,
                                                                                   warehouse_con, monkeypatch):
    assert ingest_folder(write_delivery(tmp_path / "a")).status == "accepted"
    good = stored(warehouse_con)
    rows = valid_rows()
    for row in rows["alemtuzumab_infusions"][:6]:
        row["dose_mg"] = "1200"
    correction = write_delivery(tmp_path / "b", rows, created_at="2026-07-10T00:00:00Z")
    outcome = ingest_folder(correction)
    assert outcome.status == "refused"
    assert outcome.message.endswith("alemtuzumab_infusions.csv: 6 of 10 rows (60%) would be quarantined, more than "
                                    "the study accepts (50%, VIGIL_MAX_QUARANTINE_SHARE); nothing loaded")
    assert stored(warehouse_con) == good  # the site's good data stay current
    monkeypatch.setenv("VIGIL_MAX_QUARANTINE_SHARE", "0.75")
    assert ingest_folder(correction).status == "accepted"


def test_a_symlinked_delivery_folder_is_refused_and_recorded(tmp_path, warehouse_con, validator):
    from vigil.ingest.load import ingest_all

    real = write_delivery(tmp_path / "elsewhere")
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / real.name).symlink_to(real, target_is_directory=True)
    [outcome] = ingest_all(warehouse_con, [landing], warehouse.gx_dir_for(tmp_path / "wh" / "vigil.duckdb"),
                           validator=validator)
    assert outcome.status == "refused"
    assert outcome.message == f"{landing / real.name}: the delivery folder is a symlink: deliver the folder itself"
    assert warehouse_con.execute("SELECT status, folder FROM audit.delivery_receipts").fetchall() == [
        ("refused", str(landing / real.name))]
