-- analysis.infections_in_follow_up
-- Purpose: every infection of a cohort patient in follow-up, with whether it counts as serious and as
--          opportunistic (SAP 2): the one definition the first-event outcomes (analysis.outcomes) and
--          the listing of terms (analysis.infection_terms, SAP 7 A15) both read.
-- Grain:   one row per infection event in follow-up.
-- Rules:   index_date <= onset_date <= exit_date (the index day and the exit day included);
--          serious = the delivered serious flag Y; opportunistic = meddra_pt on
--          codelists.opportunistic_terms, ignoring case, of any seriousness.
CREATE OR REPLACE TABLE analysis.infections_in_follow_up AS
SELECT
    i.patient_id,
    i.event_id,
    i.meddra_pt,
    i.onset_date,
    i.serious = 'Y' AS serious,
    lower(i.meddra_pt) IN (SELECT lower(meddra_pt) FROM codelists.opportunistic_terms) AS opportunistic
FROM staging.infections AS i
JOIN cohort.patients AS p USING (patient_id)
WHERE i.onset_date BETWEEN p.index_date AND p.exit_date
ORDER BY i.patient_id, i.onset_date, i.event_id;

COMMENT ON TABLE analysis.infections_in_follow_up IS 'Infections of cohort patients with onset in follow-up (index_date to exit_date), flagged serious and opportunistic. Grain: infection event. SAP 2.';
COMMENT ON COLUMN analysis.infections_in_follow_up.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN analysis.infections_in_follow_up.event_id IS 'event_id of the infection as delivered.';
COMMENT ON COLUMN analysis.infections_in_follow_up.meddra_pt IS 'MedDRA preferred term as delivered.';
COMMENT ON COLUMN analysis.infections_in_follow_up.onset_date IS 'Onset date, between index_date and exit_date.';
COMMENT ON COLUMN analysis.infections_in_follow_up.serious IS 'True when the delivered serious flag is Y.';
COMMENT ON COLUMN analysis.infections_in_follow_up.opportunistic IS 'True when meddra_pt is on codelists.opportunistic_terms (ignoring case), whatever the seriousness.';
