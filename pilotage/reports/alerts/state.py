"""The state of each alert, kept in the warehouse; a change of state is an event.

A state is held per (rule, member, threshold, period) in `alert_states`; each
evaluation is compared with it:

- FIRING when it was not firing: a `fired` event (emailed);
- OK when it was firing: a `resolved` event (emailed);
- NO DATA and ERROR leave the `firing` flag as it was: an alert that cannot be
  judged for a day is neither resolved nor fired again when it comes back;
  the change is kept in the history (`alert_events`) but not emailed;
- the same state again: no event; the row is rewritten only when its value,
  text or data date changed, so a re-evaluation at the same data date with
  the same result changes nothing.

A rule whose query failed (one ERROR observation for the whole rule) puts
every member it had in ERROR (or, the first time, a row for the whole rule).
A member no longer answered by its rule goes to NO DATA. A once-per-year
rule's states are keyed by the year: the previous year's rows stay as they
were, and the new year starts with fresh rows (no "resolved" flood when the
year-to-date figures go back to zero in January).

The states are written in one transaction of an in-place write session, after
the evaluation (which reads through the cube) has closed its connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime

import pyarrow as pa

from pilotage.reports.alerts.evaluate import ERROR, FIRING, NO_DATA, OK, WHOLE_RULE, Evaluation, Observation
from pilotage.warehouse import Warehouse

Key = tuple[str, str, str, str]  # rule, member, threshold, period
WRITE_WAIT = 300.0  # seconds to wait for a load holding the warehouse

_STATE_COLUMNS = ("rule", "member", "member_label", "threshold", "period", "state", "firing", "severity", "value",
                  "limit_value", "detail", "since", "as_of", "evaluated_at")
_EVENT_COLUMNS = ("event_id", "happened_at", "as_of", "rule", "member", "member_label", "threshold", "period",
                  "from_state", "to_state", "change", "severity", "value", "limit_value", "detail", "notified_at")
_STATE_TYPES = (pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.bool_(),
                pa.string(), pa.float64(), pa.float64(), pa.string(), pa.date32(), pa.date32(), pa.timestamp("us"))
_EVENT_TYPES = (pa.int64(), pa.timestamp("us"), pa.date32(), pa.string(), pa.string(), pa.string(), pa.string(),
                pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.float64(), pa.float64(),
                pa.string(), pa.timestamp("us"))


@dataclass(frozen=True)
class AlertEvent:
    """A change of state of one alert."""

    event_id: int | None  # None in a dry run (not recorded)
    happened_at: datetime
    as_of: date
    rule: str
    member: str
    member_label: str
    threshold: str
    period: str
    from_state: str | None
    to_state: str
    change: str | None  # fired | resolved | None (history only)
    severity: str
    value: float | None
    limit_value: float | None
    detail: str
    notified_at: datetime | None = None

    @property
    def key(self) -> Key:
        return (self.rule, self.member, self.threshold, self.period)


@dataclass(frozen=True)
class Plan:
    """What an evaluation changes: rows to write, rows to delete, events."""

    write: list[dict]
    delete: list[Key]
    events: list[AlertEvent]


def plan(existing: Iterable[dict], evaluation: Evaluation, now: datetime) -> Plan:
    """Compare an evaluation with the stored states (rows of alert_states as dicts)."""
    stored: dict[Key, dict] = {_key(r): r for r in existing}
    observations = _expanded(stored, evaluation)
    write, delete, events = [], [], []
    seen: set[Key] = set()
    for obs in observations:
        key = (obs.rule, obs.member, obs.threshold, obs.period)
        seen.add(key)
        before = stored.get(key)
        was_firing = bool(before and before["firing"])
        if obs.state == FIRING:
            firing, change = True, None if was_firing else "fired"
        elif obs.state == OK:
            firing, change = False, "resolved" if was_firing else None
        else:
            firing, change = was_firing, None
        same_state = before is not None and before["state"] == obs.state
        if same_state and before["value"] == obs.value and before["detail"] == obs.detail \
                and before["as_of"] == obs.as_of and before["firing"] == firing:
            continue
        write.append(dict(rule=obs.rule, member=obs.member, member_label=obs.member_label, threshold=obs.threshold,
                          period=obs.period, state=obs.state, firing=firing, severity=obs.severity, value=obs.value,
                          limit_value=obs.limit, detail=obs.detail,
                          since=before["since"] if same_state else obs.as_of, as_of=obs.as_of, evaluated_at=now))
        if not same_state and (before is not None or obs.state in (FIRING, ERROR)):
            events.append(AlertEvent(None, now, obs.as_of, obs.rule, obs.member, obs.member_label, obs.threshold,
                                     obs.period, before["state"] if before else None, obs.state, change,
                                     obs.severity, obs.value, obs.limit, obs.detail))
    # a rule evaluated again: its whole-rule error row goes (into the history)
    evaluated = {o.rule for o in observations if o.member != WHOLE_RULE}
    for key, row in stored.items():
        if key[0] in evaluated and key[1] == WHOLE_RULE and key not in seen:
            delete.append(key)
            events.append(AlertEvent(None, now, evaluation.as_of, row["rule"], row["member"], row["member_label"],
                                     row["threshold"], row["period"], row["state"], OK, None, row["severity"], None,
                                     row["limit_value"], "la règle est de nouveau évaluée"))
    return Plan(write, delete, events)


def _key(row: dict) -> Key:
    return (row["rule"], row["member"], row["threshold"], row["period"])


def _expanded(stored: dict[Key, dict], evaluation: Evaluation) -> list[Observation]:
    """Whole-rule errors spread to the rule's members; members no longer answered go to NO DATA."""
    out: list[Observation] = []
    answered = {(o.rule, o.member, o.threshold, o.period) for o in evaluation.observations}
    normal_rules = {(o.rule, o.period) for o in evaluation.observations if o.member != WHOLE_RULE}
    for obs in evaluation.observations:
        if obs.member != WHOLE_RULE:
            out.append(obs)
            continue
        members = [row for key, row in stored.items() if key[0] == obs.rule and key[2] == obs.threshold
                   and key[3] == obs.period and key[1] != WHOLE_RULE]
        out += [replace(obs, member=row["member"], member_label=row["member_label"]) for row in members] or [obs]
    for key, row in stored.items():
        if (key[0], key[3]) in normal_rules and key[1] != WHOLE_RULE and key not in answered:
            out.append(Observation(row["rule"], row["member"], row["member_label"], row["threshold"], row["period"],
                                   NO_DATA, row["severity"], None, row["limit_value"],
                                   "la règle ne donne plus de valeur pour ce membre", evaluation.as_of))
    return out


