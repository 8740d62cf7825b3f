"""The archive of sent messages (SQLite): atomic claims, never sent twice, a dead run's claim resumed."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from pilotage.reports.delivery.archive import Archive, ArchiveError

KEY = ("weekly", "2006-W11", "caen@example.org")


def test_claim_twice_then_sent_never_again(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    assert archive.claim(*KEY) is True
    assert archive.claim(*KEY) is False  # this run already has it
    assert not archive.sent(*KEY)
    archive.mark_sent(*KEY, subject="Synthèse", known_at="2006-03-19",
                      attachments=[{"name": "s.xlsx", "sha256": "ab" * 32}], attempts=2, reply="250 ok")
    assert archive.sent(*KEY) and archive.sent("weekly", "2006-W11", "CAEN@example.org")
    assert Archive(tmp_path / "a.sqlite").claim(*KEY) is False  # another run: already sent
    (row,) = archive.history()
    assert (row.status, row.subject, row.known_at, row.attempts, row.reply) == \
        ("sent", "Synthèse", "2006-03-19", 2, "250 ok")
    assert row.attachments == ({"name": "s.xlsx", "sha256": "ab" * 32},) and row.sent_at


def test_dead_run_claim_is_resumed_once(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path).claim(*KEY)  # the run dies before sending
    rerun = Archive(path)
    assert rerun.claim(*KEY) is True and rerun.claim(*KEY) is False
    rerun.mark_sent(*KEY)
    assert Archive(path).claim(*KEY) is False
    (row,) = rerun.history()
    assert row.claims == 2 and row.status == "sent"


def _hold(path, ready, release):
    archive = Archive(path)
    archive.claim(*KEY)
    ready.set()
    release.wait(10)


def test_claim_of_a_live_process_is_respected(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(path, ready, release))
    other.start()
    try:
        assert ready.wait(10)
        assert Archive(path).claim(*KEY) is False  # the other process is alive and sending
    finally:
        release.set()
        other.join(10)
    assert Archive(path).claim(*KEY) is True  # it is gone: its claim is resumed


def test_failed_is_claimable_again_and_resend(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    archive.claim(*KEY)
    archive.mark_failed(*KEY, "550 5.1.1 user unknown", attempts=1)
    assert not archive.sent(*KEY)
    assert archive.claim(*KEY) is True
    archive.mark_sent(*KEY)
    assert archive.claim(*KEY) is False
    assert archive.claim(*KEY, resend=True) is True
    archive.mark_sent(*KEY, subject="again")
    history = archive.history(recipient="caen@example.org")
    assert [(m.generation, m.status, m.subject) for m in history] == [(1, "sent", None), (2, "sent", "again")]
    assert archive.history(period="2006-W12") == []


def test_marks_need_a_claim(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    with pytest.raises(ArchiveError, match="never claimed"):
        archive.mark_sent(*KEY)
    archive.claim(*KEY)
    with pytest.raises(ArchiveError, match="another run"):
        Archive(tmp_path / "a.sqlite").mark_sent(*KEY)
    archive.mark_sent(*KEY)
    with pytest.raises(ArchiveError, match="sent, not pending"):
        archive.mark_failed(*KEY, "late")


def test_many_processes_claim_once(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path)
    with multiprocessing.get_context("fork").Pool(6) as pool:
        wins = pool.map(_claim_and_send, [path] * 12)
    assert sum(wins) == 1
    assert [m.status for m in Archive(path).history()] == ["sent"]


def _claim_and_send(path) -> bool:
    archive = Archive(path)
    if archive.claim(*KEY):
        archive.mark_sent(*KEY)
        return True
    return False


def test_archive_is_plain_sqlite(tmp_path):
    Archive(tmp_path / "sub" / "a.sqlite").claim(*KEY)
    with sqlite3.connect(tmp_path / "sub" / "a.sqlite") as db:
        assert db.execute("SELECT kind, period, recipient, status FROM messages").fetchall() == \
            [("weekly", "2006-W11", "caen@example.org", "pending")]
