"""Fault injection (rows that break each row rule of the contract, and what the quarantine makes of
them) and deliveries that must be refused whole (DTS section 3)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from vigil.contract import Contract
from vigil.synth.generator import _patient_ids
from vigil.synth.parameters import MIN_PATIENTS_PER_SITE_WITH_FAULTS, _POLARS_TYPES
from vigil.synth.truth import _truth
from vigil.synth.writers import _rehash, _write_manifest


# ---------------------------------------------------------------------------------------------
# Faults: rows that break each row rule of the contract, and what the quarantine makes of them.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _FaultContext:
    """What a fault may need to know about its patient and delivery."""

    site: str
    cut: date
    birth_year: int
    death: date | None
    orphan_id: str  # a patient_id of this site that is not in patients
    event_id: str  # an event_id not used in the delivery


def _text(d: date) -> str:
    return d.isoformat()


def _shift(text: str, days: int) -> str:
    return _text(date.fromisoformat(text) + timedelta(days=days))


def _day_first(text: str, separator: str) -> str:
    """2019-03-05 as 05/03/2019 (or with another separator): a date the spec does not accept."""
    year, month, day = text.split("-")
    return separator.join((day, month, year))


Change = Callable[[dict, _FaultContext], dict]


@dataclass(frozen=True)
class _Fault:
    """How to make a row break one rule. `action` on the chosen patient's first row of `table`:
    mutate it, add a changed copy after it, duplicate it, rekey the patient everywhere (changing
    its patients row), or drop its follow_up row. `patient`: any, alive or dead (died at least
    five days before the cut). `change` gives the new texts (None = missing)."""

    table: str
    action: str
    change: Change = lambda row, c: {}
    patient: str = "any"


_F = _Fault
# One recipe per contract row rule (by rule_id); every fault breaks its rule and no earlier one,
# except where an earlier rule has the same reason (infections.seriousness_criteria
# .fatal_inconsistent.4 is reached only through serious.fatal_inconsistent.1).
_FAULTS: dict[str, _Fault] = {
    "patients.patient_id.missing_required": _F("patients", "add", lambda r, c: {"patient_id": None}),
    "patients.patient_id.bad_format.1": _F(  # a pseudonym cut to 7 hex digits, in every table
        "patients", "rekey", lambda r, c: {"patient_id": r["patient_id"][: len(c.site) + 8]}),
    "patients.patient_id.no_follow_up.2": _F("follow_up", "drop_follow_up"),
    "patients.sex.missing_required": _F("patients", "mutate", lambda r, c: {"sex": None}),
    "patients.sex.not_in_code_list.1": _F("patients", "mutate", lambda r, c: {"sex": "female"}),
    "patients.birth_year.missing_required": _F("patients", "mutate", lambda r, c: {"birth_year": None}),
    "patients.birth_year.unparseable": _F("patients", "mutate", lambda r, c: {"birth_year": r["birth_year"] + ".0"}),
    "patients.birth_year.out_of_range.1": _F("patients", "mutate", lambda r, c: {"birth_year": "1899"}),
    "patients.ms_onset_year.unparseable": _F("patients", "mutate", lambda r, c: {"ms_onset_year": "unknown"}),
    "patients.ms_onset_year.out_of_range.1": _F(
        "patients", "mutate", lambda r, c: {"ms_onset_year": str(c.cut.year + 1)}),
    "patients.ms_onset_year.out_of_range.2": _F(
        "patients", "mutate", lambda r, c: {"ms_onset_year": str(c.birth_year - 1)}),
    "patients.ms_course.missing_required": _F("patients", "mutate", lambda r, c: {"ms_course": None}),
    "patients.ms_course.not_in_code_list.1": _F("patients", "mutate", lambda r, c: {"ms_course": "RMS"}),

    "alemtuzumab_infusions.patient_id.missing_required": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"patient_id": None}),
    "alemtuzumab_infusions.patient_id.orphan_patient.1": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "alemtuzumab_infusions.infusion_date.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"infusion_date": None}),
    "alemtuzumab_infusions.infusion_date.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"infusion_date": _day_first(r["infusion_date"], "/")}),
    "alemtuzumab_infusions.infusion_date.after_data_cut.1": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": _text(c.cut + timedelta(days=7))}, "alive"),
    "alemtuzumab_infusions.infusion_date.out_of_range.2": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": f"{c.birth_year - 1}-07-01"}),
    "alemtuzumab_infusions.infusion_date.after_death.3": _F(
        "alemtuzumab_infusions", "add", lambda r, c: {"infusion_date": _text(c.death + timedelta(days=3))}, "dead"),
    "alemtuzumab_infusions.course_number.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": None}),
    "alemtuzumab_infusions.course_number.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": "C" + r["course_number"]}),
    "alemtuzumab_infusions.course_number.out_of_range.1": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"course_number": "0"}),
    "alemtuzumab_infusions.dose_mg.missing_required": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": None}),
    "alemtuzumab_infusions.dose_mg.unparseable": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": "12 mg"}),
    "alemtuzumab_infusions.dose_mg.out_of_range.1": _F(
        "alemtuzumab_infusions", "mutate", lambda r, c: {"dose_mg": "120"}),
    "alemtuzumab_infusions.patient_id+infusion_date.duplicate_key": _F("alemtuzumab_infusions", "duplicate"),

    "dmt_history.patient_id.missing_required": _F("dmt_history", "add", lambda r, c: {"patient_id": None}),
    "dmt_history.patient_id.orphan_patient.1": _F("dmt_history", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "dmt_history.dmt_code.missing_required": _F("dmt_history", "mutate", lambda r, c: {"dmt_code": None}),
    "dmt_history.dmt_code.not_in_code_list.1": _F("dmt_history", "mutate", lambda r, c: {"dmt_code": "Tysabri"}),
    "dmt_history.start_date.missing_required": _F("dmt_history", "mutate", lambda r, c: {"start_date": None}),
    "dmt_history.start_date.unparseable": _F(
        "dmt_history", "mutate", lambda r, c: {"start_date": _day_first(r["start_date"], "/")}),
    "dmt_history.start_date.after_data_cut.1": _F(
        "dmt_history", "mutate", lambda r, c: {"start_date": _text(c.cut + timedelta(days=30)), "stop_date": None}),
    "dmt_history.stop_date.unparseable": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": r["start_date"][:4] + "-13-01"}),
    "dmt_history.stop_date.after_data_cut.1": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": _text(c.cut + timedelta(days=30))}),
    "dmt_history.stop_date.stop_before_start.2": _F(
        "dmt_history", "mutate", lambda r, c: {"stop_date": _shift(r["start_date"], -1)}),

    "comorbidities.patient_id.missing_required": _F("comorbidities", "add", lambda r, c: {"patient_id": None}),
    "comorbidities.patient_id.orphan_patient.1": _F("comorbidities", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "comorbidities.icd10_code.missing_required": _F("comorbidities", "mutate", lambda r, c: {"icd10_code": None}),
    "comorbidities.icd10_code.bad_format.1": _F(
        "comorbidities", "mutate", lambda r, c: {"icd10_code": r["icd10_code"].lower()}),
    "comorbidities.diagnosis_date.unparseable": _F(
        "comorbidities", "mutate", lambda r, c: {"diagnosis_date": "2015-06-31"}),
    "comorbidities.diagnosis_date.after_data_cut.1": _F(
        "comorbidities", "mutate", lambda r, c: {"diagnosis_date": _text(c.cut + timedelta(days=60))}),

    "edss_assessments.patient_id.missing_required": _F("edss_assessments", "add", lambda r, c: {"patient_id": None}),
    "edss_assessments.patient_id.orphan_patient.1": _F(
        "edss_assessments", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "edss_assessments.assessment_date.missing_required": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": None}),
    "edss_assessments.assessment_date.unparseable": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": _day_first(r["assessment_date"], ".")}),
    "edss_assessments.assessment_date.after_data_cut.1": _F(
        "edss_assessments", "mutate", lambda r, c: {"assessment_date": _text(c.cut + timedelta(days=1))}),
    "edss_assessments.edss.missing_required": _F("edss_assessments", "mutate", lambda r, c: {"edss": None}),
    "edss_assessments.edss.unparseable": _F(
        "edss_assessments", "mutate", lambda r, c: {"edss": r["edss"].replace(".", ",")}),
    "edss_assessments.edss.not_in_code_list.1": _F("edss_assessments", "mutate", lambda r, c: {"edss": "0.5"}),

    "infections.patient_id.missing_required": _F(
        "infections", "add", lambda r, c: {"patient_id": None, "event_id": c.event_id}),
    "infections.patient_id.orphan_patient.1": _F(
        "infections", "add", lambda r, c: {"patient_id": c.orphan_id, "event_id": c.event_id}),
    "infections.event_id.missing_required": _F("infections", "mutate", lambda r, c: {"event_id": None}),
    "infections.onset_date.missing_required": _F("infections", "mutate", lambda r, c: {"onset_date": None}),
    "infections.onset_date.unparseable": _F(
        "infections", "mutate", lambda r, c: {"onset_date": r["onset_date"][:4] + "-02-30"}),
    "infections.onset_date.after_data_cut.1": _F(
        "infections", "mutate", lambda r, c: {"onset_date": _text(c.cut + timedelta(days=14))}, "alive"),
    "infections.onset_date.after_death.2": _F(
        "infections", "add", lambda r, c: {"event_id": c.event_id, "onset_date": _text(c.death + timedelta(days=2))},
        "dead"),
    "infections.meddra_pt.missing_required": _F("infections", "mutate", lambda r, c: {"meddra_pt": None}),
    "infections.meddra_pt_code.unparseable": _F("infections", "mutate", lambda r, c: {"meddra_pt_code": "10O22000"}),
    "infections.meddra_pt_code.bad_format.1": _F("infections", "mutate", lambda r, c: {"meddra_pt_code": "1002200"}),
    "infections.serious.missing_required": _F("infections", "mutate", lambda r, c: {"serious": None}),
    "infections.serious.unparseable": _F(
        "infections", "mutate", lambda r, c: {"serious": "Yes" if r["serious"] == "Y" else "No"}),
    "infections.serious.fatal_inconsistent.1": _F(
        "infections", "mutate", lambda r, c: {"serious": "N", "seriousness_criteria": None, "outcome": "fatal"}),
    "infections.seriousness_criteria.not_in_code_list.1": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "Y", "seriousness_criteria": "hospitalization", "outcome": "recovered"}),
    "infections.seriousness_criteria.seriousness_mismatch.2": _F(
        "infections", "mutate", lambda r, c: {"serious": "Y", "seriousness_criteria": None, "outcome": "recovered"}),
    "infections.seriousness_criteria.seriousness_mismatch.3": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "N", "seriousness_criteria": "medically_important", "outcome": "recovered"}),
    "infections.seriousness_criteria.fatal_inconsistent.4": _F(
        "infections", "mutate", lambda r, c: {"serious": "N", "seriousness_criteria": None, "outcome": "fatal"}),
    "infections.seriousness_criteria.fatal_inconsistent.5": _F(
        "infections", "mutate",
        lambda r, c: {"serious": "Y", "seriousness_criteria": "hospitalisation", "outcome": "fatal"}),
    "infections.outcome.missing_required": _F("infections", "mutate", lambda r, c: {"outcome": None}),
    "infections.outcome.not_in_code_list.1": _F("infections", "mutate", lambda r, c: {"outcome": "resolved"}),
    "infections.event_id.duplicate_key": _F("infections", "duplicate"),

    "follow_up.patient_id.missing_required": _F("follow_up", "add", lambda r, c: {"patient_id": None}),
    "follow_up.patient_id.orphan_patient.1": _F("follow_up", "add", lambda r, c: {"patient_id": c.orphan_id}),
    "follow_up.followup_end_date.missing_required": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": None}),
    "follow_up.followup_end_date.unparseable": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": r["followup_end_date"].replace("-", "")}),
    "follow_up.followup_end_date.after_data_cut.1": _F(
        "follow_up", "mutate", lambda r, c: {"followup_end_date": _text(c.cut + timedelta(days=1))}, "alive"),
    "follow_up.end_reason.missing_required": _F("follow_up", "mutate", lambda r, c: {"end_reason": None}),
    "follow_up.end_reason.not_in_code_list.1": _F(
        "follow_up", "mutate", lambda r, c: {"end_reason": "emigrated"}, "alive"),
    "follow_up.death_date.unparseable": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": r["death_date"].replace("-", "/")}, "dead"),
    "follow_up.death_date.after_data_cut.1": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": _text(c.cut + timedelta(days=1))}, "dead"),
    "follow_up.death_date.death_inconsistent.2": _F("follow_up", "mutate", lambda r, c: {"death_date": None}, "dead"),
    "follow_up.death_date.death_inconsistent.3": _F(
        "follow_up", "mutate", lambda r, c: {"death_date": _shift(r["death_date"], 3)}, "dead"),
    "follow_up.patient_id.duplicate_key": _F("follow_up", "duplicate"),
}
_HIDDEN = ["_pos", "_reason", "_rule"]


def _inject_faults(contract: Contract, site: str, tables: dict[str, pl.DataFrame], rng: np.random.Generator,
                   data_cut: date, fmt: str, last_event: int | None = None,
                   ) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], pl.DataFrame]:
    """Break each row rule once in the site's delivery, on cohort patients only (so every
    attrition exclusion survives). Returns the delivered tables (text), the rows the quarantine
    keeps (typed), and faults.csv's rows for the site. Infections the faults add are numbered
    after `last_event` (default: the number of infections, which synthesize_study numbers 1 on)."""
    if missing := [r.rule_id for r in contract.rules if r.rule_id not in _FAULTS]:
        raise ValueError(f"synth: no fault recipe for contract rules {missing}")
    tables = _ensure_deaths(tables, data_cut, sum(f.patient == "dead" for f in _FAULTS.values()))
    clean = _truth(site, tables["patients"]["patient_id"], tables, data_cut)
    follow_up = tables["patients"].select("patient_id").join(tables["follow_up"], on="patient_id", how="left",
                                                             maintain_order="left")
    death = follow_up["death_date"]
    qualifies = {
        "any": np.ones(len(death), dtype=bool),
        "alive": death.is_null().to_numpy(),
        "dead": (death <= data_cut - timedelta(days=5)).fill_null(False).to_numpy(),
    }
    has_rows = {name: tables["patients"]["patient_id"].is_in(frame["patient_id"].implode()).to_numpy()
                for name, frame in tables.items()}
    available = (clean["in_cohort"] & ~clean["course_number_mismatch"].fill_null(True)).to_numpy()
    order = rng.permutation(len(available))
    chosen: dict[str, int] = {}
    scarce_first = {"dead": 0, "alive": 1, "any": 2}  # so that "any" does not use up the dead
    for rule in sorted(contract.rules, key=lambda r: scarce_first[_FAULTS[r.rule_id].patient]):
        fault = _FAULTS[rule.rule_id]
        ok = available & qualifies[fault.patient]
        if fault.action in ("mutate", "duplicate"):
            ok &= has_rows[fault.table]
        candidates = order[ok[order]]
        if not len(candidates):
            raise ValueError(f"site {site}: too few cohort patients for one fault per rule ({rule.rule_id} found none; "
                             f"use at least {MIN_PATIENTS_PER_SITE_WITH_FAULTS} patients per site)")
        chosen[rule.rule_id] = int(candidates[0])
        available[candidates[0]] = False

    frames = {name: frame.select(pl.all().cast(pl.String)).with_row_index("_pos").with_columns(
        pl.col("_pos").cast(pl.Float64), pl.lit(None, pl.String).alias("_reason"),
        pl.lit(None, pl.String).alias("_rule"))
        for name, frame in tables.items()}
    ids = tables["patients"]["patient_id"]
    picked = ids.gather(list(chosen.values()))
    first_rows = {name: {row["patient_id"]: row for row in frame.filter(pl.col("patient_id").is_in(picked.implode()))
                         .unique("patient_id", keep="first", maintain_order=True).to_dicts()}
                  for name, frame in frames.items()}
    removed: dict[str, list[float]] = {name: [] for name in frames}
    added: dict[str, list[dict]] = {name: [] for name in frames}
    rekey: dict[str, str] = {}
    orphan_pool = _patient_ids(site, 2 * len(_FAULTS), rng)
    orphans = iter(orphan_pool.filter(~orphan_pool.is_in(ids.implode())))
    events = frames["infections"].height if last_event is None else last_event
    for number, rule in enumerate(contract.rules):
        fault, index = _FAULTS[rule.rule_id], chosen[rule.rule_id]
        pid = ids[index]
        tag = {"_reason": rule.reason, "_rule": rule.rule_id}
        row = first_rows[fault.table].get(pid) or frames[fault.table].row(0, named=True) | {"patient_id": pid}
        events += 1
        c = _FaultContext(site, data_cut, int(tables["patients"]["birth_year"][index]), death[index], next(orphans),
                          f"{site}-I{events:08d}")
        after = row["_pos"] + 0.5 + number * 1e-4  # just after the row it was made from
        if fault.action == "mutate":
            removed[fault.table].append(row["_pos"])
            added[fault.table].append(row | fault.change(row, c) | tag)
        elif fault.action == "add":
            added[fault.table].append(row | fault.change(row, c) | tag | {"_pos": after})
        elif fault.action == "duplicate":  # every copy is quarantined
            removed[fault.table].append(row["_pos"])
            added[fault.table] += [row | tag, row | tag | {"_pos": after}]
        elif fault.action == "rekey":
            change = fault.change(row, c)
            rekey[pid] = change["patient_id"]
            removed["patients"].append(row["_pos"])
            added["patients"].append(row | change | tag)
        elif fault.action == "drop_follow_up":  # the patient is quarantined for having none
            patient_row = first_rows["patients"][pid]
            removed["follow_up"].append(row["_pos"])
            removed["patients"].append(patient_row["_pos"])
            added["patients"].append(patient_row | {"_reason": "no_follow_up", "_rule": rule.rule_id})
        else:
            raise ValueError(f"synth: unknown fault action {fault.action}")

    for name, frame in frames.items():
        frame = pl.concat([frame.filter(~pl.col("_pos").is_in(removed[name])),
                           pl.DataFrame(added[name], schema=frame.schema)]).sort("_pos")
        if name != "patients":
            frame = frame.with_columns(pl.col("patient_id").replace(rekey))
        frames[name] = frame
    frames = _cascade(frames)
    line_offset = 2 if fmt == "csv" else 1  # CSV: header is line 1; Parquet: row number
    faults = pl.concat([
        frame.with_row_index("line_number", offset=line_offset).filter(pl.col("_reason").is_not_null()).select(
            pl.lit(site).alias("site_id"), pl.lit(name).alias("table"), pl.col("line_number").cast(pl.Int64),
            pl.col("_reason").alias("reason"), pl.col("_rule").alias("rule_id"))
        for name, frame in frames.items()])
    valid = {name: _typed(contract, name, frame.filter(pl.col("_reason").is_null()).drop(_HIDDEN))
             for name, frame in frames.items()}
    return {name: frame.drop(_HIDDEN) for name, frame in frames.items()}, valid, faults


def _ensure_deaths(tables: dict[str, pl.DataFrame], data_cut: date, needed: int) -> dict[str, pl.DataFrame]:
    """Faults after death need dead cohort patients; a small site may have too few, so some
    patients followed to an earlier end die on that day (nothing of theirs is dated later)."""
    latest = data_cut - timedelta(days=10)
    clean = _truth("", tables["patients"]["patient_id"], tables, data_cut).filter(
        pl.col("in_cohort") & ~pl.col("course_number_mismatch") & (pl.col("exit_date") <= latest))
    dead = clean.filter(pl.col("death")).height
    if dead >= needed:
        return tables
    alive = clean.filter(~pl.col("death"))["patient_id"].head(needed - dead)
    dies = pl.col("patient_id").is_in(alive.implode())
    follow_up = tables["follow_up"].with_columns(
        end_reason=pl.when(dies).then(pl.lit("death")).otherwise(pl.col("end_reason")),
        death_date=pl.when(dies).then(pl.col("followup_end_date")).otherwise(pl.col("death_date")))
    return tables | {"follow_up": follow_up}


def _cascade(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """DTS section 3: a patient without a valid follow_up row is quarantined (no_follow_up); the
    other rows of a quarantined patient that break no rule of their own get patient_quarantined."""
    unmarked = pl.col("_reason").is_null()
    followed = frames["follow_up"].filter(unmarked)["patient_id"]
    patients = frames["patients"].with_columns(_reason=pl.when(
        unmarked & pl.col("patient_id").is_not_null() & ~pl.col("patient_id").is_in(followed.implode()))
        .then(pl.lit("no_follow_up")).otherwise(pl.col("_reason")))
    bad = patients.filter(~unmarked & pl.col("patient_id").is_not_null())["patient_id"]
    cascaded = {name: frame.with_columns(_reason=pl.when(unmarked & pl.col("patient_id").is_in(bad.implode()))
                                         .then(pl.lit("patient_quarantined")).otherwise(pl.col("_reason")))
                for name, frame in frames.items() if name != "patients"}
    return {"patients": patients} | cascaded


def _typed(contract: Contract, name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Text columns of valid rows to their contract types (they all parse: that is what valid means)."""
    def convert(column: str, type_name: str) -> pl.Expr:
        if type_name == "date":
            return pl.col(column).str.to_date("%Y-%m-%d")
        return pl.col(column).cast(_POLARS_TYPES[type_name])
    return frame.with_columns(convert(c.name, c.type) for c in contract.tables[name].columns)


