"""A report as an Excel workbook (openpyxl): a cover sheet, then one sheet per block.

Cells are typed (numbers stay numbers, dates are dates) with native number
formats; each block sheet has a frozen header, an autofilter and column
widths fitted to its content; chart blocks get native Excel charts built on
the sheet's cells, not pictures. Text is always written as text: a label
starting with =, +, - or @ never becomes a formula.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from pilotage.reports.formats import EXCEL_FORMATS
from pilotage.reports.views import BlockView, Cell, ChartView, ReportView

HEADER_ROW = 4  # rows 1-2: title and context; the block's table starts on row 4
BOLD = Font(bold=True)
TITLE = Font(bold=True, size=14)
HEADER_FILL = PatternFill("solid", fgColor="DCE6F1")
TOTAL_BORDER = Border(top=Side(style="medium"))
WRAP = Alignment(wrap_text=True, vertical="top")
FORMULA_START = ("=", "+", "-", "@")
MAX_WIDTH, MIN_WIDTH = 60, 8
PACES = {"ahead": "en avance", "on_pace": "au rythme", "behind": "en retard", "none": "sans enveloppe"}


def put(sheet: Worksheet, row: int, column: int, value, kind: str = "text"):
    """Write one typed cell; text is always text (never a formula), numbers get their number format."""
    cell = sheet.cell(row=row, column=column)
    if value is None or value == "":
        return cell
    if kind == "text" or isinstance(value, str):
        text = str(value)
        cell.value = text
        cell.data_type = "s"  # openpyxl reads a leading = as a formula: force a string
        if text.startswith(FORMULA_START):
            cell.quotePrefix = True  # and Excel keeps it text when the cell is edited
        return cell
    if isinstance(value, (date, datetime)):
        cell.value = value
    else:
        cell.value = value if isinstance(value, int) else float(value)
    cell.number_format = EXCEL_FORMATS.get(kind, "General")
    return cell


def sheet_title(text: str, taken: set[str]) -> str:
    """A valid, unique sheet name (at most 31 characters, none of []:*?/\\)."""
    base = re.sub(r"[\[\]:*?/\\']", " ", text).strip()[:31] or "Feuille"
    name, number = base, 2
    while name.lower() in taken:
        suffix = f" ({number})"
        name, number = base[: 31 - len(suffix)] + suffix, number + 1
    taken.add(name.lower())
    return name


def fit_columns(sheet: Worksheet, texts: dict[int, list[str]]) -> None:
    for column, values in texts.items():
        width = max([len(v) for v in values] + [MIN_WIDTH - 2]) + 2
        sheet.column_dimensions[get_column_letter(column)].width = min(width, MAX_WIDTH)


def printable(sheet: Worksheet) -> None:
    """Landscape, all the columns on the page width, the header repeated on each page."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.page_setup.fitToWidth, sheet.page_setup.fitToHeight = 1, 0
    sheet.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"


