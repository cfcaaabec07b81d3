"""synthesize_series: a series of cumulative deliveries per site, one per data cut (SAP section 7),
consistent with each other, with a known answer for the rate and its change.

Each site's whole history is drawn once, up to the last cut, with its patients' first infusions spread
from `entry_from` to 30 days before the last cut (so that every cut brings new patients); the delivery
of a cut is that history as the site knew it at the cut:

- a patient is in it once the (planned) first infusion is on or before the cut; the patients row
  (pseudonym, sex, birth year, onset year, MS course) never changes afterwards, and every contract
  rule holds at every cut (birth_year <= year(first infusion) - 13, so <= year(cut) - 10);
- every dated row is on or before the cut: infusions, EDSS, dated diagnoses, DMT episodes started
  by then (one stopping after the cut is delivered as ongoing, stop_date missing), infections with
  onset by then;
- follow-up ends at min(true end, cut); one still followed at the cut ends there with end_reason
  `data_cut` and no death date (a death after the cut is not known yet); an infection that proves
  fatal after the cut is delivered as `not_recovered`, its seriousness criteria without `death`.

So a later cut holds every patient and every row of an earlier one (but for a DMT stop date or a fatal
outcome that became known), and follow-up ends never move back. The process drawing the infections
at rate ratio 1 does not depend on the ratio (vigil.synth.generator._series_infections), so every
delivery cut before `rate_ratio_from` is the same whatever the ratio. The odd
correction (`corrections`): from one later cut on, at one site, one serious infection delivered at the
cut before (the first serious infection of a cohort patient) is corrected away, either made
non-serious (serious N, no criteria) or removed; corrections.csv records it, so the observed counts
of that site may fall at that cut.

The rate: the serious-infection rate of the generator and the chance that a non-serious infection is
opportunistic are multiplied by `base_rate_scale` throughout, the chance that any infection is
opportunistic by `opportunistic_scale` (the defaults bring the rates of first serious and first
opportunistic infection near the SAP's reference rates, section 7), and both by `rate_ratio` from
`rate_ratio_from` on (throughout when it is None): the serious and the opportunistic hazards are
piecewise constant in calendar time, with a known ratio.

Beside the deliveries (`<out>/<site>_<cut>/`, each a complete delivery with its manifest, created four
days after its cut at 09:12 UTC so that ingest takes them in order):

  truth.parquet     data_cut, then vigil.synth.TRUTH_COLUMNS: one row per delivered patient row per
                    cut, the SAP quantities at that cut (as synthesize_study's truth.parquet);
  rates.csv         per site, outcome (serious_infection: every serious infection; opportunistic
                    _infection) and period (before / after rate_ratio_from, or all): the infections the
                    generator drew over the whole history (up to the last cut, before a fatal infection
                    ends a record), the person-years at risk and the infections expected at rate ratio 1;
                    (events / expected) after over before estimates rate_ratio, with the SE of the
                    log of sqrt(1 / events_after + 1 / events_before);
  corrections.csv   (corrections=True) the corrected event: site, the cut from which it is corrected,
                    the cut before, event and patient id, onset date, kind (the site and cut are drawn
                    by the seed; where that site has nothing to correct yet, the next cut or site);
  faults.csv        (faults=True) as synthesize_study's, with data_cut: each delivery gets faults of its
                    own, drawn afresh at each cut. The consistency above is that of the clean series:
                    faulty rows come and go, and as in synthesize_study a small site may have a few
                    patients die at their end of follow-up (faults after death need dead patients).

Every draw comes from generators seeded by (seed, site number[, cut]): the same arguments give the
same bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from vigil.contract import load_contract
from vigil.synth.faults import _inject_faults
from vigil.synth.generator import (
    _OI_SHARE_NON_SERIOUS, _OI_SHARE_SERIOUS, _day, _Hazard, _site_history, _site_sizes, _site_weights, site_ids,
)
from vigil.synth.parameters import (
    MIN_PATIENTS_PER_SITE, MIN_PATIENTS_PER_SITE_WITH_FAULTS, SERIES_BASE_RATE_SCALE, SERIES_OPPORTUNISTIC_SCALE,
    TRUTH_COLUMNS,
)
from vigil.synth.truth import _truth
from vigil.synth.writers import _created_at_text, _write_delivery

ENTRY_YEARS_BEFORE_FIRST_CUT = 2  # default entry_from: this many years (of 365 days) before the first cut
LAST_ENTRY_DAYS_BEFORE_LAST_CUT = 30  # the last planned first infusion
CORRECTION_KINDS = ("made_non_serious", "removed")


@dataclass
class SeriesResult:
    """What synthesize_series wrote."""

    cuts: list[date]
    deliveries: dict[date, list[Path]]  # per cut, one delivery folder per site (site order)
    truth: Path  # truth.parquet: data_cut + TRUTH_COLUMNS
    rates: Path  # rates.csv
    corrections: Path | None = None  # corrections=True only
    faults: Path | None = None  # faults=True only
    rows: dict[date, dict[str, int]] = field(default_factory=dict)  # data rows per cut and spec table

    @property
    def folders(self) -> list[Path]:
        """Every delivery folder, cut by cut."""
        return [folder for cut in self.cuts for folder in self.deliveries[cut]]


def check_series_arguments(data_cuts: list[date], rate_ratio: float = 1.0, rate_ratio_from: date | None = None,
                           base_rate_scale: float = SERIES_BASE_RATE_SCALE,
                           opportunistic_scale: float = SERIES_OPPORTUNISTIC_SCALE,
                           entry_from: date | None = None) -> None:
    """ValueError (one line) for arguments synthesize_series cannot use."""
    if not data_cuts:
        raise ValueError("at least one data cut")
    if not all(type(cut) is date for cut in data_cuts):
        raise ValueError("data cuts must be dates")
    if any(later <= earlier for earlier, later in zip(data_cuts, data_cuts[1:])):
        raise ValueError("data cuts must be strictly increasing: "
                         + ", ".join(cut.isoformat() for cut in data_cuts))
    for name, value in (("rate_ratio", rate_ratio), ("base_rate_scale", base_rate_scale),
                        ("opportunistic_scale", opportunistic_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a number > 0, not {value!r}")
    # The chance that an infection is opportunistic must stay a probability.
    if max(_OI_SHARE_SERIOUS) * opportunistic_scale > 1:
        raise ValueError(f"opportunistic_scale must be at most {1 / max(_OI_SHARE_SERIOUS):g}")
    if max(_OI_SHARE_NON_SERIOUS) * opportunistic_scale * base_rate_scale * max(rate_ratio, 1) > 1:
        raise ValueError(f"rate_ratio x base_rate_scale x opportunistic_scale must be at most "
                         f"{1 / max(_OI_SHARE_NON_SERIOUS):g}")
    if rate_ratio_from is not None and not (type(rate_ratio_from) is date and rate_ratio_from <= data_cuts[-1]):
        raise ValueError(f"the rate ratio's first day ({rate_ratio_from}) must be a date on or before the last "
                         f"data cut ({data_cuts[-1]})")
    last_entry = data_cuts[-1] - timedelta(days=LAST_ENTRY_DAYS_BEFORE_LAST_CUT)
    if entry_from is not None and entry_from >= last_entry:
        raise ValueError(f"entry_from must be before {last_entry}")


def synthesize_series(out: Path, data_cuts: list[date], patients: int = 2000, sites: int = 3, seed: int = 1,
                      rate_ratio: float = 1.0, rate_ratio_from: date | None = None,
                      base_rate_scale: float = SERIES_BASE_RATE_SCALE,
                      opportunistic_scale: float = SERIES_OPPORTUNISTIC_SCALE, entry_from: date | None = None,
                      corrections: bool = True, faults: bool = False, fmt: str = "csv") -> SeriesResult:
    """Write one cumulative delivery per site and data cut under `out` (`<site>_<cut>/`), plus
    truth.parquet, rates.csv, corrections.csv (when `corrections`) and faults.csv (when `faults`).

    `patients`: patients in all at the LAST cut (split over sites as synthesize_study splits them);
    earlier cuts hold those whose first infusion came by then. `rate_ratio`: the serious and
    opportunistic infection hazards are multiplied by it from `rate_ratio_from` on (throughout when
    None). `base_rate_scale`: multiplies both hazards throughout, `opportunistic_scale` the
    opportunistic one as well (defaults: calibrated to the SAP's reference rates; 1.0 and 1.0 give
    synthesize_study's rates). `entry_from`: the earliest first infusion
    (default two years before the first cut). Refuses to overwrite anything it would write."""
    contract = load_contract()
    if fmt not in contract.formats:
        raise ValueError(f"format must be one of {contract.formats}, not {fmt!r}")
    data_cuts = list(data_cuts)
    check_series_arguments(data_cuts, rate_ratio, rate_ratio_from, base_rate_scale, opportunistic_scale, entry_from)
    minimum = MIN_PATIENTS_PER_SITE_WITH_FAULTS if faults else MIN_PATIENTS_PER_SITE
    sizes = _site_sizes(patients, sites)
    if min(sizes) < minimum:
        weights = _site_weights(sites)
        needed = int(np.ceil(minimum * weights.sum() / weights[-1]))
        raise ValueError(f"{sites} sites need {needed} patients (the smallest site gets "
                         f"{weights[-1] / weights.sum():.0%} of them and needs {minimum})")
    last = data_cuts[-1]
    if entry_from is None:
        entry_from = data_cuts[0] - timedelta(days=365 * ENTRY_YEARS_BEFORE_FIRST_CUT)
    entry = (_day(entry_from), _day(last - timedelta(days=LAST_ENTRY_DAYS_BEFORE_LAST_CUT)))
    hazard = _Hazard(float(base_rate_scale), float(rate_ratio),
                     None if rate_ratio_from is None else _day(rate_ratio_from), float(opportunistic_scale))

    out = Path(out)
    names = site_ids(sites)
    targets = [out / f"{s}_{cut.isoformat()}" for cut in data_cuts for s in names]
    targets += [out / "truth.parquet", out / "rates.csv"]
    targets += [out / "corrections.csv"] if corrections else []
    targets += [out / "faults.csv"] if faults else []
    if existing := [str(p) for p in targets if p.exists()]:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)

    # The correction: which site, from which cut, of which kind (the event is chosen at the cut before).
    # Sites are drawn from that site on (wrapping round), so that where it has nothing to correct yet
    # (a small site, an early cut) the correction can move on to its next cut, or the next site.
    fix_rng = np.random.default_rng([seed, sites, 1])
    fix_site, fix_cut, fix_kind = int(fix_rng.integers(sites)), None, None
    if corrections and len(data_cuts) > 1:
        fix_cut = int(fix_rng.integers(1, len(data_cuts)))
        fix_kind = CORRECTION_KINDS[int(fix_rng.integers(len(CORRECTION_KINDS)))]

    written: dict[int, dict[str, list]] = {}
    for number in [*range(fix_site, sites), *range(fix_site)]:
        site, n = names[number], sizes[number]
        done = written[number] = {"deliveries": [], "truths": [], "fixes": [], "faults": [], "rows": []}
        rng = np.random.default_rng([seed, number])
        history, drawn = _site_history(contract, site, n, rng, last, entry, hazard)
        done["rates"] = drawn.exposure.select(pl.lit(site).alias("site_id"), pl.all())
        entry_date = pl.Series(drawn.index0, dtype=pl.Int32).cast(pl.Date)  # aligned with history["patients"]
        # Infections that faults add are numbered after every infection of the history.
        last_event = history["infections"]["event_id"].str.extract(r"([0-9]+)$").cast(pl.Int64).max() or 0
        previous = None  # (cut, tables, truth) of the cut before
        for k, cut in enumerate(data_cuts):
            if (number, k) == (fix_site, fix_cut):
                history, fix = _correct(history, previous, fix_kind, fix_rng)
                if fix is not None:
                    done["fixes"].append(fix.select(pl.lit(site).alias("site_id"), pl.lit(cut).alias("data_cut"),
                                                    pl.lit(previous[0]).alias("previous_data_cut"), pl.all()))
                elif k + 1 < len(data_cuts):
                    fix_cut = k + 1
                else:
                    fix_site, fix_cut = (number + 1) % sites, 1
            tables = _at_cut(history, entry_date, cut)
            valid = delivered = tables
            if faults:
                try:
                    delivered, valid, site_faults = _inject_faults(
                        contract, site, tables, np.random.default_rng([seed, number, 1 + k]), cut, fmt,
                        last_event)
                except ValueError as exc:
                    raise ValueError(f"data cut {cut}: {exc}") from None
                done["faults"].append(site_faults.select(pl.lit(cut).alias("data_cut"), pl.all()))
            truth = _truth(site, delivered["patients"]["patient_id"].drop_nulls(), valid, cut)
            done["truths"].append(truth.select(pl.lit(cut).alias("data_cut"), pl.all()))
            done["deliveries"].append(_write_delivery(contract, out / f"{site}_{cut.isoformat()}", site, cut,
                                                      _created_at_text(cut, None), fmt, delivered))
            done["rows"].append({name: frame.height for name, frame in delivered.items()})
            previous = (cut, tables, truth)

    in_order = [written[number] for number in range(sites)]  # everything beside the deliveries: site by site
    deliveries = {cut: [done["deliveries"][k] for done in in_order] for k, cut in enumerate(data_cuts)}
    rows = {cut: {name: sum(done["rows"][k][name] for done in in_order) for name in contract.tables}
            for k, cut in enumerate(data_cuts)}
    truths = [frame for done in in_order for frame in done["truths"]]
    rates = [done["rates"] for done in in_order]
    fixes = [frame for done in in_order for frame in done["fixes"]]
    fault_rows = [frame for done in in_order for frame in done["faults"]]
    truth_path = out / "truth.parquet"
    pl.concat(truths).select("data_cut", *TRUTH_COLUMNS).write_parquet(truth_path)
    result = SeriesResult(data_cuts, deliveries, truth_path, out / "rates.csv", rows=rows)
    pl.concat(rates).write_csv(result.rates)
    if corrections:
        result.corrections = out / "corrections.csv"
        (pl.concat(fixes) if fixes else _NO_CORRECTIONS).write_csv(result.corrections)
    if faults:
        result.faults = out / "faults.csv"
        pl.concat(fault_rows).write_csv(result.faults)
    return result


_NO_CORRECTIONS = pl.DataFrame(schema={
    "site_id": pl.String, "data_cut": pl.Date, "previous_data_cut": pl.Date, "event_id": pl.String,
    "patient_id": pl.String, "onset_date": pl.Date, "kind": pl.String})


def _at_cut(history: dict[str, pl.DataFrame], entry_date: pl.Series, cut: date) -> dict[str, pl.DataFrame]:
    """The site's clean delivery at `cut`: its history as known at the cut (module docstring)."""
    patients = history["patients"].filter(entry_date <= cut)
    known = pl.col("patient_id").is_in(patients["patient_id"].implode())
    by_cut = lambda column: pl.col(column) <= cut  # noqa: E731
    follow_up = history["follow_up"]
    censored = pl.col("followup_end_date") > cut
    dies_later = (history["infections"]
                  .join(follow_up.select("patient_id", "death_date"), on="patient_id", how="left",
                        maintain_order="left")
                  .select((pl.col("outcome") == "fatal") & (pl.col("death_date") > cut))
                  .to_series().fill_null(False))
    infections = history["infections"].with_columns(
        outcome=pl.when(dies_later).then(pl.lit("not_recovered")).otherwise("outcome"),
        seriousness_criteria=pl.when(dies_later).then(
            pl.col("seriousness_criteria").str.split("|").list.eval(pl.element().filter(pl.element() != "death"))
            .list.join("|").replace("", "life_threatening")).otherwise("seriousness_criteria"))
    return {
        "patients": patients,
        "alemtuzumab_infusions": history["alemtuzumab_infusions"].filter(known & by_cut("infusion_date")),
        "dmt_history": history["dmt_history"].filter(known & by_cut("start_date")).with_columns(
            stop_date=pl.when(pl.col("stop_date") > cut).then(None).otherwise("stop_date")),
        "comorbidities": history["comorbidities"].filter(
            known & (pl.col("diagnosis_date").is_null() | by_cut("diagnosis_date"))),
        "edss_assessments": history["edss_assessments"].filter(known & by_cut("assessment_date")),
        "infections": infections.filter(known & by_cut("onset_date")),
        "follow_up": follow_up.filter(known).with_columns(
            followup_end_date=pl.when(censored).then(pl.lit(cut)).otherwise("followup_end_date"),
            end_reason=pl.when(censored).then(pl.lit("data_cut")).otherwise("end_reason"),
            death_date=pl.when(censored).then(None).otherwise("death_date")),
    }


def _correct(history: dict[str, pl.DataFrame], previous: tuple, kind: str,
             rng: np.random.Generator) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
    """Correct away one serious infection delivered at the previous cut: the first serious infection
    of a cohort patient there, not fatal. Returns the corrected history and the correction's row."""
    _, tables, truth = previous
    firsts = truth.filter("in_cohort").select("patient_id", onset_date="first_serious_date")
    events = history["infections"].filter((pl.col("serious") == "Y") & (pl.col("outcome") != "fatal"))
    candidates = events.join(firsts, on=["patient_id", "onset_date"]).filter(
        pl.col("event_id").is_in(tables["infections"]["event_id"].implode())).sort("event_id")
    if candidates.is_empty():
        return history, None
    chosen = candidates.row(int(rng.integers(candidates.height)), named=True)
    infections = history["infections"]
    this = pl.col("event_id") == chosen["event_id"]
    if kind == "removed":
        infections = infections.filter(~this)
    else:
        infections = infections.with_columns(serious=pl.when(this).then(pl.lit("N")).otherwise("serious"),
                                             seriousness_criteria=pl.when(this).then(None)
                                             .otherwise("seriousness_criteria"))
    fix = pl.DataFrame({"event_id": [chosen["event_id"]], "patient_id": [chosen["patient_id"]],
                        "onset_date": [chosen["onset_date"]], "kind": [kind]})
    return history | {"infections": infections}, fix


def parse_data_cuts(text: str) -> list[date]:
    """'2024-12-31,2025-06-30' as dates (ValueError naming the first bad one)."""
    cuts = []
    for part in text.split(","):
        part = part.strip()
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", part):
                raise ValueError
            cuts.append(date.fromisoformat(part))
        except ValueError:
            raise ValueError(f"not a date (YYYY-MM-DD): {part!r}") from None
    return cuts

