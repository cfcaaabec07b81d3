"""The study's code lists (codelists/*.csv) loaded into the warehouse schema `codelists`.

The lists are versioned data (see codelists/README.md): every file has a `version` column with
one value for all its rows. `load_codelists` checks each file, (re)creates its table with
COMMENT ON for the table and every column, and records version and SHA-256 in
`codelists.versions`, so that a run can record which lists it used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from vigil.contract import sql_literal
from vigil.resources import CODELIST_DIR

SCHEMA = "codelists"


class CodeListError(ValueError):
    """A code list file breaks its format; the message names the file."""


@dataclass(frozen=True)
class CodeList:
    name: str  # file stem = table name in schema codelists
    description: str
    key: tuple[str, ...]  # unique per row
    columns: tuple[tuple[str, str, str], ...]  # (name, SQL type, comment), in file order, version last
    nullable: frozenset[str] = frozenset()  # columns that may be empty (NULL); the others are required

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> list[str]:
        return [c[0] for c in self.columns]


_VERSION = ("version", "VARCHAR", "Version of the code list (one value per file; see codelists/README.md).")

CODELISTS: dict[str, CodeList] = {
    c.name: c for c in (
        CodeList(
            "charlson_quan2005_icd10",
            "ICD-10 prefixes of the Charlson comorbidity categories: Quan et al. Med Care 2005 coding algorithm, "
            "Charlson 1987 weights. A diagnosis matches when its code, upper-cased and without the dot, starts "
            "with icd10_prefix. Grain: ICD-10 prefix.",
            ("icd10_prefix",),
            (
                ("category", "VARCHAR", "Charlson category identifier, e.g. mild_liver_disease."),
                ("category_name", "VARCHAR", "Charlson category as named by Quan et al. 2005."),
                ("weight", "INTEGER", "Charlson (1987) weight of the category."),
                ("superseded_by", "VARCHAR",
                 "The severe category that replaces this mild one when a patient has both; NULL if none."),
                ("icd10_prefix", "VARCHAR", "ICD-10 code prefix, upper case without the dot (3 or 4 characters)."),
                ("quan_code", "VARCHAR", "The code or range as printed in Quan et al. 2005 Table 1, e.g. I42.5-I42.9."),
                _VERSION,
            ),
            frozenset({"superseded_by"}),
        ),
        CodeList(
            "dmt_classes",
            "Disease-modifying therapy codes of the extract (dmt_history.dmt_code) with their names and the "
            "high-efficacy / immunosuppressive class. Grain: DMT code.",
            ("dmt_code",),
            (
                ("dmt_code", "VARCHAR", "DMT code as delivered in dmt_history.dmt_code."),
                ("dmt_name", "VARCHAR", "Name of the therapy."),
                ("high_efficacy", "VARCHAR", "Y if the therapy is in the high-efficacy / immunosuppressive class, else N."),
                _VERSION,
            ),
        ),
        CodeList(
            "opportunistic_terms",
            "MedDRA preferred terms that define an opportunistic infection (SAP section 2, secondary outcome b); "
            "matched ignoring case. Grain: MedDRA preferred term.",
            ("meddra_pt",),
            (
                ("meddra_pt", "VARCHAR", "MedDRA preferred term, English, as listed in the SAP."),
                _VERSION,
            ),
        ),
        CodeList(
            "reference_rates",
            "Reference rates of SAP v1.1 section 7: the rate the phase III programme led everyone to expect, per "
            "outcome, sex and age group (age_group of codelists.strata), per 1,000 person-years, with their source; "
            "the expected events of A13 and A14 (sex U takes the mean of F and M). Grain: outcome, sex and age group.",
            ("outcome", "sex", "age_group"),
            (
                ("outcome", "VARCHAR", "Outcome of SAP section 2 (first_serious or first_opportunistic)."),
                ("sex", "VARCHAR", "F or M (U is derived: the mean of F and M)."),
                ("age_group", "VARCHAR", "Age at index, a level of age_group in codelists.strata."),
                ("rate_per_1000py", "DOUBLE", "Reference rate per 1,000 person-years (>= 0)."),
                ("source", "VARCHAR", "Where the rate comes from."),
                _VERSION,
            ),
        ),
        CodeList(
            "strata",
            "The baseline stratum variables of SAP section 3: label, order, whether in the multivariable model, and "
            "their levels in SAP order (level_order 1 = reference) with the rule that gives a patient the level. "
            "cohort.patients bins by this table, analysis.strata_levels lists it, and the Python constants "
            "(vigil.cohort.strata) read the same file. Grain: stratum variable and level (site: one row, its "
            "levels come from the data).",
            ("variable", "level"),
            (
                ("variable", "VARCHAR", "Stratum variable = column name in cohort.patients and the analysis datasets."),
                ("variable_label", "VARCHAR", "Label of the variable in tables and figures."),
                ("variable_order", "INTEGER", "Order of the variable in tables and in the multivariable model."),
                ("sap_order", "INTEGER",
                 "Order of the variable in SAP section 3: the order of the stratifiers in the results tables."),
                ("multivariable", "VARCHAR", "Y if the variable is a term of the multivariable Cox model (SAP A5), else N."),
                ("source", "VARCHAR", "The baseline quantity of cohort.patients the level is derived from."),
                ("rule", "VARCHAR",
                 "How a patient gets the level: range (lower <= source < upper; no upper = no upper bound), "
                 "equals (source = value), missing (source is NULL), data (levels are the values of source, "
                 "in alphabetical order, the first the reference)."),
                ("level", "VARCHAR", "Level as it appears in the data; NULL for rule data."),
                ("level_order", "INTEGER", "Order of the level within its variable, 1 = reference; NULL for rule data."),
                ("lower", "DOUBLE", "rule range: the smallest source value of the level (inclusive)."),
                ("upper", "DOUBLE", "rule range: the source value where the next level starts (exclusive); NULL = none."),
                ("value", "VARCHAR", "rule equals: the source value (as delivered or derived) that gives the level."),
                _VERSION,
            ),
            frozenset({"level", "level_order", "lower", "upper", "value"}),
        ),
    )
}


@dataclass(frozen=True)
class LoadedCodeList:
    spec: CodeList
    version: str
    sha256: str
    rows: list[tuple]

    @property
    def provenance(self) -> dict[str, str]:
        """What a run records of the list: version, file hash and file."""
        return {"version": self.version, "sha256": self.sha256, "file": f"codelists/{self.spec.file_name}"}


def read_codelist(name: str, directory: Path = CODELIST_DIR) -> LoadedCodeList:
    """Read and check one code list file: exact header, no empty required value, unique key, one version."""
    spec = CODELISTS[name]
    path = directory / spec.file_name
    data = path.read_bytes()
    text = data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != spec.column_names:
        raise CodeListError(f"{path.name}: header {header} is not {spec.column_names}")
    rows, keys, versions, lines = [], set(), set(), []
    for line_number, values in enumerate(reader, start=2):
        if not values:
            continue
        if len(values) != len(header):
            raise CodeListError(f"{path.name}, line {line_number}: {len(values)} fields, expected {len(header)}")
        row = []
        for number, ((column, sql_type, _), value) in enumerate(zip(spec.columns, values), start=1):
            where = f"{path.name}, line {line_number}, column {number} ({column})"
            value = value.strip()
            if value == "":
                if column not in spec.nullable:
                    raise CodeListError(f"{where}: empty")
                row.append(None)
            elif sql_type == "INTEGER":
                try:
                    row.append(int(value))
                except ValueError:
                    raise CodeListError(f"{where}: {value!r} is not a whole number") from None
            elif sql_type == "DOUBLE":
                try:
                    row.append(float(value))
                except ValueError:
                    raise CodeListError(f"{where}: {value!r} is not a number") from None
                if not math.isfinite(row[-1]):
                    raise CodeListError(f"{where}: {value!r} is not a finite number")
            else:
                row.append(value)
        record = dict(zip(header, row))
        key = tuple(record[k] for k in spec.key)
        if key in keys:
            raise CodeListError(f"{path.name}, line {line_number}: duplicate {'+'.join(spec.key)} {key}")
        keys.add(key)
        versions.add(record["version"])
        rows.append(tuple(row))
        lines.append(line_number)
    if not rows:
        raise CodeListError(f"{path.name}: no rows")
    if len(versions) != 1:
        raise CodeListError(f"{path.name}: one version per file expected, found {sorted(versions)}")
    if spec.name == "reference_rates":
        _check_reference_rates(rows, lines, path.name, directory)
    _check(spec, rows, path.name)
    return LoadedCodeList(spec, versions.pop(), hashlib.sha256(data).hexdigest(), rows)


def _check(spec: CodeList, rows: list[tuple], file_name: str) -> None:
    """Checks of meaning that a wrong edit of a list would break."""
    records = [dict(zip(spec.column_names, r)) for r in rows]
    if spec.name == "charlson_quan2005_icd10":
        by_category: dict[str, tuple] = {}
        for r in records:
            if r["icd10_prefix"] != r["icd10_prefix"].upper() or "." in r["icd10_prefix"]:
                raise CodeListError(f"{file_name}: prefix {r['icd10_prefix']!r} must be upper case without the dot")
            attrs = (r["category_name"], r["weight"], r["superseded_by"])
            if by_category.setdefault(r["category"], attrs) != attrs:
                raise CodeListError(f"{file_name}: category {r['category']} has differing name/weight/superseded_by")
        for category, (_, _, severe) in by_category.items():
            if severe is not None and severe not in by_category:
                raise CodeListError(f"{file_name}: {category} is superseded by unknown category {severe}")
    elif spec.name == "dmt_classes":
        bad = [r["dmt_code"] for r in records if r["high_efficacy"] not in ("Y", "N")]
        if bad:
            raise CodeListError(f"{file_name}: high_efficacy must be Y or N ({bad})")
    elif spec.name == "strata":
        _check_strata(records, file_name)


REFERENCE_RATES_VERSION = "1.0"  # the version SAP v1.1 section 7 names
REFERENCE_OUTCOMES = ("first_serious", "first_opportunistic")  # SAP 7: A13 for both, A14 for the first
REFERENCE_SEXES = ("F", "M")


def _check_reference_rates(rows: list[tuple], lines: list[int], file_name: str, directory: Path) -> None:
    """The SAP's version, no negative rate, and a rate for every outcome x sex x age group cell (the
    age groups of codelists/strata.csv): an expected count is never computed from a missing cell."""
    columns = CODELISTS["reference_rates"].column_names
    rate_column = columns.index("rate_per_1000py")
    version_column = columns.index("version")
    for row, line in zip(rows, lines):
        if row[version_column] != REFERENCE_RATES_VERSION:
            raise CodeListError(f"{file_name}, line {line}, column {version_column + 1} (version): "
                                f"{row[version_column]!r}, but the SAP names version {REFERENCE_RATES_VERSION}")
        if row[rate_column] < 0:
            raise CodeListError(f"{file_name}, line {line}, column {rate_column + 1} (rate_per_1000py): "
                                f"{row[rate_column]:g} is negative")
        if row[0] not in REFERENCE_OUTCOMES or row[1] not in REFERENCE_SEXES:
            raise CodeListError(f"{file_name}, line {line}: outcome must be one of {REFERENCE_OUTCOMES} and sex one "
                                f"of {REFERENCE_SEXES}, found {row[0]!r}, {row[1]!r}")
    strata = read_codelist("strata", directory)
    ages = [r[strata.spec.column_names.index("level")] for r in sorted(
        (r for r in strata.rows if r[0] == "age_group"), key=lambda r: r[strata.spec.column_names.index("level_order")])]
    given = {(r[0], r[1], r[2]): line for r, line in zip(rows, lines)}
    for (outcome, sex, age), line in given.items():
        if age not in ages:
            raise CodeListError(f"{file_name}, line {line}, column 3 (age_group): {age!r} is not an age group of "
                                f"strata.csv ({', '.join(ages)})")
    missing = [cell for cell in ((o, s, a) for o in REFERENCE_OUTCOMES for s in REFERENCE_SEXES for a in ages)
               if cell not in given]
    if missing:
        raise CodeListError(f"{file_name}: no row (no rate) for " +
                            ", ".join(f"outcome {o}, sex {s}, age group {a}" for o, s, a in missing))


_STRATUM_RULES = ("range", "equals", "missing", "data")


def _check_strata(records: list[dict], file_name: str) -> None:
    """Every patient must get exactly one level of each variable: ranges contiguous and increasing,
    values distinct, level_order 1..n, one row for a variable whose levels come from the data."""
    by_variable: dict[str, list[dict]] = {}
    for r in records:
        by_variable.setdefault(r["variable"], []).append(r)
    for key in ("variable_order", "sap_order"):
        orders = [rows[0][key] for rows in by_variable.values()]
        if sorted(orders) != list(range(1, len(orders) + 1)):
            raise CodeListError(f"{file_name}: {key} must number the variables 1..{len(orders)}, found {orders}")
    for variable, rows in by_variable.items():
        def bad(message: str) -> CodeListError:
            return CodeListError(f"{file_name}: variable {variable}: {message}")
        attrs = {(r["variable_label"], r["variable_order"], r["sap_order"], r["multivariable"], r["source"]) for r in rows}
        if len(attrs) != 1:
            raise bad("variable_label, variable_order, sap_order, multivariable and source differ between its rows")
        if rows[0]["multivariable"] not in ("Y", "N"):
            raise bad("multivariable must be Y or N")
        rules = [r["rule"] for r in rows]
        if unknown := set(rules) - set(_STRATUM_RULES):
            raise bad(f"rule must be one of {_STRATUM_RULES}, found {sorted(unknown)}")
        if "data" in rules:
            r = rows[0]
            if len(rows) != 1 or any(r[c] is not None for c in ("level", "level_order", "lower", "upper", "value")):
                raise bad("rule data is one row with no level, level_order, bounds or value")
            continue
        if any(r["level"] is None or r["level_order"] is None for r in rows):
            raise bad("every row needs level and level_order")
        rows = sorted(rows, key=lambda r: r["level_order"])
        if [r["level_order"] for r in rows] != list(range(1, len(rows) + 1)):
            raise bad("level_order must be 1..n")
        if set(rules) not in ({"range"}, {"range", "missing"}, {"equals"}):
            raise bad(f"mixes rules {sorted(set(rules))} (allowed: range with at most one missing, or equals)")
        if rules.count("missing") > 1:
            raise bad("more than one missing level")
        for r in rows:
            if r["rule"] == "equals" and (r["value"] is None or r["lower"] is not None or r["upper"] is not None):
                raise bad(f"level {r['level']}: rule equals needs a value and no bounds")
            if r["rule"] == "range" and (r["lower"] is None or r["value"] is not None):
                raise bad(f"level {r['level']}: rule range needs lower and no value")
            if r["rule"] == "missing" and any(r[c] is not None for c in ("lower", "upper", "value")):
                raise bad(f"level {r['level']}: rule missing has no bounds or value")
        values = [r["value"] for r in rows if r["rule"] == "equals"]
        if len(set(values)) != len(values):
            raise bad("two levels with the same value")
        ranges = [r for r in rows if r["rule"] == "range"]
        for r, following in zip(ranges, ranges[1:] + [None]):
            if following is None:
                if r["upper"] is not None and r["upper"] <= r["lower"]:
                    raise bad(f"level {r['level']}: upper must be above lower")
            elif r["upper"] is None or r["upper"] != following["lower"] or r["upper"] <= r["lower"]:
                raise bad(f"levels {r['level']} and {following['level']}: the ranges must be increasing and "
                          "contiguous (upper of one = lower of the next)")


def codelist_versions(directory: Path = CODELIST_DIR) -> dict[str, dict[str, str]]:
    """{list name: {"version", "sha256", "file"}} of every code list, for the run's provenance."""
    return {name: read_codelist(name, directory).provenance for name in CODELISTS}


