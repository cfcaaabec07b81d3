"""Fixed datasets for the R reference (tests/reference/survival_reference.R) and the tests.

Run from the project root:  python tests/reference/make_datasets.py tests/reference/data
Writes <out>/<name>.csv for every dataset of DATASETS. The rows are shaped like
analysis.outcomes for one outcome (t in days >= 1; status 0 censored, 1 event, 2 death without
the event) plus the two columns of analysis.all_serious that incidence needs (t_followup, the
days from index to exit, and n_serious, the recurrent episodes, at least status == 1). Every
draw comes from numpy's generator seeded by the dataset's seed: the same script writes the
same bytes, so the committed CSVs and R output stay in step.

  ordinary     3,000 patients, about 500 first events: ties on most days, every SAP level
               present, sex U rare (few events).
  few_events   600 patients, about 20 events: sex has one level (no log-rank, no Cox), edss
               >=6.0 has no patients, some levels have no event or one event, one site of two
               patients whose last patient has the event (KM reaches 1 - S = 1, CIs undefined)
               and whose follow-up ends before day 365 (later days are beyond the curve).

`generate` is also used by the analysis benchmark to make large analysis-shaped tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from vigil.synth import SERIOUS_INFECTION_HAZARD_RATIOS

LEVELS = {
    "age_group": (["18-29", "30-39", "40-49", ">=50"], [0.25, 0.35, 0.25, 0.15]),
    "sex": (["F", "M", "U"], [0.68, 0.31, 0.01]),
    "charlson": (["0", "1", ">=2"], [0.75, 0.17, 0.08]),
    "prior_dmt": (["0", "1", ">=2"], [0.30, 0.40, 0.30]),
    "prior_high_efficacy": (["N", "Y"], [0.60, 0.40]),
    "edss": (["0-2.5", "3.0-5.5", ">=6.0", "unknown"], [0.45, 0.35, 0.10, 0.10]),
}
HAZARD_RATIOS = SERIOUS_INFECTION_HAZARD_RATIOS  # the generator's known answers
STRATA = ["site", "sex", "age_group", "charlson", "prior_dmt", "prior_high_efficacy", "edss"]


def generate(n: int, seed: int, *, event_rate: float = 0.04, death_rate: float = 0.01,
             recurrent_rate: float = 0.03, max_days: int = 3650,
             sites: tuple[list[str], list[float]] = (["DK01", "NO02", "SE03"], [0.5, 0.3, 0.2]),
             levels: dict | None = None) -> pl.DataFrame:
    """n patients: strata drawn independently, exponential event and death times (rates per year,
    event rate times the hazard ratios above), uniform administrative censoring, whole days."""
    rng = np.random.default_rng(seed)
    levels = {**LEVELS, **(levels or {})}
    columns: dict[str, np.ndarray] = {}
    hazard = np.full(n, event_rate / 365.25)
    for name, (labels, weights) in {"site": sites, **levels}.items():
        weights = np.asarray(weights, dtype=float)
        drawn = np.asarray(labels, dtype=object)[rng.choice(len(labels), size=n, p=weights / weights.sum())]
        columns[name] = drawn
        for level, ratio in HAZARD_RATIOS.get(name, {}).items():
            hazard[drawn == level] *= ratio
    event_day = np.ceil(rng.exponential(1 / hazard))
    death_day = np.ceil(rng.exponential(365.25 / death_rate, size=n))
    exit_day = np.minimum(rng.integers(1, max_days + 1, size=n), death_day)
    t = np.minimum(event_day, exit_day).astype(np.int64)
    status = np.where(event_day <= exit_day, 1, np.where(death_day <= exit_day, 2, 0))
    extra = rng.poisson(recurrent_rate * exit_day / 365.25)
    return pl.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(n)] if n <= 100_000 else np.arange(n).astype(str),
        "t": t,
        "status": status.astype(np.int64),
        "t_followup": exit_day.astype(np.int64),
        "n_serious": (status == 1).astype(np.int64) + extra,
        **{name: columns[name].astype(str) for name in STRATA},
    })


def ordinary() -> pl.DataFrame:
    return generate(3000, seed=20261125, event_rate=0.025)


def few_events() -> pl.DataFrame:
    base = generate(598, seed=20261126, event_rate=0.005, death_rate=0.02, recurrent_rate=0.002,
                    levels={"sex": (["F"], [1.0]),
                            "edss": (["0-2.5", "3.0-5.5", "unknown"], [0.6, 0.3, 0.1]),
                            "charlson": (["0", "1", ">=2"], [0.90, 0.07, 0.03])})
    # edss unknown: no event (its events become censored at the same day); charlson >=2: one event
    # (the earliest; the others become censored).
    event = pl.col("status") == 1
    first_in_level = pl.col("patient_id") == pl.col("patient_id").filter(event).sort_by(
        pl.col("t").filter(event)).first().over("charlson")
    base = base.with_columns(
        pl.when(event & ((pl.col("edss") == "unknown")
                         | ((pl.col("charlson") == ">=2") & ~first_in_level)))
        .then(pl.lit(0, dtype=pl.Int64)).otherwise(pl.col("status")).alias("status"))
    # Site XX09: two patients; the first is censored on day 100, the second has the event on day 200,
    # when they alone are at risk: 1 - S reaches 1 and the log(-log) interval is undefined there.
    tiny = pl.DataFrame({
        "patient_id": ["P9999998", "P9999999"], "t": [100, 200], "status": [0, 1],
        "t_followup": [100, 200], "n_serious": [0, 1], "site": ["XX09", "XX09"], "sex": ["F", "F"],
        "age_group": ["30-39", "40-49"], "charlson": ["0", "0"], "prior_dmt": ["1", "1"],
        "prior_high_efficacy": ["N", "Y"], "edss": ["0-2.5", "3.0-5.5"],
    })
    return pl.concat([base, tiny.cast(base.schema)])


DATASETS = {"ordinary": ordinary, "few_events": few_events}


def aliased(seed: int = 3, n: int = 400) -> pl.DataFrame:
    """Cox with an aliased level (tests/reference/aliased_reference.R): a, c in {0, 1} and b = a in
    every patient, so the column of b is that of a: coxph reports NA for b and fits a and c."""
    rng = np.random.default_rng(seed)
    a, c = rng.integers(0, 2, n), rng.integers(0, 2, n)
    event_t = np.ceil(rng.exponential(200 / np.exp(0.6 * a - 0.4 * c)))
    censor_t = np.ceil(rng.uniform(20, 400, n))
    return pl.DataFrame({"t": np.minimum(event_t, censor_t).astype(int), "status": (event_t <= censor_t).astype(int),
                         "a": np.where(a, "a1", "a0"), "b": np.where(a, "b1", "b0"), "c": np.where(c, "c1", "c0")})


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in DATASETS.items():
        frame = make()
        frame.write_csv(out / f"{name}.csv")
        events = frame.group_by("status").len().sort("status").rows()
        print(f"{name}: {frame.height} patients, status counts {events}")
    aliased().write_csv(out / "aliased.csv")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
