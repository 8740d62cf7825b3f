"""What `pilotage users`, `pilotage orgs` and `pilotage audit` show: rows, tables, the passwords file.

Nothing here prints: the command line does (`formats.to_json`, `to_csv`, or
these tables).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pilotage.portal.accounts import Accounts, AccountsError, Org, User

USER_COLUMNS = ("login", "name", "org", "role", "state", "last_login")
ORG_COLUMNS = ("id", "name", "type", "scope", "users")
AUDIT_COLUMNS = ("at", "event", "login", "address", "detail")


def user_rows(users: Iterable[User | dict]) -> list[dict]:
    """One dict per user; state: active, one-time password (must change it) or disabled."""
    return [u if isinstance(u, dict) else {"login": u.login, "name": u.name, "org": u.org.name, "role": u.role,
             "state": "disabled" if u.disabled else "one-time password" if u.must_change else "active",
             "last_login": u.last_login.replace(microsecond=0) if u.last_login else None} for u in users]


def format_users(users: Iterable[User | dict]) -> str:
    """`pilotage users list` as a terminal table."""
    from pilotage.formats import to_table

    rows = user_rows(users)
    if not rows:
        return "no user"
    return to_table(rows, USER_COLUMNS, max_width=50) + f"\n{len(rows)} user(s)"


def org_rows(orgs: Iterable[Org | dict], counts: dict[int, int] | None = None) -> list[dict]:
    """One dict per organisation; `counts`: Accounts.user_counts()."""
    counts = counts or {}
    return [o if isinstance(o, dict) else
            {"id": o.id, "name": o.name, "type": o.type, "scope": str(o.scope), "users": counts.get(o.id, 0)}
            for o in orgs]


def format_orgs(orgs: Iterable[Org | dict], counts: dict[int, int] | None = None) -> str:
    """`pilotage orgs list` as a terminal table."""
    from pilotage.formats import to_table

    rows = org_rows(orgs, counts)
    if not rows:
        return "no organisation"
    return to_table(rows, ORG_COLUMNS, max_width=50) + f"\n{len(rows)} organisation(s)"


def audit_rows(entries: Iterable[dict]) -> list[dict]:
    """Accounts.audit_log() entries with their detail as text (rows already made pass through)."""
    import json

    return [{"at": e["at"].replace(microsecond=0), "event": e["event"], "login": e["login"],
             "address": e["address"],
             "detail": e["detail"] if e["detail"] is None or isinstance(e["detail"], str)
             else json.dumps(e["detail"], ensure_ascii=False, separators=(",", ":"))} for e in entries]


def format_audit(entries: Iterable[dict]) -> str:
    """`pilotage audit` as a terminal table, newest first."""
    from pilotage.formats import to_table

    rows = audit_rows(entries)
    if not rows:
        return "no event recorded"
    return to_table(rows, AUDIT_COLUMNS, max_width=70)


def format_passwords(pairs: Iterable[tuple[str, str]]) -> str:
    """`login;one_time_password` lines, with a header: the file to hand the passwords out from."""
    return "login;one_time_password\n" + "".join(f"{login};{password}\n" for login, password in pairs)


def write_passwords(pairs: Iterable[tuple[str, str]], path: str | os.PathLike) -> Path:
    """Write `format_passwords` into a new file readable by its owner only (never over an existing file)."""
    path = Path(path)
    with _new_private_file(path) as out:
        out.write(format_passwords(pairs))
    return path


def import_users_with_passwords(accounts: Accounts, csv_path: str | os.PathLike, passwords_path: str | os.PathLike,
                                *, skip_existing: bool = False, by: str | None = None) -> int:
    """`pilotage users import`: import the users, their one-time passwords into a new private file; how many.

    The passwords file is created first (so that no user is added whose
    password could not be written) and removed if the import fails.
    """
    passwords_path = Path(passwords_path)
    out = _new_private_file(passwords_path)
    try:
        pairs = accounts.import_users(csv_path, skip_existing=skip_existing, by=by)
    except BaseException:
        out.close()
        passwords_path.unlink(missing_ok=True)
        raise
    with out:
        out.write(format_passwords(pairs))
    return len(pairs)


def _new_private_file(path: Path):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AccountsError("already exists: give a new file for the one-time passwords", path) from None
    except OSError as exc:
        raise AccountsError(f"cannot write: {exc.strerror or exc}", path) from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--since`: a date or time (2006-03-14, 2006-03-14T08:00) in UTC, or a duration back (30m, 12h, 7d)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    match = re.fullmatch(r"(\d+)\s*([mhd])", text.lower())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return (now or datetime.now(timezone.utc)) - timedelta(**{unit: int(match.group(1))})
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise AccountsError(f"--since {text!r}: expected a date (2006-03-14), a time (2006-03-14T08:00) "
                            "or a duration (30m, 12h, 7d)") from None
    return since if since.tzinfo else since.replace(tzinfo=timezone.utc)
