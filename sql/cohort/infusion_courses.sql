-- cohort.infusion_courses
-- Purpose: number each patient's alemtuzumab courses from the infusion dates and check the
--          site's course_number against them (SAP 1, Courses).
-- Grain:   one row per valid alemtuzumab infusion (patient and infusion day), every patient in staging.
-- Rule:    infusions sorted by date; a new course starts at the first infusion and at every
--          infusion more than $course_gap_days days after the previous one (SAP 1: 30; a gap of
--          exactly 30 days stays in the same course; the A12(c) sensitivity analysis uses 60).
-- Parameter: $course_gap_days, given by vigil.cohort.build_cohort (vigil.cohort.COHORT_PARAMETERS). A site course_number that differs from the derived one is flagged
--          and reported (cohort.course_disagreements), never corrected.
CREATE OR REPLACE TABLE cohort.infusion_courses AS
WITH infusion AS (
    SELECT
        patient_id,
        site_id,
        infusion_date,
        dose_mg,
        course_number AS site_course_number,
        CAST(infusion_date - lag(infusion_date) OVER (PARTITION BY patient_id ORDER BY infusion_date) AS INTEGER)
            AS days_since_previous_infusion
    FROM staging.alemtuzumab_infusions
),
course_start AS (
    SELECT
        *,
        days_since_previous_infusion IS NULL OR days_since_previous_infusion > $course_gap_days AS starts_course
    FROM infusion
),
course AS (
    -- the derived course number = number of course starts up to and including this infusion
    SELECT
        *,
        CAST(count(*) FILTER (WHERE starts_course)
             OVER (PARTITION BY patient_id ORDER BY infusion_date ROWS UNBOUNDED PRECEDING) AS INTEGER)
            AS course_number
    FROM course_start
)
SELECT
    patient_id,
    site_id,
    infusion_date,
    dose_mg,
    days_since_previous_infusion,
    starts_course,
    course_number,
    min(infusion_date) OVER (PARTITION BY patient_id, course_number) AS course_start_date,
    site_course_number,
    site_course_number <> course_number AS course_number_disagrees
FROM course
ORDER BY patient_id, infusion_date;

COMMENT ON TABLE cohort.infusion_courses IS 'Alemtuzumab infusions with the course derived from the infusion gaps (new course at the first infusion and at every infusion more than 30 days after the previous; 60 in the course-gap-60 sensitivity analysis) and the site course_number checked against it. Grain: infusion (patient and infusion day), every patient in staging. SAP 1.';
COMMENT ON COLUMN cohort.infusion_courses.patient_id IS 'Patient pseudonym (globally unique, carries the site prefix).';
COMMENT ON COLUMN cohort.infusion_courses.site_id IS 'Site that delivered the infusion.';
COMMENT ON COLUMN cohort.infusion_courses.infusion_date IS 'Date of the infusion.';
COMMENT ON COLUMN cohort.infusion_courses.dose_mg IS 'Dose in mg as delivered.';
COMMENT ON COLUMN cohort.infusion_courses.days_since_previous_infusion IS 'Days since the previous infusion of the patient; NULL for the first infusion.';
COMMENT ON COLUMN cohort.infusion_courses.starts_course IS 'True if the infusion starts a course: the first infusion, or more than 30 days (the course gap of the run) after the previous one.';
COMMENT ON COLUMN cohort.infusion_courses.course_number IS 'Derived course number (1 = first course), from the infusion gaps.';
COMMENT ON COLUMN cohort.infusion_courses.course_start_date IS 'Date of the first infusion of the derived course.';
COMMENT ON COLUMN cohort.infusion_courses.site_course_number IS 'Course number as recorded by the site (alemtuzumab_infusions.course_number).';
COMMENT ON COLUMN cohort.infusion_courses.course_number_disagrees IS 'True if the site course_number differs from the derived course_number (reported, not corrected).';
