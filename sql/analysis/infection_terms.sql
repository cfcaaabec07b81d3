-- analysis.infection_terms
-- Purpose: the serious and the opportunistic infections in follow-up, by MedDRA preferred term, for
--          the listing of the unexpected at each look (SAP 7, A15).
-- Grain:   one row per infection event and term set: an opportunistic infection that is also
--          serious is in both sets.
-- Rules:   the infections of analysis.infections_in_follow_up (as the outcomes). The course start
--          is the latest derived course start on or before the onset (cohort.courses);
--          within_30_days = onset 0-30 days after it.
CREATE OR REPLACE TABLE analysis.infection_terms AS
WITH with_course AS (
    SELECT
        e.*,
        (SELECT max(c.course_start_date) FROM cohort.courses AS c
         WHERE c.patient_id = e.patient_id AND c.course_start_date <= e.onset_date) AS course_start_date
    FROM analysis.infections_in_follow_up AS e
)
SELECT patient_id, event_id, term_set, meddra_pt, onset_date, course_start_date,
       onset_date - course_start_date AS days_since_course_start,
       coalesce(onset_date - course_start_date <= 30, false) AS within_30_days
FROM with_course, (VALUES ('serious'), ('opportunistic')) AS t(term_set)
WHERE (term_set = 'serious' AND serious) OR (term_set = 'opportunistic' AND opportunistic)
ORDER BY term_set, meddra_pt, patient_id, event_id;

COMMENT ON TABLE analysis.infection_terms IS 'Serious and opportunistic infections in follow-up with their MedDRA preferred term and the days since the start of the course before them. Grain: infection event and term set. SAP 7 (A15).';
COMMENT ON COLUMN analysis.infection_terms.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.infection_terms.event_id IS 'event_id of the infection as delivered.';
COMMENT ON COLUMN analysis.infection_terms.term_set IS 'serious (serious flag Y) or opportunistic (term on codelists.opportunistic_terms, any seriousness).';
COMMENT ON COLUMN analysis.infection_terms.meddra_pt IS 'MedDRA preferred term as delivered.';
COMMENT ON COLUMN analysis.infection_terms.onset_date IS 'Onset date, between index_date and exit_date.';
COMMENT ON COLUMN analysis.infection_terms.course_start_date IS 'Start of the latest derived course on or before the onset (cohort.courses).';
COMMENT ON COLUMN analysis.infection_terms.days_since_course_start IS 'onset_date - course_start_date, in days.';
COMMENT ON COLUMN analysis.infection_terms.within_30_days IS 'True when the onset is 0-30 days after the start of a course.';
