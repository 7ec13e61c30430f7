"""ReplyParser, run against both twins (security.md section 1)."""

from __future__ import annotations

from types import ModuleType

import pytest
from chunking import all_splits, bytewise, chunkings

from smtpkit.errors import SMTPProtocolError, SMTPServerDisconnected
from smtpkit.reply import Reply


def run(twin: ModuleType, chunks: list[bytes], **limits: int) -> tuple[list[tuple[int, bytes]], str | None]:
    """Feed ``chunks``; return every reply received and the error reason, if any."""
    parser = twin.ReplyParser(**limits)
    got: list[tuple[int, bytes]] = []
    for chunk in chunks:
        try:
            got.extend(parser.feed(chunk))
        except SMTPProtocolError as exc:
            got.extend(exc.replies)
            return got, exc.reason
    return got, None


def parse_all(twin: ModuleType, data: bytes, **limits: int) -> tuple[list[tuple[int, bytes]], str | None]:
    """Parse ``data`` under many chunkings; they must all agree. Returns the common result."""
    first = run(twin, [data], **limits)
    for chunks in chunkings(data):
        assert run(twin, chunks, **limits) == first, chunks
    return first


EHLO = (
    b"250-mx.example.org Hello client [127.0.0.1]\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-8BITMIME\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250 SMTPUTF8\r\n"
)


class TestWellFormed:
    def test_single_line(self, twin: ModuleType) -> None:
        assert parse_all(twin, b"250 OK\r\n") == ([(250, b"OK")], None)

    def test_multiline_joined_like_smtplib(self, twin: ModuleType) -> None:
        replies, err = parse_all(twin, EHLO)
        assert err is None
        assert replies == [
            (
                250,
                b"mx.example.org Hello client [127.0.0.1]\nPIPELINING\nSIZE 10240000"
                b"\n8BITMIME\nAUTH PLAIN LOGIN\nSMTPUTF8",
            )
        ]

    def test_returns_reply_objects(self, twin: ModuleType) -> None:
        [reply] = twin.ReplyParser().feed(EHLO)
        assert type(reply) is Reply
        code, message = reply
        assert (code, reply.code) == (250, 250)
        assert reply.lines[1:3] == [b"PIPELINING", b"SIZE 10240000"]
        assert message == reply.message

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (b"250\r\n", (250, b"")),  # A5: no SP, no text
            (b"250 \r\n", (250, b"")),
            (b"250  spaced out \t\r\n", (250, b"spaced out")),  # stripped like smtplib
            (b"250 ok\n", (250, b"ok")),  # bare LF ending accepted (like smtplib and Postfix)
            (b"599 x\r\n", (599, b"x")),
            (b"200 x\r\n", (200, b"x")),
            (b"250 caf\xc3\xa9 \xff\r\n", (250, b"caf\xc3\xa9 \xff")),  # bytes kept, not decoded
            (b"250 tab\there\r\n", (250, b"tab\there")),
        ],
    )
    def test_line_forms(self, twin: ModuleType, line: bytes, expected: tuple[int, bytes]) -> None:
        assert parse_all(twin, line) == ([expected], None)

    def test_empty_continuation_lines(self, twin: ModuleType) -> None:
        assert parse_all(twin, b"250-\r\n250-a\r\n250\r\n") == ([(250, b"\na\n")], None)

    def test_several_replies_in_one_segment(self, twin: ModuleType) -> None:  # A11
        parser = twin.ReplyParser()
        got = parser.feed(b"250 a\r\n250 b\r\n354 go\r\n250-partial\r\n25")
        assert got == [(250, b"a"), (250, b"b"), (354, b"go")]
        assert parser.pending == len(b"250-partial\r\n25")
        assert parser.feed(b"0 done\r\n") == [(250, b"partial\ndone")]
        assert parser.pending == 0

    def test_rfc_maximum_line(self, twin: ModuleType) -> None:  # A1: 512 octets with CRLF
        line = b"250 " + b"x" * (512 - 6) + b"\r\n"
        assert len(line) == 512
        assert parse_all(twin, line) == ([(250, b"x" * 506)], None)

    def test_line_exactly_at_cap(self, twin: ModuleType) -> None:
        line = b"250 " + b"y" * (8192 - 6) + b"\r\n"
        assert run(twin, [line]) == ([(250, b"y" * 8186)], None)
        assert run(twin, bytewise(line)) == ([(250, b"y" * 8186)], None)

    def test_reset_drops_partial_data(self, twin: ModuleType) -> None:
        parser = twin.ReplyParser()
        assert parser.feed(b"220 go ahead\r\n250-evil\r\n250 AUTH") == [(220, b"go ahead")]
        assert parser.reset() == len(b"250-evil\r\n250 AUTH")
        assert parser.pending == 0
        assert parser.feed(b"250 fresh\r\n") == [(250, b"fresh")]

    def test_bytes_like_input(self, twin: ModuleType) -> None:
        parser = twin.ReplyParser()
        assert parser.feed(bytearray(b"250 a\r\n")) == [(250, b"a")]
        assert parser.feed(memoryview(b"250 b\r\n")) == [(250, b"b")]
        assert parser.feed(b"") == []

    def test_str_input_is_a_type_error(self, twin: ModuleType) -> None:
        with pytest.raises(TypeError, match="not str"):
            twin.ReplyParser().feed("250 ok\r\n")


