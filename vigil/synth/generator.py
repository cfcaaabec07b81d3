"""Drawing the sites, their patients and every table of a clean delivery (vectorised per site: numpy
draws, polars frames, no loop over patients)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from vigil.contract import Contract
from vigil.synth.parameters import (
    _ALL_TERMS, BASELINE_SERIOUS_RATE, _CATEGORIES, _CATEGORY_FIRST, _CATEGORY_SIZE, _CHARLSON_FORMS,
    _CHARLSON_FREQUENCY, CHARLSON_HIERARCHY, _CODE_FORM_SHARES, _COURSE_NUMBER_ERRORS, _DATA_CUT, _DEATH,
    DMT_AFTER_INDEX, DMT_BEFORE_INDEX, EARLY_WINDOW_DAYS, EARLY_WINDOW_RATE_RATIO, END_REASONS,
    _ENDS_BEFORE_INDEX, _EPOCH, _EXCLUSION_SHARES, FATAL_CRITERIA, HIGH_EFFICACY_DMT, MS_COURSES,
    _NO_INFUSION, NON_CHARLSON_CODES, NON_SERIOUS_OUTCOMES, NON_SERIOUS_RATE, NON_SERIOUS_TERMS, _NORMAL,
    _NOT_RRMS, OPPORTUNISTIC_TERMS, OPPORTUNISTIC_WINDOW_DAYS, _OTHER_FORMS, PATHOGENS, _POLARS_TYPES,
    SERIOUS_CRITERIA, SERIOUS_INFECTION_HAZARD_RATIOS, SERIOUS_OUTCOMES, SERIOUS_TERMS, SEXES,
    SITE_COUNTRIES, _STRATUM_COLUMNS, _TERM_CODES, _UNDER_18,
)
from vigil.synth.truth import _baseline


def site_ids(sites: int) -> list[str]:
    """DK01, SE02, NO03, ...: deterministic site ids."""
    return [f"{SITE_COUNTRIES[i % len(SITE_COUNTRIES)]}{i + 1:02d}" for i in range(sites)]


def _site_weights(sites: int) -> np.ndarray:
    """Sites of unequal size (weights 1, 1/1.3, 1/1.6, ...), largest first."""
    if sites < 1:
        raise ValueError("at least one site")
    return 1 / (1 + 0.3 * np.arange(sites))


def _site_sizes(patients: int, sites: int) -> list[int]:
    """Patients per site; the sizes sum to `patients`."""
    weights = _site_weights(sites)
    sizes = np.floor(patients * weights / weights.sum()).astype(int)
    sizes[: patients - sizes.sum()] += 1
    return sizes.tolist()


# ---------------------------------------------------------------------------------------------
# Day arithmetic on numpy arrays: days since 1970-01-01.
# ---------------------------------------------------------------------------------------------

def _day(d: date) -> int:
    return (d - _EPOCH).days


def _year_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _jan1(years: np.ndarray) -> np.ndarray:
    return (np.asarray(years) - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)


def _dates(days: np.ndarray) -> pl.Series:
    """Days (float NaN = missing) as a polars Date series."""
    return pl.Series(np.asarray(days, dtype=np.float64), nan_to_null=True).cast(pl.Int32).cast(pl.Date)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts[i] rows per owner i: each row's owner and its rank within the owner."""
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, rank


def _weights(labels: list[str], frequency: dict[str, float]) -> np.ndarray:
    w = np.array([frequency.get(label, 0) for label in labels], dtype=float)
    return w / w.sum()


_CATEGORY_WEIGHTS = _weights(_CATEGORIES, _CHARLSON_FREQUENCY)


def _pick(labels, index: np.ndarray) -> pl.Series:
    """labels[index] as a string series; index -1 = missing."""
    options = pl.Series(list(labels) + [None], dtype=pl.String)
    return options.gather(np.where(index < 0, len(labels), index))


# ---------------------------------------------------------------------------------------------
# One site: patients first, then every table from them (all vectorised).
# ---------------------------------------------------------------------------------------------

@dataclass
class _Site:
    """Patient-level draws of one site, arrays aligned with the patients table."""

    site: str
    cut: int  # data cut as a day number
    ids: pl.Series
    group: np.ndarray  # _NORMAL, or which attrition exclusion the patient is made for
    index0: np.ndarray  # planned first infusion day (the index date unless a fault moves it)
    birth_year: np.ndarray
    onset_year: np.ndarray  # float, NaN = missing
    sex: np.ndarray
    ms_course: np.ndarray
    end: np.ndarray  # followup_end_date
    end_reason: np.ndarray  # index into END_REASONS
    course_start: np.ndarray  # (n, 4) days after index0, -1 = no such course
    course_error: np.ndarray  # added to the site's course_number of the last course (usually 0)

    exposure: pl.DataFrame | None = None  # set by _infections when it draws under a _Hazard

    @property
    def n(self) -> int:
        return len(self.index0)


