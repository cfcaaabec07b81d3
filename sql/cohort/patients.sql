-- cohort.patients
-- Purpose: the study cohort with index date, exit date, death and every baseline stratum
--          (SAP 1 Cohort and SAP 3 Baseline strata, all assessed at the index date).
-- Grain:   one row per cohort patient (passed all five attrition steps).
-- Rules:   died = the death falls in follow-up, i.e. death_date = exit_date (a death_date after
--          followup_end_date is outside follow-up: the patient is censored at exit).
--          follow_up_days = (exit_date - index_date) + 1: the index day and the exit day both count.
--          Strata: each stratum column is the level that codelists.strata (codelists/strata.csv, the one
--          definition of the levels, their order and cut-points) gives the baseline quantity named in
--          its column source:
--            charlson            charlson_score: Charlson index (cohort.charlson_conditions)
--            prior_dmt           prior_dmt_count: distinct dmt_code started before index
--            prior_high_efficacy prior_high_efficacy_class: Y if a DMT started before index has
--                                codelists.dmt_classes.high_efficacy = Y, else N
--            edss                edss_score: baseline EDSS (cohort.baseline_edss), NULL = the missing level
--            age_group           age_at_index
--            sex                 sex as delivered
--            site                the site_id (reference: first in alphabetical order)
--          rule range: lower <= score < upper (no upper: no bound), rule equals: value = the source,
--          rule missing: the source is NULL. The loader checks that the ranges of a variable are
--          contiguous and do not overlap, so each join below finds at most one level.
--          Censoring at a switch (SAP A12(a), parameter $censor_at_switch, false in the primary
--          analysis): follow-up also ends on the start date of the first other DMT started after the
--          index date (staging.dmt_history.start_date > index_date; that day is still in follow-up),
--          exit_reason dmt_switch; a death after it is outside follow-up.
-- Parameter: $censor_at_switch, given by vigil.cohort.build_cohort (vigil.cohort.COHORT_PARAMETERS).
CREATE OR REPLACE TABLE cohort.patients AS
WITH eligible AS (
    SELECT * FROM cohort.eligibility WHERE excluded_at_step IS NULL
),
dmt_switch AS (
    SELECT d.patient_id, min(d.start_date) AS switch_date
    FROM staging.dmt_history AS d
    JOIN eligible AS e USING (patient_id)
    WHERE d.start_date > e.index_date
    GROUP BY d.patient_id
),
cohort_member AS (
    SELECT
        e.* REPLACE (CASE WHEN $censor_at_switch THEN least(e.exit_date, s.switch_date) ELSE e.exit_date END
                     AS exit_date),
        $censor_at_switch AND s.switch_date < e.exit_date AS exit_at_switch
    FROM eligible AS e
    LEFT JOIN dmt_switch AS s USING (patient_id)
),
charlson AS (
    SELECT patient_id, CAST(sum(weight_counted) AS INTEGER) AS charlson_score
    FROM cohort.charlson_conditions
    GROUP BY patient_id
),
prior_dmt AS (
    SELECT
        patient_id,
        CAST(count(*) AS INTEGER) AS prior_dmt_count,
        bool_or(high_efficacy = 'Y') AS any_high_efficacy
    FROM cohort.prior_dmts
    GROUP BY patient_id
),
courses_in_follow_up AS (
    SELECT c.patient_id, CAST(count(*) AS INTEGER) AS n_courses
    FROM cohort.courses AS c
    JOIN cohort_member AS m USING (patient_id)
    WHERE c.course_start_date <= m.exit_date
    GROUP BY c.patient_id
),
baseline AS (
    SELECT
        m.*,
        coalesce(death_date = exit_date, false) AS died,
        coalesce(ch.charlson_score, 0) AS charlson_score,
        coalesce(pd.prior_dmt_count, 0) AS prior_dmt_count,
        CASE WHEN coalesce(pd.any_high_efficacy, false) THEN 'Y' ELSE 'N' END AS prior_high_efficacy_class,
        e.edss_score,
        e.edss_date,
        coalesce(cf.n_courses, 0) AS n_courses
    FROM cohort_member AS m
    LEFT JOIN charlson AS ch USING (patient_id)
    LEFT JOIN prior_dmt AS pd USING (patient_id)
    LEFT JOIN cohort.baseline_edss AS e USING (patient_id)
    LEFT JOIN courses_in_follow_up AS cf USING (patient_id)
),
stratum AS (
    SELECT variable, rule, level, coalesce(lower, '-infinity') AS lower, coalesce(upper, 'infinity') AS upper, value
    FROM codelists.strata
)
SELECT
    patient_id,
    site_id,
    delivery_id,
    data_cut,
    birth_year,
    ms_course,
    index_date,
    age_at_index,
    followup_end_date,
    end_reason,
    death_date,
    exit_date,
    CASE
        WHEN died THEN 'death'
        WHEN exit_at_switch THEN 'dmt_switch'
        WHEN exit_date = followup_end_date THEN 'followup_end'
        ELSE 'data_cut'
    END AS exit_reason,
    died,
    CAST(exit_date - index_date + 1 AS INTEGER) AS follow_up_days,
    (exit_date - index_date + 1) / 365.25 AS person_years,
    n_courses,
    charlson_score,
    charlson_level.level AS charlson,
    prior_dmt_count,
    prior_dmt_level.level AS prior_dmt,
    prior_high_efficacy_level.level AS prior_high_efficacy,
    edss_score,
    edss_date,
    CASE
        WHEN edss_score IS NULL
            THEN (SELECT level FROM stratum WHERE variable = 'edss' AND rule = 'missing')
        ELSE edss_level.level
    END AS edss,
    age_level.level AS age_group,
    sex_level.level AS sex,
    site_id AS site
