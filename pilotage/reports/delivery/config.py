"""The service configuration: `pilotage.toml`, read with tomllib into frozen dataclasses.

The file is found in the working folder (or given explicitly, `--config`).
Relative paths are relative to the file's folder. The SMTP password is never
written in the file: `smtp.password_env` names the environment variable that
holds it, read only when a message is sent.

Every wrong, missing or unknown setting raises `ConfigError` naming the key
and the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

CONFIG_NAME = "pilotage.toml"
SECURITIES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKDAYS_FR = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]]+@[^@\s<>,;:\"()\[\]]+$")


class ConfigError(ValueError):
    """A wrong or missing setting; the message names the key and the file."""

    def __init__(self, key: str | None, problem: str, path: Path | None = None):
        self.key, self.problem, self.path = key, problem, path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # starttls | ssl | none
    user: str | None = None
    password_env: str | None = None  # the NAME of the environment variable holding the password
    timeout: float = 30.0  # seconds, on every SMTP call
    attempts: int = 4  # tries for a temporary refusal (the first included)
    backoff: float = 2.0  # seconds before the 2nd try; doubled after each
    source: Path | None = None  # the configuration file, for messages

    def __post_init__(self):
        if self.security not in SECURITIES:
            raise ConfigError("smtp.security", f"{self.security!r} is not one of {', '.join(SECURITIES)}", self.source)

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The password, read from the environment variable named in the file (None without a user)."""
        if not self.user:
            return None
        environ = os.environ if environ is None else environ
        value = environ.get(self.password_env or "")
        if not value:
            raise ConfigError("smtp.password_env",
                              f"the environment variable {self.password_env} (the password of {self.user}) is not set",
                              self.source)
        return value


@dataclass(frozen=True)
class Config:
    warehouse: Path
    drops: Path
    output: Path
    recipients: Path
    alerts: Path | None
    archive: Path
    smtp: SmtpSettings
    sender: str
    weekday: int  # 0 = Monday, as date.weekday()
    path: Path | None = None
    portal_database: Path | None = None  # organisations, users, sessions, audit (default <output>/portal.sqlite)
    lake: Path | None = None  # where the daily run exports the star schema as Parquet (none: no export)
    session_hours: float = 8.0  # a portal session's lifetime

    @property
    def portal_accounts(self) -> Path:
        return self.portal_database or self.output / "portal.sqlite"

    @property
    def weekday_name(self) -> str:
        return WEEKDAYS[self.weekday]


# The settings each section knows (any other key is refused, to catch typos).
_KEYS: dict[str, tuple[str, ...]] = {
    "paths": ("warehouse", "drops", "output", "recipients", "alerts", "archive", "lake"),
    "smtp": ("host", "port", "security", "user", "password_env", "timeout", "attempts", "backoff"),
    "mail": ("sender",),
    "weekly": ("weekday",),
    "portal": ("database", "session_hours"),
}


