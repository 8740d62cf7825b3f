"""Compiling a cube request into one SQL statement, with sqlglot expressions.

The statement has one common table expression per piece of work:

* `periods` — the periods of the range, from the calendar, clipped to the
  range and the as-of date (first_day, last_day);
* `grid` — every period × every member of the dimensions asked: each row of
  the answer, data or not;
* `f_<fact>` — the fact's rows, restricted by the filters and the scope,
  with the dimension columns resolved (regions, sector, age band...);
* one CTE per group of indicators computed together: flows sharing a fact
  and a date; stocks and year-to-date values as a running sum of day events
  sampled at each period's last day (the cumulative-window formulation,
  never a join of every row against every period); envelopes by the year of
  each period's last day.

The final SELECT joins the groups onto the grid and derives ratios and
averages there, so they are recomputed at the level asked, never averaged.
User values only ever enter as named parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import sqlglot
from sqlglot import exp

from pilotage.cubes.model import AGE_BANDS, CONTRACT_ATTRIBUTES, DIMENSIONS, FACTS, members
from pilotage.cubes.scope import Scope
from pilotage.measures.catalog import Catalog, Indicator, check_filter
from pilotage.warehouse.reference import MEASURES

DIALECT = "duckdb"

PERIOD_LABEL = {
    "day": "CAST(cal.day AS VARCHAR)",
    "week": "cal.week_label",
    "month": "cal.month_label",
    "quarter": "cal.quarter_label",
    "year": "CAST(cal.year AS VARCHAR)",
}


def _table(name: str, alias: str = "f") -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _lte(left: exp.Expression, right: exp.Expression) -> exp.Expression:
    return exp.LTE(this=left, expression=right)


def _gte(left: exp.Expression, right: exp.Expression) -> exp.Expression:
    return exp.GTE(this=left, expression=right)


class QueryError(ValueError):
    """The request cannot be answered as asked; the message says why and what is valid."""


@dataclass(frozen=True)
class Request:
    indicators: tuple[str, ...]
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    start: date | None = None
    end: date | None = None  # already clipped to the as-of date
    known_at: date | None = None
    scope: Scope | None = None
    # explicit (label, first_day, last_day) periods instead of the calendar's, for comparisons
    periods: tuple[tuple[str, date, date], ...] | None = None

    @property
    def time(self) -> str | None:
        return next((d for d in self.by if DIMENSIONS[d].is_time), None)

    @property
    def members_by(self) -> tuple[str, ...]:
        return tuple(d for d in self.by if not DIMENSIONS[d].is_time)


@dataclass
class Compiled:
    sql: str
    params: dict
    columns: list[str]  # the answer's columns: dimensions, then indicators


@dataclass
class _Plan:
    request: Request
    catalog: Catalog
    params: dict = field(default_factory=dict)
    ctes: list[tuple[str, exp.Expression]] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # indicator -> SQL over the joined groups
    joins: list[str] = field(default_factory=list)
    used_columns: dict[str, set[str]] = field(default_factory=dict)  # fact -> columns the groups read

    def param(self, name: str, value) -> exp.Placeholder:
        self.params[name] = value
        return exp.Placeholder(this=name)


def validate(request: Request, catalog: Catalog) -> None:
    """Raise QueryError unless every indicator can be computed by every dimension asked."""
    if not request.indicators:
        raise QueryError("ask for at least one indicator; valid: " + ", ".join(catalog.names()))
    for name in request.indicators:
        if name not in catalog:
            raise QueryError(f"unknown indicator {name!r}; valid: {', '.join(catalog.names())}")
    for dim in list(request.by) + [d for d, _ in request.where]:
        if dim not in DIMENSIONS:
            raise QueryError(f"unknown dimension {dim!r}; valid: {', '.join(DIMENSIONS)}")
    if len(set(request.by)) != len(request.by):
        raise QueryError("a dimension is asked twice in by")
    times = [d for d in request.by if DIMENSIONS[d].is_time]
    if len(times) > 1:
        raise QueryError(f"at most one time dimension in by (got {', '.join(times)})")
    for dim, values in request.where:
        if DIMENSIONS[dim].is_time:
            raise QueryError(f"filter periods with start and end, not with where {dim}=")
        valid = [code for code, _ in members(dim)]
        unknown = [v for v in values if v not in valid]
        if unknown:
            raise QueryError(f"unknown {dim} member(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if request.start is None or request.end is None or request.start > request.end:
        raise QueryError(f"empty range: from {request.start} to {request.end}")
    needed = {d: "broken down" for d in request.members_by}
    needed.update({d: "filtered" for d, _ in request.where if d not in needed})
    if request.scope and not request.scope.is_national:
        needed.setdefault(request.scope.level, "restricted to a scope")
    for name in _closure(catalog, request.indicators):
        indicator = catalog[name]
        if not indicator.fact:
            continue
        fact = FACTS[indicator.fact]
        for dim, how in needed.items():
            if dim not in fact.dimensions:
                raise QueryError(
                    f"{name} is computed on {indicator.fact}, held by {fact.grain} at the finest, and "
                    f"cannot be {how} by {dim}; it can be by: {', '.join(sorted(fact.dimensions))}"
                )


def _closure(catalog: Catalog, names, through_to_date: bool = True) -> list[str]:
    """The indicators asked and all they are computed from, dependencies first.

    A year-to-date value is computed from the base flow's rows, not from the
    flow's own answer: without `through_to_date` the flow is not listed for it.
    """
    ordered: list[str] = []

    def visit(name: str) -> None:
        if through_to_date or catalog[name].kind != "to_date":
            for dependency in catalog[name].depends_on:
                visit(dependency)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def compile_request(request: Request, catalog: Catalog) -> Compiled:
    validate(request, catalog)
    plan = _Plan(request, catalog)
    plan.param("start", request.start)
    plan.param("end", request.end)
    if request.known_at:
        plan.param("known_at", request.known_at)
    _periods(plan)
    _grid(plan)
    needed = _closure(catalog, request.indicators, through_to_date=False)
    facts = sorted({catalog.fact_of(n) for n in needed if catalog[n].kind != "ratio"})
    if request.known_at and ({"contracts", "payments"} & set(facts)):
        plan.ctes.append(("contracts_known", _known(plan, "contract_versions", ("contract_id",))))
    _collect_used_columns(plan, needed)
    for fact in facts:
        plan.ctes.append((f"f_{fact}", _fact(plan, fact)))
    _flows(plan, needed)
    _stocks(plan, needed)
    _to_date(plan, needed)
    _fixed(plan, needed)
    for name in needed:
        indicator = catalog[name]
        if indicator.kind == "ratio":
            num, den = plan.columns[indicator.numerator], plan.columns[indicator.denominator]
            plan.columns[name] = f"CASE WHEN ({den}) IS NULL OR ({den}) = 0 THEN NULL " \
                                 f"ELSE CAST({num} AS DOUBLE) / CAST({den} AS DOUBLE) END"
    keys = list(request.by)
    outer_keys = ["grid.period" if d == request.time else f"grid.{d}" for d in keys]
    order_keys = ["grid.period" if d == request.time else f"grid.o_{d}" for d in keys]
    select = exp.select(
        *[f"{k} AS {d}" for k, d in zip(outer_keys, keys)],
        *[f"{plan.columns[n]} AS {n}" for n in request.indicators],
        dialect=DIALECT,
    copy=False).from_("grid", copy=False)
    for join in plan.joins:
        select = select.join(join, dialect=DIALECT, copy=False)
    if order_keys:
        select = select.order_by(*order_keys, copy=False)
    for name, cte in plan.ctes:
        select = select.with_(name, as_=cte, copy=False)
    return Compiled(select.sql(dialect=DIALECT), plan.params, keys + list(request.indicators))


def _collect_used_columns(plan: _Plan, needed: list[str]) -> None:
    catalog = plan.catalog
    for name in needed:
        ind = catalog[name]
        if ind.kind in ("to_date", "average"):
            base = catalog[ind.depends_on[0]]
            columns = {base.date, base.of if base.aggregate == "sum" else None}
            if ind.kind == "average":
                columns.add(ind.of)
            columns |= _filter_columns(base)
            plan.used_columns.setdefault(base.fact, set()).update(c for c in columns if c)
        elif ind.fact:
            columns = {ind.date, ind.start, ind.end, ind.of if ind.kind != "flow" or ind.aggregate == "sum" else None}
            if ind.kind == "fixed":
                columns.add("year")
            columns |= _filter_columns(ind)
            plan.used_columns.setdefault(ind.fact, set()).update(c for c in columns if c)


def _filter_columns(ind: Indicator) -> set[str]:
    if not ind.filter:
        return set()
    tree = check_filter(ind.filter, FACTS[ind.fact].columns, ind.name)
    return {column.name for column in tree.find_all(exp.Column)}


# -- periods and grid -----------------------------------------------------------------------------

def _periods(plan: _Plan) -> None:
    time = plan.request.time
    if plan.request.periods:
        rows = [exp.Tuple(expressions=[exp.Literal.string(label), exp.cast(exp.Literal.string(first.isoformat()),
                                       "DATE", copy=False), exp.cast(exp.Literal.string(last.isoformat()), "DATE", copy=False)])
                for label, first, last in plan.request.periods]
        cte = exp.select("period", "first_day", "last_day", copy=False).from_(exp.Values(
            expressions=rows, alias=exp.TableAlias(this=exp.to_identifier("v"), columns=[
                exp.to_identifier("period"), exp.to_identifier("first_day"), exp.to_identifier("last_day")])), copy=False)
    elif time:
        cte = (
            exp.select(f"{PERIOD_LABEL[time]} AS period", "min(cal.day) AS first_day", "max(cal.day) AS last_day", copy=False)
            .from_("dim_calendar AS cal", copy=False)
            .where(exp.column("day", "cal").between(exp.Placeholder(this="start"), exp.Placeholder(this="end"), copy=False), copy=False)
            .group_by("1", copy=False)
        )
    else:
        cte = exp.select(
            "'all' AS period",
            exp.alias_(exp.cast(exp.Placeholder(this="start"), "DATE", copy=False), "first_day"),
            exp.alias_(exp.cast(exp.Placeholder(this="end"), "DATE", copy=False), "last_day"),
        copy=False)
    plan.ctes.append(("periods", cte))


def _member_values(dim: str) -> exp.Expression:
    """VALUES (code, display order) of a dimension's members, from the packaged reference."""
    rows = [exp.Tuple(expressions=[exp.Literal.string(code), exp.Literal.number(i)])
            for i, (code, _) in enumerate(members(dim))]
    return exp.Values(expressions=rows, alias=exp.TableAlias(
        this=exp.to_identifier(f"m_{dim}"), columns=[exp.to_identifier(dim), exp.to_identifier(f"o_{dim}")]))


