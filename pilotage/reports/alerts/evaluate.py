"""Evaluating the rules through the cube: one query per rule, for all its members at once.

Each rule asks the cube for its indicator (and the one it is divided by) broken
down by its dimensions -- plus the period for a change -- in one request; the
cube answers every member of the breakdown (zero flows included), and the
conditions are computed on the whole answer with polars. What comes out is one
`Observation` per (rule, member, threshold): its state, the value judged, the
limit and a French sentence saying why.

- OK / FIRING: the member has a value and meets the condition or not;
- NO DATA: no value to judge (no envelope, a base of zero or below `min_base`);
- ERROR: the rule's query failed; one observation for the whole rule (member
  '*'), with the error text; the other rules are still evaluated.

Rules are evaluated at the warehouse's data date (`as_of`: the newest drop
loaded), so a re-run on the same data gives the same observations.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from pilotage.cubes import Cube
from pilotage.cubes.model import DIMENSIONS, members
from pilotage.reports.alerts.rules import Rule, Rules, Threshold
from pilotage.reports.formats import SPACE, format_period, format_value
from pilotage.reports.periods import year_elapsed

OK, FIRING, NO_DATA, ERROR = "OK", "FIRING", "NO DATA", "ERROR"
STATES = (OK, FIRING, NO_DATA, ERROR)
WHOLE_RULE = "*"  # the member of a rule-level observation (its query failed)
_PERIOD_NOUN = {"week": ("semaine", "semaines", "la semaine précédente"),
                "month": ("mois", "mois", "le mois précédent"),
                "quarter": ("trimestre", "trimestres", "le trimestre précédent")}


@dataclass(frozen=True)
class Observation:
    rule: str
    member: str  # 'region_2005=25|measure=CAE' (WHOLE_RULE for a rule-level error)
    member_label: str  # 'Basse-Normandie · CAE'
    threshold: str  # Threshold.key: 'above 0.9'
    period: str  # '2006' for a once-per-year rule, else ''
    state: str
    severity: str
    value: float | None  # the value judged: the indicator or ratio, the pace gap in points, the change
    limit: float
    detail: str  # French
    as_of: date


@dataclass
class Evaluation:
    as_of: date
    observations: list[Observation] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # rule name -> error text


def evaluate(cube: Cube, rules: Rules | list[Rule], as_of: date | None = None) -> Evaluation:
    """Every rule at the data date (or `as_of`), one cube query per rule, on one connection."""
    with cube.reading():
        as_of = as_of or cube.as_of()
        evaluation = Evaluation(as_of)
        for rule in rules:
            try:
                frame, end = _values(cube, rule, as_of)
                evaluation.observations += _judge(cube, rule, frame, end, as_of)
            except Exception as exc:  # noqa: BLE001 -- a failing rule must not stop the others
                text = f"{type(exc).__name__}: {exc}".strip()
                evaluation.errors[rule.name] = text
                evaluation.observations += [
                    Observation(rule.name, WHOLE_RULE, "toute la règle", t.key, _period_key(rule, as_of), ERROR,
                                t.severity, None, t.limit, f"{rule.label} : la règle n'a pas pu être évaluée ({text})",
                                as_of) for t in rule.thresholds]
    return evaluation


# -- the query ----------------------------------------------------------------------------------------

def last_complete(period: str, as_of: date) -> tuple[date, date]:
    """First and last day of the last complete week, month or quarter on `as_of`."""
    if period == "week":
        end = as_of if as_of.weekday() == 6 else as_of - timedelta(days=as_of.weekday() + 1)
        return end - timedelta(days=6), end
    months = 1 if period == "month" else 3
    if period not in ("month", "quarter"):
        raise ValueError(f"period {period!r} is not week, month or quarter")
    first = date(as_of.year, (as_of.month - 1) // months * months + 1, 1)  # of the period holding as_of
    last = _add_months(first, months) - timedelta(days=1)
    if last != as_of:
        last, first = first - timedelta(days=1), _add_months(first, -months)
    return first, last


def _add_months(day: date, count: int) -> date:
    index = day.year * 12 + day.month - 1 + count
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _window_start(period: str, first: date, count: int) -> date:
    """The first day of the period `count` periods before the one starting on `first`."""
    if period == "week":
        return first - timedelta(weeks=count)
    return _add_months(first, -count * (1 if period == "month" else 3))


def _period_key(rule: Rule, end: date) -> str:
    return str(end.year) if rule.once_per == "year" else ""


def _values(cube: Cube, rule: Rule, as_of: date) -> tuple[pl.DataFrame, date]:
    """The rule's one cube query: member columns, the period (for a change), and `value` as Float64."""
    measures = [rule.indicator] + ([rule.ratio_to] if rule.ratio_to else [])
    where = {dim: list(codes) for dim, codes in rule.where} or None
    by = list(rule.by)
    if rule.period is None:
        start, end = None, as_of
    else:
        start, end = last_complete(rule.period, as_of)
        if rule.kind == "change":
            start = _window_start(rule.period, start, rule.periods)
            by.append(rule.period)
    table = cube.query(measures, by=by, where=where, start=start, end=end)
    frame = pl.from_arrow(table)
    value = pl.col(rule.indicator).cast(pl.Float64)
    if rule.ratio_to:
        denominator = pl.col(rule.ratio_to).cast(pl.Float64)
        value = pl.when(denominator.is_null() | (denominator == 0)).then(None).otherwise(value / denominator)
    return frame.with_columns(value.alias("value")).select(by + ["value"]), end


