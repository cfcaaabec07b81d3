"""vigil.synth: synthetic deliveries that follow the extract spec, and the answers that come with them.

The checks here do not reuse the generator's own logic: row rules are evaluated by a small
polars evaluator written from the contract's rule vocabulary, and the SAP quantities by DuckDB
SQL with its own ICD-10 lists for the Charlson index (Quan et al. 2005).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from vigil.contract import load_contract
from vigil.synth import (
    CHARLSON, NON_CHARLSON_CODES, OPPORTUNISTIC_TERMS, REFUSAL_KINDS, SERIOUS_INFECTION_HAZARD_RATIOS,
    TRUTH_COLUMNS, make_refused_delivery, synthesize_study,
)

CONTRACT = load_contract()
CUT = date(2026, 6, 30)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return synthesize_study(tmp_path_factory.mktemp("clean"), patients=3000, sites=3, seed=11)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return synthesize_study(tmp_path_factory.mktemp("faulty"), patients=600, sites=3, seed=5, faults=True)


@pytest.fixture(scope="module")
def faulty_parquet(tmp_path_factory):
    return synthesize_study(tmp_path_factory.mktemp("faulty_pq"), patients=600, sites=3, seed=6, faults=True,
                            fmt="parquet")


@pytest.fixture(params=["clean", "faulty", "faulty_parquet"])
def study(request):
    return request.getfixturevalue(request.param)


def fmt_of(folder: Path) -> str:
    return "csv" if (folder / "patients.csv").exists() else "parquet"


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def read_text_table(folder: Path, table: str) -> pl.DataFrame:
    """A delivered table with every value as text (as the loader sees it), plus its _line."""
    if fmt_of(folder) == "csv":
        return pl.read_csv(folder / f"{table}.csv", infer_schema=False).with_row_index("_line", offset=2)
    return pl.read_parquet(folder / f"{table}.parquet").select(pl.all().cast(pl.String)).with_row_index(
        "_line", offset=1)


def csv_data_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- an independent evaluation of the contract's row rules -----------------------------------------

def typed(column: str, type_name: str) -> pl.Expr:
    text = pl.col(column)
    pattern = CONTRACT.type_pattern(type_name)
    ok = text.str.contains(pattern) if pattern else pl.lit(True)
    value = {"date": text.str.to_date("%Y-%m-%d", strict=False), "int": text.cast(pl.Int64, strict=False),
             "dec": text.cast(pl.Float64, strict=False)}.get(type_name, text)
    return pl.when(ok).then(value)


def bound(value):
    if not isinstance(value, str):
        return value
    if value == "{data_cut}":
        return CUT
    total, sign = 0, 1
    for token in value.replace("{data_cut_year}", str(CUT.year)).split():
        if token in "+-":
            sign = 1 if token == "+" else -1
        else:
            total += sign * int(token)
    return total


def violation(rule) -> pl.Expr:
    col, raw, p = pl.col(rule.column), pl.col(f"{rule.column}__raw"), rule.params
    if rule.kind == "required":
        broken = raw.is_null()
    elif rule.kind == "parses":
        broken = raw.is_not_null() & col.is_null()
    elif rule.kind == "absent":
        broken = col.is_not_null()
    elif rule.kind == "in_set":
        values = p["values"]
        broken = ~col.is_in(pl.Series(values, strict=False).implode())
    elif rule.kind == "pattern":
        broken = ~col.str.contains(p["regex"])
    elif rule.kind == "between":
        broken = pl.lit(False)
        if "min" in p:
            broken |= (col <= bound(p["min"])) if p.get("strict_min") else (col < bound(p["min"]))
        if "max" in p:
            broken |= col > bound(p["max"])
    elif rule.kind == "compare":
        other = pl.col(p["column"])
        broken = {"exists": col.is_not_null() & other.is_null(), ">=": ~(col >= other), "<=": ~(col <= other),
                  "==": ~(col == other), "year>=": ~(col.dt.year() >= other)}[p["op"]]
    elif rule.kind == "unique":
        key = p["columns"]
        broken = pl.all_horizontal(pl.col(k).is_not_null() for k in key) & (pl.len().over(key) > 1)
    else:
        raise AssertionError(rule.kind)
    if rule.when:
        broken = (pl.col(rule.when[0]) == rule.when[1]) & broken
    return broken.fill_null(False)


def quarantine(folder: Path) -> dict[str, pl.DataFrame]:
    """Per table: every row (_line) with the reason it is quarantined for (null = loaded), and
    the typed values of its columns."""
    frames = {}
    for table in CONTRACT.tables.values():
        raw = read_text_table(folder, table.name)
        frames[table.name] = raw.with_columns(
            *[pl.col(c.name).alias(f"{c.name}__raw") for c in table.columns],
            *[typed(c.name, c.type).alias(c.name) for c in table.columns])
    patients = frames["patients"].filter(pl.col("patient_id").is_not_null()).select(
        pl.col("patient_id"), pl.col("patient_id").alias("patient__patient_id"),
        pl.col("birth_year").alias("patient__birth_year"))
    follow_up = frames["follow_up"].filter(pl.col("patient_id").is_not_null()).group_by("patient_id").agg(
        pl.col("patient_id").first().alias("follow_up__patient_id"),
        pl.col("death_date").max().alias("patient__death_date"))
    for name, table in CONTRACT.tables.items():
        frame = frames[name].join(patients, on="patient_id", how="left", maintain_order="left").join(
            follow_up, on="patient_id", how="left", maintain_order="left")
        frames[name] = frame.with_columns(
            _reason=pl.coalesce(pl.when(violation(r)).then(pl.lit(r.reason)) for r in table.rules))
    # A patient with a quarantined row or no loaded follow_up row goes, and with it its other rows.
    own = pl.col("_reason").is_not_null()
    followed = frames["follow_up"].filter(~own)["patient_id"]
    frames["patients"] = frames["patients"].with_columns(_reason=pl.when(
        ~own & pl.col("patient_id").is_not_null() & ~pl.col("patient_id").is_in(followed.implode()))
        .then(pl.lit("no_follow_up")).otherwise("_reason"))
    bad = frames["patients"].filter(own)["patient_id"].drop_nulls()
    for name in CONTRACT.tables:
        if name != "patients":
            frames[name] = frames[name].with_columns(_reason=pl.when(~own & pl.col("patient_id").is_in(bad.implode()))
                                                     .then(pl.lit("patient_quarantined")).otherwise("_reason"))
    return frames


def quarantined_rows(result) -> pl.DataFrame:
    rows = [frame.filter(pl.col("_reason").is_not_null()).select(
        pl.lit(manifest_of(folder)["site_id"]).alias("site_id"), pl.lit(name).alias("table"),
        pl.col("_line").cast(pl.Int64).alias("line_number"), pl.col("_reason").alias("reason"))
        for folder in result.deliveries for name, frame in quarantine(folder).items()]
    return pl.concat(rows).sort("site_id", "table", "line_number")


# --- an independent computation of the SAP quantities -----------------------------------------------

def codes(letter: str, first: int, last: int) -> list[str]:
    return [f"{letter}{i:02d}" for i in range(first, last + 1)]


def sub(block: str, first: int, last: int) -> list[str]:
    return [f"{block}{i}" for i in range(first, last + 1)]


# Quan et al. 2005, ICD-10 coding algorithm for the Charlson index, as code prefixes without dots.
QUAN = {
    "myocardial_infarction": (1, ["I21", "I22", "I252"]),
    "congestive_heart_failure": (1, ["I099", "I110", "I130", "I132", "I255", "I420", *sub("I42", 5, 9), "I43",
                                     "I50", "P290"]),
    "peripheral_vascular_disease": (1, ["I70", "I71", "I731", "I738", "I739", "I771", "I790", "I792", "K551", "K558", "K559",
                                "Z958", "Z959"]),
    "cerebrovascular_disease": (1, ["G45", "G46", "H340", *codes("I", 60, 69)]),
    "dementia": (1, [*codes("F", 0, 3), "F051", "G30", "G311"]),
    "chronic_pulmonary_disease": (1, ["I278", "I279", *codes("J", 40, 47), *codes("J", 60, 67), "J684", "J701", "J703"]),
    "rheumatic_disease": (1, ["M05", "M06", "M315", "M32", "M33", "M34", "M351", "M353", "M360"]),
    "peptic_ulcer_disease": (1, codes("K", 25, 28)),
    "mild_liver_disease": (1, ["B18", *sub("K70", 0, 3), "K709", *sub("K71", 3, 5), "K717", "K73", "K74", "K760",
                       *sub("K76", 2, 4), "K768", "K769", "Z944"]),
    "diabetes_without_complication": (1, [f"E1{i}{j}" for i in range(5) for j in (0, 1, 6, 8, 9)]),
    "diabetes_with_complication": (2, [f"E1{i}{j}" for i in range(5) for j in (2, 3, 4, 5, 7)]),
    "hemiplegia_paraplegia": (2, ["G041", "G114", "G801", "G802", "G81", "G82", *sub("G83", 0, 4), "G839"]),
    "renal_disease": (2, ["I120", "I131", *sub("N03", 2, 7), *sub("N05", 2, 7), "N18", "N19", "N250", *sub("Z49", 0, 2),
                  "Z940", "Z992"]),
    "any_malignancy": (2, [*codes("C", 0, 26), *codes("C", 30, 34), *codes("C", 37, 41), "C43", *codes("C", 45, 58),
                       *codes("C", 60, 76), *codes("C", 81, 85), "C88", *codes("C", 90, 97)]),
    "moderate_severe_liver_disease": (3, ["I850", "I859", "I864", "I982", "K704", "K711", "K721", "K729", "K765", "K766", "K767"]),
    "metastatic_solid_tumour": (6, codes("C", 77, 80)),
    "aids_hiv": (6, ["B20", "B21", "B22", "B24"]),
}
HIERARCHY = [("mild_liver_disease", "moderate_severe_liver_disease"), ("diabetes_without_complication", "diabetes_with_complication"),
             ("any_malignancy", "metastatic_solid_tumour")]
HIGH_EFFICACY = ["FTY", "SIPO", "OZA", "PONE", "NTZ", "OCR", "OFA", "RTX", "CLAD", "MITOX", "DAC"]


def quan_categories(code: str) -> set[str]:
    plain = code.replace(".", "")
    return {cat for cat, (_, prefixes) in QUAN.items() if any(plain.startswith(p) for p in prefixes)}


def sap_oracle(result) -> pl.DataFrame:
    """The SAP sections 1-3 in SQL, over the rows the independent rule evaluation loads."""
    con = duckdb.connect()
    for name in CONTRACT.tables:
        loaded = pl.concat([frame.filter(pl.col("_reason").is_null()).select(CONTRACT.tables[name].column_names)
                            for frame in (quarantine(folder)[name] for folder in result.deliveries)])
        con.register(name, loaded.to_arrow())
    quan = pl.DataFrame([(cat, w, p) for cat, (w, prefixes) in QUAN.items() for p in prefixes],
                        schema=["category", "weight", "prefix"], orient="row")
    con.register("quan", quan.to_arrow())
    terms = ", ".join("'" + t.lower() + "'" for t in OPPORTUNISTIC_TERMS)
    he = ", ".join(f"'{c}'" for c in HIGH_EFFICACY)
    mild_minus = " + ".join(f"CASE WHEN bool_or(category = '{m}') AND bool_or(category = '{s}') "
                            f"THEN {QUAN[m][0]} ELSE 0 END" for m, s in HIERARCHY)
    table = con.sql(f"""
        WITH idx AS (SELECT patient_id, min(infusion_date) AS index_date FROM alemtuzumab_infusions GROUP BY 1),
        base AS (
            SELECT p.patient_id, p.sex, i.index_date, year(i.index_date) - p.birth_year AS age, p.ms_course,
                   least(f.followup_end_date, coalesce(f.death_date, f.followup_end_date), DATE '{CUT}') AS exit_date,
                   f.death_date IS NOT NULL AS death
            FROM patients p LEFT JOIN idx i USING (patient_id) LEFT JOIN follow_up f USING (patient_id)),
        charlson AS (
            SELECT patient_id, sum(weight) - ({mild_minus}) AS charlson FROM (
                SELECT DISTINCT c.patient_id, q.category, q.weight
                FROM comorbidities c JOIN base b USING (patient_id)
                JOIN quan q ON starts_with(replace(c.icd10_code, '.', ''), q.prefix)
                WHERE c.diagnosis_date IS NULL OR c.diagnosis_date <= b.index_date) GROUP BY 1),
        dmt AS (
            SELECT d.patient_id, count(DISTINCT d.dmt_code) AS prior_dmt, bool_or(d.dmt_code IN ({he})) AS he
            FROM dmt_history d JOIN base b USING (patient_id) WHERE d.start_date < b.index_date GROUP BY 1),
        edss AS (
            SELECT e.patient_id, coalesce(
                arg_max(e.edss, e.assessment_date) FILTER (
                    WHERE e.assessment_date BETWEEN b.index_date - 365 AND b.index_date),
                arg_min(e.edss, e.assessment_date) FILTER (
                    WHERE e.assessment_date > b.index_date AND e.assessment_date <= b.index_date + 30)) AS edss
            FROM edss_assessments e JOIN base b USING (patient_id) GROUP BY 1),
        events AS (
            SELECT n.patient_id,
                   min(n.onset_date) FILTER (WHERE n.serious = 'Y') AS first_serious_date,
                   count(DISTINCT n.event_id) FILTER (WHERE n.serious = 'Y') AS serious_episodes,
                   min(n.onset_date) FILTER (WHERE lower(n.meddra_pt) IN ({terms})) AS first_oi_date
            FROM infections n JOIN base b USING (patient_id)
            WHERE n.onset_date BETWEEN b.index_date AND b.exit_date GROUP BY 1)
        SELECT b.patient_id,
               CASE WHEN b.index_date IS NULL THEN 2 WHEN b.ms_course <> 'RRMS' THEN 3 WHEN b.age < 18 THEN 4
                    WHEN b.exit_date < b.index_date THEN 5 END AS attrition_step,
               b.index_date, b.exit_date, b.death, b.age AS age_at_index,
               CASE WHEN b.age < 18 THEN NULL WHEN b.age < 30 THEN '18-29' WHEN b.age < 40 THEN '30-39'
                    WHEN b.age < 50 THEN '40-49' ELSE '>=50' END AS age_group,
               CASE WHEN b.index_date IS NOT NULL THEN coalesce(c.charlson, 0) END AS charlson,
               CASE WHEN b.index_date IS NOT NULL THEN coalesce(d.prior_dmt, 0) END AS prior_dmt,
               CASE WHEN b.index_date IS NOT NULL THEN CASE WHEN d.he THEN 'Y' ELSE 'N' END END AS prior_high_efficacy,
               e.edss,
               CASE WHEN b.index_date IS NULL THEN NULL WHEN e.edss IS NULL THEN 'unknown'
                    WHEN e.edss <= 2.5 THEN '0-2.5' WHEN e.edss <= 5.5 THEN '3.0-5.5' ELSE '>=6.0' END AS edss_level,
               v.first_serious_date,
               CASE WHEN b.index_date IS NOT NULL THEN coalesce(v.serious_episodes, 0) END AS serious_episodes,
               v.first_oi_date
        FROM base b LEFT JOIN charlson c USING (patient_id) LEFT JOIN dmt d USING (patient_id)
        LEFT JOIN edss e USING (patient_id) LEFT JOIN events v USING (patient_id)
    """).to_arrow_table()
    return pl.from_arrow(table)


# --- deliveries -------------------------------------------------------------------------------------

def test_one_delivery_per_site_named_site_and_cut_with_the_answers_beside_them(faulty):
    names = [folder.name for folder in faulty.deliveries]
    assert names == ["DK01_2026-06-30", "SE02_2026-06-30", "NO03_2026-06-30"]
    root = faulty.truth.parent
    assert faulty.faults.parent == root and faulty.truth.name == "truth.parquet"
    assert sorted(p.name for p in root.iterdir()) == sorted(names + ["XX04_2026-06-30", "faults.csv", "truth.parquet"])
    for folder in faulty.deliveries:
        assert CONTRACT.folder_pattern.match(folder.name)


def test_manifest_names_study_spec_site_cut_and_a_utc_creation_time(study):
    for folder in study.deliveries:
        manifest = manifest_of(folder)
        assert set(manifest) == set(CONTRACT.manifest_keys)
        assert (manifest["study_id"], manifest["spec_version"]) == (CONTRACT.study_id, CONTRACT.spec_version)
        assert f"{manifest['site_id']}_{manifest['data_cut']}" == folder.name
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created_at"])
        assert list(manifest["files"]) == CONTRACT.file_names(fmt_of(folder))


def test_manifest_hashes_and_row_counts_match_the_files(study):
    totals = dict.fromkeys(CONTRACT.tables, 0)
    for folder in study.deliveries:
        for name, entry in manifest_of(folder)["files"].items():
            path = folder / name
            assert entry["sha256"] == sha256(path), name
            rows = csv_data_rows(path) if path.suffix == ".csv" else pq.ParquetFile(path).metadata.num_rows
            assert entry["rows"] == rows, name
            totals[path.stem] += rows
    assert study.rows == totals


def test_headers_are_exactly_the_contract_columns_in_order(study):
    for folder in study.deliveries:
        for table in CONTRACT.tables.values():
            if fmt_of(folder) == "csv":
                with (folder / f"{table.name}.csv").open(encoding="utf-8") as handle:
                    header = next(csv.reader(handle))
            else:
                header = pq.read_schema(folder / f"{table.name}.parquet").names
            assert header == table.column_names


def test_patient_ids_are_unique_and_carry_the_site_prefix(study):
    for folder in study.deliveries:
        site = manifest_of(folder)["site_id"]
        ids = read_text_table(folder, "patients")["patient_id"].drop_nulls()
        assert ids.n_unique() == len(ids)
        for table in CONTRACT.tables:
            delivered = read_text_table(folder, table)["patient_id"].drop_nulls()
            assert delivered.str.starts_with(f"{site}-").all(), table


def test_clean_parquet_has_date_and_number_columns(tmp_path):
    result = synthesize_study(tmp_path, patients=200, sites=2, seed=3, fmt="parquet")
    schema = pq.read_schema(result.deliveries[0] / "infections.parquet")
    assert str(schema.field("onset_date").type) == "date32[day]"
    assert str(schema.field("meddra_pt_code").type) == "int64"
    schema = pq.read_schema(result.deliveries[0] / "alemtuzumab_infusions.parquet")
    assert str(schema.field("dose_mg").type) == "double"


def test_same_arguments_give_identical_bytes_and_another_seed_other_data(tmp_path):
    for fmt in ("csv", "parquet"):
        a = synthesize_study(tmp_path / fmt / "a", patients=360, sites=2, seed=9, faults=True, fmt=fmt)
        b = synthesize_study(tmp_path / fmt / "b", patients=360, sites=2, seed=9, faults=True, fmt=fmt)
        assert all_bytes(a.truth.parent) == all_bytes(b.truth.parent)
    other = synthesize_study(tmp_path / "other", patients=360, sites=2, seed=10, faults=True)
    assert (other.deliveries[0] / "patients.csv").read_bytes() != (
        tmp_path / "csv" / "a" / other.deliveries[0].name / "patients.csv").read_bytes()


def test_refuses_to_overwrite_and_checks_its_arguments(tmp_path):
    synthesize_study(tmp_path, patients=60, sites=1)
    with pytest.raises(FileExistsError):
        synthesize_study(tmp_path, patients=60, sites=1)
    with pytest.raises(ValueError, match="format"):
        synthesize_study(tmp_path / "x", fmt="xlsx")
    with pytest.raises(ValueError, match="sites need"):
        synthesize_study(tmp_path / "y", patients=100, sites=2, faults=True)


# --- row rules and faults ---------------------------------------------------------------------------

def test_clean_data_breaks_no_row_rule(clean):
    assert quarantined_rows(clean).height == 0


def test_faults_csv_lists_exactly_the_rows_the_rules_quarantine(faulty, faulty_parquet):
    for result in (faulty, faulty_parquet):
        expected = pl.read_csv(result.faults).select("site_id", "table", "line_number", "reason").sort(
            "site_id", "table", "line_number")
        assert expected.equals(quarantined_rows(result))


def test_faults_break_every_row_rule_at_every_site_and_use_every_reason(faulty):
    faults = pl.read_csv(faulty.faults)
    rules = {r.rule_id for r in CONTRACT.rules}
    for site in ("DK01", "SE02", "NO03"):
        at_site = faults.filter(pl.col("site_id") == site)
        assert set(at_site["rule_id"].drop_nulls()) == rules
        assert set(at_site["reason"]) == set(CONTRACT.reasons)


def test_duplicates_quarantine_every_copy(faulty):
    faults = pl.read_csv(faulty.faults).filter(pl.col("reason") == "duplicate_key")
    assert faults.group_by("site_id", "table").len()["len"].to_list() == [2] * faults.select(
        "site_id", "table").unique().height


def test_truth_describes_the_cohort_after_quarantine(faulty):
    truth = pl.read_parquet(faulty.truth)
    faults = pl.read_csv(faulty.faults).filter(pl.col("table") == "patients")
    for folder in faulty.deliveries:
        patients = read_text_table(folder, "patients")
        site = manifest_of(folder)["site_id"]
        lines = faults.filter(pl.col("site_id") == site)["line_number"]
        quarantined = patients.filter(pl.col("_line").is_in(lines.implode()))["patient_id"].drop_nulls()
        at_site = truth.filter(pl.col("site_id") == site)
        assert at_site["patient_id"].to_list() == patients["patient_id"].drop_nulls().to_list()
        theirs = at_site.filter(pl.col("patient_id").is_in(quarantined.implode()))
        assert theirs.height == len(quarantined) > 0
        assert (theirs["attrition_step"] == 1).all() and not theirs["in_cohort"].any()


# --- the answers ------------------------------------------------------------------------------------

def test_truth_has_its_columns_and_one_row_per_delivered_patient(clean):
    truth = pl.read_parquet(clean.truth)
    assert tuple(truth.columns) == TRUTH_COLUMNS
    assert truth["patient_id"].n_unique() == truth.height == clean.rows["patients"]


@pytest.mark.parametrize("name", ["clean", "faulty"])
def test_truth_matches_an_independent_computation_of_the_sap(name, request):
    result = request.getfixturevalue(name)
    truth = pl.read_parquet(result.truth).filter(pl.col("attrition_step").is_null() | (pl.col("attrition_step") > 1))
    oracle = sap_oracle(result)
    columns = [c for c in oracle.columns if c != "patient_id"]
    both = truth.join(oracle, on="patient_id", how="full", suffix="_sql")
    assert both.height == truth.height == oracle.height
    for column in columns:
        left, right = both[column], both[f"{column}_sql"].cast(both[column].dtype)
        differs = both.filter(~left.eq_missing(right))
        assert differs.height == 0, (column, differs.select("patient_id", column, f"{column}_sql").head())
    assert (truth["in_cohort"] == truth["attrition_step"].is_null()).all()


def test_every_written_icd10_code_means_what_quan_2005_says():
    from vigil.synth.parameters import _CODE_CATEGORY, _OTHER_FORMS
    for code, category in _CODE_CATEGORY.select("icd10_code", "category").iter_rows():
        assert quan_categories(code) == {category}, code
    for code in _OTHER_FORMS.ravel():
        assert quan_categories(code) == set(), code
    assert set(CHARLSON) == set(QUAN) and "G35" in NON_CHARLSON_CODES


def test_the_generator_speaks_the_study_code_lists():
    """The truth is only the pipeline's answer if both read diagnoses, terms and DMTs alike."""
    from vigil.resources import CODELIST_DIR
    from vigil.synth.parameters import _CODE_CATEGORY, _OTHER_FORMS, CHARLSON_HIERARCHY, HIGH_EFFICACY_DMT
    lists = CODELIST_DIR
    charlson = pl.read_csv(lists / "charlson_quan2005_icd10.csv", infer_schema=False)

    def listed(code: str) -> set[tuple[str, int]]:
        plain = code.replace(".", "").upper()
        hits = charlson.filter(pl.lit(plain).str.starts_with(pl.col("icd10_prefix")))
        return set(hits.select("category", pl.col("weight").cast(pl.Int64)).iter_rows())

    named = {}  # generator category -> code list category
    for code, category, weight in _CODE_CATEGORY.iter_rows():
        (match,) = listed(code)
        assert match[1] == weight, code
        assert named.setdefault(category, match[0]) == match[0], code
    assert named == {category: category for category in CHARLSON}  # the generator uses the list's names
    superseded = dict(charlson.filter(pl.col("superseded_by").is_not_null())
                      .select("category", "superseded_by").unique().iter_rows())
    assert superseded == {named[mild]: named[severe] for mild, severe in CHARLSON_HIERARCHY.items()}
    assert all(listed(code) == set() for code in _OTHER_FORMS.ravel())
    terms = pl.read_csv(lists / "opportunistic_terms.csv")["meddra_pt"]
    assert set(terms) == set(OPPORTUNISTIC_TERMS)
    dmt = pl.read_csv(lists / "dmt_classes.csv")
    assert set(dmt.filter(pl.col("high_efficacy") == "Y")["dmt_code"]) == HIGH_EFFICACY_DMT


