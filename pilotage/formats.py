"""Rendering rows (dicts with the same keys) as a terminal table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal


def _plain(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    return value


def to_json(rows: list[dict] | dict) -> str:
    if isinstance(rows, dict):
        return json.dumps({k: _plain(v) for k, v in rows.items()}, ensure_ascii=False, indent=2)
    return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], ensure_ascii=False, indent=2)


def to_csv(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else _plain(row[c]) for c in columns])
    return out.getvalue()


def to_table(rows: list[dict], columns: tuple[str, ...] | list[str], max_width: int = 60) -> str:
    def cell(value) -> str:
        text = "" if value is None else str(_plain(value))
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def write_table(table, fmt: str, output: str | None) -> None:
    """Write an Arrow table as table/csv/json to a file or stdout, or as an xlsx file."""
    import click

    rows = table.to_pylist()
    columns = table.column_names
    if fmt == "xlsx":
        if not output:
            raise click.UsageError("--format xlsx needs --output FILE")
        to_xlsx(rows, columns, output)
        click.echo(f"{len(rows)} rows written to {output}", err=True)
        return
    text = {"csv": lambda: to_csv(rows, columns), "json": lambda: to_json(rows) + "\n",
            "table": lambda: to_table(rows, columns) + "\n"}[fmt]()
    if output:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


def to_xlsx(rows: list[dict], columns, path: str) -> None:
    """A plain typed sheet: numbers stay numbers, text starting with = + - @ stays text."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "résultat"
    sheet.append(list(columns))
    for row in rows:
        sheet.append([_xlsx_cell(row[c]) for c in columns])
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell.value, str):
                cell.data_type = "s"
    sheet.freeze_panes = "A2"
    book.save(path)


def _xlsx_cell(value):
    if isinstance(value, Decimal):
        return float(value)
    return value
