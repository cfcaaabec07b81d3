-- cohort.attrition_by_site
-- Purpose: the cohort attrition (SAP 1) per site: every analysis is also run per site.
-- Grain:   one row per site and SAP attrition step (1 to 5); sites with at least one patient.
-- Rules:   as cohort.attrition, within each site.
CREATE OR REPLACE TABLE cohort.attrition_by_site AS
WITH attrition_step(step, description) AS (
    VALUES
        (1, 'Patients in the accepted deliveries (valid patient row)'),
        (2, 'With at least one valid alemtuzumab infusion'),
        (3, 'MS course RRMS'),
        (4, 'Age at index >= 18 years (year(index) - birth_year)'),
        (5, 'End of follow-up on or after the index date')
)
SELECT
    e.site_id,
    CAST(s.step AS INTEGER) AS step,
    s.description,
    count(e.patient_id) FILTER (WHERE e.excluded_at_step IS NULL OR e.excluded_at_step > s.step) AS n_remaining,
    count(e.patient_id) FILTER (WHERE e.excluded_at_step = s.step) AS n_excluded
FROM attrition_step AS s
CROSS JOIN cohort.eligibility AS e
GROUP BY e.site_id, s.step, s.description
ORDER BY e.site_id, s.step;

COMMENT ON TABLE cohort.attrition_by_site IS 'Cohort attrition in the SAP order, per site. Grain: site and attrition step. SAP 1.';
COMMENT ON COLUMN cohort.attrition_by_site.site_id IS 'Site.';
COMMENT ON COLUMN cohort.attrition_by_site.step IS 'SAP attrition step, 1 to 5, in the order they are applied.';
COMMENT ON COLUMN cohort.attrition_by_site.description IS 'The step''s criterion, in words.';
COMMENT ON COLUMN cohort.attrition_by_site.n_remaining IS 'Patients of the site remaining after the step.';
COMMENT ON COLUMN cohort.attrition_by_site.n_excluded IS 'Patients of the site excluded at this step (the first step they fail).';
