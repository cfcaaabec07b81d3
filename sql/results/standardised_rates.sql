-- results.standardised_rates
-- Purpose: the primary outcome's rate in each A1 stratum directly standardised to the age_group x sex
--          person-time of the whole cohort, with the gamma-method 95% CI of Fay & Feuer (1997)
--          (SAP 4, A11), per 1,000 person-years.
-- Grain:   one row per run, variant, outcome (first_serious), stratifier and stratum; strata by age_group
--          or sex themselves are not standardised and have no row.
-- Rules:   as R epitools::ageadjust.direct(count, pop = person_years, stdpop = the cohort's person-years
--          per age_group x sex cell); cells where the stratum has no person-time are left out of its
--          standard. With no event the lower limit is 0 (R: NaN) and note says so.
-- Usage:   created here, filled by vigil.analysis.standardised.
CREATE TABLE IF NOT EXISTS results.standardised_rates (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    stratum_order INTEGER NOT NULL,
    n_events BIGINT NOT NULL,
    person_years DOUBLE NOT NULL,
    n_cells INTEGER NOT NULL,
    crude_rate DOUBLE,
    standardised_rate DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, stratifier, stratum)
);

COMMENT ON TABLE results.standardised_rates IS 'Rate of the first serious infection per 1,000 person-years in each stratum, directly standardised to the cohort''s age_group x sex person-time, gamma 95% CI (R epitools::ageadjust.direct). Grain: run, variant, outcome, stratifier, stratum. SAP 4 (A11).';
COMMENT ON COLUMN results.standardised_rates.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.standardised_rates.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.standardised_rates.outcome IS 'first_serious (the primary outcome).';
COMMENT ON COLUMN results.standardised_rates.stratifier IS 'overall, or a stratum variable other than age_group and sex.';
COMMENT ON COLUMN results.standardised_rates.stratum IS 'Level of the stratifier (all for overall).';
COMMENT ON COLUMN results.standardised_rates.stratum_order IS 'Order of the level in the SAP (1 = reference); 1 for overall.';
COMMENT ON COLUMN results.standardised_rates.n_events IS 'First serious infections in the stratum (exact).';
COMMENT ON COLUMN results.standardised_rates.person_years IS 'Person-years of the stratum.';
COMMENT ON COLUMN results.standardised_rates.n_cells IS 'age_group x sex cells with person-time in the stratum (those in its standard).';
COMMENT ON COLUMN results.standardised_rates.crude_rate IS 'Crude rate per 1,000 person-years (ageadjust.direct crude.rate x 1000).';
COMMENT ON COLUMN results.standardised_rates.standardised_rate IS 'Directly standardised rate per 1,000 person-years (adj.rate x 1000).';
COMMENT ON COLUMN results.standardised_rates.ci_lower IS 'Fay-Feuer gamma 95% lower limit per 1,000 person-years (lci x 1000; 0 with no event).';
COMMENT ON COLUMN results.standardised_rates.ci_upper IS 'Fay-Feuer gamma 95% upper limit per 1,000 person-years (uci x 1000).';
COMMENT ON COLUMN results.standardised_rates.note IS 'Why a value is NULL or differs from R by convention, and cells left out; NULL otherwise.';
