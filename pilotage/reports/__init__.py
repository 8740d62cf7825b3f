"""Reports: declared in YAML, computed through the cube, written as HTML and Excel.

    from pilotage.reports import render_report
    render_report(cube, "daily", out_dir="out")  # -> [out/quotidien_2006-03-14.html, ...xlsx]

Layers, each a module: declarations (YAML -> frozen dataclasses), periods,
data (the cube queries, batched across regions), views (typed cells, tiles,
tables, charts), formats (French), html (jinja2 + plotly), excel (openpyxl),
render (files).
"""

from pilotage.reports.declarations import Report, ReportError, get_report, load_reports
from pilotage.reports.render import render_report, report_regions

__all__ = ["Report", "ReportError", "get_report", "load_reports", "render_report", "report_regions"]
