-- analysis.all_serious
-- Purpose: the recurrent outcome all_serious, ready for incidence rates (SAP 2 secondary a, SAP 4 A1):
--          every serious infection episode in follow-up, over person-time from index to exit
--          regardless of events (a patient stays at risk after an episode).
-- Grain:   one row per cohort patient.
-- Rules:   t = (exit_date - index_date) + 1 days; person_years = t / 365.25;
--          n_events = episodes in analysis.serious_episodes (index_date <= onset <= exit_date).
CREATE OR REPLACE TABLE analysis.all_serious AS
WITH episodes AS (
    SELECT patient_id, count(*) AS n_events
    FROM analysis.serious_episodes
    GROUP BY patient_id
)
SELECT
    p.patient_id,
    p.index_date,
    p.exit_date,
    p.follow_up_days AS t,
    p.person_years,
    CAST(coalesce(e.n_events, 0) AS INTEGER) AS n_events,
    p.site,
    p.sex,
    p.age_group,
    p.charlson,
    p.prior_dmt,
    p.prior_high_efficacy,
    p.edss
FROM cohort.patients AS p
LEFT JOIN episodes AS e USING (patient_id)
ORDER BY p.patient_id;

COMMENT ON TABLE analysis.all_serious IS 'Recurrent outcome all_serious: serious infection episodes per patient over person-time from index to exit regardless of events, with every baseline stratum. Grain: cohort patient. SAP 2 (secondary a).';
COMMENT ON COLUMN analysis.all_serious.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.all_serious.index_date IS 'Index date: first valid alemtuzumab infusion.';
COMMENT ON COLUMN analysis.all_serious.exit_date IS 'Exit date = min(followup_end_date, death_date, data_cut); in the censor-at-switch sensitivity analysis also the start of the first other DMT after index (cohort.patients).';
COMMENT ON COLUMN analysis.all_serious.t IS 'Person-time in days = (exit_date - index_date) + 1, regardless of events.';
COMMENT ON COLUMN analysis.all_serious.person_years IS 'Person-years = t / 365.25.';
COMMENT ON COLUMN analysis.all_serious.n_events IS 'Number of serious infection episodes (distinct event_id) with index_date <= onset_date <= exit_date.';
COMMENT ON COLUMN analysis.all_serious.site IS 'Stratum site: the site_id (reference: first in alphabetical order).';
COMMENT ON COLUMN analysis.all_serious.sex IS 'Stratum sex: F (reference), M, U.';
COMMENT ON COLUMN analysis.all_serious.age_group IS 'Stratum age_group: 18-29 (reference), 30-39, 40-49, >=50.';
COMMENT ON COLUMN analysis.all_serious.charlson IS 'Stratum charlson: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.all_serious.prior_dmt IS 'Stratum prior_dmt: 0 (reference), 1, >=2.';
COMMENT ON COLUMN analysis.all_serious.prior_high_efficacy IS 'Stratum prior_high_efficacy: N (reference), Y.';
COMMENT ON COLUMN analysis.all_serious.edss IS 'Stratum edss: 0-2.5 (reference), 3.0-5.5, >=6.0, unknown.';