_GEO_COLUMNS = {"department": "department_code", "region_2005": "region_2005_code", "region_2016": "region_2016_code"}


def _grid(plan: _Plan) -> None:
    """Every period × every member combination asked, filters and scope applied."""
    request = plan.request
    select = exp.select("periods.period", "periods.first_day", "periods.last_day", copy=False).from_("periods", copy=False)
    for dim in request.members_by:
        select = select.join(_member_values(dim), join_type="cross", copy=False).select(f"m_{dim}.{dim}", f"m_{dim}.o_{dim}", copy=False)
        for where_dim, codes in request.where:
            if where_dim == dim:
                select = select.where(exp.column(dim, f"m_{dim}").isin(*_placeholders(plan, dim, codes), copy=False), copy=False)
            elif {dim, where_dim} == {"measure", "sector"}:  # keep measure and sector consistent
                allowed = _sectors_of(codes) if dim == "sector" else _measures_of(codes)
                select = select.where(exp.column(dim, f"m_{dim}").isin(*[exp.Literal.string(v) for v in allowed], copy=False), copy=False)
    geo = [d for d in request.members_by if DIMENSIONS[d].kind == "geography"]
    conditions = _geo_conditions(plan, _GEO_COLUMNS)
    if geo and (conditions or len(geo) > 1):
        # the members asked must exist together in the reference, within the filters and the scope
        exists = exp.select("1", copy=False).from_("dim_department AS d", copy=False)
        for dim in geo:
            exists = exists.where(f"d.{_GEO_COLUMNS[dim]} = m_{dim}.{dim}", copy=False)
        for condition in conditions:
            exists = exists.where(condition, copy=False)
        select = select.where(exp.Exists(this=exists), copy=False)
    plan.ctes.append(("grid", select))


