"""The figures of the HTML and Excel reports are the cube's answers to the same queries.

The expected values come from plain `Cube.query` / `Cube.compare` calls made
here (a regional report's with a `Scope` of its region), not from the
reports' own query layer; the HTML is read back with html.parser and the
workbooks with openpyxl.
"""

from __future__ import annotations

import re
import textwrap
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from openpyxl import load_workbook

from dropkit import report_warehouse
from pilotage.cubes import Cube, Scope
from pilotage.cubes.model import members
from pilotage.measures.catalog import load_catalog
from pilotage.reports import ReportError, get_report, render_report
from pilotage.reports.data import fetch, needed_queries, request_signature
from pilotage.reports.excel import HEADER_ROW
from pilotage.reports.formats import EXCEL_FORMATS, SPACE, format_value
from pilotage.reports.html import plotly_js
from pilotage.warehouse.reference import departments

DAY = date(2006, 3, 15)  # a Wednesday: the week in progress runs Monday 13 to Wednesday 15
MONDAY = date(2006, 3, 13)
WEEK = "2006-W10"  # a whole week, Monday 6 to Sunday 12 March
WEEK_MONDAY, WEEK_SUNDAY = date(2006, 3, 6), date(2006, 3, 12)
GENERATED = datetime(2006, 3, 16, 7, 30)
ENVELOPES = ["entries_ytd", "physical_envelope", "physical_realisation", "payments_ytd_eur",
             "financial_envelope_eur", "financial_consumption"]
NAMES = {dim: dict(members(dim)) for dim in ("department", "region_2005", "region_2016", "measure")}



@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Cube:
    return Cube(report_warehouse(tmp_path_factory))


