"""Applying valid staged rows to the warehouse, by SPEC.md's version rules.

Every valid row is classified against what the warehouse already holds and
against the other rows of the same chunk (earliest drop first):

* `new`       — a (key, version) never seen: written to the history;
* `stale`     — new, but lower than the current version: history only;
* `unchanged` — the same (key, version) with equal fields: nothing to do,
                except remembering the earliest drop that brought it;
* `conflict`  — the same (key, version) with other fields: rejected, the
                version already loaded stands.

The current-state table then takes, for each key that got a higher version,
its highest version from the history. Because the history keeps every
version with its earliest drop, the result does not depend on the order the
drops are loaded in (conflicts aside, as SPEC.md says).

Payments are immutable: the same classification by payment_id, then each new
payment goes to `payments` with its contract's department and measure, or to
`held_payments` until its contract arrives.
"""

from __future__ import annotations

import duckdb

from pilotage.etl.spec import CONTRACTS, ENVELOPES, PAYMENTS, PRESCRIPTIONS, FileSpec
from pilotage.etl.stage import with_lines
from pilotage.etl.validate import typed_table

# current table, history table, extra derived columns (before drop_date)
VERSIONED_TABLES = {
    CONTRACTS.name: ("contracts", "contract_versions", {"end_date": "coalesce(actual_end_date, planned_end_date)"}),
    PRESCRIPTIONS.name: ("prescriptions", "prescription_versions", {}),
    ENVELOPES.name: ("envelopes", "envelope_versions", {}),
}


def class_table(spec: FileSpec) -> str:
    return f"_class_{spec.name}"


def _keys_equal(spec: FileSpec, left: str, right: str, with_version: bool = True) -> str:
    keys = list(spec.key) + (["version"] if with_version and spec.versioned else [])
    return " AND ".join(f'{left}."{k}" = {right}."{k}"' for k in keys)


def _same_content(spec: FileSpec, left: str, right: str) -> str:
    return " AND ".join(
        f'{left}."{c}" IS NOT DISTINCT FROM {right}."{c}"'
        for c in spec.column_names
        if c not in spec.key and c != "version"
    )


def _rank(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    partition = ", ".join(f'"{k}"' for k in spec.key) + (', "version"' if spec.versioned else "")
    keys = ", ".join(f'"{k}"' for k in spec.key)
    earlier = (f", max(version) OVER (PARTITION BY {keys} ORDER BY _drop_seq "
               "RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _earlier_version") if spec.versioned else ""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT * EXCLUDE (_violations),
               row_number() OVER (PARTITION BY {partition} ORDER BY drop_date, _drop_seq, _file_id, _row) AS _rank
               {earlier}
        FROM {typed_table(spec)} WHERE len(_violations) = 0"""
    )


def merge_versioned(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """Classify and apply the valid rows of a versioned file kind."""
    current, history, derived = VERSIONED_TABLES[spec.name]
    _rank(con, spec)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.*,
               CASE
                   WHEN h.version IS NOT NULL THEN
                       CASE WHEN {_same_content(spec, 't', 'h')} THEN 'unchanged' ELSE 'conflict' END
                   WHEN t._rank = 1 THEN  -- stale: lower than a version loaded before, or by an earlier drop
                       CASE WHEN t.version < greatest(coalesce(c.version, 0), coalesce(t._earlier_version, 0))
                            THEN 'stale' ELSE 'new' END
                   WHEN {_same_content(spec, 't', 'f')} THEN 'unchanged'
                   ELSE 'conflict'
               END AS _class,
               h.drop_date AS _known_drop_date,
               c.version AS _current_version
        FROM _ranked t
        LEFT JOIN {history} h ON {_keys_equal(spec, 't', 'h')}
        LEFT JOIN _ranked f ON t._rank > 1 AND f._rank = 1 AND {_keys_equal(spec, 't', 'f')}
        LEFT JOIN {current} c ON {_keys_equal(spec, 't', 'c', with_version=False)}"""
    )
    columns = ", ".join(f'"{c}"' for c in spec.column_names)
    derived_sql = "".join(f", {expr} AS {name}" for name, expr in derived.items())
    con.execute(
        f"INSERT INTO {history} SELECT {columns}{derived_sql}, drop_date "
        f"FROM {class_table(spec)} WHERE _class IN ('new', 'stale')"
    )
    _remember_earliest_drop(con, spec, history, current)
    keys = ", ".join(f'"{k}"' for k in spec.key)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _changed_{spec.name} AS
        SELECT {keys}, max(version) AS version FROM {class_table(spec)}
        WHERE _class = 'new' GROUP BY {keys}
        HAVING max(version) > coalesce(max(_current_version), 0)"""
    )
    con.execute(f"DELETE FROM {current} c USING _changed_{spec.name} x WHERE {_keys_equal(spec, 'c', 'x', False)}")
    con.execute(
        f"INSERT INTO {current} SELECT h.* FROM {history} h "
        f"JOIN _changed_{spec.name} x ON {_keys_equal(spec, 'h', 'x')}"
    )


def _remember_earliest_drop(con: duckdb.DuckDBPyConnection, spec: FileSpec, *tables: str) -> None:
    """A known version re-sent by an earlier drop was known since that drop."""
    keys = ", ".join(f'"{k}"' for k in spec.key) + (', "version"' if spec.versioned else "")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _earlier AS
        SELECT {keys}, min(drop_date) AS drop_date FROM {class_table(spec)}
        WHERE _class = 'unchanged' AND drop_date < _known_drop_date GROUP BY {keys}"""
    )
    for table in tables:
        con.execute(
            f"UPDATE {table} t SET drop_date = e.drop_date FROM _earlier e "
            f"WHERE {_keys_equal(spec, 't', 'e')} AND e.drop_date < t.drop_date"
        )