def _geo_conditions(plan: _Plan, columns: dict[str, str]) -> list[exp.Expression]:
    """Filters and scope on the department dimension table."""
    conditions = []
    for dim, codes in plan.request.where:
        if dim in columns:
            conditions.append(exp.column(columns[dim], "d").isin(*_placeholders(plan, dim, codes), copy=False))
    scope = plan.request.scope
    if scope and not scope.is_national:
        conditions.append(exp.column(columns[scope.level], "d").isin(*_scope_placeholders(plan, scope), copy=False))
    return conditions


def _sectors_of(measures: tuple[str, ...]) -> list[str]:
    return sorted({m.sector_code for m in MEASURES if m.code in measures})


def _measures_of(sectors: tuple[str, ...]) -> list[str]:
    return [m.code for m in MEASURES if m.sector_code in sectors]


def _placeholders(plan: _Plan, dim: str, codes: tuple[str, ...]) -> list[exp.Placeholder]:
    return [plan.param(f"w_{dim}_{i}", code) for i, code in enumerate(codes)]


def _scope_placeholders(plan: _Plan, scope: Scope) -> list[exp.Placeholder]:
    return [plan.param(f"scope_{i}", code) for i, code in enumerate(sorted(scope.codes))]


# -- facts ------------------------------------------------------------------------------------------

