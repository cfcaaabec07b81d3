"""Monitoring across data cuts (SAP 7): looks, A13 observed vs expected, A14 the sequential test, A15 the
unexpected. Runs inside the analysis run's transaction (vigil.analysis.runs.analyse), after the cohort and
the analysis datasets are built; writes through vigil.analysis.results.

A look is the first run on a set of accepted deliveries in which some site's data cut is later than at the
previous look (a site new to the study counts as later). Any other run repeats the latest look: a rerun on
the same deliveries, or a correction delivered for a cut already looked at. A repeated look carries the
look's sequential test as the run that made the look computed it, so no alpha is spent twice and a look is
never recomputed with later data; its A13 and A15 rows describe the run's own data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import polars as pl

from vigil.analysis import results
from vigil.analysis.sap import STRATIFIERS, grouping_sets, level_frame, strata_levels
from vigil.cohort.codelists import REFERENCE_OUTCOMES
from vigil.stats import sequential, survival as sv

LOOKS, OBSERVED_EXPECTED, SEQUENTIAL_TEST, UNEXPECTED_TERMS = (
    "looks", "observed_expected", "sequential_test", "unexpected_terms")
TABLES = (LOOKS, OBSERVED_EXPECTED, SEQUENTIAL_TEST, UNEXPECTED_TERMS)
ENDED = "ended"  # status of a look after the end of surveillance: no test
SIGNAL_EVENT = "vigil.monitoring.signal"  # the Prefect event a signalling run emits (docs/monitoring.md)


@dataclass(frozen=True)
class Surveillance:
    """The sequential settings of SAP 7 (A14). They are fixed at a surveillance's first look: other
    settings need a new name, which starts a new sequence of looks."""
    name: str = "primary"
    outcome: str = "first_serious"
    alpha: float = 0.05
    rho: float = 1.0
    M: int = 4
    T: float = 60.0
    max_looks: int = 10

    @property
    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "name"}


SAP_SURVEILLANCE = Surveillance()


class SurveillanceChanged(ValueError):
    """Other sequential settings than at the surveillance's first look (the alpha spent would be void)."""


@dataclass(frozen=True)
class Look:
    look: int
    new: bool
    note: str
    computed_by_run: int | None  # the run that made the look; None for a new one


def run_monitoring(con: duckdb.DuckDBPyConnection, run_id: int, deliveries: list[dict],
                   surveillance: Surveillance = SAP_SURVEILLANCE) -> dict:
    """Write the run's rows of results.looks, observed_expected, sequential_test and unexpected_terms;
    return what the run's summary reports (look, new_look, signal, signal_look, O, E)."""
    results.prepare(con, run_id, TABLES)
    cuts = {d["site_id"]: str(d["data_cut"]) for d in deliveries}
    ids = {d["site_id"]: int(d["delivery_id"]) for d in deliveries}
    look = find_look(con, surveillance, cuts, ids)
    oe = observed_expected(con)
    overall = oe.filter((pl.col("outcome") == surveillance.outcome) & (pl.col("stratifier") == "overall"))
    observed, expected = int(overall["observed"][0]), float(overall["expected"][0])

    results.insert_frame(con, LOOKS, pl.DataFrame([{
        "surveillance": surveillance.name, "look": look.look, "new_look": look.new,
        "data_cuts": json.dumps(cuts, sort_keys=True), "delivery_ids": json.dumps(ids, sort_keys=True),
        "settings": json.dumps(surveillance.settings, sort_keys=True), "note": look.note}]), run_id)
    results.insert_frame(con, OBSERVED_EXPECTED, oe.with_columns(look=pl.lit(look.look, pl.Int32)), run_id)
    test = (sequential_row(con, surveillance, look.look, run_id, observed, expected) if look.new
            else _repeated_row(con, look))
    results.insert_frame(con, SEQUENTIAL_TEST, pl.DataFrame([test]), run_id)
    results.insert_frame(con, UNEXPECTED_TERMS, unexpected_terms(con, surveillance, look.look), run_id)
    return {"look": look.look, "new_look": look.new, "signal": bool(test["signal"]),
            "signal_look": test["signal_look"], "observed": test["observed"], "expected": test["expected"],
            "status": test["status"]}


