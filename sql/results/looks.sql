-- results.looks
-- Purpose: every analysis run mapped to its look of the monitoring across data cuts (SAP 7), with the
--          data cuts it saw and the sequential settings of its surveillance.
-- Grain:   one row per run.
-- Usage:   written by vigil.analysis.monitoring.run_monitoring in the run's transaction. A look is the
--          first run on a set of accepted deliveries in which some site's data cut is later than at the
--          previous look (a site new to the study counts as later); any other run repeats the latest
--          look (new_look false) and spends no alpha.
CREATE TABLE IF NOT EXISTS results.looks (
    run_id       BIGINT NOT NULL,
    variant      VARCHAR NOT NULL DEFAULT 'main',
    surveillance VARCHAR NOT NULL,
    look         INTEGER NOT NULL,
    new_look     BOOLEAN NOT NULL,
    data_cuts    JSON NOT NULL,
    delivery_ids JSON NOT NULL,
    settings     JSON NOT NULL,
    note         VARCHAR,
    PRIMARY KEY (run_id, variant)
);

COMMENT ON TABLE results.looks IS 'Each run mapped to its look of the monitoring across data cuts, with the data cuts it saw. Grain: run. SAP 7.';
COMMENT ON COLUMN results.looks.run_id IS 'The run (results.runs).';
COMMENT ON COLUMN results.looks.variant IS 'The analysis the row belongs to: main = the SAP''s primary analysis; any other name = a sensitivity analysis (SAP A12), described in results.variants.';
COMMENT ON COLUMN results.looks.surveillance IS 'Name of the surveillance the look belongs to (primary = the SAP''s; a new name starts a new sequence of looks with its own settings).';
COMMENT ON COLUMN results.looks.look IS 'Look number, 1, 2, ... within the surveillance.';
COMMENT ON COLUMN results.looks.new_look IS 'True for the run that made the look (its first run); false for a run that repeats it (same deliveries, or no site''s data cut later than at the look).';
COMMENT ON COLUMN results.looks.data_cuts IS 'Site -> data cut of the accepted deliveries the run analysed.';
COMMENT ON COLUMN results.looks.delivery_ids IS 'Site -> delivery_id of the accepted deliveries the run analysed.';
COMMENT ON COLUMN results.looks.settings IS 'Sequential settings of the surveillance (alpha, rho, M, T, max_looks, outcome), fixed at its first look.';
COMMENT ON COLUMN results.looks.note IS 'Why the run is or is not a new look.';
