"""Gathering the rejected rows of a chunk: which line, which column, which rule.

Three sources: rows breaking a rule of SPEC.md (`validate.violations`), rows
conflicting with a loaded version (`_class_*`), and lines with a wrong number
of fields (`_structural`). Each lands in `rejects` with the line as written.
"""

from __future__ import annotations

import duckdb

from pilotage.etl.merge import class_table
from pilotage.etl.spec import FIELD_COUNT, FILES, PAYMENT_CONFLICT, VERSION_CONFLICT
from pilotage.etl.stage import ROW_LEVEL_ERRORS, add_raw_lines, with_lines
from pilotage.etl.validate import violations


def gather_rejects(con: duckdb.DuckDBPyConnection, line_ends: dict | None = None) -> None:
    """Fill the temp table `_rejects` (file_id, line, column, rule, raw).

    line_ends: {path: offsets of its line ends}, if known (see stage.add_raw_lines).
    """
    parts = []
    for spec in FILES:
        parts.append(
            f"""SELECT _file_id AS file_id, line, "column", rule FROM ({with_lines(f"({violations(spec)})")})"""
        )
        conflict = VERSION_CONFLICT if spec.versioned else PAYMENT_CONFLICT
        parts.append(
            f"""SELECT _file_id, line, '{conflict.column}', '{conflict.name}' FROM (
                {with_lines(f"(SELECT _file_id, _row FROM {class_table(spec)} WHERE _class = 'conflict')")})"""
        )
    parts.append(
        f"SELECT file_id, line::INTEGER, NULL, '{FIELD_COUNT.name}' FROM _structural "
        f"WHERE error_type IN {tuple(ROW_LEVEL_ERRORS)}"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _reject_lines AS " + " UNION ALL ".join(parts))
    add_raw_lines(con, "_reject_lines", "_rejects", line_ends)


def store_rejects(con: duckdb.DuckDBPyConnection) -> None:
    """Copy `_rejects` into the warehouse quarantine, for the drops being loaded."""
    con.execute(
        """INSERT INTO rejects
        SELECT d.load_id, f.drop_date, f.file, r.line, r."column", r.rule, r.raw
        FROM _rejects r JOIN _files f USING (file_id) JOIN _drop_loads d USING (drop_seq)
        ORDER BY f.drop_date, d.load_id, f.file, r.line, r.rule"""
    )