# ------------------------------------------------------------------------------------------- looks

def find_look(con, surveillance: Surveillance, cuts: dict[str, str], ids: dict[str, int]) -> Look:
    """Which look a run on these deliveries is (SAP 7), refusing changed settings."""
    rows = con.execute(f"""
        SELECT run_id, look, new_look, data_cuts, delivery_ids, settings FROM results.{LOOKS}
        WHERE surveillance = ? ORDER BY run_id""", [surveillance.name]).fetchall()
    if not rows:
        return Look(1, True, "first look", None)
    first_settings = json.loads(rows[0][5])
    if first_settings != surveillance.settings:
        changed = ", ".join(f"{k} {first_settings.get(k)!r} -> {v!r}" for k, v in surveillance.settings.items()
                            if first_settings.get(k) != v)
        raise SurveillanceChanged(
            f"surveillance {surveillance.name!r}: its sequential settings were fixed at its first look (run "
            f"{rows[0][0]}); changing them ({changed}) would void the alpha already spent: start a new named "
            "surveillance instead")
    latest = max(r[1] for r in rows)
    made = {r[1]: r for r in rows if r[2]}
    look_run, _, _, look_cuts, _, _ = made[latest]
    look_cuts = json.loads(look_cuts)
    for run, number, _, _, delivered, _ in reversed(rows):
        if json.loads(delivered) == ids:
            return Look(number, False, f"rerun on the deliveries of run {run}: repeats look {number}",
                        made[number][0])
    later = sorted(site for site, cut in cuts.items() if site not in look_cuts or cut > look_cuts[site])
    if later:
        return Look(latest + 1, True, "data cut later than at look "
                    f"{latest} for {', '.join(f'{s} ({cuts[s]})' for s in later)}", None)
    return Look(latest, False, f"no site's data cut is later than at look {latest} (run {look_run}): "
                               f"repeats look {latest}", look_run)


# --------------------------------------------------------------------------------------------- A13

def observed_expected(con) -> pl.DataFrame:
    """O, E, person-years and SIR with exact CI, per outcome overall and by every stratum."""
    ((missing,),) = con.execute("SELECT count(*) FROM analysis.expected_events WHERE rate_per_1000py IS NULL").fetchall()
    if missing:
        cells = con.execute("""SELECT DISTINCT outcome, sex, age_group FROM analysis.expected_events
                               WHERE rate_per_1000py IS NULL ORDER BY ALL""").fetchall()
        raise ValueError(f"{missing} patient-outcome rows have no reference rate (cells {cells}): "
                         "codelists/reference_rates.csv lacks them")
    stratifier, stratum, grouping = grouping_sets("outcome")
    counts = con.sql(f"""
        SELECT outcome, {stratifier} AS stratifier, {stratum} AS stratum,
               CAST(sum(observed) AS BIGINT) AS observed, sum(expected) AS expected,
               sum(person_years) AS person_years
        FROM analysis.expected_events GROUP BY {grouping}""").pl()
    grid = pl.DataFrame({"outcome": list(REFERENCE_OUTCOMES)}).join(level_frame(strata_levels(con)), how="cross")
    frame = grid.join(counts, on=["outcome", "stratifier", "stratum"], how="left").with_columns(
        pl.col("observed").fill_null(0), pl.col("expected").fill_null(0.0), pl.col("person_years").fill_null(0.0))
    o = frame["observed"].to_numpy().astype(float)
    e = frame["expected"].to_numpy().astype(float)
    lower, upper = sv.poisson_ci(o, e)  # the exact Poisson limits of O, divided by E
    with np.errstate(divide="ignore", invalid="ignore"):
        sir = np.where(e > 0, o / e, np.nan)
    order = {s: i for i, s in enumerate(("overall",) + STRATIFIERS)}
    return (frame.with_columns(sir=pl.Series(sir, nan_to_null=True), ci_lower=pl.Series(lower, nan_to_null=True),
                               ci_upper=pl.Series(upper, nan_to_null=True),
                               note=pl.when(pl.col("expected") > 0).then(None)
                               .otherwise(pl.lit("no person-time: SIR not estimable")),
                               _s=pl.col("stratifier").replace_strict(order, default=99),
                               _o=pl.col("outcome").replace_strict({o: i for i, o in enumerate(REFERENCE_OUTCOMES)}))
            .sort("_o", "_s", "stratum_order", "stratum").drop("_o", "_s", "stratum_order"))


