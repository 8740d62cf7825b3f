"""The cube on Spark SQL: the same declarations, the same compiled query, another engine.

The cube compiles a request once, to sqlglot expressions (pilotage.cubes.compiler);
for DuckDB it runs the DuckDB text with named parameters. Here the very same
statement is turned into Spark SQL by sqlglot's Spark dialect, its parameters
bound as typed literals, and run by a SparkSession over the lake that
`pilotage export` writes (one temporary view per table of the star schema,
read from Hive-partitioned Parquet). Every indicator kind runs unchanged,
the stock's cumulative window included; scopes and `known_at` too, since
they are part of the compiled statement.

What an engine cannot do says so (`EngineError`) rather than answering
differently; today the Spark engine runs every request the DuckDB one does,
comparisons included (their calendar look-ups read the lake's calendar).
"""

from __future__ import annotations

import contextlib
import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp

from pilotage.cubes.compiler import Compiled, QueryError
from pilotage.cubes.cube import Cube
from pilotage.lake.export import MANIFEST, TABLES
from pilotage.measures.catalog import Catalog, load_catalog


class EngineError(QueryError):
    """What an engine cannot do; the message says what and where it can be done."""


def spark_session(master: str = "local[2]"):
    """A SparkSession for the cube (UTC, ANSI off like the DuckDB arithmetic, few shuffle partitions)."""
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master(master).appName("pilotage")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.ansi.enabled", "false")
            .getOrCreate())


def to_spark(sql: str, params: dict) -> str:
    """The DuckDB statement in Spark SQL, its named parameters bound as typed literals."""
    tree = sqlglot.parse_one(sql, read="duckdb")

    def bind(node):
        if isinstance(node, exp.Placeholder) and node.this in params:
            return _literal(params[node.this])
        return node

    return tree.transform(bind).sql(dialect="spark")


def _literal(value) -> exp.Expression:
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v) for v in value])
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, Decimal)):
        return exp.Literal.number(value)
    if value is None:
        return exp.Null()
    return exp.Literal.string(str(value))


class SparkCube(Cube):
    """`Cube` answering through Spark SQL from a lake folder (see `pilotage export`).

    It overrides only where the statements run: `_execute` (Spark SQL), `_as_of`
    (the lake's load audit), and `_connection`, which gives the comparisons'
    calendar look-ups a DuckDB connection on the lake's own calendar (a
    reference table, the same in both engines).
    """

    def __init__(self, lake: str | os.PathLike, master: str = "local[2]", catalog: Catalog | None = None,
                 session=None):
        self.lake = Path(lake)
        if not (self.lake / MANIFEST).exists():
            raise EngineError(f"{self.lake} is not a pilotage lake (no {MANIFEST}): write it with "
                              "`pilotage export PATH` first")
        super().__init__(self.lake / "_unused.duckdb", catalog or load_catalog())
        self.spark = session or spark_session(master)
        self._register()

    def _register(self) -> None:
        for table in TABLES:
            folder = self.lake / table.name
            if not folder.exists():
                continue
            self.spark.read.option("basePath", str(folder)).parquet(str(folder)).createOrReplaceTempView(table.name)

    @contextlib.contextmanager
    def _connection(self):
        import duckdb

        con = duckdb.connect()
        try:
            pattern = str(self.lake / "dim_calendar" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW dim_calendar AS SELECT * FROM read_parquet('{pattern}')")
            yield con
        finally:
            con.close()

    def reading(self, threads=None):
        return contextlib.nullcontext(self)

    def _execute(self, con, compiled: Compiled) -> pa.Table:
        frame = self.spark.sql(to_spark(compiled.sql, compiled.params))
        table = _like_duckdb(frame.toArrow().rename_columns(compiled.columns))
        return table.replace_schema_metadata({"engine": "spark"})

    def _as_of(self, con, known_at: date | None) -> date:
        condition = f" AND drop_date <= DATE '{known_at.isoformat()}'" if known_at else ""
        row = self.spark.sql(f"SELECT max(drop_date) FROM load_drops WHERE outcome = 'loaded'{condition}").first()
        if row is None or row[0] is None:
            raise QueryError("the lake holds no drop" + (f" loaded by {known_at}" if known_at else ""))
        return row[0]


def _like_duckdb(table: pa.Table) -> pa.Table:
    """Spark's types to the DuckDB answer's: int32 counts are int64 there."""
    fields = []
    for field in table.schema:
        if pa.types.is_integer(field.type):
            fields.append(pa.field(field.name, pa.int64()))
        else:
            fields.append(field)
    return table.cast(pa.schema(fields))