def load_codelists(con: duckdb.DuckDBPyConnection, directory: Path = CODELIST_DIR) -> dict[str, dict[str, str]]:
    """(Re)create codelists.<name> for every list and codelists.versions; return the versions.

    Runs inside the caller's transaction (no BEGIN/COMMIT here).
    """
    loaded = [read_codelist(name, directory) for name in CODELISTS]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for cl in loaded:
        spec = cl.spec
        table = f"{SCHEMA}.{spec.name}"
        body = ",\n  ".join(f"{name} {sql_type}" for name, sql_type, _ in spec.columns)
        key = "" if set(spec.key) & spec.nullable else f",\n  PRIMARY KEY ({', '.join(spec.key)})"  # NULL in a key: checked on read
        con.execute(f"CREATE OR REPLACE TABLE {table} (\n  {body}{key}\n)")
        # One insert of the whole list (row by row it took 0.2 s of every cohort build).
        rows = pl.DataFrame(cl.rows, schema=[name for name, _, _ in spec.columns], orient="row",
                            infer_schema_length=None)
        con.execute(f"INSERT INTO {table} SELECT * FROM rows")
        con.execute(f"COMMENT ON TABLE {table} IS "
                    f"{sql_literal(f'{spec.description} Version {cl.version}, file codelists/{spec.file_name}.')}")
        for name, _, comment in spec.columns:
            con.execute(f"COMMENT ON COLUMN {table}.{name} IS {sql_literal(comment)}")

    con.execute(f"""CREATE OR REPLACE TABLE {SCHEMA}.versions (
  codelist VARCHAR PRIMARY KEY,
  file VARCHAR,
  version VARCHAR,
  sha256 VARCHAR,
  n_rows BIGINT
)""")
    con.executemany(f"INSERT INTO {SCHEMA}.versions VALUES (?, ?, ?, ?, ?)",
                    [(cl.spec.name, f"codelists/{cl.spec.file_name}", cl.version, cl.sha256, len(cl.rows))
                     for cl in loaded])
    con.execute(f"COMMENT ON TABLE {SCHEMA}.versions IS "
                f"{sql_literal('The code lists loaded into this warehouse, with version and file hash. Grain: code list.')}")
    for name, comment in (
        ("codelist", "Code list name = table name in schema codelists."),
        ("file", "The file it was loaded from, relative to the project root."),
        ("version", "Version of the list (its version column)."),
        ("sha256", "SHA-256 of the file as loaded."),
        ("n_rows", "Number of data rows loaded."),
    ):
        con.execute(f"COMMENT ON COLUMN {SCHEMA}.versions.{name} IS {sql_literal(comment)}")
    return {cl.spec.name: cl.provenance for cl in loaded}