# --------------------------------------------------------------------------------------------- A14

def _made_looks(con, surveillance: Surveillance) -> list[tuple]:
    """(look, observed, expected, status, signal_look) of each look made so far, in look order."""
    return con.execute(f"""
        SELECT t.look, t.observed, t.expected, t.status, t.signal_look
        FROM results.{SEQUENTIAL_TEST} AS t JOIN results.{LOOKS} AS l USING (run_id)
        WHERE l.surveillance = ? AND l.new_look ORDER BY t.look""", [surveillance.name]).fetchall()


def sequential_row(con, surveillance: Surveillance, look: int, run_id: int, observed: int, expected: float) -> dict:
    """The test at a new look, from the O and E of every earlier look as they were made (vigil.stats.sequential)."""
    made = _made_looks(con, surveillance)
    tested = [m for m in made if m[3] != ENDED and m[2] > 0]
    row = {"surveillance": surveillance.name, "look": look, "outcome": surveillance.outcome, "observed": observed,
           "expected": expected, "sir": observed / expected if expected > 0 else None,
           "llr": sequential.llr(observed, expected) if expected > 0 else 0.0, "critical_events": None,
           "critical_llr": None, "alpha_target": None, "alpha_spent": None, "computed_by_run": run_id}
    earlier_signal = next((m[4] for m in made if m[4] is not None), None)
    ended_at = _ended_at(tested, surveillance)
    if ended_at is not None or expected <= 0:
        note = (f"surveillance ended at look {ended_at}: no test" if ended_at is not None
                else "no expected events yet: no test")
        return {**row, "signal": earlier_signal is not None, "signal_look": earlier_signal, "status": ENDED,
                "note": note + (f"; signal at look {earlier_signal}" if earlier_signal else "")}
    series = sequential.maxsprt_poisson([m[1] for m in tested] + [observed], [m[2] for m in tested] + [expected],
                                        alpha=surveillance.alpha, rho=surveillance.rho, M=surveillance.M,
                                        T=surveillance.T, max_looks=surveillance.max_looks)
    result = series[-1]
    looks = [m[0] for m in tested] + [look]
    signal_look = next((looks[i] for i, r in enumerate(series) if r.status == sequential.SIGNAL), None)
    return {**row, "critical_events": result.critical_events, "critical_llr": result.critical_llr,
            "alpha_target": result.alpha_target, "alpha_spent": result.alpha_spent, "signal": result.signal,
            "signal_look": signal_look, "status": result.status, "note": result.note or None}


def _ended_at(tested: list[tuple], surveillance: Surveillance) -> int | None:
    """The look at which surveillance ended (E reached T, or the last look), if it has."""
    for i, (made_look, _, expected, _, _) in enumerate(tested, start=1):
        if expected >= surveillance.T or i >= surveillance.max_looks:
            return made_look
    return None


def _repeated_row(con, look: Look) -> dict:
    row = con.sql(f"SELECT * EXCLUDE (run_id) FROM results.{SEQUENTIAL_TEST} WHERE run_id = $run",
                  params={"run": look.computed_by_run}).pl()
    return row.to_dicts()[0]  # the look as made (computed_by_run says by which run); results.looks says why


# --------------------------------------------------------------------------------------------- A15

