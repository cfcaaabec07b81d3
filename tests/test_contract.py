"""The contract is read once from schemas/ and everything else derives from it."""

from pathlib import Path

import duckdb

from vigil.contract import ddl_for_layer, load_contract
from vigil.contract.docs import render

ROOT = Path(__file__).resolve().parent.parent


def test_contract_has_the_seven_spec_tables():
    assert list(load_contract().tables) == ["patients", "alemtuzumab_infusions", "dmt_history", "comorbidities",
                                            "edss_assessments", "infections", "follow_up"]


def test_committed_contract_docs_are_generated_from_schemas():
    assert (ROOT / "docs" / "extract-contract.md").read_text(encoding="utf-8") == render(), \
        "run `vigil contract-docs` and commit docs/extract-contract.md"


def test_every_staging_column_has_a_comment():
    con = duckdb.connect()
    for statement in ddl_for_layer(load_contract(), "staging"):
        con.execute(statement)
    uncommented = con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                              "WHERE schema_name = 'staging' AND comment IS NULL").fetchall()
    assert uncommented == []
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'staging' "
                       "AND comment IS NULL").fetchone()[0] == 0


def test_every_rule_reason_is_declared():
    contract = load_contract()
    assert {r.reason for r in contract.rules} <= set(contract.reasons)
