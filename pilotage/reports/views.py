"""What a report shows, ready for any output format: tiles, gauges, tables and charts of typed cells.

The HTML and Excel writers read these views and nothing else, so both show
the same figures with the same labels. A cell keeps its raw value (what the
cube answered; changes as fractions: 0.125 for +12.5 %) and its kind, which
says how to format it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

from pilotage.cubes.model import DIMENSIONS, members
from pilotage.measures.catalog import Catalog, Indicator
from pilotage.reports.data import Answers, column_name
from pilotage.reports.declarations import GEOGRAPHIES, Block, Chart, Column, Gauges, Report, Table, Tiles
from pilotage.reports.formats import format_period, format_value, short_week

COMPARED = {"previous": "previous", "vs_previous": "previous", "year_before": "year", "vs_year": "year"}
# How the comparison period of each period is said.
THEN = {
    ("week", "previous"): ("la semaine précédente", "sur une semaine"),
    ("week", "year"): ("la même semaine un an avant", "sur un an"),
    ("day", "previous"): ("la veille", "sur un jour"),
    ("month", "previous"): ("le mois précédent", "sur un mois"),
}
SHORT_NAMES = {"measure"}  # dimensions whose codes read better than their names in headers and legends
PACE_TOLERANCE = 0.05  # an envelope within 5 points of the year's pace is on pace


@dataclass(frozen=True)
class Cell:
    value: object
    kind: str  # see formats.KINDS

    @property
    def text(self) -> str:
        return format_value(self.value, self.kind)


@dataclass(frozen=True)
class Change:
    label: str  # "par rapport à la semaine précédente"
    before: Cell
    change: Cell  # a fraction, kind "change"
    direction: str  # up | down | flat | none
    tone: str  # good | bad | neutral


@dataclass(frozen=True)
class TileView:
    indicator: str
    label: str
    description: str
    value: Cell
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class GaugeView:
    label: str  # the ratio's label
    value_label: str
    target_label: str
    value: Cell
    target: Cell
    ratio: Cell
    pace: Cell  # share of the year elapsed
    status: str  # ahead | on_pace | behind | none


@dataclass(frozen=True)
class TableView:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    totals: tuple[Cell, ...] | None
    keys: int  # how many leading columns label the row (code, name)


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple


@dataclass(frozen=True)
class ChartView:
    kind: str  # line | bar | stacked_bar
    x_label: str
    y_label: str
    value_kind: str
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    reference: tuple[str, float] | None  # (label, value) of a horizontal line


@dataclass(frozen=True)
class BlockView:
    id: str
    type: str  # tiles | gauges | table | chart
    title: str
    tiles: tuple[TileView, ...] = ()
    gauges: tuple[GaugeView, ...] = ()
    table: TableView | None = None
    chart: ChartView | None = None


@dataclass(frozen=True)
class ReportView:
    name: str
    title: str
    description: str
    region: tuple[str, str] | None  # (code, name)
    region_level: str  # region_2005 | region_2016 | nation
    period_text: str
    end: date
    as_of: date
    known_at: date | None
    year_elapsed: float
    generated_at: datetime
    blocks: tuple[BlockView, ...]
    indicators: tuple[Indicator, ...]


def member_name(dim: str, code: str, short: bool = False) -> str:
    if DIMENSIONS[dim].is_time:
        return short_week(code) if short and dim == "week" else format_period(dim, code)
    if short and dim in SHORT_NAMES:
        return code
    return _names(dim).get(code, code)


@cache
def _names(dim: str) -> dict[str, str]:
    return dict(members(dim))


def _resolve(dim: str, geography: str) -> str:
    return GEOGRAPHIES[geography] if dim == "region" else dim


class Builder:
    """Builds the views of one report for one region (or the nation) from its answers."""

    def __init__(self, report: Report, catalog: Catalog, answers: Answers, geography: str, year_elapsed: float):
        self.report, self.catalog, self.answers = report, catalog, answers
        self.geography, self.year_elapsed = geography, year_elapsed

    def block(self, block: Block) -> BlockView:
        common = dict(id=block.id, title=block.title)
        if isinstance(block, Tiles):
            return BlockView(type="tiles", tiles=self.tiles(block), **common)
        if isinstance(block, Gauges):
            return BlockView(type="gauges", gauges=self.gauges(block), **common)
        if isinstance(block, Table):
            return BlockView(type="table", table=self.pivot(block) if block.pivot else self.table(block), **common)
        assert isinstance(block, Chart)
        return BlockView(type="chart", chart=self.chart(block), **common)

    # -- helpers ---------------------------------------------------------------------------------

    def cell(self, indicator: str, value, show: str = "value") -> Cell:
        if show.startswith("vs_"):
            return Cell(None if value is None else value / 100, "change")
        return Cell(value, self.catalog[indicator].format)

    def one_row(self, query: str) -> dict:
        rows = self.answers.rows(query)
        assert len(rows) == 1, f"query {query} answers one row"
        return rows[0]

    def then(self, query: str, how: str) -> tuple[str, str]:
        period = self.report.query(query).period
        return THEN.get((period, how), ("la période précédente" if how == "previous" else "un an avant",
                                        "sur une période" if how == "previous" else "sur un an"))

    # -- blocks ----------------------------------------------------------------------------------

    def tiles(self, block: Tiles) -> tuple[TileView, ...]:
        row = self.one_row(block.query)
        compare = self.report.query(block.query).compare
        views = []
        for tile in block.tiles:
            name = tile.indicator
            changes = tuple(self.change(name, row, how, tile.good, block.query) for how in compare)
            indicator = self.catalog[name]
            views.append(TileView(name, indicator.label, indicator.description, self.cell(name, row[name]), changes))
        return tuple(views)

    def change(self, name: str, row: dict, how: str, good: str, query: str) -> Change:
        before = row[column_name(name, "previous" if how == "previous" else "year_before")]
        change = self.cell(name, row[column_name(name, f"vs_{how}")], f"vs_{how}")
        value = change.value
        direction = "none" if value is None else "up" if value > 0 else "down" if value < 0 else "flat"
        tone = "neutral"
        if good != "neutral" and direction in ("up", "down"):
            tone = "good" if direction == good else "bad"
        label = "par rapport à " + self.then(query, how)[0]
        return Change(label, self.cell(name, before), change, direction, tone)

    def gauges(self, block: Gauges) -> tuple[GaugeView, ...]:
        row = self.one_row(block.query)
        views = []
        for gauge in block.gauges:
            ratio = row[gauge.ratio]
            status = "none" if ratio is None else "on_pace" if abs(ratio - self.year_elapsed) <= PACE_TOLERANCE \
                else "ahead" if ratio > self.year_elapsed else "behind"
            views.append(GaugeView(
                self.catalog[gauge.ratio].label, self.catalog[gauge.value].label, self.catalog[gauge.target].label,
                self.cell(gauge.value, row[gauge.value]), self.cell(gauge.target, row[gauge.target]),
                self.cell(gauge.ratio, ratio), Cell(self.year_elapsed, "percent"), status))
        return tuple(views)

    def header(self, column: Column) -> str:
        label = column.label or self.catalog[column.indicator].label
        if column.show == "value" or column.label:
            return label
        then, span = self.then(column.query, COMPARED[column.show])
        if column.show.startswith("vs_"):
            return f"{label} : évolution {span}"
        return f"{label}, {then}"

    def keyed(self, query: str, dims: list[str]) -> dict[tuple, dict]:
        return {tuple(row[d] for d in dims): row for row in self.answers.rows(query)}

    def table(self, block: Table) -> TableView:
        dim = _resolve(block.rows, self.geography)
        order = [row[dim] for row in self.answers.rows(block.query)]
        by_query = {q: self.keyed(q, [dim]) for q in block.queries()}
        rows = []
        for code in order:
            cells = [Cell(code, "text"), Cell(member_name(dim, code), "text")]
            for column in block.columns:
                row = by_query[column.query][(code,)]
                cells.append(self.cell(column.indicator, row[column_name(column.indicator, column.show)], column.show))
            rows.append(tuple(cells))
        totals = None
        if block.totals:
            totals = [Cell("", "text"), Cell("Total", "text")]
            for column in block.columns:
                row = self.answers.rows(column.query, (block.rows,))[0]
                totals.append(self.cell(column.indicator, row[column_name(column.indicator, column.show)], column.show))
            totals = tuple(totals)
        header = ("Code", DIMENSIONS[dim].label) + tuple(self.header(c) for c in block.columns)
        return TableView(header, tuple(rows), totals, 2)

    def pivot(self, block: Table) -> TableView:
        rows_dim, pivot_dim = _resolve(block.rows, self.geography), _resolve(block.pivot, self.geography)
        answer = self.answers.rows(block.query)
        row_codes = list(dict.fromkeys(r[rows_dim] for r in answer))
        column_codes = list(dict.fromkeys(r[pivot_dim] for r in answer))
        cells = {(r[rows_dim], r[pivot_dim]): r[block.value] for r in answer}
        name = block.value
        row_totals = column_totals = {}
        if block.totals:
            row_totals = {r[rows_dim]: r[name] for r in self.answers.rows(block.query, (block.pivot,))}
            column_totals = {r[pivot_dim]: r[name] for r in self.answers.rows(block.query, (block.rows,))}
        rows = []
        for code in row_codes:
            line = [Cell(code, "text"), Cell(member_name(rows_dim, code), "text")]
            line += [self.cell(name, cells.get((code, c))) for c in column_codes]
            if block.totals:
                line.append(self.cell(name, row_totals[code]))
            rows.append(tuple(line))
        totals = None
        if block.totals:
            grand = self.answers.rows(block.query, (block.rows, block.pivot))[0][name]
            totals = tuple([Cell("", "text"), Cell("Total", "text")]
                           + [self.cell(name, column_totals[c]) for c in column_codes] + [self.cell(name, grand)])
        header = ("Code", DIMENSIONS[rows_dim].label) + tuple(member_name(pivot_dim, c, short=True)
                                                            for c in column_codes)
        return TableView(header + (("Total",) if block.totals else ()), tuple(rows), totals, 2)

    def chart(self, block: Chart) -> ChartView:
        x_dim = _resolve(block.x, self.geography)
        answer = self.answers.rows(block.query)
        x_codes = list(dict.fromkeys(r[x_dim] for r in answer))
        categories = tuple(member_name(x_dim, c, short=True) for c in x_codes)
        if block.series:
            series_dim = _resolve(block.series, self.geography)
            name = block.values[0]
            values = {(r[series_dim], r[x_dim]): r[name] for r in answer}
            codes = list(dict.fromkeys(r[series_dim] for r in answer))
            series = tuple(Series(member_name(series_dim, s, short=True), tuple(values[(s, x)] for x in x_codes))
                           for s in codes)
            y_label = self.catalog[name].label
        else:
            by_x = {r[x_dim]: r for r in answer}
            series = tuple(Series(self.catalog[v].label, tuple(by_x[x][v] for x in x_codes)) for v in block.values)
            y_label = self.catalog[block.values[0]].label if len(block.values) == 1 else ""  # the legend says
        reference = ("Part de l'année écoulée", self.year_elapsed) if block.reference == "year_elapsed" else None
        return ChartView(block.chart, DIMENSIONS[x_dim].label, y_label, self.catalog[block.values[0]].format,
                         categories, series, reference)


def build_view(report: Report, catalog: Catalog, answers: Answers, *, geography: str, end: date, as_of: date,
               known_at: date | None, year_elapsed: float, generated_at: datetime, period_text: str) -> ReportView:
    builder = Builder(report, catalog, answers, geography, year_elapsed)
    level = GEOGRAPHIES[geography] if report.per == "region" else "nation"
    region = (answers.region, member_name(level, answers.region)) if answers.region else None
    return ReportView(
        name=report.name, title=report.title, description=report.description, region=region, region_level=level,
        period_text=period_text, end=end, as_of=as_of, known_at=known_at, year_elapsed=year_elapsed,
        generated_at=generated_at, blocks=tuple(builder.block(b) for b in report.blocks),
        indicators=tuple(catalog[n] for n in report.indicators()),
    )
