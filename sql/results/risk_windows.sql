-- results.risk_windows
-- Purpose: serious infection episodes and person-time by days since the start of the most recent
--          alemtuzumab course, with rates per 1,000 person-years and exact Poisson 95% CIs (SAP 4, A2).
-- Grain:   one row per run and risk window (0-30, 31-90, 91-365, >365), all four always present.
-- Usage:   created here, filled by vigil.analysis.run_analyses from analysis.risk_windows.
--          The column "window" is an SQL keyword: quote it ("window") in queries.
CREATE TABLE IF NOT EXISTS results.risk_windows (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    "window" VARCHAR NOT NULL,
    window_order INTEGER NOT NULL,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    person_years DOUBLE NOT NULL,
    rate_per_1000py DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, "window")
);

COMMENT ON TABLE results.risk_windows IS 'Serious infection episodes, person-time and rate per 1,000 person-years (exact Poisson 95% CI) by days since the start of the most recent course: 0-30, 31-90, 91-365, >365 (day 0 = course start). Grain: run and risk window. SAP 4 (A2).';
COMMENT ON COLUMN results.risk_windows.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.risk_windows.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.risk_windows."window" IS 'Risk window, days since the start of the most recent derived course: 0-30, 31-90, 91-365, >365. An SQL keyword: write "window".';
COMMENT ON COLUMN results.risk_windows.window_order IS 'Order of the window, 1 (0-30) to 4 (>365).';
COMMENT ON COLUMN results.risk_windows.n_patients IS 'Patients with follow-up in the window (after any course).';
COMMENT ON COLUMN results.risk_windows.n_events IS 'Serious infection episodes with onset in the window.';
COMMENT ON COLUMN results.risk_windows.person_years IS 'Person-years in the window = days / 365.25.';
COMMENT ON COLUMN results.risk_windows.rate_per_1000py IS '1000 * n_events / person_years; NULL when there is no person-time.';
COMMENT ON COLUMN results.risk_windows.ci_lower IS 'Exact Poisson 95% lower limit per 1,000 person-years (0 when there is no event); NULL without person-time.';
COMMENT ON COLUMN results.risk_windows.ci_upper IS 'Exact Poisson 95% upper limit per 1,000 person-years; NULL without person-time.';
COMMENT ON COLUMN results.risk_windows.note IS 'Why an estimate is NULL; NULL otherwise.';
