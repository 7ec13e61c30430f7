"""The SMTP reply type returned by the parser and by every client call.

A :class:`Reply` *is* a ``(code, message)`` tuple, exactly what smtplib returns
(``message`` is the reply's lines joined with ``b"\\n"``, each stripped of surrounding
spaces and tabs), so ``code, msg = smtp.noop()`` and ``smtp.noop() == (250, b"OK")`` keep
working. On top of that it has ``.code``, ``.message``, ``.lines``, ``.text`` and
``.enhanced`` (the RFC 3463 status), all derived on access so that building a reply on
the hot path costs no more than building a tuple.
"""

from __future__ import annotations

__all__ = ["Reply", "parse_enhanced"]


def parse_enhanced(code: int, first_line: bytes) -> tuple[int, int, int] | None:
    """The RFC 3463 status at the start of ``first_line``, if it is valid for ``code``.

    ``class.subject.detail`` with class 2, 4 or 5 equal to the first digit of the reply
    code (RFC 2034 section 4: they must agree; a mismatch falls back to the basic code),
    subject and detail of one to three digits, then a space, a tab or the end. Greetings
    (220) and intermediate (3xx) replies never carry one.
    """
    if code == 220 or not 200 <= code < 600 or 300 <= code < 400:
        return None
    n = len(first_line)
    if n < 5 or first_line[1] != 0x2E:  # "."
        return None
    cls = first_line[0] - 0x30
    if cls != code // 100:
        return None
    numbers = [cls]
    i = 2
    for part in range(2):
        start = i
        while i < n and 0x30 <= first_line[i] <= 0x39 and i - start < 4:
            i += 1
        width = i - start
        if not 1 <= width <= 3:
            return None
        numbers.append(int(first_line[start:i]))
        if part == 0:
            if i >= n or first_line[i] != 0x2E:
                return None
            i += 1
    if i < n and first_line[i] not in (0x20, 0x09):
        return None
    return (numbers[0], numbers[1], numbers[2])


class Reply(tuple):  # type: ignore[type-arg]
    """One SMTP reply: a ``(code, message)`` tuple with extra, derived attributes."""

    __slots__ = ()

    def __new__(cls, code: int, message: bytes = b"") -> Reply:
        return tuple.__new__(cls, (code, message))

    def __getnewargs__(self) -> tuple[int, bytes]:  # pickling and copy
        return (self[0], self[1])

    @property
    def code(self) -> int:
        """The three-digit reply code."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def message(self) -> bytes:
        """The reply text, lines joined with ``b"\\n"`` (smtplib's ``msg``)."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def lines(self) -> list[bytes]:
        """The text of each reply line, in order."""
        return self[1].split(b"\n")  # type: ignore[no-any-return]

    @property
    def text(self) -> str:
        """The reply text as ``str`` (UTF-8; undecodable bytes kept as escapes)."""
        return self[1].decode("utf-8", "backslashreplace")  # type: ignore[no-any-return]

    @property
    def enhanced(self) -> tuple[int, int, int] | None:
        """The RFC 3463 enhanced status code as ``(class, subject, detail)``, or None."""
        if not self._may_have_enhanced:
            return None
        message: bytes = self[1]
        end = message.find(b"\n")
        return parse_enhanced(self[0], message if end < 0 else message[:end])

    @property
    def is_positive(self) -> bool:
        """2xx: the command succeeded."""
        return 200 <= self[0] < 300  # type: ignore[no-any-return]

    @property
    def is_intermediate(self) -> bool:
        """3xx: the server waits for more (DATA's 354, AUTH's 334)."""
        return 300 <= self[0] < 400  # type: ignore[no-any-return]

    @property
    def is_transient(self) -> bool:
        """4xx: a temporary failure; trying again later may work."""
        return 400 <= self[0] < 500  # type: ignore[no-any-return]

    @property
    def is_permanent(self) -> bool:
        """5xx: a permanent failure."""
        return 500 <= self[0] < 600  # type: ignore[no-any-return]

    _may_have_enhanced = True

    def without_enhanced(self) -> Reply:
        """This reply, marked as one that carries no enhanced status (EHLO replies)."""
        return _PlainReply(self[0], self[1])


class _PlainReply(Reply):
    """A reply whose first word is never an enhanced status code (the EHLO reply)."""

    __slots__ = ()
    _may_have_enhanced = False
