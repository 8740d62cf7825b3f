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

For each key that got a higher version, that version becomes the current
row and the one it replaces joins the superseded versions (the history is
both: warehouse/schema.py). Because the history keeps every version with its
earliest drop, the result does not depend on the order the drops are loaded
in (conflicts aside, as SPEC.md says).

Payments are immutable: the same classification by payment_id, then each new
payment goes to `payments` with its contract's department, measure and
cancellation, or to `held_payments` until its contract arrives.

Almost every row is ordinary (new, sent once, nothing to compare it with):
narrow passes on keys find the few that are not (`_exceptional_<kind>`),
only those are classified row by row (`_class_<kind>`), and the ordinary
ones go straight from the typed table to the warehouse. Repeated payment ids
are found by aggregation (which id appears more than once, which row came
first); for the versioned kinds, one window over each key's rows finds the
repeated, the stale and the top rows at once (`_ranks`).
"""

from __future__ import annotations

import duckdb

from pilotage.etl.spec import CONTRACTS, ENVELOPES, PAYMENTS, PRESCRIPTIONS, FileSpec
from pilotage.etl.stage import with_lines
from pilotage.etl.validate import typed_table

# current table, superseded versions, history (a view of both: warehouse/schema.py), extra derived
# columns (before drop_date)
VERSIONED_TABLES = {
    CONTRACTS.name: ("contracts", "contract_superseded", "contract_versions",
                     {"end_date": "coalesce(actual_end_date, planned_end_date)"}),
    PRESCRIPTIONS.name: ("prescriptions", "prescription_superseded", "prescription_versions", {}),
    ENVELOPES.name: ("envelopes", "envelope_superseded", "envelope_versions", {}),
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
    """_kv: the payment ids found more than once among the chunk's valid rows, with the place
    and rowid of the first; _firsts: those first rows, to compare the others with. (The
    versioned kinds get theirs from `_ranks`.)"""
    keys = _quoted(_keys(spec))
    # grouping millions of text keys is slow: group their 64-bit hashes, then check the few candidates
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kv AS
        WITH candidates AS (
            SELECT hash({keys}) AS h FROM {typed_table(spec)} WHERE _valid GROUP BY h HAVING count(*) > 1)
        SELECT {keys}, min({ORDER.format(t='t')}) AS first, arg_min(t.rowid, {ORDER.format(t='t')}) AS first_row
        FROM {typed_table(spec)} t WHERE _valid AND hash({keys}) IN (SELECT h FROM candidates)
        GROUP BY {keys} HAVING count(*) > 1"""
    )
    _fetch_firsts(con, spec)


