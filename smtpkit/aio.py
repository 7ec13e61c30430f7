"""``AsyncSMTP``: the client's methods as coroutines, on the same sans-I/O core.

No parsing or protocol state lives here: replies go straight from the transport into the
shared :class:`~smtpkit.protocol.Session`, and every operation (transactions, AUTH) is
the same generator the blocking client runs. So TLS verification, AUTH redaction,
pipelining, CHUNKING, deadlines and input checks behave exactly as in ``smtpkit.SMTP``.

It never calls ``asyncio.run`` behind your back: use it with ``await``, including
top-level ``await`` in a notebook cell while the kernel's loop runs. Host names are
resolved by the loop, without blocking it. :func:`send_batch` sends many messages over N
connections concurrently in one loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import ssl
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import auth as sasl
from .address import check_no_controls
from .client import (
    _QUICKACK,
    _addr_only,
    _is_loopback,
    _tls_error,
    insecure_auth_error,
    message_envelope,
    prepare_message,
    tls_context,
)
from .errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPException,
    SMTPHeloError,
    SMTPNotAttempted,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .esmtp import Capabilities, parse_ehlo
from .protocol import (
    COMMAND,
    FINAL,
    GREETING,
    RFC_TIMEOUTS,
    Body,
    Exchange,
    Outgoing,
    SendResult,
    Session,
    _Close,
    auth_operation,
    batch,
    checked_envelope,
    command_line,
    fill_not_attempted,
    outgoing_items,
    raise_read_failure,
    transaction,
)
from .reply import Reply

__all__ = ["AsyncSMTP", "BatchItem", "send_batch"]

log = logging.getLogger("smtpkit.aio")

# how AsyncSMTP._drive hands an operation back to AsyncSMTP._run
_DONE, _NEXT, _THROW, _READ = range(4)


_RECV = 65536  # the receive buffer: far more than any reply the parser accepts comes at once


class _Protocol(asyncio.BufferedProtocol):
    """Feeds received bytes into the session; wakes whoever waits for replies.

    A buffered protocol: the transport receives into one buffer kept for the connection.
    (A plain Protocol gets a fresh bytes object per read, which asyncio allocates at
    256 KiB and then shrinks: an mmap, mremap and munmap, with page faults, per reply.)
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._buffer = memoryview(bytearray(_RECV))
        self.transport: asyncio.Transport | None = None
        self.error: BaseException | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        # one lazily re-armed timer enforces the read deadline (no timer per read): it
        # fires at the earliest deadline it was armed for and re-arms for a later one
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # set while AsyncSMTP runs an operation from these callbacks (see AsyncSMTP._drive):
        # called on every event (data, EOF, loss, deadline) instead of waking a waiter
        self.driver: Callable[[], None] | None = None
        # a TCP socket to acknowledge at once after a read that leaves replies owed: a server
        # with Nagle on that writes pipelined replies one by one waits for that ACK
        self.ack_sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        session = self.session
        try:
            session.receive(data)
        except SMTPServerDisconnected as exc:  # protocol error or unsolicited 421
            self.error = exc
            if self.transport is not None:
                self.transport.abort()
        else:
            sock = self.ack_sock
            if sock is not None and session.outstanding > len(session.queue):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
                except OSError:
                    pass
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self.driver is not None:
            self.driver()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def arm(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure the timer fires no later than ``deadline`` (the driver's and ``wait``'s)."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    async def wait(self, deadline: float | None = None) -> None:
        """Until more data, EOF or an error arrives; TimeoutError at ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        if deadline is not None:
            self.arm(deadline, loop)
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._deadline = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline, waiter, driver = self._deadline, self._waiter, self.driver
        if driver is not None:
            driver()  # it checks its own deadline (and re-arms the timer if it waits on)
            return
        if deadline is None or waiter is None or waiter.done():
            return  # nobody waits: the next wait arms the timer again
        loop = waiter.get_loop()
        if loop.time() >= deadline:
            waiter.set_exception(TimeoutError())
        else:  # armed for an earlier read's deadline: wait on for this one
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drain(self) -> None:
        if self._paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None


class AsyncSMTP:
    """An asyncio SMTP client with ``smtpkit.SMTP``'s behaviour (coroutine methods).

    ``use_tls=True`` connects with implicit TLS (port 465). Other keyword arguments are
    those of :class:`smtpkit.SMTP`: ``context``, ``server_hostname``, ``validate_certs``,
    ``allow_insecure_auth``, ``final_timeout``, ``chunking``.
    """

    ehlo_msg = "ehlo"

    def __init__(
        self,
        hostname: str = "",
        port: int = 0,
        *,
        local_hostname: str | None = None,
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
        use_tls: bool = False,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        validate_certs: bool = True,
        allow_insecure_auth: bool = False,
        final_timeout: float | None = None,
        chunking: bool = True,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self.local_hostname = local_hostname or socket.getfqdn() or "localhost"
        self.timeout = timeout
        self.source_address = source_address
        self.use_tls = use_tls
        self.context = context
        self.server_hostname = server_hostname
        self.validate_certs = validate_certs
        self.allow_insecure_auth = allow_insecure_auth
        self.final_timeout = final_timeout
        self.chunking = chunking
        self.esmtp_features: dict[str, str] = {}
        self.does_esmtp = False
        self.ehlo_resp: bytes | None = None
        self.helo_resp: bytes | None = None
        self.user: str | None = None
        self.password: sasl.Secret | None = None
        self.last_result: SendResult | None = None
        self._session = Session()
        self._protocol: _Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._closed_by: BaseException | None = None
        self._lock: asyncio.Lock | None = None  # one operation at a time (made in the running loop)

    def __repr__(self) -> str:
        state = "connected" if self._transport is not None else "not connected"
        user = f" user={self.user!r}" if self.user else ""
        return f"<AsyncSMTP {self.hostname}:{self.port} {state}{user}>"

    async def __aenter__(self) -> AsyncSMTP:
        if self._transport is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._transport is not None:
                await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException):
            pass
        finally:
            self.close()

    # -- plumbing ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.esmtp_features)

    def _timeout_for(self, phase: str) -> float | None:
        if phase == FINAL and self.final_timeout is not None:
            return self.final_timeout
        if self.timeout is None:
            return RFC_TIMEOUTS.get(phase, RFC_TIMEOUTS[COMMAND])
        return self.timeout

    def _not_connected(self) -> SMTPServerDisconnected:
        if self._closed_by is not None:
            return SMTPProtocolError(f"the connection was closed after a protocol error: {self._closed_by}", "broken")
        return SMTPServerDisconnected("not connected: call connect() first")

    def close(self) -> None:
        """Drop the connection (no QUIT)."""
        transport, protocol = self._transport, self._protocol
        self._transport = None
        self._protocol = None
        self._session = Session()
        if transport is not None:
            transport.abort()
        if protocol is not None:
            protocol.cancel_timer()
            driver = protocol.driver
            if driver is not None:  # an operation driven from the callbacks: it ends now, disconnected
                driver()

    def _check_idle(self) -> None:
        protocol = self._protocol
        assert protocol is not None
        if protocol.error is not None:
            error = protocol.error
            self.close()
            if isinstance(error, SMTPServerDisconnected):
                self._closed_by = error
                raise error
            raise SMTPServerDisconnected(f"Connection unexpectedly closed: {error}")
        if protocol.closed:
            self.close()
            raise SMTPNotAttempted("Connection closed by the server (nothing was sent)")
        try:
            self._session.check_clean("while idle")
        except SMTPProtocolError as exc:
            self.close()
            self._closed_by = exc
            raise

    async def _exchange(self, ex: Exchange) -> list[Reply]:
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            raise self._not_connected()
        session = self._session
        if session.outstanding == 0:
            self._check_idle()
        debug = log.isEnabledFor(logging.DEBUG)
        sent = len(ex.data)
        try:
            if sent:
                if debug:
                    log.debug("send: %s", ex.log if ex.log is not None else repr(ex.data))
                transport.write(ex.data)
            if ex.stream is not None:
                for chunk in ex.stream:
                    if protocol.closed:
                        break
                    transport.write(chunk)
                    sent += len(chunk)
                    await self._drain(protocol)
                if debug:
                    log.debug("send: <%d bytes of message data>", sent - len(ex.data))
            await self._drain(protocol)
        except TimeoutError as exc:
            self.close()
            raise SMTPTimeoutError("timed out sending to the server") from exc
        except Exception as exc:
            # Part of the exchange may be on the wire, or the server waits for message
            # content (after a 354) that will not come: the only safe end is a drop, so
            # that nothing sent later can become part of the message.
            if sent or ex.stream is not None or not isinstance(exc, SMTPException):
                self.close()
            raise
        session.outstanding += ex.replies
        return await self._read(ex.replies, ex.phase)

    async def _drain(self, protocol: _Protocol) -> None:
        """Wait for the transport's buffer to drain, within the command deadline."""
        if protocol._paused:  # only then is there anything to wait for (no timer otherwise)
            async with asyncio.timeout(self._timeout_for("data_block")):
                await protocol.drain()

    async def _read(self, count: int, phase: str, deadline: float | None = None) -> list[Reply]:
        """``count`` replies by ``deadline`` (loop time; by default the phase's timeout from now)."""
        session, protocol = self._session, self._protocol
        got = session.take(count)
        if len(got) == count and protocol is not None and protocol.error is None:
            return got  # already here: no deadline to arm
        final = phase == FINAL
        if protocol is None:  # closed meanwhile (close() from another task)
            raise_read_failure(None, final=final)
        try:
            if deadline is None:
                timeout = self._timeout_for(phase)
                deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            while len(got) < count:
                assert protocol is not None
                if protocol.error is not None:
                    got.extend(session.take(count - len(got)))
                    error = protocol.error
                    self.close()
                    if isinstance(error, SMTPProtocolError):
                        self._closed_by = error
                        if len(got) == count:
                            return got  # what was asked for arrived intact before the garbage
                    raise_read_failure(error, final=final)
                if protocol.closed:
                    self.close()
                    if got and got[-1].code == 421:
                        return got  # the server said goodbye; the caller sees the 421
                    raise_read_failure(None, final=final)
                await protocol.wait(deadline)
                got.extend(session.take(count - len(got)))
        except TimeoutError as exc:
            if isinstance(exc, SMTPServerDisconnected):  # raised above: already the error to raise
                raise
            self.close()
            raise_read_failure(exc, final=final, timeout=self._timeout_for(phase))
        if log.isEnabledFor(logging.DEBUG):
            for reply in got:
                log.debug("reply: %d %s", reply.code, reply.text)
        return got

    async def _run(self, operation: Generator[Exchange | _Close, list[Reply], Any]) -> Any:
        """Drive a protocol operation, one at a time per connection.

        Operations started concurrently on one AsyncSMTP wait their turn (replies are
        paired with commands by order, so two interleaved operations would swap them). An
        operation cancelled (or failing) while the server still owes it replies closes the
        connection: those replies must never reach the next command.
        """
        lock = self._lock
        if lock is None:
            lock = self._lock = asyncio.Lock()
        async with lock:
            try:
                return await self._run_locked(operation)
            except BaseException:
                session = self._session
                if self._transport is not None and (session.outstanding or session.queue):
                    self.close()
                raise

    async def _run_locked(self, operation: Generator[Exchange | _Close, list[Reply], Any]) -> Any:
        value: list[Reply] | None = None
        error: BaseException | None = None
        op: Exchange | _Close | None = None  # taken from the operation, not yet done
        while True:
            if op is None:
                try:
                    op = operation.throw(error) if error is not None else operation.send(value)  # type: ignore[arg-type]
                except StopIteration as stop:
                    return stop.value
                error = None
                value = None
            current, op = op, None
            if isinstance(current, _Close):
                self.close()
                continue
            try:
                if not self._write_now(current):
                    value = await self._exchange(current)
                    continue
            except Exception as exc:
                error = exc
                continue
            # written: the protocol's callbacks run the operation while its exchanges stay simple
            kind, payload = await self._drive(operation, current)  # raises what the operation raises
            if kind == _DONE:
                return payload
            if kind == _NEXT:
                op = payload
            elif kind == _THROW:
                error = payload
            else:  # _READ: the replies did not simply arrive (error, EOF, deadline): the general read
                pending, deadline = payload
                try:
                    value = await self._read(pending.replies, pending.phase, deadline)
                except Exception as exc:
                    error = exc

    def _write_now(self, ex: Exchange) -> bool:
        """Write a simple exchange (bytes in memory, an idle healthy connection) and count its
        replies; False leaves it to :meth:`_exchange` (streams, full buffers, anything to
        report, debug logging)."""
        transport, protocol, session = self._transport, self._protocol, self._session
        if (
            ex.stream is not None
            or not ex.data
            or not ex.replies
            or transport is None
            or protocol is None
            or protocol._paused
            or protocol.error is not None
            or protocol.closed
            or (session.outstanding == 0 and (session.queue or session.parser.pending))  # _check_idle's case
            or log.isEnabledFor(logging.DEBUG)
        ):
            return False
        try:
            transport.write(ex.data)
        except Exception:
            self.close()  # as _exchange: whatever went out, the only safe end is a drop
            raise
        session.outstanding += ex.replies
        return True

    async def _drive(self, operation: Generator[Exchange | _Close, list[Reply], Any], ex: Exchange) -> tuple[int, Any]:
        """Run ``operation`` from the protocol's callbacks, ``ex`` being written already.

        When all of an exchange's replies are in, ``data_received`` itself sends them into the
        operation and writes its next exchange: no future, task step or loop iteration per
        exchange. Each exchange still has its own deadline, checked by the protocol's timer.
        Anything else hands back to :meth:`_run` with what to do: ``(_DONE, value)``,
        ``(_NEXT, op)`` (not simple: the general path), ``(_THROW, error)`` (a failed write,
        for the operation) or ``(_READ, (exchange, deadline))`` (an error, EOF or the
        deadline while its replies were due: the general read reports it). What the operation
        raises is raised here.
        """
        protocol = self._protocol
        session = self._session
        assert protocol is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, Any]] = loop.create_future()
        context = contextvars.copy_context()  # the operation's callbacks see this task's context
        timeout_for = self._timeout_for

        def deadline_of(exchange: Exchange) -> float | None:
            timeout = timeout_for(exchange.phase)
            if timeout is None:
                return None
            at: float = loop.time() + timeout
            protocol.arm(at, loop)
            return at

        deadline = deadline_of(ex)

        def finish(kind: int, payload: Any) -> None:
            protocol.driver = None
            protocol._deadline = None
            if not done.done():
                done.set_result((kind, payload))

        def advance() -> None:
            nonlocal ex, deadline
            if done.done():  # the task was cancelled
                protocol.driver = None
                return
            while True:
                if protocol.error is not None or protocol.closed or self._protocol is not protocol:
                    return finish(_READ, (ex, deadline))
                if len(session.queue) < ex.replies:
                    if protocol._timer is None and deadline is not None:  # the timer fired
                        if loop.time() >= deadline:
                            return finish(_READ, (ex, deadline))
                        protocol.arm(deadline, loop)
                    return
                replies = session.take(ex.replies)
                try:
                    op = context.run(operation.send, replies)
                except StopIteration as stop:
                    return finish(_DONE, stop.value)
                except BaseException as exc:
                    protocol.driver = None
                    protocol._deadline = None
                    done.set_exception(exc)
                    return
                if isinstance(op, _Close):
                    return finish(_NEXT, op)
                try:
                    if not self._write_now(op):
                        return finish(_NEXT, op)
                except Exception as exc:
                    return finish(_THROW, exc)
                ex = op
                deadline = deadline_of(op)

        protocol.driver = advance
        try:
            return await done
        finally:
            protocol.driver = None

    async def _command(self, line: bytes, phase: str = COMMAND) -> Reply:
        replies = await self._run(_single(Exchange(line, 1, phase)))
        return replies  # type: ignore[no-any-return]

    # -- commands -------------------------------------------------------------------------

    async def connect(self, hostname: str | None = None, port: int | None = None) -> Reply:
        """Connect (resolving the name without blocking the loop) and read the greeting."""
        if hostname:
            self.hostname = hostname
        if port:
            self.port = port
        if not self.port:
            self.port = 465 if self.use_tls else 25
        self.close()
        self._closed_by = None
        self._forget_capabilities()  # a new connection, maybe a new server: EHLO again
        loop = asyncio.get_running_loop()
        session = self._session = Session()
        context = self._tls_context() if self.use_tls else None
        name = self.server_hostname or self.hostname
        try:
            async with asyncio.timeout(self._timeout_for(GREETING)):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(session),
                    self.hostname,
                    self.port,
                    ssl=context,
                    server_hostname=name if context is not None else None,
                    local_addr=self.source_address,
                )
        except ssl.SSLCertVerificationError as exc:
            raise _tls_error(SMTPCertificateError, exc, f"certificate verification failed for {name}") from exc
        except ssl.SSLError as exc:
            raise _tls_error(SMTPTLSError, exc, f"TLS handshake with {name} failed") from exc
        except TimeoutError as exc:
            raise SMTPTimeoutError(f"timed out connecting to {self.hostname}:{self.port}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _QUICKACK is not None:
                protocol.ack_sock = sock
        self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
        session.outstanding += 1
        reply = (await self._read(1, GREETING))[0]
        if reply.code != 220:
            self.close()
            raise SMTPConnectError(reply.code, reply.message)
        return reply

    async def ehlo(self, name: str = "") -> Reply:
        line = command_line(self.ehlo_msg, check_no_controls(name or self.local_hostname, "EHLO name"))
        self.esmtp_features = {}
        reply = (await self._command(line)).without_enhanced()
        self.ehlo_resp = reply.message
        if reply.code == 250:
            self.does_esmtp = True
            self.esmtp_features = parse_ehlo(reply.message)
        return reply

    async def helo(self, name: str = "") -> Reply:
        reply = await self._command(command_line("helo", check_no_controls(name or self.local_hostname, "HELO name")))
        self.helo_resp = reply.message
        return reply

    def _greeting_owed(self) -> bool:
        """Whether the next transaction starts with an EHLO (none done on this connection)."""
        return self.helo_resp is None and self.ehlo_resp is None

    async def ehlo_or_helo_if_needed(self) -> None:
        if self._greeting_owed():
            if not 200 <= (await self.ehlo()).code <= 299:
                reply = await self.helo()
                if not 200 <= reply.code <= 299:
                    raise SMTPHeloError(reply.code, reply.message)

    def has_extn(self, opt: str) -> bool:
        return opt.lower() in self.esmtp_features

    async def noop(self) -> Reply:
        return await self._command(b"NOOP\r\n")

    async def rset(self) -> Reply:
        return await self._command(b"RSET\r\n")

    async def verify(self, address: str) -> Reply:
        return await self._command(command_line("vrfy", _addr_only(check_no_controls(address, "VRFY argument"))))

    async def execute_command(self, verb: str, arg: str = "") -> Reply:
        """Any other command (checked for injection like the rest)."""
        return await self._command(command_line(verb, arg))

    async def quit(self) -> Reply:
        reply = await self._command(b"QUIT\r\n")
        self._forget_capabilities()
        self.close()
        return reply

    def _forget_capabilities(self) -> None:
        """Forget the EHLO/HELO answer: the next transaction greets the server again."""
        self.ehlo_resp = self.helo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False

    # -- TLS --------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.context, self.validate_certs, self.hostname)

    async def starttls(self, context: ssl.SSLContext | None = None) -> Reply:
        """STARTTLS with verification; data sent before the handshake is an attack."""
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("starttls"):
            raise SMTPNotSupportedError("STARTTLS extension not supported by server.")
        reply = await self._command(b"STARTTLS\r\n")
        if self._transport is None:
            raise self._not_connected()
        if reply.code != 220:
            raise SMTPResponseException(reply.code, reply.message)
        try:
            self._check_idle()  # anything buffered after the 220 is response injection (B4)
        except SMTPProtocolError as exc:
            raise SMTPProtocolError(
                f"the server sent data after STARTTLS before the TLS handshake (possible injection): {exc}",
                "unsolicited",
            ) from exc
        loop = asyncio.get_running_loop()
        name = self.server_hostname or self.hostname
        transport, protocol = self._transport, self._protocol
        assert transport is not None and protocol is not None
        try:
            async with asyncio.timeout(self._timeout_for(COMMAND)):
                tls_transport = await loop.start_tls(
                    transport, protocol, context or self._tls_context(), server_hostname=name
                )
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise _tls_error(SMTPCertificateError, exc, f"certificate verification failed for {name}") from exc
        except ssl.SSLError as exc:
            self.close()
            raise _tls_error(SMTPTLSError, exc, f"TLS handshake with {name} failed") from exc
        except (TimeoutError, ConnectionError, OSError) as exc:
            self.close()
            raise SMTPServerDisconnected(f"the TLS handshake with {name} failed: {exc}") from exc
        if tls_transport is None:
            self.close()
            raise SMTPServerDisconnected("the connection closed during the TLS handshake")
        self._transport = tls_transport  # type: ignore[assignment]
        self._session.restart()
        self._forget_capabilities()
        return reply

    # -- AUTH ---------------------------------------------------------------------------------

    def _check_auth_transport(self) -> None:
        transport = self._transport
        if transport is None:
            raise self._not_connected()
        if transport.get_extra_info("sslcontext") is not None or self.allow_insecure_auth:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and _is_loopback(sock):
            return
        raise insecure_auth_error(self.hostname, self.port, "use_tls=True")

    async def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> Reply:
        """Log in with the best password mechanism both sides support."""
        user = sasl.check_credential(user, "user name")  # before anything is sent
        secret = sasl.Secret(sasl.check_credential(password, "password"))
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        self._check_auth_transport()
        self.user = user
        self.password = secret
        advertised = self.capabilities.auth
        mechanisms = [m for m in sasl.PREFERRED if m in advertised]
        if not mechanisms:
            raise SMTPException("No suitable authentication method found.")
        responders: dict[str, Callable[[bytes | None], bytes]] = {
            "CRAM-MD5": sasl.cram_md5(user, password),
            "PLAIN": sasl.plain(user, password),
            "LOGIN": sasl.login(user, password),
        }
        last: SMTPAuthenticationError | None = None
        for mechanism in mechanisms:
            respond = responders[mechanism]
            initial = initial_response_ok and mechanism != "CRAM-MD5"
            try:
                result: Reply = await self._run(auth_operation(mechanism, respond, initial_response_ok=initial))
                return result
            except SMTPAuthenticationError as exc:
                last = exc
        assert last is not None
        raise last

    async def login_oauth2(self, user: str, token: str | Callable[[], str], *, mechanism: str | None = None) -> Reply:
        """Log in with an OAuth 2 token (XOAUTH2 or OAUTHBEARER)."""
        user = sasl.check_credential(user, "user name")  # before anything is sent
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        self._check_auth_transport()
        choice, respond = sasl.oauth_responder(
            user, token, self.capabilities.auth, mechanism, self.server_hostname or self.hostname, self.port
        )
        self.user = user
        result: Reply = await self._run(auth_operation(choice, respond))
        return result

    # -- sending ----------------------------------------------------------------------------

    async def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes | Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] = (),
    ) -> SendResult:
        """Send one message; the same rules and results as ``smtpkit.SMTP.sendmail``."""
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        if self._greeting_owed():  # a bad address or option fails before the EHLO is sent
            checked_envelope(from_addr, recipients, mail_options, rcpt_options)
        await self.ehlo_or_helo_if_needed()
        try:
            result: SendResult = await self._run(
                transaction(
                    from_addr,
                    recipients,
                    msg if isinstance(msg, Body) else Body(msg),
                    caps=self.capabilities,
                    esmtp=self.does_esmtp,
                    mail_options=mail_options,
                    rcpt_options=rcpt_options,
                    chunking=self.chunking,
                )
            )
        except SMTPException as exc:
            self.last_result = getattr(exc, "result", None)
            raise
        self.last_result = result
        return result

    async def send_many(
        self,
        messages: Iterable[Outgoing | tuple[str, Sequence[str], Any]],
        *,
        on_result: Callable[[int, SendResult | BaseException], None] | None = None,
    ) -> list[SendResult | BaseException]:
        """Many messages on this connection, one round trip each (see ``SMTP.send_many``)."""
        await self.ehlo_or_helo_if_needed()
        items = outgoing_items(messages)
        results: list[SendResult | BaseException | None] = [None] * len(items)

        def record(index: int, outcome: SendResult | BaseException) -> None:
            results[index] = outcome
            if on_result is not None:
                on_result(index, outcome)

        caps = self.capabilities
        if self.does_esmtp and caps.pipelining and not (caps.chunking and self.chunking):
            await self._run(batch(items, caps=caps, on_result=record))
        else:
            for index, item in enumerate(items):
                if not self.is_connected:
                    break
                try:
                    outcome = await self.sendmail(
                        item.sender, item.recipients, item.body, item.mail_options, item.rcpt_options
                    )
                    record(index, outcome)
                except (SMTPException, ValueError, TypeError) as exc:
                    record(index, exc)
        return fill_not_attempted(results)

    async def send_message(
        self,
        msg: Any,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> SendResult:
        """Send an ``email.message.Message`` (envelope from its headers, Bcc removed)."""
        if self._greeting_owed():  # a bad header, address or option fails before the EHLO
            checked_envelope(*message_envelope(msg, from_addr, to_addrs), mail_options, rcpt_options)
        await self.ehlo_or_helo_if_needed()
        sender, recipients, flat, options = prepare_message(
            msg, from_addr, to_addrs, mail_options, self.has_extn("smtputf8")
        )
        return await self.sendmail(sender, recipients, flat, options, rcpt_options)


def _single(ex: Exchange) -> Generator[Exchange, list[Reply], Reply]:
    replies = yield ex
    return replies[0]


@dataclass(frozen=True)
class BatchItem:
    """One message for :func:`send_batch`."""

    sender: str
    recipients: Sequence[str]
    message: bytes | str
    key: Any = None


async def send_batch(
    items: Iterable[BatchItem | tuple[str, Sequence[str], bytes | str]],
    hostname: str,
    port: int = 0,
    *,
    connections: int = 4,
    login: tuple[str, str] | None = None,
    starttls: bool = False,
    **client_kwargs: Any,
) -> list[SendResult | BaseException]:
    """Send many messages over ``connections`` concurrent connections in this loop.

    Each connection pipelines its share of the messages, one round trip per message.
    Returns one entry per item, in order: its :class:`SendResult`, or the exception that
    item got. A connection that fails reconnects for the items it had not started; an
    item is never sent twice by this function (an item whose outcome is unknown stays
    :class:`SMTPUnknownOutcome`; retry policy belongs to the bulk engine).
    """
    all_items = [item if isinstance(item, BatchItem) else BatchItem(*item) for item in items]
    results: list[SendResult | BaseException | None] = [None] * len(all_items)
    workers = max(1, min(connections, len(all_items)))

    async def worker(indexes: list[int]) -> None:
        stalls = 0
        while indexes:
            client = AsyncSMTP(hostname, port, **client_kwargs)
            try:
                await client.connect()
                if starttls:
                    await client.starttls()
                if login is not None:
                    await client.login(*login)
                outgoing = [
                    Outgoing(all_items[i].sender, all_items[i].recipients, Body(all_items[i].message)) for i in indexes
                ]
                finished: set[int] = set()

                def record(
                    position: int,
                    outcome: SendResult | BaseException,
                    share: list[int] = indexes,
                    done: set[int] = finished,
                ) -> None:
                    results[share[position]] = outcome
                    done.add(position)

                await client.send_many(outgoing, on_result=record)
                if client.is_connected:
                    await client.quit()
            except (SMTPException, OSError) as exc:  # could not connect or log in
                finished = set()
                for i in indexes:
                    results[i] = exc
                return
            finally:
                client.close()
            remaining = [i for pos, i in enumerate(indexes) if pos not in finished]
            stalls = stalls + 1 if len(remaining) == len(indexes) else 0
            if stalls >= 2:  # reconnecting makes no progress: report instead of looping
                for i in remaining:
                    results[i] = SMTPServerDisconnected("not sent: the server keeps closing the connection")
                return
            indexes = remaining

    shares = [list(range(w, len(all_items), workers)) for w in range(workers)]
    await asyncio.gather(*(worker(share) for share in shares))
    return [r if r is not None else SMTPServerDisconnected("not sent") for r in results]
