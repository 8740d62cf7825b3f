"""The weekly summaries by email (`pilotage send weekly`): each recipient, its scope, once.

For an ISO week (by default the one that ended most recently), each
recipient of the recipients file gets one message:

- the reports of its scope, rendered with the cube's `scope` set to the
  recipient's (never a national file filtered afterwards): a regional
  recipient gets its region's weekly report, a departmental one the weekly
  report of its departments (without the envelopes, allotted per region), a national one
  the national dashboard at the end of the week;
- attached as HTML and Excel, and summed up in an HTML body that reads
  without JavaScript: the KPI tiles, a short table, the main chart as an
  inline PNG image (`images.chart_pngs`, one browser for the whole run);
- a note of the figures already sent for earlier weeks that late data have
  revised since, and by how much.

A week whose drops are not all loaded (a working day without its drop) is
held unless forced. Every message is recorded in the archive (`Archive`),
claimed before it is sent and marked sent after, so that a recipient never
gets the same week twice unless `resend`, and a run that died midway resumes
where it stopped.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pilotage.cubes import Cube, Scope
from pilotage.etl.generate import working_days
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.body import Revision, Section, render_body, sections
from pilotage.reports.delivery.config import Config
from pilotage.reports.delivery.message import attachment_digests, build_weekly_message, week_subject
from pilotage.reports.delivery.recipients import Recipient, load_recipients
from pilotage.reports.delivery.smtp import DeliveryError, send_message
from pilotage.reports.declarations import get_report
from pilotage.reports.formats import format_date
from pilotage.reports.periods import week_bounds, week_label
from pilotage.reports.render import Prepared, period_text, prepare_views, write_views
from pilotage.warehouse.reference import departments

KIND = "weekly"
REVISED = ("stock", "entries", "exits", "payments_eur")  # the figures checked for revisions
LOOKBACK_WEEKS = 8  # how far back revisions of figures already sent are looked for
CRASH_ENV = "PILOTAGE_CRASH_AT"  # fault injection for the tests: "weekly-sent:N" dies after N messages


class WeeklyError(RuntimeError):
    """The summaries cannot be built (no such week, no recipient...); nothing was sent."""


@dataclass(frozen=True)
class WeekCheck:
    """Which of the week's working days have their drop loaded."""

    week: str
    monday: date
    sunday: date
    expected: tuple[date, ...]  # the working days (Monday to Friday, public holidays excepted)
    loaded: frozenset[date]

    @property
    def missing(self) -> tuple[date, ...]:
        return tuple(day for day in self.expected if day not in self.loaded)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Delivery:
    recipient: Recipient
    status: str  # sent | already sent | failed | dry run
    subject: str = ""
    files: tuple[Path, ...] = ()
    attempts: int = 0
    error: str = ""
    revisions: tuple[Revision, ...] = ()


@dataclass
class WeeklyRun:
    week: str
    check: WeekCheck
    as_of: date
    held: str | None = None  # why nothing was sent
    deliveries: list[Delivery] = field(default_factory=list)

    def of(self, status: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == status]

    @property
    def ok(self) -> bool:
        return not self.of("failed")


def default_week(today: date) -> str:
    """The ISO week that ended most recently (on a Monday: last week)."""
    return week_label(today - timedelta(days=7))


def check_week(cube: Cube, week: str) -> WeekCheck:
    monday, sunday = week_bounds(week)
    with cube.warehouse.connect() as con:
        loaded = {row[0] for row in con.execute(
            "SELECT DISTINCT drop_date FROM load_drops WHERE outcome = 'loaded' AND drop_date BETWEEN ? AND ?",
            [monday, sunday]).fetchall()}
    return WeekCheck(week, monday, sunday, tuple(working_days(monday, sunday)), frozenset(loaded))


