"""Deliveries over time: reloads change nothing, corrections and new cuts replace a site's rows."""

from pathlib import Path

import pytest
from helpers import P1, valid_rows, write_delivery

# Several loads into a warehouse file per test (validated by SQL unless marked gx): seconds each.
pytestmark = pytest.mark.slow


def _snapshot(con):
    tables = ["audit.delivery_receipts", "audit.quarantine", "audit.delivery_tables", "staging.patients",
              "raw.patients", "staging.infections"]
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_loading_the_identical_delivery_again_changes_nothing(tmp_path, ingest_folder, warehouse_con):
    folder = write_delivery(tmp_path / "in")
    assert ingest_folder(folder).status == "accepted"
    before = _snapshot(warehouse_con)
    again = ingest_folder(folder)
    assert again.status == "already_loaded"
    assert _snapshot(warehouse_con) == before


def test_correction_for_the_same_cut_supersedes(tmp_path, ingest_folder, warehouse_con):
    first = ingest_folder(write_delivery(tmp_path / "a"))
    rows = valid_rows()
    rows["patients"][0]["sex"] = "U"
    second = ingest_folder(write_delivery(tmp_path / "b", rows, created_at="2026-07-10T00:00:00Z"))
    statuses = warehouse_con.execute("SELECT delivery_id, status, superseded_by FROM audit.deliveries "
                                     "ORDER BY delivery_id").fetchall()
    assert statuses == [(first.delivery_id, "superseded", second.delivery_id), (second.delivery_id, "accepted", None)]
    assert warehouse_con.execute("SELECT sex, delivery_id FROM staging.patients WHERE patient_id = ?",
                                 [P1]).fetchone() == ("U", second.delivery_id)
    assert warehouse_con.execute("SELECT count(*) FROM staging.patients").fetchone()[0] == 2


def test_older_delivery_arriving_late_does_not_replace_the_current(tmp_path, ingest_folder, warehouse_con):
    newer = ingest_folder(write_delivery(tmp_path / "a", cut="2026-06-30", created_at="2026-07-04T00:00:00Z"))
    rows = valid_rows()
    for r in rows["follow_up"]:
        r["followup_end_date"] = min(r["followup_end_date"], "2025-12-31")
    rows["follow_up"][0]["followup_end_date"] = "2025-12-31"
    older = ingest_folder(write_delivery(tmp_path / "b", rows, cut="2025-12-31", created_at="2026-01-05T00:00:00Z"))
    assert older.status == "accepted" and not older.current
    assert warehouse_con.execute("SELECT DISTINCT delivery_id FROM staging.patients").fetchall() == [
        (newer.delivery_id,)]
    assert warehouse_con.execute("SELECT status FROM audit.deliveries WHERE delivery_id = ?",
                                 [older.delivery_id]).fetchone() == ("superseded",)


def test_sites_are_loaded_side_by_side(tmp_path, ingest_folder, warehouse_con):
    ingest_folder(write_delivery(tmp_path / "in", site="DK01"))
    ingest_folder(write_delivery(tmp_path / "in", site="SE02", rows=valid_rows("SE02")))
    assert warehouse_con.execute("SELECT site_id, count(*) FROM staging.patients GROUP BY 1 ORDER BY 1").fetchall() \
        == [("DK01", 2), ("SE02", 2)]


def test_raw_keeps_every_delivered_row_as_text_with_its_line(tmp_path, ingest_folder, warehouse_con):
    rows = valid_rows()
    rows["patients"][1]["birth_year"] = "nineteen"
    ingest_folder(write_delivery(tmp_path / "in", rows))
    assert warehouse_con.execute("SELECT line_number, birth_year FROM raw.patients ORDER BY 1").fetchall() == [
        (2, "1980"), (3, "nineteen")]


def test_parquet_delivery_loads_like_csv(tmp_path, ingest_folder, warehouse_con):
    outcome = ingest_folder(write_delivery(tmp_path / "in", fmt="parquet"))
    assert outcome.status == "accepted", outcome.message
    assert warehouse_con.execute("SELECT count(*) FROM staging.alemtuzumab_infusions").fetchone()[0] == 10


AUDIT = ["audit.delivery_receipts", "audit.delivery_tables", "audit.quarantine", "audit.rule_results",
         "audit.validation_results"]


def _audit_rows(con) -> dict[str, set]:
    return {t: {repr(row) for row in con.execute(f"SELECT * FROM {t}").fetchall()} for t in AUDIT}


