"""The cube: the one entry point for every figure pilotage shows.

`Cube(warehouse).query(measures, by, where, start, end, known_at, scope)`
answers with an Arrow table (a polars DataFrame with `as_polars=True`): one
column per dimension asked (its code, or its period label), then one per
indicator in the order asked. The table's schema metadata carries the as-of
date and the range actually answered.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from pilotage.cubes.compiler import Compiled, QueryError, Request, compile_request
from pilotage.cubes.model import DIMENSIONS, members
from pilotage.cubes.scope import Scope
from pilotage.measures.catalog import Catalog, load_catalog
from pilotage.warehouse import Warehouse

Where = Mapping[str, str | Iterable[str]] | Iterable[str] | None


def parse_where(where: Where) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """{'measure': 'CAE'} or ['measure=CAE,CIE', 'region_2016=28'] -> sorted (dim, values) pairs."""
    pairs: dict[str, list[str]] = {}
    if where is None:
        return ()
    items = where.items() if isinstance(where, Mapping) else []
    if not isinstance(where, Mapping):
        parsed = []
        for text in where:
            dim, sep, values = str(text).partition("=")
            if not sep or not dim.strip() or not values.strip():
                raise QueryError(f"a filter is dimension=value[,value...], got {text!r}")
            parsed.append((dim.strip(), values.split(",")))
        items = parsed
    for dim, values in items:
        values = [values] if isinstance(values, str) else list(values)
        pairs.setdefault(dim, [])
        for value in values:
            value = str(value).strip()
            if value and value not in pairs[dim]:
                pairs[dim].append(value)
    return tuple(sorted((d, tuple(v)) for d, v in pairs.items()))


@dataclass(frozen=True)
class Answer:
    """What a query answered: the rows and the dates they stand for."""

    table: pa.Table
    as_of: date
    start: date
    end: date
    known_at: date | None
    sql: str


class Cube:
    def __init__(self, warehouse: Warehouse | str | os.PathLike | None = None, catalog: Catalog | None = None):
        self.warehouse = warehouse if isinstance(warehouse, Warehouse) else Warehouse(warehouse)
        self.catalog = catalog or load_catalog()
        self._compiled: OrderedDict[Request, Compiled] = OrderedDict()
        self._local = threading.local()  # a `reading()` block's connection, per thread (the portal shares a Cube)
        self._compiling = threading.Lock()

    @property
    def _con(self):
        return getattr(self._local, "con", None)

    @_con.setter
    def _con(self, con) -> None:
        self._local.con = con

    @contextlib.contextmanager
    def reading(self, threads: int | None = None) -> Iterator["Cube"]:
        """Keep one read-only connection for the queries of the block (a report, a page).

        Without it each query opens the warehouse (about 20 ms on a large
        file). Keep the block short: an in-place load waits for it. Nested
        blocks share the outer one's connection. `threads` caps DuckDB's
        threads for the block (background work that must leave the cores to
        the requests).
        """
        if self._con is not None:
            yield self
            return
        with self.warehouse.connect() as con:
            if threads:
                con.execute(f"SET threads = {int(threads)}")
            self._con = con
            try:
                yield self
            finally:
                self._con = None

    @contextlib.contextmanager
    def _connection(self):
        if self._con is not None:
            yield self._con
        else:
            with self.warehouse.connect() as con:
                yield con

    # -- the entry point -----------------------------------------------------------------------

    def query(self, measures: str | Iterable[str], by: Iterable[str] = (), where: Where = None,
              start: date | str | None = None, end: date | str | None = None, known_at: date | str | None = None,
              scope: Scope | str | None = None, labels: bool = False, as_polars: bool = False):
        answer = self.answer(measures, by, where, start, end, known_at, scope, labels)
        if as_polars:
            import polars as pl

            return pl.from_arrow(answer.table)
        return answer.table

    def answer(self, measures, by=(), where=None, start=None, end=None, known_at=None, scope=None,
               labels: bool = False) -> Answer:
        with self._connection() as con:
            as_of = self._as_of(con, _date(known_at))
            request = self.request(measures, by, where, start, end, known_at, scope, as_of)
            compiled = self.compile(request)
            table = self._execute(con, compiled)
        if labels:
            table = with_labels(table, request.by)
        table = table.replace_schema_metadata({
            "as_of": as_of.isoformat(), "start": request.start.isoformat(), "end": request.end.isoformat(),
            "known_at": request.known_at.isoformat() if request.known_at else "",
        })
        return Answer(table, as_of, request.start, request.end, request.known_at, compiled.sql)

    def compare(self, measures, by=(), where=None, start=None, end=None, known_at=None, scope=None,
                how: str = "previous", labels: bool = False, as_polars: bool = False):
        """The query, plus for each indicator its value in the comparison period and the change in %."""
        import polars as pl

        from pilotage.cubes.compare import SUFFIX, comparison_request

        with self._connection() as con:
            as_of = self._as_of(con, _date(known_at))
            request = self.request(measures, by, where, start, end, known_at, scope, as_of)
            other = comparison_request(con, request, how)
            compiled, compiled_other = self.compile(request), self.compile(other)
            current = self._execute(con, compiled)
            before = self._execute(con, compiled_other)
        keys = list(request.by)
        suffix = SUFFIX[how]
        left = pl.from_arrow(current).with_row_index("_order")
        right = pl.from_arrow(before).rename({m: f"{m}_{suffix}" for m in request.indicators})
        joined = left.join(right, on=keys, how="left") if keys else pl.concat([left, right], how="horizontal")
        columns = list(keys)
        for m in request.indicators:
            now, then = pl.col(m).cast(pl.Float64), pl.col(f"{m}_{suffix}").cast(pl.Float64)
            joined = joined.with_columns(
                pl.when(then.is_null() | (then == 0)).then(None)
                .otherwise((now - then) / then.abs() * 100).alias(f"{m}_change_pct"))
            columns += [m, f"{m}_{suffix}", f"{m}_change_pct"]
        table = joined.sort("_order").select(columns).to_arrow()
        if labels:
            table = with_labels(table, request.by)
        table = table.replace_schema_metadata({"as_of": as_of.isoformat(), "compare": how})
        return pl.from_arrow(table) if as_polars else table

    def _execute(self, con, compiled: Compiled) -> pa.Table:
        """Run a compiled statement (another engine overrides this, see cubes/spark.py)."""
        return con.sql(compiled.sql, params=compiled.params).to_arrow_table().rename_columns(compiled.columns)

    # -- the parts, for the CLI's --sql and for tests ------------------------------------------

    def request(self, measures, by, where, start, end, known_at, scope, as_of: date) -> Request:
        measures = (measures,) if isinstance(measures, str) else tuple(measures)
        start, end, known_at = _date(start), _date(end), _date(known_at)
        end = min(end or as_of, as_of)
        start = start or date(end.year, 1, 1)
        if isinstance(scope, str):
            scope = Scope.parse(scope)
        return Request(measures, tuple(by), parse_where(where), start, end, known_at, scope)

    def compile(self, request: Request) -> Compiled:
        """SQL for a request; the text depends only on its shape, so it is cached by shape."""
        compiled = self._compiled.get(request)
        if compiled is None:
            compiled = compile_request(request, self.catalog)
            with self._compiling:  # threads share the cache
                self._compiled[request] = compiled
                if len(self._compiled) > 256:
                    self._compiled.popitem(last=False)
        return compiled

    def as_of(self, known_at: date | str | None = None) -> date:
        with self._connection() as con:
            return self._as_of(con, _date(known_at))

    @staticmethod
    def _as_of(con, known_at: date | None) -> date:
        row = con.execute(
            "SELECT max(drop_date) FROM load_drops WHERE outcome = 'loaded' AND (?::DATE IS NULL OR drop_date <= ?)",
            [known_at, known_at],
        ).fetchall()[0]
        if row[0] is None:
            raise QueryError("the warehouse holds no drop" + (f" loaded by {known_at}" if known_at else ""))
        return row[0]


def parse_date(value, name: str = "date", error: type[Exception] = QueryError) -> date | None:
    """A date, or its text YYYY-MM-DD; None stays None; anything else raises `error` naming `name`."""
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise error(f"{name} {value!r} is not a date YYYY-MM-DD") from None


_date = parse_date


def with_labels(table: pa.Table, by: Iterable[str]) -> pa.Table:
    """Add `<dim>_name` after each coded dimension column (French names)."""
    for dim in by:
        if DIMENSIONS[dim].is_time:
            continue
        codes, names = zip(*members(dim))
        index = pc.index_in(table[dim], value_set=pa.array(codes))
        position = table.schema.get_field_index(dim) + 1
        table = table.add_column(position, f"{dim}_name", pc.take(pa.array(names), index))
    return table
