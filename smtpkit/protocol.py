"""Sans-I/O SMTP client core, shared by the blocking (``client``) and asyncio drivers.

Nothing here touches a socket. A driver owns a :class:`Session` (the reply parser and
the count of replies owed) and runs the protocol's *operations*, generators that yield
what to do next:

* :class:`Exchange` -- write these bytes (and stream these chunks), then read this many
  replies within this phase's deadline; the driver sends the replies back in.
* :data:`CLOSE` -- drop the connection (after a 421).

Exceptions raised by the driver during an exchange are thrown into the generator, so
the protocol decides what they mean (a drop after the final dot is an *unknown*
outcome, not a failure). The transaction logic (pipelining, CHUNKING, per-recipient
results, RSET after failures, the 421 rules) therefore exists once, for every driver.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .address import check_no_controls, envelope_address, needs_smtputf8
from .errors import (
    MessageDataError,
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPMessageTooLarge,
    SMTPNotAttempted,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcome,
)
from .esmtp import Capabilities
from .reply import Reply
from .speedups import DataEncoder, ReplyParser, encode_data

__all__ = [
    "CLOSE",
    "CRLF",
    "Body",
    "Exchange",
    "Outgoing",
    "SendResult",
    "Session",
    "auth_operation",
    "batch",
    "command_line",
    "envelope_lines",
    "rset_operation",
    "transaction",
    "transaction_rest",
]

CRLF = b"\r\n"
MAX_CHALLENGES = 5  # smtplib's _MAXCHALLENGE: AUTH rounds before giving up (security.md E4)
STREAM_CHUNK = 1 << 20  # bytes read from a file per DATA chunk

# phases name the deadline that applies (RFC 5321 4.5.3.2)
GREETING, COMMAND, DATA_INIT, DATA_BLOCK, FINAL = "greeting", "command", "data_init", "data_block", "final"
RFC_TIMEOUTS = {GREETING: 300.0, COMMAND: 300.0, DATA_INIT: 120.0, DATA_BLOCK: 180.0, FINAL: 600.0}


@dataclass(slots=True)
class Exchange:
    """Write ``data`` (then every chunk of ``stream``), then read ``replies`` replies."""

    data: bytes
    replies: int
    phase: str = COMMAND
    stream: Iterable[bytes] | None = None
    log: str | None = None  # what the debug log shows instead of ``data`` (redaction)


class _Close:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSE"


CLOSE = _Close()
Operation = Generator["Exchange | _Close", list[Reply], Any]


def command_line(verb: str, arg: str = "", *, utf8: bool = False) -> bytes:
    """One command line, checked for injection (no control character in ``arg``)."""
    text = f"{verb} {arg}" if arg else verb
    check_no_controls(text, f"{verb.split(' ', 1)[0]} command")
    return _encode_line(verb, text, utf8)


def _encode_line(verb: str, text: str, utf8: bool) -> bytes:
    """A command line whose parts are already checked; only the encoding can still fail."""
    if utf8:
        return text.encode("utf-8") + CRLF
    try:
        return text.encode("ascii") + CRLF
    except UnicodeEncodeError:
        raise SMTPNotSupportedError(
            f"non-ASCII characters in the {verb} command need SMTPUTF8 (RFC 6531), "
            "which is not in use on this connection"
        ) from None


def read_failure(error: BaseException | None, *, final: bool, timeout: float | None = None) -> BaseException:
    """The exception to raise when waiting for replies ends without them.

    ``error`` is what ended the wait: ``None`` for the server closing the connection, an
    :class:`SMTPProtocolError` for a reply that cannot be parsed, a ``TimeoutError`` (the
    phase's deadline, ``timeout`` seconds) or any other ``OSError``. When the end-of-data
    reply was due (``final``) the message may have been delivered, so every one of these
    is :class:`SMTPUnknownOutcome`; before that, a protocol error is raised as it is, a
    timeout as :class:`SMTPTimeoutError` and the rest as
    :class:`SMTPServerDisconnected`. Both drivers (``client.SMTP`` and ``aio.AsyncSMTP``)
    go through here, so the same failure raises the same error in either.
    """
    if final:
        if error is None:
            return SMTPUnknownOutcome("the connection was closed before the final reply")
        if isinstance(error, SMTPUnknownOutcome):
            return error
        if isinstance(error, SMTPProtocolError):
            return SMTPUnknownOutcome(f"the final reply was unreadable: {error}")
        if isinstance(error, TimeoutError):
            return SMTPUnknownOutcome("timed out waiting for the final reply; the message may have been delivered")
        return SMTPUnknownOutcome(f"connection lost waiting for the final reply: {error}")
    if error is None:
        return SMTPServerDisconnected("Connection unexpectedly closed")
    if isinstance(error, SMTPServerDisconnected):  # protocol errors, timeouts already typed
        return error
    if isinstance(error, TimeoutError):
        return SMTPTimeoutError("timed out waiting for the server's reply" + (f" ({timeout} s)" if timeout else ""))
    return SMTPServerDisconnected(f"Connection unexpectedly closed: {error}")


def raise_read_failure(error: BaseException | None, *, final: bool, timeout: float | None = None) -> NoReturn:
    """Raise :func:`read_failure`'s exception, chained to ``error``."""
    failure = read_failure(error, final=final, timeout=timeout)
    if failure is error:
        raise failure
    raise failure from error


class Session:
    """The protocol state of one connection: the parser and the replies owed.

    Replies are matched to commands strictly in order. A reply nobody asked for (more
    replies than commands outstanding, or bytes while idle) is a protocol error, never
    the answer to the next command (security.md A7, A9); a 421 sent while idle is the
    server closing the connection.
    """

    __slots__ = ("outstanding", "parser", "queue")

    def __init__(self) -> None:
        self.parser = ReplyParser()
        self.outstanding = 0
        self.queue: deque[Reply] = deque()

    def expect(self, count: int) -> None:
        self.outstanding += count

    def receive(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except SMTPProtocolError as exc:
            # the replies completed before the fault are genuine: keep those still owed
            self.queue.extend(exc.replies[: max(self.outstanding - len(self.queue), 0)])
            raise
        if len(self.queue) + len(replies) > self.outstanding:
            extra = replies[self.outstanding - len(self.queue)]
            self.queue.extend(replies[: self.outstanding - len(self.queue)])
            if extra.code == 421:
                raise SMTPServerDisconnected(f"server closed the connection: {extra.code} {extra.text}")
            raise SMTPProtocolError(f"unsolicited reply from server: {extra.code} {extra.text[:60]!r}", "unsolicited")
        self.queue.extend(replies)

    def take(self, count: int) -> list[Reply]:
        """Up to ``count`` received replies, oldest first."""
        queue = self.queue
        if count >= len(queue):  # the common case: everything received is asked for
            got = list(queue)
            queue.clear()
        else:
            got = [queue.popleft() for _ in range(max(count, 0))]
        self.outstanding -= len(got)
        return got

    def check_clean(self, context: str) -> None:
        """Fail if anything arrived that no command asked for (before TLS, before a command)."""
        if self.queue or self.parser.pending or self.outstanding:
            raise SMTPProtocolError(f"unexpected data from server {context}", "unsolicited")

    def restart(self) -> None:
        """A fresh parser (after the TLS handshake: nothing from before is kept)."""
        self.parser = ReplyParser()
        self.outstanding = 0
        self.queue.clear()


class SendResult(dict[str, tuple[int, bytes]]):
    """What ``sendmail`` returns: smtplib's dict of refused recipients, and every outcome.

    As a dict it maps each refused recipient to its ``(code, message)``, exactly like
    smtplib (empty when everyone was accepted). On top of that: ``mail_reply``,
    ``rcpt_replies`` (every recipient's reply), ``data_reply`` (the final reply),
    ``delivery`` (LMTP: one final reply per recipient), ``accepted`` and ``outcome(rcpt)``.
    """

    def __init__(self, sender: str, recipients: Sequence[str]) -> None:
        super().__init__()
        self.sender = sender
        self.recipients = list(recipients)
        self.mail_reply: Reply | None = None
        self.rcpt_replies: dict[str, Reply] = {}
        self.data_reply: Reply | None = None
        self.delivery: dict[str, Reply] = {}
        self.size: int | None = None

    @property
    def accepted(self) -> list[str]:
        """Recipients the server took the message for."""
        accepted = []
        for rcpt in self.recipients:
            reply = self.outcome(rcpt)
            if rcpt not in self and reply is not None and reply.is_positive:
                accepted.append(rcpt)
        return accepted

    @property
    def ok(self) -> bool:
        """The message was accepted for at least one recipient."""
        return bool(self.accepted)

    def outcome(self, recipient: str) -> Reply | None:
        """The decisive reply for one recipient: its refusal, or the final reply."""
        rcpt = self.rcpt_replies.get(recipient)
        if rcpt is None or rcpt.code not in (250, 251):
            return rcpt
        if self.delivery:
            return self.delivery.get(recipient)
        return self.data_reply

    def _repr_html_(self) -> str:
        """Per-recipient outcomes as a table (for notebooks)."""
        import html

        rows = "".join(
            f"<tr><td>{html.escape(r['recipient'])}</td><td>{'sent' if r['accepted'] else 'refused'}</td>"
            f"<td>{r['code'] or ''}</td><td>{html.escape(r['enhanced'] or '')}</td>"
            f"<td>{html.escape(r['text'] or '')}</td></tr>"
            for r in self.describe()
        )
        head = "<tr><th>recipient</th><th>status</th><th>code</th><th>enhanced</th><th>reply</th></tr>"
        return f"<table>{head}{rows}</table>"

    def describe(self) -> list[dict[str, Any]]:
        """One row per recipient: address, code, enhanced status, text, accepted."""
        accepted = set(self.accepted)
        rows = []
        for rcpt in self.recipients:
            reply = self.outcome(rcpt)
            rows.append(
                {
                    "recipient": rcpt,
                    "code": reply.code if reply else None,
                    "enhanced": ".".join(map(str, reply.enhanced)) if reply and reply.enhanced else None,
                    "text": reply.text if reply else None,
                    "accepted": rcpt in accepted,
                }
            )
        return rows


class Body:
    """The message: bytes in memory, or a binary stream read in chunks.

    A seekable binary file is read once before anything is sent (:meth:`prescan`), chunk
    by chunk, and rewound: its data is then checked like a message in memory (a NUL or an
    over-long line fails before the first command), its 8-bit content is known (BODY=
    8BITMIME declared, or refused before sending where the server lacks it) and so is its
    exact size with CRLF line endings, so that it can go out with BDAT. An iterator can
    only be read once: it is checked as it is sent, and a fault then closes the connection.
    """

    __slots__ = ("_canonical", "_eight_bit", "_encoded", "_scanned", "_start", "data", "size", "source")

    def __init__(self, message: Any) -> None:
        self.data: bytes | None = None
        self._encoded: bytes | None = None
        self._canonical: bytes | None = None
        self.source: Any = None
        self.size: int | None = None
        self._eight_bit: bool | None = None
        self._scanned: int | None = None  # a prescanned file's size with CRLF line endings
        self._start: int | None = None  # where a seekable file's message starts
        if isinstance(message, str):
            from smtplib import _fix_eols  # type: ignore[attr-defined]

            self.data = _fix_eols(message).encode("ascii")  # smtplib's own rule for str
        elif isinstance(message, bytes | bytearray | memoryview):
            self.data = bytes(message)
        elif hasattr(message, "read") or isinstance(message, Iterable):
            if isinstance(message, io.TextIOBase):
                raise TypeError("a message file must be opened in binary mode: open(path, 'rb')")
            self.source = message
            self.size = _stream_size(message)
            self._start = _stream_start(message)
            return
        else:
            raise TypeError(f"message must be str, bytes, a binary file or an iterable of bytes, not {type(message)}")
        self.size = len(self.data)

    @property
    def eight_bit(self) -> bool | None:
        """True if the message has bytes over 127; None when unknown (an iterator)."""
        return self._eight_bit if self.data is None else not self.data.isascii()

    def prescan(self) -> None:
        """Read a seekable file through once and rewind it: check it as DATA would (a NUL
        or an over-long line raises :class:`MessageDataError` now), note whether it has
        8-bit data and its size with CRLF line endings. Nothing for other messages."""
        if self._start is None or self._scanned is not None:
            return
        size = 0
        eight_bit = False
        try:
            for chunk in self._canonical_chunks():
                size += len(chunk)
                eight_bit = eight_bit or not chunk.isascii()
        finally:
            self.source.seek(self._start)
        self._scanned = size
        self._eight_bit = eight_bit

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        source = self.source
        if hasattr(source, "read"):
            while True:
                chunk = source.read(STREAM_CHUNK)
                if not chunk:
                    return
                yield chunk
        else:
            yield from source

    def encode(self) -> None:
        """Encode an in-memory message now, so bad data fails before anything is sent."""
        if self.data is not None and self._encoded is None:
            self._encoded = encode_data(self.data)

    @property
    def encoded(self) -> bytes | None:
        """The DATA bytes of an in-memory message (after :meth:`encode`), else None."""
        return self._encoded

    def data_stream(self, check_8bit: bool) -> Iterable[bytes]:
        """The DATA bytes, dot-stuffed and terminated, chunk by chunk."""
        if self.data is not None:
            self.encode()
            assert self._encoded is not None
            return (self._encoded,)  # in memory: one chunk, encoded (and checked) already
        return self._encode_stream(check_8bit)

    def _encode_stream(self, check_8bit: bool) -> Iterator[bytes]:
        encoder = DataEncoder()
        for chunk in self.chunks():
            if check_8bit and not bytes(chunk).isascii():
                raise SMTPNotSupportedError("the message has 8-bit data but the server does not advertise 8BITMIME")
            out = encoder.feed(chunk)
            if out:
                yield out
        yield encoder.finish()

    @property
    def bdat_size(self) -> int | None:
        """The exact BDAT byte count: known for a message in memory and a prescanned file."""
        if self.data is not None:
            return len(self.canonical())
        return self._scanned

    def bdat_stream(self) -> Iterable[bytes]:
        """The BDAT bytes (CRLF line endings, no stuffing), :attr:`bdat_size` of them."""
        if self.data is not None:
            return (self.canonical(),)
        return self._bdat_file()

    def _bdat_file(self) -> Iterator[bytes]:
        expected = self._scanned
        assert expected is not None
        sent = 0
        for chunk in self._canonical_chunks():
            sent += len(chunk)
            if sent > expected:
                break
            yield chunk
        if sent != expected:  # the declared BDAT size cannot be met: the connection must go
            raise MessageDataError(
                f"the file changed while it was being sent ({expected} bytes declared with BDAT)", sent
            )

    def _canonical_chunks(self) -> Iterator[bytes]:
        """The stream's bytes with every line ending as CRLF and a final line break, chunk
        by chunk, checked by a DATA encoder on the way (no NUL, no over-long line)."""
        checker = DataEncoder()
        last_cr = False
        ends_line = False
        for piece in self.chunks():
            chunk = bytes(piece)
            if not chunk:
                continue
            checker.feed(chunk)
            if last_cr and chunk[0] == 0x0A:
                chunk = chunk[1:]  # the LF of a CRLF split between chunks: sent already
            if not chunk:
                last_cr = False
                continue
            last_cr = chunk[-1] == 0x0D
            out = _crlf_only(chunk)
            ends_line = out.endswith(b"\r\n")
            yield out
        if not ends_line:
            yield b"\r\n"

    def canonical(self) -> bytes:
        """The in-memory message with every line ending as CRLF (for BDAT: no stuffing)."""
        assert self.data is not None
        if self._canonical is None:
            self.encode()  # the same checks as DATA: no NUL, no over-long line
            data = _crlf_only(self.data)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"  # as DATA does: the last line is terminated
            self._canonical = data
        return self._canonical


def _crlf_only(data: bytes) -> bytes:
    """``data`` with CRLF, bare CR and bare LF each as CRLF (a final CR too)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        import re

        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data


def _stream_start(source: Any) -> int | None:
    """Where a seekable binary file's message starts (its position now), else None."""
    try:
        if not source.seekable():
            return None
        return int(source.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _stream_size(source: Any) -> int | None:
    import os

    try:
        fd = source.fileno()
        return int(os.fstat(fd).st_size - source.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _options(options: Sequence[str] | str | None, what: str) -> list[str]:
    if options is None or (type(options) is tuple and not options):  # the common case: none
        return []
    if isinstance(options, str | bytes):  # ("SMTPUTF8") is a str: smtplib would send S M T P ...
        raise TypeError(f"{what} must be a sequence of strings such as ('SMTPUTF8',), not a single string")
    result = []
    for option in options:
        if not isinstance(option, str):
            raise TypeError(f"{what} must contain strings, not {type(option).__name__}")
        check_no_controls(option, what)
        if " " in option.strip():
            raise ValueError(f"{what} entries must be single ESMTP parameters without spaces: {option!r}")
        result.append(option.strip())
    return result


def checked_envelope(
    sender: str,
    recipients: Sequence[str],
    mail_options: Sequence[str] | None = (),
    rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] | None = (),
) -> tuple[str, list[str], list[str], dict[str, list[str]] | None]:
    """The envelope's addresses and options, checked (strict addresses, no control
    character, one parameter per option): sender, recipients, MAIL options and each
    recipient's RCPT options (None: no recipient has any). Raises before anything is sent."""
    sender_addr = envelope_address(sender)
    rcpt_addrs = [envelope_address(r) for r in recipients]
    opts = _options(mail_options, "mail_options")
    per_rcpt: dict[str, list[str]] | None = None
    if isinstance(rcpt_options, Mapping):
        per_rcpt = {r: _options(rcpt_options.get(r, ()), "rcpt_options") for r in recipients}
    else:
        shared = _options(rcpt_options, "rcpt_options")
        if shared:
            per_rcpt = {r: shared for r in recipients}
    return sender_addr, rcpt_addrs, opts, per_rcpt


def _has_option(options: Sequence[str], name: str) -> bool:
    if not options:
        return False
    name = name.upper()
    return any(o.upper() == name or o.upper().startswith(name + "=") for o in options)


def _with_result(error: SMTPException, result: SendResult) -> SMTPException:
    """Attach what is known of the transaction to the exception about to be raised."""
    error.result = result  # type: ignore[attr-defined]
    return error


def rset_operation() -> Operation:
    """RSET after a failed transaction; a dead connection is fine here (smtplib's _rset)."""
    try:
        yield Exchange(b"RSET\r\n", 1)
    except SMTPServerDisconnected:
        pass


def _abandon(reply: Reply) -> Operation:
    """After a failure: close on 421 (no RSET), else RSET."""
    if reply.code == 421:
        yield CLOSE
    else:
        yield from rset_operation()


def envelope_lines(
    sender: str,
    recipients: Sequence[str],
    body: Body,
    *,
    caps: Capabilities,
    esmtp: bool,
    mail_options: Sequence[str] | None = (),
    rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] | None = (),
) -> tuple[bytes, list[bytes]]:
    """The checked MAIL and RCPT lines for one message (raises before anything is sent).

    Strict addresses; SMTPUTF8 and BODY=8BITMIME added when the message needs them and
    refused when the server lacks them; SIZE checked and declared; DSN options only when
    the server offers DSN; the message itself encoded (a NUL or an over-long line fails).
    """
    if isinstance(recipients, str):
        recipients = [recipients]
    sender_addr, rcpt_addrs, opts, per_rcpt = checked_envelope(sender, recipients, mail_options, rcpt_options)
    utf8 = _has_option(opts, "SMTPUTF8")
    if (needs_smtputf8(sender_addr) or any(map(needs_smtputf8, rcpt_addrs))) and not utf8:
        if not caps.smtputf8:
            raise SMTPNotSupportedError(
                "an envelope address has non-ASCII characters, which needs SMTPUTF8, "
                "but the server does not advertise it"
            )
        opts.append("SMTPUTF8")
        utf8 = True
    elif utf8 and not caps.smtputf8:
        raise SMTPNotSupportedError("SMTPUTF8 not supported by server")
    size = body.size
    if esmtp:  # a message over the server's limit is refused before a file is read through
        _check_size(size, caps.size, sender)
    body.prescan()  # a seekable file: checked, its 8-bit content and CRLF size known
    if size is None:  # a file object without a file descriptor: its size is known now
        size = body.bdat_size
        if esmtp:
            _check_size(size, caps.size, sender)
    eight_bit = body.eight_bit
    if esmtp:
        if eight_bit is None and caps.eightbitmime and not _has_option(opts, "BODY"):
            opts.append("BODY=8BITMIME")  # an iterator, unknown until sent: declare the superset
        elif eight_bit and not _has_option(opts, "BODY"):
            if not caps.eightbitmime:
                raise SMTPNotSupportedError(
                    "the message has 8-bit data but the server does not advertise 8BITMIME; "
                    "encode it (quoted-printable or base64) first"
                )
            opts.append("BODY=8BITMIME")
        if "size" in caps.features and size is not None and not _has_option(opts, "SIZE"):
            opts.insert(0, f"size={size}")
        if not caps.dsn:
            for name in ("RET", "ENVID"):
                if _has_option(opts, name):
                    raise SMTPNotSupportedError(f"{name}= needs DSN, which the server does not advertise")
            for options in (per_rcpt or {}).values():
                for name in ("NOTIFY", "ORCPT"):
                    if _has_option(options, name):
                        raise SMTPNotSupportedError(f"{name}= needs DSN, which the server does not advertise")
    elif opts or (per_rcpt is not None and any(per_rcpt.values())):
        raise SMTPNotSupportedError("ESMTP options given but the server only speaks plain SMTP (HELO)")

    # every part was checked for control characters above (addresses, options): encode only
    mail_line = _encode_line("MAIL", f"MAIL FROM:<{sender_addr}>" + "".join(" " + o for o in opts), utf8)
    if per_rcpt is None:
        rcpt_lines = [_encode_line("RCPT", f"RCPT TO:<{addr}>", utf8) for addr in rcpt_addrs]
    else:
        rcpt_lines = [
            _encode_line("RCPT", f"RCPT TO:<{addr}>" + "".join(" " + o for o in per_rcpt[r]), utf8)
            for r, addr in zip(recipients, rcpt_addrs, strict=True)
        ]
    body.encode()  # a NUL or an over-long line is refused here, before any byte is sent
    return mail_line, rcpt_lines


def _check_size(size: int | None, limit: int | None, sender: str) -> None:
    if limit is not None and size is not None and size > limit:
        raise SMTPMessageTooLarge(
            552,
            f"5.3.4 message of {size} bytes exceeds the server's limit of {limit} (checked before sending)".encode(),
            sender,
        )


def _no_options(options: object) -> bool:
    """No ESMTP options at all (what ``envelope_lines`` turns into an empty list)."""
    return options is None or (not options and type(options) in (tuple, list))


def _envelope_plan(caps: Capabilities) -> tuple[int | None, bool, bool]:
    """What :func:`_plain_envelope` needs from the capabilities: (SIZE limit, declare SIZE, 8BITMIME)."""
    return caps.size, "size" in caps.features, "8bitmime" in caps.features


def _plain_envelope(
    sender: str, recipients: list[str], body: Body, plan: tuple[int | None, bool, bool]
) -> bytes | None:
    """MAIL and RCPT lines, as one bytes, for the common ESMTP case: no options, ASCII
    addresses, a message in memory within the SIZE limit, 7-bit or with 8BITMIME offered.

    The same bytes and checks as :func:`envelope_lines` with ``esmtp=True`` and no options
    (an invalid address raises the same error, the message is encoded, so checked, before
    anything is sent); ``None`` when anything else applies: ``envelope_lines`` then decides.
    """
    data = body.data
    if data is None:
        return None
    sender_addr = envelope_address(sender)
    addrs = [envelope_address(r) for r in recipients]
    if not sender_addr.isascii() or not all(a.isascii() for a in addrs):
        return None  # SMTPUTF8 rules
    limit, declare_size, eightbitmime = plan
    size = len(data)
    if limit is not None and size > limit:
        return None  # refused by envelope_lines
    line = f"MAIL FROM:<{sender_addr}> size={size}" if declare_size else f"MAIL FROM:<{sender_addr}>"
    if not data.isascii():
        if not eightbitmime:
            return None  # refused by envelope_lines
        line += " BODY=8BITMIME"
    body.encode()  # a NUL or an over-long line is refused here, before any byte is sent
    if len(addrs) == 1:
        return f"{line}\r\nRCPT TO:<{addrs[0]}>\r\n".encode("ascii")
    return (line + "\r\n" + "".join([f"RCPT TO:<{a}>\r\n" for a in addrs])).encode("ascii")


def transaction(
    sender: str,
    recipients: Sequence[str],
    body: Body,
    *,
    caps: Capabilities,
    esmtp: bool,
    mail_options: Sequence[str] | None = (),
    rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] | None = (),
    lmtp: bool = False,
    chunking: bool = True,
) -> Generator[Exchange | _Close, list[Reply], SendResult]:
    """One mail transaction with smtplib's ``sendmail`` semantics and structured results.

    Pipelined in one round trip when the server offers PIPELINING (MAIL, every RCPT and
    DATA, or BDAT with the message itself under CHUNKING); every reply is checked.
    Raises smtplib's exceptions in smtplib's cases, each with ``.result`` attached.
    """
    if isinstance(recipients, str):
        recipients = [recipients]
    mail_line, rcpt_lines = envelope_lines(
        sender, recipients, body, caps=caps, esmtp=esmtp, mail_options=mail_options, rcpt_options=rcpt_options
    )
    result = SendResult(sender, recipients)
    result.size = body.size
    n = len(rcpt_lines)
    pipelining = esmtp and caps.pipelining
    use_bdat = chunking and esmtp and caps.chunking and body.bdat_size is not None and not lmtp
    check_8bit = bool(esmtp and not caps.eightbitmime)

    replies: list[Reply] = []
    try:
        if pipelining and use_bdat:
            size = body.bdat_size
            assert size is not None
            group = mail_line + b"".join(rcpt_lines) + b"BDAT %d LAST\r\n" % size
            replies = yield Exchange(group, n + 2, FINAL, stream=body.bdat_stream())
        elif pipelining:
            replies = yield Exchange(mail_line + b"".join(rcpt_lines) + b"DATA\r\n", n + 2)
        else:
            replies = yield Exchange(mail_line, 1)
    except SMTPUnknownOutcome as exc:
        exc.result = result
        raise
    return (
        yield from transaction_rest(
            sender,
            recipients,
            body,
            result,
            replies,
            rcpt_lines,
            pipelining=pipelining,
            use_bdat=use_bdat,
            lmtp=lmtp,
            check_8bit=check_8bit,
        )
    )


def transaction_rest(
    sender: str,
    recipients: Sequence[str],
    body: Body,
    result: SendResult,
    replies: list[Reply],
    rcpt_lines: Sequence[bytes],
    *,
    pipelining: bool,
    use_bdat: bool,
    lmtp: bool,
    check_8bit: bool,
) -> Generator[Exchange | _Close, list[Reply], SendResult]:
    """:func:`transaction` from the replies to its first exchange on (MAIL's, or with
    PIPELINING the whole group's): every check, refusal, RSET and the content."""
    n = len(recipients)

    # MAIL
    mail_reply = replies[0]
    result.mail_reply = mail_reply
    if mail_reply.code != 250:
        if pipelining and not use_bdat and len(replies) == n + 2 and replies[-1].code == 354:
            yield Exchange(b".\r\n", 1, FINAL)  # a server that took DATA anyway: end it empty
        yield from _abandon(mail_reply)
        raise _with_result(SMTPSenderRefused(mail_reply.code, mail_reply.message, sender), result)

    # RCPT
    for i, rcpt in enumerate(recipients):
        if pipelining:
            reply = replies[1 + i]
        else:
            reply = (yield Exchange(rcpt_lines[i], 1))[0]
        result.rcpt_replies[rcpt] = reply
        if reply.code not in (250, 251):
            result[rcpt] = (reply.code, reply.message)
            if reply.code == 421:
                yield CLOSE
                raise _with_result(SMTPRecipientsRefused(dict(result)), result)
    accepted = [r for r in recipients if r not in result]

    if use_bdat:
        if pipelining:
            final = replies[1 + n]
        else:
            if not accepted:
                yield from rset_operation()
                raise _with_result(SMTPRecipientsRefused(dict(result)), result)
            size = body.bdat_size
            assert size is not None
            try:
                final = (yield Exchange(b"BDAT %d LAST\r\n" % size, 1, FINAL, stream=body.bdat_stream()))[0]
            except SMTPUnknownOutcome as exc:
                exc.result = result
                raise
        result.data_reply = final
        if not accepted:
            yield from _abandon(final)
            raise _with_result(SMTPRecipientsRefused(dict(result)), result)
        if final.code != 250:
            yield from _abandon(final)
            raise _with_result(SMTPDataError(final.code, final.message), result)
        return result

    # DATA
    if pipelining:
        data_reply = replies[1 + n]
    elif accepted:
        data_reply = (yield Exchange(b"DATA\r\n", 1, DATA_INIT))[0]
    else:
        yield from rset_operation()
        raise _with_result(SMTPRecipientsRefused(dict(result)), result)
    if not accepted:
        if data_reply.code == 354:  # RFC 2920 3.1: end the empty DATA, then report
            yield Exchange(b".\r\n", 1, FINAL)
        yield from _abandon(data_reply)
        raise _with_result(SMTPRecipientsRefused(dict(result)), result)
    if data_reply.code != 354:
        result.data_reply = data_reply
        yield from _abandon(data_reply)
        raise _with_result(SMTPDataError(data_reply.code, data_reply.message), result)

    expected = len(accepted) if lmtp else 1
    try:
        finals = yield Exchange(b"", expected, FINAL, stream=body.data_stream(check_8bit))
    except SMTPUnknownOutcome as exc:
        exc.result = result
        raise
    if lmtp:
        for rcpt, reply in zip(accepted, finals, strict=False):
            result.delivery[rcpt] = reply
            if reply.code != 250:
                result[rcpt] = (reply.code, reply.message)
        result.data_reply = finals[-1]
        if all(result.delivery.get(r) is None or result.delivery[r].code != 250 for r in accepted):
            first = next((r for r in finals if r.code != 250), finals[-1])
            yield from _abandon(first)
            raise _with_result(SMTPDataError(first.code, first.message), result)
        return result
    final = finals[0]
    result.data_reply = final
    if final.code != 250:
        yield from _abandon(final)
        raise _with_result(SMTPDataError(final.code, final.message), result)
    return result


def auth_operation(
    mechanism: str,
    respond: Callable[[bytes | None], bytes | None],
    *,
    initial_response_ok: bool = True,
    max_rounds: int = MAX_CHALLENGES,
    on_round: Callable[[int], None] | None = None,
) -> Generator[Exchange | _Close, list[Reply], Reply]:
    """AUTH with any SASL mechanism; the log never shows what is sent (security.md E1).

    ``respond(challenge)`` returns the bytes to send (before base64) for a decoded
    challenge, or for ``None``, the initial response (``None`` if the mechanism has none).
    Gives up after ``max_rounds`` challenges, so a server answering 334 forever cannot
    keep the password going round (E4).
    """
    mechanism = mechanism.upper()
    check_no_controls(mechanism, "AUTH mechanism")
    initial = respond(None) if initial_response_ok else None
    if on_round:
        on_round(0)
    if initial is not None:
        encoded = base64.b64encode(initial).decode("ascii") or "="
        line = f"AUTH {mechanism} {encoded}".encode("ascii") + CRLF
        rounds = 1
    else:
        line = f"AUTH {mechanism}".encode("ascii") + CRLF
        rounds = 0
    if on_round:
        on_round(rounds)
    reply = (yield Exchange(line, 1, log=f"AUTH {mechanism}" + (" [redacted]" if initial is not None else "")))[0]
    while reply.code == 334:
        rounds += 1
        if on_round:
            on_round(rounds)
        if rounds > max_rounds:
            yield Exchange(b"*\r\n", 1, log="* (cancel AUTH)")
            raise SMTPException(
                "Server AUTH mechanism infinite loop. Last response: " + repr((reply.code, reply.message))
            )
        try:
            challenge = base64.b64decode(reply.message, validate=True)
        except (binascii.Error, ValueError):
            yield Exchange(b"*\r\n", 1, log="* (cancel AUTH)")
            raise SMTPAuthenticationError(reply.code, b"server sent an AUTH challenge that is not base64") from None
        answer = respond(challenge)
        encoded = base64.b64encode(answer or b"").decode("ascii")
        reply = (yield Exchange(encoded.encode("ascii") + CRLF, 1, log="[redacted]"))[0]
    if reply.code in (235, 503):
        return reply
    raise SMTPAuthenticationError(reply.code, reply.message)


@dataclass(slots=True)
class Outgoing:
    """One message for :func:`batch`: envelope, content and options."""

    sender: str
    recipients: Sequence[str]
    body: Body
    mail_options: Sequence[str] = ()
    rcpt_options: Sequence[str] | Mapping[str, Sequence[str]] = ()


def outgoing_items(messages: Iterable[Outgoing | tuple[str, Sequence[str], Any]]) -> list[Outgoing]:
    """``send_many``'s input: Outgoing items, or ``(sender, recipients, message)`` tuples."""
    return [m if isinstance(m, Outgoing) else Outgoing(m[0], m[1], Body(m[2])) for m in messages]


def fill_not_attempted(results: Sequence[SendResult | BaseException | None]) -> list[SendResult | BaseException]:
    """``send_many``'s output: a message that never got an outcome was never started."""
    return [
        r if r is not None else SMTPNotAttempted("not attempted: the connection was lost before it") for r in results
    ]


def _prepare(
    item: Outgoing, caps: Capabilities, plan: tuple[int | None, bool, bool]
) -> tuple[bytes, list[str], SendResult]:
    """The MAIL/RCPT lines for one message, checked exactly as :func:`transaction` checks them."""
    recipients = [item.recipients] if isinstance(item.recipients, str) else list(item.recipients)
    head = None
    if _no_options(item.mail_options) and _no_options(item.rcpt_options):
        head = _plain_envelope(item.sender, recipients, item.body, plan)
    if head is None:
        mail_line, rcpt_lines = envelope_lines(
            item.sender,
            recipients,
            item.body,
            caps=caps,
            esmtp=True,
            mail_options=item.mail_options,
            rcpt_options=item.rcpt_options,
        )
        head = mail_line + b"".join(rcpt_lines)
    result = SendResult(item.sender, recipients)
    result.size = item.body.size
    return head, recipients, result


def batch(
    items: Iterable[Outgoing],
    *,
    caps: Capabilities,
    on_result: Callable[[int, SendResult | BaseException], None],
) -> Generator[Exchange | _Close, list[Reply], int]:
    """Many messages over one pipelining connection, one round trip per message.

    RFC 2920 3.1 lets a message's content open the next group, so each write carries the
    previous message's content and the next message's MAIL, RCPTs and DATA; every reply
    is checked and attributed to its message. ``on_result(index, result_or_error)`` is
    called for each message as soon as its outcome is known (an error is one of
    smtplib's exceptions with ``.result``). A message whose content was sent but whose
    final reply never came gets :class:`SMTPUnknownOutcome`; messages not yet started
    when the connection fails are left for the caller (the count of finished messages
    is returned). After a failed transaction an RSET opens the next group.
    """
    plan = _envelope_plan(caps)
    pending: tuple[int, SendResult, Body] | None = None  # accepted for DATA, content not yet sent
    need_rset = False
    done = 0
    iterator = iter(items)
    index = -1
    while True:
        nxt = next(iterator, None)
        if nxt is not None:
            index += 1
            try:
                head, recipients, result = _prepare(nxt, caps, plan)
            except (SMTPException, ValueError, TypeError) as exc:
                on_result(index, exc)
                done += 1
                continue
        if pending is None and nxt is None:
            if need_rset:  # leave no failed transaction open for whoever uses the connection next
                yield from rset_operation()
            return done
        parts: list[bytes] = []
        stream: list[bytes] = []
        expected = 0
        if pending is not None:
            stream = list(pending[2].data_stream(False))
            expected += 1
        if nxt is not None:
            if need_rset:
                parts.append(b"RSET\r\n")
                expected += 1
            parts.append(head + b"DATA\r\n")
            expected += 2 + len(recipients)
        chunks = [*stream, *parts]
        phase = FINAL if pending is not None else COMMAND
        try:
            if sum(map(len, chunks)) <= STREAM_CHUNK:  # one write (one syscall) for the common case
                replies = yield Exchange(b"".join(chunks), expected, phase)
            else:
                replies = yield Exchange(b"", expected, phase, stream=chunks)
        except SMTPServerDisconnected as exc:
            if pending is not None:
                if isinstance(exc, SMTPNotAttempted):  # its content was never written: not delivered
                    lost = SMTPServerDisconnected(f"connection lost before the message content was sent: {exc}")
                    on_result(pending[0], _with_result(lost, pending[1]))
                else:
                    unknown = exc if isinstance(exc, SMTPUnknownOutcome) else SMTPUnknownOutcome(str(exc))
                    unknown.result = pending[1]
                    on_result(pending[0], unknown)
                done += 1
            # found closed before anything was written: the next message never started (the
            # caller sees it as not attempted); otherwise its commands went out but not its content
            if nxt is not None and not isinstance(exc, SMTPNotAttempted):
                lost = SMTPServerDisconnected(f"connection lost before the message content was sent: {exc}")
                on_result(index, _with_result(lost, result))
                done += 1
            return done
        position = 0
        if pending is not None:
            final = replies[0]
            position = 1
            pidx, presult, _ = pending
            presult.data_reply = final
            pending = None
            if final.code == 250:
                on_result(pidx, presult)
            else:
                on_result(pidx, _with_result(SMTPDataError(final.code, final.message), presult))
                need_rset = True
            done += 1
            if final.code == 421 or len(replies) < expected:
                yield CLOSE
                return done
        if nxt is None:
            if need_rset:
                yield from rset_operation()
            return done
        if need_rset:
            position += 1  # the RSET's reply
            need_rset = False
        mine = replies[position:]
        if len(mine) < 2 + len(recipients):  # the server said 421 part-way and closed
            if mine:
                result.mail_reply = mine[0]
                for rcpt, reply in zip(recipients, mine[1:], strict=False):
                    result.rcpt_replies[rcpt] = reply
                    if reply.code not in (250, 251):
                        result[rcpt] = (reply.code, reply.message)
                if mine[0].code != 250:
                    early: SMTPException = SMTPSenderRefused(mine[0].code, mine[0].message, nxt.sender)
                else:
                    early = SMTPRecipientsRefused(dict(result))
                on_result(index, _with_result(early, result))
                done += 1
            yield CLOSE
            return done
        mail_reply, rcpt_replies, data_reply = mine[0], mine[1:-1], mine[-1]
        result.mail_reply = mail_reply
        for rcpt, reply in zip(recipients, rcpt_replies, strict=True):
            result.rcpt_replies[rcpt] = reply
            if reply.code not in (250, 251):
                result[rcpt] = (reply.code, reply.message)
        if mail_reply.code == 250 and len(result) < len(recipients) and data_reply.code == 354:
            pending = (index, result, nxt.body)
            continue
        # this message failed before its content: report it, end any open DATA, RSET next time
        error: SMTPException
        if mail_reply.code != 250:
            error = SMTPSenderRefused(mail_reply.code, mail_reply.message, nxt.sender)
        elif len(result) == len(recipients):
            error = SMTPRecipientsRefused(dict(result))
        else:
            result.data_reply = data_reply
            error = SMTPDataError(data_reply.code, data_reply.message)
        on_result(index, _with_result(error, result))
        done += 1
        need_rset = True
        if 421 in (mail_reply.code, data_reply.code) or any(r.code == 421 for r in rcpt_replies):
            yield CLOSE
            return done
        if data_reply.code == 354:  # the server took DATA anyway: end it empty
            yield Exchange(b".\r\n", 1, FINAL)
