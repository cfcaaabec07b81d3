"""synthesize_study: one delivery per site, the truth and the faults beside them."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from vigil.contract import load_contract
from vigil.synth.faults import _inject_faults, make_refused_delivery
from vigil.synth.generator import _generate_site, site_ids, _site_sizes, _site_weights
from vigil.synth.parameters import (
    MIN_PATIENTS_PER_SITE, MIN_PATIENTS_PER_SITE_WITH_FAULTS, REFUSED_DELIVERY_PATIENTS,
)
from vigil.synth.truth import _truth
from vigil.synth.writers import _created_at_text, _write_delivery


@dataclass
class SynthResult:
    """What synthesize_study wrote."""

    deliveries: list[Path]  # one acceptable delivery folder per site
    rows: dict[str, int]  # data rows per spec table, summed over `deliveries`
    truth: Path
    faults: Path | None = None  # faults=True only
    refused: list[Path] = field(default_factory=list)  # deliveries that must be refused whole (faults=True)


def synthesize_study(out: Path, patients: int = 2000, sites: int = 3, seed: int = 1, faults: bool = False,
                     fmt: str = "csv", data_cut: date = date(2026, 6, 30),
                     created_at: datetime | None = None) -> SynthResult:
    """Write one delivery per site under `out`, plus truth.parquet (and faults.csv, and one delivery
    that must be refused, when `faults`). Refuses to overwrite anything it would write."""
    contract = load_contract()
    if fmt not in contract.formats:
        raise ValueError(f"format must be one of {contract.formats}, not {fmt!r}")
    minimum = MIN_PATIENTS_PER_SITE_WITH_FAULTS if faults else MIN_PATIENTS_PER_SITE
    sizes = _site_sizes(patients, sites)
    if min(sizes) < minimum:
        weights = _site_weights(sites)
        needed = int(np.ceil(minimum * weights.sum() / weights[-1]))
        raise ValueError(f"{sites} sites need {needed} patients (the smallest site gets "
                         f"{weights[-1] / weights.sum():.0%} of them and needs {minimum})")
    out = Path(out)
    cut = data_cut.isoformat()
    stamp = _created_at_text(data_cut, created_at)
    names = site_ids(sites)
    refused_site = f"XX{sites + 1:02d}"
    targets = [out / f"{s}_{cut}" for s in names] + [out / "truth.parquet"]
    if faults:
        targets += [out / "faults.csv", out / f"{refused_site}_{cut}"]
    if existing := [str(p) for p in targets if p.exists()]:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)

    deliveries, truths, fault_rows, rows = [], [], [], dict.fromkeys(contract.tables, 0)
    for number, (site, n) in enumerate(zip(names, sizes)):
        rng = np.random.default_rng([seed, number])
        tables = _generate_site(contract, site, n, rng, data_cut)
        if faults:
            tables, valid, site_faults = _inject_faults(contract, site, tables, rng, data_cut, fmt)
            fault_rows.append(site_faults)
        else:
            valid = tables
        truths.append(_truth(site, tables["patients"]["patient_id"].drop_nulls(), valid, data_cut))
        deliveries.append(_write_delivery(contract, out / f"{site}_{cut}", site, data_cut, stamp, fmt, tables))
        for name, frame in tables.items():
            rows[name] += frame.height
    truth_path = out / "truth.parquet"
    pl.concat(truths).write_parquet(truth_path)
    result = SynthResult(deliveries, rows, truth_path)
    if faults:
        result.faults = out / "faults.csv"
        pl.concat(fault_rows).write_csv(result.faults)
        # The refused delivery is a small clean site of its own, broken after it was written.
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            rng = np.random.default_rng([seed, sites])
            good = _write_delivery(contract, Path(scratch) / f"{refused_site}_{cut}", refused_site, data_cut, stamp,
                                   fmt, _generate_site(contract, refused_site, REFUSED_DELIVERY_PATIENTS, rng,
                                                       data_cut))
            result.refused.append(make_refused_delivery(good, out / good.name, "checksum"))
    return result
