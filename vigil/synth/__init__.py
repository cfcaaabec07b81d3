"""Synthetic site deliveries for ALZ-PASS-INF that follow the extract spec (DTS v1.0) exactly.

`synthesize_study` writes one delivery folder per site and, beside them (never inside one),
the answers other tests compare the pipeline against:

  truth.parquet  one row per delivered patient row: the SAP quantities (cohort and attrition,
                 index and exit, strata, outcomes) computed the way the SAP defines them from
                 the rows as written, after the quarantine the injected faults cause;
  faults.csv     (faults=True) one row per delivered row the quarantine must catch: site, table,
                 line, the reason code the contract gives it, and the rule the fault was made for.

`make_refused_delivery` copies a good delivery and breaks it in one way that refuses it whole.

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
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from vigil.cohort.codelists import read_codelist
from vigil.contract import Contract, load_contract

# ---------------------------------------------------------------------------------------------
# What the generator builds in. The hazard ratios are the "known answers" of the Cox models.
# ---------------------------------------------------------------------------------------------

# Serious-infection hazard ratio of each SAP stratum level (reference levels and levels not
# listed: 1). A patient's hazard is the product over strata, times the baseline rate, times
# EARLY_WINDOW_RATE_RATIO in the first EARLY_WINDOW_DAYS after each course start.
SERIOUS_INFECTION_HAZARD_RATIOS: dict[str, dict[str, float]] = {
    "charlson": {"1": 1.3, ">=2": 1.8},
    "prior_dmt": {"1": 1.2, ">=2": 1.5},
    "prior_high_efficacy": {"Y": 1.4},
    "edss": {"3.0-5.5": 1.3, ">=6.0": 1.8},
    "age_group": {"30-39": 1.1, "40-49": 1.25, ">=50": 1.5},
    "sex": {"M": 1.15},
}
BASELINE_SERIOUS_RATE = 10 / 1000  # per person-year at the reference levels outside the early windows:
#                                    the crude rate of the whole cohort comes out near 28 per 1000
EARLY_WINDOW_DAYS = 90  # days 0..90 after a course start (day 0 = the course's first infusion)
EARLY_WINDOW_RATE_RATIO = 2.5
NON_SERIOUS_RATE = 300 / 1000  # per person-year; x1.5 in the early windows
OPPORTUNISTIC_WINDOW_DAYS = 180  # opportunistic infections cluster in the first months after a course

SITE_COUNTRIES = ("DK", "SE", "NO", "FI", "NL", "DE", "BE", "FR", "ES", "IT", "GB", "IE", "AT", "CH", "PL", "CZ")
MIN_PATIENTS_PER_SITE = 20  # every attrition step gets at least one patient per site
MIN_PATIENTS_PER_SITE_WITH_FAULTS = 150  # each fault takes its own patient
REFUSED_DELIVERY_PATIENTS = 50

HIGH_EFFICACY_DMT = frozenset(row[0] for row in read_codelist("dmt_classes").rows if row[2] == "Y")

# Charlson categories (named as in codelists/charlson_quan2005_icd10.csv): ICD-10 codes of the
# Quan et al. (2005) algorithm that the generator writes, and the 3-character blocks Quan assigns whole to the category (the
# bare block, e.g. I21, may then be written; E11, K70, I85 are split between categories).
CHARLSON: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "myocardial_infarction": (("I21.0", "I21.4", "I21.9", "I22.9", "I25.2"), frozenset({"I21", "I22"})),
    "congestive_heart_failure": (("I50.0", "I50.1", "I50.9", "I11.0", "I13.0", "I42.0", "I42.9", "I43.1"),
                                 frozenset({"I50", "I43"})),
    "peripheral_vascular_disease": (("I70.2", "I71.4", "I73.9", "I77.1", "K55.1", "Z95.8"), frozenset({"I70", "I71"})),
    "cerebrovascular_disease": (("G45.9", "I63.5", "I63.9", "I61.0", "I69.3", "H34.0"),
                        frozenset({"G45", "I63", "I61", "I69"})),
    "dementia": (("F00.1", "F01.1", "G30.1", "G30.9", "G31.1", "F05.1"), frozenset({"F00", "F01", "G30"})),
    "chronic_pulmonary_disease": (("J44.1", "J44.9", "J45.0", "J45.9", "J43.9", "J41.0", "J67.0", "I27.9"),
                          frozenset({"J44", "J45", "J43", "J41"})),
    "rheumatic_disease": (("M05.8", "M06.9", "M32.1", "M33.2", "M34.0", "M35.3", "M31.5"),
                  frozenset({"M05", "M06", "M32", "M33", "M34"})),
    "peptic_ulcer_disease": (("K25.9", "K26.7", "K27.9", "K28.3"), frozenset({"K25", "K26", "K27", "K28"})),
    "mild_liver_disease": (("B18.2", "K70.3", "K73.2", "K74.6", "K76.0", "Z94.4"), frozenset({"B18", "K73", "K74"})),
    "diabetes_without_complication": (("E10.9", "E11.1", "E11.8", "E11.9", "E13.9", "E14.9"), frozenset()),
    "diabetes_with_complication": (("E10.2", "E11.2", "E11.3", "E11.4", "E11.5", "E14.7"), frozenset()),
    "hemiplegia_paraplegia": (("G81.9", "G82.2", "G83.4", "G80.1", "G04.1"), frozenset({"G81", "G82"})),
    "renal_disease": (("N18.5", "N18.9", "I12.0", "Z99.2", "Z49.1", "N05.3", "N03.2", "N25.0"), frozenset({"N18"})),
    "any_malignancy": (("C50.4", "C50.9", "C18.7", "C34.1", "C43.5", "C71.9", "C85.9", "C91.1"),
                   frozenset({"C50", "C18", "C34", "C43", "C71", "C85", "C91"})),
    "moderate_severe_liver_disease": (("I85.0", "I85.9", "K70.4", "K72.1", "K72.9", "K76.6"), frozenset()),
    "metastatic_solid_tumour": (("C77.2", "C78.0", "C78.7", "C79.3", "C79.5"), frozenset({"C77", "C78", "C79"})),
    "aids_hiv": (("B20.0", "B20.6", "B21.0", "B22.7"), frozenset({"B20", "B21", "B22"})),
}
# Weights (Charlson 1987) and the mild/severe hierarchy (where both are present only the severe
# form counts, SAP section 3) come from the study code list, not from a copy here.
_CHARLSON_LIST = read_codelist("charlson_quan2005_icd10")
CHARLSON_WEIGHT = {row[0]: row[2] for row in _CHARLSON_LIST.rows}
CHARLSON_HIERARCHY = {row[0]: row[3] for row in _CHARLSON_LIST.rows if row[3] is not None}
# How often each category is drawn for a diagnosis (relative): an MS population, mostly young.
_CHARLSON_FREQUENCY = {
    "chronic_pulmonary_disease": 18, "diabetes_without_complication": 12, "cerebrovascular_disease": 9, "rheumatic_disease": 8, "any_malignancy": 8,
    "hemiplegia_paraplegia": 7, "renal_disease": 5, "mild_liver_disease": 5, "peptic_ulcer_disease": 5, "myocardial_infarction": 4,
    "diabetes_with_complication": 4, "congestive_heart_failure": 3, "peripheral_vascular_disease": 3,
    "metastatic_solid_tumour": 2, "aids_hiv": 2, "dementia": 1, "moderate_severe_liver_disease": 1,
}
# Diagnoses outside every Charlson category; G35 is multiple sclerosis itself.
NON_CHARLSON_CODES = ("G35", "E03.9", "F32.9", "F41.1", "M54.5", "I10", "E66.9", "N39.0", "D50.9", "K21.9", "H46")

# The SAP section 2 study term list (matched case-insensitively), with relative frequencies.
OPPORTUNISTIC_TERMS = {
    "Cytomegalovirus infection": 20, "Cytomegalovirus viraemia": 8, "Cytomegalovirus colitis": 3,
    "Cytomegalovirus hepatitis": 2, "Nocardiosis": 3, "Pulmonary nocardiosis": 3, "Cerebral nocardiosis": 1,
    "Listeriosis": 8, "Listeria meningitis": 4, "Tuberculosis": 4, "Pulmonary tuberculosis": 5,
    "Latent tuberculosis reactivation": 3, "Oesophageal candidiasis": 12, "Pneumocystis jirovecii pneumonia": 5,
    "Progressive multifocal leukoencephalopathy": 1, "Herpes zoster disseminated": 6, "Cryptococcosis": 1,
    "Aspergillosis": 3,
}
SERIOUS_TERMS = {
    "Pneumonia": 28, "Urinary tract infection": 14, "Sepsis": 8, "Cellulitis": 7, "Gastroenteritis": 7,
    "Pyelonephritis": 6, "Herpes zoster": 6, "Influenza": 6, "Lower respiratory tract infection": 6,
    "Bronchitis": 5, "Appendicitis": 4, "Urosepsis": 3,
}
NON_SERIOUS_TERMS = {
    "Nasopharyngitis": 25, "Upper respiratory tract infection": 20, "Urinary tract infection": 15,
    "Oral herpes": 8, "Sinusitis": 6, "Bronchitis": 5, "Influenza": 5, "Gastroenteritis": 4, "Herpes zoster": 4,
    "Oral candidiasis": 3, "Tonsillitis": 2, "Conjunctivitis": 2, "Vulvovaginal candidiasis": 1,
}
# Pathogens a site may report for a term (pathogen is free text; one holds a comma, so CSV
# readers must honour quoting).
PATHOGENS = {
    "Pneumonia": ("Streptococcus pneumoniae", "Haemophilus influenzae", "Mycoplasma pneumoniae"),
    "Urinary tract infection": ("Escherichia coli", "Escherichia coli, ESBL-producing", "Klebsiella pneumoniae"),
    "Pyelonephritis": ("Escherichia coli",), "Urosepsis": ("Escherichia coli",),
    "Sepsis": ("Staphylococcus aureus", "Escherichia coli", "Streptococcus pneumoniae"),
    "Cellulitis": ("Streptococcus pyogenes", "Staphylococcus aureus"),
    "Gastroenteritis": ("Norovirus", "Campylobacter jejuni", "Salmonella enteritidis"),
    "Herpes zoster": ("Varicella zoster virus",), "Herpes zoster disseminated": ("Varicella zoster virus",),
    "Influenza": ("Influenza A virus", "Influenza B virus"), "Oral herpes": ("Herpes simplex virus",),
    "Nasopharyngitis": ("Rhinovirus",), "Upper respiratory tract infection": ("Rhinovirus", "Coronavirus"),
    "Cytomegalovirus infection": ("Cytomegalovirus",), "Cytomegalovirus viraemia": ("Cytomegalovirus",),
    "Cytomegalovirus colitis": ("Cytomegalovirus",), "Cytomegalovirus hepatitis": ("Cytomegalovirus",),
    "Nocardiosis": ("Nocardia farcinica", "Nocardia nova"), "Pulmonary nocardiosis": ("Nocardia farcinica",),
    "Cerebral nocardiosis": ("Nocardia farcinica",), "Listeriosis": ("Listeria monocytogenes",),
    "Listeria meningitis": ("Listeria monocytogenes",), "Tuberculosis": ("Mycobacterium tuberculosis",),
    "Pulmonary tuberculosis": ("Mycobacterium tuberculosis",),
    "Latent tuberculosis reactivation": ("Mycobacterium tuberculosis",),
    "Oesophageal candidiasis": ("Candida albicans",), "Oral candidiasis": ("Candida albicans",),
    "Vulvovaginal candidiasis": ("Candida albicans",), "Pneumocystis jirovecii pneumonia": ("Pneumocystis jirovecii",),
    "Progressive multifocal leukoencephalopathy": ("JC virus",), "Cryptococcosis": ("Cryptococcus neoformans",),
    "Aspergillosis": ("Aspergillus fumigatus",),
}
SERIOUS_CRITERIA = {"hospitalisation": 70, "medically_important": 12, "hospitalisation|life_threatening": 8,
                    "hospitalisation|medically_important": 6, "hospitalisation|disability": 4}
FATAL_CRITERIA = {"death|hospitalisation": 60, "death": 25, "hospitalisation|life_threatening|death": 15}
SERIOUS_OUTCOMES = {"recovered": 70, "recovering": 10, "recovered_with_sequelae": 8, "unknown": 7,
                    "not_recovered": 5}
NON_SERIOUS_OUTCOMES = {"recovered": 85, "recovering": 8, "unknown": 5, "not_recovered": 2}
DMT_BEFORE_INDEX = {"IFNB": 22, "GA": 16, "TERI": 12, "DMF": 12, "FTY": 8, "NTZ": 8, "OCR": 3, "CLAD": 3,
                    "RTX": 3, "OFA": 2, "MITOX": 2, "OZA": 1.5, "SIPO": 1, "DAC": 1, "PONE": 0.5, "OTHER": 5}
DMT_AFTER_INDEX = {"OCR": 30, "OFA": 15, "RTX": 15, "NTZ": 10, "CLAD": 10, "DMF": 5, "TERI": 5, "OTHER": 10}

END_REASONS = ("lost_to_follow_up", "withdrawal", "other", "death", "data_cut")
_DEATH, _DATA_CUT = END_REASONS.index("death"), END_REASONS.index("data_cut")
SEXES = ("F", "M", "U")
MS_COURSES = ("RRMS", "SPMS", "PPMS", "CIS")
# Patients made to fall out at each SAP attrition step (share of a site, at least one each).
_NORMAL, _NO_INFUSION, _NOT_RRMS, _UNDER_18, _ENDS_BEFORE_INDEX = range(5)
_EXCLUSION_SHARES = {_NO_INFUSION: 0.015, _NOT_RRMS: 0.03, _UNDER_18: 0.015, _ENDS_BEFORE_INDEX: 0.01}
_COURSE_NUMBER_ERRORS = 0.01  # share of patients whose site-recorded course_number is wrong

# The truth column holding each SAP stratum variable's level.
_STRATUM_COLUMNS = {"charlson": "charlson_level", "prior_dmt": "prior_dmt_level",
                    "prior_high_efficacy": "prior_high_efficacy", "edss": "edss_level", "age_group": "age_group",
                    "sex": "sex"}
# truth.parquet, in this order; level columns hold the SAP's level labels.
TRUTH_COLUMNS = (
    "patient_id", "site_id", "in_cohort", "attrition_step", "index_date", "exit_date", "death", "age_at_index",
    "age_group", "sex", "charlson", "charlson_level", "prior_dmt", "prior_dmt_level", "prior_high_efficacy", "edss",
    "edss_level", "first_serious_date", "serious_episodes", "first_oi_date", "n_courses", "course_number_mismatch",
    "course_starts")
_POLARS_TYPES = {"str": pl.String, "int": pl.Int64, "dec": pl.Float64, "date": pl.Date, "flag": pl.String}
_EPOCH = date(1970, 1, 1)


def _render_codes(code: str, block_ok: bool) -> tuple[str, ...]:
    """The ways a site may write a code: E11.9, E119, the block (when it is unambiguous), E11.90, E1190."""
    if "." not in code:
        return (code,) * 5
    block, tail = code.split(".")
    return code, block + tail, block if block_ok else code, f"{code}0", f"{block}{tail}0"


_CODE_FORM_SHARES = (0.5, 0.25, 0.1, 0.08, 0.07)
_CATEGORIES = list(CHARLSON)
# Every Charlson code the generator writes, one row per code, one column per written form;
# a category's codes are rows _CATEGORY_FIRST[c] .. + _CATEGORY_SIZE[c].
_CHARLSON_FORMS = np.array([_render_codes(code, code.split(".")[0] in blocks)
                            for codes, blocks in CHARLSON.values() for code in codes])
_CATEGORY_SIZE = np.array([len(codes) for codes, _ in CHARLSON.values()])
_CATEGORY_FIRST = np.cumsum(_CATEGORY_SIZE) - _CATEGORY_SIZE
_OTHER_FORMS = np.array([_render_codes(code, True) for code in NON_CHARLSON_CODES])
_CODE_CATEGORY = pl.DataFrame(
    {"icd10_code": _CHARLSON_FORMS.ravel(),
     "category": np.repeat(np.repeat(_CATEGORIES, _CATEGORY_SIZE), 5),
     "weight": np.repeat(np.repeat([CHARLSON_WEIGHT[c] for c in CHARLSON], _CATEGORY_SIZE), 5).astype(np.int32)},
).unique(maintain_order=True)
if _CODE_CATEGORY["icd10_code"].is_duplicated().any():  # a written code must mean one category
    raise ValueError("synth: an ICD-10 rendering maps to two Charlson categories")

_ALL_TERMS = sorted(set(OPPORTUNISTIC_TERMS) | set(SERIOUS_TERMS) | set(NON_SERIOUS_TERMS))
# MedDRA codes are licensed: stable synthetic 8-digit codes stand in for them (9xxxxxxx).
_TERM_CODES = np.array([90_000_001 + 1_013 * i for i in range(len(_ALL_TERMS))], dtype=np.int64)
_OPPORTUNISTIC_LOWER = [t.lower() for t in OPPORTUNISTIC_TERMS]


@dataclass
class SynthResult:
    """What synthesize_study wrote."""

    deliveries: list[Path]  # one acceptable delivery folder per site
    rows: dict[str, int]  # data rows per spec table, summed over `deliveries`
    truth: Path
    faults: Path | None = None  # faults=True only
    refused: list[Path] = field(default_factory=list)  # deliveries that must be refused whole (faults=True)


def site_ids(sites: int) -> list[str]:
    """DK01, SE02, NO03, ...: deterministic site ids."""
    return [f"{SITE_COUNTRIES[i % len(SITE_COUNTRIES)]}{i + 1:02d}" for i in range(sites)]


def synthesize_study(out: Path, patients: int = 2000, sites: int = 3, seed: int = 1, faults: bool = False,
                     fmt: str = "csv", data_cut: date = date(2026, 6, 30),
                     created_at: datetime | None = None) -> SynthResult:
    """Write one delivery per site under `out`, plus truth.parquet (and faults.csv, and one delivery
    that must be refused, when `faults`). Refuses to overwrite anything it would write."""
    contract = load_contract()
    if fmt not in contract.formats:
        raise ValueError(f"format must be one of {contract.formats}, not {fmt!r}")
    minimum = MIN_PATIENTS_PER_SITE_WITH_FAULTS if faults else MIN_PATIENTS_PER_SITE
    sizes = _site_sizes(patients, sites)
    if min(sizes) < minimum:
        weights = _site_weights(sites)
        needed = int(np.ceil(minimum * weights.sum() / weights[-1]))
        raise ValueError(f"{sites} sites need {needed} patients (the smallest site gets "
                         f"{weights[-1] / weights.sum():.0%} of them and needs {minimum})")
    out = Path(out)
    cut = data_cut.isoformat()
    stamp = _created_at_text(data_cut, created_at)
    names = site_ids(sites)
    refused_site = f"XX{sites + 1:02d}"
    targets = [out / f"{s}_{cut}" for s in names] + [out / "truth.parquet"]
    if faults:
        targets += [out / "faults.csv", out / f"{refused_site}_{cut}"]
    if existing := [str(p) for p in targets if p.exists()]:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)

    deliveries, truths, fault_rows, rows = [], [], [], dict.fromkeys(contract.tables, 0)
    for number, (site, n) in enumerate(zip(names, sizes)):
        rng = np.random.default_rng([seed, number])
        tables = _generate_site(contract, site, n, rng, data_cut)
        if faults:
            tables, valid, site_faults = _inject_faults(contract, site, tables, rng, data_cut, fmt)
            fault_rows.append(site_faults)
        else:
            valid = tables
        truths.append(_truth(site, tables["patients"]["patient_id"].drop_nulls(), valid, data_cut))
        deliveries.append(_write_delivery(contract, out / f"{site}_{cut}", site, data_cut, stamp, fmt, tables))
        for name, frame in tables.items():
            rows[name] += frame.height
    truth_path = out / "truth.parquet"
    pl.concat(truths).write_parquet(truth_path)
    result = SynthResult(deliveries, rows, truth_path)
    if faults:
        result.faults = out / "faults.csv"
        pl.concat(fault_rows).write_csv(result.faults)
        # The refused delivery is a small clean site of its own, broken after it was written.
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            rng = np.random.default_rng([seed, sites])
            good = _write_delivery(contract, Path(scratch) / f"{refused_site}_{cut}", refused_site, data_cut, stamp,
                                   fmt, _generate_site(contract, refused_site, REFUSED_DELIVERY_PATIENTS, rng,
                                                       data_cut))
            result.refused.append(make_refused_delivery(good, out / good.name, "checksum"))
    return result


def _site_weights(sites: int) -> np.ndarray:
    """Sites of unequal size (weights 1, 1/1.3, 1/1.6, ...), largest first."""
    if sites < 1:
        raise ValueError("at least one site")
    return 1 / (1 + 0.3 * np.arange(sites))


def _site_sizes(patients: int, sites: int) -> list[int]:
    """Patients per site; the sizes sum to `patients`."""
    weights = _site_weights(sites)
    sizes = np.floor(patients * weights / weights.sum()).astype(int)
    sizes[: patients - sizes.sum()] += 1
    return sizes.tolist()


def _created_at_text(data_cut: date, created_at: datetime | None) -> str:
    """ISO UTC with Z; by default four days after the cut at 09:12, so that output is reproducible."""
    if created_at is None:
        created_at = datetime.combine(data_cut + timedelta(days=4), time(9, 12), tzinfo=timezone.utc)
    elif created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Day arithmetic on numpy arrays: days since 1970-01-01.
# ---------------------------------------------------------------------------------------------

def _day(d: date) -> int:
    return (d - _EPOCH).days


def _year_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _jan1(years: np.ndarray) -> np.ndarray:
    return (np.asarray(years) - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)


def _dates(days: np.ndarray) -> pl.Series:
    """Days (float NaN = missing) as a polars Date series."""
    return pl.Series(np.asarray(days, dtype=np.float64), nan_to_null=True).cast(pl.Int32).cast(pl.Date)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts[i] rows per owner i: each row's owner and its rank within the owner."""
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, rank


