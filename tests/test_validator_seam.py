"""The load's validator seam (vigil.ingest.validation.Validator): Great Expectations by default, and
the SQL rule counts that most ingest tests use instead (the `validator` fixture) fill the audit
tables as GX does, so that a test validated by SQL sees the warehouse GX would have left."""

import pytest
from helpers import valid_rows, write_delivery

from vigil import warehouse
from vigil.ingest import validation
from vigil.ingest.load import ingest_delivery

pytestmark = pytest.mark.gx


def _load(root, validator):
    rows = valid_rows()
    rows["patients"][1]["sex"] = "X"  # a rule broken, and its patient's rows cascaded
    rows["infections"][0]["outcome"] = "cured"
    db = root / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    outcome = ingest_delivery(con, write_delivery(root / "in", rows), warehouse.gx_dir_for(db),
                              **({"validator": validator} if validator else {}))
    assert outcome.status == "accepted", outcome.message
    audit = {
        "rules": con.execute("SELECT table_name, rule_id, reason, sql_violations, gx_unexpected "
                             "FROM audit.rule_results ORDER BY ALL").fetchall(),
        "tables": con.execute("SELECT table_name, suite_name, success, evaluated_expectations, "
                              "successful_expectations FROM audit.validation_results ORDER BY ALL").fetchall(),
        "quarantine": con.execute("SELECT * EXCLUDE (delivery_id) FROM audit.quarantine ORDER BY ALL").fetchall(),
    }
    con.close()
    return audit, db


def test_sql_rule_counts_fill_the_audit_tables_as_great_expectations_does(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_MAX_QUARANTINE_SHARE", "1")
    by_gx, gx_db = _load(tmp_path / "gx", None)  # the default: GX
    by_sql, sql_db = _load(tmp_path / "sql", validation.SQL_RULE_COUNTS)
    assert by_sql == by_gx
    assert any(n for *_, n in by_gx["rules"]) and not all(ok for _, _, ok, _, _ in by_gx["tables"])
    assert list(warehouse.gx_dir_for(gx_db).rglob("data_docs/**/index.html"))  # the default built Data Docs
    assert not warehouse.gx_dir_for(sql_db).exists()  # the SQL counts write nothing for GX
