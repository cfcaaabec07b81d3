"""The expected truth: the SAP quantities (sections 1-3) computed the way the SAP defines them from the
valid typed rows of a delivery."""

from __future__ import annotations

from datetime import date

import polars as pl

from vigil.cohort.strata import strata
from vigil.synth.parameters import (
    CHARLSON, CHARLSON_HIERARCHY, CHARLSON_WEIGHT, _CODE_CATEGORY, HIGH_EFFICACY_DMT,
    _OPPORTUNISTIC_LOWER, TRUTH_COLUMNS,
)


# ---------------------------------------------------------------------------------------------
# The SAP quantities (sections 1-3), computed from valid typed rows.
# ---------------------------------------------------------------------------------------------

def _level(variable: str, x: pl.Expr) -> pl.Expr:
    """The level of `x` as codelists/strata.csv defines it (the cohort SQL bins by the same rows).
    rule range: below the first lower bound no level, then the first range whose upper bound x is
    under, the top range (no upper bound) otherwise; rule missing: a NULL x; rule equals: x = value."""
    stratum = strata()[variable]
    chain = pl
    if stratum.missing_level is not None:
        chain = chain.when(x.is_null()).then(pl.lit(stratum.missing_level))
    if stratum.ranges:
        ranges = stratum.ranges
        chain = chain.when(x < ranges[0].lower).then(None)
        for r in ranges:
            if r.upper is None:
                return chain.otherwise(pl.lit(r.level))
            chain = chain.when(x < r.upper).then(pl.lit(r.level))
        return chain
    for lv in stratum.levels:
        chain = chain.when(x == lv.value).then(pl.lit(lv.level))
    return chain


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
        age_group=_level("age_group", age),
        charlson=pl.when(indexed).then(pl.col("charlson").fill_null(0).cast(pl.Int32)),
        charlson_level=pl.when(indexed).then(_level("charlson", pl.col("charlson").fill_null(0))),
        prior_dmt=pl.when(indexed).then(pl.col("prior_dmt").fill_null(0).cast(pl.Int32)),
        prior_dmt_level=pl.when(indexed).then(_level("prior_dmt", pl.col("prior_dmt").fill_null(0))),
        prior_high_efficacy=pl.when(indexed).then(_level("prior_high_efficacy", (  # dmt_classes.high_efficacy Y/N
            pl.when(pl.col("high_efficacy").fill_null(False)).then(pl.lit("Y")).otherwise(pl.lit("N"))))),
        edss=edss_value,
        edss_level=pl.when(indexed).then(_level("edss", edss_value)),
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
