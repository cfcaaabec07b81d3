-- cohort.attrition
-- Purpose: the cohort attrition (SAP 1): patients kept and excluded at each step, in the SAP order.
-- Grain:   one row per SAP attrition step (1 to 5), all sites pooled.
-- Rules:   n_remaining = patients still in after the step; n_excluded = patients who fail it
--          (first failed step only), so n_remaining(step) = n_remaining(step - 1) - n_excluded(step).
--          Step 1 counts as excluded the patient rows of the sites' current deliveries that broke
--          the extract contract (audit.quarantine): they never reach staging, and a regulator
--          reading the attrition should see them (details in the data-quality annex, SAP A7).
CREATE OR REPLACE TABLE cohort.attrition AS
WITH attrition_step(step, description) AS (
    VALUES
        (1, 'Patients in the accepted deliveries (valid patient row)'),
        (2, 'With at least one valid alemtuzumab infusion'),
        (3, 'MS course RRMS'),
        (4, 'Age at index >= 18 years (year(index) - birth_year)'),
        (5, 'End of follow-up on or after the index date')
),
quarantined_patient AS (
    SELECT count(*) AS n
    FROM audit.quarantine AS q
    JOIN audit.deliveries AS d USING (delivery_id)
    WHERE d.status = 'accepted' AND q.table_name = 'patients'
)
SELECT
    CAST(s.step AS INTEGER) AS step,
    s.description,
    count(e.patient_id) FILTER (WHERE e.excluded_at_step IS NULL OR e.excluded_at_step > s.step) AS n_remaining,
    CASE WHEN s.step = 1 THEN any_value(qp.n)
         ELSE count(e.patient_id) FILTER (WHERE e.excluded_at_step = s.step) END AS n_excluded
FROM attrition_step AS s
CROSS JOIN quarantined_patient AS qp
LEFT JOIN cohort.eligibility AS e ON true
GROUP BY s.step, s.description
ORDER BY s.step;

COMMENT ON TABLE cohort.attrition IS 'Cohort attrition in the SAP order: patients remaining after, and excluded at, each step. Grain: attrition step, all sites pooled. SAP 1.';
COMMENT ON COLUMN cohort.attrition.step IS 'SAP attrition step, 1 to 5, in the order they are applied.';
COMMENT ON COLUMN cohort.attrition.description IS 'The step''s criterion, in words.';
COMMENT ON COLUMN cohort.attrition.n_remaining IS 'Patients remaining after the step.';
COMMENT ON COLUMN cohort.attrition.n_excluded IS 'Patients excluded at this step (the first step they fail); at step 1 the patient rows quarantined by the ingest.';