def find_config(explicit: str | os.PathLike | None = None, folder: str | os.PathLike | None = None) -> Path:
    """The file given, or `pilotage.toml` in the working folder."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(None, "configuration file not found", path)
        return path
    path = Path(folder if folder is not None else Path.cwd()) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(None, f"no {CONFIG_NAME} in {path.parent} (give one with --config, "
                                f"or write an example with `pilotage init`)")
    return path


def load_config(path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None) -> Config:
    """Read and check a configuration file (found by `find_config`)."""
    path = find_config(path, folder)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"not valid TOML: {exc}", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read: {exc}", path) from None
    return parse_config(data, path)


def parse_config(data: Mapping, path: Path | None = None) -> Config:
    """Check a parsed TOML document (paths relative to `path`'s folder)."""
    base = path.parent if path else Path.cwd()
    r = _Reader(data, path)
    for key in data:
        if key not in _KEYS:
            raise ConfigError(key, f"unknown section; valid: {', '.join(_KEYS)}", path)
    for section, keys in _KEYS.items():
        table = data.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(section, "must be a table ([" + section + "])", path)
        for key in table:
            if section == "smtp" and key == "password":
                raise ConfigError("smtp.password", "the password is never written in the file: set "
                                  "smtp.password_env to the name of the environment variable that holds it", path)
            if key not in keys:
                raise ConfigError(f"{section}.{key}", f"unknown setting; valid in [{section}]: {', '.join(keys)}", path)

    def place(key: str, required: bool = True, default: str | None = None) -> Path | None:
        text = r.string(key, required=required, default=default)
        return None if text is None else (base / Path(text).expanduser())

    output = place("paths.output")
    security = r.string("smtp.security", default="starttls")
    if security not in SECURITIES:
        raise ConfigError("smtp.security", f"{security!r} is not one of {', '.join(SECURITIES)}", path)
    user = r.string("smtp.user", required=False)
    password_env = r.string("smtp.password_env", required=False)
    if user and not password_env:
        raise ConfigError("smtp.password_env", f"missing: smtp.user is set ({user}), so name the environment "
                          "variable that holds its password", path)
    if password_env and not _ENV_NAME.match(password_env):
        raise ConfigError("smtp.password_env", f"{password_env!r} is not an environment variable name "
                          "(the file names the variable, it never holds the password)", path)
    smtp = SmtpSettings(
        host=r.string("smtp.host"),
        port=r.integer("smtp.port", DEFAULT_PORTS[security], 1, 65535),
        security=security,
        user=user,
        password_env=password_env,
        timeout=r.number("smtp.timeout", 30.0, minimum=0.001),
        attempts=r.integer("smtp.attempts", 4, 1, 100),
        backoff=r.number("smtp.backoff", 2.0, minimum=0.0),
        source=path,
    )
    sender = r.string("mail.sender")
    _, address = parseaddr(sender)
    if not _ADDRESS.match(address or ""):
        raise ConfigError("mail.sender", f"{sender!r} is not an email address (e.g. 'Pilotage <pilotage@example.org>')",
                          path)
    return Config(
        warehouse=place("paths.warehouse"),
        drops=place("paths.drops"),
        output=output,
        recipients=place("paths.recipients"),
        alerts=place("paths.alerts", required=False),
        archive=place("paths.archive", required=False) or output / "deliveries.sqlite",
        smtp=smtp,
        sender=sender,
        weekday=_weekday(r, "weekly.weekday"),
        path=path,
        portal_database=place("portal.database", required=False),
        lake=place("paths.lake", required=False),
        session_hours=r.number("portal.session_hours", 8.0, minimum=0.05, unit="hours"),
    )


def _weekday(r: "_Reader", key: str) -> int:
    value = r.get(key)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 7:
            return value - 1
    elif isinstance(value, str):
        name = value.strip().lower()
        for names in (WEEKDAYS, WEEKDAYS_FR):
            if name in names:
                return names.index(name)
    raise ConfigError(key, f"{value!r} is not a weekday (monday..sunday, lundi..dimanche, or 1..7 from Monday)", r.path)


class _Reader:
    def __init__(self, data: Mapping, path: Path | None):
        self.data, self.path = data, path

    def get(self, key: str):
        section, _, name = key.partition(".")
        table = self.data.get(section, {})
        return table.get(name) if isinstance(table, Mapping) else None

    def string(self, key: str, required: bool = True, default: str | None = None) -> str | None:
        value = self.get(key)
        if value is None:
            if default is None and required:
                raise ConfigError(key, "missing", self.path)
            return default
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, not {value!r}", self.path)
        if not value.strip():
            if required and default is None:
                raise ConfigError(key, "is empty", self.path)
            return default
        return value.strip()

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(key, f"must be an integer from {low} to {high}, not {value!r}", self.path)
        return value

    def number(self, key: str, default: float, minimum: float, unit: str = "seconds") -> float:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            raise ConfigError(key, f"must be a number of {unit} >= {minimum}, not {value!r}", self.path)
        return float(value)


def example_config() -> str:
    """A commented example, written by `pilotage init`."""
    return _EXAMPLE


_EXAMPLE = """\
# pilotage.toml: the configuration of the daily run and of the emails.
# Relative paths are relative to this file's folder.

[paths]
warehouse = "pilotage.duckdb"        # the DuckDB warehouse
drops = "drops"                      # where the daily drops arrive
output = "out"                       # reports written by the daily run
recipients = "recipients.csv"        # who gets what (CSV address;name;scope, or YAML)
alerts = "alerts.yml"                # alert rules (optional)
# archive = "out/deliveries.sqlite"  # record of the messages sent (default: in the output folder)
# lake = "lake"                      # the daily run exports the star schema there as Parquet (for Spark...)

[smtp]
host = "smtp.example.org"
security = "starttls"                # starttls | ssl | none
port = 587                           # default: 587 starttls, 465 ssl, 25 none
user = "pilotage"                    # remove for a server without authentication
password_env = "PILOTAGE_SMTP_PASSWORD"   # NAME of the environment variable holding the password
timeout = 30                         # seconds, on every SMTP call
attempts = 4                         # tries when the server refuses temporarily (4xx, no answer)
backoff = 2                          # seconds before the second try, doubled after each

[mail]
sender = "Pilotage <pilotage@example.org>"

[weekly]
weekday = "monday"                   # day the weekly summaries go out (monday..sunday, or lundi..dimanche)

[portal]
# database = "out/portal.sqlite"     # organisations, users, sessions, audit log (default: in the output folder)
session_hours = 8                    # a session's lifetime
"""
