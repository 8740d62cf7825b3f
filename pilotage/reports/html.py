"""A report as one self-contained HTML file: jinja2 templates, plotly charts, no network.

plotly.js is embedded once per file, in the head; each chart is a div and a
call to Plotly.newPlot (plotly's `to_html` with `include_plotlyjs=False`).
Autoescaping is on: labels are data, never markup. Chart labels are escaped
too, since plotly reads a few HTML tags in its texts.

Templates can be overridden: a folder given as `templates` (or named by
$PILOTAGE_TEMPLATES) is searched first, for `report-<name>.html`, then
`report.html`, and for the partials (`_table.html`, ...).
"""

from __future__ import annotations

import html
import os
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from pilotage.reports.formats import SPACE, format_date, format_datetime, format_value
from pilotage.reports.views import ChartView, ReportView

ENV_VAR = "PILOTAGE_TEMPLATES"
CHART_HEIGHT = 380
PALETTE = ("#1f5fa8", "#e07b00", "#2a9d5b", "#b83b5e", "#6b4fa0", "#8c6d31", "#17becf", "#7f7f7f")
# plotly's d3 formats for each kind of value, with French separators set in the layout
TICK_FORMATS = {"integer": (",d", ""), "decimal": (",.1f", ""), "euro": (",.0f", " €"), "percent": (".0%", "")}
HOVER_FORMATS = {"integer": ",d", "decimal": ",.1f", "euro": ",.2f", "percent": ".1%"}


@cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def environment(templates: list[str | os.PathLike] | None = None) -> jinja2.Environment:
    folders = list(templates or []) + [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return _environment(tuple(str(Path(f)) for f in folders))


@cache
def _environment(folders: tuple[str, ...]) -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(list(folders)),
                                  jinja2.PackageLoader("pilotage.reports", "templates")])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fr=format_value, fr_date=format_date, fr_datetime=format_datetime, raw=_raw)
    env.globals.update(chart_html=chart_html, SPACE=SPACE)
    return env


def _raw(value) -> str:
    """The machine value of a cell, for data-value attributes (tests and scripts read them)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_html(view: ReportView, templates: list[str | os.PathLike] | None = None) -> str:
    env = environment(templates)
    template = env.select_template([f"report-{view.name}.html", "report.html"])
    return template.render(report=view, plotly_js=plotly_js())


def write_html(view: ReportView, path: Path, templates: list[str | os.PathLike] | None = None) -> Path:
    path.write_text(render_html(view, templates), encoding="utf-8")
    return path


def _text(value: str) -> str:
    """Plotly reads <b>, <br>, <a>... in its texts: escape them so a label stays a label."""
    return html.escape(str(value), quote=False)


def figure(chart: ChartView) -> dict:
    """The plotly figure of a chart, as a plain dict (no validation pass: it is built here)."""
    tick, suffix = TICK_FORMATS[chart.value_kind]
    hover = "%{x}<br>%{fullData.name} : %{y:" + HOVER_FORMATS[chart.value_kind] + "}" + suffix + "<extra></extra>"
    x = [_text(c) for c in chart.categories]
    data = []
    for index, series in enumerate(chart.series):
        trace = {"name": _text(series.name), "x": x, "y": [None if v is None else float(v) for v in series.values],
                 "hovertemplate": hover, "marker": {"color": PALETTE[index % len(PALETTE)]}}
        if chart.kind == "line":
            trace.update(type="scatter", mode="lines", line={"color": PALETTE[index % len(PALETTE)], "width": 2})
        else:
            trace.update(type="bar")
        data.append(trace)
    layout = {
        "height": CHART_HEIGHT, "margin": {"l": 70, "r": 20, "t": 20, "b": 90},
        "separators": ", ", "barmode": "stack" if chart.kind == "stacked_bar" else "group",
        "legend": {"orientation": "h", "y": -0.3, "traceorder": "normal"}, "hovermode": "closest",
        "xaxis": {"type": "category", "tickangle": -45 if len(x) > 12 else 0, "automargin": True},
        "yaxis": {"title": {"text": _text(chart.y_label)}, "tickformat": tick, "ticksuffix": suffix,
                  "rangemode": "tozero", "automargin": True},
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif", "size": 12},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
    }
    if chart.reference:
        label, value = chart.reference
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": value, "y1": value,
                             "line": {"color": "#b00020", "dash": "dash", "width": 2}}]
        layout["annotations"] = [{"xref": "paper", "x": 1, "y": value, "xanchor": "right", "yanchor": "bottom",
                                  "showarrow": False, "text": _text(f"{label} : {format_value(value, 'percent')}"),
                                  "font": {"color": "#b00020"}}]
    return {"data": data, "layout": layout}


def chart_html(chart: ChartView, div_id: str) -> str:
    """The div and script drawing a chart; plotly.js itself is in the page's head."""
    import plotly.io as pio

    config = {"displaylogo": False, "responsive": True,
              "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}
    return Markup(pio.to_html(figure(chart), config=config, include_plotlyjs=False, include_mathjax=False,
                              full_html=False, div_id=div_id, validate=False, default_height=f"{CHART_HEIGHT}px"))