def _weights(labels: list[str], frequency: dict[str, float]) -> np.ndarray:
    w = np.array([frequency.get(label, 0) for label in labels], dtype=float)
    return w / w.sum()


_CATEGORY_WEIGHTS = _weights(_CATEGORIES, _CHARLSON_FREQUENCY)


def _pick(labels, index: np.ndarray) -> pl.Series:
    """labels[index] as a string series; index -1 = missing."""
    options = pl.Series(list(labels) + [None], dtype=pl.String)
    return options.gather(np.where(index < 0, len(labels), index))


# ---------------------------------------------------------------------------------------------
# One site: patients first, then every table from them (all vectorised).
# ---------------------------------------------------------------------------------------------

@dataclass
class _Site:
    """Patient-level draws of one site, arrays aligned with the patients table."""

    site: str
    cut: int  # data cut as a day number
    ids: pl.Series
    group: np.ndarray  # _NORMAL, or which attrition exclusion the patient is made for
    index0: np.ndarray  # planned first infusion day (the index date unless a fault moves it)
    birth_year: np.ndarray
    onset_year: np.ndarray  # float, NaN = missing
    sex: np.ndarray
    ms_course: np.ndarray
    end: np.ndarray  # followup_end_date
    end_reason: np.ndarray  # index into END_REASONS
    course_start: np.ndarray  # (n, 4) days after index0, -1 = no such course
    course_error: np.ndarray  # added to the site's course_number of the last course (usually 0)

    @property
    def n(self) -> int:
        return len(self.index0)


