"""Monitoring across data cuts (SAP 7): looks, A13 observed vs expected worked out by hand, A14 through the
looks equal to R's Sequential 4.5, A15 first appearances, and the reference-rate file refused when wrong.

Hand-made staging (tests/test_cohort.Study): every patient has one course from 2020-01-06 and follow-up
to the data cut 2026-06-30 unless stated."""

from __future__ import annotations

import json
import shutil
from datetime import date

import polars as pl
import pytest
from test_cohort import Study
from test_sequential import SERIES, expected_rows

from vigil.analysis import monitoring
from vigil.analysis.monitoring import Surveillance, SurveillanceChanged, run_monitoring
from vigil.cohort.codelists import CODELIST_DIR, CodeListError, read_codelist

INDEX = date(2020, 1, 6)


def _deliveries(**sites: tuple[int, str]) -> list[dict]:
    return [{"site_id": s, "delivery_id": i, "data_cut": cut} for s, (i, cut) in sites.items()]


def _monitor(study: Study, run_id: int, deliveries: list[dict], surveillance: Surveillance | None = None) -> dict:
    study.con.execute("BEGIN")
    try:
        out = run_monitoring(study.con, run_id, deliveries, surveillance or monitoring.SAP_SURVEILLANCE)
    except BaseException:
        study.con.execute("ROLLBACK")
        raise
    study.con.execute("COMMIT")
    return out


@pytest.fixture
def study() -> Study:
    s = Study()
    a = s.patient(1, sex="F", birth_year=1980)       # 40 at index: 40-49, F rate 13
    s.patient(2, sex="M", birth_year=1975, death="2022-02-02")  # 45: 40-49, M rate 14
    s.patient(3, sex="U", birth_year=1990)           # 30: 30-39, U rate (11 + 12) / 2
    s.infection(a, "2020-03-06")                      # first serious at day 60 after index
    s.build()
    return s


# --------------------------------------------------------------------------------------------- A13

def test_expected_events_are_person_years_times_the_reference_rate_of_each_cell(study):
    t1 = (date(2020, 3, 6) - INDEX).days + 1             # to the event
    t2 = (date(2022, 2, 2) - INDEX).days + 1             # to death
    t3 = (date(2026, 6, 30) - INDEX).days + 1            # to the data cut
    expected = (t1 * 13 + t2 * 14 + t3 * 11.5) / 365.25 / 1000
    frame = monitoring.observed_expected(study.con)
    overall = frame.filter((pl.col("outcome") == "first_serious") & (pl.col("stratifier") == "overall")).row(0, named=True)
    assert overall["observed"] == 1
    assert overall["expected"] == pytest.approx(expected, rel=1e-12)
    assert overall["sir"] == pytest.approx(1 / expected, rel=1e-12)
    # exact Poisson limits of O = 1 (R: poisson.test(1)$conf.int), divided by E
    assert overall["ci_lower"] == pytest.approx(0.0253178079842899 / expected, rel=1e-9)
    assert overall["ci_upper"] == pytest.approx(5.5716433909389 / expected, rel=1e-9)
    sex_u = frame.filter((pl.col("outcome") == "first_serious") & (pl.col("stratum") == "U")).row(0, named=True)
    assert sex_u["observed"] == 0 and sex_u["expected"] == pytest.approx(t3 * 11.5 / 365.25 / 1000, rel=1e-12)
    opportunistic = frame.filter((pl.col("outcome") == "first_opportunistic") & (pl.col("stratifier") == "overall"))
    assert opportunistic["expected"][0] == pytest.approx((t2 + (date(2026, 6, 30) - INDEX).days + 1 + t3) * 2.0
                                                         / 365.25 / 1000, rel=1e-12)


def test_every_stratum_has_a_row_even_without_patients(study):
    frame = monitoring.observed_expected(study.con)
    ages = frame.filter((pl.col("outcome") == "first_serious") & (pl.col("stratifier") == "age_group"))
    assert ages["stratum"].to_list() == ["18-29", "30-39", "40-49", ">=50"]
    empty = ages.filter(pl.col("stratum") == "18-29").row(0, named=True)
    assert empty["observed"] == 0 and empty["expected"] == 0 and empty["sir"] is None and empty["note"]


def test_a_cell_without_a_reference_rate_is_refused_not_summed_as_zero(study):
    study.con.execute("DELETE FROM codelists.reference_rates WHERE sex = 'M' AND age_group = '40-49'")
    study.con.execute("CREATE OR REPLACE TABLE analysis.expected_events AS SELECT * FROM analysis.expected_events "
                      "WHERE false")  # rebuilt below from the reduced list
    from vigil.warehouse.sqlfiles import execute_file, sql_file
    execute_file(study.con, sql_file("analysis", "expected_events"))
    with pytest.raises(ValueError, match=r"no reference rate .*'M', '40-49'"):
        monitoring.observed_expected(study.con)


