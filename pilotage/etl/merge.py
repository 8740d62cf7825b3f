"""Applying valid rows to the warehouse, by SPEC.md's version rules.

Every valid row is classified against what the warehouse already holds and
against the other rows of the same chunk (earliest drop first):

* `new`       — a (key, version) never seen: written to the history;
* `stale`     — new, but lower than a version already loaded (before the
                chunk, or by an earlier drop of it): history only;
* `unchanged` — the same (key, version) with equal fields: nothing to do,
                except remembering the earliest drop that brought it;
* `conflict`  — the same (key, version) with other fields: rejected, the
                version already loaded stands.

The current-state table then takes, for each key that got a higher version,
that version. Because the history keeps every version with its earliest
drop, the result does not depend on the order the drops are loaded in
(conflicts aside, as SPEC.md says).

Payments are immutable: the same classification by payment_id, then each new
payment goes to `payments` with its contract's department, measure and
cancellation, or to `held_payments` until its contract arrives.

Repeats within a chunk are rare, so they are found by aggregation (which key
appears more than once, which row came first) rather than by ranking every
row: one pass that only reads, instead of a sort of the whole chunk.
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

# A row's place in the chunk: its drop first (date order), then its row.
ORDER = "(CAST({t}._drop_seq AS BIGINT) * 4294967296 + {t}.rowid)"


def class_table(spec: FileSpec) -> str:
    return f"_class_{spec.name}"


def _keys(spec: FileSpec, with_version: bool = True) -> list[str]:
    return list(spec.key) + (["version"] if with_version and spec.versioned else [])


def _keys_equal(spec: FileSpec, left: str, right: str, with_version: bool = True) -> str:
    return " AND ".join(f'{left}."{k}" = {right}."{k}"' for k in _keys(spec, with_version))


def _quoted(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _same_content(spec: FileSpec, left: str, right: str) -> str:
    return " AND ".join(
        f'{left}."{c}" IS NOT DISTINCT FROM {right}."{c}"'
        for c in spec.column_names
        if c not in spec.key and c != "version"
    )


def _repeats(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """_kv: the keys (and versions) found more than once among the chunk's valid rows, with
    the place of the first; _firsts: those first rows, to compare the others with."""
    keys = _quoted(_keys(spec))
    # grouping millions of text keys is slow: group their 64-bit hashes, then check the few candidates
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kv AS
        WITH candidates AS (
            SELECT hash({keys}) AS h FROM {typed_table(spec)} WHERE _valid GROUP BY h HAVING count(*) > 1)
        SELECT {keys}, min({ORDER.format(t='t')}) AS first
        FROM {typed_table(spec)} t WHERE _valid AND hash({keys}) IN (SELECT h FROM candidates)
        GROUP BY {keys} HAVING count(*) > 1"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _firsts AS
        SELECT t.* FROM {typed_table(spec)} t
        WHERE t._valid AND {ORDER.format(t='t')} IN (SELECT first FROM _kv)"""
    )


