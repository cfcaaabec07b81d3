-- cohort.baseline_edss
-- Purpose: the baseline EDSS of each cohort patient (SAP 3, edss).
-- Grain:   one row per cohort patient with an assessment in the baseline window.
-- Rules:   the latest assessment in [index_date - 365, index_date] (both ends included; an
--          assessment on the index day is "before"); if there is none, the earliest in
--          (index_date, index_date + 30]. Several assessments on the chosen date: the highest
--          score (the worse disability) is taken. Patients without one are edss 'unknown'.
CREATE OR REPLACE TABLE cohort.baseline_edss AS
WITH cohort_patient AS (
    SELECT patient_id, index_date
    FROM cohort.eligibility
    WHERE excluded_at_step IS NULL
),
assessment_in_window AS (
    SELECT
        a.patient_id,
        a.assessment_date,
        a.edss,
        CAST(a.assessment_date - p.index_date AS INTEGER) AS days_from_index,
        CASE
            WHEN a.assessment_date BETWEEN p.index_date - 365 AND p.index_date THEN 'before'
            WHEN a.assessment_date > p.index_date AND a.assessment_date <= p.index_date + 30 THEN 'after'
        END AS edss_window
    FROM staging.edss_assessments AS a
    JOIN cohort_patient AS p USING (patient_id)
),
ranked AS (
    SELECT
        *,
        count(*) OVER (PARTITION BY patient_id, assessment_date) AS n_assessments_on_date,
        row_number() OVER (
            PARTITION BY patient_id
            ORDER BY
                edss_window = 'after',  -- the window before index first
                CASE WHEN edss_window = 'before' THEN -days_from_index ELSE days_from_index END,  -- latest before, earliest after
                edss DESC               -- same date: the highest score
        ) AS preference
    FROM assessment_in_window
    WHERE edss_window IS NOT NULL
)
SELECT
    patient_id,
    assessment_date AS edss_date,
    edss AS edss_score,
    days_from_index,
    edss_window,
    n_assessments_on_date
FROM ranked
WHERE preference = 1
ORDER BY patient_id;

COMMENT ON TABLE cohort.baseline_edss IS 'Baseline EDSS: the latest assessment in [index - 365, index], else the earliest in (index, index + 30]; highest score if several on that date. Grain: cohort patient with an assessment in the window. SAP 3.';
COMMENT ON COLUMN cohort.baseline_edss.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN cohort.baseline_edss.edss_date IS 'Date of the baseline assessment.';
COMMENT ON COLUMN cohort.baseline_edss.edss_score IS 'Baseline EDSS score.';
COMMENT ON COLUMN cohort.baseline_edss.days_from_index IS 'edss_date - index_date in days (-365 to 30).';
COMMENT ON COLUMN cohort.baseline_edss.edss_window IS 'before = in [index - 365, index]; after = in (index, index + 30], used only when there is none before.';
COMMENT ON COLUMN cohort.baseline_edss.n_assessments_on_date IS 'Number of assessments of the patient on edss_date (more than 1: the highest score was taken).';