def update_payment_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Keep the department and measure stored on payments in step with their contract."""
    con.execute(
        """UPDATE payments p SET department = c.department, measure = c.measure,
                                 contract_cancelled = (c.status = 'CANCELLED')
        FROM contracts c JOIN _changed_contracts x USING (contract_id)
        WHERE p.contract_id = c.contract_id
          AND (p.department <> c.department OR p.measure <> c.measure
               OR p.contract_cancelled <> (c.status = 'CANCELLED'))"""
    )


_PAYMENT_FIELDS = ", ".join(f'"{c}"' for c in PAYMENTS.column_names)
_h_fields = ", ".join(f'h."{c}"' for c in PAYMENTS.column_names)


def merge_payments(con: duckdb.DuckDBPyConnection) -> None:
    """Classify the valid payments; load those whose contract is known, hold the others."""
    spec = PAYMENTS
    _rank(con, spec)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.*,
               CASE
                   WHEN e.payment_id IS NOT NULL THEN
                       CASE WHEN {_same_content(spec, 't', 'e')} THEN 'unchanged' ELSE 'conflict' END
                   WHEN t._rank = 1 THEN  -- released: held at its drop, its contract came with a later one
                       CASE WHEN c.contract_id IS NULL THEN 'held'
                            WHEN a.drop_seq > t._drop_seq THEN 'released' ELSE 'new' END
                   WHEN {_same_content(spec, 't', 'f')} THEN 'unchanged'
                   ELSE 'conflict'
               END AS _class,
               e.drop_date AS _known_drop_date,
               c.department AS _department, c.measure AS _measure,
               c.status = 'CANCELLED' AS _cancelled
        FROM _ranked t
        LEFT JOIN (
            SELECT {_PAYMENT_FIELDS}, drop_date FROM payments
            UNION ALL SELECT {_PAYMENT_FIELDS}, drop_date FROM held_payments
        ) e ON e.payment_id = t.payment_id
        LEFT JOIN _ranked f ON t._rank > 1 AND f._rank = 1 AND f.payment_id = t.payment_id
        LEFT JOIN contracts c ON t._rank = 1 AND c.contract_id = t.contract_id
        LEFT JOIN (
            SELECT contract_id, min(_drop_seq) AS drop_seq FROM _class_contracts
            WHERE _current_version IS NULL AND _class <> 'conflict' GROUP BY contract_id
        ) a ON a.contract_id = t.contract_id"""
    )
    con.execute(
        f"INSERT INTO payments SELECT {_PAYMENT_FIELDS}, drop_date, _department, _measure, _cancelled "
        f"FROM {class_table(spec)} WHERE _class IN ('new', 'released')"
    )
    con.execute(
        f"INSERT INTO held_payments SELECT {_h_fields}, h.drop_date, f.file, h.line FROM ("
        + with_lines(f"(SELECT * FROM {class_table(spec)} WHERE _class = 'held')")
        + ") h JOIN _files f ON f.file_id = h._file_id"
    )
    _remember_earliest_drop(con, spec, "payments", "held_payments")


def release_held_payments(con: duckdb.DuckDBPyConnection) -> int:
    """Move held payments whose contract has now arrived into `payments`."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _released AS
        SELECT h.payment_id, {", ".join(f'h."{c}"' for c in PAYMENTS.column_names if c != "payment_id")},
               h.drop_date, c.department, c.measure, c.status = 'CANCELLED'
        FROM held_payments h JOIN contracts c ON c.contract_id = h.contract_id
        WHERE h.contract_id IN (SELECT contract_id FROM _changed_contracts)"""
    )
    con.execute("INSERT INTO payments SELECT * FROM _released")
    con.execute("DELETE FROM held_payments WHERE payment_id IN (SELECT payment_id FROM _released)")
    return con.sql("SELECT count(*) FROM _released").fetchall()[0][0]
