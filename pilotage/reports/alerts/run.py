"""The alerts' daily run, and the rows of `pilotage alerts list|history`.

`run_alerts(config)`:

1. evaluates every rule of `paths.alerts` at the warehouse's data date;
2. stores the states and records the changes (`state.record`), in the warehouse;
3. sends each recipient one message listing the changes it has not had yet
   -- those of this run, and those a previous run failed to deliver -- each
   change claimed in the archive of sent messages (kind 'alert', one entry per
   change and recipient) before sending, marked sent after;
4. marks a change notified once every recipient has had it (or refused it
   for good).

A re-run on the same data evaluates the same states, records no change and
sends nothing; a run that died midway is resumed by the next one: the
changes are already recorded, the recipients already served are skipped by
the archive, the others get theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from email.message import EmailMessage

from pilotage.cubes import Cube
from pilotage.reports.alerts.evaluate import evaluate
from pilotage.reports.alerts.notify import archive_key, build_alert_message, recipients_for
from pilotage.reports.alerts.rules import Rules, load_rules
from pilotage.reports.alerts.state import AlertEvent, mark_notified, pending_events, record
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.config import Config
from pilotage.reports.delivery.recipients import Recipient, load_recipients
from pilotage.reports.delivery.smtp import DeliveryError, PermanentFailure, send_message
from pilotage.warehouse import Warehouse

KIND = "alert"  # the archive's kind for alert messages


@dataclass
class AlertRun:
    as_of: date | None = None
    evaluated: int = 0  # observations: (rule, member, threshold)
    changes: list[AlertEvent] = field(default_factory=list)  # the changes of state this run recorded
    sent: list[tuple[str, int]] = field(default_factory=list)  # (address, changes in its message)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, error)
    errors: dict[str, str] = field(default_factory=dict)  # rule -> error text (its members are in ERROR)
    planned: list[tuple[str, int]] = field(default_factory=list)  # dry run: who would get how many changes
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors

    @property
    def problems(self) -> list[str]:
        """What went wrong, one line each: rules in error, messages not delivered."""
        return ([f"rule {rule} could not be evaluated: {error}" for rule, error in self.errors.items()]
                + [f"not delivered to {address}: {error}" for address, error in self.failures])

    def summary(self) -> str:
        """One line for the log of the daily run."""
        if self.as_of is None:
            return "nothing evaluated"
        fired = sum(e.change == "fired" for e in self.changes)
        resolved = sum(e.change == "resolved" for e in self.changes)
        text = (f"{self.evaluated} evaluated on the data of {self.as_of.isoformat()}, {len(self.changes)} change(s) "
                f"of state ({fired} fired, {resolved} resolved)")
        if self.dry_run:
            return text + f", {len(self.planned)} message(s) to send (dry run: nothing recorded or sent)"
        text += f", {len(self.sent)} message(s) sent"
        if self.failures:
            text += f", {len(self.failures)} not delivered"
        if self.errors:
            text += f", {len(self.errors)} rule(s) in error"
        return text


def run_alerts(config: Config, *, rules: Rules | None = None, ssl_context=None,
               environ: Mapping[str, str] | None = None, dry_run: bool = False,
               log: Callable[[str], None] = print,
               send: Callable[..., object] = send_message) -> AlertRun:
    """Evaluate, record, notify. `rules` defaults to the file `paths.alerts` (nothing to do without one)."""
    run = AlertRun(dry_run=dry_run)
    if rules is None:
        if config.alerts is None:
            log("no rules file configured (paths.alerts); nothing evaluated")
            return run
        rules = load_rules(config.alerts)
    recipients = load_recipients(config.recipients)
    warehouse = Warehouse(config.warehouse)
    evaluation = evaluate(Cube(warehouse), rules)
    run.as_of, run.evaluated, run.errors = evaluation.as_of, len(evaluation.observations), dict(evaluation.errors)
    for rule, error in evaluation.errors.items():
        log(f"rule {rule} could not be evaluated: {error}")
    run.changes = record(warehouse, evaluation, dry_run=dry_run)
    fired = sum(e.change == "fired" for e in run.changes)
    resolved = sum(e.change == "resolved" for e in run.changes)
    log(f"{run.evaluated} evaluated on the data of {evaluation.as_of.isoformat()}, "
        f"{len(run.changes)} change(s) of state ({fired} fired, {resolved} resolved)")

    pending = pending_events(warehouse) + ([e for e in run.changes if e.change] if dry_run else [])
    targets = {id(e): recipients_for(rules.get(e.rule), e.member, recipients) if rules.get(e.rule) else []
               for e in pending}
    by_address: dict[str, tuple[Recipient, list[AlertEvent]]] = {}
    for event in pending:
        for recipient in targets[id(event)]:
            by_address.setdefault(recipient.address.lower(), (recipient, []))[1].append(event)
    labels = {rule.name: rule.label for rule in rules}
    if dry_run:
        run.planned = [(address, len(events)) for address, (_, events) in sorted(by_address.items())]
        for address, count in run.planned:
            log(f"would send {count} change(s) to {address}")
        return run

    archive = Archive(config.archive)
    refused: set[str] = set()
    for address, (recipient, events) in sorted(by_address.items()):
        claimed = [e for e in events if archive.claim(KIND, archive_key(e), address)]
        if not claimed:
            continue
        message = build_alert_message(config.sender, recipient, claimed, labels)
        try:
            result = send(message, config.smtp, environ=environ, ssl_context=ssl_context, log=log)
        except DeliveryError as exc:
            for event in claimed:
                archive.mark_failed(KIND, archive_key(event), address, str(exc), subject=message["Subject"],
                                    known_at=event.as_of, message_id=message["Message-ID"], attempts=exc.attempts,
                                    reply=exc.reply or None)
            if isinstance(exc, PermanentFailure):
                refused.add(address)
            run.failures.append((address, str(exc)))
            log(f"not delivered to {address}: {exc}")
            continue
        for event in claimed:
            archive.mark_sent(KIND, archive_key(event), address, subject=message["Subject"], known_at=event.as_of,
                              message_id=_message_id(message, result), attempts=getattr(result, "attempts", 1),
                              reply=getattr(result, "reply", None))
        run.sent.append((address, len(claimed)))
        log(f"{len(claimed)} change(s) sent to {address}")

    done = [e.event_id for e in pending
            if all(r.address.lower() in refused or archive.sent(KIND, archive_key(e), r.address)
                   for r in targets[id(e)])]
    mark_notified(warehouse, done, datetime.now().replace(microsecond=0))
    return run


def _message_id(message: EmailMessage, result) -> str | None:
    return getattr(result, "message_id", None) or message["Message-ID"]


# -- for the command line -----------------------------------------------------------------------------

STATE_COLUMNS = ("rule", "member_label", "threshold", "state", "since", "as_of", "detail")
HISTORY_COLUMNS = ("event_id", "as_of", "rule", "member_label", "threshold", "from_state", "to_state", "change",
                   "detail")


def format_states(rows: list[dict]) -> str:
    """`pilotage alerts list` as a terminal table."""
    from pilotage.formats import to_table

    if not rows:
        return "no alert state recorded yet (the daily run evaluates the rules)"
    return to_table(rows, STATE_COLUMNS, max_width=90)


def format_history(rows: list[dict]) -> str:
    """`pilotage alerts history` as a terminal table."""
    from pilotage.formats import to_table

    if not rows:
        return "no change of state recorded"
    return to_table(rows, HISTORY_COLUMNS, max_width=90)