def _fetch_firsts(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """_firsts: the typed rows _kv names as the first of each repeated key."""
    con.execute(  # by rowid: DuckDB fetches those rows alone instead of scanning the whole table
        f"CREATE OR REPLACE TEMP TABLE _firsts AS "
        f"SELECT * FROM {typed_table(spec)} WHERE rowid IN (SELECT first_row FROM _kv)"
    )


def _ranks(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """_ranked: the valid rows of a versioned kind that are not plain, from one window over each
    key's rows, highest version first: `top`, the first row of the key's highest version;
    `repeated`, a (key, version) sent more than once in the chunk; `behind`, a version below one
    that an earlier drop of the chunk brought (stale). Then _kv and _firsts, as `_repeats` makes
    them for payments.

    One sort serves all three: the first row of a version has only higher versions before it, so
    the earliest drop among the rows before it says whether it is behind. (A later row of a
    repeated version may be flagged behind by an earlier copy of its own version: it is repeated,
    hence classified anyway, and `behind` only decides between stale and new for first rows.) The
    three passes it replaces took 2.9 s for the scale-4 contracts and prescriptions, this 2.6 s.
    """
    keys = _quoted(spec.key)
    typed = typed_table(spec)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT * FROM (
            SELECT rowid AS _row, {keys}, version, {ORDER.format(t=typed)} AS _order,
                   row_number() OVER w = 1 AS top,
                   coalesce(min(_drop_seq) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) < _drop_seq,
                            false) AS behind,
                   coalesce(lag(version) OVER w = version, false)
                       OR coalesce(lead(version) OVER w = version, false) AS repeated,
                   min(_drop_seq) OVER (PARTITION BY {keys}) AS first_drop_seq
            FROM {typed} WHERE _valid
            WINDOW w AS (PARTITION BY {keys} ORDER BY version DESC, {ORDER.format(t=typed)}))
        WHERE top OR behind OR repeated"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kv AS
        SELECT {_quoted(_keys(spec))}, min(_order) AS first, arg_min(_row, _order) AS first_row
        FROM _ranked WHERE repeated GROUP BY ALL"""
    )
    _fetch_firsts(con, spec)


def exceptional_table(spec: FileSpec) -> str:
    return f"_exceptional_{spec.name}"


def merge_versioned(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """Classify and apply the valid rows of a versioned file kind.

    Most rows are ordinary: a key new to the warehouse or a version above its
    current one, sent once in the chunk, not below a version an earlier drop
    of the chunk brought. Those are `new` without looking further and go
    straight from the typed table to the history. Only the others (found by
    narrow passes on keys and versions: `_exceptional_<kind>`) are classified
    row by row in `_class_<kind>`.
    """
    current, superseded, history, derived = VERSIONED_TABLES[spec.name]
    keys = _quoted(spec.key)
    typed = typed_table(spec)
    if not con.sql(f"SELECT count(*) FROM {typed} WHERE _valid").fetchall()[0][0]:
        _nothing_to_merge(con, spec)  # a day without this kind of row: leave the large tables unread
        return
    _ranks(con, spec)
    _known_versions(con, spec, history, current)
    # not ordinary: at or below the warehouse's current version (re-sent, or stale), sent more
    # than once in the chunk, or behind an earlier drop of the chunk
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {exceptional_table(spec)} AS
        SELECT _row FROM _low UNION SELECT _row FROM _ranked WHERE repeated OR behind"""
    )
    first = f"(k.first IS NULL OR {ORDER.format(t='t')} = k.first)"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.* EXCLUDE (_valid, _raw, _bad_fields), t.rowid AS _row,
               CASE
                   WHEN h.version IS NOT NULL THEN
                       CASE WHEN {_same_content(spec, 't', 'h')} THEN 'unchanged' ELSE 'conflict' END
                   WHEN {first} THEN
                       CASE WHEN t.version < coalesce(c.version, 0) OR b._row IS NOT NULL
                            THEN 'stale' ELSE 'new' END
                   WHEN {_same_content(spec, 't', 'f')} THEN 'unchanged'
                   ELSE 'conflict'
               END AS _class,
               h.drop_date AS _known_drop_date
        FROM {typed} t
        LEFT JOIN _kv k ON {_keys_equal(spec, 't', 'k')}
        LEFT JOIN _seen h ON {_keys_equal(spec, 't', 'h')}
        LEFT JOIN _current c ON {_keys_equal(spec, 't', 'c', with_version=False)}
        LEFT JOIN (SELECT _row FROM _ranked WHERE behind) b ON b._row = t.rowid
        LEFT JOIN _firsts f ON {_keys_equal(spec, 't', 'f')}
        WHERE t.rowid IN (SELECT _row FROM {exceptional_table(spec)})"""
    )
    # a key's highest new row becomes its current one. It is the key's highest row in the chunk, if
    # that is new: at or below the current version, a row is unchanged, conflict or stale, and so is
    # every lower one
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _changed_{spec.name} AS
        SELECT {keys}, version, _row, first_drop_seq FROM _ranked
        WHERE top AND (_row NOT IN (SELECT _row FROM {exceptional_table(spec)})
                       OR _row IN (SELECT _row FROM {class_table(spec)} WHERE _class = 'new'))"""
    )
    _remember_earliest_drop(con, spec, superseded, current)
    if spec is CONTRACTS:
        _contract_moves(con)
    if con.sql("SELECT count(*) FROM _current").fetchall()[0][0]:  # current rows replaced: superseded now
        con.execute(  # by rowid: fetching those rows alone, not scanning every column of the table
            f"CREATE OR REPLACE TEMP TABLE _replaced AS SELECT c._rowid FROM _current c "
            f"JOIN _changed_{spec.name} x ON {_keys_equal(spec, 'c', 'x', False)}"
        )
        con.execute(f"INSERT INTO {superseded} SELECT * FROM {current} WHERE rowid IN (SELECT _rowid FROM _replaced)")
        con.execute(f"DELETE FROM {current} WHERE rowid IN (SELECT _rowid FROM _replaced)")
    columns = _quoted(spec.column_names)
    derived_sql = "".join(f", {expr} AS {name}" for name, expr in derived.items())
    latest = f"(SELECT _row FROM _changed_{spec.name})"
    con.execute(f"INSERT INTO {current} SELECT {columns}{derived_sql}, drop_date FROM {typed} WHERE rowid IN {latest}")
    con.execute(  # the other new rows, ordinary or not, and the stale ones
        f"INSERT INTO {superseded} SELECT {columns}{derived_sql}, drop_date FROM {typed} WHERE _valid "
        f"AND rowid NOT IN (SELECT _row FROM {exceptional_table(spec)} UNION ALL {latest[1:-1]})"
    )
    con.execute(
        f"INSERT INTO {superseded} SELECT {columns}{derived_sql}, drop_date FROM {class_table(spec)} "
        f"WHERE _class IN ('new', 'stale') AND _row NOT IN {latest}"
    )


