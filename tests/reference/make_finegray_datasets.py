"""An extra dataset for the Fine-Gray reference (tests/reference/finegray_reference.R).

Run from the project root:  python tests/reference/make_finegray_datasets.py tests/reference/data
Writes <out>/finegray_ties.csv: 500 patients shaped like the other reference datasets (t in days
>= 1; status 0 censored, 1 event, 2 death without the event; the SAP strata), drawn by numpy's
generator with a fixed seed, so the same script writes the same bytes.

  finegray_ties  follow-up of 1 to 25 days: events, deaths and censorings share most days (crr's
                 censoring weights at t-, its risk sets and its variance on tied days); age_group
                 18-29, the reference level, has no event (every age_group coefficient infinite);
                 charlson >=2 has patients but no event (coefficient -> -inf); edss >=6.0 has no
                 patients; sex U is rare.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

LEVELS = {
    "site": (["A01", "B02"], [0.6, 0.4]),
    "sex": (["F", "M", "U"], [0.62, 0.33, 0.05]),
    "age_group": (["18-29", "30-39", "40-49", ">=50"], [0.2, 0.3, 0.3, 0.2]),
    "charlson": (["0", "1", ">=2"], [0.7, 0.2, 0.1]),
    "prior_dmt": (["0", "1", ">=2"], [0.3, 0.4, 0.3]),
    "prior_high_efficacy": (["N", "Y"], [0.5, 0.5]),
    "edss": (["0-2.5", "3.0-5.5", ">=6.0", "unknown"], [0.5, 0.35, 0.0, 0.15]),
}
LOG_HR = {("sex", "M"): 0.3, ("age_group", ">=50"): 0.5, ("charlson", "1"): 0.4, ("prior_dmt", ">=2"): -0.3,
          ("prior_high_efficacy", "Y"): 0.4, ("edss", "3.0-5.5"): 0.3, ("edss", "unknown"): -0.2}


def finegray_ties(n: int = 500, seed: int = 20260311) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {"patient_id": np.array([f"F{i:07d}" for i in range(n)])}
    linear = np.zeros(n)
    for name, (labels, weights) in LEVELS.items():
        weights = np.asarray(weights) / np.sum(weights)
        drawn = np.asarray(labels, dtype=object)[rng.choice(len(labels), size=n, p=weights)]
        columns[name] = drawn
        for (variable, level), beta in LOG_HR.items():
            if variable == name:
                linear += beta * (drawn == level)
    event_day = np.ceil(rng.exponential(30 / np.exp(linear)))
    death_day = np.ceil(rng.exponential(60, size=n))
    censor_day = rng.integers(1, 26, size=n).astype(float)
    t = np.minimum(np.minimum(event_day, death_day), censor_day)
    status = np.where(t == event_day, 1, np.where(t == death_day, 2, 0))
    # no event in age_group 18-29 (the reference) nor in charlson >=2: those become deaths or censorings
    no_event = (columns["age_group"] == "18-29") | (columns["charlson"] == ">=2")
    status = np.where(no_event & (status == 1), np.where(rng.random(n) < 0.4, 2, 0), status)
    columns["t"] = t.astype(int)
    columns["status"] = status
    return columns


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = finegray_ties()
    order = ["patient_id", "t", "status", *LEVELS]
    with open(out / "finegray_ties.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(order)
        writer.writerows(zip(*(columns[c].tolist() for c in order)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/reference/data"))