@dataclass(frozen=True)
class _Hazard:
    """How a series of data cuts changes the infection hazards of the generator (vigil.synth.cuts):
    the serious-infection rate and the chance that a non-serious infection is opportunistic are
    multiplied by `scale` throughout and by `ratio` as well from day `from_day` on (None: throughout),
    the chance that any infection is opportunistic by `opportunistic` throughout. So the serious
    hazard is scale x ratio(t) times synthesize_study's, the opportunistic hazard scale x ratio(t) x
    opportunistic times its: both piecewise constant in calendar time, with the same known ratio
    (drawn so that nothing before from_day depends on the ratio: _series_infections)."""

    scale: float = 1.0
    ratio: float = 1.0
    from_day: int | None = None  # day number of the first day at the raised rate
    opportunistic: float = 1.0


def _generate_site(contract: Contract, site: str, n: int, rng: np.random.Generator,
                   data_cut: date) -> dict[str, pl.DataFrame]:
    """The seven tables of one site's clean delivery, typed, columns in contract order."""
    return _site_history(contract, site, n, rng, data_cut)[0]


def _site_history(contract: Contract, site: str, n: int, rng: np.random.Generator, data_cut: date,
                  entry: tuple[int, int] | None = None,
                  hazard: _Hazard | None = None) -> tuple[dict[str, pl.DataFrame], _Site]:
    """_generate_site's tables and the patient-level draws behind them. `entry` (first and last day
    of the planned first infusions) and `hazard` are for a series of data cuts; without them the
    draws are exactly those of _generate_site."""
    s = _draw_patients(site, n, rng, _day(data_cut), entry)
    columns = {
        "alemtuzumab_infusions": _infusions(s),
        "dmt_history": _dmt_history(s, rng),
        "comorbidities": _comorbidities(s, rng),
        "edss_assessments": _edss_assessments(s, rng),
    }
    columns["patients"] = {"patient_id": s.ids, "sex": _pick(SEXES, s.sex), "birth_year": s.birth_year,
                           "ms_onset_year": pl.Series(s.onset_year, nan_to_null=True).cast(pl.Int64),
                           "ms_course": _pick(MS_COURSES, s.ms_course)}
    # The serious-infection hazard depends on the strata, computed the SAP way from these rows.
    strata = _baseline({name: pl.DataFrame(c) for name, c in columns.items()})
    hazard_ratio = np.ones(n)
    for variable, ratios in SERIOUS_INFECTION_HAZARD_RATIOS.items():
        level = strata[_STRATUM_COLUMNS[variable]]
        hazard_ratio *= level.replace_strict(ratios, default=1.0, return_dtype=pl.Float64).fill_null(1.0).to_numpy()
    columns["infections"] = _infections(s, hazard_ratio, rng, hazard)
    _end_rows_at_death(s, columns)
    dead = s.end_reason == _DEATH
    columns["follow_up"] = {"patient_id": s.ids, "followup_end_date": _dates(s.end),
                            "end_reason": _pick(END_REASONS, s.end_reason),
                            "death_date": _dates(np.where(dead, s.end, np.nan))}
    return {name: pl.DataFrame({c.name: columns[name][c.name] for c in table.columns})
            .cast({c.name: _POLARS_TYPES[c.type] for c in table.columns})
            for name, table in contract.tables.items()}, s


def _patient_ids(site: str, n: int, rng: np.random.Generator) -> pl.Series:
    """<site>-<16 upper-case hex>, unique."""
    values = rng.integers(0, 2**64, n, dtype=np.uint64)
    while len(np.unique(values)) < n:  # collisions are rare: redraw the repeats
        _, first = np.unique(values, return_index=True)
        repeat = np.setdiff1d(np.arange(n), first)
        values[repeat] = rng.integers(0, 2**64, len(repeat), dtype=np.uint64)
    nibbles = (values[:, None] >> np.arange(60, -1, -4, dtype=np.uint64)) & np.uint64(15)
    hex16 = np.frombuffer(b"0123456789ABCDEF", dtype="S1")[nibbles].view("S16").ravel().astype("U16")
    return f"{site}-" + pl.Series("patient_id", hex16)


