-- cohort.courses
-- Purpose: the derived alemtuzumab courses of each patient, with the start of the next course,
--          which bounds the course's follow-up in the risk-window split (SAP 1 Courses, SAP 4 A2).
-- Grain:   one row per patient and derived course, every patient in staging with an infusion.
CREATE OR REPLACE TABLE cohort.courses AS
WITH course AS (
    SELECT
        patient_id,
        any_value(site_id) AS site_id,
        course_number,
        min(infusion_date) AS course_start_date,
        max(infusion_date) AS course_end_date,
        count(*) AS n_infusions,
        sum(dose_mg) AS total_dose_mg,
        string_agg(DISTINCT CAST(site_course_number AS VARCHAR), ',' ORDER BY CAST(site_course_number AS VARCHAR))
            AS site_course_numbers,
        count(*) FILTER (WHERE course_number_disagrees) AS n_infusions_disagreeing
    FROM cohort.infusion_courses
    GROUP BY patient_id, course_number
)
SELECT
    patient_id,
    site_id,
    course_number,
    course_start_date,
    course_end_date,
    lead(course_start_date) OVER (PARTITION BY patient_id ORDER BY course_number) AS next_course_start_date,
    n_infusions,
    total_dose_mg,
    site_course_numbers,
    n_infusions_disagreeing,
    n_infusions_disagreeing > 0 AS course_number_disagrees
FROM course
ORDER BY patient_id, course_number;

COMMENT ON TABLE cohort.courses IS 'Derived alemtuzumab courses (infusions more than 30 days apart start a new course). Grain: patient and derived course, every patient in staging with an infusion. SAP 1.';
COMMENT ON COLUMN cohort.courses.patient_id IS 'Patient pseudonym.';
COMMENT ON COLUMN cohort.courses.site_id IS 'Site of the patient.';
COMMENT ON COLUMN cohort.courses.course_number IS 'Derived course number (1 = first course).';
COMMENT ON COLUMN cohort.courses.course_start_date IS 'Date of the first infusion of the course (day 0 of the risk windows).';
COMMENT ON COLUMN cohort.courses.course_end_date IS 'Date of the last infusion of the course.';
COMMENT ON COLUMN cohort.courses.next_course_start_date IS 'Start date of the next derived course; NULL for the last course.';
COMMENT ON COLUMN cohort.courses.n_infusions IS 'Number of infusion days in the course.';
COMMENT ON COLUMN cohort.courses.total_dose_mg IS 'Sum of the infusion doses of the course, mg.';
COMMENT ON COLUMN cohort.courses.site_course_numbers IS 'The distinct course_number values the site recorded for the infusions of this course, comma-separated.';
COMMENT ON COLUMN cohort.courses.n_infusions_disagreeing IS 'Number of infusions of the course whose site course_number differs from the derived course number.';
COMMENT ON COLUMN cohort.courses.course_number_disagrees IS 'True if any infusion of the course has a site course_number that differs from the derived one.';
