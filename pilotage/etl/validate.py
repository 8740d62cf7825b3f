"""Typing and checking rows as they are read: one SQL pass per file kind.

`typed_<kind>` receives every row of the chunk's files straight from DuckDB's
CSV reader, its columns cast to their types, with `_valid` (the row breaks no
rule) and, for invalid rows only, `_raw`: the text of each field (a list, in
the spec's column order: a NULL list costs a valid row less than a NULL
struct of 20 fields, a second of a scale-4 backlog), from which the list of
broken rules is worked out afterwards (`violations`). Building that list for
every row would cost a pass over millions of valid rows for a few thousand
bad ones.

Format rules come from the column types; cross-column rules from SPEC.md
(see `spec.py`). A cross-column rule judges only columns that passed their
format rule, so each bad value is reported once, for what is wrong with it.
"""

from __future__ import annotations

from functools import cache

import re

import duckdb

from pilotage.etl.spec import FIELD_COUNT, Column, FileSpec, Rule, format_rules


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def typed_table(spec: FileSpec) -> str:
    return f"typed_{spec.name}"


def _raw(column: Column) -> str:
    return f'"_r_{column.name}"'


def typed_expression(column: Column, raw: str) -> str:
    """SQL casting `raw`, the text of `column`, to its type; NULL when it does not parse."""
    if column.kind == "integer":
        return f"CASE WHEN regexp_full_match({raw}, '-?[0-9]{{1,{column.digits}}}') THEN CAST({raw} AS BIGINT) END"
    if column.kind == "decimal":
        fraction = f"(\\.[0-9]{{1,{column.scale}}})?" if column.scale else ""
        return (
            f"CASE WHEN regexp_full_match({raw}, '-?[0-9]{{1,{column.digits}}}{fraction}') "
            f"THEN CAST({raw} AS {column.sql_type}) END"
        )
    if column.kind == "date":  # exactly YYYY-MM-DD, and a real day
        return (f"CASE WHEN length({raw}) = 10 AND regexp_full_match({raw}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
                f"THEN TRY_CAST({raw} AS DATE) END")
    if column.kind == "month":
        return f"CASE WHEN regexp_full_match({raw}, '[0-9]{{4}}-(0[1-9]|1[0-2])') THEN {raw} END"
    return raw


def _check(column: str, rule: str, condition: str) -> tuple[str, str, str]:
    return column, rule, f"coalesce({condition}, false)"


@cache
def checks(spec: FileSpec) -> tuple[tuple[str, str, str], ...]:
    """(column, rule, SQL true when the row breaks it) for every rule of the file kind."""
    found = []
    for column in spec.columns:
        name = f'"{column.name}"'
        for rule, _ in format_rules(column):
            if rule == "not_empty":
                condition = f"{_raw(column)} IS NULL"
            elif rule == "code":
                condition = f"{name} IS NOT NULL AND NOT {_is_code(column)}"
            elif rule.startswith("max_"):
                condition = f"length({name}) > {column.max_length}"
            else:
                condition = f"{_raw(column)} IS NOT NULL AND {name} IS NULL"
            found.append(_check(column.name, rule, condition))
    for rule in spec.rules:
        readable = [_format_ok(spec.column(name)) for name in rule_columns(rule, spec)]
        found.append(_check(rule.column, rule.name, " AND ".join([f"({rule.violated})"] + readable)))
    return tuple(found)


def rule_columns(rule: Rule, spec: FileSpec) -> list[str]:
    """The columns a cross-column rule reads (the words of its SQL that are column names:
    the rules are ours, and parsing them with sqlglot would cost a daily run 70 ms)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rule.violated))
    return [c for c in spec.column_names if c in words]


def _is_code(column: Column) -> str:
    """SQL: the (non-NULL) column is one of its codes, exactly. A cast to an ENUM of the codes is a
    hash lookup; `IN` (the 101 departments) compares with each code in turn, three times slower."""
    return f'TRY_CAST("{column.name}" AS ENUM({", ".join(sql_string(c) for c in column.codes)})) IS NOT NULL'


def _format_ok(column: Column) -> str:
    """SQL: the column is empty or passed its format rule (so a cross-column rule can judge it)."""
    if column.kind == "code":
        return f'("{column.name}" IS NULL OR {_is_code(column)})'
    if column.kind == "text":
        return "true"
    return f'({_raw(column)} IS NULL OR "{column.name}" IS NOT NULL)'


def create_typed_table(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {typed_table(spec)} ("
        + ", ".join(f'"{c.name}" {c.sql_type}' for c in spec.columns)
        + ", _valid BOOLEAN, _raw VARCHAR[], _bad_fields BOOLEAN, _file_id INTEGER, _drop_seq INTEGER,"
          " drop_date DATE)"
    )


def typed_select(spec: FileSpec, source: str) -> str:
    """SELECT typing and checking `source` (text columns named as the spec's, _bad_fields, _file_id,
    _drop_seq, drop_date) into the typed table's columns, keeping the source's row order."""
    raw_columns = ", ".join(f'"{c.name}" AS {_raw(c)}' for c in spec.columns)
    typed_columns = ", ".join(f'{typed_expression(c, _raw(c))} AS "{c.name}"' for c in spec.columns)
    broken = " OR ".join(condition for _, _, condition in checks(spec))
    raw_list = ", ".join(_raw(c) for c in spec.columns)
    columns = ", ".join(f'"{c}"' for c in spec.column_names)
    return f"""
        SELECT {columns}, _valid, CASE WHEN NOT _valid THEN [{raw_list}] END,
               _bad_fields, _file_id, _drop_seq, drop_date
        FROM (
            SELECT *, NOT (_bad_fields OR {broken}) AS _valid
            FROM (
                SELECT *, {typed_columns}
                FROM (SELECT {raw_columns}, _bad_fields, _file_id, _drop_seq, drop_date FROM {source})
            )
        )"""


def violations(spec: FileSpec) -> str:
    """SQL: (_file_id, _row, column, rule) of every rule each invalid row breaks."""
    columns = ", ".join(f'"{c}"' for c in spec.column_names)
    raw_fields = ", ".join(f"_raw[{i}] AS {_raw(c)}" for i, c in enumerate(spec.columns, start=1))
    listed = ", ".join(
        f"CASE WHEN {condition} THEN {{'column': {sql_string(column)}, 'rule': {sql_string(rule)}}} END"
        for column, rule, condition in checks(spec)
    )
    return f"""
        SELECT _file_id, _row, v.column AS "column", v.rule AS rule FROM (
            SELECT _file_id, _row, unnest(
                CASE WHEN _bad_fields THEN [{{'column': NULL::VARCHAR, 'rule': '{FIELD_COUNT.name}'}}]
                     ELSE list_filter([{listed}], lambda v: v IS NOT NULL) END) AS v
            FROM (SELECT rowid AS _row, _file_id, _bad_fields, {columns}, {raw_fields}
                  FROM {typed_table(spec)}  -- by rowid: the few invalid rows fetched, not every column scanned
                  WHERE rowid IN (SELECT rowid FROM {typed_table(spec)} WHERE NOT _valid))
        )"""