class TestEnhancedStatus:  # A12
    @pytest.mark.parametrize(
        ("data", "enhanced"),
        [
            (b"550 5.1.1 <x@y>: Recipient address rejected\r\n", (5, 1, 1)),
            (b"250 2.1.0 Ok\r\n", (2, 1, 0)),
            (b"250 2.0.0\r\n", (2, 0, 0)),
            (b"452 4.5.3 Too many recipients\r\n", (4, 5, 3)),
            (b"550-5.7.1 first\r\n550 5.7.1 second\r\n", (5, 7, 1)),
            (b"554 5.123.456 big numbers\r\n", (5, 123, 456)),
            (b"550 4.2.2 class disagrees with code\r\n", None),
            (b"250 5.0.0 class disagrees\r\n", None),
            (b"220 2.0.0 Ready to start TLS\r\n", None),  # greetings never carry one
            (b"354 2.0.0 go ahead\r\n", None),  # nor 3xx
            (b"550 5.1.1234 too many digits\r\n", None),
            (b"550 5.1 short\r\n", None),
            (b"550 5..1 empty\r\n", None),
            (b"550 5.1.1x glued\r\n", None),
            (b"550 mailbox unavailable\r\n", None),
            (b"550\r\n", None),
        ],
    )
    def test_enhanced(self, twin: ModuleType, data: bytes, enhanced: tuple[int, int, int] | None) -> None:
        [reply] = twin.ReplyParser().feed(data)
        assert reply.enhanced == enhanced

    def test_ehlo_reply_never_has_one(self, twin: ModuleType) -> None:
        [reply] = twin.ReplyParser().feed(b"250-2.0.0 odd host name\r\n250 SIZE\r\n")
        assert reply.enhanced == (2, 0, 0)  # the parser cannot know the command...
        plain = reply.without_enhanced()  # ...the client marks EHLO replies
        assert plain.enhanced is None
        assert plain == reply


BAD_LINES = [
    (b"2x0 ok\r\n", "malformed"),
    (b"25\r\n", "malformed"),
    (b"\r\n", "malformed"),
    (b"\n", "malformed"),
    (b"2500 x\r\n", "malformed"),
    (b" 250 x\r\n", "malformed"),
    (b"250\tx\r\n", "malformed"),
    (b"250_x\r\n", "malformed"),
    (b"\xb2\xb5\xb0 x\r\n", "malformed"),
    (b"000 x\r\n", "code-range"),
    (b"199 x\r\n", "code-range"),
    (b"600 x\r\n", "code-range"),
    (b"999\r\n", "code-range"),
    (b"250 a\x00b\r\n", "control-char"),
    (b"250 a\rb\r\n", "control-char"),  # bare CR inside a line
    (b"250 a\r\r\n", "control-char"),
    (b"250 a\x1bb\r\n", "control-char"),
    (b"250 a\x7f\r\n", "control-char"),
    (b"250-a\r\n451 b\r\n", "mixed-codes"),  # A8: never report success
    (b"250-a\r\n250-b\r\n251 c\r\n", "mixed-codes"),
]