# ------------------------------------------------------------------------------------------- looks

def test_looks_follow_the_data_cuts(study):
    first = _monitor(study, 1, _deliveries(DK01=(1, "2025-06-30")))
    rerun = _monitor(study, 2, _deliveries(DK01=(1, "2025-06-30")))
    correction = _monitor(study, 3, _deliveries(DK01=(2, "2025-06-30")))  # same cut, later created_at
    together = _monitor(study, 4, _deliveries(DK01=(3, "2025-12-31"), SE02=(4, "2025-12-31")))
    new_site = _monitor(study, 5, _deliveries(DK01=(3, "2025-12-31"), SE02=(4, "2025-12-31"), NO03=(5, "2025-06-30")))
    assert [(r["look"], r["new_look"]) for r in (first, rerun, correction, together, new_site)] == [
        (1, True), (1, False), (1, False), (2, True), (3, True)]
    looks = study.rows("SELECT run_id, look, new_look, data_cuts, note FROM results.looks ORDER BY run_id")
    assert json.loads(looks[3]["data_cuts"]) == {"DK01": "2025-12-31", "SE02": "2025-12-31"}
    assert "rerun on the deliveries of run 1" in looks[1]["note"]
    assert "no site's data cut is later than at look 1" in looks[2]["note"]
    assert "NO03" in looks[4]["note"]


def test_a_repeated_look_carries_the_looks_test_and_spends_no_alpha(study, monkeypatch):
    _series(monkeypatch, [(5, 6.0), (9, 6.0), (13, 12.0)])
    _monitor(study, 1, _deliveries(DK01=(1, "2025-06-30")))
    _monitor(study, 2, _deliveries(DK01=(2, "2025-06-30")))  # a correction: O is 9 now, the look stays
    _monitor(study, 3, _deliveries(DK01=(3, "2025-12-31")))
    rows = study.rows("SELECT run_id, look, observed, alpha_spent, critical_events, computed_by_run, note "
                      "FROM results.sequential_test ORDER BY run_id")
    assert rows[1]["observed"] == rows[0]["observed"] == 5 and rows[1]["computed_by_run"] == 1
    assert {k: v for k, v in rows[1].items() if k != "run_id"} == {k: v for k, v in rows[0].items() if k != "run_id"}
    expected = _r_rows("null")  # R: O 5 then 13 at E 6 then 12
    for row, r in zip((rows[0], rows[2]), expected):
        assert row["critical_events"] == r["critical_events"] and row["alpha_spent"] == pytest.approx(r["alpha_spent"], abs=1e-9)


def test_changed_settings_are_refused_after_the_first_look_unless_a_new_surveillance(study):
    _monitor(study, 1, _deliveries(DK01=(1, "2025-06-30")))
    with pytest.raises(SurveillanceChanged, match=r"alpha 0.05 -> 0.1.*start a new named surveillance"):
        _monitor(study, 2, _deliveries(DK01=(2, "2025-12-31")), Surveillance(alpha=0.1))
    other = _monitor(study, 2, _deliveries(DK01=(2, "2025-12-31")), Surveillance(name="stricter", alpha=0.01))
    assert (other["look"], other["new_look"]) == (1, True)


# --------------------------------------------------------------------------------------------- A14

def _series(monkeypatch, points: list[tuple[int, float]]) -> None:
    """Each call of observed_expected gives the next (O, E) of the primary outcome, overall."""
    calls = iter(points)

    def fake(con):
        o, e = next(calls)
        return pl.DataFrame({"outcome": ["first_serious"], "stratifier": ["overall"], "stratum": ["all"],
                             "observed": [o], "expected": [e], "person_years": [e * 80.0], "sir": [o / e],
                             "ci_lower": [None], "ci_upper": [None], "note": [None]},
                            schema_overrides={"ci_lower": pl.Float64, "ci_upper": pl.Float64, "note": pl.Utf8})

    monkeypatch.setattr(monitoring, "observed_expected", fake)


def _r_rows(series: str) -> list[dict]:
    return expected_rows(series)