def _draw_patients(site: str, n: int, rng: np.random.Generator, cut: int,
                   entry: tuple[int, int] | None = None) -> _Site:
    if entry is None:
        last_index = min(_day(date(2025, 12, 31)), cut - 180)
        first_index = min(_day(date(2014, 1, 1)), last_index - 4 * 365)
    else:
        first_index, last_index = entry
    index0 = rng.integers(first_index, last_index + 1, n)

    # Exact numbers of patients who fall out at each attrition step, disjoint.
    group = np.full(n, _NORMAL)
    order = rng.permutation(n)
    taken = 0
    for step, share in _EXCLUSION_SHARES.items():
        k = max(1, round(n * share))
        group[order[taken: taken + k]] = step
        taken += k

    age = np.clip(np.rint(rng.normal(37, 10, n)), 18, 75).astype(np.int64)
    minors = group == _UNDER_18
    age[minors] = rng.integers(13, 18, minors.sum())
    birth_year = _year_of(index0) - age
    onset_age = np.minimum(np.clip(np.rint(rng.normal(28, 7, n)), 12, None), age)
    onset_year = np.where(rng.random(n) < 0.08, np.nan, birth_year + onset_age)
    sex = rng.choice(3, n, p=[0.70, 0.29, 0.01])
    ms_course = np.zeros(n, dtype=np.int64)
    other_course = group == _NOT_RRMS
    ms_course[other_course] = rng.choice([1, 2, 3], other_course.sum(), p=[0.6, 0.2, 0.2])

    # Follow-up ends at the first of loss, withdrawal, other, death (rates per year), or the cut.
    waits = rng.exponential(365.25 / np.array([0.02, 0.01, 0.003, 0.003]), (n, 4))
    end = index0 + 4 + np.floor(waits.min(axis=1)).astype(np.int64)  # course 1 is always completed
    censored = end >= cut
    end = np.where(censored, cut, end)
    end_reason = np.where(censored, _DATA_CUT, waits.argmin(axis=1))
    early = group == _ENDS_BEFORE_INDEX
    end[early] = index0[early] - rng.integers(1, 366, early.sum())
    end_reason[early] = rng.choice(3, early.sum())  # lost, withdrawal or other: never death

    # Courses: 1 at index (5 days), 2 about 12 months later (3 days), some 3 and 4 >= 12 months
    # after the previous; a course is given only if it fits before the end of follow-up.
    span = end - index0
    second = np.maximum(335, np.rint(rng.normal(365, 20, n)))
    third = second + 365 + np.rint(rng.exponential(300, n))
    fourth = third + 365 + np.rint(rng.exponential(300, n))
    wanted = rng.random((n, 3)) < [0.9, 0.25, 0.3]
    course_start = np.full((n, 4), -1, dtype=np.int64)
    course_start[:, 0] = np.where(group == _NO_INFUSION, -1, 0)
    given = course_start[:, 0] == 0
    for c, start in enumerate((second, third, fourth), start=1):
        given = given & wanted[:, c - 1] & (start + 2 <= span)
        course_start[given, c] = start[given]

    # For a few patients the site records the last course's number wrong (the cohort layer must notice).
    course_error = np.zeros(n, dtype=np.int64)
    candidates = np.flatnonzero((group == _NORMAL) & (course_start[:, 1] >= 0))
    wrong = rng.choice(candidates, min(len(candidates), max(1, round(n * _COURSE_NUMBER_ERRORS))), replace=False)
    course_error[wrong] = rng.choice([-1, 1], len(wrong))
    return _Site(site, cut, _patient_ids(site, n, rng), group, index0, birth_year, onset_year, sex, ms_course,
                 end, end_reason, course_start, course_error)


def _infusions(s: _Site) -> dict:
    patient, course = np.nonzero(s.course_start >= 0)  # patient-major, courses in order
    length = np.where(course == 0, 5, 3)
    last_course = (s.course_start >= 0).sum(axis=1) - 1
    recorded = course + 1 + np.where(course == last_course[patient], s.course_error[patient], 0)
    row, day = _expand(length)
    return {"patient_id": s.ids.gather(patient[row]),
            "infusion_date": _dates(s.index0[patient[row]] + s.course_start[patient[row], course[row]] + day),
            "course_number": recorded[row], "dose_mg": np.full(len(row), 12.0)}


def _dmt_history(s: _Site, rng: np.random.Generator) -> dict:
    codes = list(DMT_BEFORE_INDEX)
    n = s.n
    # Before index: 0-3 episodes (codes may repeat by chance), a restart of the first code for some.
    n_before = rng.choice(4, n, p=[0.30, 0.35, 0.22, 0.13])
    owner, _ = _expand(n_before)
    code = rng.choice(len(codes), len(owner), p=_weights(codes, DMT_BEFORE_INDEX))
    restart = np.flatnonzero((n_before > 0) & (rng.random(n) < 0.1))
    first_episode = np.cumsum(n_before) - n_before
    owner = np.concatenate([owner, restart])
    code = np.concatenate([code, code[first_episode[restart]]])
    reach = np.minimum(5000, s.index0 - _jan1(s.birth_year + 12))[owner]  # not before age 12
    start = s.index0[owner] - rng.integers(60, reach + 1)
    stop = np.minimum(start + rng.integers(30, 2500, len(owner)), s.index0[owner] - 1 - rng.integers(0, 90, len(owner)))
    stop = np.where(rng.random(len(owner)) < 0.05, np.nan, np.maximum(stop, start))

    # Started on the index date itself: not "before index", so it must not count.
    on_index = np.flatnonzero(rng.random(n) < 0.01)
    he_codes = [codes.index(c) for c in sorted(HIGH_EFFICACY_DMT)]
    # After index (switching after alemtuzumab): must not count either.
    after = np.flatnonzero((rng.random(n) < 0.2) & (s.end - s.index0 > 400))
    after_start = s.index0[after] + 400 + np.floor(rng.random(len(after)) * (s.end[after] - s.index0[after] - 399))
    after_stop = after_start + np.floor(rng.random(len(after)) * (s.end[after] - after_start + 1))
    after_codes = list(DMT_AFTER_INDEX)

    owner = np.concatenate([owner, on_index, after])
    code_text = pl.concat([_pick(codes, code), _pick(codes, rng.choice(he_codes, len(on_index))),
                           _pick(after_codes, rng.choice(len(after_codes), len(after),
                                                         p=_weights(after_codes, DMT_AFTER_INDEX)))])
    start = np.concatenate([start, s.index0[on_index], after_start])
    stop = np.concatenate([stop, np.full(len(on_index), np.nan),
                           np.where(rng.random(len(after)) < 0.6, np.nan, after_stop)])
    order = np.lexsort((start, owner))
    return {"patient_id": s.ids.gather(owner[order]), "dmt_code": code_text.gather(order),
            "start_date": _dates(start[order]), "stop_date": _dates(stop[order])}


