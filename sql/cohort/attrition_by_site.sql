-- cohort.attrition_by_site
-- Purpose: the cohort attrition (SAP 1) per site: every analysis is also run per site.
-- Grain:   one row per site and SAP attrition step (1 to 5).
-- Rules:   n_remaining = patients still in after the step; n_excluded = patients who fail it
--          (first failed step only), so n_remaining(step) = n_remaining(step - 1) - n_excluded(step).
--          Step 1 counts as excluded the patient rows of the site's current delivery that broke
--          the extract contract (audit.quarantine): they never reach staging, and a regulator
--          reading the attrition should see them (details in the data-quality annex, SAP A7).
CREATE OR REPLACE TABLE cohort.attrition_by_site AS
WITH quarantined_patient_rows AS (
    SELECT q.site_id, count(*) AS n
    FROM audit.quarantine AS q
    JOIN audit.deliveries AS d USING (delivery_id)
    WHERE d.status = 'accepted' AND q.table_name = 'patients'
    GROUP BY q.site_id
),
site AS (
    SELECT site_id FROM cohort.eligibility
    UNION
    SELECT site_id FROM quarantined_patient_rows
)
SELECT
    site.site_id,
    s.step,
    s.description,
    count(e.patient_id) FILTER (WHERE e.excluded_at_step IS NULL OR e.excluded_at_step > s.step) AS n_remaining,
    CASE WHEN s.step = 1 THEN coalesce(any_value(q.n), 0)
         ELSE count(e.patient_id) FILTER (WHERE e.excluded_at_step = s.step) END AS n_excluded
FROM site
CROSS JOIN cohort.attrition_steps AS s
LEFT JOIN cohort.eligibility AS e ON e.site_id = site.site_id
LEFT JOIN quarantined_patient_rows AS q ON q.site_id = site.site_id
GROUP BY site.site_id, s.step, s.description
ORDER BY site.site_id, s.step;

COMMENT ON TABLE cohort.attrition_by_site IS 'Cohort attrition in the SAP order, per site. Grain: site and attrition step. SAP 1.';
COMMENT ON COLUMN cohort.attrition_by_site.site_id IS 'Site.';
COMMENT ON COLUMN cohort.attrition_by_site.step IS 'SAP attrition step, 1 to 5, in the order they are applied.';
COMMENT ON COLUMN cohort.attrition_by_site.description IS 'The step''s criterion, in words.';
COMMENT ON COLUMN cohort.attrition_by_site.n_remaining IS 'Patients of the site remaining after the step.';
COMMENT ON COLUMN cohort.attrition_by_site.n_excluded IS 'Patients of the site excluded at this step (the first step they fail); at step 1 the patient rows quarantined by the ingest.';
