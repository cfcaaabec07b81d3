"""A generated study end to end through the plain functions: the ingest finds exactly the faults the
generator injected, and the cohort recovers the generator's own truth for every patient."""

import pytest

from vigil import warehouse
from vigil.cohort import build_cohort
from vigil.contract import load_contract
from vigil.ingest.load import ingest_all
from vigil.synth import synthesize_study

# 2,500 generated patients ingested with GX: its counts must equal the SQL's, rule by rule.
pytestmark = [pytest.mark.gx, pytest.mark.slow]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    result = synthesize_study(root / "landing", patients=2500, sites=3, seed=7, faults=True)
    db = root / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    outcomes = ingest_all(con, [root / "landing"], warehouse.gx_dir_for(db))
    con.execute("BEGIN")
    build_cohort(con, run_id=1)
    con.execute("COMMIT")
    con.execute("CREATE TEMP TABLE truth AS SELECT * FROM read_parquet($p)", {"p": str(result.truth)})
    con.execute("CREATE TEMP TABLE faults AS SELECT * FROM read_csv($p, all_varchar = true)",
                {"p": str(result.faults)})
    yield con, outcomes
    con.close()


def test_the_faulty_delivery_is_refused_and_the_others_accepted(study):
    _, outcomes = study
    statuses = sorted((o.folder.name[:4], o.status) for o in outcomes)
    assert [s for _, s in statuses].count("refused") == 1
    assert dict(statuses)["XX04"] == "refused"


def test_quarantine_is_exactly_the_injected_faults(study):
    con, _ = study
    missed = con.execute("""SELECT site_id, "table", line_number, reason FROM faults
        EXCEPT SELECT site_id, table_name, CAST(line_number AS VARCHAR), reason FROM audit.quarantine""").fetchall()
    extra = con.execute("""SELECT site_id, table_name, CAST(line_number AS VARCHAR), reason FROM audit.quarantine
        EXCEPT SELECT site_id, "table", line_number, reason FROM faults""").fetchall()
    assert missed == [] and extra == []
    assert con.execute("SELECT count(DISTINCT reason) FROM audit.quarantine").fetchone()[0] >= 14


def test_rows_received_are_rows_in_staging_plus_rows_quarantined(study):
    con, _ = study
    for table in load_contract().tables:
        mismatches = con.execute(f"""
            SELECT t.delivery_id FROM audit.delivery_tables t
            WHERE t.table_name = $t AND t.rows_received <>
                (SELECT count(*) FROM staging.{table} s WHERE s.delivery_id = t.delivery_id)
              + (SELECT count(*) FROM audit.quarantine q WHERE q.delivery_id = t.delivery_id AND q.table_name = $t)
        """, {"t": table}).fetchall()
        assert mismatches == [], table


def test_gx_and_quarantine_sql_agree_rule_by_rule(study):
    con, _ = study
    assert con.execute("SELECT count(*) FROM audit.rule_results WHERE sql_violations <> gx_unexpected").fetchone() \
        == (0,)
    assert con.execute("SELECT bool_or(NOT success) FROM audit.validation_results").fetchone() == (True,)


COMPARED = {
    "index_date": "p.index_date = t.index_date::DATE",
    "exit_date": "p.exit_date = t.exit_date::DATE",
    "death": "p.died = t.death",
    "charlson score": "p.charlson_score = t.charlson",
    "charlson": "p.charlson = t.charlson_level",
    "prior_dmt count": "p.prior_dmt_count = t.prior_dmt",
    "prior_dmt": "p.prior_dmt = t.prior_dmt_level",
    "prior_high_efficacy": "p.prior_high_efficacy = t.prior_high_efficacy",
    "edss": "p.edss = t.edss_level",
    "edss score": "p.edss_score IS NOT DISTINCT FROM t.edss",
    "age_group": "p.age_group = t.age_group",
    "sex": "p.sex = t.sex",
}


@pytest.mark.parametrize("name", COMPARED)
def test_cohort_strata_recover_the_generator_truth(study, name):
    con, _ = study
    wrong = con.execute(f"""SELECT count(*) FROM truth t JOIN cohort.patients p USING (patient_id)
                            WHERE NOT ({COMPARED[name]})""").fetchone()[0]
    assert wrong == 0


def test_cohort_membership_and_attrition_recover_the_truth(study):
    con, _ = study
    assert con.execute("""SELECT count(*) FROM truth t LEFT JOIN cohort.patients p USING (patient_id)
                          WHERE t.in_cohort <> (p.patient_id IS NOT NULL)""").fetchone()[0] == 0
    truth_steps = dict(con.execute("SELECT attrition_step, count(*) FROM truth WHERE attrition_step > 1 "
                                   "AND site_id <> 'XX04' GROUP BY 1").fetchall())
    # Step 1 counts quarantined patient rows, including injected rows that have no patient_id at all.
    truth_steps[1] = con.execute("SELECT count(*) FROM faults WHERE \"table\" = 'patients'").fetchone()[0]
    assert dict(con.execute("SELECT step, n_excluded FROM cohort.attrition").fetchall()) == truth_steps


def test_outcomes_recover_the_truth(study):
    con, _ = study
    assert con.execute("""SELECT count(*) FROM truth t JOIN analysis.outcomes o USING (patient_id)
        WHERE o.outcome = 'first_serious' AND o.event_date IS DISTINCT FROM t.first_serious_date::DATE""").fetchone()[0] == 0
    assert con.execute("""SELECT count(*) FROM truth t JOIN analysis.outcomes o USING (patient_id)
        WHERE o.outcome = 'first_opportunistic' AND o.event_date IS DISTINCT FROM t.first_oi_date::DATE""").fetchone()[0] == 0
    assert con.execute("""SELECT count(*) FROM truth t JOIN analysis.all_serious a USING (patient_id)
        WHERE a.n_events <> t.serious_episodes""").fetchone()[0] == 0