def _generate_site(contract: Contract, site: str, n: int, rng: np.random.Generator,
                   data_cut: date) -> dict[str, pl.DataFrame]:
    """The seven tables of one site's clean delivery, typed, columns in contract order."""
    s = _draw_patients(site, n, rng, _day(data_cut))
    columns = {
        "alemtuzumab_infusions": _infusions(s),
        "dmt_history": _dmt_history(s, rng),
        "comorbidities": _comorbidities(s, rng),
        "edss_assessments": _edss_assessments(s, rng),
    }
    columns["patients"] = {"patient_id": s.ids, "sex": _pick(SEXES, s.sex), "birth_year": s.birth_year,
                           "ms_onset_year": pl.Series(s.onset_year, nan_to_null=True).cast(pl.Int64),
                           "ms_course": _pick(MS_COURSES, s.ms_course)}
    # The serious-infection hazard depends on the strata, computed the SAP way from these rows.
    strata = _baseline({name: pl.DataFrame(c) for name, c in columns.items()})
    hazard_ratio = np.ones(n)
    for variable, ratios in SERIOUS_INFECTION_HAZARD_RATIOS.items():
        level = strata[_STRATUM_COLUMNS[variable]]
        hazard_ratio *= level.replace_strict(ratios, default=1.0, return_dtype=pl.Float64).fill_null(1.0).to_numpy()
    columns["infections"] = _infections(s, hazard_ratio, rng)
    _end_rows_at_death(s, columns)
    dead = s.end_reason == _DEATH
    columns["follow_up"] = {"patient_id": s.ids, "followup_end_date": _dates(s.end),
                            "end_reason": _pick(END_REASONS, s.end_reason),
                            "death_date": _dates(np.where(dead, s.end, np.nan))}
    return {name: pl.DataFrame({c.name: columns[name][c.name] for c in table.columns})
            .cast({c.name: _POLARS_TYPES[c.type] for c in table.columns})
            for name, table in contract.tables.items()}


def _patient_ids(site: str, n: int, rng: np.random.Generator) -> pl.Series:
    """<site>-<16 upper-case hex>, unique."""
    values = rng.integers(0, 2**64, n, dtype=np.uint64)
    while len(np.unique(values)) < n:  # collisions are rare: redraw the repeats
        _, first = np.unique(values, return_index=True)
        repeat = np.setdiff1d(np.arange(n), first)
        values[repeat] = rng.integers(0, 2**64, len(repeat), dtype=np.uint64)
    nibbles = (values[:, None] >> np.arange(60, -1, -4, dtype=np.uint64)) & np.uint64(15)
    hex16 = np.frombuffer(b"0123456789ABCDEF", dtype="S1")[nibbles].view("S16").ravel().astype("U16")
    return f"{site}-" + pl.Series("patient_id", hex16)


def _draw_patients(site: str, n: int, rng: np.random.Generator, cut: int) -> _Site:
    last_index = min(_day(date(2025, 12, 31)), cut - 180)
    first_index = min(_day(date(2014, 1, 1)), last_index - 4 * 365)
    index0 = rng.integers(first_index, last_index + 1, n)

    # Exact numbers of patients who fall out at each attrition step, disjoint.
    group = np.full(n, _NORMAL)
    order = rng.permutation(n)
    taken = 0
    for step, share in _EXCLUSION_SHARES.items():
        k = max(1, round(n * share))
        group[order[taken: taken + k]] = step
        taken += k

    age = np.clip(np.rint(rng.normal(37, 10, n)), 18, 75).astype(np.int64)
    minors = group == _UNDER_18
    age[minors] = rng.integers(13, 18, minors.sum())
    birth_year = _year_of(index0) - age
    onset_age = np.minimum(np.clip(np.rint(rng.normal(28, 7, n)), 12, None), age)
    onset_year = np.where(rng.random(n) < 0.08, np.nan, birth_year + onset_age)
    sex = rng.choice(3, n, p=[0.70, 0.29, 0.01])
    ms_course = np.zeros(n, dtype=np.int64)
    other_course = group == _NOT_RRMS
    ms_course[other_course] = rng.choice([1, 2, 3], other_course.sum(), p=[0.6, 0.2, 0.2])

    # Follow-up ends at the first of loss, withdrawal, other, death (rates per year), or the cut.
    waits = rng.exponential(365.25 / np.array([0.02, 0.01, 0.003, 0.003]), (n, 4))
    end = index0 + 4 + np.floor(waits.min(axis=1)).astype(np.int64)  # course 1 is always completed
    censored = end >= cut
    end = np.where(censored, cut, end)
    end_reason = np.where(censored, _DATA_CUT, waits.argmin(axis=1))
    early = group == _ENDS_BEFORE_INDEX
    end[early] = index0[early] - rng.integers(1, 366, early.sum())
    end_reason[early] = rng.choice(3, early.sum())  # lost, withdrawal or other: never death

    # Courses: 1 at index (5 days), 2 about 12 months later (3 days), some 3 and 4 >= 12 months
    # after the previous; a course is given only if it fits before the end of follow-up.
    span = end - index0
    second = np.maximum(335, np.rint(rng.normal(365, 20, n)))
    third = second + 365 + np.rint(rng.exponential(300, n))
    fourth = third + 365 + np.rint(rng.exponential(300, n))
    wanted = rng.random((n, 3)) < [0.9, 0.25, 0.3]
    course_start = np.full((n, 4), -1, dtype=np.int64)
    course_start[:, 0] = np.where(group == _NO_INFUSION, -1, 0)
    given = course_start[:, 0] == 0
    for c, start in enumerate((second, third, fourth), start=1):
        given = given & wanted[:, c - 1] & (start + 2 <= span)
        course_start[given, c] = start[given]

    # For a few patients the site records the last course's number wrong (the cohort layer must notice).
    course_error = np.zeros(n, dtype=np.int64)
    candidates = np.flatnonzero((group == _NORMAL) & (course_start[:, 1] >= 0))
    wrong = rng.choice(candidates, min(len(candidates), max(1, round(n * _COURSE_NUMBER_ERRORS))), replace=False)
    course_error[wrong] = rng.choice([-1, 1], len(wrong))
    return _Site(site, cut, _patient_ids(site, n, rng), group, index0, birth_year, onset_year, sex, ms_course,
                 end, end_reason, course_start, course_error)


