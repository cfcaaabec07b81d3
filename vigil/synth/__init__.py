"""Synthetic site deliveries for ALZ-PASS-INF that follow the extract spec (DTS v1.0) exactly.

`synthesize_study` writes one delivery folder per site and, beside them (never inside one),
the answers other tests compare the pipeline against:

  truth.parquet  one row per delivered patient row: the SAP quantities (cohort and attrition,
                 index and exit, strata, outcomes) computed the way the SAP defines them from
                 the rows as written, after the quarantine the injected faults cause;
  faults.csv     (faults=True) one row per delivered row the quarantine must catch: site, table,
                 line, the reason code the contract gives it, and the rule the fault was made for.

`make_refused_delivery` copies a good delivery and breaks it in one way that refuses it whole.

`synthesize_series` (module cuts) writes a series of cumulative deliveries per site, one per data cut,
consistent with each other (with the odd correction), and can raise the true infection rates from a
chosen day on, so that monitoring across data cuts (SAP section 7) has a known answer.

Generation is vectorised per site (numpy draws, polars frames, no loop over patients): a
million patients (about 19 million rows) take under a minute on two cores and 1.3 GB. Every
draw comes from one generator seeded by (seed, site number): the same arguments give the
same bytes.

Quarantine semantics assumed for faults.csv and the truth (those of vigil/ingest.py):
context values (the patient's existence, birth year and death date) come from the delivered
rows of patients and follow_up; a row gets the reason of the first rule it breaks, in contract
rule order; a patient whose row breaks a rule, or who has no follow_up row left unquarantined,
is quarantined (no_follow_up in the latter case), and then every other row of that patient that
breaks no rule of its own gets patient_quarantined.

Modules: parameters (rates, shares, term lists, hazard ratios), generator (drawing sites, patients
and tables), truth (the expected truth), faults (fault injection and refused deliveries), writers
(CSV/Parquet, manifests, hashing), study (synthesize_study, which ties them together), cuts
(synthesize_series: the same history delivered at a series of data cuts).
"""

from __future__ import annotations

from vigil.synth.cuts import SeriesResult, synthesize_series
from vigil.synth.faults import REFUSAL_KINDS, make_refused_delivery
from vigil.synth.generator import site_ids
from vigil.synth.parameters import (
    BASELINE_SERIOUS_RATE, CHARLSON, CHARLSON_HIERARCHY, CHARLSON_WEIGHT, EARLY_WINDOW_DAYS, EARLY_WINDOW_RATE_RATIO,
    HIGH_EFFICACY_DMT, MIN_PATIENTS_PER_SITE, MIN_PATIENTS_PER_SITE_WITH_FAULTS, NON_CHARLSON_CODES,
    NON_SERIOUS_TERMS, OPPORTUNISTIC_TERMS, SERIES_BASE_RATE_SCALE, SERIES_OPPORTUNISTIC_SCALE,
    SERIOUS_INFECTION_HAZARD_RATIOS, SERIOUS_TERMS, TRUTH_COLUMNS,
)
from vigil.synth.study import SynthResult, synthesize_study
from vigil.synth.writers import file_sha256

__all__ = [
    "BASELINE_SERIOUS_RATE", "CHARLSON", "CHARLSON_HIERARCHY", "CHARLSON_WEIGHT", "EARLY_WINDOW_DAYS",
    "EARLY_WINDOW_RATE_RATIO", "HIGH_EFFICACY_DMT", "MIN_PATIENTS_PER_SITE", "MIN_PATIENTS_PER_SITE_WITH_FAULTS",
    "NON_CHARLSON_CODES", "NON_SERIOUS_TERMS", "OPPORTUNISTIC_TERMS", "REFUSAL_KINDS", "SERIES_BASE_RATE_SCALE",
    "SERIES_OPPORTUNISTIC_SCALE", "SERIOUS_INFECTION_HAZARD_RATIOS", "SERIOUS_TERMS", "TRUTH_COLUMNS",
    "SeriesResult", "SynthResult", "file_sha256", "make_refused_delivery", "site_ids", "synthesize_series",
    "synthesize_study",
]
