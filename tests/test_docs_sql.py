"""Every ```sql example of README.md and docs/*.md runs against a study's read-only snapshot, and what
docs/cohort-definitions.md says of attrition step 1 is what the table holds (issue 16 part 5).

One small study for the module: `vigil synth` with faults (400 patients, 2 sites: quarantined rows,
one refused delivery), ingested, analysed and published as the statisticians' snapshot, opened the
way the README tells them to (vigil.warehouse.snapshots.open_snapshot: read-only, no file access).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vigil import warehouse
from vigil.analysis.runs import analyse
from vigil.ingest.load import delivery_order, ingest_delivery

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SQL_BLOCK = re.compile(r"^```sql[ \t]*\n(.*?)^```", re.S | re.M)


def sql_examples() -> list[tuple[str, str]]:
    """(where, statement) for each statement of each ```sql block, comment lines kept."""
    examples = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for block in SQL_BLOCK.finditer(text):
            line = text.count("\n", 0, block.start()) + 2
            for number, statement in enumerate(s for s in block.group(1).split(";") if _code(s)):
                examples.append((f"{document.relative_to(ROOT)}:{line} #{number + 1}", statement.strip()))
    return examples


def _code(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from vigil.synth import synthesize_study
    from vigil.warehouse.snapshots import open_snapshot, publish_snapshot

    root = tmp_path_factory.mktemp("docs-sql")
    synth = synthesize_study(root / "in", patients=400, sites=2, seed=11, faults=True)
    db = root / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    for folder in delivery_order(synth.deliveries + synth.refused):
        ingest_delivery(con, folder, warehouse.gx_dir_for(db))
    run_id = analyse(con, {"test": "docs-sql"}).run_id
    con.close()
    snapshot = open_snapshot(publish_snapshot(db, run_id))
    yield snapshot
    snapshot.close()


def test_the_documents_have_sql_examples():
    assert len([where for where, _ in sql_examples() if where.startswith("README.md")]) >= 3


@pytest.mark.slow
@pytest.mark.gx
@pytest.mark.parametrize("where, statement", sql_examples(), ids=[w for w, _ in sql_examples()])
def test_every_sql_example_runs_on_the_snapshot(study, where, statement):
    rows = study.execute(statement).fetchall()
    assert rows, f"{where} returns no rows on the demo study"


@pytest.mark.slow
@pytest.mark.gx
def test_attrition_step_1_excludes_the_quarantined_patient_rows_of_current_deliveries(study):
    """docs/cohort-definitions.md: step 1 excludes the patient rows of each site's current delivery
    that the ingest quarantined (they never reach staging); its n_remaining is the patients in staging."""
    doc = (ROOT / "docs" / "cohort-definitions.md").read_text(encoding="utf-8")
    assert "Step 1 excludes nobody" not in doc
    assert "quarantined" in doc[doc.index("Step 1"):doc.index("Step 5")]
    remaining, excluded = study.execute("SELECT n_remaining, n_excluded FROM results.attrition "
                                        "WHERE run_id = (SELECT max(run_id) FROM results.runs) AND step = 1").fetchone()
    quarantined = study.execute("""
        SELECT count(*) FROM audit.quarantine AS q JOIN audit.deliveries AS d USING (delivery_id)
        WHERE d.status = 'accepted' AND q.table_name = 'patients'""").fetchone()[0]
    assert excluded == quarantined > 0  # the faults quarantine some patient rows
    assert remaining == study.execute("SELECT count(*) FROM staging.patients").fetchone()[0]
    assert remaining == study.execute("SELECT count(*) FROM cohort.eligibility").fetchone()[0]
