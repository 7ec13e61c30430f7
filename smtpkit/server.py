"""A local SMTP capture server on aiosmtpd: every message lands in a Maildir, none leaves.

The embedded default for trying smtpkit without a mail account, and a test double::

    with smtpkit.CaptureServer() as server:
        with smtpkit.SMTP(server.host, server.port) as smtp:
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        [message] = server.messages          # email.message.EmailMessage, with .envelope

It advertises PIPELINING and CHUNKING (BDAT, RFC 3030), SMTPUTF8 and 8BITMIME, and can
offer STARTTLS with a freshly generated self-signed certificate and AUTH (PLAIN, LOGIN)
with given credentials. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .client import IN_PROCESS_PORTS

__all__ = ["CaptureServer", "Envelope", "self_signed_context"]


@dataclass(frozen=True)
class Envelope:
    """What the SMTP dialogue said about one message (not its headers)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[tuple[str, ...], ...] = ()
    chunked: bool = False
    tls: bool = False
    user: str | None = None
    size: int = 0
    key: str = ""  # the Maildir key


@dataclass
class _Handler:
    maildir: mailbox.Maildir
    users: Mapping[str, str]
    pipelining: bool
    chunking: bool
    on_message: Callable[[EmailMessage], None] | None
    received: list[tuple[bytes, Envelope]] = field(default_factory=list)
    parsed: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        extra = []
        if self.pipelining:
            extra.append("250-PIPELINING")
        if self.chunking:
            extra.append("250-CHUNKING")
        extra.append("250-ENHANCEDSTATUSCODES")
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or envelope.content or b"")
        auth = getattr(session, "auth_data", None)
        info = Envelope(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(tuple(o) for o in envelope.rcpt_options),
            chunked=bool(getattr(envelope, "chunked", False)),
            tls=session.ssl is not None,
            user=auth.login.decode("utf-8", "replace") if auth is not None and hasattr(auth, "login") else None,
            size=len(data),
        )
        with self.lock:
            key = self.maildir.add(_with_envelope_headers(data, info))
            info = Envelope(**{**info.__dict__, "key": key})
            self.received.append((data, info))
        if self.on_message is not None:
            self.on_message(_parse(data, info))
        return f"250 2.0.0 Ok: queued as {key.split('.')[1] if key.count('.') >= 2 else key}"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            expected = self.users.get(user)
            if expected is not None and auth_data.password == expected.encode("utf-8"):
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def _parse(data: bytes, info: Envelope) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    message.envelope = info  # type: ignore[attr-defined]
    return message


def _with_envelope_headers(data: bytes, info: Envelope) -> bytes:
    """Prefix Return-Path and X-Envelope-To, as a delivery agent would (RFC 5321 4.4)."""
    head = f"Return-Path: <{info.mail_from}>\r\nX-Envelope-To: {', '.join(info.rcpt_tos)}\r\n"
    return head.encode("utf-8") + data