def _infusions(s: _Site) -> dict:
    patient, course = np.nonzero(s.course_start >= 0)  # patient-major, courses in order
    length = np.where(course == 0, 5, 3)
    last_course = (s.course_start >= 0).sum(axis=1) - 1
    recorded = course + 1 + np.where(course == last_course[patient], s.course_error[patient], 0)
    row, day = _expand(length)
    return {"patient_id": s.ids.gather(patient[row]),
            "infusion_date": _dates(s.index0[patient[row]] + s.course_start[patient[row], course[row]] + day),
            "course_number": recorded[row], "dose_mg": np.full(len(row), 12.0)}


def _dmt_history(s: _Site, rng: np.random.Generator) -> dict:
    codes = list(DMT_BEFORE_INDEX)
    n = s.n
    # Before index: 0-3 episodes (codes may repeat by chance), a restart of the first code for some.
    n_before = rng.choice(4, n, p=[0.30, 0.35, 0.22, 0.13])
    owner, _ = _expand(n_before)
    code = rng.choice(len(codes), len(owner), p=_weights(codes, DMT_BEFORE_INDEX))
    restart = np.flatnonzero((n_before > 0) & (rng.random(n) < 0.1))
    first_episode = np.cumsum(n_before) - n_before
    owner = np.concatenate([owner, restart])
    code = np.concatenate([code, code[first_episode[restart]]])
    reach = np.minimum(5000, s.index0 - _jan1(s.birth_year + 12))[owner]  # not before age 12
    start = s.index0[owner] - rng.integers(60, reach + 1)
    stop = np.minimum(start + rng.integers(30, 2500, len(owner)), s.index0[owner] - 1 - rng.integers(0, 90, len(owner)))
    stop = np.where(rng.random(len(owner)) < 0.05, np.nan, np.maximum(stop, start))

    # Started on the index date itself: not "before index", so it must not count.
    on_index = np.flatnonzero(rng.random(n) < 0.01)
    he_codes = [codes.index(c) for c in sorted(HIGH_EFFICACY_DMT)]
    # After index (switching after alemtuzumab): must not count either.
    after = np.flatnonzero((rng.random(n) < 0.2) & (s.end - s.index0 > 400))
    after_start = s.index0[after] + 400 + np.floor(rng.random(len(after)) * (s.end[after] - s.index0[after] - 399))
    after_stop = after_start + np.floor(rng.random(len(after)) * (s.end[after] - after_start + 1))
    after_codes = list(DMT_AFTER_INDEX)

    owner = np.concatenate([owner, on_index, after])
    code_text = pl.concat([_pick(codes, code), _pick(codes, rng.choice(he_codes, len(on_index))),
                           _pick(after_codes, rng.choice(len(after_codes), len(after),
                                                         p=_weights(after_codes, DMT_AFTER_INDEX)))])
    start = np.concatenate([start, s.index0[on_index], after_start])
    stop = np.concatenate([stop, np.full(len(on_index), np.nan),
                           np.where(rng.random(len(after)) < 0.6, np.nan, after_stop)])
    order = np.lexsort((start, owner))
    return {"patient_id": s.ids.gather(owner[order]), "dmt_code": code_text.gather(order),
            "start_date": _dates(start[order]), "stop_date": _dates(stop[order])}


def _comorbidities(s: _Site, rng: np.random.Generator) -> dict:
    n = s.n
    first_day = _jan1(s.birth_year)

    def history(owner: np.ndarray, undated: float, on_index: float) -> np.ndarray:
        """Undated ("history of"), on the index date, or some day before it (not before birth)."""
        reach = np.minimum(6000, s.index0[owner] - first_day[owner])
        back = 1 + np.floor(rng.random(len(owner)) * reach)
        u = rng.random(len(owner))
        return np.where(u < undated, np.nan, s.index0[owner] - np.where(u < undated + on_index, 0, back))

    def written(forms: np.ndarray, first: np.ndarray, size: np.ndarray) -> pl.Series:
        """One of `size` codes from row `first` on, each in a form drawn by _CODE_FORM_SHARES."""
        row = first + np.floor(rng.random(len(first)) * size).astype(np.int64)
        return pl.Series(forms[row, rng.choice(5, len(row), p=_CODE_FORM_SHARES)], dtype=pl.String)

    owners, days, texts = [], [], []
    # Charlson diagnoses up to the index date, or undated: these count.
    owner, _ = _expand(rng.choice(4, n, p=[0.62, 0.22, 0.10, 0.06]))
    category = rng.choice(len(_CATEGORIES), len(owner), p=_CATEGORY_WEIGHTS)
    # Both the mild and the severe form for some: only the severe one counts.
    both = np.flatnonzero(rng.random(n) < 0.02)
    pair = rng.choice(list(CHARLSON_HIERARCHY.items()), len(both))
    pair_category = np.array([_CATEGORIES.index(c) for c in pair.ravel()], dtype=np.int64)
    owner = np.concatenate([owner, np.repeat(both, 2)])
    category = np.concatenate([category, pair_category])
    owners.append(owner)
    days.append(history(owner, undated=0.2, on_index=0.03))
    # Charlson diagnoses after the index date: these must not count.
    later = np.flatnonzero((rng.random(n) < 0.12) & (s.end > s.index0))
    owners.append(later)
    days.append(s.index0[later] + 1 + np.floor(rng.random(len(later)) * (s.end[later] - s.index0[later])))
    category = np.concatenate([category, rng.choice(len(_CATEGORIES), len(later),
                                                    p=_CATEGORY_WEIGHTS)])
    texts.append(written(_CHARLSON_FORMS, _CATEGORY_FIRST[category], _CATEGORY_SIZE[category]))
    # Outside the Charlson index: G35 (row 0) for most, other diagnoses before and after index.
    ms = np.flatnonzero(rng.random(n) < 0.7)
    other, _ = _expand(rng.choice(3, n, p=[0.6, 0.3, 0.1]))
    reach = 3000 + np.maximum(s.end[other] - s.index0[other], 0)  # from 3000 days before index to the end
    other_day = s.index0[other] - 3000 + np.floor(rng.random(len(other)) * (reach + 1))
    other_day = np.where(rng.random(len(other)) < 0.3, np.nan, np.maximum(other_day, first_day[other]))
    owners += [ms, other]
    days += [history(ms, undated=0.5, on_index=0.0), other_day]
    texts += [written(_OTHER_FORMS, np.zeros(len(ms), dtype=np.int64), np.ones(len(ms), dtype=np.int64)),
              written(_OTHER_FORMS, np.ones(len(other), dtype=np.int64),
                      np.full(len(other), len(NON_CHARLSON_CODES) - 1))]

    owner, day, text = np.concatenate(owners), np.concatenate(days), pl.concat(texts)
    keep = np.isnan(day) | (day <= s.end[owner])  # nothing dated after follow-up ended
    order = np.lexsort((np.nan_to_num(day, nan=-1e9), owner))
    order = order[keep[order]]
    return {"patient_id": s.ids.gather(owner[order]), "icd10_code": text.gather(order),
            "diagnosis_date": _dates(day[order])}


