"""Sending over SMTP against a real server on loopback (aiosmtpd): plain, STARTTLS with a self-signed
certificate and authentication, implicit TLS; temporary refusals retried, permanent ones reported per
recipient, timeouts bounded; the weekly message arrives intact; a run that dies midway resumes without
sending twice (with the archive)."""

from __future__ import annotations

import email
import hashlib
import socket
import ssl
import time
from pathlib import Path

import pytest
from smtpkit import (PASSWORD, SENDER, USER, Handler, serve, certificate, client_context,  # noqa: F401
                     free_port, parsed, plain, server_context, simple, starttls)

from pilotage.cubes import Scope
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.config import ConfigError, SmtpSettings
from pilotage.reports.delivery.message import CHART_CID, attachment_digests, build_weekly_message
from pilotage.reports.delivery.recipients import Recipient
from pilotage.reports.delivery.smtp import PermanentFailure, TemporaryFailure, send_message

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def weekly(tmp_path: Path, recipient: Recipient) -> email.message.EmailMessage:
    workbook = tmp_path / "synthèse-2006-W11.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + hashlib.sha256(recipient.address.encode()).digest() * 200)
    report = tmp_path / "synthese-2006-W11.html"
    report.write_text("<!doctype html><title>Synthèse</title><p>Données — 1 234,5 €</p>\n", encoding="utf-8")
    body = (f"<html><body><h1>Basse-Normandie</h1><p>Entrées : <b>1 234</b></p>"
            f"<img src=\"cid:{CHART_CID}\" alt=\"Entrées par semaine\"></body></html>")
    return build_weekly_message(SENDER, recipient, recipient.scope_label, "2006-W11", body, PNG, [workbook, report])


def test_plain_delivery(plain):
    handler, settings = plain
    result = send_message(simple("a@example.org"), settings)
    assert (result.attempts, result.code) == (1, 250)
    assert "Queued as 42" in result.reply
    assert [r["to"] for r in handler.received] == [["a@example.org"]]
    assert handler.received[0]["from"] == "pilotage@example.org"


