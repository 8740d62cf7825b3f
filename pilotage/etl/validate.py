"""Typing and checking staged rows: one SQL pass per file kind.

`typed_<kind>` holds every staged row with its columns cast to their types
and `_violations`, the list of every rule the row breaks (column and rule
name). A row is valid when that list is empty. Format rules come from the
column types; cross-column rules from SPEC.md (see `spec.py`).
"""

from __future__ import annotations

import duckdb

import sqlglot
from sqlglot import exp

from pilotage.etl.spec import FIELD_COUNT, Column, FileSpec, Rule, format_rules
from pilotage.etl.stage import sql_string, stage_table


def typed_table(spec: FileSpec) -> str:
    return f"typed_{spec.name}"


def _raw(column: Column) -> str:
    return f'"_r_{column.name}"'


def _stage(column: Column) -> str:
    return f's."{column.name}"'


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
    if column.kind == "date":
        return f"CASE WHEN regexp_full_match({raw}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN TRY_CAST({raw} AS DATE) END"
    if column.kind == "month":
        return f"CASE WHEN regexp_full_match({raw}, '[0-9]{{4}}-(0[1-9]|1[0-2])') THEN {raw} END"
    return raw


def _violation(column: str, rule: str, condition: str) -> str:
    return f"CASE WHEN coalesce({condition}, false) THEN {{'column': {sql_string(column)}, 'rule': {sql_string(rule)}}} END"


def violation_checks(spec: FileSpec) -> list[str]:
    """One SQL expression per rule: a {column, rule} struct when broken, else NULL."""
    checks = []
    for column in spec.columns:
        name = f'"{column.name}"'
        for rule, _ in format_rules(column):
            if rule == "not_empty":
                condition = f"{_raw(column)} IS NULL"
            elif rule == "code":
                condition = f"{name} NOT IN ({', '.join(sql_string(c) for c in column.codes)})"
            elif rule.startswith("max_"):
                condition = f"length({name}) > {column.max_length}"
            else:
                condition = f"{_raw(column)} IS NOT NULL AND {name} IS NULL"
            checks.append(_violation(column.name, rule, condition))
    for rule in spec.rules:
        readable = [_format_ok(spec.column(name)) for name in rule_columns(rule, spec)]
        checks.append(_violation(rule.column, rule.name, " AND ".join([f"({rule.violated})"] + readable)))
    return checks


def rule_columns(rule: Rule, spec: FileSpec) -> list[str]:
    """The columns a cross-column rule reads."""
    tree = sqlglot.parse_one(rule.violated, read="duckdb")
    names = {column.name for column in tree.find_all(exp.Column)}
    return [c for c in spec.column_names if c in names]


def _format_ok(column: Column) -> str:
    """SQL: the column is empty or passed its format rule (so a cross-column rule can judge it)."""
    if column.kind == "code":
        return f'("{column.name}" IS NULL OR "{column.name}" IN ({", ".join(sql_string(c) for c in column.codes)}))'
    if column.kind in ("text",):
        return "true"
    return f'({_raw(column)} IS NULL OR "{column.name}" IS NOT NULL)'


def build_typed(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """Create typed_<kind> from stage_<kind>."""
    raw_columns = ", ".join(f"{_stage(c)} AS {_raw(c)}" for c in spec.columns)
    typed_columns = ", ".join(f'{typed_expression(c, _stage(c))} AS "{c.name}"' for c in spec.columns)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {typed_table(spec)} AS
        SELECT _row, _file_id, _drop_seq, drop_date,
               {", ".join(f'"{c}"' for c in spec.column_names)},
               CASE WHEN _bad_fields THEN [{{'column': NULL::VARCHAR, 'rule': '{FIELD_COUNT.name}'}}]
                    ELSE list_filter([{", ".join(violation_checks(spec))}], lambda v: v IS NOT NULL)
               END AS _violations
        FROM (
            SELECT s.rowid AS _row, s._file_id, s._bad_fields, f.drop_seq AS _drop_seq, f.drop_date,
                   {raw_columns}, {typed_columns}
            FROM {stage_table(spec)} s JOIN _files f ON f.file_id = s._file_id
        )"""
    )