def _known(plan: _Plan, history: str, key: tuple[str, ...]) -> exp.Select:
    """The highest version of each key among the drops up to known_at."""
    keys = ", ".join(key)
    latest = (
        exp.select(*key, "max(version) AS version", copy=False).from_(history, copy=False)
        .where(_lte(exp.column("drop_date"), exp.Placeholder(this="known_at")), copy=False)
        .group_by(keys, copy=False)
    )
    on = " AND ".join(f"v.{k} = k.{k}" for k in key + ("version",))
    return exp.select("v.*", copy=False).from_(f"{history} AS v", copy=False).join(latest.subquery("k", copy=False), on=on, copy=False)


_STATUS = {"contracts": "f.status <> 'CANCELLED'", "prescriptions": "f.status <> 'CANCELLED'",
           "payments": "NOT f.contract_cancelled", "envelopes": None}


def _fact_source(plan: _Plan, fact: str) -> exp.Expression:
    known = plan.request.known_at is not None
    if fact == "contracts":
        return _table("contracts_known") if known else _table("contracts")
    if fact == "prescriptions":
        return _known(plan, "prescription_versions", ("prescription_id",)).subquery("f", copy=False) if known \
            else _table("prescriptions")
    if fact == "envelopes":
        return _known(plan, "envelope_versions", ("year", "region_code", "measure")).subquery("f", copy=False) if known \
            else _table("envelopes")
    if known:  # payments known at D: loaded by D, with their contract as known at D
        return (
            exp.select("p.payment_id", "p.contract_id", "p.period_month", "p.paid_date", "p.amount_eur", "p.kind",
                       "c.department", "c.measure", "c.status = 'CANCELLED' AS contract_cancelled", copy=False)
            .from_("payments AS p", copy=False).join("contracts_known AS c", on="c.contract_id = p.contract_id", copy=False)
            .where(_lte(exp.column("drop_date", "p"), exp.Placeholder(this="known_at")), copy=False)
            .subquery("f", copy=False)
        )
    return _table("payments")


def _base_key(fact: str, dim: str) -> tuple[str, str]:
    """(name, SQL over the fact's rows) of the column a dimension is derived from.

    Groups aggregate by these raw keys first and map them to the dimension
    asked afterwards (department -> region, measure -> sector, day -> week):
    the joins then run on a few aggregated rows, not on every fact row.
    """
    if dim in ("department", "region_2005", "region_2016"):
        return ("region_code", "f.region_code") if fact == "envelopes" else ("department", "f.department")
    if dim in ("measure", "sector"):
        return "measure", "f.measure"
    source = "f" if fact == "contracts" else "c"
    if dim == "age_band":
        age = f"(EXTRACT(YEAR FROM {source}.start_date) - {source}.beneficiary_birth_year)"
        whens = " ".join(f"WHEN {age} <= {high} THEN '{code}'" for code, _, _, high in AGE_BANDS)
        return "age_band", f"CASE {whens} END"
    return dim, f"{source}.{dim}"


