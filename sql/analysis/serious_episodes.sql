-- analysis.serious_episodes
-- Purpose: every serious infection episode in follow-up: the events of the recurrent outcome
--          all_serious (SAP 2, secondary a) and of the risk windows (SAP 4, A2).
-- Grain:   one row per cohort patient and distinct event_id with serious = Y and
--          index_date <= onset_date <= exit_date (events on the index day and on the exit day count).
-- Rules:   infections before the index date or after the exit date are not episodes of the study.
CREATE OR REPLACE TABLE analysis.serious_episodes AS
WITH serious_infection_in_follow_up AS (
    SELECT
        i.*,
        p.index_date
    FROM staging.infections AS i
    JOIN cohort.patients AS p USING (patient_id)
    WHERE i.serious = 'Y'
      AND i.onset_date BETWEEN p.index_date AND p.exit_date
)
SELECT
    patient_id,
    event_id,
    onset_date,
    CAST(onset_date - index_date AS INTEGER) AS days_since_index,
    meddra_pt,
    meddra_pt_code,
    lower(meddra_pt) IN (SELECT lower(meddra_pt) FROM codelists.opportunistic_terms) AS opportunistic,
    seriousness_criteria,
    pathogen,
    outcome
FROM serious_infection_in_follow_up
-- one row per event_id: should a patient's event_id occur twice, the earliest onset is kept
QUALIFY row_number() OVER (PARTITION BY patient_id, event_id ORDER BY onset_date, line_number) = 1
ORDER BY patient_id, onset_date, event_id;

COMMENT ON TABLE analysis.serious_episodes IS 'Serious infection episodes in follow-up (recurrent, distinct event_id, index_date <= onset_date <= exit_date). Grain: cohort patient and event_id. SAP 2 (secondary a), SAP 4 (A2).';
COMMENT ON COLUMN analysis.serious_episodes.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.serious_episodes.event_id IS 'Event identifier as delivered (unique within the site''s delivery).';
COMMENT ON COLUMN analysis.serious_episodes.onset_date IS 'Onset date of the infection.';
COMMENT ON COLUMN analysis.serious_episodes.days_since_index IS 'onset_date - index_date in days (0 = on the index day).';
COMMENT ON COLUMN analysis.serious_episodes.meddra_pt IS 'MedDRA preferred term as delivered.';
COMMENT ON COLUMN analysis.serious_episodes.meddra_pt_code IS 'MedDRA preferred term code as delivered; NULL if missing.';
COMMENT ON COLUMN analysis.serious_episodes.opportunistic IS 'True if meddra_pt is on the opportunistic infection term list (ignoring case).';
COMMENT ON COLUMN analysis.serious_episodes.seriousness_criteria IS 'Seriousness criteria as delivered, |-separated.';
COMMENT ON COLUMN analysis.serious_episodes.pathogen IS 'Pathogen as delivered (free text); NULL if missing.';
COMMENT ON COLUMN analysis.serious_episodes.outcome IS 'Outcome of the infection as delivered.';