def _contract_moves(con: duckdb.DuckDBPyConnection) -> None:
    """What payments must follow: _moved, the contracts whose new version changed department,
    measure or cancellation; _arrived, the contracts new to the warehouse, with the first drop
    of the chunk that brought them (a payment of an earlier drop was held until then)."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _moved AS
        SELECT n.contract_id, n.department, n.measure, n.status = 'CANCELLED' AS cancelled
        FROM _current c JOIN _changed_contracts x USING (contract_id)
        JOIN {typed_table(CONTRACTS)} n ON n.rowid = x._row
        WHERE c.department <> n.department OR c.measure <> n.measure
              OR (c.status = 'CANCELLED') <> (n.status = 'CANCELLED')"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _arrived AS
        SELECT contract_id, first_drop_seq AS drop_seq FROM _changed_contracts
        WHERE contract_id NOT IN (SELECT contract_id FROM _current)"""
    )


def _nothing_to_merge(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    """The empty classification and change tables the later steps read."""
    keys = _quoted(spec.key)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {class_table(spec)} AS
        SELECT t.* EXCLUDE (_valid, _raw, _bad_fields), t.rowid AS _row, NULL::VARCHAR AS _class,
               NULL::DATE AS _known_drop_date
        FROM {typed_table(spec)} t WHERE false"""
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {exceptional_table(spec)} (_row BIGINT)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _changed_{spec.name} AS "
                f"SELECT {keys}, version, rowid AS _row, _drop_seq AS first_drop_seq "
                f"FROM {typed_table(spec)} WHERE false")
    if spec is CONTRACTS:
        con.execute("CREATE OR REPLACE TEMP TABLE _moved (contract_id VARCHAR, department VARCHAR, "
                    "measure VARCHAR, cancelled BOOLEAN)")
        con.execute("CREATE OR REPLACE TEMP TABLE _arrived (contract_id VARCHAR, drop_seq INTEGER)")


def _known_versions(con: duckdb.DuckDBPyConnection, spec: FileSpec, history: str, current: str) -> None:
    """_current: the current version (and rowid) of the chunk's keys; _low: the chunk's rows at or
    below it; _seen: the full history rows of the (key, version) pairs the chunk re-sends (usually few).

    Only the key columns of the large tables are scanned; whole rows are read
    for the re-sent versions alone, whose content must be compared.
    """
    keys = _quoted(spec.key)
    moved = ", department, measure, status" if spec is CONTRACTS else ""  # for _moved, below
    con.execute(f"CREATE OR REPLACE TEMP TABLE _current AS "
                f"{_touched(spec, current, f'rowid AS _rowid, {keys}, version{moved}')}")
    with_version = _quoted(_keys(spec))
    # a version the history holds is at or below its key's current one: only those rows of the chunk
    # can be re-sent (usually none, and the history is not read)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _low AS
        SELECT t.rowid AS _row, {', '.join(f't."{k}"' for k in _keys(spec))} FROM {typed_table(spec)} t
        JOIN _current c ON {_keys_equal(spec, 't', 'c', False)} WHERE t._valid AND t.version <= c.version"""
    )
    resent = 0
    if con.sql("SELECT count(*) FROM _low").fetchall()[0][0]:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _resent AS
            SELECT {with_version} FROM {history} WHERE ({keys}) IN (SELECT {keys} FROM _low)
            INTERSECT SELECT {with_version} FROM _low"""
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
    typed = typed_table(spec)
    # when no contract came with a drop later than a payment's (a daily drop, say), no payment is
    # released (held at its drop, then loaded with its contract): the ordinary payments are inserted
    # first, and the held ones looked for only if some are missing
    none_released = con.sql(f"""SELECT coalesce((SELECT max(drop_seq) FROM _arrived), -1)
                           <= coalesce((SELECT min(_drop_seq) FROM {typed} WHERE _valid), -1)""").fetchall()[0][0]
    _exceptional_payments(con)
    if not none_released:
        _add_held_payments(con)
    inserted = con.execute(  # the ordinary payments: new, straight from the typed table
        f"""INSERT INTO payments
        SELECT {', '.join(f't."{c}"' for c in spec.column_names)}, t.drop_date,
               c.department, c.measure, c.status = 'CANCELLED'
        FROM {typed} t JOIN contracts c ON c.contract_id = t.contract_id
        WHERE t._valid AND t.rowid NOT IN (SELECT _row FROM _exceptional_payments)"""
    ).fetchall()[0][0]
    if none_released:
        ordinary = con.sql(f"SELECT count(*) FROM {typed} WHERE _valid "
                           "AND rowid NOT IN (SELECT _row FROM _exceptional_payments)").fetchall()[0][0]
        if inserted < ordinary:  # the others' contract is unknown
            _add_held_payments(con)
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
        WHERE t.rowid IN (SELECT _row FROM _exceptional_payments)"""
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


