-- analysis.risk_windows
-- Purpose: person-time and serious infection episodes split by days since the start of the most
--          recent alemtuzumab course (SAP 4, A2): windows 0-30, 31-90, 91-365, >365.
-- Grain:   one row per cohort patient, derived course and risk window with at least one day of
--          follow-up (a patient has at most 4 rows per course started from index to exit).
-- Day boundaries (whole days):
--   d = date - course_start_date of the most recent course started on or before that date
--   (day 0 = the course's first infusion day; the most recent course is the derived course,
--   cohort.courses, never the site's course_number).
--   0-30: 0 <= d <= 30;  31-90: 31 <= d <= 90;  91-365: 91 <= d <= 365;  >365: d >= 366.
--   Every day of follow-up, index_date to exit_date inclusive, falls in exactly one row:
--   a course's follow-up runs from its start to the day before the next course starts, or to
--   exit_date; its window rows cut that period at the boundaries above. So per patient
--   sum(days) = (exit_date - index_date) + 1 = t of analysis.all_serious, and every episode of
--   analysis.serious_episodes (index <= onset <= exit) is counted in exactly one row, the
--   one whose [window_start_date, window_end_date] holds its onset_date.
CREATE OR REPLACE TABLE analysis.risk_windows AS
WITH risk_window(risk_window, window_order, first_day, last_day) AS (
    VALUES ('0-30', 1, 0, 30), ('31-90', 2, 31, 90), ('91-365', 3, 91, 365), ('>365', 4, 366, NULL)
),
course_follow_up AS (
    -- courses started after exit_date contribute nothing
    SELECT
        c.patient_id,
        c.course_number,
        c.course_start_date,
        least(c.next_course_start_date - 1, p.exit_date) AS course_follow_up_end  -- least() skips a NULL
    FROM cohort.courses AS c
    JOIN cohort.patients AS p USING (patient_id)
    WHERE c.course_start_date <= p.exit_date
),
window_period AS (
    SELECT
        c.patient_id,
        c.course_number,
        c.course_start_date,
        w.risk_window,
        w.window_order,
        c.course_start_date + w.first_day AS window_start_date,
        least(c.course_start_date + w.last_day, c.course_follow_up_end) AS window_end_date
    FROM course_follow_up AS c
    CROSS JOIN risk_window AS w
),
person_time AS (
    SELECT *, CAST(window_end_date - window_start_date + 1 AS INTEGER) AS days
    FROM window_period
    WHERE window_end_date >= window_start_date
),
episodes_in_window AS (
    SELECT pt.patient_id, pt.course_number, pt.window_order, count(*) AS n_events
    FROM person_time AS pt
    JOIN analysis.serious_episodes AS e
        ON e.patient_id = pt.patient_id
       AND e.onset_date BETWEEN pt.window_start_date AND pt.window_end_date
    GROUP BY pt.patient_id, pt.course_number, pt.window_order
)
SELECT
    pt.patient_id,
    pt.course_number,
    pt.course_start_date,
    pt.risk_window,
    CAST(pt.window_order AS INTEGER) AS window_order,
    pt.window_start_date,
    pt.window_end_date,
    pt.days,
    pt.days / 365.25 AS person_years,
    CAST(coalesce(ew.n_events, 0) AS INTEGER) AS n_events,
    p.site,
    p.sex,
    p.age_group,
    p.charlson,
    p.prior_dmt,
    p.prior_high_efficacy,
    p.edss
FROM person_time AS pt
JOIN cohort.patients AS p USING (patient_id)
LEFT JOIN episodes_in_window AS ew
    ON ew.patient_id = pt.patient_id AND ew.course_number = pt.course_number AND ew.window_order = pt.window_order
ORDER BY pt.patient_id, pt.course_number, pt.window_order;

COMMENT ON TABLE analysis.risk_windows IS 'Follow-up split by days since the start of the most recent derived course, windows 0-30, 31-90, 91-365, >365 (day 0 = course start), with the serious infection episodes of each piece; per patient the days add up to the follow-up t and each episode is in exactly one row. Grain: cohort patient, course and risk window with follow-up. SAP 4 (A2).';
COMMENT ON COLUMN analysis.risk_windows.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.risk_windows.course_number IS 'Derived course that is the most recent during this piece of follow-up.';
COMMENT ON COLUMN analysis.risk_windows.course_start_date IS 'Start date of that course (day 0).';
COMMENT ON COLUMN analysis.risk_windows.risk_window IS 'Days since course start: 0-30, 31-90, 91-365 or >365 (366 and more).';
COMMENT ON COLUMN analysis.risk_windows.window_order IS 'Order of the risk window, 1 (0-30) to 4 (>365).';
COMMENT ON COLUMN analysis.risk_windows.window_start_date IS 'First day of follow-up in this course and window.';
COMMENT ON COLUMN analysis.risk_windows.window_end_date IS 'Last day of follow-up in this course and window (inclusive).';
COMMENT ON COLUMN analysis.risk_windows.days IS 'Person-time in days = window_end_date - window_start_date + 1.';
COMMENT ON COLUMN analysis.risk_windows.person_years IS 'Person-years = days / 365.25.';
COMMENT ON COLUMN analysis.risk_windows.n_events IS 'Serious infection episodes with onset_date in [window_start_date, window_end_date].';
COMMENT ON COLUMN analysis.risk_windows.site IS 'Stratum site: the site_id (reference: first in alphabetical order).';
COMMENT ON COLUMN analysis.risk_windows.sex IS 'Stratum sex: F (reference), M, U.';
COMMENT ON COLUMN analysis.risk_windows.age_group IS 'Stratum age_group: 18-29 (reference), 30-39, 40-49, >=50.';
COMMENT ON COLUMN analysis.risk_windows.charlson IS 'Stratum charlson: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.risk_windows.prior_dmt IS 'Stratum prior_dmt: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.risk_windows.prior_high_efficacy IS 'Stratum prior_high_efficacy: N (reference), Y.';
COMMENT ON COLUMN analysis.risk_windows.edss IS 'Stratum edss: 0-2.5 (reference), 3.0-5.5, >=6.0, unknown.';