def send_weekly(config: Config, week: str | None = None, *, today: date | None = None,
                recipients: Sequence[Recipient] | None = None, only: Iterable[str] = (),
                dry_run: bool = False, resend: bool = False, force: bool = False, ssl_context=None,
                environ: Mapping[str, str] | None = None, log: Callable[[str], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> WeeklyRun:
    """Build and send (or, dry, only build) the week's summary of every recipient.

    only: addresses to restrict the run to. Raises WeeklyError when nothing
    can be built; a delivery refused is recorded and the others go on.
    """
    say = log or (lambda text: None)
    chosen = _chosen(recipients if recipients is not None else load_recipients(config.recipients), only)
    cube = Cube(config.warehouse)
    as_of = cube.as_of()
    week = week or default_week(today or date.today())
    try:
        check = check_week(cube, week)
    except ValueError as exc:
        raise WeeklyError(str(exc)) from None
    run = WeeklyRun(week, check, as_of)
    if check.monday > as_of:
        run.held = f"week {week} has not started in the data (the newest drop loaded is {as_of.isoformat()})"
        return run
    if not check.complete and not force:
        missing = ", ".join(d.isoformat() for d in check.missing)
        run.held = (f"week {week} held: the drop(s) of {missing} are not loaded (the newest drop loaded is "
                    f"{as_of.isoformat()}); the summaries go out once they are, or now with --force")
        return run
    archive = Archive(config.archive)
    todo = []
    for recipient in chosen:
        if not (dry_run or resend) and archive.sent(KIND, week, recipient.address):
            run.deliveries.append(Delivery(recipient, "already sent"))
        else:
            todo.append(recipient)
    if not todo:
        return run

    generated_at = datetime.now().replace(microsecond=0)
    folder = Path(config.output) / "hebdo" / week
    rendered: dict[str, tuple[list[Path], list[Section]]] = {}  # by scope: recipients of one scope share
    with cube.reading():
        summaries = [_summary(cube, archive, recipient, week, as_of, folder, generated_at, rendered)
                     for recipient in todo]
    from pilotage.reports.images import chart_pngs

    charts = {id(section.chart): section.chart for s in summaries for section in s.sections}
    say(f"drawing {len(charts)} chart(s)")
    drawn = dict(zip(charts, chart_pngs(list(charts.values()))))
    sent = 0
    for summary in summaries:
        pngs = [drawn[id(section.chart)] for section in summary.sections]
        message = build_weekly_message(config.sender, summary.recipient, summary.recipient.scope_label, week,
                                       summary.body, pngs, summary.files)
        if dry_run:
            eml = summary.folder / "message.eml"
            eml.write_bytes(bytes(message))
            run.deliveries.append(Delivery(summary.recipient, "dry run", summary.subject, (*summary.files, eml),
                                           revisions=summary.revisions))
            say(f"{summary.recipient.address}: dry run, written to {summary.folder}")
            continue
        run.deliveries.append(_deliver(config, archive, summary, message, week, as_of, resend, ssl_context,
                                       environ, sleep, say))
        if run.deliveries[-1].status == "sent":
            sent += 1
            if os.environ.get(CRASH_ENV) == f"weekly-sent:{sent}":
                os._exit(70)
    return run


@dataclass(frozen=True)
class _Summary:
    recipient: Recipient
    subject: str
    folder: Path
    files: tuple[Path, ...]
    sections: tuple[Section, ...]
    body: str
    figures: dict
    revisions: tuple[Revision, ...]


def _summary(cube: Cube, archive: Archive, recipient: Recipient, week: str, as_of: date, folder: Path,
             generated_at: datetime, rendered: dict[str, tuple[list[Path], list[Section]]]) -> _Summary:
    """One recipient's message, ready to send: its files written, its body rendered.

    The reports of a scope are rendered once per run (`rendered`): recipients
    with the same scope get the same files; their bodies differ only by the
    revisions, which depend on what each was sent before.
    """
    out = folder / _slug(recipient.address)
    out.mkdir(parents=True, exist_ok=True)
    if str(recipient.scope) not in rendered:
        parts: list[Section] = []
        files: list[Path] = []
        for name, regions, geography in reports_for(recipient.scope):
            report = get_report(name, None, cube.catalog)
            prepared: list[Prepared] = prepare_views(cube, name, region=regions, geography=geography, week=week,
                                                     scope=recipient.scope, generated_at=generated_at)
            files += write_views(prepared, out_dir=out)
            parts += sections(report, prepared, first_cid=len(parts))
        rendered[str(recipient.scope)] = (files, parts)
    files, parts = rendered[str(recipient.scope)]
    figures, revisions = _revisions(cube, archive, recipient, week)
    subject = week_subject(recipient.scope_label, week)
    end = min(week_bounds(week)[1], as_of)
    body = render_body(subject, recipient.scope_label, period_text(end), as_of, parts, revisions,
                       [f.name for f in files], generated_at)
    (out / "message.html").write_text(body, encoding="utf-8")
    return _Summary(recipient, subject, out, tuple(files), tuple(parts), body, figures, tuple(revisions))


def reports_for(scope: Scope) -> list[tuple[str, tuple[str, ...] | None, str]]:
    """(report, regions, geography) the weekly summary of a scope holds (a recipient's, a portal user's)."""
    if scope.is_national:
        return [("daily", None, "2005")]
    if scope.level == "region_2016":
        return [("weekly-regional", tuple(sorted(scope.codes)), "2016")]
    if scope.level == "region_2005":
        return [("weekly-regional", tuple(sorted(scope.codes)), "2005")]
    regions = sorted({d.region_2005_code for d in departments() if d.code in scope.codes})
    return [("weekly-departmental", tuple(regions), "2005")]  # envelopes exist per region only


def _revisions(cube: Cube, archive: Archive, recipient: Recipient, week: str) -> tuple[dict, list[Revision]]:
    """The figures of this message, and the revisions of those sent to this recipient for earlier weeks.

    The baseline of a week is its figures as last written to the recipient
    (each message records the figures of the weeks it looked at), so that a
    revision is reported once, not in every later summary.
    """
    monday = week_bounds(week)[0]
    sent_weeks: set[str] = set()
    last_written: dict[str, dict] = {}
    for message in archive.history(KIND, recipient=recipient.address, status="sent"):
        if message.period < week:
            sent_weeks.add(message.period)
        for wk, values in (message.figures or {}).items():
            last_written[wk] = values
    earliest = monday - timedelta(weeks=LOOKBACK_WEEKS)
    watched = sorted(wk for wk in sent_weeks if week_bounds(wk)[0] >= earliest)
    start = week_bounds(watched[0])[0] if watched else monday
    table = cube.query(REVISED, by=["week"], start=start, end=week_bounds(week)[1], scope=recipient.scope)
    now = {row["week"]: {name: row[name] for name in REVISED} for row in table.to_pylist()}
    revisions = []
    for wk in watched:
        before = last_written.get(wk)
        if before is None or wk not in now:
            continue
        for name in REVISED:
            old, new = _number(before.get(name)), _number(now[wk][name])
            if old != new:
                indicator = cube.catalog[name]
                revisions.append(Revision(wk, name, indicator.label, old, new, indicator.format))
    figures = {wk: {name: _json_number(v) for name, v in values.items()} for wk, values in now.items()
               if wk == week or wk in watched}
    return figures, revisions


def _number(value):
    if value is None:
        return None
    return Decimal(str(value)) if not isinstance(value, int) else value


def _json_number(value):
    return str(value) if isinstance(value, Decimal) else value


def _deliver(config: Config, archive: Archive, summary: _Summary, message, week: str, as_of: date, resend: bool,
             ssl_context, environ, sleep, say) -> Delivery:
    recipient = summary.recipient
    if not archive.claim(KIND, week, recipient.address, resend=resend):
        return Delivery(recipient, "already sent", summary.subject)
    digests = attachment_digests(message)
    try:
        result = send_message(message, config.smtp, environ=environ, ssl_context=ssl_context, sleep=sleep,
                              log=say)
    except DeliveryError as exc:
        archive.mark_failed(KIND, week, recipient.address, exc.problem, subject=summary.subject,
                            known_at=as_of.isoformat(), attachments=digests, message_id=message["Message-ID"],
                            attempts=exc.attempts, reply=exc.reply)
        say(f"{recipient.address}: NOT sent: {exc.problem}")
        return Delivery(recipient, "failed", summary.subject, summary.files, exc.attempts, exc.problem,
                        summary.revisions)
    except BaseException as exc:  # anything else: leave no claim pending for a live process
        archive.mark_failed(KIND, week, recipient.address, f"{type(exc).__name__}: {exc}",
                            subject=summary.subject, known_at=as_of.isoformat())
        raise
    archive.mark_sent(KIND, week, recipient.address, subject=summary.subject, known_at=as_of.isoformat(),
                      attachments=digests, message_id=result.message_id, attempts=result.attempts,
                      reply=result.reply, figures=summary.figures)
    say(f"{recipient.address}: sent ({summary.subject})")
    return Delivery(recipient, "sent", summary.subject, summary.files, result.attempts,
                    revisions=summary.revisions)


def _chosen(recipients: Sequence[Recipient], only: Iterable[str]) -> list[Recipient]:
    wanted = {address.strip().lower() for address in only}
    if not wanted:
        return list(recipients)
    known = {r.address.lower() for r in recipients}
    unknown = sorted(wanted - known)
    if unknown:
        raise WeeklyError(f"not in the recipients file: {', '.join(unknown)}")
    return [r for r in recipients if r.address.lower() in wanted]


def _slug(address: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "_", address.lower())


def describe(run: WeeklyRun) -> list[str]:
    """Lines for the terminal and the log."""
    if run.held:
        return [run.held]
    lines = []
    for d in run.deliveries:
        extra = f": {d.error}" if d.error else ""
        revised = f" ({len(d.revisions)} revised figure(s) noted)" if d.revisions else ""
        lines.append(f"{run.week} {d.recipient.address}: {d.status}{revised}{extra}")
    counts = {s: len(run.of(s)) for s in ("sent", "already sent", "failed", "dry run")}
    lines.append(f"week {run.week} (data as of {format_date(run.as_of)}): "
                 + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if run.deliveries else
                 f"week {run.week}: no recipient")
    return lines