def _base_keys(plan: _Plan, fact: str) -> list[str]:
    return list(dict.fromkeys(_base_key(fact, d)[0] for d in plan.request.members_by))


def _mapping(fact: str, dims: tuple[str, ...], alias: str = "p") -> tuple[list[str], list[tuple[str, str]]]:
    """SQL of each dimension over aggregated rows `alias` (with the raw keys), and the joins it needs."""
    exprs, joins = [], {}
    for dim in dims:
        if dim == "department":
            exprs.append(f"{alias}.department")
        elif dim == "region_2005" and fact == "envelopes":
            exprs.append(f"{alias}.region_code")
        elif dim == "region_2016" and fact == "envelopes":
            joins["r"] = ("(SELECT DISTINCT region_2005_code, region_2016_code FROM dim_department) AS r",
                          f"r.region_2005_code = {alias}.region_code")
            exprs.append("r.region_2016_code")
        elif dim in ("region_2005", "region_2016"):
            joins["g"] = ("dim_department AS g", f"g.department_code = {alias}.department")
            exprs.append(f"g.{dim}_code")
        elif dim == "sector":
            joins["ms"] = ("dim_measure AS ms", f"ms.measure_code = {alias}.measure")
            exprs.append("ms.sector_code")
        else:
            exprs.append(f"{alias}.{dim}")
    return exprs, list(joins.values())


def _mapped(plan: _Plan, fact: str, inner: exp.Select, extra: list[str], sums: list[tuple[str, str]],
            period: str | None = None, period_join: tuple[str, str] | None = None) -> exp.Select:
    """SELECT the dimensions asked (+ `extra` columns of `inner`), summing `sums` (alias, type) over
    the raw-key aggregates of `inner` (aliased p)."""
    dims = plan.request.members_by
    exprs, joins = _mapping(fact, dims)
    keys = [f"{e} AS {d}" for e, d in zip(exprs, dims)]
    columns = keys + ([f"{period} AS period"] if period else []) + [f"p.{c} AS {c}" for c in extra]
    totals = [f"CAST(sum(p.{a}) AS {t}) AS {a}" if t else f"sum(p.{a}) AS {a}" for a, t in sums]
    select = exp.select(*columns, *totals, copy=False) \
        .from_(inner.subquery("p", copy=False), copy=False)
    for table, on in joins + ([period_join] if period_join else []):
        select = select.join(table, on=on, copy=False)
    group = exprs + ([period] if period else []) + [f"p.{c}" for c in extra]
    if group:
        select = select.group_by(*group, copy=False)
    return select


def _filter_on(plan: _Plan, fact: str, dim: str, placeholders: list) -> exp.Expression:
    """A filter on a dimension as a condition on the fact's raw key (small semi-joins for hierarchies)."""
    name, sql = _base_key(fact, dim)
    if dim in ("region_2005", "region_2016") and fact != "envelopes":
        inner = exp.select("department_code", copy=False).from_("dim_department", copy=False).where(
            exp.column(f"{dim}_code").isin(*placeholders, copy=False), copy=False)
        return exp.condition(sql).isin(query=inner, copy=False)
    if dim == "region_2016":  # envelopes, held by 2005 region
        inner = exp.select("region_2005_code", copy=False).from_("dim_department", copy=False).where(
            exp.column("region_2016_code").isin(*placeholders, copy=False), copy=False)
        return exp.condition(sql).isin(query=inner, copy=False)
    if dim == "sector":
        inner = exp.select("measure_code", copy=False).from_("dim_measure", copy=False).where(
            exp.column("sector_code").isin(*placeholders, copy=False), copy=False)
        return exp.condition(sql).isin(query=inner, copy=False)
    return exp.condition(sql).isin(*placeholders, copy=False)


