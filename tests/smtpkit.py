"""A real SMTP server on loopback for the delivery tests (aiosmtpd): plain, or STARTTLS with a
self-signed certificate and authentication; it records what it receives and can refuse on demand.

Test modules import the fixtures they use: `from smtpkit import plain, starttls, ...  # noqa: F401`.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pilotage.reports.delivery.config import SmtpSettings

SENDER = "Pilotage <pilotage@example.org>"
USER, PASSWORD = "pilotage", "s3cret-é"


class Handler:
    """Records what it receives; answers 4xx `temporary` times, 5xx for `refused` addresses."""

    def __init__(self):
        self.received: list[dict] = []
        self.temporary = 0  # RCPT answered 451 this many times
        self.temporary_data = 0  # DATA answered 421 this many times
        self.refused: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return self.refused[address]
        if self.temporary:
            self.temporary -= 1
            return "451 4.3.0 Mailbox temporarily unavailable, try later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.temporary_data:
            self.temporary_data -= 1
            return "421 4.3.2 System not accepting network messages"
        self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "content": envelope.content, "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                              "login": session.auth_data if session.authenticated else None})
        return "250 2.0.0 Queued as 42"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def server_context(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture(scope="module")
def client_context(certificate) -> ssl.SSLContext:
    """Trusts the test certificate (and only it)."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def serve(handler, **kwargs):
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=5, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def plain():
    handler = Handler()
    controller, port = serve(handler)
    yield handler, SmtpSettings("127.0.0.1", port, "none", timeout=5, attempts=4, backoff=0.01)
    controller.stop()


@pytest.fixture
def starttls(server_context):
    handler = Handler()
    controller, port = serve(handler, tls_context=server_context, require_starttls=True,
                              authenticator=authenticator, auth_required=True, auth_require_tls=True)
    yield handler, SmtpSettings("127.0.0.1", port, "starttls", user=USER, password_env="TEST_SMTP_PASSWORD",
                                timeout=5, attempts=3, backoff=0.01)
    controller.stop()


def simple(to: str, subject: str = "test") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, to, subject
    message.set_content("bonjour\n")
    return message


def parsed(received: dict) -> email.message.EmailMessage:
    return email.message_from_bytes(received["content"], policy=email.policy.default)


@pytest.fixture
def plain_server():
    """A plain SMTP server on loopback: (its handler, its port)."""
    handler = Handler()
    controller, port = serve(handler)
    yield handler, port
    controller.stop()
