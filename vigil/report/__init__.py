"""The incidence report for regulators (issue 5): `render_report(con_or_db, out_dir, run_id=None)`.

Reads one run's results and nothing else (results.*: A1-A5, Table 1 and data quality, all written by the
run; vigil.report.data), so any recorded run renders, from the warehouse or from its snapshot (whose
SHA-256 is checked first: vigil.warehouse.snapshots.check_snapshot), applies disclosure control
(vigil.report.disclosure, SAP section 5) to everything it publishes, and writes
<out>/run-<N>/ with report.html (self-contained), report.pdf (WeasyPrint) and tables/ (one CSV per
table and one XLSX workbook); <out>/current links to the newest. Templates: reports/report.html.j2
and reports/report.css.
"""

from vigil.report.data import ReportError
from vigil.report.render import ExportedTable, ReportResult, render_report

__all__ = ["ExportedTable", "ReportError", "ReportResult", "render_report"]
