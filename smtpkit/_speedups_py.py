"""Pure-Python twin of the hot path (``src_ext/_speedups.pyx``).

Two kernels, stateless apart from the streaming state they are handed:

* :class:`ReplyParser` turns received bytes into :class:`~smtpkit.reply.Reply` objects.
* :class:`DataEncoder` / :func:`encode_data` turn message bytes into what is sent after
  DATA: line endings normalised to CRLF, leading dots doubled, one ``CRLF.CRLF`` at the end.

This module is the reference: the Cython module must behave identically, byte for byte
and exception for exception, whatever the input and however it is chunked. The rules are
written out in the docstrings below and tested against both.
"""

from __future__ import annotations

import re

from ._compat import Buffer
from .errors import (
    SMTPProtocolError,
    line_too_long_in_data,
    nul_in_data,
    parser_broken,
    reply_error,
)
from .reply import Reply

__all__ = [
    "MAX_DATA_LINE_LENGTH",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "DataEncoder",
    "ReplyParser",
    "encode_data",
]

MAX_LINE_LENGTH = 8192
"""Longest reply line accepted, CRLF included (RFC 5321 says 512; EHLO lines run longer)."""
MAX_REPLY_BYTES = 65536
"""Longest reply accepted, all lines and line endings included."""
MAX_REPLY_LINES = 1000
"""Most lines accepted in one reply."""
MAX_DATA_LINE_LENGTH = 998
"""Longest line of message data, CRLF and any stuffed dot excluded (RFC 5321 4.5.3.1.6)."""


def _as_bytes(data: object) -> bytes:
    if isinstance(data, str):
        raise TypeError("expected a bytes-like object, not str")
    if type(data) is bytes:
        return data
    return bytes(memoryview(data).cast("B"))  # type: ignore[arg-type]


