"""The portal's accounts: organisations, users, sessions, API tokens and the audit log, in one SQLite file.

An organisation has a name, a type (`ORG_TYPES`) and a scope (a
`pilotage.cubes.Scope`: the nation, 2005 or 2016 regions, departments); a
user (a case-insensitive email address) belongs to one organisation, whose
scope is theirs, and has a role (`ROLES`, each including the previous one).

Passwords:

- a new user, or one whose password an admin reset, gets a *one-time
  password*: 80 random bits in four groups (`k7dm-x3qa-9fz2-hw5c`, Crockford's
  base 32: no i, l, o, u; typed in any case, with or without the dashes). Being
  high-entropy secrets, they are stored with a fast keyed hash (HMAC-SHA256,
  a salt per user), not argon2, so that importing 10,000 users takes a
  second, not minutes. They expire after `ONE_TIME_DAYS` days and force a
  change at the first login (`User.must_change`);
- the password the user chooses (`set_password`: at least 12 characters, not
  the login) is hashed with argon2id (argon2-cffi's defaults, re-hashed at
  login when they change).

Login throttling (`authenticate`), for known and unknown logins alike, so it
tells nothing about which accounts exist:

- per account: from the 5th failure in a row (each within 15 minutes of
  the previous one), the account refuses every attempt for 1 minute, then
  2, 4, ... up to an hour after each further failure; a success resets it;
- per address: 30 failures in 10 minutes from one address (an IPv6 address
  counts for its /64) refuse every attempt from it until the oldest ones are
  10 minutes old;
- a throttled attempt checks no password (it never reveals whether the
  password was right); every attempt costs one argon2 verification (against
  a dummy hash for an unknown login or a one-time password), so the answer's
  time tells nothing either.

Sessions (`open_session`) and personal API tokens (`create_token`) are random
tokens (`secrets.token_urlsafe(32)`) stored as their SHA-256: the file holds
nothing that opens a session. Disabling a user closes its sessions and revokes
its tokens; resetting a password, or setting a new one, closes its sessions
(but the caller's own, for a new password).

The file: SQLite in WAL mode (readers never wait for the writer), its schema
versioned with `PRAGMA user_version`, created readable by its owner only. An
`Accounts` object may be shared by threads: each thread gets its own
connection; writes are short `BEGIN IMMEDIATE` transactions (no password
hashing inside one). Times come from `clock` (seconds since the epoch,
`time.time` by default) so tests need not sleep.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import ipaddress
import json
import os
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pilotage.cubes.scope import Scope, ScopeError

SCHEMA_VERSION = 1

ROLES = ("reader", "analyst", "admin")  # ordered: each includes the previous
ORG_TYPES = ("local_agency", "payment_office", "regional_service", "national_service")
REFUSALS = ("bad credentials", "throttled", "disabled", "expired")  # LoginRefused.reason
# The events recorded by this module; the web app adds its own (query, export, download, ...).
AUDIT_EVENTS = ("login", "login_failed", "logout", "password_changed", "password_reset", "user_added",
                "user_disabled", "user_enabled", "org_added", "token_created", "token_revoked")

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256
ONE_TIME_DAYS = 30.0  # a one-time password's validity
ACCOUNT_FAILURES = 5  # failures in a row before an account is throttled
ACCOUNT_WINDOW = 15 * 60.0  # a failure continues the row if within this of the previous one's lock end
ACCOUNT_DELAY = 60.0  # the first lock; doubles with each further failure
ACCOUNT_MAX_DELAY = 3600.0
ADDRESS_FAILURES = 30  # failures from one address ...
ADDRESS_WINDOW = 10 * 60.0  # ... within this many seconds
TOKEN_DAYS = 365.0  # a personal API token's default validity
SEEN_EVERY = 60.0  # seconds between two writes of a session's or token's last use

_LOGIN = re.compile(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # 32 symbols: a byte % 32 is unbiased
_CROCKFORD_READ = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None, " ": None})
_ONE_TIME = "otp$"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orgs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL UNIQUE,   -- the name without case, accents or extra spaces
    type        TEXT NOT NULL CHECK (type IN ({", ".join(f"'{t}'" for t in ORG_TYPES)})),
    scope       TEXT NOT NULL,          -- str(Scope): nation, region_2005:23,25, department:14
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id          INTEGER PRIMARY KEY,
    login       TEXT NOT NULL UNIQUE,   -- lower case
    name        TEXT NOT NULL DEFAULT '',
    org_id      INTEGER NOT NULL REFERENCES orgs (id),
    role        TEXT NOT NULL CHECK (role IN ({", ".join(f"'{r}'" for r in ROLES)})),
    password    TEXT NOT NULL,          -- an argon2 hash, or otp$<salt>$<hmac-sha256> for a one-time password
    password_expires REAL,              -- a one-time password's end of validity
    must_change INTEGER NOT NULL DEFAULT 1,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    password_changed_at TEXT,
    last_login_at TEXT
);
CREATE INDEX IF NOT EXISTS users_by_org ON users (org_id);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash  TEXT PRIMARY KEY,       -- sha256 of the token
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    address     TEXT,
    created     REAL NOT NULL,
    expires     REAL NOT NULL,
    seen        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires);
CREATE TABLE IF NOT EXISTS tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,   -- sha256 of the token
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label       TEXT NOT NULL,
    created     REAL NOT NULL,
    expires     REAL,
    last_used   REAL,
    revoked     REAL
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user_id);
CREATE TABLE IF NOT EXISTS lockouts (   -- per account (a login, known or not): the failures in a row
    login       TEXT PRIMARY KEY,
    failures    INTEGER NOT NULL,
    last_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (   -- per address: the failed attempts of the last window
    id          INTEGER PRIMARY KEY,
    address     TEXT NOT NULL,
    login       TEXT,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_address ON failures (address, at);
CREATE INDEX IF NOT EXISTS failures_by_time ON failures (at);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,          -- UTC, ISO 8601
    event       TEXT NOT NULL,
    login       TEXT,
    address     TEXT,
    detail      TEXT                    -- JSON
);
CREATE INDEX IF NOT EXISTS audit_by_login ON audit (login, id);
CREATE INDEX IF NOT EXISTS audit_by_event ON audit (event, id);
"""


