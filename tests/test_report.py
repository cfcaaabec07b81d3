"""The incidence report (issue 5): structure, self-containment, exports and disclosure control.

Two studies, each ingested, analysed (vigil.analysis.runs.analyse) and rendered once per module:
  small: `vigil synth` with faults (400 patients, 2 sites, one refused delivery, quarantined rows);
  tiny:  two hand-made sites of two patients each, where nearly every cell is suppressed.
"""

from __future__ import annotations

import base64
import csv
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pypdfium2 import PdfDocument
from helpers import valid_rows, write_delivery

from vigil import warehouse
from vigil.report.disclosure import shown_small_counts
from vigil.ingest.load import delivery_order, ingest_delivery
from vigil.report import ReportError, render_report
from vigil.report.render import FIGURE_CACHE
from vigil.report.data import select_run
from vigil.analysis.runs import analyse

# Two studies ingested with GX (the report links their Data Docs) and rendered to PDF per module.
pytestmark = [pytest.mark.gx, pytest.mark.slow]

SECTIONS = ["cover", "methods", "monitoring", "attrition", "table1", "incidence", "risk-windows", "cumulative-incidence", "cox",
            "sensitivity", "data-quality"]


def _build(root: Path, folders: list[Path]) -> Path:
    db = root / "wh" / "vigil.duckdb"
    con = warehouse.connect(db)
    warehouse.create_layout(con)
    for folder in delivery_order(folders):
        ingest_delivery(con, folder, warehouse.gx_dir_for(db))
    analyse(con, {"test": "report"})
    con.close()
    return db


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from vigil.synth import synthesize_study

    root = tmp_path_factory.mktemp("small")
    synth = synthesize_study(root / "in", patients=400, sites=2, seed=5, faults=True)
    db = _build(root, synth.deliveries + synth.refused)
    result = render_report(db, root / "report")
    return db, result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rows = valid_rows()
    rows["patients"][0]["sex"] = "X"  # a quarantined patient: attrition step 1 and the annex have a 1
    folders = [write_delivery(root / "in", rows), write_delivery(root / "in", site="SE02", rows=valid_rows("SE02"))]
    db = _build(root, folders)
    return db, render_report(db, root / "report")


