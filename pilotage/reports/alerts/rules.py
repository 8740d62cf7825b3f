"""Alert rules: `alerts.yml`, read and checked into frozen dataclasses.

A rule watches one indicator (or its ratio to another) broken down by some
dimensions (region x measure, say) and fires for each member that meets its
condition. Three kinds of condition:

- a threshold on the value: `{above: [75 %, 90 %, 100 %]}` or `{below: 10}`;
- the pace of the year: `{behind_pace_points: 15}` -- the share of the year
  elapsed minus the value (a ratio), in points, above the limit;
- a change: `{change_vs: previous}` or `{change_vs: mean, periods: 4}` with
  `above`/`below` limits on the relative change (`below: -30 %`), of the last
  complete `period` (week, month, quarter) against the period before or the
  mean of the N periods before.

Each threshold of a list is an alert of its own (75 % and 90 % fire
separately, once each). `once_per: year` keys the state by the year: a
threshold fires at most once per member and year, and the new year starts
afresh instead of "resolving" every alert when the year-to-date figures go
back to zero.

The file is checked when read: every error names the file, the rule and the
key; unknown indicators and dimensions are refused with the valid list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from pilotage.cubes.model import DIMENSIONS, GEOGRAPHY, TIME, members
from pilotage.measures.catalog import Catalog, load_catalog

SEVERITIES = ("info", "warning", "critical")
PERIODS = ("week", "month", "quarter")  # a change is judged on the last complete one
CHANGES = ("previous", "mean")
ONCE_PER = ("year",)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]]+@[^@\s<>,;:\"()\[\]]+\.[^@\s<>,;:\"()\[\]]+$")
_PERCENT = re.compile(r"^\s*([+-]?\d+(?:[.,]\d+)?)\s*%\s*$")
_RULE_KEYS = ("name", "label", "indicator", "ratio_to", "by", "where", "period", "condition", "severity",
              "once_per", "recipients")
_CONDITION_KEYS = ("above", "below", "behind_pace_points", "change_vs", "periods", "min_base")


class AlertRulesError(ValueError):
    """A problem in the rules file; the message names the file, the rule and the key."""

    def __init__(self, path: Path | None, rule: str | None, key: str | None, problem: str):
        self.path, self.rule, self.key, self.problem = path, rule, key, problem
        where = [str(path) if path else "alerts"]
        if rule:
            where.append(f"rule {rule}")
        if key:
            where.append(key)
        super().__init__(f"{': '.join(where)}: {problem}")


@dataclass(frozen=True)
class Threshold:
    """One limit of a rule: the member fires when its value is `direction` the limit."""

    direction: str  # above (value >= limit) | below (value <= limit) | behind (pace gap > limit)
    limit: float
    severity: str

    @property
    def key(self) -> str:
        """What identifies the threshold in the stored state ('above 0.9')."""
        return f"{self.direction} {self.limit:g}"


@dataclass(frozen=True)
class Rule:
    name: str
    label: str  # French title for messages
    indicator: str
    by: tuple[str, ...]
    thresholds: tuple[Threshold, ...]
    kind: str  # value | pace | change
    ratio_to: str | None = None
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    period: str | None = None  # None: the year to date at the data date; else the last complete period
    change_vs: str | None = None  # previous | mean
    periods: int = 1  # how many periods the mean is taken over
    min_base: float | None = None  # a change against a smaller base is not judged (NO DATA)
    once_per: str | None = None
    recipients: tuple[str, ...] = ("scope",)  # 'scope' and/or addresses
    share: bool = False  # the value judged is a share (a ratio, or a change): shown as %
    source: Path | None = None


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    path: Path | None = None

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def example_rules_path() -> Path:
    """The built-in rules (the examples of issue #5), also the example `pilotage init` writes."""
    return Path(str(resources.files("pilotage.reports.alerts") / "alerts.yml"))


def example_rules() -> str:
    return example_rules_path().read_text(encoding="utf-8")


def load_rules(path: str | os.PathLike | None = None, catalog: Catalog | None = None) -> Rules:
    """Read and check a rules file (the built-in one when `path` is None)."""
    path = Path(path) if path is not None else example_rules_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlertRulesError(path, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlertRulesError(path, None, None, f"cannot read: {exc}") from None
    return parse_rules(text, path, catalog)


def parse_rules(text: str, path: Path | None = None, catalog: Catalog | None = None) -> Rules:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise AlertRulesError(path, None, None, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") \
            from None
    if data is None:
        return Rules((), path)
    if not isinstance(data, Mapping) or set(data) != {"rules"}:
        raise AlertRulesError(path, None, None, "expected a mapping with the single key 'rules' (a list of rules)")
    items = data["rules"] or []
    if not isinstance(items, list):
        raise AlertRulesError(path, None, "rules", "must be a list of rules")
    catalog = catalog or load_catalog()
    rules: list[Rule] = []
    for number, item in enumerate(items, start=1):
        rule = _rule(item, number, path, catalog)
        if any(r.name == rule.name for r in rules):
            raise AlertRulesError(path, rule.name, "name", "another rule has this name")
        rules.append(rule)
    return Rules(tuple(rules), path)


def _rule(item, number: int, path: Path | None, catalog: Catalog) -> Rule:
    if not isinstance(item, Mapping):
        raise AlertRulesError(path, f"#{number}", None, "each rule is a mapping (name, indicator, by, condition...)")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise AlertRulesError(path, f"#{number}", "name", f"{name!r} is not a rule name (lower case letters, digits, "
                                                        "'-' and '_', e.g. consommation-financiere)")

    def fail(key: str | None, problem: str):
        raise AlertRulesError(path, name, key, problem)

    unknown = sorted(str(k) for k in item if k not in _RULE_KEYS)
    if unknown:
        fail(unknown[0], f"unknown key; valid: {', '.join(_RULE_KEYS)}")
    indicator = _indicator(item.get("indicator"), "indicator", catalog, fail, required=True)
    ratio_to = _indicator(item.get("ratio_to"), "ratio_to", catalog, fail, required=False)
    by = item.get("by", [])
    by = [by] if isinstance(by, str) else by
    if not isinstance(by, list) or not all(isinstance(d, str) for d in by):
        fail("by", "must be a list of dimensions, e.g. [region_2005, measure]")
    valid_dims = [d for d, dim in DIMENSIONS.items() if not dim.is_time]
    for dim in by:
        if dim not in valid_dims:
            fail("by", f"unknown dimension {dim!r}; valid: {', '.join(valid_dims)}"
                       + (" (the period is given by `period`)" if dim in TIME else ""))
    if len(set(by)) != len(by):
        fail("by", "a dimension is listed twice")
    where = _where(item.get("where"), fail, valid_dims)

    label = item.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        fail("label", "must be a text")
    period = item.get("period")
    if period is not None and period not in PERIODS:
        fail("period", f"{period!r} is not one of {', '.join(PERIODS)} (leave it out for the year to date)")
    once_per = item.get("once_per")
    if once_per is not None and once_per not in ONCE_PER:
        fail("once_per", f"{once_per!r} is not one of {', '.join(ONCE_PER)}")

    condition = item.get("condition")
    if not isinstance(condition, Mapping) or not condition:
        fail("condition", "missing: e.g. {above: [75 %, 90 %]}, {behind_pace_points: 15} or "
                          "{change_vs: mean, periods: 4, below: -30 %}")
    for key in condition:
        if key not in _CONDITION_KEYS:
            fail(f"condition.{key}", f"unknown key; valid: {', '.join(_CONDITION_KEYS)}")
    change_vs = condition.get("change_vs")
    pace = condition.get("behind_pace_points")
    if change_vs is not None and pace is not None:
        fail("condition", "a rule watches a change or the pace, not both")
    kind = "change" if change_vs is not None else "pace" if pace is not None else "value"
    percent = kind == "change" or ratio_to is not None or catalog[indicator].format == "percent"

    limits: list[tuple[str, float]] = []
    if kind == "pace":
        if "above" in condition or "below" in condition:
            fail("condition", "behind_pace_points is the limit: no above/below with it")
        if catalog[indicator].format != "percent" and ratio_to is None:
            fail("condition.behind_pace_points", f"the pace is judged on a share of an envelope; {indicator} is "
                                                 "not one (use physical_realisation, financial_consumption, or "
                                                 "ratio_to)")
        limits.append(("behind", _number(pace, "condition.behind_pace_points", fail, minimum=0.0)))
    else:
        for direction in ("above", "below"):
            values = condition.get(direction)
            if values is None:
                continue
            values = values if isinstance(values, list) else [values]
            if not values:
                fail(f"condition.{direction}", "needs at least one limit")
            for value in values:
                limits.append((direction, _limit(value, f"condition.{direction}", percent, fail)))
        if not limits:
            fail("condition", "needs a limit: above or below" + (" (the change in %)" if kind == "change" else ""))
    if kind == "change":
        if change_vs not in CHANGES:
            fail("condition.change_vs", f"{change_vs!r} is not one of {', '.join(CHANGES)}")
        if period is None:
            fail("period", "a change is judged on a complete period: week, month or quarter")
    elif "periods" in condition or "min_base" in condition:
        fail("condition", "periods and min_base go with change_vs")
    periods = condition.get("periods", 1 if change_vs != "mean" else None)
    if periods is None:
        fail("condition.periods", "the number of periods the mean is taken over (e.g. 4)")
    if not isinstance(periods, int) or isinstance(periods, bool) or not 1 <= periods <= 53:
        fail("condition.periods", f"must be an integer from 1 to 53, not {periods!r}")
    if change_vs == "previous" and periods != 1:
        fail("condition.periods", "goes with change_vs: mean (previous compares with one period)")
    min_base = condition.get("min_base")
    if min_base is not None:
        min_base = _number(min_base, "condition.min_base", fail, minimum=0.0)
    if len(set(limits)) != len(limits):
        fail("condition", "a limit is listed twice")

    severities = _severities(item.get("severity", "warning"), len(limits), fail)
    thresholds = tuple(Threshold(d, v, s) for (d, v), s in zip(limits, severities))
    recipients = _recipients(item.get("recipients", ["scope"]), fail)
    default_label = catalog[indicator].label if ratio_to is None else \
        f"{catalog[indicator].label} / {catalog[ratio_to].label}"
    return Rule(name=name, label=(label or default_label).strip(), indicator=indicator, by=tuple(by),
                thresholds=thresholds, kind=kind, ratio_to=ratio_to, where=where, period=period,
                change_vs=change_vs, periods=periods, min_base=min_base, once_per=once_per,
                recipients=recipients, share=percent, source=path)


def _indicator(value, key: str, catalog: Catalog, fail, required: bool) -> str | None:
    if value is None:
        if required:
            fail(key, f"missing; valid: {', '.join(sorted(catalog.indicators))}")
        return None
    if not isinstance(value, str) or value not in catalog.indicators:
        fail(key, f"unknown indicator {value!r}; valid: {', '.join(sorted(catalog.indicators))}")
    return value


def _where(value, fail, valid_dims: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        fail("where", "must be a mapping dimension: value(s), e.g. {measure: [CAE, CIE]}")
    pairs = []
    for dim, values in value.items():
        if dim not in valid_dims:
            fail("where", f"unknown dimension {dim!r}; valid: {', '.join(valid_dims)}")
        values = values if isinstance(values, list) else [values]
        codes = [f"{v:02d}" if isinstance(v, int) and not isinstance(v, bool) else str(v).strip() for v in values]
        known = {code for code, _ in members(dim)}
        for code in codes:
            if code not in known:
                fail(f"where.{dim}", f"unknown member {code!r}; valid: {', '.join(sorted(known))}")
        pairs.append((dim, tuple(codes)))
    return tuple(sorted(pairs))


def _number(value, key: str, fail, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, f"must be a number, not {value!r}")
    if minimum is not None and value < minimum:
        fail(key, f"must be at least {minimum:g}, not {value!r}")
    return float(value)


def _limit(value, key: str, percent: bool, fail) -> float:
    """A limit: a number, or a percentage written '75 %' (a share: 0.75)."""
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match:
            fail(key, f"{value!r} is not a number or a percentage (e.g. 0.9 or '90 %')")
        if not percent:
            fail(key, f"{value!r}: a percentage, but the value watched is not a share")
        return float(match.group(1).replace(",", ".")) / 100
    number = _number(value, key, fail)
    if percent and abs(number) > 10:
        fail(key, f"{value!r}: the value watched is a share; write {value} % (or {number / 100:g})")
    return number


def _severities(value, count: int, fail) -> list[str]:
    values = value if isinstance(value, list) else [value] * count
    if len(values) != count:
        fail("severity", f"one severity, or one per limit ({count})")
    for severity in values:
        if severity not in SEVERITIES:
            fail("severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
    return list(values)


def _recipients(value, fail) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        fail("recipients", "at least one: scope (the recipients whose scope covers the member) or an address")
    found = []
    for entry in values:
        if not isinstance(entry, str) or not (entry == "scope" or _ADDRESS.match(entry.strip())):
            fail("recipients", f"{entry!r} is neither 'scope' nor an email address")
        found.append(entry.strip().lower() if entry != "scope" else entry)
    if len(set(found)) != len(found):
        fail("recipients", "a recipient is listed twice")
    return tuple(found)


def geography_of(rule: Rule) -> tuple[str, ...]:
    """The geographic dimensions a rule's members are placed by (for recipient scopes)."""
    return tuple(d for d in rule.by if d in GEOGRAPHY)