def test_strata_have_every_level_at_a_few_thousand_patients(clean):
    cohort = pl.read_parquet(clean.truth).filter("in_cohort")
    from vigil.cohort.strata import sap_levels
    from vigil.synth.parameters import _STRATUM_COLUMNS

    levels = {_STRATUM_COLUMNS[v]: set(lvs) for v, lvs in sap_levels().items()} | {"site_id": {"DK01", "SE02", "NO03"}}
    assert len(levels) == 7
    for column, expected in levels.items():
        assert set(cohort[column]) == expected, column
    assert cohort["death"].any() and cohort["first_serious_date"].is_not_null().any()
    assert cohort["first_oi_date"].is_not_null().any() and (cohort["serious_episodes"] > 1).any()


def test_each_attrition_step_excludes_somebody_at_each_site(clean):
    truth = pl.read_parquet(clean.truth)
    for site in ("DK01", "SE02", "NO03"):
        steps = set(truth.filter(pl.col("site_id") == site)["attrition_step"].drop_nulls())
        assert steps == {2, 3, 4, 5}, site


def test_serious_infections_are_more_frequent_in_the_strata_with_higher_hazard(clean):
    cohort = pl.read_parquet(clean.truth).filter("in_cohort").with_columns(
        years=((pl.col("exit_date") - pl.col("index_date")).dt.total_days() + 1) / 365.25)
    for variable, column, level, reference in (("charlson", "charlson_level", ">=2", "0"),
                                               ("edss", "edss_level", ">=6.0", "0-2.5")):
        rate = dict(cohort.group_by(column).agg(pl.col("serious_episodes").sum() / pl.col("years").sum()).iter_rows())
        # a crude rate ratio at 3000 patients: at least half the built-in effect on the log scale
        assert rate[level] / rate[reference] > SERIOUS_INFECTION_HAZARD_RATIOS[variable][level] ** 0.5