@pytest.fixture(params=["small", "tiny"])
def study(request):
    return request.getfixturevalue(request.param)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.src, self.href, self.figures, self.tags = set(), [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if "src" in a:
            self.src.append(a["src"])
        if "href" in a:
            self.href.append(a["href"])
        if tag == "figure":
            self.figures.append(a)


def _parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def test_report_files_exist(study):
    _, result = study
    assert result.html.is_file() and result.pdf.is_file() and result.xlsx.is_file()
    assert result.out_dir == result.html.parent and result.tables_dir == result.out_dir / "tables"
    assert result.out_dir.name == f"run-{result.run_id:06d}"
    assert (result.out_dir.parent / "current").resolve() == result.out_dir.resolve()
    assert result.tables and all(t.csv.is_file() for t in result.tables)


def test_sections_present_in_order(study):
    _, result = study
    html = result.html.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert set(SECTIONS) <= parsed.ids
    positions = [html.index(f'id="{s}"') for s in SECTIONS]
    assert positions == sorted(positions)
    assert result.sections == SECTIONS[1:]
    for text in ("Data cut", "Code version", "SAP v1.1", "Extract contract", "SHA-256", "Disclosure control"):
        assert text in html
    run_id = result.run_id
    assert f'<meta name="vigil-run-id" content="{run_id}">' in html


def test_every_figure_has_data(study):
    _, result = study
    html = result.html.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert parsed.figures, "the attrition flow at least"
    assert len(parsed.figures) == len(result.figures)
    for fig in parsed.figures:
        assert int(fig["data-points"]) > 0, fig["id"]
    assert all(points > 0 for points in result.figures.values())
    images = [s for s in parsed.src if s.startswith("data:image/png;base64,")]
    assert len(images) == len(parsed.figures)
    for uri in images:
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_html_is_self_contained(study):
    db, result = study
    html = result.html.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert "link" not in parsed.tags and "script" not in parsed.tags
    assert all(s.startswith("data:") for s in parsed.src)
    external = [h for h in parsed.href if not h.startswith("#")]
    docs = sorted((db.parent / "gx").glob("**/data_docs/local_site/index.html"))
    assert docs, "the ingest builds Data Docs beside the warehouse"
    assert external == [docs[0].resolve().as_uri()]  # the only link out: the Data Docs index
    assert not re.search(r"@import|url\(\s*['\"]?(?!data:)", html)


def test_pdf_has_pages(study):
    _, result = study
    pdf = result.pdf.read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert result.pages >= 10
    assert len(PdfDocument(result.pdf)) == result.pages  # as PDFium (Chromium's reader) counts them


def test_no_count_of_one_to_four_in_any_csv(study):
    _, result = study
    for table in result.tables:
        with table.csv.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        frame = pl.DataFrame([dict(zip(header, r)) for r in body]) if body else pl.DataFrame(schema=header)
        values = [c for c in header if c not in table.label_columns]
        assert shown_small_counts(frame, values) == [], table.id
        assert set(table.count_columns) <= set(values)


def test_tiny_study_is_mostly_suppressed(tiny):
    _, result = tiny
    cells = []
    for table in result.tables:
        with table.csv.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        index = [rows[0].index(c) for c in table.count_columns]
        cells += [r[i] for r in rows[1:] for i in index]
    hidden = sum(c in ("<5", "[c]") for c in cells)
    assert hidden / len([c for c in cells if c not in ("", "0", "—")]) > 0.9


def test_exports_carry_the_run_id_and_match_the_workbook(study):
    from openpyxl import load_workbook

    _, result = study
    wb = load_workbook(result.xlsx)
    assert result.xlsx.name == f"run{result.run_id}_tables.xlsx"
    assert len(wb.sheetnames) == len(result.tables)
    for table in result.tables:
        assert table.csv.name.startswith(f"run{result.run_id}_")
        ws = wb[table.sheet]
        assert ws["A1"].value == table.title
        with table.csv.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        assert [c.value for c in ws[2]][:len(rows[0])] == rows[0]
        for r, row in enumerate(rows[1:], start=3):
            for c, text in enumerate(row, start=1):
                value = ws.cell(row=r, column=c).value
                shown = "" if value is None else value
                if isinstance(value, (int, float)):
                    assert float(text.replace(",", "")) == value, (table.id, r, c)
                else:
                    assert shown == text, (table.id, r, c)


def test_every_table_in_the_html_has_its_csv(study):
    _, result = study
    html = result.html.read_text(encoding="utf-8")
    for table in result.tables:
        assert f"tables/{table.csv.name}" in html
        assert f'id="{table.id}"' in html


def test_data_quality_annex_shows_refusal_and_quarantine(small):
    _, result = small
    html = result.html.read_text(encoding="utf-8")
    assert "refused" in html and "sha256 mismatch" in html
    ids = {t.id for t in result.tables}
    assert {"dq_deliveries", "dq_rows", "dq_quarantine", "dq_reasons"} <= ids


def _with_a_second_run(db: Path, tmp_path: Path) -> Path:
    """A copy of the warehouse with run 2 made on the same inputs and parameters as run 1."""
    copy = tmp_path / "wh" / "vigil.duckdb"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    assert analyse(con, {"test": "report"}).run_id == 2
    con.close()
    return copy


def test_an_earlier_run_can_be_reported(tiny, tmp_path):
    copy = _with_a_second_run(tiny[0], tmp_path)
    con = duckdb.connect(str(copy), read_only=True)
    assert select_run(con, None)["run_id"] == 2  # the default: the latest completed run
    con.close()
    result = render_report(copy, tmp_path / "r1", run_id=1)
    assert result.run_id == 1 and "run 1 ·" in result.html.read_text(encoding="utf-8")
    assert all(t.csv.name.startswith("run1_") for t in result.tables)


def _exported_bytes(result) -> dict[str, bytes]:
    """Exported files by name without the run prefix."""
    return {f.name.split("_", 1)[1]: f.read_bytes() for f in sorted(result.tables_dir.iterdir())}


def test_a_rerun_on_the_same_inputs_exports_byte_identical_tables(tiny, tmp_path):
    copy = _with_a_second_run(tiny[0], tmp_path)
    first = render_report(copy, tmp_path / "report", run_id=1)
    second = render_report(copy, tmp_path / "report", run_id=2)
    assert first.out_dir != second.out_dir and first.html.is_file()
    assert (tmp_path / "report" / "current").resolve() == second.out_dir.resolve()
    assert _exported_bytes(first) == _exported_bytes(second)
    assert len(_exported_bytes(first)) == len(first.tables) + 1  # every CSV and the workbook


def test_rendering_a_run_again_replaces_its_folder_whole(tiny, tmp_path):
    db, first = tiny
    again = render_report(db, tmp_path / "report", run_id=first.run_id)
    (again.out_dir / "stray.txt").write_text("left by an earlier render")
    replaced = render_report(db, tmp_path / "report", run_id=first.run_id)
    assert replaced.out_dir == again.out_dir and not (replaced.out_dir / "stray.txt").exists()
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [FIGURE_CACHE, "current", replaced.out_dir.name]


def test_table_1_comes_from_the_runs_results_not_the_rebuilt_cohort(small, tmp_path):
    """Table 1 is results.table1_* of the run (issue 16): a cohort rebuilt or changed since does not touch it
    (before, the report aggregated cohort.patients and refused a run whose cohort had been rebuilt)."""
    db, first = small
    copy = tmp_path / "vigil.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM cohort.patients WHERE patient_id IN (SELECT patient_id FROM cohort.patients LIMIT 3)")
    con.close()
    again = render_report(copy, tmp_path / "out")
    assert _exported_bytes(again) == _exported_bytes(first)


def test_no_run_is_an_error(tmp_path):
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    con.close()
    with pytest.raises(ReportError, match="vigil analyse"):
        render_report(tmp_path / "empty.duckdb", tmp_path / "out")
    with pytest.raises(ReportError, match="no warehouse"):
        render_report(tmp_path / "missing.duckdb", tmp_path / "out")
