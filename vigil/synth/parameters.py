"""What the generator builds in: rates, shares, term lists, code renderings and the serious-infection
hazard ratios (the "known answers" of the Cox models)."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from vigil.cohort.codelists import read_codelist
from vigil.cohort.strata import strata

# ---------------------------------------------------------------------------------------------
# What the generator builds in. The hazard ratios are the "known answers" of the Cox models.
# ---------------------------------------------------------------------------------------------

# Serious-infection hazard ratio of the SAP stratum levels after the reference, in level order
# (codelists/strata.csv: level_order 2, 3, ...; the reference level and levels past the end of a
# tuple, such as the missing EDSS level: 1). A patient's hazard is the product over strata (in this
# order), times the baseline rate, times EARLY_WINDOW_RATE_RATIO in the first EARLY_WINDOW_DAYS after
# each course start.
_HAZARD_RATIOS_AFTER_REFERENCE: dict[str, tuple[float, ...]] = {
    "charlson": (1.3, 1.8),
    "prior_dmt": (1.2, 1.5),
    "prior_high_efficacy": (1.4,),
    "edss": (1.3, 1.8),
    "age_group": (1.1, 1.25, 1.5),
    "sex": (1.15,),
}
# The same keyed by level: {variable: {level: hazard ratio}} (levels not listed: 1).
SERIOUS_INFECTION_HAZARD_RATIOS: dict[str, dict[str, float]] = {
    variable: dict(zip(strata()[variable].level_names[1:], ratios))
    for variable, ratios in _HAZARD_RATIOS_AFTER_REFERENCE.items()
}
BASELINE_SERIOUS_RATE = 10 / 1000  # per person-year at the reference levels outside the early windows:
#                                    the crude rate of the whole cohort comes out near 28 per 1000
# A series of data cuts (vigil.synth.cuts) multiplies the serious-infection rate and the opportunistic
# share of non-serious infections by SERIES_BASE_RATE_SCALE, and the opportunistic share of every
# infection by SERIES_OPPORTUNISTIC_SCALE, so that at rate ratio 1 its rates of first serious and first
# opportunistic infection come near the SAP's reference rates (section 7, v1.0: 10-18 and 2 per 1000
# person-years). Unscaled, a series' patients (first infusions spread over the two years before the first
# cut and after it) have about 35 first serious infections per 1000 person-years, a standardised ratio
# near 2.9 (synthesize_study's older cohort: 29 per 1000, 2.4), and a ratio near 5 for opportunistic
# ones. Scaled, the standardised ratio of first serious infections is about 1.07 at a cut two years into
# entry, 1.0 a year later and 0.94 two years later (more of early follow-up is in the early windows), as
# measured over 40 seeds of 3,000 patients. synthesize_study keeps the rates above.
SERIES_BASE_RATE_SCALE = 0.34
SERIES_OPPORTUNISTIC_SCALE = 0.7
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
SEXES = tuple(level.value for level in strata()["sex"].levels)  # as delivered, in level order
MS_COURSES = ("RRMS", "SPMS", "PPMS", "CIS")
# Patients made to fall out at each SAP attrition step (share of a site, at least one each).
_NORMAL, _NO_INFUSION, _NOT_RRMS, _UNDER_18, _ENDS_BEFORE_INDEX = range(5)
_EXCLUSION_SHARES = {_NO_INFUSION: 0.015, _NOT_RRMS: 0.03, _UNDER_18: 0.015, _ENDS_BEFORE_INDEX: 0.01}
_COURSE_NUMBER_ERRORS = 0.01  # share of patients whose site-recorded course_number is wrong

# truth.parquet, in this order; level columns hold the SAP's level labels.
TRUTH_COLUMNS = (
    "patient_id", "site_id", "in_cohort", "attrition_step", "index_date", "exit_date", "death", "age_at_index",
    "age_group", "sex", "charlson", "charlson_level", "prior_dmt", "prior_dmt_level", "prior_high_efficacy", "edss",
    "edss_level", "first_serious_date", "serious_episodes", "first_oi_date", "n_courses", "course_number_mismatch",
    "course_starts")
# The truth column holding each SAP stratum variable's level: <variable>_level where the truth also
# holds the score under the variable's name, else the variable's name.
_STRATUM_COLUMNS = {variable: f"{variable}_level" if f"{variable}_level" in TRUTH_COLUMNS else variable
                    for variable in SERIOUS_INFECTION_HAZARD_RATIOS}
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