def merge_versioned(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """Classify and apply the valid rows of a versioned file kind."""
    current, history, derived = VERSIONED_TABLES[spec.name]
    keys = _quoted(spec.key)
    if not con.sql(f"SELECT count(*) FROM {typed_table(spec)} WHERE _valid").fetchall()[0][0]:
        _nothing_to_merge(con, spec)  # a day without this kind of row: leave the large tables unread
        return
    _repeats(con, spec)
    # the highest version each key had in the earlier drops of the chunk, for keys in several drops
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _earlier AS
        WITH repeated AS (  -- keys with several rows in the chunk, found by their hashes first
            SELECT hash({keys}) AS h FROM {typed_table(spec)} WHERE _valid GROUP BY h HAVING count(*) > 1
        ), per_drop AS (
            SELECT {keys}, _drop_seq, max(version) AS version FROM {typed_table(spec)}
            WHERE _valid AND hash({keys}) IN (SELECT h FROM repeated) GROUP BY ALL
        ), several AS (
            SELECT * FROM per_drop WHERE ({keys}) IN (
                SELECT {keys} FROM per_drop GROUP BY ALL HAVING count(*) > 1)
        )
        SELECT a.*, max(b.version) AS earlier_version
        FROM several a JOIN several b ON {_keys_equal(spec, 'a', 'b', False)} AND b._drop_seq < a._drop_seq
        GROUP BY ALL"""
    )
    _known_versions(con, spec, history, current)
    first = f"(k.first IS NULL OR {ORDER.format(t='t')} = k.first)"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.* EXCLUDE (_valid, _raw, _bad_fields), t.rowid AS _row,
               CASE
                   WHEN h.version IS NOT NULL THEN
                       CASE WHEN {_same_content(spec, 't', 'h')} THEN 'unchanged' ELSE 'conflict' END
                   WHEN {first} THEN
                       CASE WHEN t.version < greatest(coalesce(c.version, 0), coalesce(e.earlier_version, 0))
                            THEN 'stale' ELSE 'new' END
                   WHEN {_same_content(spec, 't', 'f')} THEN 'unchanged'
                   ELSE 'conflict'
               END AS _class,
               h.drop_date AS _known_drop_date,
               c.version AS _current_version
        FROM {typed_table(spec)} t
        LEFT JOIN _kv k ON {_keys_equal(spec, 't', 'k')}
        LEFT JOIN _seen h ON {_keys_equal(spec, 't', 'h')}
        LEFT JOIN _current c ON {_keys_equal(spec, 't', 'c', with_version=False)}
        LEFT JOIN _earlier e ON {_keys_equal(spec, 't', 'e', False)} AND e._drop_seq = t._drop_seq
        LEFT JOIN _firsts f ON {_keys_equal(spec, 't', 'f')}
        WHERE t._valid"""
    )
    columns = _quoted(spec.column_names)
    derived_sql = "".join(f", {expr} AS {name}" for name, expr in derived.items())
    con.execute(
        f"INSERT INTO {history} SELECT {columns}{derived_sql}, drop_date "
        f"FROM {class_table(spec)} WHERE _class IN ('new', 'stale')"
    )
    _remember_earliest_drop(con, spec, history, current)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _changed_{spec.name} AS
        SELECT {keys}, max(version) AS version FROM {class_table(spec)}
        WHERE _class = 'new' GROUP BY {keys}
        HAVING max(version) > coalesce(max(_current_version), 0)"""
    )
    if spec is CONTRACTS:  # payments carry these: note which contracts they must follow
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _moved AS
            SELECT n.contract_id, n.department, n.measure, n.status = 'CANCELLED' AS cancelled
            FROM _class_contracts n JOIN _changed_contracts x USING (contract_id, version)
            JOIN _current c USING (contract_id)
            WHERE n._class = 'new' AND (c.department <> n.department OR c.measure <> n.measure
                                        OR (c.status = 'CANCELLED') <> (n.status = 'CANCELLED'))"""
        )
    con.execute(f"DELETE FROM {current} c USING _changed_{spec.name} x WHERE {_keys_equal(spec, 'c', 'x', False)}")
    con.execute(
        f"INSERT INTO {current} SELECT {', '.join(f'n.{chr(34)}{c}{chr(34)}' for c in spec.column_names)}"
        f"{''.join(f', {expr}' for expr in derived.values())}, n.drop_date "
        f"FROM {class_table(spec)} n JOIN _changed_{spec.name} x ON {_keys_equal(spec, 'n', 'x')} "
        "WHERE n._class = 'new'"
    )


def _nothing_to_merge(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """The empty classification and change tables the later steps read."""
    keys = _quoted(spec.key)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.* EXCLUDE (_valid, _raw, _bad_fields), t.rowid AS _row, NULL::VARCHAR AS _class,
               NULL::DATE AS _known_drop_date, NULL::INTEGER AS _current_version
        FROM {typed_table(spec)} t WHERE false"""
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _changed_{spec.name} AS "
                f"SELECT {keys}, version FROM {typed_table(spec)} WHERE false")
    if spec is CONTRACTS:
        con.execute("CREATE OR REPLACE TEMP TABLE _moved (contract_id VARCHAR, department VARCHAR, "
                    "measure VARCHAR, cancelled BOOLEAN)")


def _known_versions(con: duckdb.DuckDBPyConnection, spec: FileSpec, history: str, current: str) -> None:
    """_current: the current version of the chunk's keys; _seen: the full history rows of the
    (key, version) pairs the chunk re-sends (usually few).

    Only the key columns of the large tables are scanned; whole rows are read
    for the re-sent versions alone, whose content must be compared.
    """
    keys = _quoted(spec.key)
    moved = ", department, measure, status" if spec is CONTRACTS else ""  # for _moved, below
    con.execute(f"CREATE OR REPLACE TEMP TABLE _current AS {_touched(spec, current, f'{keys}, version{moved}')}")
    with_version = _quoted(_keys(spec))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _resent AS
        SELECT {with_version} FROM ({_touched(spec, history, with_version)})
        INTERSECT SELECT {with_version} FROM {typed_table(spec)} WHERE _valid"""
    )
    resent = con.sql("SELECT count(*) FROM _resent").fetchall()[0][0]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _seen AS SELECT * FROM {history} "
        + (f"WHERE ({with_version}) IN (SELECT * FROM _resent)" if resent else "WHERE false")
    )


