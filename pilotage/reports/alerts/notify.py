"""Who hears of an alert, and the message they get.

A rule's `recipients` lists `scope` -- every recipient of the recipients file
whose scope covers the member -- and/or addresses. A member covers the
departments of its geographic coordinates (and of the rule's geographic
filters); a recipient hears of it only when all of them lie within its
scope, so a regional recipient never hears of another region (and a member
with no geography, a national one, reaches only national recipients). An
address named by a rule is held to its scope when the recipients file lists
it, and sees everything otherwise.

Each recipient gets one message per run listing its changes, fired first,
then resolved, in French, as plain text and simple HTML (no images, no
scripts: it reads the same in every mail client).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from functools import cache

from pilotage.cubes import Scope
from pilotage.cubes.model import GEOGRAPHY
from pilotage.reports.alerts.evaluate import WHOLE_RULE
from pilotage.reports.alerts.rules import Rule
from pilotage.reports.alerts.state import AlertEvent
from pilotage.reports.delivery.recipients import Recipient, scope_label
from pilotage.reports.formats import format_date
from pilotage.warehouse.reference import departments

SEVERITY_FR = {"critical": "Critique", "warning": "Attention", "info": "Information"}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_COLOURS = {"critical": "#b00020", "warning": "#b35900", "info": "#1f5f99", "resolved": "#2e7d32"}


@cache
def _departments_of(dim: str, code: str) -> frozenset[str]:
    if dim == "department":
        return frozenset({code})
    return frozenset(d.code for d in departments() if getattr(d, f"{dim}_code") == code)


def member_departments(rule: Rule | None, member: str) -> frozenset[str]:
    """The departments a member stands for: its geographic coordinates, within the rule's geographic filters."""
    covered = frozenset(d.code for d in departments())
    if member == WHOLE_RULE:
        pairs = []
    else:
        pairs = [tuple(part.split("=", 1)) for part in member.split("|") if "=" in part]
    for dim, code in pairs:
        if dim in GEOGRAPHY:
            covered &= _departments_of(dim, code)
    for dim, codes in (rule.where if rule else ()):
        if dim in GEOGRAPHY:
            covered &= frozenset().union(*(_departments_of(dim, c) for c in codes))
    return covered


def covers(scope: Scope, needed: frozenset[str]) -> bool:
    return needed <= scope.departments()


def recipients_for(rule: Rule, member: str, recipients: Sequence[Recipient]) -> list[Recipient]:
    """Who hears of a change of this rule for this member (once each, in the order of the file)."""
    needed = member_departments(rule, member)
    listed = {r.address.lower(): r for r in recipients}
    chosen: dict[str, Recipient] = {}
    for entry in rule.recipients:
        if entry == "scope":
            for recipient in recipients:
                if covers(recipient.scope, needed):
                    chosen.setdefault(recipient.address.lower(), recipient)
        else:
            recipient = listed.get(entry.lower(), Recipient(entry, "", Scope.nation()))
            if covers(recipient.scope, needed):
                chosen.setdefault(recipient.address.lower(), recipient)
    return list(chosen.values())


def archive_key(event: AlertEvent) -> str:
    """What identifies a change in the archive of sent messages (one delivery per change and recipient)."""
    return f"{event.as_of.isoformat()}:{event.rule}:{event.member}:{event.threshold}:{event.period}:{event.change}"


def _ordered(events: Iterable[AlertEvent]) -> tuple[list[AlertEvent], list[AlertEvent]]:
    events = list(events)
    order = lambda e: (_SEVERITY_ORDER.get(e.severity, 9), e.rule, e.member_label, e.threshold)  # noqa: E731
    fired = sorted((e for e in events if e.change == "fired"), key=order)
    resolved = sorted((e for e in events if e.change == "resolved"), key=order)
    return fired, resolved


