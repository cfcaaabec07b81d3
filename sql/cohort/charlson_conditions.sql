-- cohort.charlson_conditions
-- Purpose: the Charlson comorbidity categories each cohort patient has at the index date
--          (SAP 3, charlson): Quan et al. 2005 ICD-10 coding algorithm, Charlson 1987 weights.
-- Grain:   one row per cohort patient and Charlson category with at least one matching diagnosis.
-- Rules:   a diagnosis counts if dated on or before index_date, or undated ("history of").
--          Codes are matched upper-cased and without the dot, by prefix: the normalised code
--          starts with a prefix of codelists.charlson_quan2005_icd10 (E11.9, E119 and E11.91
--          match E119; E11 alone, less specific than the list, matches no diabetes category).
--          Hierarchy: where the mild and the severe form are both present (liver disease;
--          diabetes; any malignancy vs metastatic solid tumour), only the severe form counts.
--          A category counts once, however many of its codes the patient has.
CREATE OR REPLACE TABLE cohort.charlson_conditions AS
WITH cohort_patient AS (
    SELECT patient_id, index_date
    FROM cohort.eligibility
    WHERE excluded_at_step IS NULL
),
baseline_diagnosis AS (
    SELECT
        c.patient_id,
        c.icd10_code,
        upper(replace(c.icd10_code, '.', '')) AS icd10_normalised
    FROM staging.comorbidities AS c
    JOIN cohort_patient AS p USING (patient_id)
    WHERE c.diagnosis_date IS NULL OR c.diagnosis_date <= p.index_date
),
prefix_length AS (
    -- prefix match as an equality join: cut each code to every prefix length the list uses
    SELECT DISTINCT length(icd10_prefix) AS n_characters
    FROM codelists.charlson_quan2005_icd10
),
matched_diagnosis AS (
    SELECT d.patient_id, d.icd10_code, q.category, q.category_name, q.weight, q.superseded_by
    FROM baseline_diagnosis AS d
    JOIN prefix_length AS l ON length(d.icd10_normalised) >= l.n_characters
    JOIN codelists.charlson_quan2005_icd10 AS q ON q.icd10_prefix = left(d.icd10_normalised, l.n_characters)
),
condition AS (
    SELECT
        patient_id,
        category,
        any_value(category_name) AS category_name,
        any_value(weight) AS weight,
        any_value(superseded_by) AS superseded_by,
        count(*) AS n_diagnoses,
        string_agg(DISTINCT icd10_code, ',' ORDER BY icd10_code) AS icd10_codes
    FROM matched_diagnosis
    GROUP BY patient_id, category
)
SELECT
    c.patient_id,
    c.category,
    c.category_name,
    c.weight,
    c.n_diagnoses,
    c.icd10_codes,
    severe.category IS NOT NULL AS superseded,
    CASE WHEN severe.category IS NULL THEN c.weight ELSE 0 END AS weight_counted
FROM condition AS c
LEFT JOIN condition AS severe
    ON severe.patient_id = c.patient_id AND severe.category = c.superseded_by
ORDER BY c.patient_id, c.category;

COMMENT ON TABLE cohort.charlson_conditions IS 'Charlson comorbidity categories present at the index date (diagnoses dated on or before index, or undated), Quan et al. 2005 ICD-10 algorithm with Charlson 1987 weights; a mild form present with its severe form is superseded. Grain: cohort patient and Charlson category. SAP 3.';
COMMENT ON COLUMN cohort.charlson_conditions.patient_id IS 'Patient pseudonym (cohort member).';
COMMENT ON COLUMN cohort.charlson_conditions.category IS 'Charlson category identifier (codelists.charlson_quan2005_icd10.category).';
COMMENT ON COLUMN cohort.charlson_conditions.category_name IS 'Charlson category as named by Quan et al. 2005.';
COMMENT ON COLUMN cohort.charlson_conditions.weight IS 'Charlson (1987) weight of the category.';
COMMENT ON COLUMN cohort.charlson_conditions.n_diagnoses IS 'Number of baseline diagnosis records of the patient that fall in the category.';
COMMENT ON COLUMN cohort.charlson_conditions.icd10_codes IS 'The distinct ICD-10 codes, as delivered, that fall in the category, comma-separated.';
COMMENT ON COLUMN cohort.charlson_conditions.superseded IS 'True if the category is the mild form and the patient also has its severe form, so it does not count.';
COMMENT ON COLUMN cohort.charlson_conditions.weight_counted IS 'Weight counted in the Charlson index: the weight, or 0 if superseded.';