class WorkbookWriter:
    def __init__(self, view: ReportView):
        self.view = view
        self.book = Workbook()
        self.taken: set[str] = set()

    def context(self) -> str:
        parts = [self.view.title]
        if self.view.region:
            parts.append(self.view.region[1])
        parts.append(self.view.period_text)
        return " – ".join(parts)

    def write(self, path: Path) -> Path:
        cover = self.book.active
        cover.title = sheet_title("Présentation", self.taken)
        sheets = []
        for block in self.view.blocks:
            sheet = self.book.create_sheet(sheet_title(block.id, self.taken))
            self.block(sheet, block)
            sheets.append((sheet.title, block.title))
        self.cover(cover, sheets)
        props = self.book.properties
        props.title, props.creator = self.context(), "pilotage"
        props.created = props.modified = self.view.generated_at.replace(microsecond=0)
        self.book.save(path)
        return path

    # -- cover -----------------------------------------------------------------------------------

    def cover(self, sheet: Worksheet, sheets: list[tuple[str, str]]) -> None:
        view = self.view
        put(sheet, 1, 1, view.title).font = TITLE
        facts = [
            ("Rapport", view.title, "text"),
            ("Région", f"{view.region[1]} ({view.region[0]})" if view.region else "France entière", "text"),
            ("Période", view.period_text, "text"),
            ("Situation au", view.end, "date"),
            ("Données connues au", view.known_at or view.as_of, "date"),
            ("Dernier dépôt chargé", view.as_of, "date"),
            ("Part de l'année écoulée", view.year_elapsed, "percent"),
            ("Généré le", view.generated_at.replace(microsecond=0), "datetime"),
        ]
        for row, (label, value, kind) in enumerate(facts, start=3):
            put(sheet, row, 1, label).font = BOLD
            put(sheet, row, 2, value, kind).alignment = Alignment(horizontal="left")
        row = len(facts) + 4
        if view.description:
            put(sheet, row, 1, view.description).alignment = WRAP
            sheet.merge_cells(start_row=row, start_column=1, end_row=row, end_column=4)
            sheet.row_dimensions[row].height = 45
            row += 2
        put(sheet, row, 1, "Définitions des indicateurs").font = BOLD
        header = row + 1
        for column, label in enumerate(("Indicateur", "Libellé", "Définition", "Format"), start=1):
            self.header_cell(sheet, header, column, label)
        for offset, indicator in enumerate(view.indicators, start=1):
            for column, value in enumerate((indicator.name, indicator.label, indicator.description,
                                            indicator.format), start=1):
                put(sheet, header + offset, column, value).alignment = WRAP
        row = header + len(view.indicators) + 2
        put(sheet, row, 1, "Feuilles").font = BOLD
        for offset, (name, title) in enumerate(sheets, start=1):
            put(sheet, row + offset, 1, name)
            put(sheet, row + offset, 2, title)
        for column, width in zip("ABCD", (26, 40, 80, 10)):
            sheet.column_dimensions[column].width = width
        printable(sheet)
        sheet.print_title_rows = None

    # -- blocks ----------------------------------------------------------------------------------

    def header_cell(self, sheet: Worksheet, row: int, column: int, label: str):
        cell = put(sheet, row, column, label)
        cell.font, cell.fill, cell.alignment = BOLD, HEADER_FILL, WRAP
        return cell

    def block(self, sheet: Worksheet, block: BlockView) -> None:
        put(sheet, 1, 1, block.title).font = TITLE
        put(sheet, 2, 1, self.context())
        header, rows, totals, keys = self.grid(block)
        texts: dict[int, list[str]] = {}
        for column, label in enumerate(header, start=1):
            self.header_cell(sheet, HEADER_ROW, column, label)
            texts.setdefault(column, []).append(label[:24])
        for number, line in enumerate(rows + ([totals] if totals else []), start=HEADER_ROW + 1):
            for column, cell in enumerate(line, start=1):
                written = put(sheet, number, column, cell.value, cell.kind)
                texts.setdefault(column, []).append(cell.text)
                if totals and line is totals:
                    written.font, written.border = BOLD, TOTAL_BORDER
        last = HEADER_ROW + len(rows)
        sheet.freeze_panes = sheet.cell(row=HEADER_ROW + 1, column=keys + 1)
        if rows:
            sheet.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(header))}{last}"
        fit_columns(sheet, texts)
        printable(sheet)
        sheet.row_dimensions[HEADER_ROW].height = 45 if any(len(h) > 14 for h in header) else 18
        if block.chart:
            self.chart(sheet, block, len(rows), len(header))

    def grid(self, block: BlockView) -> tuple[list[str], list[list[Cell]], list[Cell] | None, int]:
        """Header, rows, totals row and number of key columns of a block's sheet."""
        if block.table:
            table = block.table
            return list(table.header), [list(r) for r in table.rows], \
                list(table.totals) if table.totals else None, table.keys
        if block.tiles:
            changes = block.tiles[0].changes
            header = ["Indicateur", "Valeur"]
            for change in changes:
                header += [f"Valeur {change.label}", f"Évolution {change.label}"]
            rows = []
            for tile in block.tiles:
                line = [Cell(tile.label, "text"), tile.value]
                for change in tile.changes:
                    line += [change.before, change.change]
                rows.append(line)
            return header, rows, None, 1
        if block.gauges:
            header = ["Indicateur", "Réalisé", "Libellé du réalisé", "Enveloppe", "Libellé de l'enveloppe", "Taux",
                      "Part de l'année écoulée", "Rythme"]
            rows = [[Cell(g.label, "text"), g.value, Cell(g.value_label, "text"), g.target,
                     Cell(g.target_label, "text"), g.ratio, g.pace, Cell(PACES[g.status], "text")]
                    for g in block.gauges]
            return header, rows, None, 1
        chart = block.chart
        header = [chart.x_label] + [s.name for s in chart.series]
        rows = [[Cell(category, "text")] + [Cell(s.values[i], chart.value_kind) for s in chart.series]
                for i, category in enumerate(chart.categories)]
        if chart.reference:
            header.append(chart.reference[0])
            for line in rows:
                line.append(Cell(chart.reference[1], "percent"))
        return header, rows, None, 1

    def chart(self, sheet: Worksheet, block: BlockView, count: int, columns: int) -> None:
        view: ChartView = block.chart
        first, last = HEADER_ROW + 1, HEADER_ROW + count
        series_columns = columns - (1 if view.reference else 0)
        chart = LineChart() if view.kind == "line" else BarChart()
        if view.kind != "line":
            chart.type = "col"
            chart.grouping = "stacked" if view.kind == "stacked_bar" else "clustered"
            if view.kind == "stacked_bar":
                chart.overlap = 100
        data = Reference(sheet, min_col=2, max_col=series_columns, min_row=HEADER_ROW, max_row=last)
        chart.add_data(data, titles_from_data=True)
        categories = Reference(sheet, min_col=1, min_row=first, max_row=last)
        chart.set_categories(categories)
        if view.reference:
            line = LineChart()
            line.add_data(Reference(sheet, min_col=columns, max_col=columns, min_row=HEADER_ROW, max_row=last),
                          titles_from_data=True)
            chart += line
        chart.title = block.title
        chart.y_axis.title = view.y_label or None
        chart.x_axis.title = view.x_label
        chart.y_axis.number_format = EXCEL_FORMATS[view.value_kind].replace("\\ ", " ")
        chart.x_axis.delete = False
        chart.y_axis.delete = False
        chart.legend.position = "b"
        chart.width, chart.height = 26, 12
        sheet.add_chart(chart, f"{get_column_letter(columns + 2)}{HEADER_ROW}")


def write_workbook(view: ReportView, path: Path) -> Path:
    return WorkbookWriter(view).write(path)