def subject(events: Iterable[AlertEvent], scope_text: str) -> str:
    fired, resolved = _ordered(events)
    parts = []
    if fired:
        parts.append(f"{len(fired)} déclenchée" + ("s" if len(fired) > 1 else ""))
    if resolved:
        parts.append(f"{len(resolved)} levée" + ("s" if len(resolved) > 1 else ""))
    return f"Alertes pilotage : {', '.join(parts)} — {scope_text}"


def build_alert_message(sender: str, recipient: Recipient, events: Sequence[AlertEvent],
                        labels: dict[str, str] | None = None, as_of: date | None = None,
                        message_id: str | None = None) -> EmailMessage:
    """One recipient's message: its changes (fired, then resolved), plain text and HTML.

    `labels` gives each rule's French title (rule name -> label).
    """
    fired, resolved = _ordered(events)
    if not fired and not resolved:
        raise ValueError("no change to send")
    labels = labels or {}
    as_of = as_of or max(e.as_of for e in events)
    scope_text = scope_label(recipient.scope)
    sender_address = parseaddr(sender)[1]
    message = EmailMessage()
    message["Subject"] = subject(events, scope_text)
    message["From"] = sender
    message["To"] = recipient.formatted
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = message_id or make_msgid("pilotage-alertes", domain=sender_address.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_text(fired, resolved, labels, as_of, scope_text), charset="utf-8")
    message.add_alternative(_html(fired, resolved, labels, as_of, scope_text), subtype="html", charset="utf-8")
    return message


def _intro(as_of: date, scope_text: str) -> str:
    return f"Alertes du pilotage sur les données du {format_date(as_of)} — périmètre : {scope_text}."


_FOOTER = ("Un message part quand une alerte se déclenche ou est levée, pas chaque jour. "
           "L'état de toutes les alertes : pilotage alerts list.")


def _title(event: AlertEvent, labels: dict[str, str]) -> str:
    return f"{labels.get(event.rule, event.rule)} — {event.member_label}"


def _text(fired, resolved, labels, as_of, scope_text) -> str:
    lines = ["Bonjour,", "", _intro(as_of, scope_text), ""]
    for heading, events in (("Alertes déclenchées", fired), ("Alertes levées", resolved)):
        if not events:
            continue
        lines += [f"{heading} ({len(events)})", "-" * (len(heading) + 4)]
        for event in events:
            tag = SEVERITY_FR.get(event.severity, event.severity) if event.change == "fired" else "Levée"
            lines += [f"* [{tag}] {_title(event, labels)}", f"  {event.detail}"]
        lines.append("")
    lines += ["--", _FOOTER]
    return "\n".join(lines) + "\n"


def _html(fired, resolved, labels, as_of, scope_text) -> str:
    e = html.escape
    parts = ["<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"></head>",
             "<body style=\"font-family: Arial, sans-serif; font-size: 14px; color: #222\">",
             "<p>Bonjour,</p>", f"<p>{e(_intro(as_of, scope_text))}</p>"]
    for heading, events in (("Alertes déclenchées", fired), ("Alertes levées", resolved)):
        if not events:
            continue
        parts.append(f"<h2 style=\"font-size: 16px\">{e(heading)} ({len(events)})</h2>")
        parts.append("<table cellpadding=\"6\" style=\"border-collapse: collapse\">")
        for event in events:
            kind = event.severity if event.change == "fired" else "resolved"
            tag = SEVERITY_FR.get(event.severity, event.severity) if event.change == "fired" else "Levée"
            parts.append(f"<tr style=\"border-bottom: 1px solid #ddd\"><td style=\"color: {_COLOURS.get(kind, '#222')};"
                         f" font-weight: bold; white-space: nowrap\">{e(tag)}</td>"
                         f"<td><b>{e(_title(event, labels))}</b><br>{e(event.detail)}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p style=\"color: #666; font-size: 12px\">{e(_FOOTER)}</p></body></html>")
    return "\n".join(parts) + "\n"
