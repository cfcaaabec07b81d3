"""Fixed datasets for the R reference of SAP A8, A9 and A11 (tests/reference/rates_reference.R).

Run from the project root:  python tests/reference/make_rates_datasets.py tests/reference/data
Every draw comes from numpy's generator with a fixed seed: the same script writes the same bytes,
so the committed CSVs and the committed R output stay in step. Person-time is written as whole
days (`person_days`) so that R and Python read exactly the same numbers; both take
person-years = person_days / 365.25.

  windows_aggregated.csv  A9: serious-infection episodes and person-time aggregated by risk window
                          ('0-30', '31-90', '91-365', '>365'; reference '>365') x age_group x sex x
                          edss (192 rows), counts overdispersed across rows (gamma frailty, shape 4).
  windows_zero_level.csv  the same shape with sex U having no episode at all (a zero-count level:
                          the Poisson and negative-binomial MLE of its coefficient is -Inf).
  windows_aliased.csv     sex U occurs only with edss 'unknown' and edss 'unknown' only with sex U,
                          so the edss=unknown column equals the sex=U column (R: NA for edss=unknown).
  windows_separated.csv   age_group x sex x edss ('0-2.5', '3.0-5.5') with sex U only at age >=50, and
                          no episode at age >=50 in F and M: no single level lacks events, but the
                          MLE is at age>=50 -> -Inf, sex=U -> +Inf (their sum is finite).
  binomial_cases.csv      A8: (k, n) pairs for Clopper-Pearson, k = 0 and k = n included (n >= 1).
  standardisation.csv     A11: events and person-time per site x charlson x age_group x sex cell;
                          site SE03 has no person-time in (>=50, U) and charlson >=2 none in
                          (18-29, U) (cells left out of those strata's standard); site IS04 is
                          small and has no event.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import polars as pl

WINDOWS = ["0-30", "31-90", "91-365", ">365"]          # reference '>365' (last here, first in the models)
AGE = ["18-29", "30-39", "40-49", ">=50"]
SEX = ["F", "M", "U"]
EDSS = ["0-2.5", "3.0-5.5", ">=6.0", "unknown"]
CHARLSON = ["0", "1", ">=2"]

WINDOW_SHARE = {"0-30": 0.07, "31-90": 0.13, "91-365": 0.45, ">365": 0.35}
WINDOW_RR = {"0-30": 2.2, "31-90": 1.6, "91-365": 1.2, ">365": 1.0}
AGE_SHARE = {"18-29": 0.2, "30-39": 0.35, "40-49": 0.28, ">=50": 0.17}
AGE_RR = {"18-29": 1.0, "30-39": 1.1, "40-49": 1.3, ">=50": 1.7}
SEX_SHARE = {"F": 0.68, "M": 0.305, "U": 0.015}
SEX_RR = {"F": 1.0, "M": 1.15, "U": 1.0}
EDSS_SHARE = {"0-2.5": 0.45, "3.0-5.5": 0.33, ">=6.0": 0.12, "unknown": 0.10}
EDSS_RR = {"0-2.5": 1.0, "3.0-5.5": 1.4, ">=6.0": 2.0, "unknown": 1.2}


def _windows(patterns: list[tuple[str, str, str, str]], seed: int, total_years: float, rate: float,
             frailty_shape: float, sex_share: dict[str, float] | None = None) -> pl.DataFrame:
    """One row per (window, age_group, sex, edss) pattern: person-days ~ total x shares x a
    lognormal jitter, episodes ~ Poisson(rate x RRs x person-years x Gamma(shape, 1/shape))."""
    rng = np.random.default_rng(seed)
    rows = []
    for window, age, sex, edss in patterns:
        share = WINDOW_SHARE[window] * AGE_SHARE[age] * (sex_share or SEX_SHARE)[sex] * EDSS_SHARE[edss]
        days = int(np.ceil(total_years * 365.25 * share * rng.lognormal(0.0, 0.3)))
        mean = rate * WINDOW_RR[window] * AGE_RR[age] * SEX_RR[sex] * EDSS_RR[edss] * days / 365.25
        events = int(rng.poisson(mean * rng.gamma(frailty_shape, 1 / frailty_shape)))
        rows.append((window, age, sex, edss, events, days))
    return pl.DataFrame(rows, schema=["window", "age_group", "sex", "edss", "events", "person_days"], orient="row")


def windows_aggregated() -> pl.DataFrame:
    return _windows(list(itertools.product(WINDOWS, AGE, SEX, EDSS)), seed=20260901,
                    total_years=30000.0, rate=0.03, frailty_shape=4.0)


def windows_zero_level() -> pl.DataFrame:
    frame = _windows(list(itertools.product(WINDOWS, AGE, SEX, EDSS)), seed=20260902,
                     total_years=12000.0, rate=0.03, frailty_shape=6.0)
    return frame.with_columns(pl.when(pl.col("sex") == "U").then(0).otherwise(pl.col("events")).alias("events"))


def windows_aliased() -> pl.DataFrame:
    known = [(s, e) for s in ("F", "M") for e in EDSS[:3]] + [("U", "unknown")]
    patterns = [(w, a, s, e) for w in WINDOWS for a in AGE for s, e in known]
    return _windows(patterns, seed=20260903, total_years=200000.0, rate=0.03, frailty_shape=5.0)


def windows_separated() -> pl.DataFrame:
    patterns = [(w, a, s, e) for w in WINDOWS for a in AGE for s in ("F", "M") for e in EDSS[:2]]
    patterns += [(w, ">=50", "U", e) for w in WINDOWS for e in EDSS[:2]]
    frame = _windows(patterns, seed=20260906, total_years=20000.0, rate=0.03, frailty_shape=8.0,
                     sex_share={"F": 0.6, "M": 0.3, "U": 0.1})
    no_events = (pl.col("age_group") == ">=50") & (pl.col("sex") != "U")
    return frame.with_columns(pl.when(no_events).then(0).otherwise(pl.col("events")).alias("events"))


def binomial_cases() -> pl.DataFrame:
    fixed = [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 10), (3, 10), (10, 10), (1, 37), (5, 100),
             (50, 100), (99, 100), (0, 1000), (1, 1000), (999, 1000), (1000, 1000), (0, 25000),
             (123, 25000), (24999, 25000), (12345, 67890)]
    rng = np.random.default_rng(20260904)
    n = rng.integers(1, 5000, size=20)
    k = np.floor(rng.beta(0.7, 3.0, size=20) * (n + 1)).astype(int).clip(0, n)
    pairs = fixed + list(zip(k.tolist(), n.tolist()))
    return pl.DataFrame(pairs, schema=["k", "n"], orient="row")


def standardisation() -> pl.DataFrame:
    rng = np.random.default_rng(20260905)
    sites = {"DK01": 9000.0, "NO02": 5000.0, "SE03": 3000.0, "IS04": 40.0}
    site_age = {"DK01": [0.2, 0.3, 0.3, 0.2], "NO02": [0.3, 0.35, 0.25, 0.1],
                "SE03": [0.15, 0.25, 0.3, 0.3], "IS04": [0.25, 0.25, 0.25, 0.25]}
    charlson_share = {"0": 0.75, "1": 0.17, ">=2": 0.08}
    rows = []
    for site, years in sites.items():
        for charlson in CHARLSON:
            for a, age in enumerate(AGE):
                for sex in SEX:
                    empty = (site == "SE03" and age == ">=50" and sex == "U") or \
                            (charlson == ">=2" and age == "18-29" and sex == "U")
                    share = site_age[site][a] * charlson_share[charlson] * SEX_SHARE[sex]
                    days = 0 if empty else int(np.ceil(years * 365.25 * share * rng.lognormal(0.0, 0.2)))
                    rate = 0.025 * AGE_RR[age] * SEX_RR[sex] * (1.0, 1.3, 1.8)[CHARLSON.index(charlson)]
                    events = 0 if site == "IS04" else int(rng.poisson(rate * days / 365.25))
                    rows.append((site, charlson, age, sex, events, days))
    return pl.DataFrame(rows, schema=["site", "charlson", "age_group", "sex", "events", "person_days"],
                        orient="row")


DATASETS = {
    "windows_aggregated": windows_aggregated,
    "windows_zero_level": windows_zero_level,
    "windows_aliased": windows_aliased,
    "windows_separated": windows_separated,
    "binomial_cases": binomial_cases,
    "standardisation": standardisation,
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in DATASETS.items():
        frame = make()
        frame.write_csv(out / f"{name}.csv")
        extra = f", {frame['events'].sum()} events" if "events" in frame.columns else ""
        print(f"{name}: {frame.height} rows{extra}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
