"""Delivered text on every rendered surface (issue 15, class 1): Great Expectations' Data Docs and
stored validation results, the report's HTML and PDF, and the exported CSV and XLSX tables.

One hostile warehouse, built and rendered once for the module:
  - an accepted delivery whose quarantined cells (patients.sex, infections.outcome) and loaded free
    text (infections.pathogen) hold markup, formulas and other hostile text;
  - a clean second site;
  - refused deliveries whose folder names, manifest field, column name and file name are hostile:
    their text reaches the report's data-quality annex and the exports through audit.deliveries.

Data Docs and stored validation results must hold no delivered value at all (docs/ingest.md,
"Delivered text on rendered surfaces"); the report and the exports show delivered text inert
(vigil.inert: one line, control characters as escapes), HTML-escaped, never as a formula.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest
from pypdfium2 import PdfDocument
from helpers import SITE, many_rows, rehash, valid_rows, write_delivery

from vigil.ingest import validation as gv
from vigil import warehouse
from vigil.report.disclosure import neutralise_formula
from vigil.inert import inert
from vigil.ingest.load import ingest_delivery
from vigil.report import render_report
from vigil.analysis.runs import analyse

pytestmark = [pytest.mark.faults, pytest.mark.gx, pytest.mark.slow]  # GX's Data Docs and results; a PDF

# Printable hostile text: markup, entities, templates, formulas. Each holds a distinctive marker.
MARKUP = [
    "<script>alert('zqscript')</script>",
    '<h1 style="color:red">zqh1 INJECTED</h1>',
    '"><svg onload=alert(1)>zqsvg',
    "<img src=x onerror=alert(1)>zqimg",
    "javascript:alert(1)//zqjs",
    "&amp; &lt;b&gt; &#60;i&#62; zqentity",
    "{{ 7*7 }} {% raw %} zqjinja",
    "[/x] [link=http://evil.example]zqrich[/link]",
    "$x^2$ zqdollar",
]
FORMULAS = [
    '=HYPERLINK("http://evil.example/?zqformula","x")',
    "+cmd|' /C calc'!A0 zqplus",
    "-2+3 zqminus",
    "@SUM(A1) zqat",
    " =1+1 zqspace",
    "\uff1d1+1 zqfullwidth",
]
# Control and formatting characters: only in folder names (a name can hold any byte but / and NUL).
CONTROLS = [
    "line1\nINFO forged zqnewline",
    "a\rb zqcr",
    "a\tb zqtab",
    "\x1b[31mzqansi\x1b[0m",
    "\u202ezqbidi.exe",
    "a\u200bzqzerowidth",
    "a\xa0zqnbsp",
    "a\x08zqbackspace",
    "a\x7fzqdel",
    "a\x85zqnel",
    "a\u2028zqlineseparator",
    "A" * 200 + "zqlong",
]
CELL_VALUES = MARKUP + FORMULAS
FOLDER_NAMES = [text.replace("/", "\\") for text in MARKUP + FORMULAS + CONTROLS]
MANIFEST_STUDY = "<script>alert('zqmanifest')</script>\n\x1b[31m"
COLUMN_NAME = "<b>zqcolumn</b>"
FILE_NAME = "=HYPERLINK(1)zqfile.csv"


MARKERS = sorted({re.search(r"zq[a-z0-9]+", text).group() for text in CELL_VALUES})


def _hostile_rows() -> dict[str, list[dict]]:
    rows = many_rows(16)
    for i, value in enumerate(CELL_VALUES[:8]):  # quarantined patients (not_in_code_list on sex)
        rows["patients"].append({"patient_id": f"{SITE}-{0xF00 + i:016X}", "sex": value, "birth_year": "1980",
                                 "ms_onset_year": "2005", "ms_course": "RRMS"})
    first = rows["patients"][0]["patient_id"]
    for i, value in enumerate(CELL_VALUES[:12]):  # quarantined infections (not_in_code_list on outcome)
        rows["infections"].append({"patient_id": first, "event_id": f"X{i}", "onset_date": "2020-04-01",
                                   "meddra_pt": "Pneumonia", "serious": "Y",
                                   "seriousness_criteria": "hospitalisation", "outcome": value})
    for row, value in zip(rows["infections"], CELL_VALUES):  # loaded free text
        row["pathogen"] = value
    return rows


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    db = root / "wh" / "vigil.duckdb"
    gx_dir = warehouse.gx_dir_for(db)
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    accepted = [ingest_delivery(con, write_delivery(root / "in", _hostile_rows()), gx_dir)]

    refused = []
    for i, name in enumerate(FOLDER_NAMES):
        folder = write_delivery(root / f"name{i}", valid_rows("SE02"), site="SE02")
        refused.append(ingest_delivery(con, folder.rename(folder.with_name(name)), gx_dir))
    folder = write_delivery(root / "manifest", valid_rows("SE03"), site="SE03",
                            manifest_edit=lambda m: m.update(study_id=MANIFEST_STUDY))
    refused.append(ingest_delivery(con, folder, gx_dir))
    folder = write_delivery(root / "column", valid_rows("SE03"), site="SE03")
    path = folder / "patients.csv"
    path.write_text(path.read_text().replace("ms_course", f"ms_course,{COLUMN_NAME}", 1).replace("RRMS", "RRMS,x"))
    rehash(folder)
    refused.append(ingest_delivery(con, folder, gx_dir))
    folder = write_delivery(root / "file", valid_rows("SE03"), site="SE03")
    (folder / FILE_NAME).write_text("x\n")
    refused.append(ingest_delivery(con, folder, gx_dir))

    accepted.append(ingest_delivery(con, write_delivery(root / "clean", valid_rows("SE02"), site="SE02"), gx_dir))
    assert [o.status for o in accepted] == ["accepted", "accepted"], [o.message for o in accepted]
    assert {o.status for o in refused} == {"refused"}, [o.message for o in refused if o.status != "refused"]
    analyse(con, {"test": "rendered surfaces"})
    con.close()
    result = render_report(db, root / "report")
    return {"root": root, "db": db, "gx_dir": gx_dir, "report": result, "refused": refused}


# ---------------------------------------------------------------------------------------------
# Great Expectations: counts and percentages, never a delivered value


def test_the_hostile_values_reached_the_validation(hostile):
    """The fixture does what it says: GX and SQL counted the hostile cells as breaking their rules."""
    con = duckdb.connect(str(hostile["db"]), read_only=True)
    counts = dict(con.execute("SELECT rule_id, gx_unexpected FROM audit.rule_results WHERE delivery_id = 1 "
                              "AND rule_id IN ('patients.sex.not_in_code_list.1', "
                              "'infections.outcome.not_in_code_list.1')").fetchall())
    con.close()
    assert counts == {"patients.sex.not_in_code_list.1": 8, "infections.outcome.not_in_code_list.1": 12}


def test_data_docs_show_no_delivered_value(hostile):
    pages = sorted(hostile["gx_dir"].rglob("data_docs/**/*.html"))
    validation_pages = [p for p in pages if "/validations/" in p.as_posix()]
    assert len(validation_pages) >= 14  # two accepted deliveries, seven tables each
    for page in pages:
        html = page.read_text(encoding="utf-8")
        found = [m for m in MARKERS if m in html]
        assert not found, f"{page.name} shows delivered values: {found}"
        assert "alert(" not in html and "INJECTED" not in html and "evil.example" not in html, page
    sex_page = next(p for p in validation_pages if "/patients/" + SITE in p.as_posix())
    assert "8 unexpected values found" in sex_page.read_text(encoding="utf-8")  # the count is shown


def test_stored_validation_results_hold_counts_and_no_delivered_value(hostile):
    stored = sorted(hostile["gx_dir"].rglob("uncommitted/validations/**/*.json"))
    assert len(stored) == 14
    con = duckdb.connect(str(hostile["db"]), read_only=True)
    audit = [(d, json.loads(r)) for d, r in con.execute(
        "SELECT delivery_id, result FROM audit.validation_results").fetchall()]
    rule_results = {(d, r): (s, g) for d, r, s, g in con.execute(
        "SELECT delivery_id, rule_id, sql_violations, gx_unexpected FROM audit.rule_results").fetchall()}
    con.close()
    assert len(audit) == 14
    for text in [p.read_text(encoding="utf-8") for p in stored] + [json.dumps(r) for _, r in audit]:
        found = [m for m in MARKERS if m in text]
        assert not found, f"a stored validation result holds delivered values: {found}"
    for delivery_id, result in audit:
        for r in result["results"]:
            assert not gv._delivered_values(r["result"]), r
            rule_id = r["expectation_config"]["meta"].get("rule_id")
            if rule_id:  # GX's count is kept: vigil compares it with the SQL count for every rule
                counted = r["result"]["unexpected_count"]
                if counted is None:  # SQL's sum() over no rows (vigil reads it as 0)
                    assert r["result"]["element_count"] == 0
                    counted = 0
                assert counted == rule_results[(delivery_id, rule_id)][1]
                assert rule_results[(delivery_id, rule_id)][0] == rule_results[(delivery_id, rule_id)][1]


@pytest.mark.parametrize("label", ['<h1 style="color:red">x</h1>'.replace("/", ""), "x'};alert(1);{'",
                                   "DK01_2026-06-30\nforged", "\x1b[31mDK01", "\u202eDK01", "", "a b", ".hidden",
                                   "a" * 101])
def test_a_delivery_label_that_is_not_a_plain_name_is_refused(tmp_path, label):
    """GX writes the run name into Data Docs pages, their paths and the index page's script unescaped."""
    with pytest.raises(ValueError, match="must be a plain name"):
        gv.start_validation(tmp_path / "gx", label, None, "nowhere", [], None, None)