class TestHostile:
    @pytest.mark.parametrize(("data", "reason"), BAD_LINES)
    def test_malformed(self, twin: ModuleType, data: bytes, reason: str) -> None:  # A6, A8
        assert parse_all(twin, data) == ([], reason)

    @pytest.mark.parametrize(("data", "reason"), BAD_LINES)
    def test_error_is_catchable_as_smtplib(self, twin: ModuleType, data: bytes, reason: str) -> None:
        import smtplib

        with pytest.raises(smtplib.SMTPServerDisconnected) as info:
            twin.ReplyParser().feed(data)
        assert isinstance(info.value, SMTPServerDisconnected)
        assert info.value.reason == reason
        assert "from server" in str(info.value)

    def test_no_resync_after_garbage(self, twin: ModuleType) -> None:  # A7
        parser = twin.ReplyParser()
        with pytest.raises(SMTPProtocolError) as info:
            parser.feed(b"250 first\r\ngarbage\r\n250 looks fine\r\n")
        assert info.value.replies == [(250, b"first")]  # what came before the fault is kept
        with pytest.raises(SMTPProtocolError) as again:  # ...and nothing after it, ever
            parser.feed(b"250 later\r\n")
        assert again.value.reason == "broken"
        assert again.value.replies == []

    def test_error_message_does_not_dump_huge_lines(self, twin: ModuleType) -> None:
        with pytest.raises(SMTPProtocolError) as info:
            twin.ReplyParser().feed(b"2x0 " + b"A" * 5000 + b"\r\n")
        assert len(str(info.value)) < 200

    def test_line_over_cap(self, twin: ModuleType) -> None:  # A1
        line = b"250 " + b"x" * (8192 - 5) + b"\r\n"  # 8193 bytes
        assert parse_all(twin, line) == ([], "line-too-long")

    def test_megabyte_without_lf_fails_early_with_bounded_memory(self, twin: ModuleType) -> None:  # A1
        parser = twin.ReplyParser()
        block = b"250 " + b"z" * 1000
        fed = 0
        with pytest.raises(SMTPProtocolError) as info:
            while fed < 1 << 20:
                parser.feed(block)
                fed += len(block)
                assert parser.pending < 8192
        assert info.value.reason == "line-too-long"
        assert fed < 8192

    def test_custom_line_cap(self, twin: ModuleType) -> None:
        assert run(twin, [b"250 1234\r\n"], max_line_length=10) == ([(250, b"1234")], None)
        assert run(twin, [b"250 12345\r\n"], max_line_length=10) == ([], "line-too-long")
        assert run(twin, bytewise(b"250 12345\r\n"), max_line_length=10) == ([], "line-too-long")

    def test_endless_continuation_lines(self, twin: ModuleType) -> None:  # A2
        parser = twin.ReplyParser()
        lines = 0
        with pytest.raises(SMTPProtocolError) as info:
            for _ in range(10**6):
                parser.feed(b"250-x\r\n")
                lines += 1
                assert parser.pending <= 65536
        assert info.value.reason == "too-many-lines"
        assert lines == 1000

    def test_reply_byte_cap(self, twin: ModuleType) -> None:  # A2
        line = b"250-" + b"x" * 1000 + b"\r\n"
        data = line * 70
        assert run(twin, [data]) == ([], "reply-too-long")
        assert run(twin, [data], max_reply_bytes=len(line) * 70) == ([], None)
        assert run(twin, [data], max_reply_lines=50, max_reply_bytes=10**6) == ([], "too-many-lines")

    def test_reply_caps_are_inclusive(self, twin: ModuleType) -> None:  # A2
        # a reply of exactly max_reply_lines lines / max_reply_bytes bytes is accepted,
        # one line or one byte more is refused, whichever line (middle or last) crosses
        body = b"250-x\r\n" * 4 + b"250 y\r\n"
        ok = ([(250, b"x\nx\nx\nx\ny")], None)
        assert parse_all(twin, body, max_reply_lines=5) == ok
        assert parse_all(twin, body, max_reply_lines=4) == ([], "too-many-lines")
        assert parse_all(twin, body, max_reply_bytes=len(body)) == ok
        assert parse_all(twin, body, max_reply_bytes=len(body) - 1) == ([], "reply-too-long")
        assert parse_all(twin, body, max_reply_bytes=len(body) - 8) == ([], "reply-too-long")
        # the caps count each reply on its own
        assert parse_all(twin, body * 3, max_reply_lines=5, max_reply_bytes=len(body)) == (
            ok[0] * 3,
            None,
        )

    @pytest.mark.timeout(60)
    def test_linear_when_dripped(self, twin: ModuleType) -> None:  # A2/A10: no rescanning
        # 64 KiB reply, one byte per call: a quadratic parser needs ~2e9 steps here
        data = (b"250-" + b"x" * 60 + b"\r\n") * 999 + b"250 end\r\n"
        parser = twin.ReplyParser(max_reply_bytes=1 << 20)
        got = []
        for i in range(len(data)):
            got.extend(parser.feed(data[i : i + 1]))
        assert len(got) == 1
        assert len(got[0].lines) == 1000

    def test_bad_limits(self, twin: ModuleType) -> None:
        with pytest.raises(ValueError):
            twin.ReplyParser(max_line_length=2)


class TestSegmentation:  # A10
    @pytest.mark.parametrize(
        "data",
        [
            b"250 a\r\n250 b\r\n354 go\r\n",
            b"250-x\r\n250 y\r\n",
            b"250-a\r\n451 b\r\n",
            b"220 hi\r\n2x0\r\n",
        ],
    )
    def test_every_three_way_split(self, twin: ModuleType, data: bytes) -> None:
        expected = run(twin, [data])
        for chunks in all_splits(data, 3):
            assert run(twin, chunks) == expected, chunks