def unexpected_terms(con, surveillance: Surveillance, look: int) -> pl.DataFrame:
    """Events per term set and term at this look; first_look from the earlier looks' rows."""
    # A term is the same term whatever its case (as the opportunistic code list is matched): it is listed
    # under its most frequent spelling and is not "new" because a site wrote it in capitals.
    return con.sql(f"""
        WITH spelling AS (
            SELECT term_set, lower(meddra_pt) AS term, meddra_pt, count(*) AS n,
                   count(*) FILTER (WHERE within_30_days) AS n_30
            FROM analysis.infection_terms GROUP BY ALL
        ),
        now AS (
            SELECT term_set, term, first(meddra_pt ORDER BY n DESC, meddra_pt) AS meddra_pt,
                   sum(n) AS n_events, sum(n_30) AS n_within_30_days
            FROM spelling GROUP BY term_set, term
        ),
        seen AS (
            SELECT u.term_set, lower(u.meddra_pt) AS term, min(u.look) AS first_look
            FROM results.{UNEXPECTED_TERMS} AS u JOIN results.{LOOKS} AS l USING (run_id)
            WHERE l.surveillance = $name AND u.look < $look
            GROUP BY ALL
        )
        SELECT $look AS look, now.term_set, now.meddra_pt, CAST(now.n_events AS BIGINT) AS n_events,
               CAST(now.n_within_30_days AS BIGINT) AS n_within_30_days,
               CAST(coalesce(seen.first_look, $look) AS INTEGER) AS first_look
        FROM now LEFT JOIN seen USING (term_set, term)
        ORDER BY now.term_set DESC, now.meddra_pt""", params={"name": surveillance.name, "look": look}).pl()


# ------------------------------------------------------------------------------------------ alerting

def look_history(con, run_id: int) -> tuple[dict | None, pl.DataFrame]:
    """The run's results.looks row and the sequential test of every look up to the run's: earlier looks as
    the runs that made them computed them, the run's look as the run carries it (what the report shows)."""
    looks = con.sql(f"SELECT * FROM results.{LOOKS} WHERE run_id = $run", params={"run": run_id}).pl()
    if looks.is_empty():
        return None, pl.DataFrame()
    look = looks.row(0, named=True)
    history = con.sql(f"""
        SELECT t.* FROM results.{SEQUENTIAL_TEST} AS t JOIN results.{LOOKS} AS l USING (run_id)
        WHERE l.surveillance = $name AND l.new_look AND t.look < $look AND t.run_id < $run
        UNION ALL
        SELECT * FROM results.{SEQUENTIAL_TEST} WHERE run_id = $run
        ORDER BY look""", params={"name": look["surveillance"], "look": look["look"], "run": run_id}).pl()
    return look, history


def alert(look: dict, history: pl.DataFrame) -> dict:
    """What the flow run publishes for an epidemiologist: the look table (exact O, E for the study team,
    as in the warehouse) and, when the look is in signal, the event's resource and payload."""
    current = history.filter(pl.col("look") == look["look"]).row(0, named=True)
    table = [{"look": r["look"], "observed": r["observed"], "expected": round(r["expected"], 3),
              "sir": None if r["sir"] is None else round(r["sir"], 3), "llr": round(r["llr"], 4),
              "critical_events": r["critical_events"], "alpha_spent": r["alpha_spent"], "signal": r["signal"],
              "note": r["note"] or ""} for r in history.iter_rows(named=True)]
    event = None
    if current["signal"]:
        event = {"event": SIGNAL_EVENT,
                 "resource": {"prefect.resource.id": f"vigil.surveillance.{look['surveillance']}",
                              "prefect.resource.name": f"surveillance {look['surveillance']}"},
                 "payload": {"run_id": int(look["run_id"]), "look": int(look["look"]),
                             "signal_look": current["signal_look"], "new_signal": current["status"] == "signal"
                             and bool(look["new_look"]), "observed": int(current["observed"]),
                             "expected": float(current["expected"]), "data_cuts": json.loads(look["data_cuts"])}}
    message = (f"look {look['look']}: SIGNAL (first at look {current['signal_look']}); O = {current['observed']}, "
               f"E = {current['expected']:.2f}" if current["signal"] else
               f"look {look['look']}: no signal; O = {current['observed']}, E = {current['expected']:.2f}")
    return {"signal": bool(current["signal"]), "table": table, "event": event, "message": message}
