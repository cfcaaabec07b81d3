-- results.incidence_proportion
-- Purpose: incidence proportion (risk) of the primary outcome by day D = 365, 730 and 1825, overall
--          and by each baseline stratum, with the exact Clopper-Pearson 95% CI (SAP 4, A8).
-- Grain:   one row per run, variant, outcome (first_serious), stratifier, stratum and day.
-- Rules:   n_cases = patients whose first serious infection has t <= D; n_denominator = those
--          patients plus every patient without it by D who was followed to day D (t >= D, i.e. exit
--          >= index + D - 1) or died before D (a non-case); patients censored alive before D are
--          left out. CI as R binom.test(n_cases, n_denominator).
-- Usage:   created here, filled by vigil.analysis.proportions (counts in DuckDB, beta quantiles in Python).
CREATE TABLE IF NOT EXISTS results.incidence_proportion (
    run_id BIGINT NOT NULL,
    variant VARCHAR NOT NULL DEFAULT 'main',
    outcome VARCHAR NOT NULL,
    stratifier VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    stratum_order INTEGER NOT NULL,
    day INTEGER NOT NULL,
    n_cases BIGINT NOT NULL,
    n_denominator BIGINT NOT NULL,
    n_censored_before BIGINT NOT NULL,
    proportion DOUBLE,
    ci_lower DOUBLE,
    ci_upper DOUBLE,
    note VARCHAR,
    PRIMARY KEY (run_id, variant, outcome, stratifier, stratum, day)
);

COMMENT ON TABLE results.incidence_proportion IS 'Incidence proportion of the primary outcome by days 365, 730 and 1825 with the exact Clopper-Pearson 95% CI, overall and by each baseline stratum. Grain: run, variant, outcome, stratifier, stratum and day. SAP 4 (A8).';
COMMENT ON COLUMN results.incidence_proportion.run_id IS 'The run that made the row (results.runs).';
COMMENT ON COLUMN results.incidence_proportion.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.incidence_proportion.outcome IS 'first_serious (the primary outcome).';
COMMENT ON COLUMN results.incidence_proportion.stratifier IS 'overall, or the stratum variable (as results.incidence).';
COMMENT ON COLUMN results.incidence_proportion.stratum IS 'Level of the stratifier as labelled in the SAP (all for overall).';
COMMENT ON COLUMN results.incidence_proportion.stratum_order IS 'Order of the level in the SAP (1 = reference; site: alphabetical); 1 for overall.';
COMMENT ON COLUMN results.incidence_proportion.day IS 'D: days since index (t <= D counts as a case by D; index day = day 1).';
COMMENT ON COLUMN results.incidence_proportion.n_cases IS 'Patients whose first serious infection has t <= D (exact).';
COMMENT ON COLUMN results.incidence_proportion.n_denominator IS 'n_cases plus patients without the event by D who were followed to D or died before D (exact).';
COMMENT ON COLUMN results.incidence_proportion.n_censored_before IS 'Patients of the stratum censored alive before D, left out of the denominator.';
COMMENT ON COLUMN results.incidence_proportion.proportion IS 'n_cases / n_denominator; NULL when the denominator is 0.';
COMMENT ON COLUMN results.incidence_proportion.ci_lower IS 'Clopper-Pearson 95% lower limit (R binom.test): qbeta(0.025, k, n - k + 1), 0 when k = 0.';
COMMENT ON COLUMN results.incidence_proportion.ci_upper IS 'Clopper-Pearson 95% upper limit (R binom.test): qbeta(0.975, k + 1, n - k), 1 when k = n.';
COMMENT ON COLUMN results.incidence_proportion.note IS 'Why the estimate is NULL (no patient in the denominator); NULL otherwise.';