# ---------------------------------------------------------------------------------------------
# Deliveries that must be refused whole (DTS section 3).
# ---------------------------------------------------------------------------------------------

REFUSAL_KINDS = ("missing_manifest", "missing_table", "other_study", "checksum", "row_count", "missing_column",
                 "misspelled_column", "unparseable_file", "other_site_patient", "duplicate_patient")


def make_refused_delivery(src: Path, dest: Path, kind: str) -> Path:
    """Copy the delivery folder `src` to `dest` (same folder name, which must not exist) and break
    it in one way of REFUSAL_KINDS. Except for checksum and row_count, the manifest's hashes and
    row counts are recomputed, so that the intended problem is the only one. Returns `dest`."""
    src, dest = Path(src), Path(dest)
    if kind not in REFUSAL_KINDS:
        raise ValueError(f"kind must be one of {REFUSAL_KINDS}, not {kind!r}")
    if dest.name != src.name:
        raise ValueError(f"{dest} must be named like the delivery it copies ({src.name})")
    if dest.exists():
        raise FileExistsError(f"would overwrite {dest}")
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    fmt = "csv" if "patients.csv" in manifest["files"] else "parquet"
    patients = f"patients.{fmt}"

    if kind == "missing_manifest":
        (dest / "manifest.json").unlink()
        return dest
    if kind == "missing_table":  # neither delivered nor listed
        (dest / f"edss_assessments.{fmt}").unlink()
        del manifest["files"][f"edss_assessments.{fmt}"]
    elif kind == "other_study":
        manifest["study_id"] = "ALZ-PASS-CV"
    elif kind == "missing_column":
        _rewrite_table(dest / f"infections.{fmt}", lambda frame: frame.drop("pathogen"))
    elif kind == "misspelled_column":
        _rewrite_table(dest / f"follow_up.{fmt}",
                       lambda frame: frame.rename({"followup_end_date": "follow_up_end_date"}))
    elif kind == "unparseable_file":
        _break_file(dest / patients, fmt)
    elif kind == "other_site_patient":  # one patient, in every table, under another site's prefix
        site = manifest["site_id"]
        old = _read_table(dest / patients)["patient_id"][0]
        new = ("SE02" if site == "DK01" else "DK01") + old[len(site):]
        for name in manifest["files"]:
            _rewrite_table(dest / name, lambda frame: frame.with_columns(pl.col("patient_id").replace({old: new})))
    elif kind == "duplicate_patient":
        _rewrite_table(dest / patients, lambda frame: pl.concat([frame.head(1), frame]))
        manifest["files"][patients]["rows"] += 1
    _rehash(dest, manifest)
    if kind == "checksum":  # the file changed after the manifest was written
        entry = manifest["files"][patients]
        entry["sha256"] = ("0" if entry["sha256"][0] != "0" else "1") + entry["sha256"][1:]
    elif kind == "row_count":
        manifest["files"][patients]["rows"] += 1
    _write_manifest(dest, manifest)
    return dest


def _read_table(path: Path) -> pl.DataFrame:
    """A delivered table as it is (CSV: every value as text)."""
    return pl.read_csv(path, infer_schema=False) if path.suffix == ".csv" else pl.read_parquet(path)


def _rewrite_table(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    frame = change(_read_table(path))
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def _break_file(path: Path, fmt: str) -> None:
    """CSV: a ragged first data row (one field too many). Parquet: the footer cut off."""
    data = path.read_bytes()
    if fmt == "csv":
        header, first, rest = data.split(b"\n", 2)
        path.write_bytes(b"\n".join([header, first + b',"unexpected"', rest]))
    else:
        path.write_bytes(data[: len(data) // 2])