def test_every_accepted_folder_name_is_a_plain_label():
    for name in ("DK01_2026-06-30", "ABCDEFGHIJKLMNOP_1999-01-01", "DK01_2026-06-30-1"):
        assert gv.PLAIN_LABEL.fullmatch(name)


# ---------------------------------------------------------------------------------------------
# the report: HTML and PDF


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.cells: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "div" and "table-block" in (attrs.get("class") or ""):
            self._table = attrs.get("id")
        if tag == "tr" and self._table:
            self.cells.setdefault(self._table, []).append([])
        if tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells[self._table][-1].append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def page(hostile):
    parsed = _Page()
    parsed.feed(hostile["report"].html.read_text(encoding="utf-8"))
    return parsed


def _deliveries(page) -> list[dict[str, str]]:
    header = ["Delivery", "Folder", "Site", "Data cut", "Status", "Reason", "Received"]
    return [dict(zip(header, row)) for row in page.cells["dq_deliveries"] if row]


def test_report_html_shows_delivered_text_as_escaped_inert_text(hostile, page):
    html = hostile["report"].html.read_text(encoding="utf-8")
    assert all(c.isprintable() for c in html.replace("\n", "")), "control or formatting characters in the HTML"
    assert not any(tag in ("script", "svg", "iframe", "object") for tag, _ in page.tags)
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert not any("color:red" in (attrs.get("style") or "") for _, attrs in page.tags)
    assert [tag for tag, _ in page.tags].count("h1") == 1  # the cover's title
    assert sum(tag == "img" for tag, _ in page.tags) == sum(1 for _, a in page.tags if a.get("src", "").startswith("data:"))
    rows = _deliveries(page)
    by_folder = {row["Folder"]: row for row in rows}
    for name in FOLDER_NAMES:
        row = by_folder[inert(name)]  # the folder as text, one line, controls visible
        assert row["Status"] == "refused"
        assert row["Reason"].startswith(inert(name) + ","), row["Reason"]  # from the folder's name on
    reasons = " ".join(row["Reason"] for row in rows)
    assert str(hostile["root"]) not in reasons  # the landing area's path is not shown
    assert inert(repr(MANIFEST_STUDY)) in reasons
    assert inert(repr(COLUMN_NAME)) in reasons and inert(FILE_NAME) in reasons