def test_data_have_the_structure_the_analyses_need(clean):
    folder = clean.deliveries[0]
    truth = pl.read_parquet(clean.truth).filter("in_cohort")
    recorded_right = truth.filter(~pl.col("course_number_mismatch"))["patient_id"]
    infusions = read_text_table(folder, "alemtuzumab_infusions").with_columns(
        pl.col("infusion_date").str.to_date(), pl.col("course_number").cast(pl.Int64)).filter(
        pl.col("patient_id").is_in(recorded_right.implode()))
    courses = infusions.group_by("patient_id", "course_number").agg(
        days=pl.len(), first=pl.col("infusion_date").min(), span=(pl.col("infusion_date").max()
                                                               - pl.col("infusion_date").min()).dt.total_days())
    assert set(courses.filter(pl.col("course_number") == 1)["days"]) == {5}
    assert (courses.filter(pl.col("course_number") == 1)["span"] == 4).all()
    assert set(courses.filter(pl.col("course_number") > 1)["days"]) >= {3}
    assert set(infusions["dose_mg"]) == {"12.0"}
    assert 0 < truth["course_number_mismatch"].mean() < 0.03
    assert set(truth["n_courses"]) == {1, 2, 3, 4}
    gaps = truth.filter(pl.col("n_courses") >= 2).select(
        (pl.col("course_starts").list.get(1) - pl.col("course_starts").list.get(0)).dt.total_days())
    assert gaps.to_series().min() >= 335

    codes_written = read_text_table(folder, "comorbidities")
    dotted = codes_written["icd10_code"].str.contains(r"\.")
    assert dotted.any() and not dotted.all()
    assert set(codes_written["icd10_code"].str.replace(r"\.", "").str.len_chars()) == {3, 4, 5}
    assert codes_written["diagnosis_date"].is_null().any()

    infections = read_text_table(folder, "infections")
    fatal = infections.filter(pl.col("outcome") == "fatal")
    assert fatal.height and (fatal["serious"] == "Y").all()
    assert fatal["seriousness_criteria"].str.contains("death").all()
    terms = infections["meddra_pt"]
    assert terms.str.to_lowercase().is_in([t.lower() for t in OPPORTUNISTIC_TERMS]).any()
    assert (~terms.is_in(list(OPPORTUNISTIC_TERMS)) & terms.str.to_lowercase().is_in(
        [t.lower() for t in OPPORTUNISTIC_TERMS])).any()  # a study term written in another case
    assert infections["pathogen"].str.contains(",").any()  # quoting matters

    follow_up = read_text_table(folder, "follow_up")
    assert set(follow_up["end_reason"]) == {"data_cut", "death", "lost_to_follow_up", "withdrawal", "other"}
    dead = follow_up.filter(pl.col("end_reason") == "death")
    assert (dead["death_date"] == dead["followup_end_date"]).all()