@pytest.fixture(scope="module")
def daily(cube, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("daily")
    paths = render_report(cube, "daily", as_of=DAY, out_dir=out, generated_at=GENERATED)
    return {p.suffix: p for p in paths}


@pytest.fixture(scope="module")
def regional(cube, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("regional")
    paths = render_report(cube, "weekly-regional", week=WEEK, region=["25", "11"], out_dir=out, generated_at=GENERATED)
    return {p.name: p for p in paths}


# -- reading the outputs back ------------------------------------------------------------------------

class Page(HTMLParser):
    """Tables (by id: header, body and footer cells), tile figures, scripts and times of a report page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.tiles: dict[str, list[tuple[str, str]]] = {}
        self.gauges: list[list[tuple[str, str]]] = []
        self.scripts: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._table = self._section = self._cell = self._figures = self._data = None
        self._script: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        classes = (attrs.get("class") or "").split()
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), {"head": [], "body": [], "foot": [], "caption": ""})
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = {"thead": "head", "tbody": "body", "tfoot": "foot"}[tag]
        elif tag == "tr" and self._table is not None:
            self._table[self._section].append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = {"tag": tag, "scope": attrs.get("scope"), "value": attrs.get("data-value"), "text": ""}
        elif tag == "caption":
            self._cell = {"caption": True, "text": ""}
        elif tag == "article" and "tile" in classes:
            self._figures = []
            if "gauge" in classes:
                self.gauges.append(self._figures)
            else:
                self.tiles[attrs["data-indicator"]] = self._figures
        elif tag == "data" and self._figures is not None:
            self._data = [attrs["value"], ""]
        elif tag == "script":
            self._script = []

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._table[self._section][-1].append(self._cell)
            self._cell = None
        elif tag == "caption" and self._cell is not None:
            self._table["caption"], self._cell = self._cell["text"], None
        elif tag == "table":
            self._table = None
        elif tag == "article":
            self._figures = None
        elif tag == "data" and self._data is not None and self._figures is not None:
            self._figures.append(tuple(self._data))
            self._data = None
        elif tag == "script":
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data
        if self._data is not None:
            self._data[1] += data

    def rows(self, table: str, section: str = "body") -> list[list[dict]]:
        return self.tables[table][section]


def page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def sheet_rows(path: Path, sheet: str) -> tuple[list[str], list[list], list[list]]:
    """Header, data rows and a possible totals row (cells) of a block sheet."""
    book = load_workbook(path)
    ws = book[sheet]
    header = [c.value for c in ws[HEADER_ROW]]
    rows = [list(r) for r in ws.iter_rows(min_row=HEADER_ROW + 1, max_col=len(header))]
    return header, rows


# -- comparing -----------------------------------------------------------------------------------------

def same(raw: str | None, expected) -> bool:
    """A data-value attribute or a cell value against the cube's value."""
    if expected is None:
        return raw in ("", None)
    if isinstance(raw, str):
        if isinstance(expected, bool) or isinstance(expected, int):
            return int(raw) == expected
        if isinstance(expected, Decimal):
            return Decimal(raw) == expected
        return float(raw) == pytest.approx(expected, rel=1e-12)
    if isinstance(expected, Decimal):
        return raw == pytest.approx(float(expected), abs=0.005)
    return raw == pytest.approx(expected, rel=1e-12)


def check_html_row(cells: list[dict], expected: list[tuple]) -> None:
    """cells: the row's cells after the key columns; expected: (value, kind) pairs."""
    assert len(cells) == len(expected)
    for cell, (value, kind) in zip(cells, expected):
        assert same(cell["value"], value), (cell, value)
        assert cell["text"] == format_value(value, kind), (cell, value)


def check_sheet_row(cells: list, expected: list[tuple]) -> None:
    assert len(cells) == len(expected)
    for cell, (value, kind) in zip(cells, expected):
        assert same(cell.value, value), (cell.coordinate, cell.value, value)
        if value is not None:
            assert cell.data_type == "n" and cell.number_format == EXCEL_FORMATS[kind], cell.coordinate


def compared(cube: Cube, measures, by, start, end, scope=None) -> tuple[list[dict], list[dict]]:
    args = dict(by=by, start=start, end=end, scope=scope)
    return (cube.compare(measures, how="previous", **args).to_pylist(),
            cube.compare(measures, how="year", **args).to_pylist())


def pct(value):
    return None if value is None else value / 100


# -- the daily report --------------------------------------------------------------------------------

def test_daily_files_say_report_and_date(daily):
    assert sorted(p.name for p in daily.values()) == ["quotidien_2006-03-15.html", "quotidien_2006-03-15.xlsx"]


def test_daily_tiles_are_the_cube_comparisons(cube, daily):
    previous, year = compared(cube, ["stock", "entries", "exits"], ["week"], MONDAY, DAY)
    assert len(previous) == 1 and previous[0]["week"] == "2006-W11"
    tiles = page(daily[".html"]).tiles
    ws = load_workbook(daily[".xlsx"])["semaine"]
    for row, name in enumerate(["stock", "entries", "exits"], start=HEADER_ROW + 1):
        p, y = previous[0], year[0]
        expected = [(p[name], "integer"), (pct(p[f"{name}_change_pct"]), "change"), (p[f"{name}_previous"], "integer"),
                    (pct(y[f"{name}_change_pct"]), "change"), (y[f"{name}_year_before"], "integer")]
        figures = tiles[name]
        for (raw, text), (value, kind) in zip(figures, expected, strict=True):
            assert same(raw, value) and text == format_value(value, kind)
        cells = [ws.cell(row, c) for c in range(2, 7)]
        check_sheet_row(cells, [expected[0], expected[2], expected[1], expected[4], expected[3]])


def test_daily_envelope_gauges(cube, daily):
    answer = cube.query(ENVELOPES, start=DAY, end=DAY).to_pylist()[0]
    gauges = page(daily[".html"]).gauges
    expected = [("physical_realisation", "entries_ytd", "physical_envelope"),
                ("financial_consumption", "payments_ytd_eur", "financial_envelope_eur")]
    assert len(gauges) == 2
    for figures, names in zip(gauges, expected):
        for (raw, text), name in zip(figures, names, strict=True):
            assert same(raw, answer[name])
            assert text == format_value(answer[name], cube.catalog[name].format)
    assert re.fullmatch(r"\d{1,3},\d %", gauges[0][0][1].replace(SPACE, " "))
    assert re.fullmatch(r"\d{1,3}( \d{3})*,\d\d €", gauges[1][1][1].replace(SPACE, " "))


def test_daily_table_by_measure_with_totals(cube, daily):
    flows = ["stock", "entries", "exits", "early_exits"]
    previous, year = compared(cube, flows, ["measure", "week"], MONDAY, DAY)
    ytd = cube.query(ENVELOPES, by=["measure"], start=DAY, end=DAY).to_pylist()
    total_previous, total_year = compared(cube, flows, ["week"], MONDAY, DAY)
    total_ytd = cube.query(ENVELOPES, start=DAY, end=DAY).to_pylist()

    def line(p, y, e):
        return ([(p["stock"], "integer"), (p["entries"], "integer"), (pct(p["entries_change_pct"]), "change"),
                 (pct(y["entries_change_pct"]), "change"), (p["exits"], "integer"), (p["early_exits"], "integer")]
                + [(e[n], cube.catalog[n].format) for n in ENVELOPES])

    expected = [line(p, y, e) for p, y, e in zip(previous, year, ytd)]
    totals = line(total_previous[0], total_year[0], total_ytd[0])
    html = page(daily[".html"])
    body = html.rows("table-mesures")
    assert [r[0]["text"] for r in body] == [p["measure"] for p in previous] == ["CAE", "CAV", "CIE", "CIRMA"]
    assert [r[1]["text"] for r in body] == [NAMES["measure"][p["measure"]] for p in previous]
    assert body[0][1]["tag"] == "th" and body[0][1]["scope"] == "row"
    for cells, values in zip(body, expected, strict=True):
        check_html_row(cells[2:], values)
    check_html_row(html.rows("table-mesures", "foot")[0][2:], totals)
    assert all(c["tag"] == "th" and c["scope"] == "col" for c in html.rows("table-mesures", "head")[0])
    assert html.tables["table-mesures"]["caption"] == "Situation par mesure"

    header, rows = sheet_rows(daily[".xlsx"], "mesures")
    assert header[:4] == ["Code", "Mesure", "Contrats en cours", "Entrées"]
    assert header[4] == "Entrées : évolution sur une semaine"
    for cells, values in zip(rows, expected + [totals], strict=True):
        check_sheet_row(cells[2:], values)
    assert rows[-1][1].value == "Total" and rows[-1][1].font.b


def test_daily_region_by_measure_pivot(cube, daily):
    cells = cube.query(["entries_ytd"], by=["region_2005", "measure"], start=DAY, end=DAY).to_pylist()
    by_region = cube.query(["entries_ytd"], by=["region_2005"], start=DAY, end=DAY).to_pylist()
    by_measure = cube.query(["entries_ytd"], by=["measure"], start=DAY, end=DAY).to_pylist()
    grand = cube.query(["entries_ytd"], start=DAY, end=DAY).to_pylist()[0]["entries_ytd"]
    html = page(daily[".html"])
    assert [c["text"] for c in html.rows("table-regions-mesures", "head")[0]] == \
        ["Code", "Région", "CAE", "CAV", "CIE", "CIRMA", "Total"]
    body = html.rows("table-regions-mesures")
    assert len(body) == len(by_region) == len(members("region_2005"))
    header, rows = sheet_rows(daily[".xlsx"], "regions-mesures")
    for index, region in enumerate(by_region):
        values = [(c["entries_ytd"], "integer") for c in cells if c["region_2005"] == region["region_2005"]]
        values.append((region["entries_ytd"], "integer"))
        assert body[index][0]["text"] == region["region_2005"]
        check_html_row(body[index][2:], values)
        check_sheet_row(rows[index][2:], values)
    totals = [(m["entries_ytd"], "integer") for m in by_measure] + [(grand, "integer")]
    check_html_row(html.rows("table-regions-mesures", "foot")[0][2:], totals)
    check_sheet_row(rows[-1][2:], totals)


def test_daily_charts_show_the_weekly_series(cube, daily):
    first = MONDAY - timedelta(weeks=51)
    weekly = cube.query(["entries", "exits", "stock"], by=["measure", "week"], start=first, end=DAY).to_pylist()
    weeks = list(dict.fromkeys(r["week"] for r in weekly))
    assert len(weeks) == 52 and weeks[-1] == "2006-W11"
    html = page(daily[".html"])
    header, rows = sheet_rows(daily[".xlsx"], "stock-52")
    assert header == ["Semaine", "CAE", "CAV", "CIE", "CIRMA"]
    body = html.rows("donnees-stock-52")
    assert len(body) == len(rows) == 52
    for index, week in enumerate(weeks):
        values = [(r["stock"], "integer") for r in weekly if r["week"] == week]
        check_html_row(body[index][1:], values)
        check_sheet_row(rows[index][1:], values)
    regions = cube.query(["physical_realisation", "financial_consumption"], by=["region_2005"], start=DAY,
                         end=DAY).to_pylist()
    body = html.rows("donnees-conso-regions")
    for cells, region in zip(body, regions, strict=True):
        assert cells[0]["text"] == NAMES["region_2005"][region["region_2005"]]
        check_html_row(cells[1:], [(region["physical_realisation"], "percent"),
                                   (region["financial_consumption"], "percent")])


def test_plotly_is_embedded_once_and_each_chart_drawn_by_one_script(daily):
    text = daily[".html"].read_text(encoding="utf-8")
    html = Page(text)
    charts = ["entrees-52", "sorties-52", "stock-52", "conso-regions"]
    assert text.count(plotly_js()[:300]) == 1
    assert len(html.scripts) == 1 + len(charts)
    assert sum('Plotly.newPlot' in s for s in html.scripts) == len(charts)
    assert not [tag for tag, attrs in html.tags if "src" in attrs]  # nothing loaded from elsewhere
    assert [attrs["href"] for tag, attrs in html.tags if tag == "link"] == ["data:,"]
    ours = text.replace(plotly_js(), "")
    assert "http://" not in ours and "https://" not in ours


def test_data_date_knowledge_date_and_accessibility(daily):
    html = page(daily[".html"])
    times = {a.get("class"): a.get("datetime") for tag, a in html.tags if tag == "time"}
    assert times["data-date"] == "2006-03-15"
    assert times["known-date"] == "2006-03-31"  # the newest drop loaded
    assert times["generated"] == "2006-03-16T07:30:00"
    assert ("html", {"lang": "fr"}) in html.tags
    assert all(t["caption"] for t in html.tables.values())
    assert "@media print" in daily[".html"].read_text(encoding="utf-8")


def test_workbook_sheets_are_typed_frozen_filtered_and_fitted(daily):
    book = load_workbook(daily[".xlsx"])
    assert book.sheetnames == ["Présentation", "semaine", "enveloppes", "mesures", "entrees-52", "sorties-52",
                               "stock-52", "conso-regions", "regions-mesures"]
    cover = book["Présentation"]
    facts = {cover.cell(r, 1).value: cover.cell(r, 2) for r in range(3, 11)}
    assert facts["Situation au"].value == datetime(2006, 3, 15) and facts["Situation au"].number_format == "dd/mm/yyyy"
    assert facts["Données connues au"].value == datetime(2006, 3, 31)
    assert facts["Généré le"].value == GENERATED
    labels = {cover.cell(r, 1).value: cover.cell(r, 3).value for r in range(1, cover.max_row + 1)}
    assert labels["physical_realisation"] == load_catalog()["physical_realisation"].description
    sheet = book["mesures"]
    assert sheet.freeze_panes == "C5"
    assert sheet.auto_filter.ref == "A4:N8"
    assert sheet.column_dimensions["B"].width > sheet.column_dimensions["A"].width
    assert book["stock-52"].freeze_panes == "B5"
    with zipfile.ZipFile(daily[".xlsx"]) as archive:
        charts = [n for n in archive.namelist() if re.fullmatch(r"xl/charts/chart\d+\.xml", n)]
        assert len(charts) == 4
        xml = archive.read("xl/charts/chart1.xml").decode()
        assert "<barChart>" in xml and "'entrees-52'!$B$5:$B$56" in xml and "stacked" in xml
        assert "<f>" not in "".join(archive.read(n).decode() for n in archive.namelist()
                                    if n.startswith("xl/worksheets/"))


def test_same_report_twice_same_content(cube, tmp_path):
    first = render_report(cube, "daily", as_of=DAY, out_dir=tmp_path / "a", generated_at=datetime(2006, 3, 16, 7))
    second = render_report(cube, "daily", as_of=DAY, out_dir=tmp_path / "b", generated_at=datetime(2006, 3, 17, 9))

    def html(path):
        text = path.read_text(encoding="utf-8")
        return re.sub(r'<time class="generated"[^>]*>[^<]*</time>', "", text)

    def cells(path):
        book = load_workbook(path)
        return [(ws.title, c.coordinate, c.value, c.number_format) for ws in book for row in ws.iter_rows()
                for c in row if not (ws.title == "Présentation" and c.row == 10)]

    assert html(first[0]) == html(second[0])
    assert cells(first[1]) == cells(second[1])
    with zipfile.ZipFile(first[1]) as a, zipfile.ZipFile(second[1]) as b:
        assert a.read("xl/charts/chart1.xml") == b.read("xl/charts/chart1.xml")


def test_templates_can_be_overridden(cube, tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "report-daily.html").write_text(
        '{% extends "report.html" %}{% block footer %}<p class="ours">Service {{ report.title }}</p>{% endblock %}',
        encoding="utf-8")
    paths = render_report(cube, "daily", as_of=DAY, formats=["html"], out_dir=tmp_path / "out",
                          templates=[tmp_path / "templates"])
    text = paths[0].read_text(encoding="utf-8")
    assert '<p class="ours">Service Tableau de bord national</p>' in text and "Produit par pilotage" not in text
    assert "table-mesures" in text


def test_known_at_answers_as_the_warehouse_knew_it(cube, tmp_path):
    known = date(2006, 3, 10)
    paths = render_report(cube, "daily", known_at=known, formats=["html"], out_dir=tmp_path)
    assert paths[0].name == "quotidien_2006-03-10.html"
    html = page(paths[0])
    times = {a.get("class"): a.get("datetime") for tag, a in html.tags if tag == "time"}
    assert times["data-date"] == times["known-date"] == "2006-03-10"
    answer = cube.query(ENVELOPES, start=known, end=known, known_at=known).to_pylist()[0]
    assert same(html.gauges[0][1][0], answer["entries_ytd"])


# -- the regional report -------------------------------------------------------------------------------

def test_regional_files_say_report_region_and_week(regional):
    assert sorted(regional) == ["hebdo_region-11_2006-W10.html", "hebdo_region-11_2006-W10.xlsx",
                                "hebdo_region-25_2006-W10.html", "hebdo_region-25_2006-W10.xlsx"]


@pytest.mark.parametrize("region", ["25", "11"])
def test_regional_department_table_is_the_scoped_cube_answer(cube, regional, region):
    scope = Scope.of("region_2005", region)
    previous, year = compared(cube, ["stock", "entries", "exits"], ["department", "week"], WEEK_MONDAY,
                              WEEK_SUNDAY, scope)
    ytd = cube.query(["entries_ytd", "payments_ytd_eur"], by=["department"], start=WEEK_SUNDAY, end=WEEK_SUNDAY,
                     scope=scope).to_pylist()
    total_previous, total_year = compared(cube, ["stock", "entries", "exits"], ["week"], WEEK_MONDAY, WEEK_SUNDAY,
                                          scope)
    total_ytd = cube.query(["entries_ytd", "payments_ytd_eur"], start=WEEK_SUNDAY, end=WEEK_SUNDAY,
                           scope=scope).to_pylist()

    def line(p, y, e):
        values = []
        for name in ("stock", "entries", "exits"):
            values += [(p[name], "integer"), (pct(p[f"{name}_change_pct"]), "change"),
                       (pct(y[f"{name}_change_pct"]), "change")]
        return values + [(e["entries_ytd"], "integer"), (e["payments_ytd_eur"], "euro")]

    expected = [line(p, y, e) for p, y, e in zip(previous, year, ytd)]
    departments = [p["department"] for p in previous]
    assert departments == [d for d in NAMES["department"] if d in {r["department"] for r in ytd}]
    html = page(regional[f"hebdo_region-{region}_2006-W10.html"])
    body = html.rows("table-departements")
    assert [r[0]["text"] for r in body] == departments  # only the region's departments
    for cells, values in zip(body, expected, strict=True):
        check_html_row(cells[2:], values)
    check_html_row(html.rows("table-departements", "foot")[0][2:],
                   line(total_previous[0], total_year[0], total_ytd[0]))
    header, rows = sheet_rows(regional[f"hebdo_region-{region}_2006-W10.xlsx"], "departements")
    assert [r[0].value for r in rows[:-1]] == departments
    for cells, values in zip(rows, expected + [line(total_previous[0], total_year[0], total_ytd[0])], strict=True):
        check_sheet_row(cells[2:], values)


def test_regional_tiles_and_envelopes_are_the_region_s(cube, regional):
    scope = Scope.of("region_2005", "25")
    previous, _ = compared(cube, ["stock", "entries", "exits"], ["week"], WEEK_MONDAY, WEEK_SUNDAY, scope)
    envelopes = cube.query(ENVELOPES, start=WEEK_SUNDAY, end=WEEK_SUNDAY, scope=scope).to_pylist()[0]
    html = page(regional["hebdo_region-25_2006-W10.html"])
    assert same(html.tiles["stock"][0][0], previous[0]["stock"])
    assert same(html.gauges[1][2][0], envelopes["financial_envelope_eur"])
    assert "Basse-Normandie" in "".join(html.text)
    assert "Semaine 10 de 2006, du 06/03/2006 au 12/03/2006" in "".join(html.text)


def test_regional_queries_are_batched_not_repeated_per_region(cube):
    class CountingCube(Cube):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls: list[tuple] = []

        def answer(self, measures, by=(), *args, **kwargs):
            self.calls.append(("query", tuple(by)))
            return super().answer(measures, by, *args, **kwargs)

        def compare(self, measures, by=(), *args, **kwargs):
            self.calls.append(("compare", tuple(by)))
            return super().compare(measures, by, *args, **kwargs)

    counting = CountingCube(cube.warehouse)
    report = get_report("weekly-regional")
    with counting.reading():
        every = fetch(counting, report, WEEK_SUNDAY, regions=None)
    calls_for_all = list(counting.calls)
    counting.calls.clear()
    with counting.reading():
        fetch(counting, report, WEEK_SUNDAY, regions=("25",))
    assert len(every) == len(members("region_2005"))
    distinct = {request_signature(report, key, "2005") for key in needed_queries(report)}
    assert len(distinct) < len(needed_queries(report))  # the totals of the tables are the tiles' query
    calls = sum(len(compare) or 1 for *_, compare in distinct)  # one cube call per comparison asked
    assert len(calls_for_all) == len(counting.calls) == calls
    assert all(by[0] == "region_2005" for _, by in calls_for_all)
    # each region's answers hold only its own rows
    regions = {d.code: d.region_2005_code for d in departments()}
    for code, answers in every.items():
        for row in answers.rows("week_by_department"):
            assert regions[row["department"]] == code


def test_geography_2016(cube, tmp_path):
    paths = render_report(cube, "weekly-regional", week=WEEK, region="28", geography="2016", formats=["xlsx"],
                          out_dir=tmp_path)
    assert [p.name for p in paths] == ["hebdo_region2016-28_2006-W10.xlsx"]
    header, rows = sheet_rows(paths[0], "departements")
    assert [r[0].value for r in rows[:-1]] == ["14", "27", "50", "61", "76"]  # both Normandies
    envelope = cube.query(["physical_envelope"], start=WEEK_SUNDAY, end=WEEK_SUNDAY,
                          scope=Scope.of("region_2016", "28")).to_pylist()[0]["physical_envelope"]
    _, gauges = sheet_rows(paths[0], "enveloppes")
    assert gauges[0][3].value == envelope


def test_a_scope_restricts_every_figure(cube, tmp_path):
    paths = render_report(cube, "daily", as_of=DAY, scope="region_2005:25", formats=["html"], out_dir=tmp_path)
    html = page(paths[0])
    assert [r[0]["text"] for r in html.rows("table-regions-mesures")] == ["25"]
    scoped = cube.query(["stock"], start=DAY, end=DAY, scope=Scope.of("region_2005", "25")).to_pylist()[0]
    assert same(html.tiles["stock"][0][0], scoped["stock"])


def test_request_errors(cube, tmp_path):
    with pytest.raises(ReportError, match="is national: it takes no region"):
        render_report(cube, "daily", region="25", out_dir=tmp_path)
    with pytest.raises(ReportError, match="unknown region_2005 code"):
        render_report(cube, "weekly-regional", region="99", out_dir=tmp_path)
    with pytest.raises(ReportError, match="starts after the data date"):
        render_report(cube, "weekly-regional", week="2006-W30", out_dir=tmp_path)
    with pytest.raises(ReportError, match="unknown format"):
        render_report(cube, "daily", formats=["pdf"], out_dir=tmp_path)
    with pytest.raises(ReportError, match="geography"):
        render_report(cube, "weekly-regional", geography="1982", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# -- labels are data -----------------------------------------------------------------------------------

TRAP = "=1+1 <script>alert(1)</script>"


def test_a_label_holding_markup_or_a_formula_stays_inert(tmp_path, tmp_path_factory):
    (tmp_path / "measures").mkdir()
    (tmp_path / "measures" / "trap.yml").write_text(textwrap.dedent(f"""
        indicators:
          - name: trap
            label: "{TRAP}"
            description: "-2+3 <b onmouseover=alert(2)>gras</b>"
            kind: flow
            format: integer
            fact: contracts
            date: start_date
    """), encoding="utf-8")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "trap.yml").write_text(textwrap.dedent("""
        report: trap
        title: "@SUM(A1) <img src=x onerror=alert(3)>"
        per: region
        queries:
          q: {measures: [trap, entries], by: [department], period: week}
        blocks:
          - {id: tableau, type: table, title: "+cmd|' /C calc'!A0", query: q, rows: department,
             columns: [trap, entries]}
          - {id: courbe, type: chart, chart: bar, title: "<b>barres</b>", query: q, x: department, values: [trap]}
    """), encoding="utf-8")
    cube = Cube(report_warehouse(tmp_path_factory), load_catalog([tmp_path / "measures"]))
    paths = render_report(cube, "trap", region="25", out_dir=tmp_path / "out",
                          definitions=[tmp_path / "reports"])
    text = paths[0].read_text(encoding="utf-8")
    html = Page(text)
    assert "<script>alert" not in text and "<img src=x" not in text and "<b onmouseover" not in text
    assert not [t for t, a in html.tags if t == "img" or any(k.startswith("on") for k in a)]
    assert len(html.scripts) == 2  # plotly.js and the one chart
    assert TRAP in [c["text"] for c in html.rows("table-tableau", "head")[0]]
    assert "@SUM(A1) <img src=x onerror=alert(3)>" in "".join(html.text)
    book = load_workbook(paths[1])
    header = book["tableau"][HEADER_ROW][2]
    assert header.value == TRAP and header.data_type == "s" and header.quotePrefix
    title = book["tableau"]["A1"]
    assert title.value == "+cmd|' /C calc'!A0" and title.data_type == "s"
    assert book["Présentation"]["A1"].value == "@SUM(A1) <img src=x onerror=alert(3)>"
    with zipfile.ZipFile(paths[1]) as archive:
        assert not [n for n in archive.namelist() if n.startswith("xl/worksheets/")
                    and "<f>" in archive.read(n).decode()]