def _edss_assessments(s: _Site, rng: np.random.Generator) -> dict:
    """EDSS in half points x2 (0, 2..20; 1 = 0.5 is not a score). Baseline patterns: latest in
    [index-365, index] (82%), only in (index, index+30] (6%), none in either window (12%)."""
    n = s.n
    level = rng.choice(3, n, p=[0.50, 0.37, 0.13])
    scores = [np.array([0, 2, 3, 4, 5]), np.arange(6, 12), np.arange(12, 18)]
    value = np.zeros(n, dtype=np.int64)
    for lvl, options in enumerate(scores):
        value[level == lvl] = rng.choice(options, (level == lvl).sum())

    def near(v: np.ndarray, low: int, high: int) -> np.ndarray:
        shifted = np.clip(v + rng.integers(low, high + 1, len(v)), 0, 20)
        return np.where(shifted == 1, 2, shifted)

    pattern = rng.choice(3, n, p=[0.82, 0.06, 0.12])
    every = np.arange(n)
    u = rng.random(n)
    back = np.where(u < 0.03, 0, np.where(u < 0.06, 365, rng.integers(0, 366, n)))  # both window edges
    earlier = (pattern == 0) & (back < 365) & (rng.random(n) < 0.4)
    back2 = back + 1 + np.floor(rng.random(n) * (365 - back)).astype(np.int64)  # in (back, 365]
    forward = np.where(rng.random(n) < 0.1, 30, rng.integers(1, 31, n))
    outside = (pattern == 2) & (rng.random(n) < 0.5)  # just after the window: index+31..60
    older = rng.random(n) < 0.5
    years = np.maximum(0, (s.end - s.index0) // 365)
    yearly, k = _expand(years)
    yearly_keep = rng.random(len(yearly)) < 0.35
    yearly, k = yearly[yearly_keep], k[yearly_keep]

    parts = [
        (every[pattern == 0], (s.index0 - back)[pattern == 0], value[pattern == 0]),
        (every[earlier], (s.index0 - back2)[earlier], near(value[earlier], -2, 0)),
        (every[pattern == 1], (s.index0 + forward)[pattern == 1], value[pattern == 1]),
        (every[outside], (s.index0 + 31 + rng.integers(0, 30, n))[outside], value[outside]),
        (every[older], (s.index0 - 366 - rng.integers(0, 1500, n))[older], near(value[older], -2, 0)),
        (yearly, s.index0[yearly] + 365 * (k + 1) + rng.integers(-30, 31, len(yearly)), near(value[yearly], -2, 3)),
    ]
    owner = np.concatenate([p[0] for p in parts])
    day = np.concatenate([p[1] for p in parts])
    half_points = np.concatenate([p[2] for p in parts])
    order = np.lexsort((day, owner))
    order = order[day[order] <= s.end[owner[order]]]
    return {"patient_id": s.ids.gather(owner[order]), "assessment_date": _dates(day[order]),
            "edss": half_points[order] / 2}


def _infections(s: _Site, hazard_ratio: np.ndarray, rng: np.random.Generator) -> dict:
    """Poisson processes over [index, end] with piecewise-constant rates (early window after each
    course start, then the rest of the course); fatal infections end follow-up (updates `s`)."""
    n = s.n
    horizon = (s.end - s.index0 + 1).astype(float)  # person-time in days, exit day included
    given = (s.course_start >= 0) & (horizon > 0)[:, None]
    next_start = np.column_stack([np.where(s.course_start[:, c + 1] >= 0, s.course_start[:, c + 1], horizon)
                                  for c in range(3)] + [horizon])
    patient, course = np.nonzero(given)
    start = s.course_start[patient, course].astype(float)
    stop = next_start[patient, course]
    early_end = np.minimum(start + EARLY_WINDOW_DAYS + 1, stop)
    seg_patient = np.concatenate([patient, patient])
    seg_start = np.concatenate([start, early_end])
    seg_length = np.concatenate([early_end - start, stop - early_end])
    seg_course_start = np.concatenate([start, start])
    seg_early = np.repeat([True, False], len(patient))

    events = []
    for serious in (True, False):
        if serious:
            rate = BASELINE_SERIOUS_RATE * hazard_ratio[seg_patient] * np.where(seg_early, EARLY_WINDOW_RATE_RATIO, 1)
        else:
            rate = NON_SERIOUS_RATE * np.where(seg_early, 1.5, 1.0)
        segment = np.repeat(np.arange(len(seg_start)), rng.poisson(rate * seg_length / 365.25))
        offset = np.floor(seg_start[segment] + rng.random(len(segment)) * seg_length[segment]).astype(np.int64)
        events.append((seg_patient[segment], offset, offset - seg_course_start[segment].astype(np.int64),
                       np.full(len(segment), serious)))
    patient, offset, since_course, serious = (np.concatenate(parts) for parts in zip(*events))
    m = len(patient)

    early = since_course <= OPPORTUNISTIC_WINDOW_DAYS
    opportunistic = rng.random(m) < np.where(serious, np.where(early, 0.2, 0.04), np.where(early, 0.02, 0.004))
    term = np.zeros(m, dtype=np.int64)
    for chosen, frequency in ((opportunistic, OPPORTUNISTIC_TERMS), (serious & ~opportunistic, SERIOUS_TERMS),
                              (~serious & ~opportunistic, NON_SERIOUS_TERMS)):
        term[chosen] = rng.choice(len(_ALL_TERMS), chosen.sum(), p=_weights(_ALL_TERMS, frequency))
    fatal = serious & (rng.random(m) < np.where(opportunistic, 0.06, 0.01))

    # A fatal infection: death 0-14 days after onset (not after the cut, nor after a death already
    # due); nothing is recorded after the onset of the first fatal infection.
    first_fatal = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_fatal, patient[fatal], offset[fatal])
    keep = offset <= first_fatal[patient]
    patient, offset, serious, opportunistic, term, fatal = (
        a[keep] for a in (patient, offset, serious, opportunistic, term, fatal))
    died = np.flatnonzero(first_fatal < np.iinfo(np.int64).max)
    death = np.minimum(s.index0[died] + first_fatal[died] + rng.integers(0, 15, len(died)), s.cut)
    death = np.where(s.end_reason[died] == _DEATH, np.minimum(death, s.end[died]), death)
    s.end[died] = death
    s.end_reason[died] = _DEATH

    m = len(patient)
    order = np.lexsort((offset, patient))
    patient, offset, serious, opportunistic, term, fatal = (
        a[order] for a in (patient, offset, serious, opportunistic, term, fatal))
    terms = _pick(_ALL_TERMS, term)
    case = rng.random(m)  # sites write some study terms in other cases: matching is case-insensitive
    terms = pl.select(pl.when(pl.lit(opportunistic & (case < 0.05))).then(terms.str.to_lowercase())
                      .when(pl.lit(opportunistic & (case > 0.98))).then(terms.str.to_uppercase())
                      .otherwise(terms)).to_series()
    criteria = np.where(fatal, rng.choice(list(FATAL_CRITERIA), m, p=_weights(list(FATAL_CRITERIA), FATAL_CRITERIA)),
                        rng.choice(list(SERIOUS_CRITERIA), m, p=_weights(list(SERIOUS_CRITERIA), SERIOUS_CRITERIA)))
    outcome = np.where(
        fatal, "fatal",
        np.where(serious, rng.choice(list(SERIOUS_OUTCOMES), m, p=_weights(list(SERIOUS_OUTCOMES), SERIOUS_OUTCOMES)),
                 rng.choice(list(NON_SERIOUS_OUTCOMES), m,
                            p=_weights(list(NON_SERIOUS_OUTCOMES), NON_SERIOUS_OUTCOMES))))
    pathogen_options = [PATHOGENS.get(t, ()) for t in _ALL_TERMS]
    flat_pathogens = [p for options in pathogen_options for p in options]
    n_options = np.array([len(o) for o in pathogen_options])
    first_option = np.cumsum(n_options) - n_options
    reported = (rng.random(m) < np.where(opportunistic, 0.85, 0.35)) & (n_options[term] > 0)
    pathogen = np.where(reported, first_option[term] + np.floor(rng.random(m) * n_options[term]).astype(np.int64), -1)
    code = np.where(rng.random(m) < 0.08, np.nan, _TERM_CODES[term])
    return {"patient_id": s.ids.gather(patient),
            "event_id": f"{s.site}-I" + pl.Series(np.arange(1, m + 1)).cast(pl.String).str.zfill(8),
            "onset_date": _dates(s.index0[patient] + offset), "meddra_pt": terms,
            "meddra_pt_code": pl.Series(code, nan_to_null=True).cast(pl.Int64),
            "serious": np.where(serious, "Y", "N"),
            "seriousness_criteria": pl.select(pl.when(pl.lit(serious)).then(pl.Series(criteria))).to_series(),
            "pathogen": _pick(flat_pathogens, pathogen), "outcome": outcome}


def _end_rows_at_death(s: _Site, columns: dict) -> None:
    """Nothing dated after a death; treatments still running at death stop on that day."""
    death = pl.DataFrame({"patient_id": s.ids, "_death": _dates(np.where(s.end_reason == _DEATH, s.end, np.nan))})
    dated = {"alemtuzumab_infusions": "infusion_date", "edss_assessments": "assessment_date",
             "comorbidities": "diagnosis_date", "dmt_history": "start_date"}
    for name, column in dated.items():
        frame = pl.DataFrame(columns[name]).join(death, on="patient_id", how="left", maintain_order="left")
        death_day = pl.col("_death")
        frame = frame.filter(death_day.is_null() | pl.col(column).is_null() | (pl.col(column) <= death_day))
        if name == "dmt_history":
            running = death_day.is_not_null() & (pl.col("stop_date").is_null() | (pl.col("stop_date") > death_day))
            frame = frame.with_columns(stop_date=pl.when(running).then(pl.col("_death")).otherwise(pl.col("stop_date")))
        columns[name] = frame.drop("_death").to_dict()


# ---------------------------------------------------------------------------------------------
# The SAP quantities (sections 1-3), computed from valid typed rows.
# ---------------------------------------------------------------------------------------------

def _level(count: pl.Expr) -> pl.Expr:
    return pl.when(count == 0).then(pl.lit("0")).when(count == 1).then(pl.lit("1")).otherwise(pl.lit(">=2"))