def test_prior_dmt_and_comorbidity_histories_test_the_index_date_boundaries(clean):
    folder = clean.deliveries[0]
    truth = pl.read_parquet(clean.truth).filter("in_cohort").select("patient_id", "index_date")
    dmt = read_text_table(folder, "dmt_history").with_columns(pl.col("start_date").str.to_date()).join(
        truth, on="patient_id")
    assert (dmt["start_date"] == dmt["index_date"]).any() and (dmt["start_date"] > dmt["index_date"]).any()
    repeated = dmt.filter(pl.col("start_date") < pl.col("index_date")).group_by("patient_id").agg(
        repeat=pl.len() > pl.col("dmt_code").n_unique())
    assert repeated["repeat"].any()
    comorbidities = read_text_table(folder, "comorbidities").with_columns(
        pl.col("diagnosis_date").str.to_date()).join(truth, on="patient_id")
    assert (comorbidities["diagnosis_date"] > comorbidities["index_date"]).any()
    assert (comorbidities["diagnosis_date"] == comorbidities["index_date"]).any()


# --- refused deliveries -----------------------------------------------------------------------------

def assert_manifest_consistent(folder: Path, except_file: str | None = None) -> None:
    for name, entry in manifest_of(folder)["files"].items():
        if name != except_file:
            assert entry["sha256"] == sha256(folder / name), name