def self_signed_context(hostname: str = "localhost") -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a new self-signed certificate; returns it and the PEM path.

    Needs the ``cryptography`` package. Clients must trust the PEM file (or opt out of
    verification) to connect.
    """
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("STARTTLS for the capture server needs the 'cryptography' package") from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="smtpkit-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


class CaptureServer:
    """aiosmtpd in a background thread, storing every message in a Maildir.

    ``port=0`` picks a free port. ``maildir`` defaults to a new temporary folder (the CLI
    uses ``./captured-mail``). ``users`` maps user names to passwords and turns AUTH on;
    ``starttls=True`` offers STARTTLS with a self-signed certificate (its PEM path is
    ``server.certificate``; ``server.client_context()`` trusts it).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        maildir: str | os.PathLike[str] | None = None,
        *,
        users: Mapping[str, str] | None = None,
        starttls: bool = False,
        require_starttls: bool = False,
        smtputf8: bool = True,
        pipelining: bool = True,
        chunking: bool = True,
        hostname: str = "smtpkit-capture",
        on_message: Callable[[EmailMessage], None] | None = None,
        data_size_limit: int = 64 * 1024 * 1024,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self.maildir_path = Path(maildir) if maildir is not None else Path(tempfile.mkdtemp(prefix="smtpkit-mail-"))
        self.users = dict(users or {})
        self.starttls = starttls
        self.require_starttls = require_starttls
        self.smtputf8 = smtputf8
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.certificate: Path | None = None
        self._tls_context: ssl.SSLContext | None = None
        for sub in ("tmp", "new", "cur"):  # Maildir(create=True) skips these if the folder exists
            (self.maildir_path / sub).mkdir(parents=True, exist_ok=True)
        self._handler = _Handler(
            mailbox.Maildir(self.maildir_path, create=False), self.users, pipelining, chunking, on_message
        )
        self._controller: Any = None

    def __repr__(self) -> str:
        state = "running" if self._controller is not None else "stopped"
        return f"<CaptureServer {self.host}:{self.port} {state}, {len(self.messages)} messages in {self.maildir_path}>"

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received so far, parsed (each has ``.envelope``)."""
        handler = self._handler
        with handler.lock:
            for data, info in handler.received[len(handler.parsed) :]:
                handler.parsed.append(_parse(data, info))
            return list(handler.parsed)

    @property
    def raw_messages(self) -> list[tuple[bytes, Envelope]]:
        """Every message as received: ``(bytes, envelope)``."""
        with self._handler.lock:
            return list(self._handler.received)

    def clear(self) -> None:
        """Forget the messages in memory (the Maildir keeps them)."""
        with self._handler.lock:
            self._handler.received.clear()
            self._handler.parsed.clear()

    def client_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this server's self-signed certificate."""
        context = ssl.create_default_context()
        if self.certificate is not None:
            context.load_verify_locations(self.certificate)
        return context

    def start(self) -> CaptureServer:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP as AioSMTP

        from ._bdat import ChunkingSMTP

        if self.starttls and self._tls_context is None:
            self._tls_context, self.certificate = self_signed_context("localhost")
        handler = self._handler
        chunking = handler.chunking
        kwargs: dict[str, Any] = {
            "enable_SMTPUTF8": self.smtputf8,
            "data_size_limit": self.data_size_limit,
            "ident": "smtpkit capture server",
        }
        if self.users:
            kwargs.update(authenticator=handler.authenticate, auth_require_tls=self.starttls)
        if self._tls_context is not None:
            kwargs.update(tls_context=self._tls_context, require_starttls=self.require_starttls)

        class _Controller(Controller):
            def factory(self) -> AioSMTP:
                cls = ChunkingSMTP if chunking else AioSMTP
                return cls(self.handler, **self.SMTP_kwargs)

        port = self._requested_port or _free_port(self.host)
        controller = _Controller(
            handler, hostname=self.host, port=port, ready_timeout=10, server_hostname=self.hostname, **kwargs
        )
        controller.start()
        self._controller = controller
        self.port = port
        IN_PROCESS_PORTS.add(port)  # clients in this process do not busy-wait for it
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            IN_PROCESS_PORTS.discard(self.port)

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_EMBEDDED: dict[tuple[str, int], CaptureServer] = {}
_EMBEDDED_LOCK = threading.Lock()


def embedded_capture_server(
    host: str = "127.0.0.1", port: int = 8025, maildir: str | os.PathLike[str] = "captured-mail"
) -> CaptureServer:
    """A capture server running in this process on ``host:port``, started once and reused.

    The notebook forms and ``Account.preset("capture")`` fall back to it when nothing
    listens on the capture port, so everything can be tried without a mail account.
    """
    with _EMBEDDED_LOCK:
        server = _EMBEDDED.get((host, port))
        if server is None:
            server = CaptureServer(host, port, maildir).start()
            _EMBEDDED[(host, port)] = server
        return server