def _comorbidities(s: _Site, rng: np.random.Generator) -> dict:
    n = s.n
    first_day = _jan1(s.birth_year)

    def history(owner: np.ndarray, undated: float, on_index: float) -> np.ndarray:
        """Undated ("history of"), on the index date, or some day before it (not before birth)."""
        reach = np.minimum(6000, s.index0[owner] - first_day[owner])
        back = 1 + np.floor(rng.random(len(owner)) * reach)
        u = rng.random(len(owner))
        return np.where(u < undated, np.nan, s.index0[owner] - np.where(u < undated + on_index, 0, back))

    def written(forms: np.ndarray, first: np.ndarray, size: np.ndarray) -> pl.Series:
        """One of `size` codes from row `first` on, each in a form drawn by _CODE_FORM_SHARES."""
        row = first + np.floor(rng.random(len(first)) * size).astype(np.int64)
        return pl.Series(forms[row, rng.choice(5, len(row), p=_CODE_FORM_SHARES)], dtype=pl.String)

    owners, days, texts = [], [], []
    # Charlson diagnoses up to the index date, or undated: these count.
    owner, _ = _expand(rng.choice(4, n, p=[0.62, 0.22, 0.10, 0.06]))
    category = rng.choice(len(_CATEGORIES), len(owner), p=_CATEGORY_WEIGHTS)
    # Both the mild and the severe form for some: only the severe one counts.
    both = np.flatnonzero(rng.random(n) < 0.02)
    pair = rng.choice(list(CHARLSON_HIERARCHY.items()), len(both))
    pair_category = np.array([_CATEGORIES.index(c) for c in pair.ravel()], dtype=np.int64)
    owner = np.concatenate([owner, np.repeat(both, 2)])
    category = np.concatenate([category, pair_category])
    owners.append(owner)
    days.append(history(owner, undated=0.2, on_index=0.03))
    # Charlson diagnoses after the index date: these must not count.
    later = np.flatnonzero((rng.random(n) < 0.12) & (s.end > s.index0))
    owners.append(later)
    days.append(s.index0[later] + 1 + np.floor(rng.random(len(later)) * (s.end[later] - s.index0[later])))
    category = np.concatenate([category, rng.choice(len(_CATEGORIES), len(later),
                                                    p=_CATEGORY_WEIGHTS)])
    texts.append(written(_CHARLSON_FORMS, _CATEGORY_FIRST[category], _CATEGORY_SIZE[category]))
    # Outside the Charlson index: G35 (row 0) for most, other diagnoses before and after index.
    ms = np.flatnonzero(rng.random(n) < 0.7)
    other, _ = _expand(rng.choice(3, n, p=[0.6, 0.3, 0.1]))
    reach = 3000 + np.maximum(s.end[other] - s.index0[other], 0)  # from 3000 days before index to the end
    other_day = s.index0[other] - 3000 + np.floor(rng.random(len(other)) * (reach + 1))
    other_day = np.where(rng.random(len(other)) < 0.3, np.nan, np.maximum(other_day, first_day[other]))
    owners += [ms, other]
    days += [history(ms, undated=0.5, on_index=0.0), other_day]
    texts += [written(_OTHER_FORMS, np.zeros(len(ms), dtype=np.int64), np.ones(len(ms), dtype=np.int64)),
              written(_OTHER_FORMS, np.ones(len(other), dtype=np.int64),
                      np.full(len(other), len(NON_CHARLSON_CODES) - 1))]

    owner, day, text = np.concatenate(owners), np.concatenate(days), pl.concat(texts)
    keep = np.isnan(day) | (day <= s.end[owner])  # nothing dated after follow-up ended
    order = np.lexsort((np.nan_to_num(day, nan=-1e9), owner))
    order = order[keep[order]]
    return {"patient_id": s.ids.gather(owner[order]), "icd10_code": text.gather(order),
            "diagnosis_date": _dates(day[order])}


