"""``SMTP``, ``SMTP_SSL`` and ``LMTP``: smtplib's API over blocking sockets, done safely.

Drop-in: the constructors, methods, attributes, return values and exceptions of
:mod:`smtplib` (3.11-3.13), so ``import smtpkit as smtplib`` works. Differences are all
on the side of safety or speed, and each has an explicit opt-out:

* certificates and host names are verified by ``starttls()`` and ``SMTP_SSL``
  (``validate_certs=False`` or your own ``context`` to opt out);
* ``login()`` refuses to send credentials in clear text to a non-loopback peer
  (``allow_insecure_auth=True`` to opt out);
* ``timeout`` bounds each whole command/reply exchange, not each socket read. With no
  timeout (smtplib's default) each exchange still has RFC 5321's deadline (5 minutes
  per command, 10 for the end-of-data reply), so a silent server cannot hang the
  client forever; ``final_timeout`` sets the end-of-data wait on its own (giving up
  early there risks a duplicate delivery: the outcome is reported as *unknown*);
* control characters in any command argument raise ``ValueError`` before a byte is
  written; envelope addresses must be exactly one valid mailbox;
* a hostile, garbled or unsolicited reply closes the connection with a typed error;
  no later command is ever paired with the wrong reply;
* ``sendmail`` pipelines (PIPELINING), uses BDAT (CHUNKING), checks SIZE, adds
  SMTPUTF8/8BITMIME when the message needs them, streams files, and returns a
  :class:`~smtpkit.protocol.SendResult` (smtplib's refused dict plus every outcome);
* debug output goes through :mod:`logging` (``smtpkit.client``) and ``set_debuglevel``,
  with every AUTH secret redacted.

This module only moves bytes; the protocol itself is in :mod:`smtpkit.protocol`.
"""

from __future__ import annotations

import copy
import datetime
import email.generator
import email.message
import io
import ipaddress
import logging
import os
import select
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from time import perf_counter
from typing import Any

from . import auth as sasl
from .address import check_no_controls, envelope_address, header_addresses
from .errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPInsecureAuthError,
    SMTPNotAttempted,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPUnknownOutcome,
)
from .esmtp import OLDSTYLE_AUTH, Capabilities, parse_ehlo
from .protocol import (
    COMMAND,
    CRLF,
    FINAL,
    GREETING,
    RFC_TIMEOUTS,
    Body,
    Exchange,
    Outgoing,
    SendResult,
    Session,
    _abandon,
    _Close,
    _envelope_plan,
    _no_options,
    _plain_envelope,
    _with_result,
    auth_operation,
    batch,
    checked_envelope,
    command_line,
    fill_not_attempted,
    outgoing_items,
    raise_read_failure,
    transaction,
    transaction_rest,
)
from .reply import Reply

__all__ = [
    "LMTP",
    "LMTP_PORT",
    "OLDSTYLE_AUTH",
    "SMTP",
    "SMTP_PORT",
    "SMTP_SSL",
    "SMTP_SSL_PORT",
    "bCRLF",
    "quoteaddr",
    "quotedata",
]

log = logging.getLogger("smtpkit.client")

SMTP_PORT = 25
SMTP_SSL_PORT = 465
LMTP_PORT = 2003
bCRLF = CRLF
_MAXLINE = 8192
_MAXCHALLENGE = 5
_DEFAULT = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
_RECV = 65536
_MISSING = object()
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
# Plain (non-TLS) sockets on POSIX run in blocking mode and wait with poll(): a socket
# with a timeout would poll() again inside every send() and recv() (two syscalls each).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_POLL = _DONTWAIT != 0 and hasattr(select, "poll")
_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)


_POLL_MAX_MS = 2**31 - 1


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


DEFAULT_SPIN = 0.001 if _cpus() > 1 else 0.0
"""Default of ``SMTP(spin=...)``: seconds to poll for a reply without sleeping.

A thread that sleeps in poll() for a reply and is woken when it arrives pays the
operating system's wake-up cost (in a virtual machine that can be most of a loopback round
trip); a short busy-wait avoids it when the server answers quickly: a local relay, a
capture server, a server on the LAN. It is adaptive (see ``SMTP.spin``), so a distant
server costs no busy-waiting, and it is 0 on a machine with a single CPU, where the server
might need the very CPU the client would spin on.
"""


IN_PROCESS_PORTS: set[int] = set()
"""Loopback ports served from this process (smtpkit's capture server adds its own). A
client never busy-waits for these: the thread that has to answer needs the GIL that a
spinning client would keep taking (measured: no faster, 40% more CPU)."""


def _poll_ms(remaining: float | None) -> int | None:
    """poll()'s timeout for ``remaining`` seconds (rounded up; None waits forever)."""
    # poll() takes an int of milliseconds: a longer wait is cut short and the caller's loop
    # checks its deadline again (a timeout of a month must not raise OverflowError)
    return None if remaining is None else min(max(int(remaining * 1000.0) + 1, 0), _POLL_MAX_MS)


def quoteaddr(addrstring: str) -> str:
    """smtplib's ``quoteaddr``: the address in angle brackets (checked strictly here)."""
    return f"<{envelope_address(addrstring)}>"


def quotedata(data: str) -> str:
    """smtplib's ``quotedata``: CRLF line endings and doubled leading dots, for ``str``."""
    import re

    return re.sub(r"(?m)^\.", "..", re.sub(r"(?:\r\n|\n|\r(?!\n))", "\r\n", data))


def _peer_port(sock: socket.socket) -> int:
    try:
        return int(sock.getpeername()[1])
    except (OSError, IndexError, TypeError, ValueError):
        return 0


def _is_loopback(sock: socket.socket) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    try:
        host = sock.getpeername()[0]
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except (OSError, ValueError):
        return False