class AccountsError(ValueError):
    """Bad input (an unknown user, a weak password, a bad CSV row: the message names the file and line)."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.problem, self.path, self.line = problem, path, line
        where = str(path) if path is not None else ""
        if line is not None:
            where += f", line {line}" if where else f"line {line}"
        super().__init__(f"{where}: {problem}" if where else problem)


class LoginRefused(Exception):
    """A refused login: `reason` is one of `REFUSALS`; `retry_after` (seconds) when throttled.

    "bad credentials": unknown login or wrong password (never says which);
    "throttled": too many failures, nothing was checked; "disabled" and
    "expired" (a one-time password past its validity): the password was right.
    """

    def __init__(self, reason: str, retry_after: float | None = None):
        self.reason, self.retry_after = reason, retry_after
        text = reason if retry_after is None else f"{reason}: retry in {retry_after:.0f} s"
        super().__init__(text)


@dataclass(frozen=True)
class Org:
    id: int
    name: str
    type: str
    scope: Scope


@dataclass(frozen=True)
class User:
    id: int
    login: str
    name: str
    org: Org
    role: str
    must_change: bool  # a one-time password: the user must choose a password before anything else
    disabled: bool
    last_login: datetime | None = field(default=None, compare=False)

    @property
    def scope(self) -> Scope:
        return self.org.scope

    def can(self, role: str) -> bool:
        """Whether the user's role includes `role` (admin > analyst > reader)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Session:
    token: str  # the cookie's value; only its sha256 is stored
    user: User
    csrf: str  # the session's CSRF token, for every form
    created: datetime
    expires: datetime


