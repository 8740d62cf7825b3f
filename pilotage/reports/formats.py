"""French number and date formats for reports, and the matching Excel number formats.

Numbers are grouped by three with a no-break space and use a decimal comma:
`1 234 567`, `12,5 %`, `1 234,56 €`; dates are `14/03/2006`; ISO weeks are
`semaine 11`. Rounding is half up, the way a reader rounds by hand.

>>> format_value(1234567, "integer").replace(SPACE, " ")
'1 234 567'
>>> format_value(0.125, "percent").replace(SPACE, " ")
'12,5 %'
>>> format_value(1234.56, "euro").replace(SPACE, " ")
'1 234,56 €'
>>> format_date(date(2006, 3, 14))
'14/03/2006'
>>> format_week("2006-W11")
'semaine 11'
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

SPACE = "\u00a0"  # no-break space: a figure never wraps inside a table cell
MISSING = "–"  # shown where a value does not exist (no envelope, nothing to compare with)

# Kinds of value a report shows: the indicator formats of the catalog, plus these.
KINDS = ("integer", "decimal", "euro", "percent", "change", "date", "text")

# Excel number formats: Excel and LibreOffice show them with the reader's separators.
EXCEL_FORMATS = {
    "integer": "#,##0",
    "decimal": "#,##0.0",
    "euro": '#,##0.00\\ "€"',
    "percent": "0.0\\ %",
    "change": "+0.0\\ %;-0.0\\ %;0.0\\ %",
    "date": "dd/mm/yyyy",
    "datetime": "dd/mm/yyyy hh:mm",
    "text": "@",
}

_DIGITS = {"integer": 0, "decimal": 1, "euro": 2, "percent": 1, "change": 1}


def _rounded(value, digits: int) -> Decimal:
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return number.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def format_number(value, digits: int = 0) -> str:
    """Grouped by three with a no-break space, decimal comma: 1 234 567,8."""
    number = _rounded(value, digits)
    if number == 0:
        number = abs(number)  # no "-0,0"
    sign = "-" if number < 0 else ""
    whole, _, fraction = f"{abs(number):f}".partition(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    text = SPACE.join(groups) or "0"
    return sign + text + ("," + fraction if fraction else "")


def format_value(value, kind: str) -> str:
    """A value as a French reader expects it; `kind` is one of KINDS."""
    if value is None:
        return MISSING
    if kind == "text":
        return str(value)
    if kind == "date":
        return format_date(value)
    if isinstance(value, float) and value != value:  # NaN
        return MISSING
    if kind == "percent":
        return format_number(Decimal(str(value)) * 100, 1) + SPACE + "%"
    if kind == "change":
        text = format_number(Decimal(str(value)) * 100, 1)
        sign = "" if text.startswith("-") or text == "0,0" else "+"
        return sign + text + SPACE + "%"
    if kind == "euro":
        return format_number(value, 2) + SPACE + "€"
    if kind in _DIGITS:
        return format_number(value, _DIGITS[kind])
    raise ValueError(f"unknown value kind {kind!r}; valid: {', '.join(KINDS)}")


def format_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def format_datetime(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y à %H:%M")


def format_week(label: str, with_year: bool = False) -> str:
    """'2006-W11' -> 'semaine 11' (or 'semaine 11 de 2006')."""
    year, _, week = label.partition("-W")
    text = f"semaine {int(week)}"
    return f"{text} de {year}" if with_year else text


def format_period(grain: str, label: str) -> str:
    """A period label of the cube (2006-W11, 2006-03, 2006-Q1, 2006, 2006-03-14) in French."""
    if grain == "week":
        return format_week(label, with_year=True)
    if grain == "day":
        return format_date(date.fromisoformat(label))
    if grain == "month":
        year, month = label.split("-")
        return f"{MONTHS[int(month) - 1]} {year}"
    if grain == "quarter":
        year, quarter = label.split("-Q")
        return f"{quarter}{'er' if quarter == '1' else 'e'} trimestre {year}"
    return label


def short_week(label: str) -> str:
    """'2006-W11' -> 'S11 2006', for chart axes."""
    year, _, week = label.partition("-W")
    return f"S{int(week):02d} {year}"


MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")
