"""Indicator declarations: YAML files parsed once into frozen dataclasses.

The package's own files (`pilotage/measures/*.yml`) declare the indicators of
INDICATORS.md. Users add theirs in YAML only, in folders named by
$PILOTAGE_MEASURES (os.pathsep-separated) or passed to `load_catalog`. Every
declaration is checked when loaded; an error names the file, the indicator
and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import sqlglot
import yaml
from sqlglot import exp

from pilotage.cubes.model import FACTS

KINDS = ("flow", "stock", "fixed", "ratio", "average", "to_date")
FORMATS = ("integer", "euro", "percent", "decimal")
AGGREGATES = ("count", "sum")
ENV_VAR = "PILOTAGE_MEASURES"

# What a declared filter may contain: columns, literals, comparisons, logic.
_ALLOWED_FILTER_NODES = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Not, exp.And, exp.Or,
    exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.In, exp.Between, exp.Is, exp.Tuple,
    exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Cast, exp.DataType,
)


class DeclarationError(ValueError):
    """A declaration is wrong; the message names file, indicator and problem."""


@dataclass(frozen=True)
class Indicator:
    name: str
    label: str
    description: str
    kind: str
    format: str
    fact: str | None = None
    date: str | None = None  # flow: the date placing a row in a period
    start: str | None = None  # stock: first day in force
    end: str | None = None  # stock: last day in force (not in the stock on that day)
    aggregate: str = "count"
    of: str | None = None  # column summed/averaged/held, or indicator taken to date
    over: str | None = None  # average: the flow whose rows are averaged
    numerator: str | None = None
    denominator: str | None = None
    filter: str | None = None
    source: str = ""

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The indicators this one is computed from."""
        if self.kind == "ratio":
            return (self.numerator, self.denominator)
        if self.kind == "to_date":
            return (self.of,)
        if self.kind == "average":
            return (self.over,)
        return ()