def test_starttls_auth_weekly_message_arrives_intact(starttls, client_context, tmp_path):
    handler, settings = starttls
    recipient = Recipient("caen@example.org", "DR Basse-Normandie", Scope.parse("region_2005:25"))
    message = weekly(tmp_path, recipient)
    result = send_message(message, settings, environ={"TEST_SMTP_PASSWORD": PASSWORD}, ssl_context=client_context)
    assert result.attempts == 1
    (received,) = handler.received
    assert received["tls"] and received["login"] == USER.encode()
    got = parsed(received)
    assert got["Subject"] == "Synthèse hebdomadaire — Basse-Normandie — semaine 11 (2006-W11)"
    assert got["To"].addresses[0].display_name == "DR Basse-Normandie"
    assert got["Message-ID"] == result.message_id == message["Message-ID"]
    # the same files, byte for byte (attachments and inline chart)
    assert attachment_digests(got) == attachment_digests(message)
    by_name = {d["name"]: d for d in attachment_digests(got)}
    for path in tmp_path.iterdir():
        assert by_name[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert by_name["synthèse-2006-W11.xlsx"]["type"] == \
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert by_name["synthese-2006-W11.html"]["type"] == "text/html"
    # the HTML body shows the inline chart, which sits in the same multipart/related
    html = got.get_body(("html",))
    assert f"cid:{CHART_CID}" in html.get_content()
    related = next(p for p in got.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == f"<{CHART_CID}>" and image.get_content() == PNG
    assert "Entrées" in got.get_body(("plain",)).get_content()


def test_starttls_refuses_an_untrusted_certificate(starttls):
    handler, settings = starttls
    with pytest.raises(PermanentFailure) as failure:
        send_message(simple("a@example.org"), settings, password=PASSWORD)  # the system's CAs: not ours
    assert failure.value.attempts == 1 and failure.value.stage == "STARTTLS"
    assert "a@example.org" in str(failure.value) and "certificate" in str(failure.value)
    assert handler.received == []


def test_wrong_password_is_permanent(starttls, client_context):
    handler, settings = starttls
    with pytest.raises(PermanentFailure) as failure:
        send_message(simple("a@example.org"), settings, password="wrong", ssl_context=client_context)
    assert (failure.value.stage, failure.value.code, failure.value.attempts) == ("AUTH", 535, 1)
    assert handler.received == []


def test_missing_password_variable_names_it(starttls, client_context):
    _, settings = starttls
    with pytest.raises(ConfigError, match="TEST_SMTP_PASSWORD"):
        send_message(simple("a@example.org"), settings, environ={}, ssl_context=client_context)


def test_implicit_tls(server_context, client_context):
    handler = Handler()
    controller, port = serve(handler, ssl_context=server_context)
    try:
        settings = SmtpSettings("127.0.0.1", port, "ssl", timeout=5, attempts=1)
        assert send_message(simple("a@example.org"), settings, ssl_context=client_context).code == 250
    finally:
        controller.stop()
    assert handler.received[0]["tls"]


def test_temporary_refusals_retried_with_backoff(plain):
    handler, settings = plain
    handler.temporary = 2
    delays = []
    result = send_message(simple("a@example.org"), settings, sleep=lambda s: (delays.append(s), time.sleep(s)))
    assert result.attempts == 3 and result.code == 250
    assert delays == [0.01, 0.02]  # exponential
    assert len(handler.received) == 1


def test_temporary_refusal_at_data(plain):
    handler, settings = plain
    handler.temporary_data = 1
    assert send_message(simple("a@example.org"), settings).attempts == 2
    assert len(handler.received) == 1


def test_temporary_refusals_exhausted(plain):
    handler, settings = plain
    handler.temporary = 10
    with pytest.raises(TemporaryFailure) as failure:
        send_message(simple("a@example.org"), settings)
    assert failure.value.attempts == 4 and failure.value.code == 451
    assert "a@example.org" in str(failure.value) and "451 4.3.0" in str(failure.value)
    assert handler.received == []


def test_permanent_refusal_for_one_recipient_the_others_still_sent(plain):
    handler, settings = plain
    handler.refused["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
    sent, failed = [], {}
    for address in ("a@example.org", "gone@example.org", "b@example.org"):
        try:
            sent.append(send_message(simple(address), settings))
        except PermanentFailure as exc:
            failed[address] = exc
    assert [r.recipients for r in sent] == [("a@example.org",), ("b@example.org",)]
    failure = failed["gone@example.org"]
    assert failure.attempts == 1 and failure.code == 550 and failure.recipients == ("gone@example.org",)
    assert "gone@example.org" in str(failure) and "550 5.1.1" in str(failure) and "user unknown" in str(failure)
    assert [r["to"] for r in handler.received] == [["a@example.org"], ["b@example.org"]]


def test_silent_server_times_out_within_bounds():
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = SmtpSettings("127.0.0.1", silent.getsockname()[1], "none", timeout=0.3, attempts=3, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(TemporaryFailure) as failure:
            send_message(simple("a@example.org"), settings)
        elapsed = time.monotonic() - start
    assert failure.value.attempts == 3 and "no answer within 0.3 s" in str(failure.value)
    assert 0.9 <= elapsed < 3


def test_connection_refused_is_temporary():
    settings = SmtpSettings("127.0.0.1", free_port(), "none", timeout=1, attempts=2, backoff=0.01)
    with pytest.raises(TemporaryFailure, match="connection failed"):
        send_message(simple("a@example.org"), settings)


def _run(archive: Archive, recipients, settings, tmp_path, die_after: int | None = None) -> dict:
    """The shape of the weekly sending loop: claim, build, send, record; optionally die midway."""
    outcome = {"sent": [], "skipped": [], "failed": []}
    for i, recipient in enumerate(recipients):
        if not archive.claim("weekly", "2006-W11", recipient.address):
            outcome["skipped"].append(recipient.address)
            continue
        if die_after is not None and i >= die_after:
            raise KeyboardInterrupt  # the run dies: this claim stays pending
        folder = tmp_path / recipient.address
        folder.mkdir(exist_ok=True)
        message = weekly(folder, recipient)
        try:
            result = send_message(message, settings)
        except PermanentFailure as exc:
            archive.mark_failed("weekly", "2006-W11", recipient.address, str(exc), subject=message["Subject"],
                                attempts=exc.attempts, reply=exc.reply)
            outcome["failed"].append(recipient.address)
            continue
        archive.mark_sent("weekly", "2006-W11", recipient.address, subject=message["Subject"],
                          known_at="2006-03-19", attachments=attachment_digests(message),
                          message_id=result.message_id, attempts=result.attempts, reply=result.reply)
        outcome["sent"].append(recipient.address)
    return outcome


def test_crash_midway_then_rerun_sends_no_duplicate(plain, tmp_path):
    handler, settings = plain
    handler.refused["gone@example.org"] = "550 5.1.1 user unknown"
    recipients = [Recipient("a@example.org", "A", Scope.nation()),
                  Recipient("gone@example.org", "Gone", Scope.parse("region_2005:23")),
                  Recipient("b@example.org", "B", Scope.parse("region_2005:25")),
                  Recipient("c@example.org", "C", Scope.parse("department:14,50"))]
    path = tmp_path / "out" / "deliveries.sqlite"
    with pytest.raises(KeyboardInterrupt):
        _run(Archive(path), recipients, settings, tmp_path, die_after=2)
    assert [r["to"] for r in handler.received] == [["a@example.org"]]

    second = _run(Archive(path), recipients, settings, tmp_path)
    assert second == {"sent": ["b@example.org", "c@example.org"], "skipped": ["a@example.org"],
                      "failed": ["gone@example.org"]}
    third = _run(Archive(path), recipients, settings, tmp_path)
    assert third["sent"] == [] and third["failed"] == ["gone@example.org"]  # a failure is tried again
    assert sorted(r["to"][0] for r in handler.received) == ["a@example.org", "b@example.org", "c@example.org"]

    history = {m.recipient: m for m in Archive(path).history()}
    assert history["b@example.org"].claims == 2 and history["b@example.org"].status == "sent"
    assert history["gone@example.org"].status == "failed" and "550 5.1.1" in history["gone@example.org"].error
    received_b = parsed(next(r for r in handler.received if r["to"] == ["b@example.org"]))
    assert {(a["name"], a["sha256"]) for a in history["b@example.org"].attachments} == \
        {(a["name"], a["sha256"]) for a in attachment_digests(received_b)}
    assert history["b@example.org"].message_id == received_b["Message-ID"]
