-- cohort.course_disagreements
-- Purpose: report where the site's course_number disagrees with the course derived from the
--          infusion gaps (SAP 1, Courses: disagreements are reported, never corrected).
-- Grain:   one row per patient and derived course with at least one infusion whose site
--          course_number differs from the derived course number; every patient in staging.
CREATE OR REPLACE TABLE cohort.course_disagreements AS
SELECT
    c.patient_id,
    c.site_id,
    c.course_number,
    c.site_course_numbers,
    c.course_start_date,
    c.course_end_date,
    c.n_infusions,
    c.n_infusions_disagreeing,
    e.excluded_at_step IS NULL AS in_cohort
FROM cohort.courses AS c
JOIN cohort.eligibility AS e USING (patient_id)
WHERE c.course_number_disagrees
ORDER BY c.patient_id, c.course_number;

COMMENT ON TABLE cohort.course_disagreements IS 'Derived alemtuzumab courses where the site course_number of an infusion differs from the derived course number (reported, not corrected). Grain: patient and derived course with a disagreement. SAP 1.';
COMMENT ON COLUMN cohort.course_disagreements.patient_id IS 'Patient pseudonym.';
COMMENT ON COLUMN cohort.course_disagreements.site_id IS 'Site of the patient.';
COMMENT ON COLUMN cohort.course_disagreements.course_number IS 'Derived course number (new course after a gap of more than 30 days).';
COMMENT ON COLUMN cohort.course_disagreements.site_course_numbers IS 'The distinct course_number values the site recorded for the infusions of this course, comma-separated.';
COMMENT ON COLUMN cohort.course_disagreements.course_start_date IS 'Date of the first infusion of the derived course.';
COMMENT ON COLUMN cohort.course_disagreements.course_end_date IS 'Date of the last infusion of the derived course.';
COMMENT ON COLUMN cohort.course_disagreements.n_infusions IS 'Number of infusion days in the derived course.';
COMMENT ON COLUMN cohort.course_disagreements.n_infusions_disagreeing IS 'Number of those infusions whose site course_number differs from the derived course number.';
COMMENT ON COLUMN cohort.course_disagreements.in_cohort IS 'True if the patient is in the study cohort.';