def _exceptional_payments(con: duckdb.DuckDBPyConnection) -> None:
    """_exceptional_payments: the rows of the valid payments repeated in the chunk or sent before
    (the ids of _kv and _seen_payments); `_add_held_payments` adds the held and released ones.
    Every other valid payment is `new`."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _exceptional_payments AS SELECT rowid AS _row FROM {typed_table(PAYMENTS)}
        WHERE _valid AND payment_id IN (SELECT payment_id FROM _kv UNION ALL SELECT payment_id FROM _seen_payments)"""
    )


def _add_held_payments(con: duckdb.DuckDBPyConnection) -> None:
    """Add to _exceptional_payments the valid payments whose contract is unknown (to hold) or came
    with a later drop of the chunk (held, then released at once): one left join (an anti-join of
    the contracts took twice as long)."""
    typed = typed_table(PAYMENTS)
    con.execute(
        f"""INSERT INTO _exceptional_payments SELECT t.rowid FROM {typed} t
        LEFT JOIN (SELECT c.contract_id, a.drop_seq FROM contracts c LEFT JOIN _arrived a USING (contract_id)) x
               ON x.contract_id = t.contract_id
        WHERE t._valid AND (x.contract_id IS NULL OR x.drop_seq > t._drop_seq)
              AND t.rowid NOT IN (SELECT _row FROM _exceptional_payments)"""
    )


def class_counts(spec: FileSpec) -> str:
    """SQL: (_file_id, _class, count) of the chunk's valid rows of a kind, the ordinary ones counted as new."""
    return (
        f"SELECT _file_id, _class, sum(n)::BIGINT FROM ("
        f"SELECT _file_id, _class, count(*) AS n FROM {class_table(spec)} GROUP BY 1, 2 "
        f"UNION ALL SELECT _file_id, 'new', count(*) FROM {typed_table(spec)} "
        f"WHERE _valid AND rowid NOT IN (SELECT _row FROM {exceptional_table(spec)}) GROUP BY 1) GROUP BY 1, 2"
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