def _baseline(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per patient row: index date, age, and the SAP section 3 strata at the index date."""
    index = tables["alemtuzumab_infusions"].group_by("patient_id").agg(index_date=pl.col("infusion_date").min())
    base = tables["patients"].select("patient_id", "sex", "birth_year", "ms_course").join(
        index, on="patient_id", how="left", maintain_order="left")
    keyed = base.select("patient_id", "index_date").drop_nulls()
    has = {cat: (pl.col("category") == cat).any() for cat in CHARLSON}
    charlson = (
        tables["comorbidities"].join(keyed, on="patient_id")
        .filter(pl.col("diagnosis_date").is_null() | (pl.col("diagnosis_date") <= pl.col("index_date")))
        .join(_CODE_CATEGORY, on="icd10_code").unique(["patient_id", "category"])
        .group_by("patient_id").agg(charlson=pl.col("weight").sum() - pl.sum_horizontal(
            (has[mild] & has[severe]).cast(pl.Int32) * CHARLSON_WEIGHT[mild]
            for mild, severe in CHARLSON_HIERARCHY.items())))
    dmt = (tables["dmt_history"].join(keyed, on="patient_id").filter(pl.col("start_date") < pl.col("index_date"))
           .group_by("patient_id").agg(prior_dmt=pl.col("dmt_code").n_unique(),
                                       high_efficacy=pl.col("dmt_code").is_in(list(HIGH_EFFICACY_DMT)).any()))
    edss = tables["edss_assessments"].join(keyed, on="patient_id").with_columns(
        _days=(pl.col("assessment_date") - pl.col("index_date")).dt.total_days())
    before = edss.filter(pl.col("_days").is_between(-365, 0)).group_by("patient_id").agg(
        _before=pl.col("edss").sort_by("assessment_date").last())
    after = edss.filter(pl.col("_days").is_between(1, 30)).group_by("patient_id").agg(
        _after=pl.col("edss").sort_by("assessment_date").first())
    for part in (charlson, dmt, before, after):
        base = base.join(part, on="patient_id", how="left", maintain_order="left")
    indexed = pl.col("index_date").is_not_null()
    age = pl.col("index_date").dt.year().cast(pl.Int32) - pl.col("birth_year").cast(pl.Int32)
    edss_value = pl.coalesce("_before", "_after")
    return base.select(
        "patient_id", "index_date", "sex", "ms_course",
        age_at_index=age,
        age_group=pl.when(age < 18).then(None).when(age < 30).then(pl.lit("18-29")).when(age < 40)
        .then(pl.lit("30-39")).when(age < 50).then(pl.lit("40-49")).otherwise(pl.lit(">=50")),
        charlson=pl.when(indexed).then(pl.col("charlson").fill_null(0).cast(pl.Int32)),
        charlson_level=pl.when(indexed).then(_level(pl.col("charlson").fill_null(0))),
        prior_dmt=pl.when(indexed).then(pl.col("prior_dmt").fill_null(0).cast(pl.Int32)),
        prior_dmt_level=pl.when(indexed).then(_level(pl.col("prior_dmt").fill_null(0))),
        prior_high_efficacy=pl.when(indexed).then(
            pl.when(pl.col("high_efficacy").fill_null(False)).then(pl.lit("Y")).otherwise(pl.lit("N"))),
        edss=edss_value,
        edss_level=pl.when(indexed).then(
            pl.when(edss_value.is_null()).then(pl.lit("unknown")).when(edss_value <= 2.5).then(pl.lit("0-2.5"))
            .when(edss_value <= 5.5).then(pl.lit("3.0-5.5")).otherwise(pl.lit(">=6.0"))),
    )


def _truth(site: str, delivered: pl.Series, valid: dict[str, pl.DataFrame], data_cut: date) -> pl.DataFrame:
    """One row per delivered patient_id: what the SAP makes of the valid rows."""
    base = _baseline(valid)
    follow_up = valid["follow_up"].select("patient_id", "followup_end_date", "death_date")
    base = base.join(follow_up, on="patient_id", how="left", maintain_order="left").with_columns(
        exit_date=pl.min_horizontal("followup_end_date", "death_date", pl.lit(data_cut)))
    courses = (
        valid["alemtuzumab_infusions"].sort("patient_id", "infusion_date")
        .with_columns(_new=((pl.col("infusion_date").diff().over("patient_id").dt.total_days() > 30)
                            .fill_null(True)))
        .with_columns(_course=pl.col("_new").cast(pl.Int32).cum_sum().over("patient_id"))
        .group_by("patient_id").agg(n_courses=pl.col("_course").max(),
                                    course_number_mismatch=(pl.col("course_number") != pl.col("_course")).any(),
                                    course_starts=pl.col("infusion_date").filter(pl.col("_new"))))
    window = valid["infections"].join(base.select("patient_id", "index_date", "exit_date"), on="patient_id").filter(
        pl.col("onset_date").is_between(pl.col("index_date"), pl.col("exit_date")))
    serious = window.filter(pl.col("serious") == "Y").group_by("patient_id").agg(
        first_serious_date=pl.col("onset_date").min(), serious_episodes=pl.col("event_id").n_unique().cast(pl.Int32))
    opportunistic = window.filter(pl.col("meddra_pt").str.to_lowercase().is_in(_OPPORTUNISTIC_LOWER)).group_by(
        "patient_id").agg(first_oi_date=pl.col("onset_date").min())
    for part in (courses, serious, opportunistic):
        base = base.join(part, on="patient_id", how="left", maintain_order="left")
    step = (pl.when(pl.col("index_date").is_null()).then(2)
            .when(pl.col("ms_course") != "RRMS").then(3)
            .when(pl.col("age_at_index") < 18).then(4)
            .when(pl.col("exit_date") < pl.col("index_date")).then(5))
    base = base.with_columns(
        attrition_step=step.cast(pl.Int8),
        serious_episodes=pl.when(pl.col("index_date").is_not_null()).then(pl.col("serious_episodes").fill_null(0)),
        death=pl.col("death_date").is_not_null())
    truth = pl.DataFrame({"patient_id": delivered}).join(base, on="patient_id", how="left", maintain_order="left")
    valid_patient = pl.col("patient_id").is_in(valid["patients"]["patient_id"].implode())
    return truth.select(
        pl.col("patient_id"), pl.lit(site).alias("site_id"),
        (valid_patient & pl.col("attrition_step").is_null()).alias("in_cohort"),
        pl.when(valid_patient).then(pl.col("attrition_step")).otherwise(pl.lit(1, pl.Int8)).alias("attrition_step"),
        *TRUTH_COLUMNS[4:])


# ---------------------------------------------------------------------------------------------
# Faults: rows that break each row rule of the contract, and what the quarantine makes of them.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _FaultContext:
    """What a fault may need to know about its patient and delivery."""

    site: str
    cut: date
    birth_year: int
    death: date | None
    orphan_id: str  # a patient_id of this site that is not in patients
    event_id: str  # an event_id not used in the delivery


def _text(d: date) -> str:
    return d.isoformat()


def _shift(text: str, days: int) -> str:
    return _text(date.fromisoformat(text) + timedelta(days=days))


def _day_first(text: str, separator: str) -> str:
    """2019-03-05 as 05/03/2019 (or with another separator): a date the spec does not accept."""
    year, month, day = text.split("-")
    return separator.join((day, month, year))


Change = Callable[[dict, _FaultContext], dict]


@dataclass(frozen=True)
class _Fault:
    """How to make a row break one rule. `action` on the chosen patient's first row of `table`:
    mutate it, add a changed copy after it, duplicate it, rekey the patient everywhere (changing
    its patients row), or drop its follow_up row. `patient`: any, alive or dead (died at least
    five days before the cut). `change` gives the new texts (None = missing)."""

    table: str
    action: str
    change: Change = lambda row, c: {}
    patient: str = "any"


_F = _Fault
# One recipe per contract row rule (by rule_id); every fault breaks its rule and no earlier one,
# except where an earlier rule has the same reason (infections.seriousness_criteria
# .fatal_inconsistent.4 is reached only through serious.fatal_inconsistent.1).
_FAULTS: dict[str, _Fault] = {
    "patients.patient_id.missing_required": _F("patients", "add", lambda r, c: {"patient_id": None}),
    "patients.patient_id.bad_format.1": _F(  # a pseudonym cut to 7 hex digits, in every table
        "patients", "rekey", lambda r, c: {"patient_id": r["patient_id"][: len(c.site) + 8]}),
    "patients.patient_id.no_follow_up.2": _F("follow_up", "drop_follow_up"),
    "patients.sex.missing_required": _F("patients", "mutate", lambda r, c: {"sex": None}),
    "patients.sex.not_in_code_list.1": _F("patients", "mutate", lambda r, c: {"sex": "female"}),
    "patients.birth_year.missing_required": _F("patients", "mutate", lambda r, c: {"birth_year": None}),
    "patients.birth_year.unparseable": _F("patients", "mutate", lambda r, c: {"birth_year": r["birth_year"] + ".0"}),
    "patients.birth_year.out_of_range.1": _F("patients", "mutate", lambda r, c: {"birth_year": "1899"}),
    "patients.ms_onset_year.unparseable": _F("patients", "mutate", lambda r, c: {"ms_onset_year": "unknown"}),
    "patients.ms_onset_year.out_of_range.1": _F(
        "patients", "mutate", lambda r, c: {"ms_onset_year": str(c.cut.year + 1)}),
    "patients.ms_onset_year.out_of_range.2": _F(
        "patients", "mutate", lambda r, c: {"ms_onset_year": str(c.birth_year - 1)}),
    "patients.ms_course.missing_required": _F("patients", "mutate", lambda r, c: {"ms_course": None}),
    "patients.ms_course.not_in_code_list.1": _F("patients", "mutate", lambda r, c: {"ms_course": "RMS"}),

    "alemtuzumab_infusions.patient_id.missing_required": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"patient_id": None}),
    "alemtuzumab_infusions.patient_id.orphan_patient.1": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "alemtuzumab_infusions.infusion_date.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"infusion_date": None}),
    "alemtuzumab_infusions.infusion_date.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"infusion_date": _day_first(r["infusion_date"], "/")}),
    "alemtuzumab_infusions.infusion_date.after_data_cut.1": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": _text(c.cut + timedelta(days=7))}, "alive"),
    "alemtuzumab_infusions.infusion_date.out_of_range.2": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": f"{c.birth_year - 1}-07-01"}),
    "alemtuzumab_infusions.infusion_date.after_death.3": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": _text(c.death + timedelta(days=3))}, "dead"),
    "alemtuzumab_infusions.course_number.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": None}),
    "alemtuzumab_infusions.course_number.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": "C" + r["course_number"]}),
    "alemtuzumab_infusions.course_number.out_of_range.1": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": "0"}),
    "alemtuzumab_infusions.dose_mg.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": None}),
    "alemtuzumab_infusions.dose_mg.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": "12 mg"}),
    "alemtuzumab_infusions.dose_mg.out_of_range.1": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": "120"}),
    "alemtuzumab_infusions.patient_id+infusion_date.duplicate_key": _F("alemtuzumab_infusions", "duplicate"),

    "dmt_history.patient_id.missing_required": _F("dmt_history", "add", lambda r, c: {"patient_id": None}),
    "dmt_history.patient_id.orphan_patient.1": _F("dmt_history", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "dmt_history.dmt_code.missing_required": _F("dmt_history", "mutate", lambda r, c: {"dmt_code": None}),
    "dmt_history.dmt_code.not_in_code_list.1": _F("dmt_history", "mutate", lambda r, c: {"dmt_code": "Tysabri"}),
    "dmt_history.start_date.missing_required": _F("dmt_history", "mutate", lambda r, c: {"start_date": None}),
    "dmt_history.start_date.unparseable": _F(
        "dmt_history", "mutate", lambda r, c: {"start_date": _day_first(r["start_date"], "/")}),
    "dmt_history.start_date.after_data_cut.1": _F(
        "dmt_history", "mutate", lambda r, c: {"start_date": _text(c.cut + timedelta(days=30)), "stop_date": None}),
    "dmt_history.stop_date.unparseable": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": r["start_date"][:4] + "-13-01"}),
    "dmt_history.stop_date.after_data_cut.1": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": _text(c.cut + timedelta(days=30))}),
    "dmt_history.stop_date.stop_before_start.2": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": _shift(r["start_date"], -1)}),

    "comorbidities.patient_id.missing_required": _F("comorbidities", "add", lambda r, c: {"patient_id": None}),
    "comorbidities.patient_id.orphan_patient.1": _F("comorbidities", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "comorbidities.icd10_code.missing_required": _F("comorbidities", "mutate", lambda r, c: {"icd10_code": None}),
    "comorbidities.icd10_code.bad_format.1": _F(
        "comorbidities", "mutate", lambda r, c: {"icd10_code": r["icd10_code"].lower()}),
    "comorbidities.diagnosis_date.unparseable": _F(
        "comorbidities", "mutate", lambda r, c: {"diagnosis_date": "2015-06-31"}),
    "comorbidities.diagnosis_date.after_data_cut.1": _F(
        "comorbidities", "mutate", lambda r, c: {"diagnosis_date": _text(c.cut + timedelta(days=60))}),

    "edss_assessments.patient_id.missing_required": _F("edss_assessments", "add", lambda r, c: {"patient_id": None}),
    "edss_assessments.patient_id.orphan_patient.1": _F(
        "edss_assessments", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "edss_assessments.assessment_date.missing_required": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": None}),
    "edss_assessments.assessment_date.unparseable": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": _day_first(r["assessment_date"], ".")}),
    "edss_assessments.assessment_date.after_data_cut.1": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": _text(c.cut + timedelta(days=1))}),
    "edss_assessments.edss.missing_required": _F("edss_assessments", "mutate", lambda r, c: {"edss": None}),
    "edss_assessments.edss.unparseable": _F(
        "edss_assessments", "mutate", lambda r, c: {"edss": r["edss"].replace(".", ",")}),
    "edss_assessments.edss.not_in_code_list.1": _F("edss_assessments", "mutate", lambda r, c: {"edss": "0.5"}),

    "infections.patient_id.missing_required": _F(
        "infections", "add", lambda r, c: {"patient_id": None, "event_id": c.event_id}),
    "infections.patient_id.orphan_patient.1": _F(
        "infections", "add", lambda r, c: {"patient_id": c.orphan_id, "event_id": c.event_id}),
    "infections.event_id.missing_required": _F("infections", "mutate", lambda r, c: {"event_id": None}),
    "infections.onset_date.missing_required": _F("infections", "mutate", lambda r, c: {"onset_date": None}),
    "infections.onset_date.unparseable": _F(
        "infections", "mutate", lambda r, c: {"onset_date": r["onset_date"][:4] + "-02-30"}),
    "infections.onset_date.after_data_cut.1": _F(
        "infections", "mutate", lambda r, c: {"onset_date": _text(c.cut + timedelta(days=14))}, "alive"),
    "infections.onset_date.after_death.2": _F(
        "infections", "add", lambda r, c: {"event_id": c.event_id, "onset_date": _text(c.death + timedelta(days=2))},
        "dead"),
    "infections.meddra_pt.missing_required": _F("infections", "mutate", lambda r, c: {"meddra_pt": None}),
    "infections.meddra_pt_code.unparseable": _F("infections", "mutate", lambda r, c: {"meddra_pt_code": "10O22000"}),
    "infections.meddra_pt_code.bad_format.1": _F("infections", "mutate", lambda r, c: {"meddra_pt_code": "1002200"}),
    "infections.serious.missing_required": _F("infections", "mutate", lambda r, c: {"serious": None}),
    "infections.serious.unparseable": _F(
        "infections", "mutate", lambda r, c: {"serious": "Yes" if r["serious"] == "Y" else "No"}),
    "infections.serious.fatal_inconsistent.1": _F(
        "infections", "mutate", lambda r, c: {"serious": "N", "seriousness_criteria": None, "outcome": "fatal"}),
    "infections.seriousness_criteria.not_in_code_list.1": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "Y", "seriousness_criteria": "hospitalization", "outcome": "recovered"}),
    "infections.seriousness_criteria.seriousness_mismatch.2": _F(
        "infections", "mutate", lambda r, c: {"serious": "Y", "seriousness_criteria": None, "outcome": "recovered"}),
    "infections.seriousness_criteria.seriousness_mismatch.3": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "N", "seriousness_criteria": "medically_important", "outcome": "recovered"}),
    "infections.seriousness_criteria.fatal_inconsistent.4": _F(
        "infections", "mutate", lambda r, c: {"serious": "N", "seriousness_criteria": None, "outcome": "fatal"}),
    "infections.seriousness_criteria.fatal_inconsistent.5": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "Y", "seriousness_criteria": "hospitalisation", "outcome": "fatal"}),
    "infections.outcome.missing_required": _F("infections", "mutate", lambda r, c: {"outcome": None}),
    "infections.outcome.not_in_code_list.1": _F("infections", "mutate", lambda r, c: {"outcome": "resolved"}),
    "infections.event_id.duplicate_key": _F("infections", "duplicate"),

    "follow_up.patient_id.missing_required": _F("follow_up", "add", lambda r, c: {"patient_id": None}),
    "follow_up.patient_id.orphan_patient.1": _F("follow_up", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "follow_up.followup_end_date.missing_required": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": None}),
    "follow_up.followup_end_date.unparseable": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": r["followup_end_date"].replace("-", "")}),
    "follow_up.followup_end_date.after_data_cut.1": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": _text(c.cut + timedelta(days=1))}, "alive"),
    "follow_up.end_reason.missing_required": _F("follow_up", "mutate", lambda r, c: {"end_reason": None}),
    "follow_up.end_reason.not_in_code_list.1": _F(
        "follow_up", "mutate", lambda r, c: {"end_reason": "emigrated"}, "alive"),
    "follow_up.death_date.unparseable": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": r["death_date"].replace("-", "/")}, "dead"),
    "follow_up.death_date.after_data_cut.1": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": _text(c.cut + timedelta(days=1))}, "dead"),
    "follow_up.death_date.death_inconsistent.2": _F("follow_up", "mutate", lambda r, c: {"death_date": None}, "dead"),
    "follow_up.death_date.death_inconsistent.3": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": _shift(r["death_date"], 3)}, "dead"),
    "follow_up.patient_id.duplicate_key": _F("follow_up", "duplicate"),
}
_HIDDEN = ["_pos", "_reason", "_rule"]


def _inject_faults(contract: Contract, site: str, tables: dict[str, pl.DataFrame], rng: np.random.Generator,
                   data_cut: date, fmt: str) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], pl.DataFrame]:
    """Break each row rule once in the site's delivery, on cohort patients only (so every
    attrition exclusion survives). Returns the delivered tables (text), the rows the quarantine
    keeps (typed), and faults.csv's rows for the site."""
    if missing := [r.rule_id for r in contract.rules if r.rule_id not in _FAULTS]:
        raise ValueError(f"synth: no fault recipe for contract rules {missing}")
    tables = _ensure_deaths(tables, data_cut, sum(f.patient == "dead" for f in _FAULTS.values()))
    clean = _truth(site, tables["patients"]["patient_id"], tables, data_cut)
    follow_up = tables["patients"].select("patient_id").join(tables["follow_up"], on="patient_id", how="left",
                                                             maintain_order="left")
    death = follow_up["death_date"]
    qualifies = {
        "any": np.ones(len(death), dtype=bool),
        "alive": death.is_null().to_numpy(),
        "dead": (death <= data_cut - timedelta(days=5)).fill_null(False).to_numpy(),
    }
    has_rows = {name: tables["patients"]["patient_id"].is_in(frame["patient_id"].implode()).to_numpy()
                for name, frame in tables.items()}
    available = (clean["in_cohort"] & ~clean["course_number_mismatch"].fill_null(True)).to_numpy()
    order = rng.permutation(len(available))
    chosen: dict[str, int] = {}
    scarce_first = {"dead": 0, "alive": 1, "any": 2}  # so that "any" does not use up the dead
    for rule in sorted(contract.rules, key=lambda r: scarce_first[_FAULTS[r.rule_id].patient]):
        fault = _FAULTS[rule.rule_id]
        ok = available & qualifies[fault.patient]
        if fault.action in ("mutate", "duplicate"):
            ok &= has_rows[fault.table]
        candidates = order[ok[order]]
        if not len(candidates):
            raise ValueError(f"site {site}: too few cohort patients for one fault per rule ({rule.rule_id} found none; "
                             f"use at least {MIN_PATIENTS_PER_SITE_WITH_FAULTS} patients per site)")
        chosen[rule.rule_id] = int(candidates[0])
        available[candidates[0]] = False

    frames = {name: frame.select(pl.all().cast(pl.String)).with_row_index("_pos").with_columns(
        pl.col("_pos").cast(pl.Float64), pl.lit(None, pl.String).alias("_reason"),
        pl.lit(None, pl.String).alias("_rule"))
        for name, frame in tables.items()}
    ids = tables["patients"]["patient_id"]
    picked = ids.gather(list(chosen.values()))
    first_rows = {name: {row["patient_id"]: row for row in frame.filter(pl.col("patient_id").is_in(picked.implode()))
                         .unique("patient_id", keep="first", maintain_order=True).to_dicts()}
                  for name, frame in frames.items()}
    removed: dict[str, list[float]] = {name: [] for name in frames}
    added: dict[str, list[dict]] = {name: [] for name in frames}
    rekey: dict[str, str] = {}
    orphan_pool = _patient_ids(site, 2 * len(_FAULTS), rng)
    orphans = iter(orphan_pool.filter(~orphan_pool.is_in(ids.implode())))
    events = frames["infections"].height
    for number, rule in enumerate(contract.rules):
        fault, index = _FAULTS[rule.rule_id], chosen[rule.rule_id]
        pid = ids[index]
        tag = {"_reason": rule.reason, "_rule": rule.rule_id}
        row = first_rows[fault.table].get(pid) or frames[fault.table].row(0, named=True) | {"patient_id": pid}
        events += 1
        c = _FaultContext(site, data_cut, int(tables["patients"]["birth_year"][index]), death[index], next(orphans),
                          f"{site}-I{events:08d}")
        after = row["_pos"] + 0.5 + number * 1e-4  # just after the row it was made from
        if fault.action == "mutate":
            removed[fault.table].append(row["_pos"])
            added[fault.table].append(row | fault.change(row, c) | tag)
        elif fault.action == "add":
            added[fault.table].append(row | fault.change(row, c) | tag | {"_pos": after})
        elif fault.action == "duplicate":  # every copy is quarantined
            removed[fault.table].append(row["_pos"])
            added[fault.table] += [row | tag, row | tag | {"_pos": after}]
        elif fault.action == "rekey":
            change = fault.change(row, c)
            rekey[pid] = change["patient_id"]
            removed["patients"].append(row["_pos"])
            added["patients"].append(row | change | tag)
        elif fault.action == "drop_follow_up":  # the patient is quarantined for having none
            patient_row = first_rows["patients"][pid]
            removed["follow_up"].append(row["_pos"])
            removed["patients"].append(patient_row["_pos"])
            added["patients"].append(patient_row | {"_reason": "no_follow_up", "_rule": rule.rule_id})
        else:
            raise ValueError(f"synth: unknown fault action {fault.action}")

    for name, frame in frames.items():
        frame = pl.concat([frame.filter(~pl.col("_pos").is_in(removed[name])),
                           pl.DataFrame(added[name], schema=frame.schema)]).sort("_pos")
        if name != "patients":
            frame = frame.with_columns(pl.col("patient_id").replace(rekey))
        frames[name] = frame
    frames = _cascade(frames)
    line_offset = 2 if fmt == "csv" else 1  # CSV: header is line 1; Parquet: row number
    faults = pl.concat([
        frame.with_row_index("line_number", offset=line_offset).filter(pl.col("_reason").is_not_null()).select(
            pl.lit(site).alias("site_id"), pl.lit(name).alias("table"), pl.col("line_number").cast(pl.Int64),
            pl.col("_reason").alias("reason"), pl.col("_rule").alias("rule_id"))
        for name, frame in frames.items()])
    valid = {name: _typed(contract, name, frame.filter(pl.col("_reason").is_null()).drop(_HIDDEN))
             for name, frame in frames.items()}
    return {name: frame.drop(_HIDDEN) for name, frame in frames.items()}, valid, faults


