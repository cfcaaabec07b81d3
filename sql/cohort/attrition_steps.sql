-- cohort.attrition_steps
-- Purpose: the five attrition steps of SAP 1, in order, written once for
--          cohort.attrition_by_site and cohort.attrition.
-- Grain:   one row per step.
CREATE OR REPLACE TABLE cohort.attrition_steps AS
SELECT CAST(step AS INTEGER) AS step, description
FROM (VALUES
    (1, 'Patients in the accepted deliveries (valid patient row)'),
    (2, 'With at least one valid alemtuzumab infusion'),
    (3, 'MS course RRMS'),
    (4, 'Age at index >= 18 years (year(index) - birth_year)'),
    (5, 'End of follow-up on or after the index date')
) AS s(step, description);

COMMENT ON TABLE cohort.attrition_steps IS 'The SAP section 1 attrition steps in the order they are applied. Grain: step.';
COMMENT ON COLUMN cohort.attrition_steps.step IS 'SAP attrition step, 1 to 5.';
COMMENT ON COLUMN cohort.attrition_steps.description IS 'The step''s criterion, in words.';