def _edss_assessments(s: _Site, rng: np.random.Generator) -> dict:
    """EDSS in half points x2 (0, 2..20; 1 = 0.5 is not a score). Baseline patterns: latest in
    [index-365, index] (82%), only in (index, index+30] (6%), none in either window (12%)."""
    n = s.n
    level = rng.choice(3, n, p=[0.50, 0.37, 0.13])
    scores = [np.array([0, 2, 3, 4, 5]), np.arange(6, 12), np.arange(12, 18)]
    value = np.zeros(n, dtype=np.int64)
    for lvl, options in enumerate(scores):
        value[level == lvl] = rng.choice(options, (level == lvl).sum())

    def near(v: np.ndarray, low: int, high: int) -> np.ndarray:
        shifted = np.clip(v + rng.integers(low, high + 1, len(v)), 0, 20)
        return np.where(shifted == 1, 2, shifted)

    pattern = rng.choice(3, n, p=[0.82, 0.06, 0.12])
    every = np.arange(n)
    u = rng.random(n)
    back = np.where(u < 0.03, 0, np.where(u < 0.06, 365, rng.integers(0, 366, n)))  # both window edges
    earlier = (pattern == 0) & (back < 365) & (rng.random(n) < 0.4)
    back2 = back + 1 + np.floor(rng.random(n) * (365 - back)).astype(np.int64)  # in (back, 365]
    forward = np.where(rng.random(n) < 0.1, 30, rng.integers(1, 31, n))
    outside = (pattern == 2) & (rng.random(n) < 0.5)  # just after the window: index+31..60
    older = rng.random(n) < 0.5
    years = np.maximum(0, (s.end - s.index0) // 365)
    yearly, k = _expand(years)
    yearly_keep = rng.random(len(yearly)) < 0.35
    yearly, k = yearly[yearly_keep], k[yearly_keep]

    parts = [
        (every[pattern == 0], (s.index0 - back)[pattern == 0], value[pattern == 0]),
        (every[earlier], (s.index0 - back2)[earlier], near(value[earlier], -2, 0)),
        (every[pattern == 1], (s.index0 + forward)[pattern == 1], value[pattern == 1]),
        (every[outside], (s.index0 + 31 + rng.integers(0, 30, n))[outside], value[outside]),
        (every[older], (s.index0 - 366 - rng.integers(0, 1500, n))[older], near(value[older], -2, 0)),
        (yearly, s.index0[yearly] + 365 * (k + 1) + rng.integers(-30, 31, len(yearly)), near(value[yearly], -2, 3)),
    ]
    owner = np.concatenate([p[0] for p in parts])
    day = np.concatenate([p[1] for p in parts])
    half_points = np.concatenate([p[2] for p in parts])
    order = np.lexsort((day, owner))
    order = order[day[order] <= s.end[owner[order]]]
    return {"patient_id": s.ids.gather(owner[order]), "assessment_date": _dates(day[order]),
            "edss": half_points[order] / 2}


# The chance that an infection is opportunistic (serious or not: within OPPORTUNISTIC_WINDOW_DAYS of its
# course's start, or later), that a serious one is fatal (opportunistic or not), and the days from the
# onset of a fatal infection to the death (0 to _DEATH_DELAY_DAYS - 1).
_OI_SHARE_SERIOUS = (0.2, 0.04)
_OI_SHARE_NON_SERIOUS = (0.02, 0.004)
_FATAL_SHARE = (0.06, 0.01)
_DEATH_DELAY_DAYS = 15


@dataclass
class _Segments:
    """Stretches of follow-up with constant infection rates: per course given, its early window and the
    rest until the next course or the end. Days are counted from the patient's index0."""

    patient: np.ndarray
    start: np.ndarray  # float
    length: np.ndarray  # float, days
    course_start: np.ndarray  # float
    early: np.ndarray  # bool

    def part(self, low: np.ndarray, high: np.ndarray) -> _Segments:
        """Each segment cut to [low, high) (days from index0, per segment)."""
        start = np.clip(low, self.start, self.start + self.length)
        stop = np.clip(high, start, self.start + self.length)
        return _Segments(self.patient, start, stop - start, self.course_start, self.early)


def _segments(s: _Site) -> _Segments:
    horizon = (s.end - s.index0 + 1).astype(float)  # person-time in days, exit day included
    given = (s.course_start >= 0) & (horizon > 0)[:, None]
    next_start = np.column_stack([np.where(s.course_start[:, c + 1] >= 0, s.course_start[:, c + 1], horizon)
                                  for c in range(3)] + [horizon])
    patient, course = np.nonzero(given)
    start = s.course_start[patient, course].astype(float)
    stop = next_start[patient, course]
    early_end = np.minimum(start + EARLY_WINDOW_DAYS + 1, stop)
    return _Segments(np.concatenate([patient, patient]), np.concatenate([start, early_end]),
                     np.concatenate([early_end - start, stop - early_end]), np.concatenate([start, start]),
                     np.repeat([True, False], len(patient)))


def _rates(seg: _Segments, hazard_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Serious and non-serious infections per person-year in each segment."""
    serious = BASELINE_SERIOUS_RATE * hazard_ratio[seg.patient] * np.where(seg.early, EARLY_WINDOW_RATE_RATIO, 1)
    return serious, NON_SERIOUS_RATE * np.where(seg.early, 1.5, 1.0)


def _draw(rng: np.random.Generator, seg: _Segments, rate: np.ndarray, serious: bool) -> tuple[np.ndarray, ...]:
    """A Poisson process at `rate` over each segment: events' patient, day (from index0), days since
    their course's start, seriousness."""
    segment = np.repeat(np.arange(len(seg.start)), rng.poisson(rate * seg.length / 365.25))
    offset = np.floor(seg.start[segment] + rng.random(len(segment)) * seg.length[segment]).astype(np.int64)
    return (seg.patient[segment], offset, offset - seg.course_start[segment].astype(np.int64),
            np.full(len(segment), serious))


def _kinds(rng: np.random.Generator, serious: np.ndarray, since_course: np.ndarray,
           share_factor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each event: opportunistic or not (the share times `share_factor`), its term, fatal or not."""
    m = len(serious)
    early = since_course <= OPPORTUNISTIC_WINDOW_DAYS
    share = np.where(serious, np.where(early, *_OI_SHARE_SERIOUS), np.where(early, *_OI_SHARE_NON_SERIOUS))
    if share_factor is not None:
        share = share * share_factor
    opportunistic = rng.random(m) < share
    term = np.zeros(m, dtype=np.int64)
    for chosen, frequency in ((opportunistic, OPPORTUNISTIC_TERMS), (serious & ~opportunistic, SERIOUS_TERMS),
                              (~serious & ~opportunistic, NON_SERIOUS_TERMS)):
        term[chosen] = rng.choice(len(_ALL_TERMS), chosen.sum(), p=_weights(_ALL_TERMS, frequency))
    fatal = serious & (rng.random(m) < np.where(opportunistic, *_FATAL_SHARE))
    return opportunistic, term, fatal


def _details(rng: np.random.Generator, serious: np.ndarray, opportunistic: np.ndarray, term: np.ndarray,
             fatal: np.ndarray) -> dict:
    """The infections table's columns after onset_date, for events of these kinds."""
    m = len(serious)
    terms = _pick(_ALL_TERMS, term)
    case = rng.random(m)  # sites write some study terms in other cases: matching is case-insensitive
    terms = pl.select(pl.when(pl.lit(opportunistic & (case < 0.05))).then(terms.str.to_lowercase())
                      .when(pl.lit(opportunistic & (case > 0.98))).then(terms.str.to_uppercase())
                      .otherwise(terms)).to_series()
    criteria = np.where(fatal, rng.choice(list(FATAL_CRITERIA), m, p=_weights(list(FATAL_CRITERIA), FATAL_CRITERIA)),
                        rng.choice(list(SERIOUS_CRITERIA), m, p=_weights(list(SERIOUS_CRITERIA), SERIOUS_CRITERIA)))
    outcome = np.where(
        fatal, "fatal",
        np.where(serious, rng.choice(list(SERIOUS_OUTCOMES), m, p=_weights(list(SERIOUS_OUTCOMES), SERIOUS_OUTCOMES)),
                 rng.choice(list(NON_SERIOUS_OUTCOMES), m,
                            p=_weights(list(NON_SERIOUS_OUTCOMES), NON_SERIOUS_OUTCOMES))))
    pathogen_options = [PATHOGENS.get(t, ()) for t in _ALL_TERMS]
    flat_pathogens = [p for options in pathogen_options for p in options]
    n_options = np.array([len(o) for o in pathogen_options])
    first_option = np.cumsum(n_options) - n_options
    reported = (rng.random(m) < np.where(opportunistic, 0.85, 0.35)) & (n_options[term] > 0)
    pathogen = np.where(reported, first_option[term] + np.floor(rng.random(m) * n_options[term]).astype(np.int64), -1)
    code = np.where(rng.random(m) < 0.08, np.nan, _TERM_CODES[term])
    return {"meddra_pt": terms, "meddra_pt_code": pl.Series(code, nan_to_null=True).cast(pl.Int64),
            "serious": np.where(serious, "Y", "N"),
            "seriousness_criteria": pl.select(pl.when(pl.lit(serious)).then(pl.Series(criteria))).to_series(),
            "pathogen": _pick(flat_pathogens, pathogen), "outcome": outcome}


def _event_ids(site: str, numbers: np.ndarray) -> pl.Series:
    return f"{site}-I" + pl.Series(numbers).cast(pl.String).str.zfill(8)


def _die(s: _Site, died: np.ndarray, death: np.ndarray) -> None:
    """Patients `died` die on `death` (not after the cut, nor after a death already due)."""
    death = np.minimum(death, s.cut)
    death = np.where(s.end_reason[died] == _DEATH, np.minimum(death, s.end[died]), death)
    s.end[died] = death
    s.end_reason[died] = _DEATH


def _infections(s: _Site, hazard_ratio: np.ndarray, rng: np.random.Generator, hazard: _Hazard | None = None) -> dict:
    """Poisson processes over [index, end] with piecewise-constant rates (early window after each
    course start, then the rest of the course); fatal infections end follow-up (updates `s`)."""
    if hazard is not None:
        return _series_infections(s, hazard_ratio, rng, hazard)
    n = s.n
    seg = _segments(s)
    events = [_draw(rng, seg, rate, serious) for rate, serious in zip(_rates(seg, hazard_ratio), (True, False))]
    patient, offset, since_course, serious = (np.concatenate(parts) for parts in zip(*events))
    opportunistic, term, fatal = _kinds(rng, serious, since_course)

    # A fatal infection: death 0-14 days after onset (not after the cut, nor after a death already
    # due); nothing is recorded after the onset of the first fatal infection.
    first_fatal = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_fatal, patient[fatal], offset[fatal])
    keep = offset <= first_fatal[patient]
    patient, offset, serious, opportunistic, term, fatal = (
        a[keep] for a in (patient, offset, serious, opportunistic, term, fatal))
    died = np.flatnonzero(first_fatal < np.iinfo(np.int64).max)
    _die(s, died, s.index0[died] + first_fatal[died] + rng.integers(0, _DEATH_DELAY_DAYS, len(died)))

    m = len(patient)
    order = np.lexsort((offset, patient))
    patient, offset, serious, opportunistic, term, fatal = (
        a[order] for a in (patient, offset, serious, opportunistic, term, fatal))
    return {"patient_id": s.ids.gather(patient), "event_id": _event_ids(s.site, np.arange(1, m + 1)),
            "onset_date": _dates(s.index0[patient] + offset)} | _details(rng, serious, opportunistic, term, fatal)


def _series_infections(s: _Site, hazard_ratio: np.ndarray, rng: np.random.Generator, hazard: _Hazard) -> dict:
    """_infections for a series of data cuts (see _Hazard). The process at ratio 1 (the rates times the
    scale) is drawn from `rng`, every draw of it before any fatality is applied, so it does not depend
    on the ratio or its day; the ratio then works on it from its day on, with draws of its own: a
    ratio above 1 adds the events of a process at (ratio - 1) x the rates (serious infections, and the
    opportunistic ones of non-serious infections), a ratio below 1 keeps each serious or opportunistic
    event with probability ratio. So every delivery cut before the day is the same whatever the ratio,
    and from the day on both hazards are ratio times as high. Sets s.exposure."""
    own = rng.spawn(1)[0]  # the ratio's draws (rng.spawn leaves rng's own stream where it is)
    seg = _segments(s)
    serious_rate, non_serious_rate = _rates(seg, hazard_ratio)
    serious_rate = serious_rate * hazard.scale

    def share_factor(serious: np.ndarray) -> np.ndarray:
        return hazard.opportunistic * np.where(serious, 1.0, hazard.scale)

    def drawn(generator, part: _Segments, ratio: float) -> pl.DataFrame:
        events = [_draw(generator, part, ratio * rate, serious)
                  for rate, serious in ((serious_rate, True), (non_serious_rate, False))]
        patient, offset, since_course, serious = (np.concatenate(parts) for parts in zip(*events))
        opportunistic, term, fatal = _kinds(generator, serious, since_course, share_factor(serious))
        return pl.DataFrame({"_patient": patient, "_offset": offset, "_day": s.index0[patient] + offset,
                             "_serious": serious,
                             "_opportunistic": opportunistic, "_fatal": fatal,
                             "_delay": generator.integers(0, _DEATH_DELAY_DAYS, len(patient))}
                            | _details(generator, serious, opportunistic, term, fatal))

    # Event numbers (event_id) in (patient, onset) order: those of the process at ratio 1 first.
    base = drawn(rng, seg, 1.0).sort("_patient", "_offset", maintain_order=True).with_columns(
        _number=pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
    raised = pl.col("_serious") | pl.col("_opportunistic")
    if hazard.from_day is not None:
        raised = raised & (pl.col("_day") >= hazard.from_day)
    events = base
    if hazard.ratio < 1:
        events = base.filter(~raised | pl.Series(own.random(base.height) < hazard.ratio))
    elif hazard.ratio > 1:
        from_day = -np.inf if hazard.from_day is None else (hazard.from_day - s.index0[seg.patient]).astype(float)
        extra = drawn(own, seg.part(from_day, np.inf), hazard.ratio - 1).filter(
            pl.col("_serious") | pl.col("_opportunistic")).sort("_patient", "_offset", maintain_order=True)
        extra = extra.with_columns(_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int64) + base.height)
        events = pl.concat([base, extra.select(base.columns).cast(base.schema)]).sort(
            "_patient", "_offset", "_number")
    s.exposure = _exposure(s, seg, serious_rate, non_serious_rate, hazard, share_factor, events)

    # The first fatal infection ends the record (as in _infections).
    first_fatal = events.filter("_fatal").group_by("_patient").agg(
        pl.col("_offset").min().alias("_first"), pl.col("_delay").sort_by("_offset", "_number").first())
    events = events.join(first_fatal.select("_patient", "_first"), on="_patient", how="left",
                         maintain_order="left").filter(pl.col("_first").is_null()
                                                       | (pl.col("_offset") <= pl.col("_first")))
    died = first_fatal["_patient"].to_numpy()
    _die(s, died, s.index0[died] + first_fatal["_first"].to_numpy() + first_fatal["_delay"].to_numpy())
    patient = events["_patient"].to_numpy()
    return {"patient_id": s.ids.gather(patient), "event_id": _event_ids(s.site, events["_number"].to_numpy()),
            "onset_date": _dates(s.index0[patient] + events["_offset"].to_numpy())} | {
        name: events[name] for name in ("meddra_pt", "meddra_pt_code", "serious", "seriousness_criteria",
                                        "pathogen", "outcome")}


def _exposure(s: _Site, seg: _Segments, serious_rate: np.ndarray, non_serious_rate: np.ndarray, hazard: _Hazard,
              share_factor, events: pl.DataFrame) -> pl.DataFrame:
    """Per outcome (every serious infection; every opportunistic infection) and period (before and
    from hazard.from_day, or all the time): the infections drawn (before a fatal infection ends the
    record), the person-years at risk and the infections expected at rate ratio 1 (the rates of the
    segments without the ratio). events / expected estimates each period's ratio."""
    day = -np.inf if hazard.from_day is None else (hazard.from_day - s.index0[seg.patient]).astype(float)
    periods = ([("all", hazard.ratio, seg)] if hazard.from_day is None else
               [("before", 1.0, seg.part(-np.inf, day)), ("after", hazard.ratio, seg.part(day, np.inf))])
    onset = events["_offset"].to_numpy() + s.index0[events["_patient"].to_numpy()]
    kinds = {"serious_infection": events["_serious"].to_numpy(),
             "opportunistic_infection": events["_opportunistic"].to_numpy()}
    rows = []
    for outcome, kind in kinds.items():
        for period, ratio, part in periods:
            window_end = part.course_start + OPPORTUNISTIC_WINDOW_DAYS + 1  # onset day <= course start + 180
            early = np.clip(np.minimum(part.start + part.length, window_end)
                            - np.maximum(part.start, part.course_start), 0, part.length)
            late = part.length - early
            if outcome == "serious_infection":
                expected = serious_rate * part.length
            else:
                expected = sum(rate * share_factor(np.full(len(rate), serious)) * (shares[0] * early + shares[1] * late)
                               for rate, serious, shares in ((serious_rate, True, _OI_SHARE_SERIOUS),
                                                             (non_serious_rate, False, _OI_SHARE_NON_SERIOUS)))
            in_period = (onset >= hazard.from_day) if hazard.from_day is not None else np.ones(len(onset), bool)
            if period == "before":
                in_period = ~in_period
            rows.append({"outcome": outcome, "period": period, "rate_ratio": ratio,
                         "events": int((kind & in_period).sum()), "person_years": float(part.length.sum() / 365.25),
                         "expected_at_ratio_1": float(expected.sum() / 365.25)})
    return pl.DataFrame(rows, schema={"outcome": pl.String, "period": pl.String, "rate_ratio": pl.Float64,
                                      "events": pl.Int64, "person_years": pl.Float64,
                                      "expected_at_ratio_1": pl.Float64})


def _end_rows_at_death(s: _Site, columns: dict) -> None:
    """Nothing dated after a death; treatments still running at death stop on that day."""
    death = pl.DataFrame({"patient_id": s.ids, "_death": _dates(np.where(s.end_reason == _DEATH, s.end, np.nan))})
    dated = {"alemtuzumab_infusions": "infusion_date", "edss_assessments": "assessment_date",
             "comorbidities": "diagnosis_date", "dmt_history": "start_date"}
    for name, column in dated.items():
        frame = pl.DataFrame(columns[name]).join(death, on="patient_id", how="left", maintain_order="left")
        death_day = pl.col("_death")
        frame = frame.filter(death_day.is_null() | pl.col(column).is_null() | (pl.col(column) <= death_day))
        if name == "dmt_history":
            running = death_day.is_not_null() & (pl.col("stop_date").is_null() | (pl.col("stop_date") > death_day))
            frame = frame.with_columns(stop_date=pl.when(running).then(pl.col("_death")).otherwise(pl.col("stop_date")))
        columns[name] = frame.drop("_death").to_dict()