FROM baseline AS b
LEFT JOIN stratum AS charlson_level
    ON charlson_level.variable = 'charlson' AND charlson_level.rule = 'range'
   AND b.charlson_score >= charlson_level.lower AND b.charlson_score < charlson_level.upper
LEFT JOIN stratum AS prior_dmt_level
    ON prior_dmt_level.variable = 'prior_dmt' AND prior_dmt_level.rule = 'range'
   AND b.prior_dmt_count >= prior_dmt_level.lower AND b.prior_dmt_count < prior_dmt_level.upper
LEFT JOIN stratum AS prior_high_efficacy_level
    ON prior_high_efficacy_level.variable = 'prior_high_efficacy' AND prior_high_efficacy_level.rule = 'equals'
   AND b.prior_high_efficacy_class = prior_high_efficacy_level.value
LEFT JOIN stratum AS edss_level
    ON edss_level.variable = 'edss' AND edss_level.rule = 'range'
   AND b.edss_score >= edss_level.lower AND b.edss_score < edss_level.upper
LEFT JOIN stratum AS age_level
    ON age_level.variable = 'age_group' AND age_level.rule = 'range'
   AND b.age_at_index >= age_level.lower AND b.age_at_index < age_level.upper
LEFT JOIN stratum AS sex_level
    ON sex_level.variable = 'sex' AND sex_level.rule = 'equals' AND b.sex = sex_level.value
ORDER BY patient_id;

COMMENT ON TABLE cohort.patients IS 'The study cohort: patients who pass the five SAP attrition steps, with index date, exit date, death in follow-up and the baseline strata assessed at the index date. Grain: cohort patient. SAP 1 and 3.';
COMMENT ON COLUMN cohort.patients.patient_id IS 'Patient pseudonym (globally unique, carries the site prefix).';
COMMENT ON COLUMN cohort.patients.site_id IS 'Site that delivered the patient.';
COMMENT ON COLUMN cohort.patients.delivery_id IS 'The delivery the patient row came from (audit.deliveries.delivery_id).';
COMMENT ON COLUMN cohort.patients.data_cut IS 'Data cut of the patient''s delivery.';
COMMENT ON COLUMN cohort.patients.birth_year IS 'Year of birth.';
COMMENT ON COLUMN cohort.patients.ms_course IS 'MS course at first infusion (RRMS for every cohort member).';
COMMENT ON COLUMN cohort.patients.index_date IS 'Index date: first valid alemtuzumab infusion.';
COMMENT ON COLUMN cohort.patients.age_at_index IS 'Age at index = year(index_date) - birth_year.';
COMMENT ON COLUMN cohort.patients.followup_end_date IS 'End of follow-up as delivered.';
COMMENT ON COLUMN cohort.patients.end_reason IS 'Reason for the end of follow-up as delivered.';
COMMENT ON COLUMN cohort.patients.death_date IS 'Date of death as delivered; NULL = not known to have died.';
COMMENT ON COLUMN cohort.patients.exit_date IS 'Exit date = min(followup_end_date, death_date, data_cut); in the censor-at-switch sensitivity analysis also the start of the first other DMT after index.';
COMMENT ON COLUMN cohort.patients.exit_reason IS 'Which date set the exit: death, followup_end (the delivered end of follow-up), data_cut, or dmt_switch (only in the censor-at-switch sensitivity analysis).';
COMMENT ON COLUMN cohort.patients.died IS 'True if the patient died in follow-up (death_date = exit_date): the competing event of the first-event outcomes.';
COMMENT ON COLUMN cohort.patients.follow_up_days IS 'Follow-up in days = (exit_date - index_date) + 1, index and exit days included.';
COMMENT ON COLUMN cohort.patients.person_years IS 'Follow-up in person-years = follow_up_days / 365.25.';
COMMENT ON COLUMN cohort.patients.n_courses IS 'Number of derived alemtuzumab courses started from index to exit.';
COMMENT ON COLUMN cohort.patients.charlson_score IS 'Charlson comorbidity index at index (Quan 2005 ICD-10, Charlson 1987 weights, severe form supersedes mild).';
COMMENT ON COLUMN cohort.patients.charlson IS 'Stratum charlson: the level of charlson_score in codelists.strata (levels in order there, the first the reference).';
COMMENT ON COLUMN cohort.patients.prior_dmt_count IS 'Number of distinct dmt_code with start_date before index.';
COMMENT ON COLUMN cohort.patients.prior_dmt IS 'Stratum prior_dmt: the level of prior_dmt_count in codelists.strata (levels in order there, the first the reference).';
COMMENT ON COLUMN cohort.patients.prior_high_efficacy IS 'Stratum prior_high_efficacy: whether a high-efficacy class DMT started before index, as the level of codelists.strata (Y if one did, N otherwise; N is the reference).';
COMMENT ON COLUMN cohort.patients.edss_score IS 'Baseline EDSS score; NULL if none in the window.';
COMMENT ON COLUMN cohort.patients.edss_date IS 'Date of the baseline EDSS assessment; NULL if none.';
COMMENT ON COLUMN cohort.patients.edss IS 'Stratum edss: the level of edss_score in codelists.strata; its missing level when there is no assessment in the window.';
COMMENT ON COLUMN cohort.patients.age_group IS 'Stratum age_group: the level of age_at_index in codelists.strata (levels in order there, the first the reference).';
COMMENT ON COLUMN cohort.patients.sex IS 'Stratum sex: the level of the delivered sex in codelists.strata (F, M, U (unknown); F is the reference).';
COMMENT ON COLUMN cohort.patients.site IS 'Stratum site: the site_id (reference: first in alphabetical order).';
