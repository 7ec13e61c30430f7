"""DATA encoding, run against both twins (security.md section 4)."""

from __future__ import annotations

import re
import tracemalloc
from types import ModuleType

import pytest
from chunking import all_splits, at, chunkings

from smtpkit.errors import MessageDataError

SCANNER_SEQUENCES = [  # D1: SMTP smuggling scanner's end-of-data look-alikes
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]


def normalise(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def unstuff(wire: bytes) -> bytes:
    """What a receiving server reconstructs from the DATA bytes (RFC 5321 4.5.2)."""
    assert wire.endswith(b".\r\n")
    lines = wire.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[-2] == b"."
    body = [line[1:] if line.startswith(b".") else line for line in lines[:-2]]
    return b"".join(line + b"\r\n" for line in body)


def check_wire(wire: bytes) -> None:
    """Invariants of anything we put on the wire after DATA."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    assert wire.find(b"\r\n.\r\n") in (len(wire) - 5, -1)
    assert not wire.startswith(b".\r\n") or wire == b".\r\n"
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None, "bare CR or LF"
    assert b"\x00" not in wire
    for line in wire.split(b"\r\n")[:-2]:
        assert not line.startswith(b".") or line.startswith(b".."), line


def stream(twin: ModuleType, chunks: list[bytes], **kw: int) -> bytes:
    encoder = twin.DataEncoder(**kw)
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


def encode_everywhere(twin: ModuleType, data: bytes, **kw: int) -> bytes:
    """Encode ``data`` one-shot and under many chunkings; all must agree."""
    expected = twin.encode_data(data, **kw)
    for chunks in chunkings(data):
        assert stream(twin, chunks, **kw) == expected, chunks
    return expected


class TestRules:
    @pytest.mark.parametrize(
        ("data", "wire"),
        [
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),  # D5: ends with CRLF: no extra line
            (b"a\r\nb", b"a\r\nb\r\n.\r\n"),  # D5: no CRLF at the end: add one
            (b"a\r", b"a\r\n.\r\n"),  # D5: bare CR at the end: a single CRLF
            (b"a\n", b"a\r\n.\r\n"),
            (b"", b"\r\n.\r\n"),
            (b"\r\n", b"\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),  # D4: starts in start-of-line state
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),  # D2
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),  # D2
            (b"\r\r\n.\r\r\n", b"\r\n\r\n..\r\n\r\n.\r\n"),  # D2: CR CR LF is two breaks
            (b"a.b\r\n.a.\r\n..\r\n", b"a.b\r\n..a.\r\n...\r\n.\r\n"),
            (b"x\n\ny", b"x\r\n\r\ny\r\n.\r\n"),
            (b"\xff\xfe 8-bit kept\n", b"\xff\xfe 8-bit kept\r\n.\r\n"),
        ],
    )
    def test_examples(self, twin: ModuleType, data: bytes, wire: bytes) -> None:
        assert encode_everywhere(twin, data) == wire
        check_wire(wire)

    @pytest.mark.parametrize("seq", SCANNER_SEQUENCES)
    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_scanner_sequences(self, twin: ModuleType, seq: bytes, kind: type) -> None:  # D1
        data = b"Subject: x\r\n\r\nhello" + seq + b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nbye\r\n"
        wire = twin.encode_data(kind(data))
        check_wire(wire)
        assert unstuff(wire) == normalise(data)

    def test_scanner_nul_sequence_is_refused(self, twin: ModuleType) -> None:  # D1, D7
        with pytest.raises(MessageDataError) as info:
            twin.encode_data(b"hello\r\n\x00.\r\nMAIL FROM:<x@y>\r\n")
        assert info.value.offset == 7
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize(
        ("left", "right"),
        [(b"a\r", b"\n.b"), (b"a\r\n", b".b"), (b"a\r\n.", b"\r\nb"), (b"a\r", b"\r\nb"), (b"a\r", b"\n")],
    )
    def test_chunk_boundaries(self, twin: ModuleType, left: bytes, right: bytes) -> None:  # D4
        assert stream(twin, [left, right]) == twin.encode_data(left + right)

    def test_unchanged_bytes_are_returned_as_is(self, twin: ModuleType) -> None:
        encoder = twin.DataEncoder()
        chunk = b"Subject: hi\r\n\r\nplain text\r\n"
        assert encoder.feed(chunk) is chunk
        other = bytearray(b"more\r\n")
        out = encoder.feed(other)
        assert out == b"more\r\n"
        assert type(out) is bytes
        assert encoder.finish() == b".\r\n"

    def test_finish_resets(self, twin: ModuleType) -> None:
        encoder = twin.DataEncoder()
        assert encoder.feed(b"a") == b"a"
        assert encoder.finish() == b"\r\n.\r\n"
        assert encoder.feed(b".b\r\n") == b"..b\r\n"  # a new message starts at a line start
        assert encoder.finish() == b".\r\n"

    def test_str_is_a_type_error(self, twin: ModuleType) -> None:
        with pytest.raises(TypeError, match="not str"):
            twin.encode_data("text")
        with pytest.raises(TypeError, match="not str"):
            twin.DataEncoder().feed("text")

    def test_empty_feed(self, twin: ModuleType) -> None:
        encoder = twin.DataEncoder()
        assert encoder.feed(b"") == b""
        assert encoder.finish() == b"\r\n.\r\n"


class TestFaults:
    def test_nul_offset_counts_across_chunks(self, twin: ModuleType) -> None:  # D7
        encoder = twin.DataEncoder()
        encoder.feed(b"abc\r\n")
        with pytest.raises(MessageDataError, match="offset 7") as info:
            encoder.feed(b"de\x00f")
        assert info.value.offset == 7

    def test_failed_feed_changes_nothing(self, twin: ModuleType) -> None:
        encoder = twin.DataEncoder()
        assert encoder.feed(b"line one\r") == b"line one\r\n"
        with pytest.raises(MessageDataError):
            encoder.feed(b"\nbad \x00 chunk")
        # the encoder is exactly where it was: the pending LF is still swallowed
        assert encoder.feed(b"\n.next\r\n") == b"..next\r\n"
        assert encoder.finish() == b".\r\n"

    def test_line_limit(self, twin: ModuleType) -> None:  # D6
        ok = b"x" * 998
        assert encode_everywhere(twin, ok + b"\r\n" + ok) == ok + b"\r\n" + ok + b"\r\n.\r\n"
        stuffed = b"." + b"y" * 997  # the stuffed dot is not counted
        assert twin.encode_data(stuffed) == b"." + stuffed + b"\r\n.\r\n"
        for data, offset in (
            (b"x" * 999, 0),
            (b"ok\r\n" + b"x" * 999 + b"\r\n", 4),
            (b"ok\n" + b"x" * 2000, 3),
        ):
            with pytest.raises(MessageDataError, match="longer than 998") as info:
                twin.encode_data(data)
            assert info.value.offset == offset

    def test_line_limit_same_under_any_chunking(self, twin: ModuleType) -> None:
        data = b"ab\r\n" + b"z" * 12 + b"\r\n"
        for chunks in chunkings(data):
            encoder = twin.DataEncoder(max_line_length=10)
            with pytest.raises(MessageDataError) as info:
                for chunk in chunks:
                    encoder.feed(chunk)
            assert info.value.offset == 4

    def test_first_fault_in_stream_order_wins(self, twin: ModuleType) -> None:
        long_then_nul = b"abcdefgh\x00"  # the 6th byte already breaks a 5-byte limit
        nul_then_long = b"ab\x00cdefgh"
        nul_at_limit = b"abcde\x00"  # the NUL itself would be the 6th byte: NUL reported
        for data, message in ((long_then_nul, "longer"), (nul_then_long, "NUL"), (nul_at_limit, "NUL")):
            for chunks in chunkings(data):
                encoder = twin.DataEncoder(max_line_length=5)
                with pytest.raises(MessageDataError, match=message):
                    for chunk in chunks:
                        encoder.feed(chunk)

    def test_no_limit(self, twin: ModuleType) -> None:
        data = b"q" * 100_000
        assert twin.encode_data(data, max_line_length=0) == data + b"\r\n.\r\n"
        with pytest.raises(ValueError):
            twin.DataEncoder(max_line_length=-1)


class TestLarge:
    def test_megabytes_with_every_feature(self, twin: ModuleType) -> None:
        unit = b"plain line\r\n.dotted\n\rbare cr\r.\r\nend\r\n"
        data = unit * 20_000
        wire = twin.encode_data(data)
        check_wire(wire)
        assert unstuff(wire) == normalise(data)
        cuts = list(range(0, len(data), 65_536 + 7))
        assert stream(twin, at(data, cuts)) == wire

    @pytest.mark.parametrize("kind", [bytes, bytearray])
    def test_input_needing_no_change_is_copied_at_most_once(self, twin: ModuleType, kind: type) -> None:
        line = b"The quick brown fox jumps over the lazy dog; 0123456789.\r\n"
        data = kind(line * (4_000_000 // len(line)))
        chunk = b"x" * 997 + b"\r\n" + b"y" * 998  # lines right at the 998-byte limit
        for feed, expected in [
            (twin.encode_data, bytes(data) + b".\r\n"),
            (lambda d: twin.DataEncoder().feed(d), bytes(data)),
        ]:
            tracemalloc.start()
            try:
                out = feed(data)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert out == expected
            copies = 0 if (kind is bytes and feed is not twin.encode_data) else 1
            assert peak <= copies * len(data) + 65_536, (peak, len(data))
            del out
        assert twin.DataEncoder().feed(chunk) is chunk
        with pytest.raises(MessageDataError, match="longer than 998"):
            twin.DataEncoder().feed(chunk + b"y")

    def test_every_two_way_split_of_a_tricky_message(self, twin: ModuleType) -> None:
        data = b".a\r\r\n.\n\r.\r\n..\r"
        expected = twin.encode_data(data)
        for chunks in all_splits(data, 3):
            assert stream(twin, chunks) == expected
