"""The HTML body of a weekly summary, from the views of the reports it attaches.

Each attached report (a region's, or the nation's) gives one section of the
body: the blocks its declaration's `mail` section names -- the KPI tiles, a
few columns of one table, one chart drawn as an inline image. The body and
the attachments come from the same view, so they show the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from pilotage.reports.declarations import Report, Table
from pilotage.reports.delivery.message import chart_cid
from pilotage.reports.formats import format_date, format_datetime, format_value, format_week
from pilotage.reports.views import ChartView, TableView, TileView
from pilotage.reports.render import Prepared


@dataclass(frozen=True)
class Section:
    heading: str | None  # the region's name, when the message holds several regions
    tiles_title: str
    tiles: tuple[TileView, ...]
    table_title: str
    table: TableView
    chart_title: str
    chart: ChartView
    cid: str


@dataclass(frozen=True)
class Revision:
    """A figure already sent for an earlier week, changed since by late data."""

    week: str
    indicator: str
    label: str
    before: object
    after: object
    kind: str  # the indicator's format (integer, euro...)

    @property
    def week_text(self) -> str:
        return format_week(self.week, with_year=True).capitalize()

    @property
    def before_text(self) -> str:
        return format_value(self.before, self.kind)

    @property
    def after_text(self) -> str:
        return format_value(self.after, self.kind)

    @property
    def change_text(self) -> str:
        delta = (self.after or 0) - (self.before or 0)
        return ("+" if delta > 0 else "") + format_value(delta, self.kind)


def sections(report: Report, prepared: Sequence[Prepared], first_cid: int = 0) -> list[Section]:
    """One section per prepared view, with the blocks of the report's `mail` declaration."""
    mail = report.mail
    if mail is None:
        raise ValueError(f"report {report.name!r} declares no mail section (tiles, table, columns, chart)")
    table_block = next(b for b in report.blocks if b.id == mail.table)
    assert isinstance(table_block, Table)
    found = []
    for index, item in enumerate(prepared):
        blocks = {block.id: block for block in item.view.blocks}
        region = item.view.region
        found.append(Section(
            heading=region[1] if region and len(prepared) > 1 else None,
            tiles_title=blocks[mail.tiles].title, tiles=blocks[mail.tiles].tiles,
            table_title=blocks[mail.table].title,
            table=short_table(blocks[mail.table].table, table_block, mail.columns),
            chart_title=blocks[mail.chart].title, chart=blocks[mail.chart].chart,
            cid=chart_cid(first_cid + index)))
    return found


def short_table(table: TableView, block: Table, columns: Sequence[str]) -> TableView:
    """The table with its key columns and only the value columns named (in that order)."""
    position = {c.indicator: table.keys + i for i, c in enumerate(block.columns) if c.show == "value"}
    keep = list(range(table.keys)) + [position[name] for name in columns]
    return TableView(header=tuple(table.header[i] for i in keep),
                     rows=tuple(tuple(row[i] for i in keep) for row in table.rows),
                     totals=tuple(table.totals[i] for i in keep) if table.totals else None, keys=table.keys)


def render_body(subject: str, scope_label: str, period_text: str, as_of: date, sections_: Sequence[Section],
                revisions: Sequence[Revision], attachment_names: Sequence[str], generated_at: datetime,
                templates=None) -> str:
    from pilotage.reports.html import environment

    return environment(templates).get_template("mail.html").render(
        subject=subject, scope_label=scope_label, period_text=period_text, as_of_text=format_date(as_of),
        sections=sections_, revisions=revisions, attachment_names=attachment_names,
        generated_text=format_datetime(generated_at))
