"""An extra dataset for the SAP v1.1 reference (tests/reference/analysis_v11_reference.R, A5 extras, A8-A11).

Run from the project root:  python tests/reference/make_v11_datasets.py tests/reference/data
Writes <out>/edge_cases.csv, shaped like ordinary.csv (tests/reference/make_datasets.py): patient_id,
t (days >= 1), status (0 censored, 1 event, 2 death without the event), t_followup (days from index to
exit, >= t), n_serious (recurrent episodes, >= status == 1) and the SAP strata. Every draw comes from
numpy's generator with a fixed seed (numpy only, nothing from vigil), so the same script writes the
same bytes and the committed CSV and R output stay in step.

  edge_cases  600 patients: 598 drawn in sites A01 (reference), B02, C03, plus two sites of ONE patient:
              D04, whose patient has the event on day 182, a day with nine other events and four
              deaths (a column with a single 1 in Fine-Gray's site model, a stratum of one in the
              site-stratified Cox model, a level of one patient in the univariable site models), and
              E05, whose patient dies on day 182 (a site with a patient but no event, a competing
              event only: masked in Fine-Gray's site model, left out of the univariable Cox site
              model, a stratum of one without events in the site-stratified one).
              Whole-day times with many ties: event, death and exit days are rounded up to a multiple
              of 14 days (the A8 days 365 and 730 themselves: administrative exits on day 364 or 728
              are moved there), so events, deaths and censorings share most days, and events and
              deaths (status 1 and 2) share many.
              charlson >=2 has patients but no event (their events become censorings on the same
              day, t_followup staying the exit day) and no episode (n_serious 0); sex U is rare (a
              handful of patients).
              n_serious: the first event plus Poisson(0.25 per year of follow-up) recurrent
              episodes, so many patients have two or more (A9).
              As written: 196 events, 107 deaths, 297 censored; 50 of the 75 days with an event
              have a death too. In A9 no episode falls in window 0-30 (its rate ratio -> 0), and the
              multivariable negative-binomial fit is under-dispersed (MASS's theta stops at ~1377,
              "iteration limit reached"). In A10 crr's sandwich SE of D04 is 0.15 (the model-based
              one ~1.0): the comparison is with crr's.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

LEVELS = {
    "site": (["A01", "B02", "C03"], [0.5, 0.3, 0.2]),
    "sex": (["F", "M", "U"], [0.68, 0.31, 0.01]),
    "age_group": (["18-29", "30-39", "40-49", ">=50"], [0.25, 0.35, 0.25, 0.15]),
    "charlson": (["0", "1", ">=2"], [0.75, 0.17, 0.08]),
    "prior_dmt": (["0", "1", ">=2"], [0.30, 0.40, 0.30]),
    "prior_high_efficacy": (["N", "Y"], [0.60, 0.40]),
    "edss": (["0-2.5", "3.0-5.5", ">=6.0", "unknown"], [0.45, 0.35, 0.10, 0.10]),
}
LOG_HR = {("sex", "M"): 0.2, ("age_group", ">=50"): 0.5, ("age_group", "40-49"): 0.2, ("charlson", "1"): 0.4,
          ("prior_dmt", ">=2"): -0.3, ("prior_high_efficacy", "Y"): 0.3, ("edss", "3.0-5.5"): 0.3,
          ("edss", ">=6.0"): 0.6, ("site", "C03"): 0.3}
STEP = 14
COLUMNS = ["patient_id", "t", "status", "t_followup", "n_serious", "site", "sex", "age_group", "charlson",
           "prior_dmt", "prior_high_efficacy", "edss"]


def _days(x: np.ndarray) -> np.ndarray:
    """Days rounded up to a multiple of STEP."""
    return (np.ceil(x / STEP) * STEP).astype(np.int64)


def edge_cases(n: int = 598, seed: int = 20260412) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {"patient_id": np.array([f"E{i:07d}" for i in range(n)])}
    linear = np.zeros(n)
    for name, (labels, weights) in LEVELS.items():
        weights = np.asarray(weights) / np.sum(weights)
        drawn = np.asarray(labels, dtype=object)[rng.choice(len(labels), size=n, p=weights)]
        columns[name] = drawn
        for (variable, level), beta in LOG_HR.items():
            if variable == name:
                linear += beta * (drawn == level)
    event_raw = rng.exponential(3000 / np.exp(linear))            # days
    death_raw = rng.exponential(4000, size=n)
    admin_raw = rng.uniform(1, 2000, size=n)
    event_day, death_day, admin_day = _days(event_raw), _days(death_raw), _days(admin_raw)
    # the A8 days: administrative exits on day 364 or 728 are on 365 or 730
    admin_day = np.where(admin_day == 364, 365, np.where(admin_day == 728, 730, admin_day))
    exit_day = np.minimum(admin_day, death_day)
    t = np.minimum(event_day, exit_day)
    status = np.where(event_day <= exit_day, 1, np.where(death_day <= admin_day, 2, 0))
    extra = rng.poisson(0.25 * exit_day / 365.25)
    # charlson >=2: patients but no event (censored on the same day) and no episode
    none = columns["charlson"] == ">=2"
    status = np.where(none & (status == 1), 0, status)
    n_serious = np.where(none, 0, (status == 1) + extra)
    t_followup = exit_day
    out = {k: v.tolist() for k, v in columns.items()}
    out.update(t=t.tolist(), status=status.tolist(), t_followup=t_followup.tolist(),
               n_serious=n_serious.tolist())
    # the two sites of one patient
    singles = [
        {"patient_id": "E9999998", "t": 182, "status": 1, "t_followup": 700, "n_serious": 2, "site": "D04",
         "sex": "F", "age_group": "30-39", "charlson": "0", "prior_dmt": "1", "prior_high_efficacy": "N",
         "edss": "0-2.5"},
        {"patient_id": "E9999999", "t": 182, "status": 2, "t_followup": 182, "n_serious": 0, "site": "E05",
         "sex": "M", "age_group": "40-49", "charlson": "1", "prior_dmt": "0", "prior_high_efficacy": "Y",
         "edss": "3.0-5.5"},
    ]
    for row in singles:
        for c in COLUMNS:
            out[c].append(row[c])
    return out


DATASETS = {"edge_cases": edge_cases}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in DATASETS.items():
        columns = make()
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(zip(*(columns[c] for c in COLUMNS)))
        status = np.asarray(columns["status"])
        print(f"{name}: {status.size} patients, status counts {np.bincount(status).tolist()}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "data"))