# -- the warehouse ------------------------------------------------------------------------------------

def record(warehouse: Warehouse, evaluation: Evaluation, *, dry_run: bool = False, now: datetime | None = None,
           wait: float = WRITE_WAIT) -> list[AlertEvent]:
    """Store an evaluation's states; return the events it made (numbered, unless `dry_run`)."""
    now = now or datetime.now().replace(microsecond=0)
    rules = sorted({o.rule for o in evaluation.observations})
    if not rules:
        return []
    with warehouse.connect() as con:  # most days nothing changes: then the warehouse is not written at all
        planned = plan(_stored(con, rules), evaluation, now)
    if dry_run or not (planned.write or planned.delete or planned.events):
        return planned.events
    with warehouse.write(wait=wait, in_place=True) as con:
        con.execute("BEGIN TRANSACTION")
        changes = plan(_stored(con, rules), evaluation, now)
        first = con.execute("SELECT coalesce(max(event_id), 0) + 1 FROM alert_events").fetchall()[0][0]
        events = [replace(e, event_id=first + i) for i, e in enumerate(changes.events)]
        gone = changes.delete + [_key(r) for r in changes.write]
        if gone:
            keys = pa.table({n: [k[i] for k in gone] for i, n in enumerate(("rule", "member", "threshold", "period"))})
            con.register("alert_keys", keys)
            con.execute("DELETE FROM alert_states s USING alert_keys k WHERE s.rule = k.rule AND s.member = k.member "
                        "AND s.threshold = k.threshold AND s.period = k.period")
            con.unregister("alert_keys")
        _insert(con, "alert_states", changes.write, _STATE_COLUMNS, _STATE_TYPES)
        _insert(con, "alert_events", [asdict(e) for e in events], _EVENT_COLUMNS, _EVENT_TYPES)
        con.execute("COMMIT")
    return events


