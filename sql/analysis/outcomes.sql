-- analysis.outcomes
-- Purpose: the first-event outcomes, ready for survival analysis (SAP 2 and SAP 4 A1, A3-A5):
--            first_serious        first serious infection (serious = Y), the primary outcome;
--            first_opportunistic  first opportunistic infection of any seriousness (meddra_pt on
--                                 codelists.opportunistic_terms, ignoring case).
-- Grain:   one row per cohort patient and outcome (two rows per patient).
-- Rules:   only events with index_date <= onset_date <= exit_date count (the index day and the
--          exit day included); the first is the earliest onset (ties: lowest event_id).
--          t = (min(event onset, exit_date) - index_date) + 1 days, so t >= 1.
--          status 1 = the event; 2 = death in follow-up without the event (competing);
--          0 = censored at exit. An event on the day of death is status 1.
--          person_years = t / 365.25.
CREATE OR REPLACE TABLE analysis.outcomes AS
WITH outcome(outcome, outcome_order) AS (
    VALUES ('first_serious', 1), ('first_opportunistic', 2)
),
outcome_event AS (
    SELECT patient_id, 'first_serious' AS outcome, event_id, onset_date
    FROM analysis.infections_in_follow_up WHERE serious
    UNION ALL
    SELECT patient_id, 'first_opportunistic' AS outcome, event_id, onset_date
    FROM analysis.infections_in_follow_up WHERE opportunistic
),
first_event AS (
    SELECT patient_id, outcome, event_id, onset_date AS event_date
    FROM outcome_event
    QUALIFY row_number() OVER (PARTITION BY patient_id, outcome ORDER BY onset_date, event_id) = 1
),
time_to_event AS (
    SELECT
        p.*,
        o.outcome,
        o.outcome_order,
        e.event_id,
        e.event_date,
        CAST(least(e.event_date, p.exit_date) - p.index_date + 1 AS INTEGER) AS t,  -- least() skips a NULL event_date
        CASE
            WHEN e.event_date IS NOT NULL THEN 1
            WHEN p.died THEN 2
            ELSE 0
        END AS status
    FROM cohort.patients AS p
    CROSS JOIN outcome AS o
    LEFT JOIN first_event AS e ON e.patient_id = p.patient_id AND e.outcome = o.outcome
)
SELECT
    patient_id,
    outcome,
    index_date,
    exit_date,
    event_date,
    event_id,
    t,
    CAST(status AS INTEGER) AS status,
    t / 365.25 AS person_years,
    site,
    sex,
    age_group,
    charlson,
    prior_dmt,
    prior_high_efficacy,
    edss
FROM time_to_event
ORDER BY outcome_order, patient_id;

COMMENT ON TABLE analysis.outcomes IS 'First-event outcomes first_serious (primary) and first_opportunistic: time t = (min(onset, exit) - index) + 1 days, status 1 event / 2 death without the event / 0 censored, and every baseline stratum. Grain: cohort patient and outcome. SAP 2, 3.';
COMMENT ON COLUMN analysis.outcomes.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.outcomes.outcome IS 'first_serious (first serious infection, primary) or first_opportunistic (first opportunistic infection of any seriousness).';
COMMENT ON COLUMN analysis.outcomes.index_date IS 'Index date: first valid alemtuzumab infusion.';
COMMENT ON COLUMN analysis.outcomes.exit_date IS 'Exit date = min(followup_end_date, death_date, data_cut); in the censor-at-switch sensitivity analysis also the start of the first other DMT after index (cohort.patients).';
COMMENT ON COLUMN analysis.outcomes.event_date IS 'Onset date of the first event in [index_date, exit_date]; NULL if none.';
COMMENT ON COLUMN analysis.outcomes.event_id IS 'event_id of the first event (lowest event_id among same-day onsets); NULL if none.';
COMMENT ON COLUMN analysis.outcomes.t IS 'Time in days = (min(event_date, exit_date) - index_date) + 1; at least 1.';
COMMENT ON COLUMN analysis.outcomes.status IS '1 = event; 2 = death in follow-up without the event (competing); 0 = censored at exit.';
COMMENT ON COLUMN analysis.outcomes.person_years IS 'Person-years at risk = t / 365.25.';
COMMENT ON COLUMN analysis.outcomes.site IS 'Stratum site: the site_id (reference: first in alphabetical order).';
COMMENT ON COLUMN analysis.outcomes.sex IS 'Stratum sex: F (reference), M, U.';
COMMENT ON COLUMN analysis.outcomes.age_group IS 'Stratum age_group: 18-29 (reference), 30-39, 40-49, >=50.';
COMMENT ON COLUMN analysis.outcomes.charlson IS 'Stratum charlson: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.outcomes.prior_dmt IS 'Stratum prior_dmt: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.outcomes.prior_high_efficacy IS 'Stratum prior_high_efficacy: N (reference), Y.';
COMMENT ON COLUMN analysis.outcomes.edss IS 'Stratum edss: 0-2.5 (reference), 3.0-5.5, >=6.0, unknown.';
