"""P3 (SAP 8): A5's multivariable Cox model with a baseline hazard per site, fitted by distributed
Newton-Raphson, each site reached only through the functions of its side.

The site side (`site_presence`, `site_score`) reads the site's own warehouse (analysis.outcomes of its
latest run) and returns sums over its patients, never a row:
  round 0  per SAP level of each variable, whether the site has patients in it and whether it has
           events (the design's rules, vigil.analysis.cox.cox_design, need no more), and those counts
           where they are 0 or at least 5 (never 1-4, SAP 5): the coordinator hides a hazard ratio whose
           level or reference level may have fewer than 5 patients or events across the sites;
  round k  the Efron log partial likelihood, score vector and information matrix of its own patients
           at the coordinator's coefficients (its patients are one stratum: a baseline hazard per site).
The coordinator (`distributed_cox`) merges the presence (a level is present or has events when it does
at any site), so every site builds the same columns, then sums the sites' answers and takes a Newton
step, halving it while the summed log-likelihood falls, until the largest step is below 1e-10 (as the
single warehouse's fit, vigil.stats.survival.cox_efron). The sum over sites of the site-wise Efron
partial likelihoods is the stratified partial likelihood, so the result is the single warehouse's
`multivariable_site_stratified` model (R's coxph(... + strata(site)) on the pooled rows).

A round uses the answers of every site or none: a site that does not answer (the transport raises
SiteUnavailable naming it) fails the round, and the coordinator's state stays at the last complete
round (`Rounds`), from which `distributed_cox(..., resume=...)` goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import duckdb
import numpy as np
import polars as pl
from scipy import stats

from vigil.analysis.cox import cox_design, level_sizes
from vigil.report.disclosure import MIN_SHOWN
from vigil.cohort import strata
from vigil.stats.survival import Z95, cox_score_information

MAX_ROUNDS = 50
TOLERANCE = 1e-10  # largest Newton step at convergence, as vigil.stats.survival.cox_efron


class SiteUnavailable(RuntimeError):
    """A site did not answer a round (in time); the message names it."""


def _counts(con: duckdb.DuckDBPyConnection, outcome: str) -> pl.DataFrame:
    variables = ", ".join(strata.multivariable())
    return con.sql(f"""
        SELECT t, {variables}, count(*) FILTER (WHERE status = 1) AS n_events, count(*) AS n_leaving
        FROM analysis.outcomes WHERE outcome = $outcome
        GROUP BY ALL ORDER BY ALL""", params={"outcome": outcome}).pl()  # ordered: the same sums, to the last bit


def site_presence(con: duckdb.DuckDBPyConnection, outcome: str) -> dict[str, dict[str, list]]:
    """Round 0 at a site: variable -> level -> [has patients, has events, patients, events] (JSON-ready),
    a count given only when it is 0 or at least 5 (None: 1-4, SAP 5), for disclosure control of the result."""
    variables = list(strata.multivariable())
    sizes = level_sizes(_counts(con, outcome), variables)
    shown = lambda n: n if n == 0 or n >= MIN_SHOWN else None  # noqa: E731
    return {v: {lv: [p > 0, e > 0, shown(p), shown(e)] for lv, (p, e) in by_level.items()}
            for v, by_level in sizes.items()}


def merge_presence(answers: list[dict]) -> dict[str, dict[str, tuple[bool, bool]]]:
    """The network's presence: a level has patients (events) when it has them at any site."""
    merged: dict[str, dict[str, tuple[bool, bool]]] = {}
    for answer in answers:
        for v, by_level in answer.items():
            for lv, (p, e, *_) in by_level.items():
                was = merged.setdefault(v, {}).get(lv, (False, False))
                merged[v][lv] = (was[0] or bool(p), was[1] or bool(e))
    return merged