def _touched(spec: FileSpec, table: str, columns: str = "*") -> str:
    """The rows of a (large) warehouse table whose key is in the chunk: a semi-join that
    scans the table once instead of building a hash table of all of it."""
    keys = _quoted(spec.key)
    return f"SELECT {columns} FROM {table} WHERE ({keys}) IN (SELECT {keys} FROM {typed_table(spec)} WHERE _valid)"


def _remember_earliest_drop(con: duckdb.DuckDBPyConnection, spec: FileSpec, *tables: str) -> None:
    """A known version re-sent by an earlier drop was known since that drop."""
    keys = _quoted(_keys(spec))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _earlier_drop AS
        SELECT {keys}, min(drop_date) AS drop_date FROM {class_table(spec)}
        WHERE _class = 'unchanged' AND drop_date < _known_drop_date GROUP BY {keys}"""
    )
    for table in tables:
        con.execute(
            f"UPDATE {table} t SET drop_date = e.drop_date FROM _earlier_drop e "
            f"WHERE {_keys_equal(spec, 't', 'e')} AND e.drop_date < t.drop_date"
        )


def update_payment_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Keep the department, measure and cancellation stored on payments in step with their contract.

    Only contracts whose new version moved (another department or measure, or
    cancelled) are looked for: usually none, and the payments are not scanned.
    """
    if not con.sql("SELECT count(*) FROM _moved").fetchall()[0][0]:
        return
    con.execute(
        """UPDATE payments p SET department = m.department, measure = m.measure, contract_cancelled = m.cancelled
        FROM _moved m WHERE p.contract_id = m.contract_id"""
    )


_PAYMENT_FIELDS = _quoted(PAYMENTS.column_names)
_H_FIELDS = ", ".join(f'h."{c}"' for c in PAYMENTS.column_names)


def merge_payments(con: duckdb.DuckDBPyConnection) -> None:
    """Classify the valid payments; load those whose contract is known, hold the others.

    Almost every payment of a chunk is ordinary: seen once in the chunk, never
    before, its contract already known. Those go straight from the typed table
    to `payments`; only the others (found by cheap semi-joins on keys) are
    classified row by row into `_class_payments`. Materialising all the
    chunk's payments in a classification table first cost a third of the
    payments' time.
    """
    spec = PAYMENTS
    _repeats(con, spec)
    # payments already loaded or held that the chunk sends again (usually none): read whole
    # rows for those alone, after a scan of the ids
    con.execute(f"CREATE OR REPLACE TEMP TABLE _resent AS {_touched(spec, 'payments', 'payment_id')}")
    resent = con.sql("SELECT count(*) FROM _resent").fetchall()[0][0]
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _seen_payments AS
        SELECT {_PAYMENT_FIELDS}, drop_date FROM payments
        {'WHERE payment_id IN (SELECT payment_id FROM _resent)' if resent else 'WHERE false'}
        UNION ALL SELECT {_PAYMENT_FIELDS}, drop_date FROM held_payments"""
    )
    _arrivals(con)
    _exceptional_payments(con)
    first = f"(k.first IS NULL OR {ORDER.format(t='t')} = k.first)"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.* EXCLUDE (_valid, _raw, _bad_fields), t.rowid AS _row,
               CASE
                   WHEN e.payment_id IS NOT NULL THEN
                       CASE WHEN {_same_content(spec, 't', 'e')} THEN 'unchanged' ELSE 'conflict' END
                   WHEN {first} THEN  -- released: held at its drop, its contract came with a later one
                       CASE WHEN c.contract_id IS NULL THEN 'held'
                            WHEN a.drop_seq > t._drop_seq THEN 'released' ELSE 'new' END
                   WHEN {_same_content(spec, 't', 'f')} THEN 'unchanged'
                   ELSE 'conflict'
               END AS _class,
               e.drop_date AS _known_drop_date,
               c.department AS _department, c.measure AS _measure,
               c.status = 'CANCELLED' AS _cancelled
        FROM {typed_table(spec)} t
        LEFT JOIN _kv k ON k.payment_id = t.payment_id
        LEFT JOIN _seen_payments e ON e.payment_id = t.payment_id
        LEFT JOIN _firsts f ON f.payment_id = t.payment_id
        LEFT JOIN contracts c ON c.contract_id = t.contract_id
        LEFT JOIN _arrived a ON a.contract_id = t.contract_id
        WHERE t.rowid IN (SELECT _row FROM _exceptional)"""
    )
    con.execute(  # the ordinary payments: new, straight from the typed table
        f"""INSERT INTO payments
        SELECT {', '.join(f't."{c}"' for c in spec.column_names)}, t.drop_date,
               c.department, c.measure, c.status = 'CANCELLED'
        FROM {typed_table(spec)} t JOIN contracts c ON c.contract_id = t.contract_id
        WHERE t._valid AND t.rowid NOT IN (SELECT _row FROM _exceptional)"""
    )
    con.execute(
        f"INSERT INTO payments SELECT {_PAYMENT_FIELDS}, drop_date, _department, _measure, _cancelled "
        f"FROM {class_table(spec)} WHERE _class IN ('new', 'released')"
    )
    con.execute(
        f"INSERT INTO held_payments SELECT {_H_FIELDS}, h.drop_date, f.file, h.line FROM ("
        + with_lines(f"(SELECT * FROM {class_table(spec)} WHERE _class = 'held')")
        + ") h JOIN _files f ON f.file_id = h._file_id"
    )
    _remember_earliest_drop(con, spec, "payments", "held_payments")


