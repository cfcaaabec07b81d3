"""Disclosure control (SAP section 5): vigil.report.disclosure and the report's tables built on it.

The property tests generate many small random studies (a few dozen patients, so that most cells are
1-4), push them through the report's disclosure plan and table builders, and check what would be
exported: no count of 1-4 is ever shown, no suppressed value can be recovered by subtracting the other
strata (steps, windows, reasons) from a shown total, and a value shown in several tables is shown the
same everywhere. Formula-injection cases close the file.
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.report.disclosure import (
    LESS_THAN_5, NOT_APPLICABLE, SUPPRESSED, cut_curves, format_count, format_estimate, from_fifth_event, is_small,
    neutralise_formula, neutralise_frame, pinned_cells, protect_relations, recoverable_by_subtraction,
    shown_small_counts, suppress_small_cumulative,
)
from vigil.report import tables as T
from vigil.analysis.describe import TABLE1_CATEGORICAL
from vigil.report.data import RunData
from vigil.report.protect import build_protection

HIDDEN = (LESS_THAN_5, SUPPRESSED)


# ---------------------------------------------------------------------------------------------
# formatting


@pytest.mark.parametrize("value, suppressed, shown", [
    (0, False, "0"), (0, True, SUPPRESSED), (1, False, LESS_THAN_5), (4, False, LESS_THAN_5),
    (4, True, LESS_THAN_5), (5, False, "5"), (5, True, SUPPRESSED), (12345, False, "12,345"), (None, False, NOT_APPLICABLE),
])
def test_format_count(value, suppressed, shown):
    assert format_count(value, suppressed) == shown


def test_format_estimate():
    assert format_estimate(12.345) == "12.35"
    assert format_estimate(12.345, suppressed=True) == SUPPRESSED
    assert format_estimate(float("nan")) == NOT_APPLICABLE
    assert format_estimate(None) == NOT_APPLICABLE
    assert format_estimate(-0.001) == "0.00"
    assert format_estimate(0.0123, percent=True) == "1.23"


# ---------------------------------------------------------------------------------------------
# complementary suppression on bare relations


def _one_relation(total: int, parts: list[int]):
    keys = ["T"] + [f"p{i}" for i in range(len(parts))]
    values = [total] + parts
    cells = pl.DataFrame({"key": keys, "value": [float(v) for v in values], "suppressed": [is_small(v) for v in values]})
    relations = pl.DataFrame({"relation": ["r"] * len(keys), "key": keys, "role": ["total"] + ["part"] * len(parts)})
    return protect_relations(cells, relations), relations


def test_one_small_stratum_gets_a_complement():
    out, relations = _one_relation(26, [1, 5, 20])
    shown = dict(zip(out["key"], [format_count(v, s) for v, s in zip(out["value"], out["suppressed"])]))
    assert shown["p0"] == LESS_THAN_5
    assert sum(shown[k] in HIDDEN for k in ("p0", "p1", "p2")) >= 2
    assert recoverable_by_subtraction(out, relations) == []
    # 1 + 5 would leave the <5 cell at 1 (the [c] cell is 0 or >= 5): the solver takes 20 instead
    assert shown["p1"] == "5" and shown["p2"] == SUPPRESSED


def test_two_small_strata_that_pin_each_other_hide_the_total():
    out, relations = _one_relation(2, [1, 1, 0])  # shown total 2 with two "<5" parts: both must be 1
    assert out.filter(pl.col("key") == "T")["suppressed"].item()
    assert pinned_cells(out, relations).filter(~pl.col("all_suppressed")).is_empty()


def test_zero_is_shown_and_nothing_is_added_without_need():
    out, _ = _one_relation(30, [0, 10, 20])
    assert not out["suppressed"].any()
    assert format_count(0) == "0"


def test_person_years_are_protected_like_counts():
    cells = pl.DataFrame({"key": ["T", "a", "b", "c"], "value": [10.5, 0.7, 4.3, 5.5],
                          "kind": ["amount"] * 4, "suppressed": [False, True, False, False]})
    relations = pl.DataFrame({"relation": ["r"] * 4, "key": ["T", "a", "b", "c"], "role": ["total", "part", "part", "part"]})
    out = protect_relations(cells, relations)
    assert out["suppressed"].sum() == 2 and recoverable_by_subtraction(out, relations) == []


@st.composite
def relation_sets(draw):
    """A 2-D table (rows x columns with both margins and a grand total) of small counts."""
    n_rows, n_cols = draw(st.integers(2, 4)), draw(st.integers(2, 4))
    grid = [[draw(st.integers(0, 9)) for _ in range(n_cols)] for _ in range(n_rows)]
    cells, relations = {}, []
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            cells[f"c{i}_{j}"] = v
        cells[f"r{i}"] = sum(row)
        relations += [(f"row{i}", f"r{i}", "total")] + [(f"row{i}", f"c{i}_{j}", "part") for j in range(n_cols)]
    for j in range(n_cols):
        cells[f"k{j}"] = sum(grid[i][j] for i in range(n_rows))
        relations += [(f"col{j}", f"k{j}", "total")] + [(f"col{j}", f"c{i}_{j}", "part") for i in range(n_rows)]
    cells["G"] = sum(map(sum, grid))
    relations += [("rows", "G", "total")] + [("rows", f"r{i}", "part") for i in range(n_rows)]
    relations += [("cols", "G", "total")] + [("cols", f"k{j}", "part") for j in range(n_cols)]
    frame = pl.DataFrame({"key": list(cells), "value": [float(v) for v in cells.values()],
                          "suppressed": [is_small(v) for v in cells.values()]})
    return frame, pl.DataFrame(relations, schema=["relation", "key", "role"], orient="row")


@settings(max_examples=300, deadline=None)
@given(relation_sets())
def test_two_way_tables_never_show_a_small_count_or_a_recoverable_cell(case):
    cells, relations = case
    out = protect_relations(cells, relations)
    shown = [format_count(v, s) for v, s in zip(out["value"], out["suppressed"])]
    assert not any(s in ("1", "2", "3", "4") for s in shown)
    assert recoverable_by_subtraction(out, relations) == []
    assert pinned_cells(out, relations).filter(~pl.col("all_suppressed")).is_empty()


# ---------------------------------------------------------------------------------------------
# the report's tables on random small studies

SEXES, CHARLSON, SITES, EDSS = ["F", "M", "U"], ["0", "1", ">=2"], ["AA01", "BB02"], ["0-2.5", "3.0-5.5", ">=6.0", "unknown"]
AGES, DMT, HE = ["18-29", "30-39", "40-49", ">=50"], ["0", "1", ">=2"], ["N", "Y"]
DAYS = [30, 180, 365, 730, 1095, 1825]
WINDOWS = ["0-30", "31-90", "91-365", ">365"]
STRATA = {"sex": SEXES, "charlson": CHARLSON, "site": SITES, "edss": EDSS, "age_group": AGES, "prior_dmt": DMT,
          "prior_high_efficacy": HE}


patient = st.fixed_dictionaries({
    "sex": st.sampled_from(SEXES), "charlson": st.sampled_from(CHARLSON), "site": st.sampled_from(SITES),
    "edss": st.sampled_from(EDSS), "age_group": st.sampled_from(AGES), "prior_dmt": st.sampled_from(DMT),
    "prior_high_efficacy": st.sampled_from(HE), "courses": st.sampled_from(["1", "2", ">=3"]),
    "died": st.sampled_from(["No", "No", "Yes"]), "t": st.integers(1, 2500),
    "windows": st.lists(st.integers(0, 2), min_size=4, max_size=4),  # serious episodes per risk window
    "first_opp": st.booleans(),
})


def _study(patients: list[dict], excluded: list[int], quarantined: list[int]) -> RunData:
    """A RunData whose tables all come from one list of patients, so every margin adds up as in a real run."""
    inc_rows, ci_rows = [], []
    for outcome in ("first_serious", "all_serious", "first_opportunistic"):
        for stratifier, levels in [("overall", ["all"]), *STRATA.items()]:
            for level in levels:
                group = [p for p in patients if stratifier == "overall" or p[stratifier] == level]
                if outcome == "first_serious":
                    events = sum(1 for p in group if sum(p["windows"]) > 0)
                elif outcome == "all_serious":
                    events = sum(sum(p["windows"]) for p in group)
                else:
                    events = sum(1 for p in group if p["first_opp"])
                py = sum(p["t"] for p in group) / 365.25
                inc_rows.append({"outcome": outcome, "stratifier": stratifier, "stratum": level,
                                 "n_patients": len(group), "n_events": events, "person_years": py,
                                 "rate_per_1000py": 1000 * events / py if py else None,
                                 "ci_lower": 0.0 if py else None, "ci_upper": 1.0 if py else None})
                if outcome == "all_serious":
                    continue
                for method in ("kaplan_meier", "aalen_johansen"):
                    for day in DAYS:
                        event = (lambda p: sum(p["windows"]) > 0) if outcome == "first_serious" else (lambda p: p["first_opp"])
                        ci_rows.append({"method": method, "outcome": outcome, "stratifier": stratifier, "stratum": level,
                                        "day": day, "estimate": 0.1, "ci_lower": 0.05, "ci_upper": 0.2,
                                        "n_at_risk": sum(1 for p in group if p["t"] >= day),
                                        "n_patients": len(group),
                                        "cumulative_events": sum(1 for p in group if event(p) and p["t"] <= day)})
    incidence = pl.DataFrame(inc_rows)
    rw = pl.DataFrame([{"window": w, "n_patients": sum(1 for p in patients if p["t"] > 30 * i),
                        "n_events": sum(p["windows"][i] for p in patients),
                        "person_years": sum(p["t"] for p in patients) / 365.25 / 4,
                        "rate_per_1000py": 1.0, "ci_lower": 0.5, "ci_upper": 2.0} for i, w in enumerate(WINDOWS)])
    n = len(patients)
    remaining = [n + sum(excluded[1:]) - sum(excluded[1:k + 1]) for k in range(5)]
    attrition = pl.DataFrame({"step": [1, 2, 3, 4, 5], "description": [f"step {k}" for k in range(1, 6)],
                              "n_remaining": remaining, "n_excluded": excluded})
    counts = []
    for variable in TABLE1_CATEGORICAL:
        for level in sorted({p[variable] for p in patients}):
            counts.append((variable, level, None, sum(1 for p in patients if p[variable] == level)))
            for e in EDSS:
                k = sum(1 for p in patients if p[variable] == level and p["edss"] == e)
                if k:
                    counts.append((variable, level, e, k))
    table1_counts = pl.DataFrame(counts, schema={"variable": pl.Utf8, "level": pl.Utf8, "edss": pl.Utf8, "n": pl.Int64},
                                 orient="row")
    stats = [{"edss": e, "n": sum(1 for p in patients if e is None or p["edss"] == e), "age_mean": 40.0, "age_sd": 9.0,
              "edss_n": sum(1 for p in patients if (e is None or p["edss"] == e) and p["edss"] != "unknown"),
              "edss_mean": 3.0, "edss_sd": 1.0, "edss_median": 3.0, "edss_q1": 2.0, "edss_q3": 4.0,
              "fu_mean": 4.0, "fu_sd": 2.0, "fu_median": 4.0, "fu_q1": 2.0, "fu_q3": 6.0} for e in [None, *EDSS]]
    reasons = ["missing_required", "out_of_range", "unparseable"]
    q_rows, dt_rows = [], []
    for d, table in [(1, "patients"), (1, "infections"), (2, "patients")]:
        split = [quarantined[(d + len(table) + i) % len(quarantined)] for i in range(3)]
        q_rows += [{"delivery_id": d, "table_name": table, "reason": r, "n": k} for r, k in zip(reasons, split) if k]
        loaded = 20 + d
        dt_rows.append({"delivery_id": d, "table_name": table, "source_file": f"{table}.csv",
                        "rows_received": loaded + sum(split), "rows_loaded": loaded, "rows_quarantined": sum(split)})
    deliveries = pl.DataFrame({"delivery_id": [1, 2], "site_id": SITES, "status": ["accepted", "accepted"],
                               "status_at_run": ["accepted", "superseded"]})
    quarantine = pl.DataFrame(q_rows, schema={"delivery_id": pl.Int64, "table_name": pl.Utf8, "reason": pl.Utf8,
                                              "n": pl.Int64})
    return RunData(run={"run_id": 7, "started_at": datetime.now(timezone.utc)}, db_path=None, attrition=attrition,
                   incidence=incidence, risk_windows=rw, cumulative_incidence=pl.DataFrame(ci_rows),
                   curves=pl.DataFrame(), logrank=pl.DataFrame(), cox=pl.DataFrame(),
                   levels={k: list(v) for k, v in STRATA.items()}, deliveries=deliveries,
                   delivery_tables=pl.DataFrame(dt_rows), quarantine=quarantine, table1_counts=table1_counts,
                   table1_stats=pl.DataFrame(stats))


def _hidden(text: str) -> bool:
    return text in HIDDEN


def _check_groups(frame: pl.DataFrame, group_cols: list[str], is_total, value_cols: list[str], where: str) -> None:
    """Within each group, a shown total with exactly one hidden part gives that part away."""
    for _, part in frame.group_by(group_cols, maintain_order=True):
        totals = part.filter(is_total)
        parts = part.filter(~is_total)
        if totals.height != 1 or parts.height == 0:
            continue
        for col in value_cols:
            total = totals[col].item()
            hidden = [v for v in parts[col].to_list() if _hidden(v)]
            assert _hidden(total) or len(hidden) != 1, f"{where}: {col} of {part.rows()} is recoverable"


study_strategy = st.tuples(
    st.lists(patient, min_size=0, max_size=40),
    st.lists(st.sampled_from([0, 0, 1, 2, 3, 4, 6, 11]), min_size=5, max_size=5),
    st.lists(st.sampled_from([0, 1, 2, 3, 5, 9, 40]), min_size=3, max_size=3),
)


@pytest.mark.slow  # 120 generated studies, ~15-30 s
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(study_strategy)
def test_random_small_studies_export_no_small_count_and_nothing_recoverable(case):
    patients, excluded, quarantined = case
    data = _study(patients, excluded, quarantined)
    prot = build_protection(data, T.at_risk_frame(data))
    assert pinned_cells(prot.cells, prot.relations).filter(~pl.col("all_suppressed")).is_empty()

    tables = [T.attrition_table(data, prot, T.attrition_keys(data, prot)), T.table1(data, prot),
              T.risk_window_table(data, prot), T.delivery_rows_table(data, prot), T.quarantine_table(data, prot)]
    tables += [T.incidence_table(data, prot, o) for o in ("first_serious", "all_serious", "first_opportunistic")]
    tables += [T.at_risk_table(data, prot, o, s) for o in ("first_serious", "first_opportunistic")
               for s in ["overall", *STRATA]]
    tables += [T.cumulative_incidence_table(data, prot, m, o, T.cumulative_events(data))
               for m in ("kaplan_meier", "aalen_johansen") for o in ("first_serious", "first_opportunistic")]
    for table in tables:
        values = [c for c in table.frame.columns if c not in table.label_columns]
        assert shown_small_counts(table.frame, values) == [], table.id
        assert set(table.count_columns) <= set(values)

    by_id = {t.id: t.frame for t in tables}
    for outcome in ("first_serious", "all_serious", "first_opportunistic"):
        inc = by_id[f"incidence_{outcome}"]
        overall = inc.filter(pl.col("Stratifier") == "Overall")
        for stratifier, part in inc.filter(pl.col("Stratifier") != "Overall").group_by("Stratifier"):
            _check_groups(pl.concat([overall, part]).with_columns(pl.lit(0).alias("g")), ["g"],
                          pl.col("Stratifier") == "Overall", ["Patients", "Events", "Person-years"],
                          f"incidence {outcome} {stratifier}")
    _check_groups(by_id["risk_windows"].with_columns(pl.lit(0).alias("g")), ["g"],
                  pl.col("Days since course start") == "All windows", ["Events", "Person-years"], "risk windows")
    # Table 1: each characteristic's column adds up to the column's N, each row to its overall
    t1 = by_id["table1"]
    n_row = t1.filter(pl.col("Characteristic") == "Patients")
    columns = ["Overall"] + [f"EDSS {e}" for e in EDSS]
    for variable, part in t1.filter(pl.col("Level").is_in(["n", "mean (SD)", "median (IQR)"]).not_()).group_by("Characteristic"):
        block = pl.concat([n_row, part]).with_columns(pl.lit(0).alias("g"))
        _check_groups(block.with_columns([pl.col(c).str.replace(r" \(.*\)$", "") for c in columns]), ["g"],
                      pl.col("Characteristic") == "Patients", columns, f"table 1 {variable} columns")
        for row in part.iter_rows(named=True):
            shown = [row[c].split(" (")[0] for c in columns]
            assert _hidden(shown[0]) or sum(_hidden(v) for v in shown[1:]) != 1, f"table 1 row {row}"
    # attrition chain: remaining(k-1) = remaining(k) + excluded(k)
    att = by_id["attrition"].rows()
    for prev, cur in zip(att, att[1:]):
        hidden = [_hidden(cur[2]), _hidden(cur[3])]
        assert _hidden(prev[2]) or sum(hidden) != 1, f"attrition {prev} -> {cur}"
        if not _hidden(prev[2]):
            assert sum(hidden) != 1
    # numbers at risk: the strata add up to the overall on each day
    for outcome in ("first_serious", "first_opportunistic"):
        overall = by_id[f"at_risk_{outcome}_overall"]
        for stratifier in STRATA:
            part = by_id[f"at_risk_{outcome}_{stratifier}"]
            for col in overall.columns[1:]:
                total = overall[col].item()
                assert _hidden(total) or sum(_hidden(v) for v in part[col].to_list()) != 1, (outcome, stratifier, col)
    # data quality: received = loaded + quarantined
    for row in by_id["dq_rows"].rows(named=True):
        hidden = [_hidden(row["Rows loaded"]), _hidden(row["Rows quarantined"])]
        assert _hidden(row["Rows received"]) or sum(hidden) != 1
    # one value, one display: a stratum's patients in the incidence tables, Table 1 and at day 0
    inc = by_id["incidence_first_serious"]
    labels = {"Sex": "sex", "Charlson comorbidity index": "charlson", "Site": "site", "Baseline EDSS": "edss"}
    current = None
    for row in inc.iter_rows(named=True):
        current = labels.get(row["Stratifier"], current if not row["Stratifier"] else None)
        if current is None or row["Stratifier"] == "Overall":
            continue
        at_risk = by_id[f"at_risk_first_serious_{current}"].filter(pl.col("Stratum") == row["Stratum"])
        assert at_risk["Day 0"].item() == row["Patients"]
        for other in ("all_serious", "first_opportunistic"):
            again = by_id[f"incidence_{other}"].filter(pl.col("Stratum") == row["Stratum"])
            assert row["Patients"] in again["Patients"].to_list()


def test_random_study_that_is_large_shows_everything():
    rng = random.Random(3)
    patients = [{"sex": rng.choice(["F", "M"]), "charlson": rng.choice(CHARLSON), "site": rng.choice(SITES),
                 "edss": rng.choice(EDSS[:3]), "age_group": rng.choice(AGES), "prior_dmt": rng.choice(DMT),
                 "prior_high_efficacy": rng.choice(HE), "courses": rng.choice(["1", "2"]), "died": "No",
                 "t": 2000, "windows": [1, 1, 1, 1], "first_opp": True} for _ in range(3000)]
    data = _study(patients, [0, 100, 100, 100, 100], [0, 0, 0])
    prot = build_protection(data, T.at_risk_frame(data))
    inc = T.incidence_table(data, prot, "first_serious").frame
    shown = inc.filter(~pl.col("Stratum").is_in(["U", "unknown"]))
    assert not any(_hidden(v) for col in ("Patients", "Events") for v in shown[col].to_list())


# ---------------------------------------------------------------------------------------------
# curves


def test_curves_are_cut_where_fewer_than_five_remain_at_risk():
    curves = pl.DataFrame({"g": ["a"] * 6 + ["b"] * 3, "day": [0, 1, 2, 3, 4, 5, 0, 1, 2],
                           "n_at_risk": [20, 12, 7, 4, 6, 2, 4, 3, 1], "n_events": [0, 1, 1, 1, 2, 0, 0, 1, 1]})
    cut = cut_curves(curves, ["g"])
    assert cut["day"].to_list() == [0, 1, 2]  # stratum a stops before its first <5; b never starts
    a = curves.filter(pl.col("g") == "a")
    kept = suppress_small_cumulative(a, ["g"], "n_events")
    assert kept["day"].to_list() == [0, 4, 5]  # 0 events shown; 1-4 cumulative events hidden; 5 and more shown
    assert from_fifth_event(a, ["g"], "n_events")["day"].to_list() == [4, 5]  # what a plot draws


# ---------------------------------------------------------------------------------------------
# spreadsheet formula injection


@pytest.mark.parametrize("text, expected", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\tstart", "'\tstart"),
    ("\rstart", "'\rstart"),
    ("-", "'-"),
    ("-0.12", "-0.12"),  # a number, not a formula
    ("+5", "+5"),
    ("-1,234.5", "-1,234.5"),
    (">=2", ">=2"),  # stratum labels stay readable
    ("<5", "<5"),
    ("[c]", "[c]"),
    ("3.0-5.5", "3.0-5.5"),
    ("", ""),
])
def test_neutralise_formula(text, expected):
    assert neutralise_formula(text) == expected


def test_neutralise_frame_touches_text_columns_only():
    frame = pl.DataFrame({"label": ["=1+1", ">=2", "-"], "n": [-1, 2, 3]})
    out = neutralise_frame(frame)
    assert out["label"].to_list() == ["'=1+1", ">=2", "'-"]
    assert out["n"].to_list() == [-1, 2, 3]


def test_exports_neutralise_formulas_in_csv_and_xlsx(tmp_path):
    from openpyxl import load_workbook

    from vigil.report.render import export_tables

    frame = pl.DataFrame({"Site": ["=cmd|' /C calc'!A0", "@evil", "DK01", "-"], "Stratum": [">=2", "-0.5", "1", "0"],
                          "Patients": ["12", "<5", "-0.12", "1,234"]})
    table = T.Table("hostile", "Hostile labels", frame, ["Site", "Stratum"], ["Patients"])
    exported = export_tables([table], tmp_path, run_id=3)
    (csv_path,) = [e.csv for e in exported]
    assert csv_path.name.startswith("run3_")
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == "'=cmd|' /C calc'!A0" and rows[2][0] == "'@evil" and rows[4][0] == "'-"
    assert rows[1][1] == ">=2" and rows[2][1] == "-0.5" and rows[2][2] == "<5" and rows[3][2] == "-0.12"
    wb = load_workbook(tmp_path / "run3_tables.xlsx")
    ws = wb["hostile"]
    assert ws["A1"].value == "Hostile labels"
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    assert ws["A3"].value == "'=cmd|' /C calc'!A0"
    assert ws["C3"].value == 12 and ws["C6"].value == 1234 and ws["C6"].number_format == "#,##0"
    assert ws["C4"].value == "<5"
    assert ws["B3"].value == ">=2" and ws["B5"].value == "1"  # labels stay text