# -- the conditions -----------------------------------------------------------------------------------

def _judge(cube: Cube, rule: Rule, frame: pl.DataFrame, end: date, as_of: date) -> list[Observation]:
    dims = list(rule.by)
    if rule.kind == "change":
        frame = _change(rule, frame, dims)
    elif rule.kind == "pace":
        elapsed = year_elapsed(end)
        frame = frame.with_columns(judged=(elapsed - pl.col("value")) * 100, elapsed=pl.lit(elapsed))
    else:
        frame = frame.with_columns(judged=pl.col("value"))
    fmt = "percent" if rule.share else cube.catalog[rule.indicator].format  # of the value judged
    value_fmt = "percent" if rule.ratio_to else cube.catalog[rule.indicator].format  # of the indicator
    label = cube.catalog[rule.indicator].label if rule.ratio_to is None else rule.label
    names = {dim: dict(members(dim)) for dim in dims}
    period = _period_key(rule, end)
    observations = []
    for row in frame.sort(dims).to_dicts() if dims else frame.to_dicts():
        member = "|".join(f"{dim}={row[dim]}" for dim in dims)
        member_label = " · ".join(_member_name(dim, row[dim], names[dim]) for dim in dims) or "France entière"
        for threshold in rule.thresholds:
            state = _state(rule, threshold, row)
            detail = _detail(rule, threshold, row, state, label, fmt, end, value_fmt)
            observations.append(Observation(rule.name, member, member_label, threshold.key, period, state,
                                            threshold.severity, row["judged"], threshold.limit, detail, as_of))
    return observations


def _change(rule: Rule, frame: pl.DataFrame, dims: list[str]) -> pl.DataFrame:
    """Per member: the value of the last period, its base (the previous period, or the mean of N) and the change."""
    labels = sorted(frame[rule.period].unique().to_list())
    current, before = labels[-1], labels[-1 - rule.periods:-1]
    base = (frame.filter(pl.col(rule.period).is_in(before))
            .group_by(dims or pl.lit(1)).agg(base=pl.col("value").mean(), count=pl.col("value").count()))
    now = frame.filter(pl.col(rule.period) == current).select(dims + ["value"])
    joined = now.join(base, on=dims, how="left") if dims else pl.concat([now, base.select("base", "count")],
                                                                        how="horizontal")
    usable = pl.col("base").is_not_null() & (pl.col("count") == len(before)) & (pl.col("base") != 0)
    if rule.min_base is not None:
        usable = usable & (pl.col("base") >= rule.min_base)
    return joined.with_columns(
        judged=pl.when(usable & pl.col("value").is_not_null())
        .then((pl.col("value") - pl.col("base")) / pl.col("base").abs()).otherwise(None),
        label=pl.lit(current))


