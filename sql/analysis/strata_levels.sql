-- analysis.strata_levels
-- Purpose: the baseline stratum variables, their levels in the SAP's order and the reference
--          level of each (SAP 3), so that tables and models take order and reference from data.
-- Grain:   one row per stratum variable and level. Every level of codelists.strata (codelists/strata.csv)
--          is listed, also when no patient has it; a variable whose levels come from the data
--          (rule data: site) has the values of the cohort, in alphabetical order.
CREATE OR REPLACE TABLE analysis.strata_levels AS
WITH sap_level AS (
    SELECT variable, variable_order, level, level_order
    FROM codelists.strata
    WHERE rule <> 'data'
),
site_level AS (
    SELECT s.variable, s.variable_order, p.site AS level,
           CAST(row_number() OVER (ORDER BY p.site) AS INTEGER) AS level_order
    FROM (SELECT DISTINCT site FROM cohort.patients) AS p
    JOIN codelists.strata AS s ON s.variable = 'site' AND s.rule = 'data'
),
level AS (
    SELECT * FROM sap_level
    UNION ALL
    SELECT * FROM site_level
),
patient_level AS (
    UNPIVOT (
        SELECT patient_id, age_group, sex, charlson, prior_dmt, prior_high_efficacy, edss, site
        FROM cohort.patients
    )
    ON age_group, sex, charlson, prior_dmt, prior_high_efficacy, edss, site
    INTO NAME variable VALUE level
),
n_patients AS (
    SELECT variable, level, count(*) AS n_patients
    FROM patient_level
    GROUP BY variable, level
)
SELECT
    l.variable,
    CAST(l.variable_order AS INTEGER) AS variable_order,
    l.level,
    CAST(l.level_order AS INTEGER) AS level_order,
    l.level_order = 1 AS is_reference,
    coalesce(n.n_patients, 0) AS n_patients
FROM level AS l
LEFT JOIN n_patients AS n USING (variable, level)
ORDER BY l.variable_order, l.level_order;

COMMENT ON TABLE analysis.strata_levels IS 'Baseline stratum variables with their levels in SAP order, the reference level (first listed; site: first alphabetically) and the cohort count. Grain: stratum variable and level. SAP 3.';
COMMENT ON COLUMN analysis.strata_levels.variable IS 'Stratum variable = column name in cohort.patients and the analysis datasets.';
COMMENT ON COLUMN analysis.strata_levels.variable_order IS 'Order of the variable in tables (codelists.strata.variable_order).';
COMMENT ON COLUMN analysis.strata_levels.level IS 'Level of the variable as it appears in the data.';
COMMENT ON COLUMN analysis.strata_levels.level_order IS 'Order of the level within its variable, 1 = reference.';
COMMENT ON COLUMN analysis.strata_levels.is_reference IS 'True for the reference level of the variable.';
COMMENT ON COLUMN analysis.strata_levels.n_patients IS 'Cohort patients with this level (0 if none).';
