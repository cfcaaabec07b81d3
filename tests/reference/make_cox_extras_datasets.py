"""A stratified dataset for the Cox-model extras' R reference (tests/reference/cox_extras_reference.R).

Run from the project root:  python tests/reference/make_cox_extras_datasets.py tests/reference/data
Writes <out>/stratified.csv, drawn by numpy's generator with a fixed seed, so the same script
writes the same bytes and the committed CSV and R output stay in step.

  stratified  600 patients shaped like the other reference datasets (t in days >= 1; status 0
              censored, 1 event, 2 death without the event) in five sites whose baseline hazards
              differ (what strata(site) is for): A01, B02, C03, D04 and E05, the last with one
              patient, who has the event (a stratum whose risk set is that patient alone).
              Follow-up of 1 to 40 days, so events, deaths and censorings share most days.
              region is N for A01 and B02 and S for the others: constant within each site, so
              under strata(site) its column is aliased (coxph: NA), without strata it is estimable.
              Every level of sex, age_group and charlson has events.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

SITES = (["A01", "B02", "C03", "D04"], [0.4, 0.3, 0.2, 0.1])
SITE_BASELINE = {"A01": 1.0, "B02": 1.6, "C03": 0.6, "D04": 2.5}   # baseline hazard multipliers
REGION = {"A01": "N", "B02": "N", "C03": "S", "D04": "S", "E05": "S"}
LEVELS = {
    "sex": (["F", "M"], [0.65, 0.35]),
    "age_group": (["18-29", "30-39", "40-49", ">=50"], [0.2, 0.3, 0.3, 0.2]),
    "charlson": (["0", "1", ">=2"], [0.6, 0.25, 0.15]),
}
LOG_HR = {("sex", "M"): 0.3, ("age_group", "40-49"): 0.2, ("age_group", ">=50"): 0.5,
          ("charlson", "1"): 0.4, ("charlson", ">=2"): 0.7}


def stratified(n: int = 600, seed: int = 20260412) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    m = n - 1                                       # the last patient is site E05's only one
    site = np.asarray(SITES[0], dtype=object)[rng.choice(len(SITES[0]), size=m, p=SITES[1])]
    columns: dict[str, np.ndarray] = {"site": site}
    linear = np.log([SITE_BASELINE[s] for s in site])
    for name, (labels, weights) in LEVELS.items():
        drawn = np.asarray(labels, dtype=object)[rng.choice(len(labels), size=m, p=weights)]
        columns[name] = drawn
        for (variable, level), beta in LOG_HR.items():
            if variable == name:
                linear = linear + beta * (drawn == level)
    event_day = np.ceil(rng.exponential(40 / np.exp(linear)))
    death_day = np.ceil(rng.exponential(150, size=m))
    censor_day = rng.integers(1, 41, size=m).astype(float)
    t = np.minimum(np.minimum(event_day, death_day), censor_day)
    status = np.where(t == event_day, 1, np.where(t == death_day, 2, 0))
    out = {"patient_id": [f"S{i:07d}" for i in range(n)],
           "t": [*t.astype(int).tolist(), 12], "status": [*status.tolist(), 1],
           "site": [*site.tolist(), "E05"]}
    out["region"] = [REGION[s] for s in out["site"]]
    for name, (labels, _) in LEVELS.items():
        out[name] = [*columns[name].tolist(), labels[-1]]
    for name, (labels, _) in LEVELS.items():
        with_events = {lv for lv, s in zip(out[name], out["status"]) if s == 1}
        assert with_events == set(labels), f"{name}: a level without events"
    return out


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = stratified()
    order = ["patient_id", "t", "status", "site", "region", *LEVELS]
    with open(out / "stratified.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(order)
        writer.writerows(zip(*(columns[c] for c in order)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/reference/data"))