def test_audit_is_append_only_and_a_correction_points_at_what_it_supersedes(tmp_path, ingest_folder,
                                                                            warehouse_con):
    rows = valid_rows()
    rows["patients"][1]["sex"] = "X"  # a quarantined row in the first delivery
    bad = write_delivery(tmp_path / "bad", site="SE02", rows=valid_rows("SE02"))
    with (bad / "patients.csv").open("a") as handle:
        handle.write("SE02-00000000000000FF,F,1970,,RRMS\n")
    steps = [write_delivery(tmp_path / "a", rows), bad, bad,
             write_delivery(tmp_path / "b", valid_rows(), created_at="2026-07-10T00:00:00Z"),
             write_delivery(tmp_path / "b", valid_rows(), created_at="2026-07-10T00:00:00Z")]
    seen, outcomes = _audit_rows(warehouse_con), []
    for folder in steps:
        outcomes.append(ingest_folder(folder))
        now = _audit_rows(warehouse_con)
        for table in AUDIT:  # nothing updated, nothing deleted
            assert seen[table] <= now[table], table
        seen = now
    first, refused, refused_again, correction, reload = outcomes
    assert [o.status for o in outcomes] == ["accepted", "refused", "refused", "accepted", "already_loaded"]
    assert refused_again.delivery_id == refused.delivery_id  # a bad delivery left in the landing folder: once
    receipts = warehouse_con.execute("SELECT delivery_id, status, supersedes FROM audit.delivery_receipts "
                                     "ORDER BY delivery_id").fetchall()
    assert receipts == [(first.delivery_id, "accepted", None), (refused.delivery_id, "refused", None),
                        (correction.delivery_id, "accepted", first.delivery_id)]
    assert warehouse_con.execute("SELECT count(*) FROM audit.quarantine WHERE delivery_id = ?",
                                 [first.delivery_id]).fetchone()[0] > 0  # the superseded delivery's record stays


@pytest.mark.gx  # GX reads the scratch database through cursors of the warehouse connection
def test_a_load_leaves_no_scratch_database_and_the_warehouse_closes_with_its_connection(
        tmp_path, ingest_folder, warehouse_con):
    # The load reads into an attached in-memory database that GX reads through cursors of the
    # warehouse connection: it is detached after the load, and nothing keeps the warehouse open (a
    # read-only open in this process fails while the database is open read-write).
    import duckdb

    assert ingest_folder(write_delivery(tmp_path / "in")).status == "accepted"
    assert warehouse_con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'vigil_load'"
                                 ).fetchone() == (0,)
    warehouse_con.close()
    with duckdb.connect(str(tmp_path / "wh" / "vigil.duckdb"), read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM audit.deliveries WHERE status = 'accepted'").fetchone() == (1,)


def _stored_rows(con) -> int:
    """Rows in the storage of table main.t, deleted ones included until a vacuum reclaims them."""
    return con.execute("SELECT sum(count) FROM pragma_storage_info('main.t') "
                       "WHERE column_name = 'x' AND segment_type <> 'VALIDITY'").fetchone()[0]


def test_a_correction_counts_the_rows_it_replaced(tmp_path, ingest_folder):
    first = ingest_folder(write_delivery(tmp_path / "a"))
    assert first.replaced_rows == 0
    correction = ingest_folder(write_delivery(tmp_path / "b", created_at="2026-07-10T00:00:00Z"))
    assert correction.replaced_rows == sum(t.received + t.loaded for t in first.tables.values())  # raw + staging


def test_the_run_checkpoint_vacuums_only_when_the_run_replaced_a_site(warehouse_con):
    # The warehouse connection has DuckDB's checkpoint vacuum off; a run that deleted a site's
    # earlier rows turns it on for its checkpoint, and the deleted rows leave the storage.
    from vigil.ingest.load import LoadOutcome, checkpoint

    con = warehouse_con
    con.execute("CREATE TABLE main.t (site VARCHAR, x BIGINT)")
    for site in ("A", "B"):  # two sites' loads, then a correction of A
        con.execute(f"INSERT INTO main.t SELECT '{site}', range FROM range(5000)")
    con.execute("CHECKPOINT")

    def correct_site_a():
        con.execute("DELETE FROM main.t WHERE site = 'A'")
        con.execute("INSERT INTO main.t SELECT 'A', range FROM range(5000)")

    correct_site_a()
    assert checkpoint(con, [LoadOutcome(Path("new-site"), "accepted")]) is None
    assert _stored_rows(con) == 15000
    correct_site_a()
    assert checkpoint(con, [LoadOutcome(Path("correction"), "accepted", replaced_rows=5000)]) is None
    assert _stored_rows(con) == 10000
    assert con.execute("SELECT current_setting('max_vacuum_tasks')").fetchone() == (0,)