def _fact(plan: _Plan, fact: str) -> exp.Select:
    """f_<fact>: the fact's rows, filtered and scoped, with the raw keys of the dimensions asked."""
    request = plan.request
    dims = set(request.members_by) | {d for d, _ in request.where}
    scope = request.scope if request.scope and not request.scope.is_national else None
    keys = {name: sql for name, sql in (_base_key(fact, d) for d in request.members_by)}
    used = sorted(plan.used_columns.get(fact, set()) - set(keys))
    select = exp.select(*[f"f.{c}" for c in used], *[f"{sql} AS {name}" for name, sql in keys.items()],
                        copy=False).from_(_fact_source(plan, fact), copy=False)
    if fact == "payments" and (dims | ({scope.level} if scope else set())) & set(CONTRACT_ATTRIBUTES):
        contracts = "contracts_known" if request.known_at else "contracts"
        select = select.join(f"{contracts} AS c", on="c.contract_id = f.contract_id", copy=False)
    if _STATUS[fact]:
        select = select.where(_STATUS[fact], copy=False)
    for dim, codes in request.where:
        select = select.where(_filter_on(plan, fact, dim, _placeholders(plan, dim, codes)), copy=False)
    if scope:
        select = select.where(_filter_on(plan, fact, scope.level, _scope_placeholders(plan, scope)), copy=False)
    return select


# -- indicator groups -------------------------------------------------------------------------------

def _group_keys(plan: _Plan) -> list[str]:
    return list(plan.request.members_by)


def _join_group(plan: _Plan, name: str) -> None:
    on = " AND ".join(f"{name}.{k} = grid.{k}" for k in _group_keys(plan) + ["period"])
    plan.joins.append(f"LEFT JOIN {name} ON {on}")


def _filter_sql(indicator: Indicator) -> str | None:
    if not indicator.filter:
        return None
    tree = check_filter(indicator.filter, FACTS[indicator.fact].columns, indicator.name)
    return tree.sql(dialect=DIALECT)


def _flows(plan: _Plan, needed: list[str]) -> None:
    """Flows and averages, one CTE per (fact, date): counts and sums by period."""
    catalog = plan.catalog
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name in needed:
        ind = catalog[name]
        if ind.kind == "flow":
            groups.setdefault((ind.fact, ind.date), []).append((name, _aggregate(ind)))
        elif ind.kind == "average":
            over = catalog[ind.over]
            groups.setdefault((over.fact, over.date), []).append(
                (f"{name}__sum", _aggregate(over, f"f.{ind.of}")))
    time = plan.request.time
    for number, ((fact, date_column), aggregates) in enumerate(sorted(groups.items())):
        cte = f"flow_{number}"
        base = [f"f.{k}" for k in _base_keys(plan, fact)]
        if plan.request.periods is not None:  # periods of a comparison: placed by range
            period, join = "per.period", ("periods AS per", "p.day BETWEEN per.first_day AND per.last_day")
        elif time:
            period, join = PERIOD_LABEL[time], ("dim_calendar AS cal", "cal.day = p.day")
        else:
            period, join = "'all'", None
        by_day = [f"f.{date_column}"] if join else []
        inner = (exp.select(*base, *[f"{d} AS day" for d in by_day], *[f"{sql} AS {alias}" for alias, sql in aggregates],
                            copy=False).from_(f"f_{fact} AS f", copy=False)
                 .where(exp.column(date_column, "f").between(exp.Placeholder(this="start"),
                                                             exp.Placeholder(this="end"), copy=False), copy=False))
        if base or by_day:
            inner = inner.group_by(*base, *by_day, copy=False)
        sums = [(alias, "BIGINT" if sql.startswith("count") else None) for alias, sql in aggregates]
        plan.ctes.append((cte, _mapped(plan, fact, inner, [], sums, period, join)))
        _join_group(plan, cte)
        for alias, _ in aggregates:
            if alias.endswith("__sum"):
                name = alias.removesuffix("__sum")
                over = catalog[name].over
                count = f"{cte}.{over}"
                plan.columns[name] = (f"CASE WHEN coalesce({count}, 0) = 0 THEN NULL "
                                      f"ELSE CAST({cte}.{alias} AS DOUBLE) / {count} END")
            else:
                plan.columns[alias] = f"coalesce({cte}.{alias}, 0)"


