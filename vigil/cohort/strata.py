"""The baseline strata of SAP section 3, read once from the code list codelists/strata.csv.

That file is the one place where the stratum variables, their labels, order, levels, reference
levels and cut-points are written. The warehouse gets it as codelists.strata (with the other code
lists, hashed and versioned): sql/cohort/patients.sql bins by it and sql/analysis/strata_levels.sql
lists it. Python reads the same file here: vigil.analysis.sap (STRATIFIERS, MULTIVARIABLE), the
report's labels, the synthetic data generator and the tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vigil.cohort.codelists import read_codelist

CODELIST = "strata"


@dataclass(frozen=True)
class Level:
    level: str
    order: int  # 1 = reference
    rule: str  # range, equals or missing
    lower: float | None = None  # range: inclusive
    upper: float | None = None  # range: exclusive; None = no upper bound
    value: str | None = None  # equals: the source value


@dataclass(frozen=True)
class Stratum:
    variable: str
    label: str
    variable_order: int
    sap_order: int
    multivariable: bool
    source: str  # the baseline quantity the level is derived from
    levels: tuple[Level, ...]  # in level order; empty when the levels come from the data (site)

    @property
    def from_data(self) -> bool:
        """True when the levels are the values found in the data (site), in alphabetical order."""
        return not self.levels

    @property
    def level_names(self) -> list[str]:
        return [lv.level for lv in self.levels]

    @property
    def reference(self) -> str | None:
        return self.levels[0].level if self.levels else None

    @property
    def ranges(self) -> list[Level]:
        return [lv for lv in self.levels if lv.rule == "range"]

    @property
    def missing_level(self) -> str | None:
        return next((lv.level for lv in self.levels if lv.rule == "missing"), None)

    def level_of(self, x) -> str | None:
        """The level of one source value, as the cohort SQL gives it (None: no level)."""
        if self.from_data:
            return None if x is None else str(x)
        if x is None:
            return self.missing_level
        for lv in self.levels:
            if lv.rule == "equals" and x == lv.value:
                return lv.level
            if lv.rule == "range" and lv.lower <= x and (lv.upper is None or x < lv.upper):
                return lv.level
        return None


@functools.cache
def strata() -> dict[str, Stratum]:
    """Stratum variable -> Stratum, in variable_order (the order of the tables)."""
    columns = read_codelist(CODELIST)
    records = [dict(zip(columns.spec.column_names, row)) for row in columns.rows]
    out: dict[str, Stratum] = {}
    for r in sorted(records, key=lambda r: (r["variable_order"], r["level_order"] or 0)):
        if r["variable"] not in out:
            out[r["variable"]] = Stratum(r["variable"], r["variable_label"], r["variable_order"], r["sap_order"],
                                         r["multivariable"] == "Y", r["source"], ())
        if r["rule"] != "data":
            s = out[r["variable"]]
            level = Level(r["level"], r["level_order"], r["rule"], r["lower"], r["upper"], r["value"])
            out[r["variable"]] = Stratum(s.variable, s.label, s.variable_order, s.sap_order, s.multivariable,
                                         s.source, s.levels + (level,))
    return out


def stratifiers() -> tuple[str, ...]:
    """The stratum variables in SAP section 3 order (the order of the stratifiers in the results)."""
    return tuple(s.variable for s in sorted(strata().values(), key=lambda s: s.sap_order))


def multivariable() -> tuple[str, ...]:
    """The terms of the multivariable Cox model, in variable_order."""
    return tuple(v for v, s in strata().items() if s.multivariable)


def labels() -> dict[str, str]:
    """Stratum variable -> label, in variable_order."""
    return {v: s.label for v, s in strata().items()}


def sap_levels() -> dict[str, list[str]]:
    """Stratum variable -> its levels, reference first, for the variables whose levels the SAP lists
    (not site, whose levels come from the data); in variable_order."""
    return {v: s.level_names for v, s in strata().items() if not s.from_data}
