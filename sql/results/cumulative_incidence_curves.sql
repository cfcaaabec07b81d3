-- results.cumulative_incidence_curves
-- Purpose: the whole step curves behind results.cumulative_incidence, for plotting (SAP 4, A3, A4).
-- Grain:   one row per run, method, outcome, stratifier, stratum and time: time 0 (estimate 0) and
--          every distinct t at which a patient of the stratum leaves follow-up (event, death or
--          censoring), as R's survfit reports them. The curve is a right-continuous step function:
--          its value holds from the row's time until the next row's time.
-- Usage:   created here, filled by vigil.analysis.run_analyses.
CREATE TABLE IF NOT EXISTS results.cumulative_incidence_curves (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    method VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    time INTEGER NOT NULL,
    estimate DOUBLE NOT NULL,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    std_err DOUBLE,
    n_at_risk BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    n_competing BIGINT NOT NULL,
    n_censored BIGINT NOT NULL,
    PRIMARY KEY (run_id, variant, method, outcome, stratifier, stratum, time)
);

COMMENT ON TABLE results.cumulative_incidence_curves IS 'Full Kaplan-Meier (1 - S) and Aalen-Johansen cumulative incidence step curves with 95% CIs, at time 0 and every distinct exit time of each stratum, for plotting. Grain: run, method, outcome, stratifier, stratum and time. SAP 4 (A3, A4).';
COMMENT ON COLUMN results.cumulative_incidence_curves.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.cumulative_incidence_curves.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.cumulative_incidence_curves.method IS 'kaplan_meier (1 - S, death censored) or aalen_johansen (death as a competing event).';
COMMENT ON COLUMN results.cumulative_incidence_curves.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN results.cumulative_incidence_curves.stratifier IS 'overall, or the stratum variable.';
COMMENT ON COLUMN results.cumulative_incidence_curves.stratum IS 'Level of the stratifier as labelled in the SAP (all for overall).';
COMMENT ON COLUMN results.cumulative_incidence_curves.time IS 'Days since index (t); 0 for the starting point.';
COMMENT ON COLUMN results.cumulative_incidence_curves.estimate IS 'Cumulative incidence from this time until the next row''s time.';
COMMENT ON COLUMN results.cumulative_incidence_curves.ci_lower IS '95% lower limit (KM: log(-log S); AJ: log scale); NULL where undefined (estimate 0, KM 1 - S = 1).';
COMMENT ON COLUMN results.cumulative_incidence_curves.ci_upper IS '95% upper limit; NULL where undefined.';
COMMENT ON COLUMN results.cumulative_incidence_curves.std_err IS 'KM: Greenwood standard error of -log S; AJ: infinitesimal-jackknife standard error of the estimate. NULL where infinite (KM when everyone at risk had the event).';
COMMENT ON COLUMN results.cumulative_incidence_curves.n_at_risk IS 'Patients at risk at this time (t >= time).';
COMMENT ON COLUMN results.cumulative_incidence_curves.n_events IS 'Events (status 1) at this time.';
COMMENT ON COLUMN results.cumulative_incidence_curves.n_competing IS 'Deaths without the event at this time (competing for aalen_johansen; counted as censored by kaplan_meier, and 0 in its rows).';
COMMENT ON COLUMN results.cumulative_incidence_curves.n_censored IS 'Patients censored at this time (kaplan_meier: deaths included).';
