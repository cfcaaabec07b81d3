-- results.observed_expected
-- Purpose: A13 observed vs expected at each look (SAP 7): O events, E = sum of person-years x reference
--          rate over the outcome x sex x age group cells (indirect standardisation), SIR = O/E with the
--          exact Poisson CI of O divided by E; overall and by every stratum.
-- Grain:   one row per run, outcome, stratifier and stratum.
-- Usage:   written by vigil.analysis.monitoring.run_monitoring from analysis.expected_events.
CREATE TABLE IF NOT EXISTS results.observed_expected (
    run_id       BIGINT NOT NULL,
    variant      VARCHAR NOT NULL DEFAULT 'main',
    look         INTEGER NOT NULL,
    outcome      VARCHAR NOT NULL,
    stratifier   VARCHAR NOT NULL,
    stratum      VARCHAR NOT NULL,
    observed     BIGINT NOT NULL,
    expected     DOUBLE NOT NULL,
    person_years DOUBLE NOT NULL,
    sir          DOUBLE,
    ci_lower     DOUBLE,
    ci_upper     DOUBLE,
    note         VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, stratifier, stratum)
);

COMMENT ON TABLE results.observed_expected IS 'A13: observed vs expected first events (indirect standardisation on the reference rates), overall and by stratum. Grain: run, outcome, stratifier and stratum. SAP 7.';
COMMENT ON COLUMN results.observed_expected.run_id IS 'The run (results.runs).';
COMMENT ON COLUMN results.observed_expected.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.observed_expected.look IS 'The look of the run (results.looks).';
COMMENT ON COLUMN results.observed_expected.outcome IS 'first_serious (primary) or first_opportunistic.';
COMMENT ON COLUMN results.observed_expected.stratifier IS 'overall, or the baseline variable (SAP 3).';
COMMENT ON COLUMN results.observed_expected.stratum IS 'all for overall, else the level.';
COMMENT ON COLUMN results.observed_expected.observed IS 'O: patients with the first event in follow-up.';
COMMENT ON COLUMN results.observed_expected.expected IS 'E: sum over patients of person-years at risk x reference rate of their outcome x sex x age group cell / 1000.';
COMMENT ON COLUMN results.observed_expected.person_years IS 'Person-years at risk.';
COMMENT ON COLUMN results.observed_expected.sir IS 'Standardised incidence ratio O/E; NULL when E = 0.';
COMMENT ON COLUMN results.observed_expected.ci_lower IS 'Lower 95% limit: the exact (Garwood) Poisson lower limit of O divided by E.';
COMMENT ON COLUMN results.observed_expected.ci_upper IS 'Upper 95% limit: the exact (Garwood) Poisson upper limit of O divided by E.';
COMMENT ON COLUMN results.observed_expected.note IS 'Why a value is missing, if it is.';
