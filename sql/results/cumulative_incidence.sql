-- results.cumulative_incidence
-- Purpose: cumulative incidence of the first-event outcomes at days 30, 180, 365, 730, 1095 and 1825
--          (SAP 4, A3 and A4), overall and by each baseline stratum:
--            kaplan_meier    1 - S, death censored; Greenwood variance, 95% CI on the log(-log S) scale
--                            (R: survfit(conf.type = "log-log"));
--            aalen_johansen  death as a competing event; infinitesimal-jackknife variance, 95% CI on
--                            the log scale (R: survfit multi-state default).
-- Grain:   one row per run, method, outcome, stratifier, stratum and day.
-- Usage:   created here, filled by vigil.analysis.run_analyses. Full curves: results.cumulative_incidence_curves.
CREATE TABLE IF NOT EXISTS results.cumulative_incidence (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    method VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    stratum_order INTEGER NOT NULL,
    day INTEGER NOT NULL,
    estimate DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    std_err DOUBLE,
    n_at_risk BIGINT NOT NULL,
    n_patients BIGINT NOT NULL,
    cumulative_events BIGINT NOT NULL,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, method, outcome, stratifier, stratum, day)
);

COMMENT ON TABLE results.cumulative_incidence IS 'Cumulative incidence of first_serious (and first_opportunistic) at days 30, 180, 365, 730, 1095, 1825: Kaplan-Meier 1 - S (death censored, log(-log) CI) and Aalen-Johansen (death competing, log CI), overall and by stratum. Grain: run, method, outcome, stratifier, stratum and day. SAP 4 (A3, A4).';
COMMENT ON COLUMN results.cumulative_incidence.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.cumulative_incidence.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.cumulative_incidence.method IS 'kaplan_meier (1 - S, death censored) or aalen_johansen (death as a competing event).';
COMMENT ON COLUMN results.cumulative_incidence.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN results.cumulative_incidence.stratifier IS 'overall, or the stratum variable: site, sex, age_group, charlson, prior_dmt, prior_high_efficacy, edss.';
COMMENT ON COLUMN results.cumulative_incidence.stratum IS 'Level of the stratifier as labelled in the SAP (all for overall).';
COMMENT ON COLUMN results.cumulative_incidence.stratum_order IS 'Order of the level in the SAP (1 = reference; site: alphabetical); 1 for overall.';
COMMENT ON COLUMN results.cumulative_incidence.day IS 'Days since index (t counts the index day as day 1): the estimate includes events with t <= day.';
COMMENT ON COLUMN results.cumulative_incidence.estimate IS 'Cumulative incidence at the day (0 to 1). NULL when the day is after the last follow-up time of the stratum or the stratum has no patients.';
COMMENT ON COLUMN results.cumulative_incidence.ci_lower IS '95% lower limit (KM: log(-log S) scale; AJ: log scale). NULL where undefined: estimate 0 (no event yet) or KM 1 - S = 1.';
COMMENT ON COLUMN results.cumulative_incidence.ci_upper IS '95% upper limit (KM: log(-log S) scale; AJ: log scale, capped at 1). NULL where undefined.';
COMMENT ON COLUMN results.cumulative_incidence.std_err IS 'KM: Greenwood standard error of -log S (R survfit std.err); AJ: infinitesimal-jackknife standard error of the estimate.';
COMMENT ON COLUMN results.cumulative_incidence.n_at_risk IS 'Patients at risk at the day: t >= day.';
COMMENT ON COLUMN results.cumulative_incidence.n_patients IS 'Patients in the stratum.';
COMMENT ON COLUMN results.cumulative_incidence.cumulative_events IS 'Events (status 1) with t <= day: the cell the estimate rests on, for disclosure control (SAP 5).';
COMMENT ON COLUMN results.cumulative_incidence.note IS 'Why an estimate or CI is NULL; NULL otherwise.';