@dataclass(frozen=True)
class Catalog:
    indicators: dict[str, Indicator] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Indicator:
        try:
            return self.indicators[name]
        except KeyError:
            raise KeyError(
                f"unknown indicator {name!r}; valid: {', '.join(sorted(self.indicators))}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.indicators

    def __iter__(self):
        return iter(self.indicators.values())

    def names(self) -> list[str]:
        return list(self.indicators)

    def fact_of(self, name: str) -> str:
        """The fact a (possibly derived) indicator is computed on."""
        indicator = self[name]
        if indicator.kind in ("to_date", "average"):
            return self.fact_of(indicator.depends_on[0])
        return indicator.fact


def package_files() -> list[Path]:
    folder = resources.files("pilotage.measures")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yml", ".yaml")))


def yaml_files(folders, env_var: str, error: type[Exception], what: str) -> list[Path]:
    """The YAML files named by `folders` and by $env_var (os.pathsep-separated): files, or
    folders of them. A name that is neither raises `error` ("no such <what> file or folder").

    Shared by the indicator and the report declarations.
    """
    folders = list(folders or []) + [p for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    found = []
    for folder in map(Path, folders):
        if folder.is_file():
            found.append(folder)
        elif folder.is_dir():
            found.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml")))
        else:
            raise error(f"{folder}: no such {what} file or folder")
    return found


def user_files(folders: list[str | os.PathLike] | None = None) -> list[Path]:
    return yaml_files(folders, ENV_VAR, DeclarationError, "measures")


def load_catalog(extra: list[str | os.PathLike] | None = None) -> Catalog:
    """The package's declarations plus the user's."""
    indicators: dict[str, Indicator] = {}
    for path in package_files() + user_files(extra):
        for indicator in _read_file(path):
            if indicator.name in indicators:
                raise DeclarationError(
                    f"{path}: indicator {indicator.name!r} is already declared in {indicators[indicator.name].source}"
                )
            indicators[indicator.name] = indicator
    catalog = Catalog(indicators)
    for indicator in catalog:
        _check_references(catalog, indicator)
    return catalog


_FIELDS = {f for f in Indicator.__dataclass_fields__ if f != "source"}


def _read_file(path: Path) -> list[Indicator]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("indicators"), list):
        raise DeclarationError(f"{path}: expected a mapping with a list under 'indicators'")
    result = []
    for position, entry in enumerate(document["indicators"], start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: indicator {name!r}" if name else f"{path}: indicator #{position}"
        if not isinstance(entry, dict):
            raise DeclarationError(f"{where}: expected a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise DeclarationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("name", "label", "description", "kind", "format"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise DeclarationError(f"{where}: '{key}' is required")
        indicator = Indicator(**{k: (str(v) if v is not None else None) for k, v in entry.items()},
                              source=str(path))
        _check_shape(indicator, where)
        result.append(indicator)
    return result


def _check_shape(ind: Indicator, where: str) -> None:
    """Checks that need only the declaration itself."""
    if not ind.name.isidentifier() or ind.name != ind.name.lower():
        raise DeclarationError(f"{where}: a name is lower-case letters, digits and _")
    if ind.kind not in KINDS:
        raise DeclarationError(f"{where}: kind {ind.kind!r} is not one of {', '.join(KINDS)}")
    if ind.format not in FORMATS:
        raise DeclarationError(f"{where}: format {ind.format!r} is not one of {', '.join(FORMATS)}")
    if ind.aggregate not in AGGREGATES:
        raise DeclarationError(f"{where}: aggregate {ind.aggregate!r} is not one of {', '.join(AGGREGATES)}")
    required = {
        "flow": ("fact", "date"), "stock": ("fact", "start", "end"), "fixed": ("fact", "of"),
        "ratio": ("numerator", "denominator"), "average": ("of", "over"), "to_date": ("of",),
    }[ind.kind]
    for key in required:
        if not getattr(ind, key):
            raise DeclarationError(f"{where}: a {ind.kind} indicator needs '{key}'")
    if ind.fact:
        if ind.fact not in FACTS:
            raise DeclarationError(f"{where}: fact {ind.fact!r} is not one of {', '.join(FACTS)}")
        fact = FACTS[ind.fact]
        for key in ("date", "start", "end") + (("of",) if ind.kind in ("flow", "fixed") else ()):
            column = getattr(ind, key)
            if column and column not in fact.columns:
                raise DeclarationError(
                    f"{where}: {key} {column!r} is not a column of {ind.fact}; "
                    f"valid: {', '.join(sorted(fact.columns))}")
        if ind.kind == "flow" and ind.aggregate == "sum" and not ind.of:
            raise DeclarationError(f"{where}: a summed flow needs 'of', the column to sum")
        if ind.filter:
            check_filter(ind.filter, fact.columns, where)
    if ind.filter and not ind.fact:
        raise DeclarationError(f"{where}: a filter applies to an indicator with a 'fact'")


def check_filter(text: str, columns: frozenset[str], where: str) -> exp.Expression:
    """Parse a declared filter and allow only columns of the fact, literals and comparisons."""
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise DeclarationError(f"{where}: filter {text!r} does not parse: {exc}") from None
    for node in tree.walk():
        if not isinstance(node, _ALLOWED_FILTER_NODES):
            raise DeclarationError(
                f"{where}: filter {text!r} may use only columns, literals and comparisons "
                f"(found {node.key})")
        if isinstance(node, exp.Column) and (node.table or node.name not in columns):
            raise DeclarationError(
                f"{where}: filter {text!r} names {node.sql()!r}, not a column of the fact; "
                f"valid: {', '.join(sorted(columns))}")
    return tree


def _check_references(catalog: Catalog, ind: Indicator) -> None:
    where = f"{ind.source}: indicator {ind.name!r}"
    for name in ind.depends_on:
        if name not in catalog:
            raise DeclarationError(f"{where}: refers to unknown indicator {name!r}")
    if ind.kind == "to_date":
        base = catalog[ind.of]
        if base.kind != "flow":
            raise DeclarationError(
                f"{where}: to_date sums {ind.of!r} over time, but it is a {base.kind} indicator "
                f"(a {base.kind} is never summed over time)")
    if ind.kind == "average":
        over = catalog[ind.over]
        if over.kind != "flow":
            raise DeclarationError(f"{where}: 'over' must be a flow indicator, {ind.over!r} is a {over.kind}")
        if ind.of not in FACTS[over.fact].columns:
            raise DeclarationError(f"{where}: {ind.of!r} is not a column of {over.fact}")
    if ind.kind == "ratio":
        _check_acyclic(catalog, ind.name, ())


def _check_acyclic(catalog: Catalog, name: str, path: tuple[str, ...]) -> None:
    if name in path:
        raise DeclarationError(
            f"{catalog[name].source}: indicator {name!r} depends on itself: {' -> '.join(path + (name,))}")
    for dependency in catalog[name].depends_on:
        _check_acyclic(catalog, dependency, path + (name,))
