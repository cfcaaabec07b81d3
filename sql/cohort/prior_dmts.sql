-- cohort.prior_dmts
-- Purpose: the disease-modifying therapies each cohort patient started before the index date
--          (SAP 3, prior_dmt and prior_high_efficacy).
-- Grain:   one row per cohort patient and distinct dmt_code with a start_date before index_date.
-- Rules:   start_date strictly before index_date (a DMT started on the index day is not prior);
--          repeated episodes of the same code count once; OTHER counts as one code.
CREATE OR REPLACE TABLE cohort.prior_dmts AS
WITH cohort_patient AS (
    SELECT patient_id, index_date
    FROM cohort.eligibility
    WHERE excluded_at_step IS NULL
)
SELECT
    d.patient_id,
    d.dmt_code,
    any_value(k.dmt_name) AS dmt_name,
    coalesce(any_value(k.high_efficacy), 'N') AS high_efficacy,
    min(d.start_date) AS first_start_date,
    count(*) AS n_episodes
FROM staging.dmt_history AS d
JOIN cohort_patient AS p USING (patient_id)
LEFT JOIN codelists.dmt_classes AS k USING (dmt_code)
WHERE d.start_date < p.index_date
GROUP BY d.patient_id, d.dmt_code
ORDER BY d.patient_id, d.dmt_code;

COMMENT ON TABLE cohort.prior_dmts IS 'Disease-modifying therapies started before the index date. Grain: cohort patient and distinct dmt_code with start_date < index_date. SAP 3.';
COMMENT ON COLUMN cohort.prior_dmts.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN cohort.prior_dmts.dmt_code IS 'DMT code (codelists.dmt_classes).';
COMMENT ON COLUMN cohort.prior_dmts.dmt_name IS 'Name of the therapy.';
COMMENT ON COLUMN cohort.prior_dmts.high_efficacy IS 'Y if the therapy is in the high-efficacy / immunosuppressive class, else N.';
COMMENT ON COLUMN cohort.prior_dmts.first_start_date IS 'Earliest start_date of the code before index.';
COMMENT ON COLUMN cohort.prior_dmts.n_episodes IS 'Number of episodes of the code started before index.';