class ReplyParser:
    """Incremental reply parser: ``feed(bytes) -> list[Reply]``.

    Rules, applied to each line (a line ends at LF; one CR before the LF is dropped):

    * the line is ``DDD``, ``DDD SP text`` or ``DDD-text``: three digits, the first 2-5,
      then nothing, a space (the last line) or a hyphen (more lines follow);
    * the text holds no control character other than TAB (no NUL, no bare CR, ...);
    * every line of a reply has the same code;
    * a line is at most ``max_line_length`` bytes with its line ending, and a reply at
      most ``max_reply_bytes`` bytes and ``max_reply_lines`` lines. A partial line that
      already reaches ``max_line_length`` bytes fails at once, so memory stays bounded.

    Any violation raises :class:`~smtpkit.errors.SMTPProtocolError` carrying the replies
    completed earlier in the same call; afterwards the parser stays failed (the
    connection must be closed: nothing after garbage can be trusted). The text of each
    line is stripped of surrounding spaces and tabs and the lines are joined with LF,
    exactly as smtplib does.
    """

    __slots__ = (
        "_buf",
        "_code",
        "_error",
        "_lines",
        "_nbytes",
        "max_line_length",
        "max_reply_bytes",
        "max_reply_lines",
    )

    def __init__(
        self,
        max_line_length: int = MAX_LINE_LENGTH,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_reply_lines: int = MAX_REPLY_LINES,
    ) -> None:
        if max_line_length < 5 or max_reply_bytes < 5 or max_reply_lines < 1:
            raise ValueError("reply limits are too small")
        self.max_line_length = max_line_length
        self.max_reply_bytes = max_reply_bytes
        self.max_reply_lines = max_reply_lines
        self._buf = bytearray()  # the partial line (never holds an LF)
        self._code = 0  # code of the reply in progress, 0 if none
        self._lines: list[bytes] = []  # text of its lines so far
        self._nbytes = 0  # its size so far
        self._error: SMTPProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned in a reply (a partial line or reply)."""
        return len(self._buf) + self._nbytes

    def reset(self) -> int:
        """Forget any partial data (before a TLS handshake); return how many bytes."""
        dropped = self.pending
        self._buf.clear()
        self._code = 0
        self._lines = []
        self._nbytes = 0
        return dropped

    def feed(self, data: Buffer) -> list[Reply]:
        """Add received bytes; return every reply they complete, in order."""
        if self._error is not None:
            raise parser_broken(self._error)
        chunk = _as_bytes(data)
        replies: list[Reply] = []
        buf = self._buf
        limit = self.max_line_length
        pos = 0
        end = len(chunk)
        try:
            if buf:
                lf = chunk.find(b"\n")
                if lf < 0:
                    if len(buf) + end >= limit:
                        raise reply_error("line-too-long", limit=limit)
                    buf += chunk
                    return replies
                if len(buf) + lf + 1 > limit:
                    raise reply_error("line-too-long", limit=limit)
                self._line(bytes(buf) + chunk[: lf + 1], replies)  # buf unchanged if it fails
                buf.clear()
                pos = lf + 1
            while pos < end:
                lf = chunk.find(b"\n", pos, pos + limit)
                if lf < 0:
                    if end - pos >= limit:
                        raise reply_error("line-too-long", limit=limit)
                    buf += chunk[pos:]
                    break
                self._line(chunk[pos : lf + 1], replies)
                pos = lf + 1
        except SMTPProtocolError as exc:
            exc.replies = replies
            self._error = exc
            raise
        return replies

    def _line(self, line: bytes, replies: list[Reply]) -> None:
        size = len(line)  # with its LF
        body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        n = len(body)
        if n < 3 or not body[:3].isdigit() or (n > 3 and body[3] not in b" -"):
            raise reply_error("malformed", body)
        code = int(body[:3])
        if not 200 <= code < 600:
            raise reply_error("code-range", body)
        text = body[4:]
        if _CONTROL.search(text):
            raise reply_error("control-char", body)
        if self._code and code != self._code:
            raise reply_error("mixed-codes", body)
        self._code = code
        self._nbytes += size
        if self._nbytes > self.max_reply_bytes:
            raise reply_error("reply-too-long", limit=self.max_reply_bytes)
        self._lines.append(text.strip(b" \t"))
        if len(self._lines) > self.max_reply_lines:
            raise reply_error("too-many-lines", limit=self.max_reply_lines)
        if n == 3 or body[3] == 0x20:
            replies.append(Reply(code, b"\n".join(self._lines)))
            self._code = 0
            self._lines = []
            self._nbytes = 0


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BREAK = re.compile(rb"\r\n|\r|\n")


class DataEncoder:
    """Streaming DATA encoder: ``feed(chunk) -> bytes`` for each chunk, then ``finish()``.

    Rules, applied to the stream as a whole so that every chunking gives the same bytes:

    * CRLF, a bare CR and a bare LF each become one CRLF (so ``CR CR LF`` is two);
    * after that, a ``.`` at the start of a line (and of the data) is doubled;
    * a NUL byte raises :class:`~smtpkit.errors.MessageDataError` (DATA cannot carry it);
    * so does a line longer than ``max_line_length`` bytes (CRLF and the stuffed dot not
      counted); ``max_line_length=0`` lifts that limit;
    * ``finish()`` ends the data with exactly one ``CRLF.CRLF``: it returns ``.CRLF`` when
      the output so far ends with a line break, else ``CRLF.CRLF``; then the encoder is
      ready for a new message.

    Errors are raised for the first faulty byte in stream order; a failing ``feed``
    changes nothing. ``feed`` returns the very chunk it was given when the chunk is
    ``bytes`` and needs no change.
    """

    __slots__ = ("_bol", "_last_cr", "_line_start", "_offset", "_started", "max_line_length")

    def __init__(self, max_line_length: int = MAX_DATA_LINE_LENGTH) -> None:
        if max_line_length < 0:
            raise ValueError("max_line_length must be >= 0")
        self.max_line_length = max_line_length
        self._reset()

    def _reset(self) -> None:
        self._last_cr = False  # the previous byte was a CR, already sent as CRLF
        self._bol = True  # the next byte starts a line
        self._started = False  # any output yet
        self._line_start = 0  # offset of the current line's first byte
        self._offset = 0  # input bytes consumed so far

    def _unchanged(self, chunk: bytes | bytearray) -> bool:
        """Whether the non-empty ``chunk`` goes out exactly as it is: CRLF text with no
        NUL, no line-leading dot and no line over the limit. Found by C-speed scans that
        copy nothing, so that such input is never copied more than once."""
        if (self._last_cr and chunk[0] == 0x0A) or (self._bol and chunk[0] == 0x2E):
            return False
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            return False  # a bare CR or LF (a CR at the end may pair with the next LF)
        if chunk.find(b"\n.") >= 0 or chunk.find(b"\x00") >= 0:
            return False
        limit = self.max_line_length
        if not limit:
            return True
        # Every line within the limit: from each line start, the last CRLF within reach
        # (rfind) is the next place to look from, so a pass takes about n / limit steps.
        n = len(chunk)
        pos = 0
        done = self._offset - self._line_start  # the line going on from the last chunk
        while n - pos + done > limit:
            end = chunk.rfind(b"\r\n", pos, pos + limit - done + 2)
            if end < 0:
                return False
            pos = end + 2
            done = 0
        return True

    def _pass(self, chunk: bytes | bytearray) -> None:
        """The state after ``chunk``, which :meth:`_unchanged` found goes out as it is."""
        last = chunk.rfind(b"\r\n")
        if last >= 0:
            self._line_start = self._offset + last + 2
        self._offset += len(chunk)
        self._last_cr = False
        self._bol = chunk[-1] == 0x0A
        self._started = True

    def feed(self, data: Buffer) -> bytes:
        """Encode the next chunk of message data."""
        chunk = _as_bytes(data)
        n = len(chunk)
        if not n:
            return b""
        if self._unchanged(chunk):
            self._pass(chunk)
            return chunk
        base = self._offset
        skip = 1 if (self._last_cr and chunk[0] == 0x0A) else 0  # LF ending a CRLF split
        line_start = base + skip if skip else self._line_start
        breaks = [(m.start(), m.end()) for m in _BREAK.finditer(chunk, skip)]
        nul = chunk.find(b"\x00", skip)
        limit = self.max_line_length
        if limit:  # the first fault in stream order wins: a long line before the NUL
            stop = n if nul < 0 else nul
            start = line_start
            for s, e in breaks:
                if s > stop:
                    break
                if base + s - start > limit:
                    raise line_too_long_in_data(start, limit)
                start = base + e
            if base + stop - start > limit:
                raise line_too_long_in_data(start, limit)
        if nul >= 0:
            raise nul_in_data(base + nul)
        parts: list[bytes] = []
        bol = self._bol
        pos = skip
        for s, e in breaks:
            if s > pos:
                if bol and chunk[pos] == 0x2E:
                    parts.append(b".")
                parts.append(chunk[pos:s])
            parts.append(b"\r\n")
            bol = True
            pos = e
        if pos < n:
            if bol and chunk[pos] == 0x2E:
                parts.append(b".")
            parts.append(chunk[pos:])
            bol = False
        if breaks:
            line_start = base + breaks[-1][1]
        self._last_cr = chunk[-1] == 0x0D
        self._bol = bol
        self._started = self._started or bool(parts)
        self._line_start = line_start
        self._offset = base + n
        out = b"".join(parts)
        return chunk if out == chunk else out

    def finish(self) -> bytes:
        """The end-of-data sequence for what was fed; resets the encoder."""
        end = b".\r\n" if (self._started and self._bol) else b"\r\n.\r\n"
        self._reset()
        return end


def encode_data(data: Buffer, max_line_length: int = MAX_DATA_LINE_LENGTH) -> bytes:
    """Encode a whole message for DATA (see :class:`DataEncoder` for the rules)."""
    encoder = DataEncoder(max_line_length)
    if type(data) is bytearray and data and encoder._unchanged(data):  # one copy, not two
        encoder._pass(data)
        return b"".join((data, encoder.finish()))
    return encoder.feed(data) + encoder.finish()