class Accounts:
    """The accounts file (created if missing). Safe to share between threads."""

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 hasher: PasswordHasher | None = None, idle_minutes: float | None = None,
                 max_hashing: int | None = None):
        """`hasher`: argon2 parameters (default argon2-cffi's: 64 MiB, ~0.1 s a verification);
        `idle_minutes`: close sessions unused that long; `max_hashing`: argon2 computations at once
        (default: the number of CPUs; the others wait: bounded memory under a storm of logins).
        """
        self.path = Path(path)
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.idle = None if idle_minutes is None else idle_minutes * 60.0
        self._local = threading.local()
        self._dummy: str | None = None
        self._hashing = threading.BoundedSemaphore(max_hashing or os.cpu_count() or 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch(mode=0o600)  # SQLite gives its -wal and -shm files the same permissions
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise AccountsError(f"cannot open the accounts file: {exc}", self.path) from None
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AccountsError(f"accounts schema {version} is newer than this pilotage ({SCHEMA_VERSION}); "
                                    "upgrade pilotage", self.path)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, again after a fork)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, and fast
            except sqlite3.Error as exc:
                raise AccountsError(f"cannot open the accounts file: {exc}", self.path) from None
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue up, none reads stale state)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _now(self) -> float:
        return float(self.clock())

    # -- organisations ---------------------------------------------------------------------------

    def add_org(self, name: str, type: str, scope: Scope | str, *, by: str | None = None) -> Org:
        """A new organisation; `scope` a Scope or text ('national', 'region_2005:25', 'department:Calvados')."""
        name, type_, scope = _org_name(name), _org_type(type), _scope_of(scope)
        with self._write() as db:
            existing = db.execute("SELECT id FROM orgs WHERE name_key = ?", (_key(name),)).fetchone()
            if existing:
                raise AccountsError(f"organisation {name!r} already exists (id {existing['id']})")
            org_id = db.execute("INSERT INTO orgs (name, name_key, type, scope, created_at) VALUES (?, ?, ?, ?, ?)",
                                (name, _key(name), type_, str(scope), self._iso())).lastrowid
            self._audit(db, "org_added", None, None, {"by": by, "org": name, "type": type_, "scope": str(scope)})
        return Org(org_id, name, type_, scope)

    def import_orgs(self, csv_path: str | os.PathLike, *, skip_existing: bool = False,
                    by: str | None = None) -> int:
        """Add the organisations of a CSV file `name;type;scope`, all or none; the number added.

        A header line is optional; `#` lines are comments; `;` or `,` separated.
        An organisation that already exists is an error, unless `skip_existing`
        and it has the same type and scope.
        """
        path = Path(csv_path)
        rows, seen = [], {}
        for line, cells in _csv_records(path, ("name", "type", "scope"),
                                        {("name", "type", "scope"), ("nom", "type", "périmètre"),
                                         ("nom", "type", "perimetre")}):
            try:
                name, type_, scope = _org_name(cells[0]), _org_type(cells[1]), _scope_of(cells[2])
            except AccountsError as exc:
                raise AccountsError(exc.problem, path, line) from None
            key = _key(name)
            if key in seen:
                raise AccountsError(f"organisation {name!r} is already listed (line {seen[key]})", path, line)
            seen[key] = line
            rows.append((line, name, key, type_, scope))
        if not rows:
            raise AccountsError("no organisation", path)
        now = self._iso()
        with self._write() as db:
            existing = {row["name_key"]: row for row in db.execute("SELECT * FROM orgs")}
            new = []
            for line, name, key, type_, scope in rows:
                old = existing.get(key)
                if old is None:
                    new.append((name, key, type_, str(scope), now))
                elif not (skip_existing and old["type"] == type_ and old["scope"] == str(scope)):
                    differs = "" if old["type"] == type_ and old["scope"] == str(scope) else \
                        f" as {old['type']} {old['scope']}"
                    raise AccountsError(f"organisation {old['name']!r} already exists{differs} (id {old['id']})"
                                        + ("" if differs else "; skip_existing to leave it"), path, line)
            db.executemany("INSERT INTO orgs (name, name_key, type, scope, created_at) VALUES (?, ?, ?, ?, ?)", new)
            self._audit(db, "org_added", None, None, {"by": by, "import": str(path), "count": len(new)})
        return len(new)

    def org(self, name_or_id: str | int | Org) -> Org:
        """An organisation by id, or by name (without regard to case, accents or extra spaces)."""
        row = self._org_row(self._connect(), name_or_id)
        return _org(row)

    def orgs(self) -> list[Org]:
        """Every organisation, by name."""
        return [_org(row) for row in self._connect().execute("SELECT * FROM orgs ORDER BY name_key")]

    def user_counts(self) -> dict[int, int]:
        """The number of users (disabled included) of each organisation id."""
        return {row[0]: row[1] for row in self._connect().execute("SELECT org_id, count(*) FROM users GROUP BY 1")}

    @staticmethod
    def _org_row(db, name_or_id) -> sqlite3.Row:
        if isinstance(name_or_id, Org):
            name_or_id = name_or_id.id
        row = None
        if isinstance(name_or_id, str):
            row = db.execute("SELECT * FROM orgs WHERE name_key = ?", (_key(name_or_id),)).fetchone()
            if row is None and name_or_id.strip().isdigit():
                name_or_id = int(name_or_id)
        if isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
            row = db.execute("SELECT * FROM orgs WHERE id = ?", (name_or_id,)).fetchone()
        if row is None:
            raise AccountsError(f"unknown organisation {name_or_id!r}")
        return row

    # -- users -----------------------------------------------------------------------------------

    def add_user(self, login: str, name: str, org: str | int | Org, role: str, *,
                 by: str | None = None) -> tuple[User, str]:
        """A new user, and its one-time password (to give them: it is not stored)."""
        login, name, role = _login(login), _user_name(name), _role(role)
        password = one_time_password()
        stored, expires = _one_time_hash(password), self._now() + ONE_TIME_DAYS * 86400
        with self._write() as db:
            org_row = self._org_row(db, org)
            if db.execute("SELECT 1 FROM users WHERE login = ?", (login,)).fetchone():
                raise AccountsError(f"user {login} already exists")
            db.execute("INSERT INTO users (login, name, org_id, role, password, password_expires, must_change, "
                       "created_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                       (login, name, org_row["id"], role, stored, expires, self._iso()))
            self._audit(db, "user_added", login, None, {"by": by, "org": org_row["name"], "role": role})
        return self.user(login), password

    def import_users(self, csv_path: str | os.PathLike, *, skip_existing: bool = False,
                     by: str | None = None) -> list[tuple[str, str]]:
        """Add the users of a CSV file `login;name;org;role`, all or none; (login, one-time password) of each.

        `org` is an organisation's name or id. A header line is optional; `#`
        lines are comments; `;` or `,` separated. A user who already exists is
        an error, unless `skip_existing` and it has the same organisation and
        role (it is then left as it is, and not in the result).
        """
        path = Path(csv_path)
        rows, seen = [], {}
        for line, cells in _csv_records(path, ("login", "name", "org", "role"),
                                        {("login", "name", "org", "role"), ("email", "name", "org", "role"),
                                         ("login", "name", "organisation", "role"),
                                         ("email", "name", "organisation", "role"),
                                         ("identifiant", "nom", "organisation", "rôle"),
                                         ("identifiant", "nom", "organisation", "role"),
                                         ("courriel", "nom", "organisation", "rôle")}):
            try:
                login, name, role = _login(cells[0]), _user_name(cells[1]), _role(cells[3])
            except AccountsError as exc:
                raise AccountsError(exc.problem, path, line) from None
            if not cells[2].strip():
                raise AccountsError("missing organisation", path, line)
            if login in seen:
                raise AccountsError(f"user {login} is already listed (line {seen[login]})", path, line)
            seen[login] = line
            rows.append((line, login, name, cells[2].strip(), role))
        if not rows:
            raise AccountsError("no user", path)
        now, created = self._now(), self._iso()
        expires = now + ONE_TIME_DAYS * 86400
        passwords, new, events = [], [], []
        with self._write() as db:
            orgs = list(db.execute("SELECT id, name, name_key FROM orgs"))
            by_key = {row["name_key"]: row for row in orgs}
            by_id = {str(row["id"]): row for row in orgs}
            existing = {row["login"]: row for row in db.execute(
                "SELECT login, org_id, role FROM users WHERE login IN (SELECT value FROM json_each(?))",
                (json.dumps([r[1] for r in rows]),))}
            for line, login, name, org_ref, role in rows:
                org_row = by_key.get(_key(org_ref)) or by_id.get(org_ref)
                if org_row is None:
                    raise AccountsError(f"unknown organisation {org_ref!r} (add it first: orgs add or orgs import)",
                                        path, line)
                old = existing.get(login)
                if old is not None:
                    if skip_existing and old["org_id"] == org_row["id"] and old["role"] == role:
                        continue
                    raise AccountsError(f"user {login} already exists" + (
                        "" if old["org_id"] == org_row["id"] and old["role"] == role
                        else " with another organisation or role"), path, line)
                password = one_time_password()
                passwords.append((login, password))
                new.append((login, name, org_row["id"], role, _one_time_hash(password), expires, created))
                detail = {"by": by, "org": org_row["name"], "role": role, "import": str(path)}
                events.append((created, "user_added", login, None,
                               json.dumps({k: v for k, v in detail.items() if v is not None}, ensure_ascii=False)))
            db.executemany("INSERT INTO users (login, name, org_id, role, password, password_expires, must_change, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)", new)
            db.executemany("INSERT INTO audit (at, event, login, address, detail) VALUES (?, ?, ?, ?, ?)", events)
        return passwords

    def user(self, login: str) -> User:
        """The user of this login (any case); AccountsError if unknown."""
        found = self._users("WHERE u.login = ?", (str(login).strip().lower(),))
        if not found:
            raise AccountsError(f"unknown user {login!r}")
        return found[0]

    def user_by_id(self, user_id: int) -> User:
        found = self._users("WHERE u.id = ?", (user_id,))
        if not found:
            raise AccountsError(f"unknown user id {user_id}")
        return found[0]

    def users(self, org: str | int | Org | None = None) -> list[User]:
        """Every user (disabled included), or an organisation's, by login."""
        if org is None:
            return self._users("", ())
        return self._users("WHERE u.org_id = ?", (self._org_row(self._connect(), org)["id"],))

    def _users(self, where: str, args) -> list[User]:
        rows = self._connect().execute(
            "SELECT u.id, u.login, u.name, u.role, u.must_change, u.disabled, u.last_login_at, "
            f"o.id AS org_id, o.name AS org_name, o.type AS org_type, o.scope AS org_scope "
            f"FROM users u JOIN orgs o ON o.id = u.org_id {where} ORDER BY u.login", args).fetchall()
        orgs: dict[int, Org] = {}
        return [_user(row, orgs) for row in rows]

    def disable_user(self, login: str, *, by: str | None = None) -> None:
        """Refuse the user's logins from now on; close its sessions, revoke its API tokens."""
        with self._write() as db:
            user_id = self._user_id(db, login)
            db.execute("UPDATE users SET disabled = 1 WHERE id = ?", (user_id,))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            db.execute("UPDATE tokens SET revoked = ? WHERE user_id = ? AND revoked IS NULL", (self._now(), user_id))
            self._audit(db, "user_disabled", login.strip().lower(), None, {"by": by})

    def enable_user(self, login: str, *, by: str | None = None) -> None:
        """Accept a disabled user's logins again (its tokens stay revoked)."""
        with self._write() as db:
            user_id = self._user_id(db, login)
            db.execute("UPDATE users SET disabled = 0 WHERE id = ?", (user_id,))
            self._audit(db, "user_enabled", login.strip().lower(), None, {"by": by})

    def reset_password(self, login: str, *, by: str | None = None) -> str:
        """A new one-time password for the user (to give them); its sessions are closed, its lockout lifted."""
        password = one_time_password()
        stored, expires = _one_time_hash(password), self._now() + ONE_TIME_DAYS * 86400
        with self._write() as db:
            user_id = self._user_id(db, login)
            key = login.strip().lower()
            db.execute("UPDATE users SET password = ?, password_expires = ?, must_change = 1 WHERE id = ?",
                       (stored, expires, user_id))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM lockouts WHERE login = ?", (key,))
            self._audit(db, "password_reset", key, None, {"by": by})
        return password

    def set_password(self, user_id: int, new_password: str, *, keep_session: str | None = None,
                     address: str | None = None) -> None:
        """The user's own password (argon2): at least 12 characters, not the login, not the current one.

        Clears `must_change`; closes the user's sessions but `keep_session`
        (the token of the session that changed it).
        """
        user = self.user_by_id(user_id)
        check_password(new_password, user.login)
        row = self._connect().execute("SELECT password FROM users WHERE id = ?", (user_id,)).fetchone()
        if self._verify(row["password"], new_password):
            raise AccountsError("the new password must differ from the current one")
        stored = self._hash(new_password)
        with self._write() as db:
            db.execute("UPDATE users SET password = ?, password_expires = NULL, must_change = 0, "
                       "password_changed_at = ? WHERE id = ?", (stored, self._iso(), user_id))
            db.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash IS NOT ?",
                       (user_id, _sha256(keep_session) if keep_session else None))
            self._audit(db, "password_changed", user.login, address, None)

    @staticmethod
    def _user_id(db, login: str) -> int:
        row = db.execute("SELECT id FROM users WHERE login = ?", (str(login).strip().lower(),)).fetchone()
        if row is None:
            raise AccountsError(f"unknown user {login!r}")
        return row["id"]

    # -- login -----------------------------------------------------------------------------------

    def authenticate(self, login: str, password: str, address: str | None) -> User:
        """The user if the password is right; LoginRefused otherwise. Records `login` or `login_failed`.

        The attempt counts as a failure (for throttling) until the password
        is found right, so that parallel attempts cannot exceed the limits.
        """
        now = self._now()
        key = str(login or "").strip().lower()[:254]
        where = _address_key(address)
        with self._write() as db:
            wait = self._throttled(db, key, where, now)
            if wait is None:
                attempt = db.execute("INSERT INTO failures (address, login, at) VALUES (?, ?, ?)",
                                     (where, key, now)).lastrowid
                failures = self._account_failures(db, key, now)
                db.execute("INSERT INTO lockouts (login, failures, last_at) VALUES (?, ?, ?) ON CONFLICT (login) "
                           "DO UPDATE SET failures = excluded.failures, last_at = excluded.last_at",
                           (key, failures + 1, now))
                db.execute("DELETE FROM failures WHERE at < ?", (now - ADDRESS_WINDOW,))
        if wait is not None:
            self.audit("login_failed", key, address, "throttled")
            raise LoginRefused("throttled", wait)
        row = self._connect().execute("SELECT id, password, password_expires, disabled FROM users WHERE login = ?",
                                      (key,)).fetchone()
        if row is None:
            self._dummy_verify(str(password or ""))
            self.audit("login_failed", key, address, "unknown login")
            raise LoginRefused("bad credentials")
        if not isinstance(password, str) or not self._verify(row["password"], password):
            self.audit("login_failed", key, address, "wrong password")
            raise LoginRefused("bad credentials")
        if row["disabled"]:
            self.audit("login_failed", key, address, "disabled")
            raise LoginRefused("disabled")
        if row["password_expires"] is not None and now > row["password_expires"]:
            self.audit("login_failed", key, address, "one-time password expired")
            raise LoginRefused("expired")
        rehash = None
        if not row["password"].startswith(_ONE_TIME):
            try:
                if self.hasher.check_needs_rehash(row["password"]):
                    rehash = self._hash(password)
            except InvalidHashError:
                pass
        with self._write() as db:
            db.execute("DELETE FROM failures WHERE id = ?", (attempt,))
            db.execute("DELETE FROM lockouts WHERE login = ?", (key,))
            db.execute("UPDATE users SET last_login_at = ?, password = coalesce(?, password) WHERE id = ?",
                       (self._iso(now), rehash, row["id"]))
            self._audit(db, "login", key, address, None)
        return self.user_by_id(row["id"])

    def _throttled(self, db, key: str, where: str, now: float) -> float | None:
        """Seconds to wait before another attempt for this login or from this address, None if none."""
        waits = []
        failures = self._account_failures(db, key, now)
        if failures >= ACCOUNT_FAILURES:
            last = db.execute("SELECT last_at FROM lockouts WHERE login = ?", (key,)).fetchone()["last_at"]
            until = last + _account_delay(failures)
            if now < until:
                waits.append(until - now)
        row = db.execute("SELECT at FROM failures WHERE address = ? AND at > ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                         (where, now - ADDRESS_WINDOW, ADDRESS_FAILURES - 1)).fetchone()
        if row is not None:
            waits.append(row["at"] + ADDRESS_WINDOW - now)
        return max(waits) if waits else None

    @staticmethod
    def _account_failures(db, key: str, now: float) -> int:
        """The failures in a row of this login; 0 once `ACCOUNT_WINDOW` has passed since the last lock ended."""
        row = db.execute("SELECT failures, last_at FROM lockouts WHERE login = ?", (key,)).fetchone()
        if row is None or now > row["last_at"] + _account_delay(row["failures"]) + ACCOUNT_WINDOW:
            return 0
        return row["failures"]

    def _verify(self, stored: str, password: str) -> bool:
        if stored.startswith(_ONE_TIME):
            _, salt, digest = stored.split("$")
            right = hmac.compare_digest(_one_time_digest(salt, password), digest)
            self._dummy_verify(password)  # as long as an argon2 verification
            return right
        try:
            with self._hashing:
                return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy_verify(self, password: str) -> None:
        if self._dummy is None:
            self._dummy = self._hash(secrets.token_urlsafe(16))
        try:
            with self._hashing:
                self.hasher.verify(self._dummy, password)
        except (VerificationError, InvalidHashError):
            pass

    def _hash(self, password: str) -> str:
        with self._hashing:
            return self.hasher.hash(password)

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, user: User, address: str | None, hours: float = 8.0) -> Session:
        """A new session for the user (after `authenticate`), valid `hours`; its token is the cookie."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._now()
        expires = now + hours * 3600
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            inserted = db.execute("INSERT INTO sessions (token_hash, user_id, csrf, address, created, expires, seen) "
                                  "SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND disabled = 0",
                                  (_sha256(token), csrf, address, now, expires, now, user.id)).rowcount
        if not inserted:
            raise AccountsError(f"user {user.login} is disabled or unknown")
        return Session(token, self.user_by_id(user.id), csrf, _datetime(now), _datetime(expires))

    def session(self, token: str | None) -> Session | None:
        """The session of this token, its user as they are now; None when unknown, expired or disabled."""
        if not token or not isinstance(token, str) or len(token) > 200:
            return None
        digest = _sha256(token)
        db = self._connect()
        row = db.execute("SELECT user_id, csrf, created, expires, seen FROM sessions WHERE token_hash = ?",
                         (digest,)).fetchone()
        if row is None:
            return None
        now = self._now()
        users = self._users("WHERE u.id = ?", (row["user_id"],))
        if (now >= row["expires"] or (self.idle is not None and now - row["seen"] > self.idle)
                or not users or users[0].disabled):
            with self._write() as db:
                db.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
            return None
        if now - row["seen"] >= SEEN_EVERY:
            with self._write() as db:
                db.execute("UPDATE sessions SET seen = ? WHERE token_hash = ?", (now, digest))
        return Session(token, users[0], row["csrf"], _datetime(row["created"]), _datetime(row["expires"]))

    def close_session(self, token: str | None, address: str | None = None) -> None:
        """Log out (records `logout`); nothing if the token is unknown."""
        if not token or not isinstance(token, str):
            return
        with self._write() as db:
            row = db.execute("SELECT u.login FROM sessions s JOIN users u ON u.id = s.user_id "
                             "WHERE s.token_hash = ?", (_sha256(token),)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_sha256(token),))
            self._audit(db, "logout", row["login"], address, None)

    def close_sessions(self, login: str) -> int:
        """Close every session of the user (log out everywhere); how many."""
        with self._write() as db:
            return db.execute("DELETE FROM sessions WHERE user_id = ?", (self._user_id(db, login),)).rowcount

    # -- personal API tokens ---------------------------------------------------------------------

    def create_token(self, login: str, label: str, *, days: float | None = TOKEN_DAYS,
                     address: str | None = None) -> str:
        """A new personal API token for the user (shown once: only its sha256 is stored), valid `days`."""
        label = str(label or "").strip()
        if not label or len(label) > 100 or any(c in label for c in "\r\n"):
            raise AccountsError("a token's label is one line of 1 to 100 characters")
        token = "pilotage_" + secrets.token_urlsafe(32)
        now = self._now()
        with self._write() as db:
            user_id = self._user_id(db, login)
            if db.execute("SELECT disabled FROM users WHERE id = ?", (user_id,)).fetchone()[0]:
                raise AccountsError(f"user {login} is disabled")
            db.execute("INSERT INTO tokens (token_hash, user_id, label, created, expires) VALUES (?, ?, ?, ?, ?)",
                       (_sha256(token), user_id, label, now, None if days is None else now + days * 86400))
            self._audit(db, "token_created", login.strip().lower(), address, {"label": label})
        return token

    def token_user(self, token: str | None) -> User | None:
        """The user of a personal API token; None when unknown, revoked, expired or the user disabled."""
        if not token or not isinstance(token, str) or len(token) > 200:
            return None
        digest = _sha256(token)
        row = self._connect().execute("SELECT user_id, expires, last_used, revoked FROM tokens WHERE token_hash = ?",
                                      (digest,)).fetchone()
        now = self._now()
        if row is None or row["revoked"] is not None or (row["expires"] is not None and now >= row["expires"]):
            return None
        users = self._users("WHERE u.id = ?", (row["user_id"],))
        if not users or users[0].disabled:
            return None
        if row["last_used"] is None or now - row["last_used"] >= SEEN_EVERY:
            with self._write() as db:
                db.execute("UPDATE tokens SET last_used = ? WHERE token_hash = ?", (now, digest))
        return users[0]

    def tokens(self, login: str) -> list[dict]:
        """The user's API tokens (id, label, created, expires, last_used, revoked), newest first."""
        db = self._connect()
        user_id = self._user_id(db, login)
        return [{"id": row["id"], "label": row["label"], "created": _datetime(row["created"]),
                 "expires": _datetime(row["expires"]), "last_used": _datetime(row["last_used"]),
                 "revoked": _datetime(row["revoked"])}
                for row in db.execute("SELECT * FROM tokens WHERE user_id = ? ORDER BY id DESC", (user_id,))]

    def revoke_token(self, login: str, token_id: int, *, address: str | None = None) -> None:
        with self._write() as db:
            user_id = self._user_id(db, login)
            row = db.execute("SELECT label FROM tokens WHERE id = ? AND user_id = ?", (token_id, user_id)).fetchone()
            if row is None:
                raise AccountsError(f"user {login} has no token {token_id}")
            db.execute("UPDATE tokens SET revoked = coalesce(revoked, ?) WHERE id = ?", (self._now(), token_id))
            self._audit(db, "token_revoked", login.strip().lower(), address, {"label": row["label"]})

    # -- audit -----------------------------------------------------------------------------------

    def audit(self, event: str, login: str | None = None, address: str | None = None, detail=None) -> None:
        """Record an event (login, login_failed, logout, password_changed, query, export, download, ...).

        `detail`: text, or anything JSON can hold (a query's fields...).
        """
        with self._write() as db:
            self._audit(db, event, login, address, detail)

    def _audit(self, db, event: str, login, address, detail) -> None:
        if not isinstance(event, str) or not _EVENT.match(event):
            raise AccountsError(f"{event!r} is not an event name (lower case letters, digits and _)")
        if isinstance(detail, dict):
            detail = {k: v for k, v in detail.items() if v is not None} or None
        db.execute("INSERT INTO audit (at, event, login, address, detail) VALUES (?, ?, ?, ?, ?)",
                   (self._iso(), event, None if login is None else str(login).strip().lower()[:254],
                    None if address is None else str(address)[:100],
                    None if detail is None else json.dumps(detail, ensure_ascii=False, default=str)))

    def audit_log(self, limit: int | None = 100, login: str | None = None, event: str | None = None,
                  since: datetime | str | None = None) -> list[dict]:
        """The events recorded (id, at, event, login, address, detail), newest first."""
        where, args = [], []
        if login is not None:
            where.append("login = ?")
            args.append(login.strip().lower())
        if event is not None:
            where.append("event = ?")
            args.append(event)
        if since is not None:
            if isinstance(since, str):
                since = datetime.fromisoformat(since)
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            where.append("at >= ?")
            args.append(since.astimezone(timezone.utc).isoformat(timespec="milliseconds"))
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [{"id": row["id"], "at": datetime.fromisoformat(row["at"]), "event": row["event"],
                 "login": row["login"], "address": row["address"],
                 "detail": None if row["detail"] is None else json.loads(row["detail"])}
                for row in self._connect().execute(sql, args)]

    def purge(self, audit_days: float | None = None) -> dict[str, int]:
        """Delete what has expired: sessions, old failures and lockouts; the audit log older than `audit_days`
        if given (kept whole otherwise). How many rows of each."""
        now = self._now()
        with self._write() as db:
            deleted = {
                "sessions": db.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount,
                "failures": db.execute("DELETE FROM failures WHERE at < ?", (now - ADDRESS_WINDOW,)).rowcount,
                "lockouts": db.execute("DELETE FROM lockouts WHERE last_at < ?",
                                       (now - ACCOUNT_MAX_DELAY - ACCOUNT_WINDOW,)).rowcount,
            }
            if audit_days is not None:
                deleted["audit"] = db.execute("DELETE FROM audit WHERE at < ?",
                                              (self._iso(now - audit_days * 86400),)).rowcount
        return deleted

    def _iso(self, at: float | None = None) -> str:
        return _datetime(self._now() if at is None else at).isoformat(timespec="milliseconds")


