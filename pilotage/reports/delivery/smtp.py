"""Sending one message over SMTP, with timeouts, retries and a clear verdict.

- every SMTP call has a timeout (`SmtpSettings.timeout`, the socket's timeout);
- security: `starttls` (upgrade after EHLO; refused if the server does not
  offer it), `ssl` (TLS from the first byte), `none`;
- authentication when a user is configured (password from the environment);
- a temporary refusal -- a 4xx reply, a connection refused or dropped, a
  timeout -- is retried with exponential backoff (`attempts`, `backoff`);
- a permanent one -- a 5xx reply, a TLS certificate that does not verify, a
  server without STARTTLS or AUTH -- raises `PermanentFailure` at once, naming
  the recipient(s) and the server's reply, so that the caller records it and
  goes on with the other recipients.

One message, one SMTP transaction: if a server refuses one envelope recipient
the message is sent to none (the weekly summaries have one recipient each).

As with any SMTP client, a connection lost after the server has received the
whole message but before its reply reaches us counts as a temporary failure,
and the retry may deliver the message twice; the Message-ID is kept so that
such a duplicate can be recognised.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from io import BytesIO

from pilotage.reports.delivery.config import SmtpSettings

MAX_DELAY = 300.0  # seconds: the longest wait between two tries


class DeliveryError(Exception):
    """A message that could not be delivered."""

    def __init__(self, recipients: tuple[str, ...], problem: str, *, code: int | None = None,
                 reply: str = "", stage: str = "", attempts: int = 1):
        self.recipients, self.problem, self.code, self.reply = recipients, problem, code, reply
        self.stage, self.attempts = stage, attempts
        super().__init__(f"{', '.join(recipients) or 'message'}: {problem}")


class PermanentFailure(DeliveryError):
    """Refused for good (5xx, bad certificate, server lacking STARTTLS/AUTH): do not retry."""


class TemporaryFailure(DeliveryError):
    """Still refused temporarily (4xx, no connection, timeout) after every try."""


@dataclass(frozen=True)
class SendResult:
    recipients: tuple[str, ...]
    attempts: int
    code: int  # the server's final reply to the message (250)
    reply: str
    message_id: str | None


class _Refusal(Exception):
    def __init__(self, permanent: bool, stage: str, problem: str, code: int | None = None, reply: str = ""):
        super().__init__(problem)
        self.permanent, self.stage, self.problem, self.code, self.reply = permanent, stage, problem, code, reply


def send_message(message: EmailMessage, settings: SmtpSettings, *, password: str | None = None,
                 environ: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None) -> SendResult:
    """Send `message` to its To and Cc addresses; retry temporary refusals; raise `DeliveryError` when it fails.

    `password` defaults to the environment variable named in the settings.
    `ssl_context` defaults to the system's trusted certificates (tests pass one trusting theirs).
    """
    sender, recipients = _envelope(message)
    if settings.user and password is None:
        password = settings.password(environ)
    if settings.security != "none" and ssl_context is None:
        ssl_context = ssl.create_default_context()
    data = _flatten(message)
    where = f"{settings.host}:{settings.port}"
    last: _Refusal | None = None
    for attempt in range(1, settings.attempts + 1):
        if attempt > 1:
            delay = min(settings.backoff * 2 ** (attempt - 2), MAX_DELAY)
            if log:
                log(f"{', '.join(recipients)}: try {attempt}/{settings.attempts} in {delay:g} s ({last.problem})")
            sleep(delay)
        try:
            code, reply = _transaction(settings, password, ssl_context, sender, recipients, data)
        except _Refusal as refusal:
            if refusal.permanent:
                raise PermanentFailure(recipients, f"refused by {where} at {refusal.stage}: {refusal.problem}",
                                       code=refusal.code, reply=refusal.reply, stage=refusal.stage,
                                       attempts=attempt) from None
            last = refusal
            continue
        return SendResult(recipients, attempt, code, reply, message.get("Message-ID"))
    raise TemporaryFailure(recipients, f"not delivered after {settings.attempts} tries to {where}; "
                                       f"last at {last.stage}: {last.problem}",
                           code=last.code, reply=last.reply, stage=last.stage, attempts=settings.attempts)


def _envelope(message: EmailMessage) -> tuple[str, tuple[str, ...]]:
    sender = parseaddr(message.get("Sender") or message.get("From") or "")[1]
    if not sender:
        raise ValueError("the message has no From address")
    fields = [str(v) for name in ("To", "Cc") for v in message.get_all(name, [])]
    recipients = tuple(dict.fromkeys(address for _, address in getaddresses(fields) if address))
    if not recipients:
        raise ValueError("the message has no recipient (To or Cc)")
    return sender, recipients


def _flatten(message: EmailMessage) -> bytes:
    if message.get_all("Bcc"):
        raise ValueError("Bcc is not supported: send one message per recipient")
    out = BytesIO()
    BytesGenerator(out, policy=message.policy.clone(linesep="\r\n")).flatten(message)
    return out.getvalue()


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _check(stage: str, code: int, reply, accepted: tuple[int, ...] = (250,)) -> None:
    if code in accepted:
        return
    text = _text(reply)
    permanent = not 400 <= code < 500  # 5xx, or a reply that makes no sense: do not insist
    raise _Refusal(permanent, stage, f"{code} {text}".strip(), code, text)


def _transaction(settings: SmtpSettings, password: str | None, context: ssl.SSLContext | None,
                 sender: str, recipients: tuple[str, ...], data: bytes) -> tuple[int, str]:
    stage = "CONNECT"
    client: smtplib.SMTP | None = None
    try:
        if settings.security == "ssl":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        stage = "EHLO"
        _check(stage, *client.ehlo())
        if settings.security == "starttls":
            stage = "STARTTLS"
            if not client.has_extn("starttls"):
                raise _Refusal(True, stage, "the server does not offer STARTTLS (security = starttls)")
            _check(stage, *client.starttls(context=context), accepted=(220,))
            stage = "EHLO"
            _check(stage, *client.ehlo())
        if settings.user:
            stage = "AUTH"
            _login(client, settings.user, password or "")
        stage = "MAIL FROM"
        _check(stage, *client.mail(sender))
        for recipient in recipients:
            stage = f"RCPT TO <{recipient}>"
            _check(stage, *client.rcpt(recipient), accepted=(250, 251))
        stage = "DATA"
        code, reply = client.data(data)
        _check(stage, code, reply)
    except _Refusal:
        _close(client, polite=True)
        raise
    except smtplib.SMTPServerDisconnected as exc:
        _close(client)
        if isinstance(exc.__context__, TimeoutError):  # smtplib turns a read timeout into a disconnection
            raise _Refusal(False, stage, f"no answer within {settings.timeout:g} s") from None
        raise _Refusal(False, stage, f"connection lost ({exc})") from None
    except smtplib.SMTPResponseException as exc:  # connect, helo, auth, sender, data errors
        _close(client, polite=True)
        raise _Refusal(not 400 <= exc.smtp_code < 500, stage, f"{exc.smtp_code} {_text(exc.smtp_error)}".strip(),
                       exc.smtp_code, _text(exc.smtp_error)) from None
    except smtplib.SMTPException as exc:  # no AUTH offered, no suitable mechanism...
        _close(client, polite=True)
        raise _Refusal(True, stage, str(exc)) from None
    except ssl.SSLError as exc:  # certificate not trusted, TLS on a plain port...
        _close(client)
        raise _Refusal(True, stage, f"TLS: {exc}") from None
    except TimeoutError:
        _close(client)
        raise _Refusal(False, stage, f"no answer within {settings.timeout:g} s") from None
    except OSError as exc:  # connection refused, reset, name not resolved...
        _close(client)
        raise _Refusal(False, stage, f"connection failed ({exc})") from None
    _close(client, polite=True)  # delivered: a failing QUIT changes nothing
    return code, _text(reply)


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    if (user + password).isascii():
        client.login(user, password)
        return
    # smtplib encodes credentials as ASCII; AUTH PLAIN is UTF-8 (RFC 4616)
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    if "PLAIN" not in client.esmtp_features["auth"].upper().split():
        raise smtplib.SMTPException("a non-ASCII user or password needs AUTH PLAIN, which the server does not offer")
    token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode("ascii")
    code, reply = client.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _close(client: smtplib.SMTP | None, polite: bool = False) -> None:
    if client is None:
        return
    try:
        if polite and client.sock is not None:
            client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