class SMTP:
    """An SMTP client session, API-compatible with :class:`smtplib.SMTP`.

    Extra keyword-only arguments: ``context`` (an :class:`ssl.SSLContext` for
    ``starttls``), ``server_hostname`` (the name to verify, when ``host`` is an IP or an
    alias), ``validate_certs`` (``False`` disables certificate checks: only for test
    servers),
    ``allow_insecure_auth`` (allow ``login()`` without TLS), ``final_timeout`` (seconds
    to wait for the end-of-data reply), ``chunking`` (``False`` never uses BDAT) and
    ``spin`` (see below).

    ``spin`` (default :data:`DEFAULT_SPIN`, 1 ms; 0 turns it off): on a plain connection,
    how long to poll for a reply without sleeping before the thread sleeps in poll().
    It is used only while replies come quickly: the client keeps a moving average of how
    long its waits for replies took, and busy-waits only while that average is within
    ``spin``, so a server that takes longer (a distant one) costs no CPU this way; nor
    does a capture server running in this process (see :data:`IN_PROCESS_PORTS`). A
    reply that arrives during the busy-wait is read at once instead of after the
    operating system wakes the thread; on the machine of ``bench/client.py`` that halves
    the time of a ``sendmail`` to a local server. The cost is up to ``spin`` seconds of
    CPU per wait. TLS connections always sleep.
    """

    debuglevel = 0
    sock: socket.socket | None = None
    file: Any = None
    helo_resp: bytes | None = None
    ehlo_msg = "ehlo"
    ehlo_resp: bytes | None = None
    does_esmtp = False
    default_port = SMTP_PORT

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        timeout: float | None = _DEFAULT,
        source_address: tuple[str, int] | None = None,
        *,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        validate_certs: bool = True,
        allow_insecure_auth: bool = False,
        final_timeout: float | None = None,
        chunking: bool = True,
        spin: float | None = None,
    ) -> None:
        self._host = host
        self.timeout = timeout
        self.esmtp_features: dict[str, str] = {}
        self.command_encoding = "ascii"
        self.source_address = source_address
        self._auth_challenge_count = 0
        self.context = context
        self.server_hostname = server_hostname
        self.validate_certs = validate_certs
        self.allow_insecure_auth = allow_insecure_auth
        self.final_timeout = final_timeout
        self.chunking = chunking
        self.spin = DEFAULT_SPIN if spin is None else spin
        self._wait_avg = 0.0  # moving average of the waits for replies, in seconds
        self._spin_ok = True  # False for a server in this process (IN_PROCESS_PORTS)
        self.user: str | None = None
        self.password: sasl.Secret | None = None
        self.last_result: SendResult | None = None
        self._session = Session()
        self._secret_next = False  # the last reply read by getreply() was a 334 challenge
        self._closed_by: BaseException | None = None
        self._timeouts: dict[tuple[str, object, object], float | None] = {}
        self._sock_timeout: float | None = -1.0  # what the socket is set to (-1: unknown)
        self._polled: tuple[socket.socket, Any, Any] | None = None  # (sock, POLLIN poller, POLLOUT poller)
        self._tcp = False
        self._caps: tuple[dict[str, str], Capabilities] | None = None
        self._port = 0
        if host:
            (code, msg) = self.connect(host, port)
            if code != 220:
                self.close()
                raise SMTPConnectError(code, msg)
        if local_hostname is not None:
            self.local_hostname = local_hostname
        else:
            fqdn = socket.getfqdn()
            if "." in fqdn:
                self.local_hostname = fqdn
            else:
                addr = "127.0.0.1"
                try:
                    if self.sock is not None:
                        addr = socket.gethostbyname(socket.gethostname())
                except socket.gaierror:
                    pass
                self.local_hostname = f"[{addr}]"

    # -- plumbing ---------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "connected" if self.sock is not None else "not connected"
        where = f"{self._host}:{self._port}" if self._port else (self._host or "-")
        tls = " TLS" if isinstance(self.sock, ssl.SSLSocket) else ""
        user = f" user={self.user!r}" if self.user else ""
        return f"<{type(self).__name__} {where} {state}{tls}{user}>"

    def __enter__(self) -> SMTP:
        return self

    def __exit__(self, *args: object) -> None:
        try:
            code, message = self.docmd("QUIT")
            if code != 221:
                raise SMTPResponseException(code, message)
        except SMTPServerDisconnected:
            pass
        finally:
            self.close()

    def set_debuglevel(self, debuglevel: int) -> None:
        """1: print commands and replies to stderr; 2: with timestamps (smtplib's levels)."""
        self.debuglevel = debuglevel

    def _print_debug(self, *args: object) -> None:
        if self.debuglevel > 1:
            print(datetime.datetime.now().time(), *args, file=sys.stderr)
        else:
            print(*args, file=sys.stderr)

    def _trace(self, direction: str, text: str) -> None:
        if self.debuglevel > 0:
            self._print_debug(direction, text)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", direction, text)

    def _timeout_for(self, phase: str) -> float | None:
        key = (phase, self.timeout, self.final_timeout)
        cached = self._timeouts.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        value = self._compute_timeout(phase)
        if len(self._timeouts) > 32:
            self._timeouts.clear()
        self._timeouts[key] = value
        return value

    def _compute_timeout(self, phase: str) -> float | None:
        timeout = self.timeout
        if phase == FINAL and self.final_timeout is not None:
            return self.final_timeout
        if timeout is _DEFAULT:
            timeout = socket.getdefaulttimeout()
            if timeout is None:
                return RFC_TIMEOUTS.get(phase, RFC_TIMEOUTS[COMMAND])
        return timeout  # type: ignore[return-value]

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        if self.debuglevel > 0:
            self._print_debug("connect: to", (host, port), self.source_address)
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _closed(self, error: SMTPServerDisconnected) -> SMTPServerDisconnected:
        self.close()
        return error

    def _set_timeout(self, sock: socket.socket, timeout: float | None) -> None:
        if timeout != self._sock_timeout:  # settimeout costs a syscall: skip it when unchanged
            sock.settimeout(timeout)
            self._sock_timeout = timeout

    def _pollers(self, sock: socket.socket) -> tuple[socket.socket, Any, Any] | None:
        """poll() objects for a plain socket, which then stays in blocking mode; None for TLS."""
        polled = self._polled
        if polled is not None and polled[0] is sock:
            return polled
        if not _POLL or isinstance(sock, ssl.SSLSocket):
            return None
        readable, writable = select.poll(), select.poll()
        readable.register(sock, _POLLIN)
        writable.register(sock, _POLLOUT)
        self._polled = polled = (sock, readable, writable)
        return polled

    def _write(self, data: bytes, phase: str) -> None:
        sock = self.sock
        if sock is None:
            raise self._not_connected()
        try:
            polled = self._polled
            if polled is None or polled[0] is not sock:
                polled = self._pollers(sock)
            if polled is None:
                self._set_timeout(sock, self._timeout_for(phase))
                sock.sendall(data)
                return
            if self._sock_timeout is not None:
                self._set_timeout(sock, None)
            try:
                sent = sock.send(data, _DONTWAIT)  # the common case: it all fits in the socket buffer
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                self._write_rest(sock, polled[2], data, sent, self._timeout_for(phase))
        except TimeoutError as exc:
            raise self._closed(SMTPTimeoutError(f"timed out sending to the server: {exc}")) from exc
        except OSError as exc:
            raise self._closed(SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}")) from exc

    @staticmethod
    def _write_rest(sock: socket.socket, writable: Any, data: bytes, sent: int, timeout: float | None) -> None:
        """The rest of a write the socket buffer could not take at once, within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with memoryview(data) as view:
            while sent < len(view):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("timed out")
                if not writable.poll(_poll_ms(remaining)):
                    continue  # the loop checks the deadline
                try:
                    sent += sock.send(view[sent:], _DONTWAIT)
                except BlockingIOError:
                    pass

    def _check_idle(self) -> None:
        """Before a new command: anything the server sent unasked is an error (A9)."""
        sock = self.sock
        assert sock is not None
        session = self._session
        try:
            session.check_clean("while idle")
            polled = self._pollers(sock)
            if polled is not None:
                ready = bool(polled[1].poll(0))
            else:
                ready = bool(
                    (isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select([sock], [], [], 0)[0]
                )
            if ready:
                try:
                    if polled is not None:
                        data: bytes | None = sock.recv(_RECV, _DONTWAIT)
                    else:
                        self._set_timeout(sock, 0.0)
                        data = sock.recv(_RECV)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None  # TLS housekeeping (a session ticket): no application data
                if data == b"":
                    raise SMTPNotAttempted("Connection closed by the server (nothing was sent)")
                if data:
                    session.receive(data)
                    session.check_clean("while idle")
        except (SMTPServerDisconnected, OSError) as exc:
            self.close()
            if isinstance(exc, SMTPServerDisconnected):
                raise
            raise SMTPNotAttempted(f"Connection unexpectedly closed (nothing was sent): {exc}") from exc

    def _read(self, count: int, phase: str) -> list[Reply]:
        """``count`` replies, within the phase's deadline for the whole lot.

        When a read brings only part of them, the client acknowledges at once (TCP_QUICKACK):
        a server that writes pipelined replies one by one, with Nagle's algorithm on, holds
        each reply until the previous one is acknowledged, and a delayed ACK would cost
        about 40 ms per reply. When all the replies come at once (the usual case) no extra
        system call is made: an immediate ACK would only wake the server for nothing.
        """
        session = self._session
        got = session.take(count) if session.queue else []
        if len(got) == count:
            return got
        sock = self.sock
        if sock is None:
            raise self._not_connected()
        timeout = self._timeout_for(phase)
        deadline = None if timeout is None else time.monotonic() + timeout
        final = phase == FINAL
        quickack = self._tcp and _QUICKACK is not None
        debug = self.debuglevel > 0 or log.isEnabledFor(logging.DEBUG)
        polled = self._polled
        if polled is None or polled[0] is not sock:
            polled = self._pollers(sock)
        try:
            while len(got) < count:
                if polled is not None:  # blocking socket: wait with poll(), then recv() returns at once
                    if self._sock_timeout is not None:
                        self._set_timeout(sock, None)
                    poll = polled[1].poll
                    started = perf_counter()
                    spin = self.spin
                    if spin > 0.0 and self._wait_avg <= spin and self._spin_ok:  # a quick server: poll first
                        if deadline is not None:
                            spin = min(spin, deadline - time.monotonic())
                        until = started + spin
                        while not poll(0) and perf_counter() < until:
                            pass
                    if deadline is None:
                        poll()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not poll(_poll_ms(remaining)):
                            if deadline - time.monotonic() <= 0:
                                raise TimeoutError("timed out")
                            continue
                    self._wait_avg += (perf_counter() - started - self._wait_avg) * 0.25
                    try:
                        data = sock.recv(_RECV, _DONTWAIT)
                    except BlockingIOError:  # a spurious wake-up
                        continue
                else:
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise TimeoutError("timed out")
                        current = self._sock_timeout
                        if current is None or current <= 0 or current > remaining + 0.05:
                            self._set_timeout(sock, remaining)  # never wait past the deadline
                    elif self._sock_timeout is not None:
                        self._set_timeout(sock, None)
                    data = sock.recv(_RECV)
                if not data:
                    self.close()
                    if got and got[-1].code == 421:
                        return got  # the server said goodbye; the caller sees the 421
                    raise_read_failure(None, final=final)
                if debug:
                    self._trace("reply:", repr(data))
                session.receive(data)
                got.extend(session.take(count - len(got)))
                if quickack and len(got) < count:  # the rest may wait for our ACK (see above)
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        except SMTPProtocolError as exc:
            got.extend(session.take(count - len(got)))
            self.close()  # nothing after the fault can be trusted
            self._closed_by = exc
            if len(got) == count:
                return got  # what was asked for arrived intact before the garbage
            raise_read_failure(exc, final=final)
        except SMTPServerDisconnected:  # already the error to raise (an end of file, above)
            self.close()
            raise
        except OSError as exc:  # a timeout, a reset...
            self.close()
            raise_read_failure(exc, final=final, timeout=timeout)
        return got

    def _not_connected(self) -> SMTPServerDisconnected:
        if self._closed_by is not None:
            return SMTPProtocolError(f"the connection was closed after a protocol error: {self._closed_by}", "broken")
        return SMTPServerDisconnected("please run connect() first")

    def _exchange(self, ex: Exchange) -> list[Reply]:
        self._send(ex)
        return self._read(ex.replies, ex.phase)

    def _quiet(self, sock: socket.socket, session: Session) -> bool:
        """The common case of the idle check, in one poll(0): a plain socket, nothing
        received that no command asked for. False sends the caller to ``_check_idle``."""
        polled = self._polled
        return (
            polled is not None
            and polled[0] is sock
            and not (session.queue or session.parser.pending)
            and not polled[1].poll(0)
        )

    def _send(self, ex: Exchange) -> None:
        """The writing half of an exchange (after the idle check); ``_read`` for its
        replies must follow."""
        sock = self.sock
        if sock is None:
            raise self._not_connected()
        session = self._session
        if session.outstanding == 0 and not self._quiet(sock, session):
            self._check_idle()
        debug = self.debuglevel > 0 or log.isEnabledFor(logging.DEBUG)
        if ex.data:
            if debug:
                self._trace("send:", ex.log if ex.log is not None else repr(ex.data))
            self._write(ex.data, COMMAND)
        if ex.stream is not None:
            streamed = 0
            try:
                for chunk in ex.stream:
                    self._write(chunk, phase="data_block")
                    streamed += len(chunk)
            except SMTPServerDisconnected:
                raise
            except Exception:
                self.close()  # part of the message is on the wire: the only safe end is a drop
                raise
            if debug:
                self._trace("send:", f"<{streamed} bytes of message data>")
        self._session.outstanding += ex.replies

    def _run(self, operation: Generator[Exchange | _Close, list[Reply], Any]) -> Any:
        """Drive a protocol operation: do its exchanges, feed back replies or errors."""
        value: list[Reply] | None = None
        error: BaseException | None = None
        while True:
            try:
                op = operation.throw(error) if error is not None else operation.send(value)  # type: ignore[arg-type]
            except StopIteration as stop:
                return stop.value
            error = None
            value = None
            if isinstance(op, _Close):
                self.close()
                continue
            try:
                value = self._exchange(op)
            except Exception as exc:
                error = exc

    def _command(self, line: bytes, phase: str = COMMAND, log_text: str | None = None) -> Reply:
        return self._run(_single(Exchange(line, 1, phase, log=log_text)))  # type: ignore[no-any-return]

    # -- smtplib's public API ---------------------------------------------------------

    def connect(self, host: str = "localhost", port: int = 0, source_address: tuple[str, int] | None = None) -> Reply:
        """Connect to ``host:port`` and read the greeting; returns ``(code, msg)``."""
        if source_address:
            self.source_address = source_address
        if not port and host.find(":") == host.rfind(":"):
            i = host.rfind(":")
            if i >= 0:
                host, portstr = host[:i], host[i + 1 :]
                try:
                    port = int(portstr)
                except ValueError:
                    raise OSError("nonnumeric port") from None
        if not port:
            port = self.default_port
        sys.audit("smtplib.connect", self, host, port)
        if self.sock is not None:
            self.close()
        self._host = host
        self._port = port
        self._session = Session()
        self._closed_by = None
        self._forget_capabilities()  # a new connection, maybe a new server: EHLO again
        self._wait_avg = 0.0
        try:
            self.sock = self._get_socket(host, port, self._timeout_for(GREETING))
            self._sock_timeout = -1.0
            self._tcp = self.sock.family in (socket.AF_INET, socket.AF_INET6)
            self._spin_ok = not (
                IN_PROCESS_PORTS and self._tcp and _peer_port(self.sock) in IN_PROCESS_PORTS and _is_loopback(self.sock)
            )
        except SMTPServerDisconnected:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise _tls_error(SMTPCertificateError, exc, f"certificate verification failed for {host}") from exc
        except ssl.SSLError as exc:
            raise _tls_error(SMTPTLSError, exc, f"TLS handshake with {host}:{port} failed") from exc
        except TimeoutError as exc:
            raise SMTPTimeoutError(f"timed out connecting to {host}:{port}") from exc
        self.file = None
        self._session.expect(1)
        reply = self._read(1, GREETING)[0]
        if self.debuglevel > 0:
            self._print_debug("connect:", repr(reply.message))
        return reply

    def send(self, s: str | bytes) -> None:
        """Send raw data (smtplib's ``send``); prefer the command methods."""
        if self.sock is None:
            raise SMTPServerDisconnected("please run connect() first")
        if isinstance(s, str):
            s = s.encode(self.command_encoding)
        sys.audit("smtplib.send", self, s)
        self._trace("send:", "[redacted SASL response]" if self._secret_next else repr(s))
        self._secret_next = False
        self._write(s, COMMAND)

    def putcmd(self, cmd: str, args: str = "") -> None:
        """Send one command line; control characters raise ``ValueError`` first."""
        line = command_line(cmd, args, utf8=self.command_encoding != "ascii")
        if self.sock is None:
            raise self._not_connected()
        if self._session.outstanding == 0:
            self._check_idle()
        text = f"{cmd} {args}" if args else cmd
        if cmd.upper() == "AUTH":
            self._trace("send:", f"{cmd.upper()} [redacted]")
        elif self._secret_next:  # an answer to a 334 challenge: a credential in hand-made AUTH
            self._trace("send:", "[redacted SASL response]")
        else:
            self._trace("send:", repr(text + "\r\n"))
        self._secret_next = False
        self._write(line, COMMAND)
        self._session.expect(1)

    def getreply(self) -> Reply:
        """Read one reply: ``(code, message)``."""
        if self._session.outstanding == 0:
            self._session.expect(1)
        reply = self._read(1, COMMAND)[0]
        self._secret_next = reply.code == 334
        return reply

    def docmd(self, cmd: str, args: str = "") -> Reply:
        """Send a command and return its reply."""
        self.putcmd(cmd, args)
        return self.getreply()

    def helo(self, name: str = "") -> Reply:
        """HELO; sets ``helo_resp``."""
        reply = self._command(command_line("helo", check_no_controls(name or self.local_hostname, "HELO name")))
        self.helo_resp = reply.message
        return reply

    def ehlo(self, name: str = "") -> Reply:
        """EHLO (LHLO for LMTP); sets ``ehlo_resp``, ``does_esmtp`` and ``esmtp_features``."""
        line = command_line(self.ehlo_msg, check_no_controls(name or self.local_hostname, "EHLO name"))
        self.esmtp_features = {}
        reply = self._command(line).without_enhanced()
        self.ehlo_resp = reply.message
        if reply.code != 250:
            return reply
        self.does_esmtp = True
        self.esmtp_features = parse_ehlo(reply.message)
        return reply

    def has_extn(self, opt: str) -> bool:
        """Does the server advertise this extension?"""
        return opt.lower() in self.esmtp_features

    @property
    def capabilities(self) -> Capabilities:
        """A typed view of ``esmtp_features`` (SIZE, PIPELINING, AUTH mechanisms, ...)."""
        features = self.esmtp_features
        cached = self._caps
        if cached is None or cached[0] is not features:
            cached = self._caps = (features, Capabilities(features))
        return cached[1]

    def help(self, args: str = "") -> bytes:
        """HELP; returns the text."""
        return self.docmd("help", args)[1]  # type: ignore[no-any-return]

    def rset(self) -> Reply:
        """RSET."""
        self.command_encoding = "ascii"
        return self.docmd("rset")

    def _rset(self) -> None:
        try:
            self.rset()
        except SMTPServerDisconnected:
            pass

    def noop(self) -> Reply:
        """NOOP."""
        return self.docmd("noop")

    def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        """MAIL FROM; ``options`` are ESMTP parameters (``SMTPUTF8`` switches to UTF-8)."""
        opts = list(_option_list(options))
        if any(o.lower() == "smtputf8" for o in opts):
            if self.has_extn("smtputf8"):
                self.command_encoding = "utf-8"
            else:
                raise SMTPNotSupportedError("SMTPUTF8 not supported by server")
        line = command_line(
            "mail",
            f"FROM:{quoteaddr(sender)}" + "".join(" " + o for o in opts),
            utf8=self.command_encoding != "ascii",
        )
        return self._command(line)

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> Reply:
        """RCPT TO."""
        opts = _option_list(options)
        line = command_line(
            "rcpt",
            f"TO:{quoteaddr(recip)}" + "".join(" " + o for o in opts),
            utf8=self.command_encoding != "ascii",
        )
        return self._command(line)

    def data(self, msg: str | bytes) -> Reply:
        """DATA, then the message (dot-stuffed, CRLF, terminated); returns the final reply."""
        return self._data(msg, 1)[0]

    def _data(self, msg: str | bytes, finals: int) -> list[Reply]:
        """DATA, then the message; the ``finals`` replies that end it (LMTP: one each)."""
        body = Body(msg)
        body.encode()
        reply = self._command(b"DATA\r\n", "data_init")
        if reply.code != 354:
            raise SMTPDataError(reply.code, reply.message)
        return self._run(_all(Exchange(b"", finals, FINAL, stream=body.data_stream(False))))  # type: ignore[no-any-return]

    def verify(self, address: str) -> Reply:
        """VRFY."""
        return self._command(command_line("vrfy", _addr_only(check_no_controls(address, "VRFY argument"))))

    vrfy = verify

    def expn(self, address: str) -> Reply:
        """EXPN."""
        return self._command(command_line("expn", _addr_only(check_no_controls(address, "EXPN argument"))))

    def _greeting_owed(self) -> bool:
        """Whether the next transaction starts with an EHLO (none done on this connection)."""
        return self.helo_resp is None and self.ehlo_resp is None

    def ehlo_or_helo_if_needed(self) -> None:
        """EHLO (or HELO when EHLO is refused) unless already done on this connection."""
        if self._greeting_owed():
            if not (200 <= self.ehlo()[0] <= 299):
                (code, resp) = self.helo()
                if not (200 <= code <= 299):
                    raise SMTPHeloError(code, resp)

    # -- AUTH ---------------------------------------------------------------------------

    def _check_auth_transport(self) -> None:
        sock = self.sock
        if sock is None:
            raise SMTPServerDisconnected("please run connect() first")
        if isinstance(sock, ssl.SSLSocket) or self.allow_insecure_auth or _is_loopback(sock):
            return
        raise insecure_auth_error(self._host, self._port, "SMTP_SSL")

    def auth(
        self,
        mechanism: str,
        authobject: Callable[..., str | bytes | None],
        *,
        initial_response_ok: bool = True,
    ) -> Reply:
        """AUTH with a mechanism and smtplib-style ``authobject(challenge=None) -> str``."""
        self._check_auth_transport()

        def respond(challenge: bytes | None) -> bytes | None:
            answer = authobject() if challenge is None else authobject(challenge)
            if answer is None:
                return None
            return answer.encode("utf-8") if isinstance(answer, str) else answer

        def count(rounds: int) -> None:
            self._auth_challenge_count = rounds

        return self._run(  # type: ignore[no-any-return]
            auth_operation(
                mechanism,
                respond,
                initial_response_ok=initial_response_ok,
                max_rounds=_MAXCHALLENGE,
                on_round=count,
            )
        )

    def auth_cram_md5(self, challenge: bytes | None = None) -> str | None:
        """smtplib's CRAM-MD5 authobject (uses ``self.user``/``self.password``)."""
        if challenge is None:
            return None
        assert self.user is not None and self.password is not None
        return sasl.cram_md5(self.user, self.password)(challenge).decode()

    def auth_plain(self, challenge: bytes | None = None) -> str:
        """smtplib's PLAIN authobject."""
        return f"\0{self.user}\0{self.password}"

    def auth_login(self, challenge: bytes | None = None) -> str:
        """smtplib's LOGIN authobject."""
        assert self.user is not None and self.password is not None
        if challenge is None or self._auth_challenge_count < 2:
            return self.user
        return str(self.password)

    def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> Reply:
        """Log in with the best password mechanism both sides support (smtplib's order)."""
        user = sasl.check_credential(user, "user name")  # before anything is sent
        secret = sasl.Secret(sasl.check_credential(password, "password"))
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        self._check_auth_transport()
        self.user = user
        self.password = secret
        advertised = self.capabilities.auth
        authlist = [m for m in sasl.PREFERRED if m in advertised]
        if not authlist:
            raise SMTPException("No suitable authentication method found.")
        last_exception: SMTPAuthenticationError | None = None
        for mechanism in authlist:
            method = getattr(self, "auth_" + mechanism.lower().replace("-", "_"))
            try:
                return self.auth(mechanism, method, initial_response_ok=initial_response_ok)
            except SMTPAuthenticationError as exc:
                last_exception = exc
        assert last_exception is not None
        raise last_exception

    def login_oauth2(
        self,
        user: str,
        token: str | Callable[[], str],
        *,
        mechanism: str | None = None,
    ) -> Reply:
        """Log in with an OAuth 2 access token (or a callable returning a fresh one).

        Uses OAUTHBEARER (RFC 7628) or XOAUTH2, whichever the server offers (XOAUTH2
        first, as Gmail and Microsoft 365 expect), unless ``mechanism`` is given.
        """
        user = sasl.check_credential(user, "user name")  # before anything is sent
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        self._check_auth_transport()
        choice, respond = sasl.oauth_responder(
            user, token, self.capabilities.auth, mechanism, self.server_hostname or self._host, self._port
        )
        self.user = user
        return self._run(auth_operation(choice, respond, max_rounds=_MAXCHALLENGE))  # type: ignore[no-any-return]

    # -- TLS ----------------------------------------------------------------------------

    def _tls_context(self, keyfile: str | None = None, certfile: str | None = None) -> ssl.SSLContext:
        return tls_context(self.context, self.validate_certs, self._host, keyfile, certfile)

    def _handshake(self, sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
        name = self.server_hostname or self._host or None
        try:
            sock.settimeout(self._timeout_for(COMMAND))
            return context.wrap_socket(sock, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise _tls_error(SMTPCertificateError, exc, f"certificate verification failed for {name}") from exc
        except ssl.SSLError as exc:
            sock.close()
            raise _tls_error(SMTPTLSError, exc, f"TLS handshake with {name} failed") from exc
        except TimeoutError as exc:
            sock.close()
            raise SMTPTimeoutError(f"timed out in the TLS handshake with {name}") from exc
        except OSError as exc:
            sock.close()
            raise SMTPServerDisconnected(f"connection lost during the TLS handshake: {exc}") from exc

    def starttls(
        self,
        keyfile: str | None = None,
        certfile: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> Reply:
        """STARTTLS, verifying the certificate and host name by default.

        Anything the server sent after its 220 and before the handshake is treated as an
        attack (response injection) and the connection is closed; the capabilities
        learned before TLS are forgotten, and the next command re-sends EHLO.
        """
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("starttls"):
            raise SMTPNotSupportedError("STARTTLS extension not supported by server.")
        reply = self.docmd("STARTTLS")
        if self.sock is None:  # the 220 came with more behind it: injection (security.md B4)
            raise self._not_connected()
        if reply.code != 220:
            raise SMTPResponseException(reply.code, reply.message)
        if context is not None and (keyfile is not None or certfile is not None):
            raise ValueError("context and keyfile/certfile are mutually exclusive")
        tls_context = context if context is not None else self._tls_context(keyfile, certfile)
        assert self.sock is not None
        try:
            self._session.check_clean("after STARTTLS, before the TLS handshake")
            if select.select([self.sock], [], [], 0)[0]:
                try:
                    closed = self.sock.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    closed = True
                except ValueError:  # an SSLSocket (STARTTLS inside TLS) cannot peek: data
                    closed = False
                if closed:  # readable at end of file: a hang-up, not an injection
                    raise SMTPServerDisconnected("the server closed the connection after its 220 to STARTTLS")
                raise SMTPProtocolError(
                    "the server sent data after STARTTLS before the TLS handshake (possible injection)",
                    "unsolicited",
                )
        except SMTPServerDisconnected:  # SMTPProtocolError too
            self.close()
            raise
        plain = self.sock
        self.sock = None
        self.sock = self._handshake(plain, tls_context)
        self._sock_timeout = -1.0
        self._session.restart()
        self.file = None
        self._forget_capabilities()
        return reply

    # -- sending ------------------------------------------------------------------------

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes | Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] = (),
    ) -> SendResult:
        """Send one message; returns smtplib's dict of refused recipients (a SendResult).

        ``msg`` may also be a binary file or an iterable of bytes chunks, streamed without
        holding the whole message in memory. Raises smtplib's exceptions in smtplib's cases.
        """
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        if self._greeting_owed():  # a bad address or option fails before the EHLO is sent
            checked_envelope(from_addr, recipients, mail_options, rcpt_options)
        self.ehlo_or_helo_if_needed()
        body = msg if isinstance(msg, Body) else Body(msg)
        try:
            result: SendResult | None = None
            if _no_options(mail_options) and _no_options(rcpt_options):
                result = self._sendmail_plain(from_addr, recipients, body)
            if result is None:
                result = self._run(
                    transaction(
                        from_addr,
                        recipients,
                        body,
                        caps=self.capabilities,
                        esmtp=self.does_esmtp,
                        mail_options=mail_options,
                        rcpt_options=rcpt_options,
                        lmtp=isinstance(self, LMTP),
                        chunking=self.chunking,
                    )
                )
        except SMTPException as exc:
            self.last_result = getattr(exc, "result", None)
            raise
        self.last_result = result
        return result

    def _sendmail_plain(self, from_addr: str, recipients: list[str], body: Body) -> SendResult | None:
        """``sendmail``'s common case without the generator machinery; ``None`` (before
        anything is sent) when it does not apply.

        The common case: ESMTP with PIPELINING and no BDAT, no options, ASCII addresses, the
        message in memory. The exchanges are exactly :func:`~smtpkit.protocol.transaction`'s
        (MAIL, RCPT and DATA in one write, then the content and its terminator in one), with
        the same checks and deadlines; any reply but the expected ones continues in the
        transaction's own code (:func:`~smtpkit.protocol.transaction_rest`).
        """
        if not recipients:  # the general path refuses it as smtplib does (an empty DATA, then the error)
            return None
        caps = self.capabilities
        features = caps.features
        if (
            body.data is None
            or not self.does_esmtp
            or "pipelining" not in features
            or (self.chunking and "chunking" in features)
            or isinstance(self, LMTP)
        ):
            return None
        head = _plain_envelope(from_addr, recipients, body, _envelope_plan(caps))
        if head is None:
            return None
        n = len(recipients)
        # The server's wait is the critical path: each write goes out as soon as it can,
        # and the bookkeeping is done while the server works on it.
        self._send(Exchange(head + b"DATA\r\n", n + 2))
        result = SendResult(from_addr, recipients)
        result.size = body.size
        replies = self._read(n + 2, COMMAND)  # not the final reply: no unknown outcome
        ok = len(replies) == n + 2 and replies[0][0] == 250 and replies[-1][0] == 354
        if ok:
            for reply in replies[1:-1]:
                if reply[0] != 250 and reply[0] != 251:
                    ok = False
                    break
        if not ok:
            rest = transaction_rest(
                from_addr,
                recipients,
                body,
                result,
                replies,
                (),
                pipelining=True,
                use_bdat=False,
                lmtp=False,
                check_8bit="8bitmime" not in features,
            )
            return self._run(rest)  # type: ignore[no-any-return]
        # The content at once: the server waits for it, and a server that is kept waiting
        # longer wakes up slower (on a VM its CPU halts within microseconds). So the
        # common case skips the general _send (same idle check, same write, no stream).
        session, sock, data = self._session, self.sock, body.encoded
        if (
            data is not None
            and sock is not None
            and not (self.debuglevel > 0 or log.isEnabledFor(logging.DEBUG))
            and self._quiet(sock, session)
        ):
            self._write(data, "data_block")
            session.outstanding += 1
        else:
            self._send(Exchange(b"", 1, FINAL, stream=body.data_stream(False)))
        result.mail_reply = replies[0]
        rcpt_replies = result.rcpt_replies
        for rcpt, reply in zip(recipients, replies[1:-1], strict=True):
            rcpt_replies[rcpt] = reply
        try:
            final = self._read(1, FINAL)[0]
        except SMTPUnknownOutcome as exc:
            exc.result = result
            raise
        result.data_reply = final
        if final[0] != 250:
            self._run(_abandon(final))
            raise _with_result(SMTPDataError(final.code, final.message), result)
        return result

    def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> SendResult:
        """Send an :class:`email.message.Message` (smtplib's rules for envelope and Bcc)."""
        if self._greeting_owed():  # a bad header, address or option fails before the EHLO
            checked_envelope(*message_envelope(msg, from_addr, to_addrs), mail_options, rcpt_options)
        self.ehlo_or_helo_if_needed()
        from_addr, recipients, flat, options = prepare_message(
            msg, from_addr, to_addrs, mail_options, self.has_extn("smtputf8")
        )
        return self.sendmail(from_addr, recipients, flat, options, rcpt_options)

    def send_many(
        self,
        messages: Iterable[Outgoing | tuple[str, Sequence[str], Any]],
        *,
        on_result: Callable[[int, SendResult | BaseException], None] | None = None,
    ) -> list[SendResult | BaseException]:
        """Send many messages on this connection, one round trip per message when pipelining.

        Each message's content goes out with the next message's MAIL/RCPT/DATA (RFC 2920
        3.1), so 2 KB messages need one round trip each instead of two. Returns one entry
        per message, in order: its :class:`SendResult` or the exception it got (a refusal,
        :class:`SMTPUnknownOutcome`, or :class:`SMTPServerDisconnected` "not attempted"
        for messages never started because the connection failed). ``on_result`` is
        called as each outcome becomes known.
        """
        self.ehlo_or_helo_if_needed()
        items = outgoing_items(messages)
        results: list[SendResult | BaseException | None] = [None] * len(items)

        def record(index: int, outcome: SendResult | BaseException) -> None:
            results[index] = outcome
            if on_result is not None:
                on_result(index, outcome)

        caps = self.capabilities
        if self.does_esmtp and caps.pipelining and not (caps.chunking and self.chunking) and not isinstance(self, LMTP):
            self._run(batch(items, caps=caps, on_result=record))
        else:  # without PIPELINING, or with BDAT (already one round trip), or LMTP
            for index, item in enumerate(items):
                if self.sock is None:
                    break
                try:
                    body = item.body
                    record(
                        index, self.sendmail(item.sender, item.recipients, body, item.mail_options, item.rcpt_options)
                    )
                except (SMTPException, ValueError, TypeError) as exc:
                    record(index, exc)
        return fill_not_attempted(results)

    def close(self) -> None:
        """Close the connection (no QUIT)."""
        try:
            file = self.file
            self.file = None
            if file:
                file.close()
        finally:
            sock = self.sock
            self.sock = None
            if sock:
                sock.close()
            self._session = Session()
            self._sock_timeout = -1.0
            self._polled = None
            self.command_encoding = "ascii"
            self._secret_next = False

    def quit(self) -> Reply:
        """QUIT, then close."""
        res = self.docmd("quit")
        self._forget_capabilities()
        self.close()
        return res

    def _forget_capabilities(self) -> None:
        """Forget the EHLO/HELO answer: the next transaction greets the server again."""
        self.ehlo_resp = self.helo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False


class SMTP_SSL(SMTP):
    """SMTP over implicit TLS (port 465, RFC 8314), certificate verified by default."""

    default_port = SMTP_SSL_PORT

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        keyfile: str | None = None,
        certfile: str | None = None,
        timeout: float | None = _DEFAULT,
        source_address: tuple[str, int] | None = None,
        context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        if context is not None and (keyfile is not None or certfile is not None):
            raise ValueError("context and keyfile/certfile arguments are mutually exclusive")
        self.keyfile = keyfile  # smtplib 3.11's attributes
        self.certfile = certfile
        if context is None:  # as smtplib: self.context is the context in use, here a verifying one
            context = tls_context(None, kwargs.get("validate_certs", True), host or "this client", keyfile, certfile)
        SMTP.__init__(self, host, port, local_hostname, timeout, source_address, context=context, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        if self.debuglevel > 0:
            self._print_debug("connect:", (host, port))
        new_socket = socket.create_connection((host, port), timeout, self.source_address)
        new_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._handshake(new_socket, self._tls_context())


class LMTP(SMTP):
    """LMTP (RFC 2033): LHLO, Unix sockets, and one final reply per recipient."""

    ehlo_msg = "lhlo"

    def __init__(
        self,
        host: str = "",
        port: int = LMTP_PORT,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = _DEFAULT,
        **kwargs: Any,
    ) -> None:
        self._accepted: list[str] = []  # recipients accepted since MAIL, by mail()/rcpt()
        self.delivery: dict[str, Reply] = {}  # data(): each accepted recipient's final reply
        self._held: deque[Reply] = deque()  # data()'s replies after the first, for getreply()
        super().__init__(
            host,
            port,
            local_hostname=local_hostname,
            source_address=source_address,
            timeout=timeout,
            **kwargs,
        )

    def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        """MAIL FROM (starts counting the recipients :meth:`data` reads a reply for)."""
        self._accepted = []
        return super().mail(sender, options)

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> Reply:
        """RCPT TO (an accepted recipient gets its own final reply after DATA)."""
        reply = super().rcpt(recip, options)
        if reply.code in (250, 251):
            self._accepted.append(recip)
        return reply

    def rset(self) -> Reply:
        """RSET."""
        self._accepted = []
        return super().rset()

    def data(self, msg: str | bytes) -> Reply:
        """DATA, then the message; LMTP (RFC 2033 4.2) answers once per recipient accepted
        since :meth:`mail`, and all those replies are read now, so that none can be taken
        for a later command's. Returns the first recipient's reply, as smtplib's ``data``
        does; :attr:`delivery` maps each recipient to its reply, and, as with smtplib,
        ``getreply()`` returns the others in turn until the next command is sent."""
        accepted, self._accepted = self._accepted, []
        self.delivery = {}
        finals = self._data(msg, max(1, len(accepted)))  # its DATA command clears _held
        self.delivery = dict(zip(accepted, finals, strict=False))
        self._held.extend(finals[1:])
        return finals[0]

    def getreply(self) -> Reply:
        """Read one reply; after :meth:`data`, the next recipient's final reply."""
        if self._held:
            return self._held.popleft()
        return super().getreply()

    def _write(self, data: bytes, phase: str) -> None:
        self._held.clear()  # a new command: data()'s replies are no longer the next ones
        super()._write(data, phase)

    def connect(self, host: str = "localhost", port: int = 0, source_address: tuple[str, int] | None = None) -> Reply:
        """Connect over TCP, or to a Unix socket when ``host`` starts with ``/``."""
        if host[0] != "/":
            return super().connect(host, port, source_address=source_address)
        if self.timeout is not None and not self.timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        self._host = host
        self._port = 0
        self._session = Session()
        self._forget_capabilities()
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if self.timeout is not _DEFAULT:
                sock.settimeout(self.timeout)  # type: ignore[arg-type]
            self.file = None
            sock.connect(host)
        except OSError:
            if self.debuglevel > 0:
                self._print_debug("connect fail:", host)
            sock.close()
            raise
        self.sock = sock
        self._session.expect(1)
        reply = self._read(1, GREETING)[0]
        if self.debuglevel > 0:
            self._print_debug("connect:", reply.message)
        return reply


def tls_context(
    context: ssl.SSLContext | None,
    validate_certs: bool,
    host: str,
    keyfile: str | None = None,
    certfile: str | None = None,
) -> ssl.SSLContext:
    """The context for STARTTLS or implicit TLS: yours, or a verifying default (both drivers)."""
    if context is not None:
        chosen = context
    else:
        chosen = ssl.create_default_context()
        if not validate_certs:
            log.warning("TLS certificate verification is disabled for %s (validate_certs=False)", host)
            chosen.check_hostname = False
            chosen.verify_mode = ssl.CERT_NONE
    if keyfile is not None or certfile is not None:
        if context is not None:
            raise ValueError("context and keyfile/certfile are mutually exclusive")
        if certfile is None:
            raise ValueError("keyfile needs a certfile")
        chosen.load_cert_chain(certfile, keyfile)
    return chosen


def insecure_auth_error(host: str, port: int, tls_option: str) -> SMTPInsecureAuthError:
    return SMTPInsecureAuthError(
        f"refusing to send credentials over an unencrypted connection to {host}:{port}; "
        f"call starttls() first or use {tls_option} (pass allow_insecure_auth=True to override)"
    )


def message_envelope(
    msg: email.message.Message, from_addr: str | None, to_addrs: str | Sequence[str] | None
) -> tuple[str, list[str]]:
    """smtplib's ``send_message`` envelope: the given addresses, else those of the
    (Resent-) Sender/From and To/Cc/Bcc headers, parsed strictly (a header that smuggles a
    line break or holds a malformed address is refused: security.md C4)."""
    resent = msg.get_all("Resent-Date")
    if resent is None:
        header_prefix = ""
    elif len(resent) == 1:
        header_prefix = "Resent-"
    else:
        raise ValueError("message has more than one 'Resent-' header block")
    if from_addr is None:
        field = header_prefix + "Sender" if (header_prefix + "Sender") in msg else header_prefix + "From"
        found = header_addresses(msg.get_all(field) or [], field)
        if not found:
            raise ValueError(f"no sender address: the message has no usable {field} header")
        from_addr = found[0]
    if to_addrs is None:
        values: list[object] = []
        for name in ("To", "Bcc", "Cc"):
            values.extend(msg.get_all(header_prefix + name) or [])
        to_addrs = header_addresses(values, "To/Cc/Bcc")
    return from_addr, [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)


def prepare_message(
    msg: email.message.Message,
    from_addr: str | None,
    to_addrs: str | Sequence[str] | None,
    mail_options: Sequence[str],
    smtputf8: bool,
) -> tuple[str, list[str], bytes, list[str]]:
    """smtplib's ``send_message`` rules: envelope from the (Resent-) headers
    (:func:`message_envelope`), Bcc removed, SMTPUTF8 when an address needs it. Returns
    ``(sender, recipients, bytes, mail_options)``."""
    from_addr, recipients = message_envelope(msg, from_addr, to_addrs)
    msg_copy = copy.copy(msg)
    del msg_copy["Bcc"]
    del msg_copy["Resent-Bcc"]
    options = list(_option_list(mail_options))
    with io.BytesIO() as bytesmsg:
        if not all(a.isascii() for a in (from_addr, *recipients)):
            if not smtputf8:
                raise SMTPNotSupportedError(
                    "One or more source or delivery addresses require internationalized email "
                    "support, but the server does not advertise the required SMTPUTF8 capability"
                )
            policy = msg.policy.clone(utf8=True)  # type: ignore[call-arg]
            generator = email.generator.BytesGenerator(bytesmsg, policy=policy)
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        else:
            generator = email.generator.BytesGenerator(bytesmsg)
        generator.flatten(msg_copy, linesep="\r\n")
        return from_addr, recipients, bytesmsg.getvalue(), options


def _tls_error(cls: type[SMTPTLSError], exc: ssl.SSLError, message: str) -> SMTPTLSError:
    """Our TLS error, carrying the attributes of the ssl error it replaces."""
    detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    error = cls(exc.errno, f"{message}: {detail}")
    error.reason = getattr(exc, "reason", None)  # type: ignore[misc,assignment]
    error.library = getattr(exc, "library", None)  # type: ignore[misc,assignment]
    if isinstance(exc, ssl.SSLCertVerificationError):
        error.verify_code = exc.verify_code  # type: ignore[attr-defined]
        error.verify_message = exc.verify_message  # type: ignore[attr-defined]
    return error


def _single(ex: Exchange) -> Generator[Exchange, list[Reply], Reply]:
    replies = yield ex
    return replies[0]


def _all(ex: Exchange) -> Generator[Exchange, list[Reply], list[Reply]]:
    return (yield ex)


def _option_list(options: Sequence[str] | str) -> list[str]:
    if isinstance(options, str | bytes):
        raise TypeError("options must be a sequence of strings such as ('SMTPUTF8',), not a single string")
    return [check_no_controls(o, "ESMTP option") for o in options]


def _addr_only(address: str) -> str:
    import email.utils

    (_, addr) = email.utils.parseaddr(address)
    return addr or address