def _aggregate(ind: Indicator, value: str | None = None) -> str:
    """The SQL aggregate of a flow, with its filter, optionally summing `value` instead."""
    condition = _filter_sql(ind)
    if value is None and ind.aggregate == "count":
        return f"count(CASE WHEN {condition} THEN 1 END)" if condition else "count(*)"
    value = value or f"f.{ind.of}"
    return f"sum(CASE WHEN {condition} THEN {value} END)" if condition else f"sum({value})"


def _running(plan: _Plan, cte: str, fact: str, events: exp.Expression, value_columns: list[str], by_year: bool,
             cast: str = "BIGINT") -> None:
    """Sample a running sum of day events at each grid row's last day.

    `events` has the fact's raw keys, `day` and the value columns. They are
    summed by day, mapped to the dimensions asked; each grid row becomes a
    marker at its last day, ordered after that day's events; a window sum
    over (dimensions[, year of day]) ordered by day gives each marker the
    total of the events up to its last day.
    """
    keys = _group_keys(plan)
    base = _base_keys(plan, fact)
    partition = keys + (["EXTRACT(YEAR FROM day)"] if by_year else [])
    daily = (exp.select(*base, "day", *[f"sum({v}) AS {v}" for v in value_columns], copy=False)
             .from_(events.subquery("e", copy=False), copy=False).group_by(*base, "day", copy=False))
    mapped = _mapped(plan, fact, daily, ["day"], [(v, None) for v in value_columns])
    markers = exp.select(*keys, "period", "last_day AS day", *[f"0 AS {v}" for v in value_columns],
                         "1 AS is_marker", copy=False).from_("grid", copy=False)
    unioned = exp.union(
        exp.select(*keys, "CAST(NULL AS VARCHAR) AS period", "day", *value_columns, "0 AS is_marker", copy=False)
        .from_(mapped.subquery("d", copy=False), copy=False),
        markers,
        distinct=False,
        copy=False)
    window = ", ".join(partition)
    order = "day, is_marker"
    running = exp.select(
        *keys, "period", "is_marker",
        *[f"CAST(sum({v}) OVER ({'PARTITION BY ' + window if window else ''} ORDER BY {order} "
          f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {cast}) AS {v}" for v in value_columns],
        copy=False).from_(unioned.subquery("u", copy=False), copy=False)
    plan.ctes.append((cte, exp.select(*keys, "period", *value_columns, copy=False)
                      .from_(running.subquery("w", copy=False), copy=False).where("is_marker = 1", copy=False)))
    _join_group(plan, cte)


def _stocks(plan: _Plan, needed: list[str]) -> None:
    """In force at the last day: +1 on the start day, -1 on the end day (start ≤ day < end)."""
    catalog = plan.catalog
    for number, name in enumerate(n for n in needed if catalog[n].kind == "stock"):
        ind = catalog[name]
        keys = [f"f.{k}" for k in _base_keys(plan, ind.fact)]
        condition = _filter_sql(ind)
        cte = f"stock_{number}"
        if _single_period(plan):  # one day to look at: a plain count
            in_force = (f"f.{ind.start} <= $end AND f.{ind.end} > $end" + (f" AND ({condition})" if condition else ""))
            _single(plan, cte, name, ind.fact, in_force, "count(*)", "BIGINT")
            plan.columns[name] = f"coalesce({cte}.{name}, 0)"
            continue
        base = exp.select(*keys, f"f.{ind.start} AS day", f"1 AS {name}", copy=False).from_(f"f_{ind.fact} AS f", copy=False) \
            .where(_lte(exp.column(ind.start, "f"), exp.Placeholder(this="end")), copy=False)
        ends = exp.select(*keys, f"f.{ind.end} AS day", f"-1 AS {name}", copy=False).from_(f"f_{ind.fact} AS f", copy=False) \
            .where(_lte(exp.column(ind.end, "f"), exp.Placeholder(this="end")), copy=False)
        if condition:
            base, ends = base.where(condition, copy=False), ends.where(condition, copy=False)
        _running(plan, cte, ind.fact, exp.union(base, ends, distinct=False, copy=False), [name], by_year=False)
        plan.columns[name] = f"coalesce({cte}.{name}, 0)"


