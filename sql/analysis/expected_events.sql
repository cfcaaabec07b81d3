-- analysis.expected_events
-- Purpose: observed and expected events of the first-event outcomes for the monitoring across data
--          cuts (SAP 7, A13 and A14): the person-time at risk of analysis.outcomes times the reference
--          rate of the patient's outcome x sex x age group cell (indirect standardisation).
-- Grain:   one row per cohort patient and outcome (as analysis.outcomes).
-- Rules:   reference rate from codelists.reference_rates (per 1,000 person-years); sex U takes the
--          mean of the F and M rates (SAP 7); expected = person_years * rate / 1000. A patient whose
--          cell has no rate keeps a NULL rate: vigil.analysis.monitoring refuses the run then, so that
--          an expected count is never summed over a missing cell.
CREATE OR REPLACE TABLE analysis.expected_events AS
WITH rate AS (
    SELECT outcome, sex, age_group, rate_per_1000py FROM codelists.reference_rates
    UNION ALL
    SELECT outcome, 'U' AS sex, age_group, avg(rate_per_1000py) AS rate_per_1000py
    FROM codelists.reference_rates
    WHERE sex IN ('F', 'M')
    GROUP BY outcome, age_group
    HAVING count(*) = 2
)
SELECT
    o.patient_id,
    o.outcome,
    CAST(o.status = 1 AS INTEGER) AS observed,
    o.person_years,
    r.rate_per_1000py,
    o.person_years * r.rate_per_1000py / 1000 AS expected,
    o.site,
    o.sex,
    o.age_group,
    o.charlson,
    o.prior_dmt,
    o.prior_high_efficacy,
    o.edss
FROM analysis.outcomes AS o
LEFT JOIN rate AS r ON r.outcome = o.outcome AND r.sex = o.sex AND r.age_group = o.age_group
ORDER BY o.outcome, o.patient_id;

COMMENT ON TABLE analysis.expected_events IS 'Observed and expected first events per patient for the monitoring across data cuts: person-time at risk times the reference rate of the outcome x sex x age group cell (indirect standardisation). Grain: cohort patient and outcome. SAP 7 (A13, A14).';
COMMENT ON COLUMN analysis.expected_events.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.expected_events.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN analysis.expected_events.observed IS '1 if the patient had the outcome in follow-up (analysis.outcomes.status = 1), else 0.';
COMMENT ON COLUMN analysis.expected_events.person_years IS 'Person-years at risk until the first event, death or exit (analysis.outcomes.person_years).';
COMMENT ON COLUMN analysis.expected_events.rate_per_1000py IS 'Reference rate of the patient''s outcome, sex and age group cell per 1,000 person-years (codelists.reference_rates; sex U: mean of F and M).';
COMMENT ON COLUMN analysis.expected_events.expected IS 'Expected events = person_years * rate_per_1000py / 1000.';
COMMENT ON COLUMN analysis.expected_events.site IS 'Stratum site: the site_id (reference: first in alphabetical order).';
COMMENT ON COLUMN analysis.expected_events.sex IS 'Stratum sex: F (reference), M, U.';
COMMENT ON COLUMN analysis.expected_events.age_group IS 'Stratum age_group: 18-29 (reference), 30-39, 40-49, >=50.';
COMMENT ON COLUMN analysis.expected_events.charlson IS 'Stratum charlson: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.expected_events.prior_dmt IS 'Stratum prior_dmt: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.expected_events.prior_high_efficacy IS 'Stratum prior_high_efficacy: N (reference), Y.';
COMMENT ON COLUMN analysis.expected_events.edss IS 'Stratum edss: 0-2.5 (reference), 3.0-5.5, >=6.0, unknown.';
