-- cohort.attrition
-- Purpose: the cohort attrition (SAP 1): patients kept and excluded at each step, in the SAP order.
-- Grain:   one row per SAP attrition step (1 to 5), all sites pooled.
-- Rules:   the sum over sites of cohort.attrition_by_site (where the rules are written down).
CREATE OR REPLACE TABLE cohort.attrition AS
SELECT
    s.step,
    s.description,
    CAST(coalesce(sum(a.n_remaining), 0) AS BIGINT) AS n_remaining,
    CAST(coalesce(sum(a.n_excluded), 0) AS BIGINT) AS n_excluded
FROM cohort.attrition_steps AS s
LEFT JOIN cohort.attrition_by_site AS a USING (step)
GROUP BY s.step, s.description
ORDER BY s.step;

COMMENT ON TABLE cohort.attrition IS 'Cohort attrition in the SAP order: patients remaining after, and excluded at, each step. Grain: attrition step, all sites pooled. SAP 1.';
COMMENT ON COLUMN cohort.attrition.step IS 'SAP attrition step, 1 to 5, in the order they are applied.';
COMMENT ON COLUMN cohort.attrition.description IS 'The step''s criterion, in words.';
COMMENT ON COLUMN cohort.attrition.n_remaining IS 'Patients remaining after the step.';
COMMENT ON COLUMN cohort.attrition.n_excluded IS 'Patients excluded at this step (the first step they fail); at step 1 the patient rows quarantined by the ingest.';
