"""What the load audit says: the warehouse's status and its quarantine."""

from __future__ import annotations

from datetime import date

from pilotage.warehouse import Warehouse

REJECT_COLUMNS = ("drop", "file", "line", "column", "rule", "raw")


def status(warehouse: Warehouse) -> dict:
    """Counts a user checks after a load (keys are part of the CLI's JSON contract)."""
    with warehouse.connect() as con:
        row = con.sql(
            """SELECT
                (SELECT max(drop_date) FROM load_drops WHERE outcome = 'loaded'),
                (SELECT count(DISTINCT (drop_date, fingerprint)) FROM load_drops WHERE outcome = 'loaded'),
                (SELECT count(*) FROM load_drops WHERE outcome = 'refused'),
                (SELECT count(*) FROM contracts),
                (SELECT count(*) FROM payments),
                (SELECT count(*) FROM prescriptions),
                (SELECT count(*) FROM envelopes),
                (SELECT count(DISTINCT (load_id, file, line)) FROM rejects),
                (SELECT count(*) FROM held_payments)"""
        ).fetchall()[0]
    keys = ("as_of", "drops_loaded", "drops_refused", "contracts", "payments", "prescriptions", "envelopes",
            "rejected_rows", "held_payments")
    result = dict(zip(keys, row))
    result["as_of"] = result["as_of"].isoformat() if result["as_of"] else None
    result["warehouse"] = str(warehouse.path)
    return result


def rejects(warehouse: Warehouse, drop: date | None = None) -> list[dict]:
    """The quarantine, oldest drop first, in file and line order."""
    with warehouse.connect() as con:
        rows = con.execute(
            """SELECT drop_date, file, line, "column", rule, raw FROM rejects
            WHERE ?::DATE IS NULL OR drop_date = ?::DATE
            ORDER BY drop_date, load_id, file, line, rule""",
            [drop, drop],
        ).fetchall()
    return [dict(zip(REJECT_COLUMNS, (r[0].isoformat(), *r[1:]))) for r in rows]
