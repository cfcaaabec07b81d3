"""The code lists (codelists/*.csv) and their loader vigil/codelists.py."""

from __future__ import annotations

import re
import shutil

import duckdb
import pytest

from vigil.cohort.codelists import CODELIST_DIR, CODELISTS, CodeListError, codelist_versions, load_codelists, read_codelist
from vigil.contract import load_contract

SAP_TERMS = """Cytomegalovirus infection, Cytomegalovirus viraemia, Cytomegalovirus colitis,
  Cytomegalovirus hepatitis, Nocardiosis, Pulmonary nocardiosis, Cerebral
  nocardiosis, Listeriosis, Listeria meningitis, Tuberculosis, Pulmonary
  tuberculosis, Latent tuberculosis reactivation, Oesophageal candidiasis,
  Pneumocystis jirovecii pneumonia, Progressive multifocal
  leukoencephalopathy, Herpes zoster disseminated, Cryptococcosis,
  Aspergillosis"""


def test_every_list_loads_with_one_version_and_a_hash():
    versions = codelist_versions()
    assert set(versions) == {"charlson_quan2005_icd10", "dmt_classes", "opportunistic_terms", "reference_rates", "strata"}
    for v in versions.values():
        assert re.fullmatch(r"\d+\.\d+", v["version"]) and len(v["sha256"]) == 64


def test_readme_states_each_lists_current_version():
    readme = (CODELIST_DIR / "README.md").read_text(encoding="utf-8")
    for name, v in codelist_versions().items():
        assert re.search(rf"\| `{name}\.csv` \| {re.escape(v['version'])} \|", readme), name


def test_dmt_codes_are_those_of_the_extract_contract_and_the_high_efficacy_class_that_of_the_spec():
    rows = {r[0]: r[2] for r in read_codelist("dmt_classes").rows}
    in_set = next(r for r in load_contract().tables["dmt_history"].column("dmt_code").rules if r.kind == "in_set")
    assert sorted(rows) == sorted(in_set.params["values"])
    assert len(rows) == 16
    assert {c for c, high in rows.items() if high == "Y"} == set("FTY SIPO OZA PONE NTZ OCR OFA RTX CLAD MITOX DAC".split())


def test_opportunistic_terms_are_the_sap_list():
    terms = [r[0] for r in read_codelist("opportunistic_terms").rows]
    assert terms == [t.strip() for t in " ".join(SAP_TERMS.split()).split(",")]
    assert len(terms) == 18


def test_charlson_has_the_17_quan_categories_with_charlson_1987_weights_and_the_hierarchy():
    rows = [dict(zip(CODELISTS["charlson_quan2005_icd10"].column_names, r))
            for r in read_codelist("charlson_quan2005_icd10").rows]
    weights = {r["category"]: r["weight"] for r in rows}
    assert weights == {
        "myocardial_infarction": 1, "congestive_heart_failure": 1, "peripheral_vascular_disease": 1,
        "cerebrovascular_disease": 1, "dementia": 1, "chronic_pulmonary_disease": 1, "rheumatic_disease": 1,
        "peptic_ulcer_disease": 1, "mild_liver_disease": 1, "diabetes_without_complication": 1,
        "diabetes_with_complication": 2, "hemiplegia_paraplegia": 2, "renal_disease": 2, "any_malignancy": 2,
        "moderate_severe_liver_disease": 3, "metastatic_solid_tumour": 6, "aids_hiv": 6,
    }
    hierarchy = {r["category"]: r["superseded_by"] for r in rows if r["superseded_by"]}
    assert hierarchy == {"mild_liver_disease": "moderate_severe_liver_disease",
                         "diabetes_without_complication": "diabetes_with_complication",
                         "any_malignancy": "metastatic_solid_tumour"}
    prefixes = [r["icd10_prefix"] for r in rows]
    assert all(re.fullmatch(r"[A-Z][0-9]{2}[0-9]?", p) for p in prefixes)
    # no prefix of the list is a prefix of another category's: a code falls in at most one category
    by_prefix = {r["icd10_prefix"]: r["category"] for r in rows}
    clashes = [(a, b) for a in by_prefix for b in by_prefix
               if a != b and b.startswith(a) and by_prefix[a] != by_prefix[b]]
    assert clashes == []


def test_loader_creates_commented_tables_and_the_versions_table():
    con = duckdb.connect()
    versions = load_codelists(con)
    assert con.execute("SELECT count(*) FROM codelists.opportunistic_terms").fetchone() == (18,)
    assert con.execute("SELECT count(*) FROM codelists.dmt_classes").fetchone() == (16,)
    assert dict(con.execute("SELECT codelist, version FROM codelists.versions").fetchall()) == {
        k: v["version"] for k, v in versions.items()}
    load_codelists(con)  # again: replaces, does not duplicate
    assert con.execute("SELECT count(*) FROM codelists.dmt_classes").fetchone() == (16,)
    assert con.execute("SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'codelists' "
                       "AND coalesce(comment, '') = ''").fetchone() == (0,)


@pytest.fixture
def lists_copy(tmp_path):
    for name in CODELISTS:
        shutil.copy(CODELIST_DIR / f"{name}.csv", tmp_path / f"{name}.csv")
    return tmp_path


def test_loader_refuses_a_file_that_mixes_versions(lists_copy):
    path = lists_copy / "opportunistic_terms.csv"
    path.write_text(path.read_text() + "Mucormycosis,1.1\n")
    with pytest.raises(CodeListError, match="one version"):
        read_codelist("opportunistic_terms", lists_copy)


def test_loader_refuses_a_wrong_header(lists_copy):
    path = lists_copy / "dmt_classes.csv"
    path.write_text(path.read_text().replace("high_efficacy", "high"))
    with pytest.raises(CodeListError, match="header"):
        read_codelist("dmt_classes", lists_copy)


def test_loader_refuses_a_duplicate_prefix(lists_copy):
    path = lists_copy / "charlson_quan2005_icd10.csv"
    path.write_text(path.read_text() + "aids_hiv,AIDS/HIV,6,,B20,B20.x,1.0\n")
    with pytest.raises(CodeListError, match="duplicate"):
        read_codelist("charlson_quan2005_icd10", lists_copy)