# -- values ------------------------------------------------------------------------------------------

def one_time_password() -> str:
    """80 random bits as four groups of four symbols of Crockford's base 32: 'k7dm-x3qa-9fz2-hw5c'."""
    symbols = "".join(_CROCKFORD[b % 32] for b in secrets.token_bytes(16))
    return "-".join(symbols[i:i + 4] for i in range(0, 16, 4))


def _one_time_digest(salt: str, password: str) -> str:
    typed = str(password).strip().lower().translate(_CROCKFORD_READ)
    return hmac.new(bytes.fromhex(salt), typed.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def _one_time_hash(password: str) -> str:
    salt = secrets.token_hex(16)
    return f"{_ONE_TIME}{salt}${_one_time_digest(salt, password)}"


def check_password(password: str, login: str = "") -> None:
    """The password policy: AccountsError saying what is wrong, if anything."""
    if not isinstance(password, str):
        raise AccountsError("a password is text")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise AccountsError(f"the password is too short: at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise AccountsError(f"the password is too long: at most {PASSWORD_MAX_LENGTH} characters")
    login = login.strip().lower()
    folded = password.strip().lower()
    if login and folded in (login, login.partition("@")[0]):
        raise AccountsError("the password must not be the login")
    if len(set(password)) < 4:
        raise AccountsError("the password must not repeat so few characters")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _datetime(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, timezone.utc)


def _account_delay(failures: int) -> float:
    if failures < ACCOUNT_FAILURES:
        return 0.0
    return min(ACCOUNT_DELAY * 2.0 ** min(failures - ACCOUNT_FAILURES, 30), ACCOUNT_MAX_DELAY)


def _address_key(address: str | None) -> str:
    """The key of an address for throttling: the address, or its /64 for IPv6."""
    text = str(address or "").strip()[:100]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def _key(name: str) -> str:
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return " ".join(text.casefold().split())


def _login(login) -> str:
    text = str(login or "").strip().lower()
    if not text:
        raise AccountsError("missing login (an email address)")
    if len(text) > 254 or not _LOGIN.match(text):
        raise AccountsError(f"{text!r} is not an email address (the login is the user's email address)")
    return text


def _user_name(name) -> str:
    text = " ".join(str(name or "").split()) if name is not None else ""
    if any(c in str(name or "") for c in "\r\n"):
        raise AccountsError("the name is on one line")
    if len(text) > 200:
        raise AccountsError("the name is too long (200 characters at most)")
    return text


def _org_name(name) -> str:
    if name is not None and any(c in str(name) for c in "\r\n"):
        raise AccountsError("an organisation's name is on one line")
    text = " ".join(str(name or "").split())
    if not text:
        raise AccountsError("missing organisation name")
    if len(text) > 200:
        raise AccountsError("the organisation's name is too long (200 characters at most)")
    if not _key(text):
        raise AccountsError(f"{text!r} is not a usable organisation name")
    return text


def _normal(value) -> str:
    return re.sub(r"[\s-]+", "_", str(value or "").strip().lower())


def _role(role) -> str:
    text = _normal(role)
    if text not in ROLES:
        raise AccountsError(f"unknown role {str(role or '').strip()!r}; valid: {', '.join(ROLES)}")
    return text


def _org_type(type_) -> str:
    text = _normal(type_)
    if text not in ORG_TYPES:
        raise AccountsError(f"unknown organisation type {str(type_ or '').strip()!r}; valid: {', '.join(ORG_TYPES)}")
    return text


def _scope_of(scope) -> Scope:
    if isinstance(scope, Scope):
        return scope
    if not str(scope or "").strip():
        raise AccountsError("missing scope (national, region_2005:<codes>, region_2016:<codes> or "
                            "department:<codes>; names allowed, e.g. region_2016:Normandie)")
    try:
        return _parsed_scope(str(scope).strip())
    except ScopeError as exc:
        raise AccountsError(f"scope: {exc}") from None


@lru_cache(maxsize=4096)
def _parsed_scope(text: str) -> Scope:
    from pilotage.reports.delivery.recipients import parse_scope

    return parse_scope(text)


@lru_cache(maxsize=4096)
def _stored_scope(text: str) -> Scope:
    return Scope.parse(text)


def _org(row) -> Org:
    return Org(row["id"], row["name"], row["type"], _stored_scope(row["scope"]))


def _user(row, orgs: dict[int, Org]) -> User:
    org = orgs.get(row["org_id"])
    if org is None:
        org = orgs[row["org_id"]] = Org(row["org_id"], row["org_name"], row["org_type"],
                                        _stored_scope(row["org_scope"]))
    return User(row["id"], row["login"], row["name"], org, row["role"], bool(row["must_change"]),
                bool(row["disabled"]),
                None if row["last_login_at"] is None else datetime.fromisoformat(row["last_login_at"]))


def _csv_records(path: Path, columns: tuple[str, ...], headers: set[tuple[str, ...]]):
    """(line, cells) of a `;`- or `,`-separated file, without the header, blank and `#` lines."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AccountsError("file not found", path) from None
    except OSError as exc:
        raise AccountsError(f"cannot read: {exc.strerror or exc}", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AccountsError("not UTF-8 text (save it as 'CSV UTF-8')", path,
                            raw[:exc.start].count(b"\n") + 1) from None
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    delimiter = ";" if ";" in first or "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header_done = False
    expected = delimiter.join(columns)
    try:
        for cells in reader:
            line = reader.line_num
            cells = [c.strip() for c in cells]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if not header_done:
                header_done = True
                names = tuple(_normal(c).replace("_", " ") for c in cells)
                if names[0] in {h[0] for h in headers}:
                    if names not in headers:
                        raise AccountsError(f"header {delimiter.join(cells)!r}: expected {expected}", path, line)
                    continue
            if len(cells) != len(columns):
                raise AccountsError(f"expected {len(columns)} columns {expected} separated by {delimiter!r}, "
                                    f"found {len(cells)}", path, line)
            yield line, cells
    except csv.Error as exc:
        raise AccountsError(f"not valid CSV: {exc}", path, reader.line_num) from None