@pytest.mark.parametrize("series", ["signal_look3", "o_falls", "end_at_T", "first_look_E_below_M", "null"])
def test_the_looks_sequential_test_equals_r_sequential(study, monkeypatch, series):
    points = SERIES.filter(pl.col("series") == series).sort("look")
    _series(monkeypatch, list(zip(points["observed"].to_list(), points["expected"].cast(pl.Float64).to_list())))
    for look in range(1, points.height + 1):
        _monitor(study, look, _deliveries(DK01=(look, f"{2020 + look}-06-30")))
    rows = study.rows("SELECT * FROM results.sequential_test ORDER BY run_id")
    for row, r in zip(rows, _r_rows(series), strict=True):
        assert row["critical_events"] == r["critical_events"], (series, row["look"])
        for column in ("alpha_spent", "alpha_target"):
            assert (row[column] is None) == (r[column] is None), (series, row["look"], column)
            if r[column] is not None:
                assert row[column] == pytest.approx(r[column], abs=1e-6)
        assert row["signal"] == r["signal"] and row["status"] == r["status"]
        assert row["llr"] == pytest.approx(r["llr"], abs=1e-6)


def test_a_signal_is_final_and_named_at_every_later_look(study, monkeypatch):
    _series(monkeypatch, [(3, 2.0), (12, 4.0), (12, 8.0), (14, 12.0)])
    for look in range(1, 5):
        _monitor(study, look, _deliveries(DK01=(look, f"{2020 + look}-06-30")))
    rows = study.rows("SELECT look, signal, signal_look, status FROM results.sequential_test ORDER BY look")
    assert [(r["signal"], r["signal_look"]) for r in rows] == [(False, None), (True, 2), (True, 2), (True, 2)]
    assert [r["status"] for r in rows[2:]] == ["signalled_earlier"] * 2


def test_looks_after_the_end_of_surveillance_are_recorded_without_a_test(study, monkeypatch):
    _series(monkeypatch, [(30, 30.0), (61, 61.0), (70, 70.0)])
    for look in range(1, 4):
        _monitor(study, look, _deliveries(DK01=(look, f"{2020 + look}-06-30")))
    rows = study.rows("SELECT look, status, critical_events, note FROM results.sequential_test ORDER BY look")
    assert rows[1]["status"].startswith("end_") and rows[2]["status"] == "ended"
    assert rows[2]["critical_events"] is None and "surveillance ended at look 2" in rows[2]["note"]


# --------------------------------------------------------------------------------------------- A15

def test_terms_are_flagged_at_the_look_they_first_appear(study):
    _monitor(study, 1, _deliveries(DK01=(1, "2025-06-30")))
    b = "DK01-00000003"
    study.infection(b, "2020-01-20", pt="Cytomegalovirus infection")  # 14 days after the course start
    study.infection(b, "2021-03-01", serious="N", pt="Listeriosis")   # opportunistic, not serious
    study.build(2)
    _monitor(study, 2, _deliveries(DK01=(2, "2025-12-31")))
    rows = {(r["term_set"], r["meddra_pt"]): r for r in study.rows(
        "SELECT term_set, meddra_pt, n_events, n_within_30_days, first_look FROM results.unexpected_terms "
        "WHERE run_id = 2")}
    assert rows[("serious", "Pneumonia")]["first_look"] == 1
    assert rows[("serious", "Cytomegalovirus infection")] == {
        "term_set": "serious", "meddra_pt": "Cytomegalovirus infection", "n_events": 1, "n_within_30_days": 1,
        "first_look": 2}
    assert rows[("opportunistic", "Listeriosis")]["first_look"] == 2
    assert rows[("opportunistic", "Listeriosis")]["n_within_30_days"] == 0
    assert ("serious", "Listeriosis") not in rows


def test_a_term_written_in_another_case_is_the_same_term_not_a_new_one(study):
    _monitor(study, 1, _deliveries(DK01=(1, "2025-06-30")))
    b = "DK01-00000003"
    study.infection(b, "2021-01-20", pt="PNEUMONIA")
    study.infection(b, "2022-01-20", pt="pneumonia")
    study.build(2)
    _monitor(study, 2, _deliveries(DK01=(2, "2025-12-31")))
    rows = study.rows("SELECT meddra_pt, n_events, first_look FROM results.unexpected_terms WHERE run_id = 2 "
                      "AND term_set = 'serious'")
    assert rows == [{"meddra_pt": "PNEUMONIA", "n_events": 3, "first_look": 1}]  # a tie: the first in sort order


# ---------------------------------------------------------------------------- the reference rates