def _ensure_deaths(tables: dict[str, pl.DataFrame], data_cut: date, needed: int) -> dict[str, pl.DataFrame]:
    """Faults after death need dead cohort patients; a small site may have too few, so some
    patients followed to an earlier end die on that day (nothing of theirs is dated later)."""
    latest = data_cut - timedelta(days=10)
    clean = _truth("", tables["patients"]["patient_id"], tables, data_cut).filter(
        pl.col("in_cohort") & ~pl.col("course_number_mismatch") & (pl.col("exit_date") <= latest))
    dead = clean.filter(pl.col("death")).height
    if dead >= needed:
        return tables
    alive = clean.filter(~pl.col("death"))["patient_id"].head(needed - dead)
    dies = pl.col("patient_id").is_in(alive.implode())
    follow_up = tables["follow_up"].with_columns(
        end_reason=pl.when(dies).then(pl.lit("death")).otherwise(pl.col("end_reason")),
        death_date=pl.when(dies).then(pl.col("followup_end_date")).otherwise(pl.col("death_date")))
    return tables | {"follow_up": follow_up}


def _cascade(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """DTS section 3: a patient without a valid follow_up row is quarantined (no_follow_up); the
    other rows of a quarantined patient that break no rule of their own get patient_quarantined."""
    unmarked = pl.col("_reason").is_null()
    followed = frames["follow_up"].filter(unmarked)["patient_id"]
    patients = frames["patients"].with_columns(_reason=pl.when(
        unmarked & pl.col("patient_id").is_not_null() & ~pl.col("patient_id").is_in(followed.implode()))
        .then(pl.lit("no_follow_up")).otherwise(pl.col("_reason")))
    bad = patients.filter(~unmarked & pl.col("patient_id").is_not_null())["patient_id"]
    cascaded = {name: frame.with_columns(_reason=pl.when(unmarked & pl.col("patient_id").is_in(bad.implode()))
                                         .then(pl.lit("patient_quarantined")).otherwise(pl.col("_reason")))
                for name, frame in frames.items() if name != "patients"}
    return {"patients": patients} | cascaded


def _typed(contract: Contract, name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Text columns of valid rows to their contract types (they all parse: that is what valid means)."""
    def convert(column: str, type_name: str) -> pl.Expr:
        if type_name == "date":
            return pl.col(column).str.to_date("%Y-%m-%d")
        return pl.col(column).cast(_POLARS_TYPES[type_name])
    return frame.with_columns(convert(c.name, c.type) for c in contract.tables[name].columns)


# ---------------------------------------------------------------------------------------------
# Writing deliveries.
# ---------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _rehash(folder: Path, manifest: dict) -> None:
    for name, entry in manifest["files"].items():
        entry["sha256"] = file_sha256(folder / name)


def _for_parquet(contract: Contract, name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Typed Parquet columns (DATE for dates); a column holding a value of the wrong type (an
    injected fault) stays text, which the spec allows for dates and the loader reads as text."""
    columns = []
    for c in contract.tables[name].columns:
        column = frame[c.name]
        if column.dtype == pl.String and c.type in ("int", "dec", "date"):
            converted = (column.str.to_date("%Y-%m-%d", strict=False) if c.type == "date"
                         else column.cast(_POLARS_TYPES[c.type], strict=False))
            back = converted.dt.to_string("%Y-%m-%d") if c.type == "date" else converted.cast(pl.String)
            if (back == column).fill_null(column.is_null()).all():
                column = converted
        columns.append(column)
    return pl.DataFrame(columns)


def _write_delivery(contract: Contract, folder: Path, site: str, data_cut: date, stamp: str, fmt: str,
                    tables: dict[str, pl.DataFrame]) -> Path:
    folder.mkdir(parents=True)
    files = {}
    for name, table in contract.tables.items():
        path = folder / f"{name}.{fmt}"
        frame = tables[name].select(table.column_names)
        if fmt == "csv":
            frame.write_csv(path)
        else:
            _for_parquet(contract, name, frame).write_parquet(path)
        files[path.name] = {"sha256": file_sha256(path), "rows": frame.height}
    _write_manifest(folder, {"study_id": contract.study_id, "spec_version": contract.spec_version, "site_id": site,
                             "data_cut": data_cut.isoformat(), "created_at": stamp, "files": files})
    return folder


# ---------------------------------------------------------------------------------------------
# Deliveries that must be refused whole (DTS section 3).
# ---------------------------------------------------------------------------------------------

REFUSAL_KINDS = ("missing_manifest", "missing_table", "other_study", "checksum", "row_count", "missing_column",
                 "misspelled_column", "unparseable_file", "other_site_patient", "duplicate_patient")


def make_refused_delivery(src: Path, dest: Path, kind: str) -> Path:
    """Copy the delivery folder `src` to `dest` (same folder name, which must not exist) and break
    it in one way of REFUSAL_KINDS. Except for checksum and row_count, the manifest's hashes and
    row counts are recomputed, so that the intended problem is the only one. Returns `dest`."""
    src, dest = Path(src), Path(dest)
    if kind not in REFUSAL_KINDS:
        raise ValueError(f"kind must be one of {REFUSAL_KINDS}, not {kind!r}")
    if dest.name != src.name:
        raise ValueError(f"{dest} must be named like the delivery it copies ({src.name})")
    if dest.exists():
        raise FileExistsError(f"would overwrite {dest}")
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    fmt = "csv" if "patients.csv" in manifest["files"] else "parquet"
    patients = f"patients.{fmt}"

    if kind == "missing_manifest":
        (dest / "manifest.json").unlink()
        return dest
    if kind == "missing_table":  # neither delivered nor listed
        (dest / f"edss_assessments.{fmt}").unlink()
        del manifest["files"][f"edss_assessments.{fmt}"]
    elif kind == "other_study":
        manifest["study_id"] = "ALZ-PASS-CV"
    elif kind == "missing_column":
        _rewrite_table(dest / f"infections.{fmt}", lambda frame: frame.drop("pathogen"))
    elif kind == "misspelled_column":
        _rewrite_table(dest / f"follow_up.{fmt}",
                       lambda frame: frame.rename({"followup_end_date": "follow_up_end_date"}))
    elif kind == "unparseable_file":
        _break_file(dest / patients, fmt)
    elif kind == "other_site_patient":  # one patient, in every table, under another site's prefix
        site = manifest["site_id"]
        old = _read_table(dest / patients)["patient_id"][0]
        new = ("SE02" if site == "DK01" else "DK01") + old[len(site):]
        for name in manifest["files"]:
            _rewrite_table(dest / name, lambda frame: frame.with_columns(pl.col("patient_id").replace({old: new})))
    elif kind == "duplicate_patient":
        _rewrite_table(dest / patients, lambda frame: pl.concat([frame.head(1), frame]))
        manifest["files"][patients]["rows"] += 1
    _rehash(dest, manifest)
    if kind == "checksum":  # the file changed after the manifest was written
        entry = manifest["files"][patients]
        entry["sha256"] = ("0" if entry["sha256"][0] != "0" else "1") + entry["sha256"][1:]
    elif kind == "row_count":
        manifest["files"][patients]["rows"] += 1
    _write_manifest(dest, manifest)
    return dest


def _read_table(path: Path) -> pl.DataFrame:
    """A delivered table as it is (CSV: every value as text)."""
    return pl.read_csv(path, infer_schema=False) if path.suffix == ".csv" else pl.read_parquet(path)


def _rewrite_table(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    frame = change(_read_table(path))
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def _break_file(path: Path, fmt: str) -> None:
    """CSV: a ragged first data row (one field too many). Parquet: the footer cut off."""
    data = path.read_bytes()
    if fmt == "csv":
        header, first, rest = data.split(b"\n", 2)
        path.write_bytes(b"\n".join([header, first + b',"unexpected"', rest]))
    else:
        path.write_bytes(data[: len(data) // 2])
