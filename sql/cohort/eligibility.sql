-- cohort.eligibility
-- Purpose: every patient of the accepted deliveries with index date, age at index, exit date and
--          the attrition step at which the patient leaves the cohort (SAP 1, Cohort).
-- Grain:   one row per patient in staging.patients.
-- Rules:   index_date = first valid alemtuzumab infusion.
--          age_at_index = year(index_date) - birth_year.
--          exit_date = min(followup_end_date, death_date, data_cut); a missing death_date = alive.
--          Steps, in the SAP's order (a patient is counted at the first step they fail):
--            1 valid patient row (staging holds only valid rows: nobody fails it here),
--            2 at least one valid infusion, 3 ms_course = RRMS, 4 age at index >= 18,
--            5 end of follow-up (exit_date) on or after index_date.
CREATE OR REPLACE TABLE cohort.eligibility AS
WITH index_date AS (
    SELECT patient_id, min(infusion_date) AS index_date
    FROM staging.alemtuzumab_infusions
    GROUP BY patient_id
),
patient AS (
    SELECT
        p.patient_id,
        p.site_id,
        p.delivery_id,
        p.data_cut,
        p.sex,
        p.birth_year,
        p.ms_course,
        i.index_date,
        CAST(year(i.index_date) - p.birth_year AS INTEGER) AS age_at_index,
        f.followup_end_date,
        f.end_reason,
        f.death_date,
        least(f.followup_end_date, f.death_date, p.data_cut) AS exit_date  -- least() skips a NULL death_date
    FROM staging.patients AS p
    LEFT JOIN index_date AS i USING (patient_id)
    LEFT JOIN staging.follow_up AS f USING (patient_id)
),
step AS (
    SELECT
        *,
        CASE
            WHEN index_date IS NULL THEN 2
            WHEN ms_course IS DISTINCT FROM 'RRMS' THEN 3
            WHEN age_at_index < 18 THEN 4
            WHEN exit_date IS NULL OR exit_date < index_date THEN 5
        END AS excluded_at_step
    FROM patient
)
SELECT
    *,
    CASE excluded_at_step
        WHEN 2 THEN 'no valid alemtuzumab infusion'
        WHEN 3 THEN 'ms_course is not RRMS'
        WHEN 4 THEN 'age at index under 18'
        WHEN 5 THEN 'end of follow-up before the index date'
    END AS exclusion_reason
FROM step
ORDER BY patient_id;

COMMENT ON TABLE cohort.eligibility IS 'Every patient of the accepted deliveries with index date, exit date and the SAP attrition step at which the patient is excluded (NULL = in the cohort). Grain: patient in staging.patients. SAP 1.';
COMMENT ON COLUMN cohort.eligibility.patient_id IS 'Patient pseudonym.';
COMMENT ON COLUMN cohort.eligibility.site_id IS 'Site that delivered the patient.';
COMMENT ON COLUMN cohort.eligibility.delivery_id IS 'The delivery the patient row came from (audit.deliveries.delivery_id).';
COMMENT ON COLUMN cohort.eligibility.data_cut IS 'Data cut of the patient''s delivery.';
COMMENT ON COLUMN cohort.eligibility.sex IS 'Sex: F, M or U (unknown).';
COMMENT ON COLUMN cohort.eligibility.birth_year IS 'Year of birth.';
COMMENT ON COLUMN cohort.eligibility.ms_course IS 'MS course at first infusion (RRMS, SPMS, PPMS, CIS).';
COMMENT ON COLUMN cohort.eligibility.index_date IS 'Index date: date of the first valid alemtuzumab infusion; NULL if none.';
COMMENT ON COLUMN cohort.eligibility.age_at_index IS 'Age at index = year(index_date) - birth_year, whole years.';
COMMENT ON COLUMN cohort.eligibility.followup_end_date IS 'End of follow-up as delivered (follow_up.followup_end_date).';
COMMENT ON COLUMN cohort.eligibility.end_reason IS 'Reason for the end of follow-up as delivered (follow_up.end_reason).';
COMMENT ON COLUMN cohort.eligibility.death_date IS 'Date of death as delivered; NULL = not known to have died.';
COMMENT ON COLUMN cohort.eligibility.exit_date IS 'Exit date = min(followup_end_date, death_date, data_cut).';
COMMENT ON COLUMN cohort.eligibility.excluded_at_step IS 'The first SAP attrition step (2 to 5) the patient fails; NULL = in the study cohort.';
COMMENT ON COLUMN cohort.eligibility.exclusion_reason IS 'Why the patient is excluded, in words; NULL = in the study cohort.';