def test_faulty_study_holds_one_delivery_refused_for_its_checksum(faulty):
    (refused,) = faulty.refused
    manifest = manifest_of(refused)
    assert refused.name == f"{manifest['site_id']}_{manifest['data_cut']}" == "XX04_2026-06-30"
    wrong = [name for name, entry in manifest["files"].items() if entry["sha256"] != sha256(refused / name)]
    assert wrong == ["patients.csv"]
    assert manifest["files"]["patients.csv"]["rows"] == csv_data_rows(refused / "patients.csv")


@pytest.mark.parametrize("kind", REFUSAL_KINDS)
def test_make_refused_delivery_breaks_the_delivery_one_way(kind, clean, tmp_path):
    src = clean.deliveries[1]
    dest = make_refused_delivery(src, tmp_path / src.name, kind)
    assert dest == tmp_path / src.name
    if kind == "missing_manifest":
        assert not (dest / "manifest.json").exists() and (dest / "patients.csv").exists()
        return
    manifest = manifest_of(dest)
    site = manifest["site_id"]
    if kind == "checksum":
        assert_manifest_consistent(dest, except_file="patients.csv")
        assert manifest["files"]["patients.csv"]["sha256"] != sha256(dest / "patients.csv")
        return
    assert_manifest_consistent(dest)
    counts = {name: csv_data_rows(dest / name) for name in manifest["files"] if (dest / name).exists()}
    if kind == "row_count":
        assert manifest["files"]["patients.csv"]["rows"] == counts["patients.csv"] + 1
        return
    if kind != "unparseable_file":
        assert all(manifest["files"][name]["rows"] == rows for name, rows in counts.items())
    if kind == "missing_table":
        assert not (dest / "edss_assessments.csv").exists() and "edss_assessments.csv" not in manifest["files"]
    elif kind == "other_study":
        assert manifest["study_id"] != CONTRACT.study_id
    elif kind in ("missing_column", "misspelled_column"):
        table = "infections" if kind == "missing_column" else "follow_up"
        with (dest / f"{table}.csv").open() as handle:
            header = next(csv.reader(handle))
        expected = CONTRACT.tables[table].column_names
        assert set(expected) - set(header) == ({"pathogen"} if kind == "missing_column" else {"followup_end_date"})
        assert len(header) == len(expected) - (kind == "missing_column")
    elif kind == "unparseable_file":
        with (dest / "patients.csv").open() as handle:
            widths = {len(row) for row in csv.reader(handle)}
        assert widths == {5, 6}
    elif kind == "other_site_patient":
        foreign = {name: read_text_table(dest, name.split(".")[0])["patient_id"].drop_nulls() for name in counts}
        prefixes = {p.split("-")[0] for ids in foreign.values() for p in ids}
        assert prefixes == {site, "DK01"}
        moved = {p for ids in foreign.values() for p in ids if not p.startswith(site)}
        assert len(moved) == 1
    elif kind == "duplicate_patient":
        ids = read_text_table(dest, "patients")["patient_id"]
        assert ids.is_duplicated().sum() == 2


def test_make_refused_delivery_works_on_parquet(faulty_parquet, tmp_path):
    src = faulty_parquet.deliveries[0]
    dest = make_refused_delivery(src, tmp_path / src.name, "unparseable_file")
    assert_manifest_consistent(dest)
    with pytest.raises(Exception):
        pq.read_table(dest / "patients.parquet")
    dest = make_refused_delivery(src, tmp_path / "m" / src.name, "misspelled_column")
    assert "follow_up_end_date" in pq.read_schema(dest / "follow_up.parquet").names
    assert_manifest_consistent(dest)


def test_make_refused_delivery_rejects_unknown_kinds_and_existing_folders(clean, tmp_path):
    src = clean.deliveries[0]
    with pytest.raises(ValueError):
        make_refused_delivery(src, tmp_path / src.name, "coffee_stain")
    with pytest.raises(ValueError):
        make_refused_delivery(src, tmp_path / "XX01_2026-06-30", "checksum")
    make_refused_delivery(src, tmp_path / src.name, "checksum")
    with pytest.raises(FileExistsError):
        make_refused_delivery(src, tmp_path / src.name, "row_count")
