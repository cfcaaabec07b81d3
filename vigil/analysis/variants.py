"""Sensitivity analyses (SAP A12) as named variants of a run.

A variant is computed in the same run (the same transaction, the same deliveries) as the SAP's primary
analysis, `main`, and written to the same results tables with its name in the column `variant`; it is
described, with every parameter it changed, in results.variants. A variant either builds the cohort
again with some of its parameters changed (vigil.cohort.COHORT_PARAMETERS: the course gap, censoring
at a switch of DMT), or leaves one site's patients out of the main analysis datasets. It computes only
the analyses the SAP names for it:

  censor-at-switch     A12(a)  follow-up also ends at the start of any other DMT after index: A1, A5
  leave-out-<site>     A12(b)  each site left out in turn (the sensitivity leave-one-site-out): A1, A5
  course-gap-60        A12(c)  courses with a 60-day instead of a 30-day gap: A2 and A9

(A1 = the overall rate of the primary outcome, A5 = its multivariable Cox model.) A statistician's
own variant is a `Variant` with a name of its own, passed to vigil.analysis.runs.analyse:

    from vigil.analysis.variants import Variant
    analyse(con, variants=[Variant("course-gap-45", "courses with a 45-day gap",
                                   analyses=("A2", "A9"), cohort={"course_gap_days": 45})])

It is recorded like the SAP's (sensitivity = custom); a variant without a name, with the name of
another, or with a parameter the cohort SQL does not take is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAIN = "main"
CUSTOM = "custom"
# The SAP A12 sensitivity analyses, as `vigil analyse --variant` names them.
SENSITIVITY_ANALYSES = ("censor-at-switch", "leave-one-site-out", "course-gap-60")
# What a variant can compute (SAP 4): the overall rate of the primary outcome, risk windows, the
# multivariable Cox model of the primary outcome, rate ratios by risk window.
VARIANT_ANALYSES = ("A1", "A2", "A5", "A9")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    analyses: tuple[str, ...]
    cohort: dict = field(default_factory=dict)   # changes to vigil.cohort.COHORT_PARAMETERS
    leave_out_site: str | None = None
    sensitivity: str = CUSTOM

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name == MAIN:
            raise ValueError(f"variant name {self.name!r}: a lower-case name of letters, digits, - and _ "
                             f"(at most 63), other than {MAIN!r}")
        if not self.description or not isinstance(self.description, str):
            raise ValueError(f"variant {self.name}: a description is required")
        unknown = set(self.analyses) - set(VARIANT_ANALYSES)
        if not self.analyses or unknown:
            raise ValueError(f"variant {self.name}: analyses must be some of {list(VARIANT_ANALYSES)}, "
                             f"not {sorted(unknown) or 'none'}")
        from vigil.cohort import cohort_parameters  # here: the CLI builds its choices from this module

        cohort_parameters(self.cohort)  # refuses a parameter the cohort SQL does not take
        if self.cohort and self.leave_out_site:
            raise ValueError(f"variant {self.name}: either changes the cohort or leaves a site out, not both")

    @property
    def rebuilds_cohort(self) -> bool:
        return bool(self.cohort)

    def parameters(self) -> dict:
        """Every parameter that changes a number of the variant (recorded in results.variants)."""
        from vigil.cohort import cohort_parameters

        return {"cohort": cohort_parameters(self.cohort), "leave_out_site": self.leave_out_site}


def sensitivity_variants(names, sites: list[str]) -> list[Variant]:
    """The SAP A12 variants named (each of SENSITIVITY_ANALYSES); leave-one-site-out gives one variant
    per site of `sites` (the cohort's: none when it has a single site, nothing would be left)."""
    unknown = [n for n in names if n not in SENSITIVITY_ANALYSES]
    if unknown:
        raise ValueError(f"unknown sensitivity analysis {unknown[0]!r}: one of {', '.join(SENSITIVITY_ANALYSES)}")
    variants = []
    for name in SENSITIVITY_ANALYSES:  # SAP order, each once
        if name not in names:
            continue
        if name == "censor-at-switch":
            variants.append(Variant(name, "Follow-up also ends at the start of any other DMT after the index date "
                                          "(SAP A12(a)).", ("A1", "A5"), cohort={"censor_at_switch": True},
                                    sensitivity=name))
        elif name == "course-gap-60":
            variants.append(Variant(name, "Courses defined with a 60-day instead of a 30-day gap between infusions "
                                          "(SAP A12(c)).", ("A2", "A9"), cohort={"course_gap_days": 60},
                                    sensitivity=name))
        elif len(sites) > 1:
            variants += [Variant(f"leave-out-{site.lower()}", f"Site {site} left out (SAP A12(b)).", ("A1", "A5"),
                                 leave_out_site=site, sensitivity=name) for site in sites]
    return variants


def check_unique(variants: list[Variant]) -> None:
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variant name(s) given twice: {', '.join(repeated)}")