def least_counts(answers: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """(variable, level) -> the least the network's patients and events of the level can be: the counts the
    sites gave, plus 1 for each count 1-4 they withheld."""
    least: dict[tuple[str, str], tuple[int, int]] = {}
    for answer in answers:
        for v, by_level in answer.items():
            for lv, (p, e, n_p, n_e) in by_level.items():
                was = least.get((v, lv), (0, 0))
                least[(v, lv)] = (was[0] + (n_p if n_p is not None else 1),
                                  was[1] + (n_e if n_e is not None else 1))
    return least


def design_names(presence: dict) -> list[str]:
    """The model's columns for this presence, as every site builds them (vigil.analysis.cox.cox_design)."""
    variables = list(strata.multivariable())
    empty = pl.DataFrame({"t": [], **{v: [] for v in variables}, "n_events": [], "n_leaving": []},
                         schema={"t": pl.Float64, **{v: pl.Utf8 for v in variables}, "n_events": pl.Int64,
                                 "n_leaving": pl.Int64})
    design = cox_design(empty, variables, strata.sap_levels(), presence)
    return [] if design.data is None else design.data.names


def site_score(con: duckdb.DuckDBPyConnection, outcome: str, presence: dict, beta: list[float]) -> dict:
    """Round k at a site: the Efron log partial likelihood, score and information of the site's patients at
    `beta` (columns design_names(presence)), and the site's counts of the model as sums (patients, events),
    JSON-ready."""
    variables = list(strata.multivariable())
    design = cox_design(_counts(con, outcome), variables, strata.sap_levels(), presence)
    p = len(beta)
    if design.data is None or len(design.data.names) != p:
        raise ValueError(f"the site's design has {0 if design.data is None else len(design.data.names)} columns, "
                         f"the coordinator's {p}: the presence given is not the network's")
    if not len(design.data.time):
        loglik, score, information = 0.0, np.zeros(p), np.zeros((p, p))
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # a coefficient far off: -inf, the coordinator halves
            loglik, score, information = cox_score_information(design.data, np.asarray(beta, float))
    return {"loglik": float(loglik), "score": score.tolist(), "information": information.tolist(),
            "n_patients": design.n_patients, "n_events": design.n_events}


@dataclass
class Rounds:
    """The coordinator's state after each complete round: what resume starts from."""
    presence: dict | None = None
    least: dict = field(default_factory=dict)  # least_counts of the presence round
    names: list[str] = field(default_factory=list)
    beta: np.ndarray | None = None
    loglik: float | None = None
    history: list[dict] = field(default_factory=list)  # per complete round: beta, loglik, step, seconds


@dataclass
class DistributedCox:
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    hr: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    p_value: np.ndarray
    loglik: float
    n_patients: int
    n_events: int
    rounds: int
    sites: list[str]
    history: list[dict]
    least: dict = field(default_factory=dict)  # (variable, level) -> least patients and events across the sites


Ask = Callable[[str, dict], dict]  # (site, request) -> answer; raises SiteUnavailable


def _ask_all(ask: Ask, sites: list[str], request: dict) -> dict[str, dict]:
    """Every site's answer, the sites asked at the same time (a round waits for the slowest site, not for
    their sum); any SiteUnavailable fails the whole round, once every site has answered or failed."""
    return dict(zip(sites, at_once(lambda site: ask(site, request), sites)))


def at_once(function: Callable, items: list) -> list:
    """function(item) for every item, each in a thread of its own running in a copy of the caller's context
    (so that, in a Prefect flow, what the threads submit is a subflow run of the caller's), in items' order;
    the first exception is raised once every call has ended."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(len(items), 1)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, function, item) for item in items]
        return [future.result() for future in futures]


def distributed_cox(ask: Ask, sites: list[str], outcome: str, resume: Rounds | None = None,
                    on_round: Callable[[Rounds], None] | None = None, start: dict[str, float] | None = None
                    ) -> DistributedCox:
    """Fit P3 over `sites`, each asked through `ask(site, request)`: request {"kind": "presence", "outcome"}
    or {"kind": "score", "outcome", "presence", "beta"}, answered by site_presence / site_score on the site's
    warehouse. `resume`: the Rounds of an interrupted fit (on_round receives them after every complete
    round), from which it goes on. `start`: log hazard ratios to start from, by design name
    ("variable[level]"), e.g. P2's fixed-effect pooled estimates (0 for a name not given, and everywhere
    without it, as coxph): the maximum is the same, reached in fewer rounds from nearby. Raises
    SiteUnavailable when a site does not answer, FloatingPointError when Newton-Raphson does not converge."""
    import time

    state = resume or Rounds()
    if state.presence is None:
        answers = _ask_all(ask, sites, {"kind": "presence", "outcome": outcome})
        state.presence = merge_presence(list(answers.values()))
        state.least = least_counts(list(answers.values()))
        state.names = design_names(state.presence)
        if not state.names:
            raise ValueError("no variable has events in two or more levels across the sites: no model")
        state.beta = np.array([(start or {}).get(name, 0.0) for name in state.names], dtype=float)
        if on_round:
            on_round(state)
    presence = {v: {lv: list(pe) for lv, pe in by_level.items()} for v, by_level in state.presence.items()}

    def evaluate(beta):
        started = time.perf_counter()
        answers = _ask_all(ask, sites, {"kind": "score", "outcome": outcome, "presence": presence,
                                        "beta": [float(b) for b in beta]})
        loglik = sum(a["loglik"] for a in answers.values())
        score = np.sum([a["score"] for a in answers.values()], axis=0)
        information = np.sum([a["information"] for a in answers.values()], axis=0)
        return loglik, score, information, answers, time.perf_counter() - started

    beta = state.beta
    loglik, score, information, answers, seconds = evaluate(beta)
    if not np.isfinite(loglik) and np.any(beta):  # a start so far off that exp overflows: from 0, as coxph
        beta = state.beta = np.zeros(len(beta))
        loglik, score, information, answers, seconds = evaluate(beta)
    for _ in range(MAX_ROUNDS):
        step = np.linalg.solve(information, score)
        new_beta = beta + step
        new = evaluate(new_beta)
        halvings = 0
        while not new[0] >= loglik - 1e-12 * abs(loglik) and halvings < 30:  # step halving, as cox_efron
            step = step / 2
            new_beta = beta + step
            new = evaluate(new_beta)
            halvings += 1
        beta, (loglik, score, information, answers, seconds) = new_beta, new
        state.beta, state.loglik = beta, loglik
        state.history.append({"round": len(state.history) + 1, "beta": beta.tolist(), "loglik": loglik,
                              "max_step": float(np.max(np.abs(step))), "halvings": halvings,
                              "seconds": round(seconds, 4)})
        if on_round:
            on_round(state)
        if np.max(np.abs(step)) < TOLERANCE:
            break
    else:
        raise FloatingPointError(f"distributed Newton-Raphson did not converge in {MAX_ROUNDS} rounds: a hazard "
                                 "ratio may be 0 or infinite (monotone likelihood)")
    se = np.sqrt(np.diag(np.linalg.inv(information)))
    return DistributedCox(
        names=state.names, coef=beta, se=se, hr=np.exp(beta), ci_lower=np.exp(beta - Z95 * se),
        ci_upper=np.exp(beta + Z95 * se), p_value=2 * stats.norm.sf(np.abs(beta / se)), loglik=loglik,
        n_patients=sum(a["n_patients"] for a in answers.values()),
        n_events=sum(a["n_events"] for a in answers.values()), rounds=len(state.history), sites=list(sites),
        history=state.history, least=state.least)


def local_site(con: duckdb.DuckDBPyConnection) -> Callable[[dict], dict]:
    """A site's answer to a coordinator's request, on its own warehouse: what its Prefect flow runs."""
    def answer(request: dict) -> dict:
        if request["kind"] == "presence":
            return site_presence(con, request["outcome"])
        if request["kind"] == "score":
            return site_score(con, request["outcome"], request["presence"], request["beta"])
        raise ValueError(f"unknown request {request['kind']!r}")
    return answer