def _edited(tmp_path, edit) -> None:
    shutil.copytree(CODELIST_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "reference_rates.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_reference_rates_are_the_saps_table():
    rates = read_codelist("reference_rates")
    assert rates.version == "1.0" and len(rates.rows) == 16
    table = {(o, s, a): r for o, s, a, r, _, _ in rates.rows}
    assert table[("first_serious", "F", "18-29")] == 10 and table[("first_serious", "M", ">=50")] == 18
    assert {r for (o, _, _), r in table.items() if o == "first_opportunistic"} == {2.0}


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines.__setitem__(2, lines[2].replace(",11,", ",-11,")),
     r"reference_rates.csv, line 3, column 4 \(rate_per_1000py\): -11 is negative"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",11,", ",eleven,")),
     r"reference_rates.csv, line 3, column 4 \(rate_per_1000py\): 'eleven' is not a number"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",11,", ",,")),
     r"reference_rates.csv, line 3, column 4 \(rate_per_1000py\): empty"),
    (lambda lines: lines.pop(2),
     r"reference_rates.csv: no row \(no rate\) for outcome first_serious, sex F, age group 30-39"),
    (lambda lines: lines.__setitem__(slice(1, None), [line[:-3] + "2.0" for line in lines[1:]]),
     r"reference_rates.csv, line 2, column 6 \(version\): '2.0', but the SAP names version 1.0"),
])
def test_a_wrong_reference_rate_file_is_refused_naming_file_line_and_column(tmp_path, edit, message):
    _edited(tmp_path, edit)
    with pytest.raises(CodeListError, match=message):
        read_codelist("reference_rates", tmp_path)


# -------------------------------------------------------------------------------------- alerting

def test_a_look_in_signal_gives_the_event_an_automation_matches(study, monkeypatch):
    _series(monkeypatch, [(3, 2.0), (12, 4.0), (13, 8.0)])
    for look in range(1, 4):
        _monitor(study, look, _deliveries(DK01=(look, f"{2020 + look}-06-30")))
    quiet = monitoring.alert(*monitoring.look_history(study.con, 1))
    assert quiet["event"] is None and not quiet["signal"] and quiet["message"].startswith("look 1: no signal")
    found = monitoring.alert(*monitoring.look_history(study.con, 3))
    assert found["signal"] and [r["look"] for r in found["table"]] == [1, 2, 3]
    event = found["event"]
    assert event["event"] == monitoring.SIGNAL_EVENT == "vigil.monitoring.signal"
    assert event["resource"]["prefect.resource.id"] == "vigil.surveillance.primary"
    assert event["payload"] | {"data_cuts": None} == {"run_id": 3, "look": 3, "signal_look": 2, "new_signal": False,
                                                      "observed": 13, "expected": 8.0, "data_cuts": None}
    assert monitoring.alert(*monitoring.look_history(study.con, 2))["event"]["payload"]["new_signal"] is True


# ------------------------------------------------------------------ looks from real deliveries

@pytest.mark.slow  # three analysis runs (Cox models included)
def test_each_new_cut_is_one_look_reruns_and_earlier_cuts_are_not(tmp_path):
    from vigil import warehouse
    from vigil.analysis.runs import analyse
    from vigil.ingest import validation
    from vigil.ingest.load import ingest_all
    from vigil.synth import synthesize_series

    cuts = [date(2025, 6, 30), date(2025, 12, 31), date(2026, 6, 30)]
    series = synthesize_series(tmp_path / "landing", cuts, patients=400, sites=2, seed=3)
    db = tmp_path / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)

    def ingest(folders):
        outcomes = ingest_all(con, folders, warehouse.gx_dir_for(db), validator=validation.SQL_RULE_COUNTS)
        assert all(o.status == "accepted" for o in outcomes), [o.message for o in outcomes]

    def look():
        m = analyse(con).analyses["monitoring"]
        return m["look"], m["new_look"]

    ingest(series.deliveries[cuts[0]])
    assert look() == (1, True)
    assert look() == (1, False)  # a rerun
    ingest(series.deliveries[cuts[1]] + series.deliveries[cuts[2]])  # two cuts arrive together
    assert look() == (2, True)
    late = shutil.copytree(series.deliveries[cuts[0]][0], tmp_path / "late" / series.deliveries[cuts[0]][0].name)
    manifest = json.loads((late / "manifest.json").read_text())
    manifest["created_at"] = "2026-08-01T00:00:00Z"  # an earlier cut delivered after the current one
    (late / "manifest.json").write_text(json.dumps(manifest))
    ingest([late])
    assert look() == (2, False)
    cuts_seen = [json.loads(c) for (c,) in con.execute("SELECT data_cuts FROM results.looks ORDER BY run_id").fetchall()]
    assert cuts_seen[2] == cuts_seen[3] == {"DK01": "2026-06-30", "SE02": "2026-06-30"}
    con.close()