def _pdf_text(pdf: Path) -> str:
    # PDFium (pypdfium2, a dev dependency with wheels: no system package) reads the text as a reader
    # copies it; it ends lines with \r\n and gives a hyphen where a line may break as U+FFFE.
    document = PdfDocument(pdf)
    text = "\f".join(page.get_textpage().get_text_range() for page in document)
    return text.replace("\r\n", "\n").replace("\ufffe", "-")


def test_report_pdf_shows_delivered_text_as_inert_text(hostile):
    text = _pdf_text(hostile["report"].pdf)
    unprintable = {c for c in text.replace("\n", "").replace("\f", "") if not c.isprintable()}  # \f: a page break
    assert not unprintable, f"control or formatting characters in the PDF's text: {sorted(map(ascii, unprintable))}"
    flat = "".join(text.split())  # table cells wrap anywhere: compare without white space
    for name in FOLDER_NAMES:
        assert "".join(inert(name).split()) in flat, inert(name)
    assert "".join(inert(repr(MANIFEST_STUDY)).split()) in flat


# ---------------------------------------------------------------------------------------------
# the exports


def _expected_cell(name: str) -> str:
    return neutralise_formula(inert(name))


def test_csv_exports_are_inert_one_line_per_row_and_neutralise_formulas(hostile):
    tables_dir = hostile["report"].tables_dir
    for path in sorted(tables_dir.glob("*.csv")):
        lines = path.read_bytes().decode("utf-8").split("\r\n")  # the csv module's line ends
        assert lines[-1] == "" and all(c.isprintable() for c in "".join(lines)), path.name
        with path.open(encoding="utf-8", newline="") as handle:
            assert len(list(csv.reader(handle))) == len(lines) - 1, f"{path.name}: a record spans lines"
    (deliveries,) = tables_dir.glob("*_dq_deliveries.csv")
    with deliveries.open(encoding="utf-8", newline="") as handle:
        folders = {row["Folder"]: row for row in csv.DictReader(handle)}
    for name in FOLDER_NAMES:
        cell = _expected_cell(name)
        assert cell in folders, name
        if name.lstrip(" ").startswith(("=", "+", "-", "@", "\uff1d")):
            assert cell.startswith("'") and folders[cell]["Reason"].startswith("'"), cell


