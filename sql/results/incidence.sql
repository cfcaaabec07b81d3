-- results.incidence
-- Purpose: incidence rates of each outcome, overall and by each baseline stratum (SAP 4, A1):
--          patients, events, person-years, rate per 1,000 person-years and its exact Poisson 95% CI.
-- Grain:   one row per run, outcome (first_serious, all_serious, first_opportunistic), stratifier
--          (overall, site, sex, age_group, charlson, prior_dmt, prior_high_efficacy, edss) and stratum
--          (the SAP's level labels; every SAP level, also one without patients; site: the cohort's sites).
-- Usage:   created here, filled by vigil.analysis.run_analyses (counts aggregated in DuckDB, the
--          chi-square quantiles in Python). The primary key refuses a second insert of the same run.
CREATE TABLE IF NOT EXISTS results.incidence (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    stratum_order INTEGER NOT NULL,
    n_patients BIGINT NOT NULL,
    n_events BIGINT NOT NULL,
    person_years DOUBLE NOT NULL,
    rate_per_1000py DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, stratifier, stratum)
);

COMMENT ON TABLE results.incidence IS 'Incidence rate of each outcome per 1,000 person-years with the exact Poisson 95% CI, overall and by each baseline stratum. Grain: run, outcome, stratifier and stratum. SAP 4 (A1).';
COMMENT ON COLUMN results.incidence.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.incidence.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.incidence.outcome IS 'first_serious (primary: first serious infection), all_serious (every serious infection episode, recurrent) or first_opportunistic (first opportunistic infection).';
COMMENT ON COLUMN results.incidence.stratifier IS 'overall, or the stratum variable: site, sex, age_group, charlson, prior_dmt, prior_high_efficacy, edss.';
COMMENT ON COLUMN results.incidence.stratum IS 'Level of the stratifier as labelled in the SAP (all for overall).';
COMMENT ON COLUMN results.incidence.stratum_order IS 'Order of the level in the SAP (1 = reference; site: alphabetical); 1 for overall.';
COMMENT ON COLUMN results.incidence.n_patients IS 'Cohort patients in the stratum (exact; disclosure control applies only to what leaves the database).';
COMMENT ON COLUMN results.incidence.n_events IS 'Events: patients with the first event (first_serious, first_opportunistic) or serious episodes (all_serious).';
COMMENT ON COLUMN results.incidence.person_years IS 'Person-years at risk = sum of t / 365.25 (first events: to the event or exit; all_serious: index to exit).';
COMMENT ON COLUMN results.incidence.rate_per_1000py IS '1000 * n_events / person_years; NULL when there is no person-time.';
COMMENT ON COLUMN results.incidence.ci_lower IS 'Exact Poisson 95% lower limit per 1,000 person-years: chi2(0.025; 2k)/2/PY, 0 when k = 0; NULL without person-time.';
COMMENT ON COLUMN results.incidence.ci_upper IS 'Exact Poisson 95% upper limit per 1,000 person-years: chi2(0.975; 2k+2)/2/PY; NULL without person-time.';
COMMENT ON COLUMN results.incidence.note IS 'Why an estimate is NULL (e.g. no patients in the stratum); NULL otherwise.';
