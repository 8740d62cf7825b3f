"""The portal's HTML: jinja2 templates (French), the report's own block templates reused.

Charts carry their plotly figure as JSON in a `<script type="application/json">`
block, which a browser never executes; /static/portal.js draws them. So the
pages hold no inline script and the CSP can forbid them all.
"""

from __future__ import annotations

import json
from functools import cache

import jinja2
from markupsafe import Markup

from pilotage.reports.formats import SPACE, format_date, format_datetime, format_value
from pilotage.reports.html import _raw, figure


def figure_json(fig: dict) -> Markup:
    """A figure as JSON safe inside a <script> element (no '</' can close it)."""
    text = json.dumps(fig, ensure_ascii=False, default=float)
    return Markup(text.replace("</", "<\\/").replace("<!--", "<\\!--"))


def chart_block(fig: dict | None, div_id: str) -> Markup:
    if fig is None:
        return Markup("")
    return Markup(f'<div class="portal-chart" id="{div_id}" data-figure="{div_id}-data"></div>'
                  f'<script type="application/json" id="{div_id}-data">') + figure_json(fig) + Markup("</script>")


def report_chart_html(chart, div_id: str) -> Markup:
    """The report templates' `chart_html`, for the portal: data block instead of an inline script."""
    return chart_block(figure(chart), div_id)


@cache
def environment() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.PackageLoader("pilotage.portal", "templates"),
                                  jinja2.PackageLoader("pilotage.reports", "templates")])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fr=format_value, fr_date=format_date, fr_datetime=format_datetime, raw=_raw)
    env.globals.update(chart_html=report_chart_html, chart_block=chart_block, SPACE=SPACE)
    return env


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