def _insert(con, table: str, rows: list[dict], columns, types) -> None:
    if not rows:
        return
    data = pa.table({c: pa.array([r[c] for r in rows], type=t) for c, t in zip(columns, types)})
    con.register("alert_rows", data)
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM alert_rows")
    con.unregister("alert_rows")


def _stored(con, rules: list[str]) -> list[dict]:
    cursor = con.execute(f"SELECT {', '.join(_STATE_COLUMNS)} FROM alert_states WHERE list_contains(?, rule)",
                         [rules])
    return [dict(zip(_STATE_COLUMNS, row)) for row in cursor.fetchall()]


def pending_events(warehouse: Warehouse) -> list[AlertEvent]:
    """The emailed events (fired, resolved) some recipient has not had yet, oldest first."""
    with warehouse.connect() as con:
        rows = con.execute(f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events "
                           "WHERE change IS NOT NULL AND notified_at IS NULL ORDER BY event_id").fetchall()
    return [AlertEvent(**dict(zip(_EVENT_COLUMNS, row))) for row in rows]


def mark_notified(warehouse: Warehouse, event_ids: Iterable[int], when: datetime | None = None,
                  wait: float = WRITE_WAIT) -> None:
    """Every recipient of these events has had them (or refused them for good)."""
    ids = sorted(set(event_ids))
    if not ids:
        return
    with warehouse.write(wait=wait, in_place=True) as con:
        con.execute("UPDATE alert_events SET notified_at = ? WHERE list_contains(?, event_id) AND notified_at IS NULL",
                    [when or datetime.now().replace(microsecond=0), ids])


def alert_states(warehouse: Warehouse, rule: str | None = None, state: str | None = None,
                 every_period: bool = False) -> list[dict]:
    """The alerts' states for `pilotage alerts list`: by default those of each rule's latest evaluation.

    Firing first, then by rule, member and threshold. `every_period` adds earlier years' rows of
    once-per-year rules and members no longer evaluated.
    """
    where, args = [], []
    if rule:
        where.append("rule = ?")
        args.append(rule)
    if state:
        where.append("state = ?")
        args.append(state.upper())
    if not every_period:
        where.append("as_of = latest")
    sql = (f"SELECT {', '.join(_STATE_COLUMNS)} FROM (SELECT *, max(as_of) OVER (PARTITION BY rule) AS latest "
           "FROM alert_states)")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY state <> 'FIRING', rule, member, threshold, period"
    with warehouse.connect() as con:
        rows = con.execute(sql, args).fetchall()
    return [dict(zip(_STATE_COLUMNS, row)) for row in rows]


def alert_history(warehouse: Warehouse, rule: str | None = None, member: str | None = None,
                  limit: int | None = 100, emailed_only: bool = False) -> list[dict]:
    """The changes of state for `pilotage alerts history`, newest first."""
    where, args = [], []
    if rule:
        where.append("rule = ?")
        args.append(rule)
    if member:
        where.append("(member = ? OR member_label ILIKE ?)")
        args += [member, f"%{member}%"]
    if emailed_only:
        where.append("change IS NOT NULL")
    sql = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY event_id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with warehouse.connect() as con:
        rows = con.execute(sql, args).fetchall()
    return [dict(zip(_EVENT_COLUMNS, row)) for row in rows]
