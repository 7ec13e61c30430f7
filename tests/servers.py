"""Real peers for the client tests, all on 127.0.0.1.

* :class:`Capture` + :func:`aiosmtpd_server`: aiosmtpd in-process (AUTH, STARTTLS,
  implicit TLS, SMTPUTF8, CHUNKING via a small BDAT extension, faults per command).
* :class:`SmtpSink`: Postfix's ``smtp-sink`` as a subprocess (pipelining, fault options).
* :class:`Scripted`: a raw socket server that plays a script, for hostile replies.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session, syntax

USER, PASSWORD = "alice", "s3cr3t-Pa55w0rd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[list[str]]
    chunked: bool = False


@dataclass
class Capture:
    """aiosmtpd handler that keeps every message; ``faults`` maps a verb to a reply."""

    messages: list[Received] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    logins: list[tuple[str, bytes]] = field(default_factory=list)
    lmtp: bool = False  # answer DATA once per recipient (RFC 2033)
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd handles pipelined input anyway)

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        extra = ["250-PIPELINING"] if self.pipelining else []
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "MAIL" in self.faults:
            return self.faults["MAIL"]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: no such user"
        if "RCPT" in self.faults:
            return self.faults["RCPT"]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if "DATA" in self.faults:
            return self.faults["DATA"]
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or envelope.content),
                list(envelope.mail_options),
                [list(o) for o in envelope.rcpt_options],
                chunked=getattr(envelope, "chunked", False),
            )
        )
        if self.lmtp:
            return "\r\n".join(f"250 2.0.0 <{r}> delivered" for r in envelope.rcpt_tos)
        return "250 2.0.0 queued"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((mechanism, auth_data.password))
            ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)


class ChunkingSMTP(AioSMTP):
    """aiosmtpd plus CHUNKING/BDAT (RFC 3030), so the client's BDAT path meets a real peer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bdat = bytearray()

    async def smtp_EHLO(self, hostname: str) -> None:
        # advertise CHUNKING by wrapping push() while the parent builds its reply
        original = self.push

        async def push(status: str) -> None:
            if status.startswith("250 ") and "HELP" in status:
                await original("250-CHUNKING")
            await original(status)

        self.push = push  # type: ignore[method-assign]
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self.push = original  # type: ignore[method-assign]

    @syntax("BDAT size [LAST]")
    async def smtp_BDAT(self, arg: str) -> None:
        words = arg.split() if arg else []
        if not words or not words[0].isdigit() or len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        size = int(words[0])
        data = await self._reader.readexactly(size)
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        self._bdat += data
        if len(words) == 2:
            self.envelope.original_content = bytes(self._bdat)
            self.envelope.content = bytes(self._bdat)
            self.envelope.chunked = True  # type: ignore[attr-defined]
            self._bdat = bytearray()
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(status)
        else:
            await self.push(f"250 2.0.0 {size} octets received")


class _Controller(Controller):
    def __init__(self, handler: Any, chunking: bool = False, **kwargs: Any) -> None:
        self._chunking = chunking
        super().__init__(handler, **kwargs)

    def factory(self) -> AioSMTP:
        cls = ChunkingSMTP if self._chunking else AioSMTP
        return cls(self.handler, **self.SMTP_kwargs)


@contextlib.contextmanager
def aiosmtpd_server(
    handler: Capture | None = None, *, chunking: bool = False, **kwargs: Any
) -> Iterator[tuple[Capture, int]]:
    """Run aiosmtpd in a thread on a free port; yields (handler, port)."""
    handler = handler or Capture()
    kwargs.setdefault("authenticator", handler.authenticate)
    kwargs.setdefault("auth_require_tls", False)
    port = free_port()
    controller = _Controller(handler, chunking=chunking, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


SMTP_SINK = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/local/sbin")
SMTP_SOURCE = shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin:/usr/local/sbin")


def require_smtp_sink() -> str:
    if SMTP_SINK is None:
        import os

        if os.environ.get("SMTPKIT_TEST_STRICT"):
            pytest.fail("smtp-sink is not installed (Debian package postfix); .ci/run installs it")
        pytest.skip("smtp-sink not installed (Debian package postfix)")
    return SMTP_SINK


class SmtpSink:
    """Postfix smtp-sink on a free port, with its fault-injection options."""

    def __init__(self, *options: str) -> None:
        binary = require_smtp_sink()
        self.port = free_port()
        import os

        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [binary, *user, *options, f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Conn:
    """The server side of one scripted connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.received.append(line + b"\n")
        return line.rstrip(b"\r")

    def until(self, marker: bytes, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buf += chunk
        data, self.buf = self.buf.split(marker, 1)
        self.received.append(data + marker)
        return data

    def rest(self, timeout: float = 0.5) -> bytes:
        """Whatever else the client sends until it closes or goes quiet."""
        self.sock.settimeout(timeout)
        out = self.buf
        self.buf = b""
        with contextlib.suppress(OSError):
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        self.received.append(out)
        return out

    def ehlo(self, *extensions: str) -> None:
        """Answer one EHLO with these extensions."""
        self.line()
        lines = ["scripted", *extensions]
        text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.send(text.encode())


class Scripted:
    """A one-connection-at-a-time raw server running ``script(conn)`` per connection."""

    def __init__(self, script: Callable[[Conn], None], connections: int = 1) -> None:
        self.script = script
        self.errors: list[BaseException] = []
        self.conns: list[Conn] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        for _ in range(connections):
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conn = Conn(sock)
            self.conns.append(conn)
            try:
                self.script(conn)
            except (ConnectionError, OSError):
                pass
            except BaseException as exc:  # surfaced by the test
                self.errors.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    sock.close()

    @property
    def wire(self) -> bytes:
        """Everything the client sent, across connections."""
        return b"".join(b"".join(c.received) for c in self.conns)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TLSFiles:
    server: ssl.SSLContext
    client: ssl.SSLContext
    ca: Any


def tls_contexts(*names: str, **cert_kwargs: Any) -> TLSFiles:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*(names or ("localhost", "127.0.0.1")), **cert_kwargs)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLSFiles(server, client, ca)
