"""Fixed inputs for the R reference of the network's pooling estimators (tests/reference/network_reference.R).

Run from the project root:  python tests/reference/make_network_datasets.py tests/reference/data

The network's site results come from the existing patient-level datasets (ordinary, few_events,
edge_cases: each has a `site` column). What they cannot give is the corners of the meta-analysis
itself, so this script writes them as (yi, vi) per site, the input of metafor::rma(yi, vi):

  network_meta_cases.csv  case, site, yi, vi
    one_site         k = 1: metafor sets tau2 = 0, Q = 0 (p 1), I2 = 0, H2 = 1
    two_sites        k = 2, heterogeneous (Q > 1: tau2 > 0)
    equal_estimates  the same yi at every site: Q = 0 up to rounding, tau2 = 0, I2 = 0
    below_df         Q < k - 1: DerSimonian-Laird's tau2 is negative before its truncation at 0
    one_dominant     one site with a variance 5,000 times smaller than the others'
    heterogeneous    12 sites drawn with a fixed seed: yi ~ N(0.3, 0.4^2), vi ~ U(0.005, 0.2)

Values are written with Python's shortest round-trip repr, so R reads the same doubles.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl


def meta_cases() -> pl.DataFrame:
    rng = np.random.default_rng(20261203)
    k = 12
    cases = {
        "one_site": ([0.4], [0.09]),
        "two_sites": ([0.0, 0.9], [0.02, 0.03]),
        "equal_estimates": ([-0.25, -0.25, -0.25], [0.01, 0.04, 0.2]),
        "below_df": ([0.10, 0.12, 0.08, 0.11], [0.05, 0.08, 0.06, 0.1]),
        "one_dominant": ([1.2, 0.7, 0.9], [1e-4, 0.5, 0.3]),
        "heterogeneous": (rng.normal(0.3, 0.4, k).round(6).tolist(), rng.uniform(0.005, 0.2, k).round(6).tolist()),
    }
    rows = [(case, f"S{i + 1:02d}", float(y), float(v))
            for case, (yi, vi) in cases.items() for i, (y, v) in enumerate(zip(yi, vi))]
    return pl.DataFrame(rows, schema=["case", "site", "yi", "vi"], orient="row")


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = meta_cases()
    # repr: the shortest string that reads back as the same double, in R as in Python
    lines = ["case,site,yi,vi"] + [f"{c},{s},{y!r},{v!r}" for c, s, y, v in frame.iter_rows()]
    (out / "network_meta_cases.csv").write_text("\n".join(lines) + "\n")
    print(f"network_meta_cases.csv: {frame.height} rows, {frame['case'].n_unique()} cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/reference/data")
