"""P3 (SAP 8): the site-stratified Cox model by distributed Newton-Raphson equals R's
coxph(... + strata(site)) on the pooled rows (the committed output of analysis_v11_reference.R) and the
single warehouse's multivariable_site_stratified model; a site that does not answer fails the round and
the fit resumes from the last complete one."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from analysis_data import load_analysis
from test_analysis_reference_v11 import read_expected

from vigil.network.distributed import Rounds, SiteUnavailable, distributed_cox, local_site

pytestmark = pytest.mark.slow


def site_warehouses(name: str) -> dict[str, duckdb.DuckDBPyConnection]:
    """One in-memory warehouse per site of the reference dataset, holding only its own patients."""
    pooled = duckdb.connect()
    load_analysis(pooled, name)
    sites = [s for (s,) in pooled.execute("SELECT DISTINCT site FROM analysis.outcomes ORDER BY 1").fetchall()]
    warehouses = {}
    for site in sites:
        con = duckdb.connect()
        con.execute("CREATE SCHEMA analysis")
        frame = pooled.sql("SELECT * FROM analysis.outcomes WHERE site = $site", params={"site": site}).pl()
        con.register("_rows", frame.to_arrow())
        con.execute("CREATE TABLE analysis.outcomes AS SELECT * FROM _rows")
        warehouses[site] = con
    return warehouses


def asker(warehouses, fail: dict | None = None):
    answers = {site: local_site(con) for site, con in warehouses.items()}
    asked = dict.fromkeys(warehouses, 0)  # per site: a round asks its sites at the same time

    def ask(site, request):
        asked[site] += 1
        if fail and fail["site"] == site and fail["at"] == asked[site]:
            raise SiteUnavailable(f"site {site} did not answer within 60 s")
        return answers[site](request)
    return ask


@pytest.mark.parametrize("name", ["ordinary", "edge_cases"])
def test_distributed_cox_equals_r_strata_site_on_the_pooled_rows(name):
    warehouses = site_warehouses(name)
    fit = distributed_cox(asker(warehouses), list(warehouses), "first_serious")
    expected = read_expected(name, "cox").filter(pl.col("outcome") == "first_serious", pl.col("coef").is_not_null())
    ours = {n: i for i, n in enumerate(fit.names)}
    assert len(expected) == len(fit.names)
    for row in expected.iter_rows(named=True):
        i = ours[f"{row['variable']}[{row['level']}]"]
        assert fit.coef[i] == pytest.approx(row["coef"], abs=1e-6)
        assert fit.se[i] == pytest.approx(row["se"], abs=1e-6)
        assert fit.p_value[i] == pytest.approx(row["p_value"], abs=1e-6)
        assert fit.hr[i] == pytest.approx(row["hr"], rel=1e-6)
        assert fit.ci_lower[i] == pytest.approx(row["ci_lower"], rel=1e-6)
        assert fit.ci_upper[i] == pytest.approx(row["ci_upper"], rel=1e-6)
    assert (fit.n_patients, fit.n_events) == (expected["n_patients"][0], expected["n_events"][0])
    models = read_expected(name, "cox_models").filter(pl.col("outcome") == "first_serious",
                                                       pl.col("model") == "multivariable_site_stratified")
    assert fit.loglik == pytest.approx(models["loglik"][0], abs=1e-6)


def test_a_site_that_does_not_answer_fails_the_round_and_the_fit_resumes_from_the_last_complete_one():
    warehouses = site_warehouses("ordinary")
    sites = list(warehouses)
    whole = distributed_cox(asker(warehouses), sites, "first_serious")
    saved: list[Rounds] = []

    def keep(state: Rounds):
        saved.append(Rounds(presence=state.presence, least=dict(state.least), names=list(state.names),
                            beta=None if state.beta is None else state.beta.copy(), loglik=state.loglik,
                            history=[dict(h) for h in state.history]))

    # the last site fails in the 4th exchange: presence, the scores at 0, the first step, the second step
    with pytest.raises(SiteUnavailable, match=sites[-1]):
        distributed_cox(asker(warehouses, {"at": 4, "site": sites[-1]}), sites, "first_serious",
                        on_round=keep)
    last = saved[-1]
    assert len(last.history) == 1  # one Newton step completed; the failed round changed nothing
    resumed = distributed_cox(asker(warehouses), sites, "first_serious", resume=last)
    np.testing.assert_allclose(resumed.coef, whole.coef, atol=1e-9)
    assert resumed.rounds == whole.rounds


def test_a_start_near_the_maximum_reaches_the_same_fit_in_fewer_rounds():
    warehouses = site_warehouses("ordinary")
    sites = list(warehouses)
    from_zero = distributed_cox(asker(warehouses), sites, "first_serious")
    nearby = {name: float(c) + 0.05 for name, c in zip(from_zero.names, from_zero.coef)}  # as P2's pooled HRs
    warm = distributed_cox(asker(warehouses), sites, "first_serious", start=nearby)
    np.testing.assert_allclose(warm.coef, from_zero.coef, atol=1e-9)
    np.testing.assert_allclose(warm.se, from_zero.se, atol=1e-9)
    assert warm.rounds < from_zero.rounds
    for far in (2.0, 800.0):  # far off: step halving brings it back; beyond exp's range: from 0
        start = {name: far for name in from_zero.names}
        np.testing.assert_allclose(distributed_cox(asker(warehouses), sites, "first_serious", start=start).coef,
                                   from_zero.coef, atol=1e-9)