def _arrivals(con: duckdb.DuckDBPyConnection) -> None:
    """_arrived: contracts new to the warehouse in this chunk, with the first drop that brought them."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _arrived AS
        SELECT contract_id, min(_drop_seq) AS drop_seq FROM _class_contracts
        WHERE _current_version IS NULL AND _class <> 'conflict' GROUP BY contract_id"""
    )


def _exceptional_payments(con: duckdb.DuckDBPyConnection) -> None:
    """_exceptional: the rows of the valid payments that are not simply new.

    Those repeated in the chunk or sent before (the ids of _kv and
    _seen_payments), those whose contract is unknown (to hold), and those whose
    contract came with a later drop of the chunk (held, then released at once).
    Every other valid payment is `new`.
    """
    typed = typed_table(PAYMENTS)
    con.execute(  # three narrow passes: one with three joins would carry every column through each
        f"""CREATE OR REPLACE TEMP TABLE _exceptional AS
        SELECT rowid AS _row FROM {typed} t
        WHERE _valid AND NOT EXISTS (SELECT 1 FROM contracts c WHERE c.contract_id = t.contract_id)
        UNION SELECT t.rowid FROM {typed} t JOIN _arrived a ON a.contract_id = t.contract_id
        WHERE t._valid AND a.drop_seq > t._drop_seq
        UNION SELECT rowid FROM {typed}
        WHERE _valid AND payment_id IN (SELECT payment_id FROM _kv UNION ALL SELECT payment_id FROM _seen_payments)"""
    )


def payment_counts() -> str:
    """SQL: (_file_id, _class, count) of the chunk's valid payments, the ordinary ones counted as new."""
    return (
        f"SELECT _file_id, _class, sum(n)::BIGINT FROM ("
        f"SELECT _file_id, _class, count(*) AS n FROM {class_table(PAYMENTS)} GROUP BY 1, 2 "
        f"UNION ALL SELECT _file_id, 'new', count(*) FROM {typed_table(PAYMENTS)} "
        "WHERE _valid AND rowid NOT IN (SELECT _row FROM _exceptional) GROUP BY 1) GROUP BY 1, 2"
    )


def release_held_payments(con: duckdb.DuckDBPyConnection) -> int:
    """Move held payments whose contract has now arrived into `payments`."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _released AS
        SELECT {_H_FIELDS}, h.drop_date, c.department, c.measure, c.status = 'CANCELLED'
        FROM held_payments h JOIN contracts c ON c.contract_id = h.contract_id
        WHERE h.contract_id IN (SELECT contract_id FROM _changed_contracts)"""
    )
    con.execute("INSERT INTO payments SELECT * FROM _released")
    con.execute("DELETE FROM held_payments WHERE payment_id IN (SELECT payment_id FROM _released)")
    return con.sql("SELECT count(*) FROM _released").fetchall()[0][0]