def _to_date(plan: _Plan, needed: list[str]) -> None:
    """Year to date: a running sum of the base flow per calendar year, sampled at each last day."""
    catalog = plan.catalog
    for number, name in enumerate(n for n in needed if catalog[n].kind == "to_date"):
        base = catalog[catalog[name].of]
        keys = [f"f.{k}" for k in _base_keys(plan, base.fact)]
        value = "1" if base.aggregate == "count" else f"f.{base.of}"
        condition = _filter_sql(base)
        cte = f"ytd_{number}"
        if _single_period(plan):  # one last day: a plain sum from January 1
            plan.param("year_start", date(plan.request.end.year, 1, 1))
            in_year = f"f.{base.date} BETWEEN $year_start AND $end" + (f" AND ({condition})" if condition else "")
            _single(plan, cte, name, base.fact, in_year,
                    "count(*)" if base.aggregate == "count" else f"sum(f.{base.of})",
                    "BIGINT" if base.aggregate == "count" else None)
            plan.columns[name] = f"coalesce({cte}.{name}, 0)"
            continue
        events = (
            exp.select(*keys, f"f.{base.date} AS day", f"{value} AS {name}", copy=False).from_(f"f_{base.fact} AS f", copy=False)
            .where(_lte(exp.column(base.date, "f"), exp.Placeholder(this="end")), copy=False)
            .where(_gte(exp.column(base.date, "f"), plan.param("ytd_start", date(plan.request.start.year, 1, 1))), copy=False)
        )
        if condition:
            events = events.where(condition, copy=False)
        _running(plan, cte, base.fact, events, [name], by_year=True,
                 cast="BIGINT" if base.aggregate == "count" else "DECIMAL(38, 2)")
        plan.columns[name] = f"coalesce({cte}.{name}, 0)"


def _single_period(plan: _Plan) -> bool:
    """No time dimension: the answer has one period, ending on the request's end."""
    return plan.request.time is None and (plan.request.periods is None or len(plan.request.periods) == 1)


def _single(plan: _Plan, cte: str, name: str, fact: str, condition: str, aggregate: str, cast: str | None) -> None:
    """A one-period group: an aggregate of the fact rows meeting `condition`, by the members asked."""
    base = [f"f.{k}" for k in _base_keys(plan, fact)]
    inner = (exp.select(*base, f"{aggregate} AS {name}", copy=False)
             .from_(f"f_{fact} AS f", copy=False).where(condition, copy=False))
    if base:
        inner = inner.group_by(*base, copy=False)
    plan.ctes.append((cte, _mapped(plan, fact, inner, [], [(name, cast)], "'all'")))
    _join_group(plan, cte)


def _fixed(plan: _Plan, needed: list[str]) -> None:
    """Envelopes: the year of each period's last day, summed over the members in the cell."""
    catalog = plan.catalog
    fixed = [n for n in needed if catalog[n].kind == "fixed"]
    if not fixed:
        return
    base = [f"f.{k}" for k in _base_keys(plan, "envelopes")]
    inner = (exp.select(*base, "f.year", *[f"sum(f.{catalog[n].of}) AS {n}" for n in fixed], copy=False)
             .from_("f_envelopes AS f", copy=False).group_by(*base, "f.year", copy=False))
    sums = [(n, _sum_type(catalog[n])) for n in fixed]
    plan.ctes.append(("fixed_0", _mapped(plan, "envelopes", inner, [], sums, "per.period",
                                         ("periods AS per", "p.year = EXTRACT(YEAR FROM per.last_day)"))))
    _join_group(plan, "fixed_0")
    for name in fixed:
        plan.columns[name] = f"fixed_0.{name}"


def _sum_type(ind: Indicator) -> str:
    return "BIGINT" if ind.format == "integer" else "DECIMAL(38, 2)"


def transpile(sql: str, dialect: str) -> str:
    """The same statement for another engine (see the distributed-engine issue)."""
    return sqlglot.transpile(sql, read=DIALECT, write=dialect)[0]