def _state(rule: Rule, threshold: Threshold, row: dict) -> str:
    judged = row["judged"]
    if judged is None or judged != judged:
        return NO_DATA
    if threshold.direction == "above":
        firing = judged >= threshold.limit - 1e-12
    elif threshold.direction == "below":
        firing = judged <= threshold.limit + 1e-12
    else:  # behind the pace by more than the limit
        firing = judged > threshold.limit + 1e-9
    return FIRING if firing else OK


def _member_name(dim: str, code, names: dict) -> str:
    if dim in ("measure",) or DIMENSIONS[dim].kind == "attribute" and dim != "beneficiary_category":
        return str(code)
    return names.get(code, str(code))


# -- the French sentences -----------------------------------------------------------------------------

def _text(value, kind: str) -> str:
    return format_value(value, kind).replace(SPACE, " ")


def format_limit(value: float, kind: str) -> str:
    """A limit as written by people: '90 %', '-30 %', '1 000' (no useless ',0')."""
    text = _text(value, kind)
    return re.sub(r",0+(?=$| )", "", text)


def _change_detail(rule: Rule, threshold: Threshold, row: dict, state: str, label: str, value_fmt: str) -> str:
    noun, plural, previous = _PERIOD_NOUN[rule.period]
    when = format_period(rule.period, row["label"])
    current = "aucune valeur" if row["value"] is None else _text(row["value"], value_fmt)
    if rule.change_vs == "previous":
        basis = previous
    else:
        basis = f"en moyenne sur les {rule.periods} {plural} " + ("précédentes" if noun == "semaine" else "précédents")
    base = row.get("base")
    if state == NO_DATA:
        if base is None or base != base:
            why = "pas de base de comparaison"
        elif base == 0:
            why = "base nulle"
        else:
            why = f"base trop faible ({_text(base, 'decimal')} pour un minimum de {format_limit(rule.min_base, 'decimal')})"
        return f"{label}, {when} : {current} ; {why}, pas de comparaison"
    base_fmt = "decimal" if value_fmt == "integer" and rule.change_vs == "mean" else value_fmt
    return (f"{label}, {when} : {current} contre {_text(base, base_fmt)} {basis}, soit "
            f"{_text(row['judged'], 'change')} (seuil {_sign(threshold.limit)}{format_limit(threshold.limit, 'percent')})")


def _detail(rule: Rule, threshold: Threshold, row: dict, state: str, label: str, fmt: str, end: date,
            value_fmt: str) -> str:
    if rule.kind == "change":
        return _change_detail(rule, threshold, row, state, label, value_fmt)
    if state == NO_DATA:
        hint = " (pas d'enveloppe ?)" if "envelope" in (rule.ratio_to or "") or rule.indicator in (
            "financial_consumption", "physical_realisation") else ""
        return f"{label} : aucune valeur{hint}"
    if rule.kind == "pace":
        gap = row["judged"]
        where = f"{_points(abs(gap))} de retard" if gap >= 0 else f"{_points(abs(gap))} d'avance"
        return (f"{label} : {_text(row['value'], 'percent')} pour {_text(row['elapsed'], 'percent')} de l'année "
                f"écoulée, soit {where} (seuil {_points(threshold.limit)} de retard)")
    when = "" if rule.period is None else f", {format_period(rule.period, _label(rule.period, end))}"
    return f"{label}{when} : {_text(row['value'], fmt)} (seuil {format_limit(threshold.limit, fmt)})"


def _sign(limit: float) -> str:
    return "+" if limit > 0 else ""


def _points(value: float) -> str:
    text = _text(value, "decimal").removesuffix(",0")
    return f"{text} point" + ("s" if abs(value) >= 2 else "")


def _label(period: str, end: date) -> str:
    if period == "week":
        year, week, _ = end.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{end.year}-{end.month:02d}"
    return f"{end.year}-Q{(end.month - 1) // 3 + 1}"