def test_xlsx_export_holds_inert_strings_and_no_formula(hostile):
    from openpyxl import load_workbook

    xlsx = hostile["report"].xlsx
    with zipfile.ZipFile(xlsx) as z:
        sheets = [z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/")]
    assert sheets and not any(b"<f>" in s or b"<f " in s for s in sheets)
    wb = load_workbook(xlsx)
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str):
                    assert cell.value.isprintable(), (ws.title, cell.coordinate)
    ws = wb["dq_deliveries"]
    folders = {ws.cell(row=r, column=2).value: ws.cell(row=r, column=2) for r in range(3, ws.max_row + 1)}
    for name in FOLDER_NAMES:
        cell = folders[_expected_cell(name)]
        assert cell.data_type == "s", name


def test_formula_neutralisation_after_spaces_and_in_full_width():
    assert neutralise_formula(" =1+1") == "' =1+1"
    assert neutralise_formula("  @SUM(A1)") == "'  @SUM(A1)"
    assert neutralise_formula("\uff1d1+1") == "'\uff1d1+1"  # full-width =, +
    assert neutralise_formula("\uff0bcmd") == "'\uff0bcmd"
    assert neutralise_formula(" -0.5") == " -0.5"  # a number stays as it is
    assert neutralise_formula(" >=2") == " >=2"
