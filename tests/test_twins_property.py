"""Hypothesis: the two twins agree byte for byte, and the encoder's output is sound."""

from __future__ import annotations

import itertools
from types import ModuleType

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_data_encoder import check_wire, normalise, unstuff

from smtpkit.errors import MessageDataError, SMTPProtocolError

# bytes rich in the characters that matter
TRICKY = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"\x00", b"a", b"b c", b"\xff", b"\t"]),
    max_size=60,
).map(b"".join)
# CRLF text with short lines (limits of 2 and 3 bytes bite), mostly needing no change
CRLF_TEXT = st.lists(st.sampled_from([b"", b"a", b"ab", b"abc", b"abcd", b"a.", b".", b"\r", b"\n"]), max_size=40).map(
    b"\r\n".join
)
BODIES = st.one_of(st.binary(max_size=300), TRICKY, CRLF_TEXT)
CUTS = st.lists(st.integers(min_value=0, max_value=400), max_size=8)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def encode_stream(twin: ModuleType, chunks: list[bytes], limit: int) -> tuple[str, bytes | str]:
    encoder = twin.DataEncoder(max_line_length=limit)
    try:
        out = b"".join(encoder.feed(c) for c in chunks) + encoder.finish()
    except MessageDataError as exc:
        return "error", str(exc)
    return "ok", out


def parse_stream(
    twin: ModuleType, chunks: list[bytes], **limits: int
) -> tuple[list[tuple[int, bytes]], str, int]:
    """Replies, the error (or ""), and ``pending`` at the end (after an error too)."""
    parser = twin.ReplyParser(**limits)
    got: list[tuple[int, bytes]] = []
    for chunk in chunks:
        try:
            got.extend(parser.feed(chunk))
        except SMTPProtocolError as exc:
            return [*got, *exc.replies], str(exc), parser.pending
    return got, "", parser.pending


@SETTINGS
@given(data=BODIES, cuts=CUTS, limit=st.sampled_from([0, 2, 3, 998]))
@example(data=b"\r\n\x00.\r\n", cuts=[], limit=998)
@example(data=b"a\r", cuts=[2], limit=0)
def test_encoder_twins_agree(
    both_twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], limit: int
) -> None:
    compiled, pure = both_twins
    chunks = chunks_of(data, cuts)
    whole = encode_stream(pure, [data], limit)
    assert encode_stream(compiled, [data], limit) == whole
    assert encode_stream(compiled, chunks, limit) == whole
    assert encode_stream(pure, chunks, limit) == whole
    for twin, kind in itertools.product(both_twins, (bytes, bytearray)):
        try:
            one_shot: tuple[str, bytes | str] = ("ok", twin.encode_data(kind(data), max_line_length=limit))
        except MessageDataError as exc:
            one_shot = ("error", str(exc))
        assert one_shot == whole


@SETTINGS
@given(data=BODIES, cuts=CUTS)
def test_encoder_output_is_sound(twin: ModuleType, data: bytes, cuts: list[int]) -> None:
    data = data.replace(b"\x00", b"")
    kind, wire = encode_stream(twin, chunks_of(data, cuts), 0)
    assert kind == "ok"
    assert isinstance(wire, bytes)
    check_wire(wire)
    expected = normalise(data)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(wire) == expected


REPLYISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"250 ok\r\n",
                b"250-a\r\n",
                b"250\r\n",
                b"354 go\n",
                b"550 5.1.1 no\r\n",
                b"451-x\r\n",
                b"2x0\r\n",
            ]
        ),
        st.builds(
            lambda code, sep, text, end: code + sep + text + end,
            st.sampled_from([b"250", b"220", b"199", b"600", b"25", b"5000"]),
            st.sampled_from([b" ", b"-", b"", b"\t"]),
            st.binary(max_size=20),
            st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
        ),
    ),
    max_size=12,
).map(b"".join)


@SETTINGS
@given(data=st.one_of(REPLYISH, st.binary(max_size=200)), cuts=CUTS, small=st.booleans())
def test_parser_twins_agree(
    both_twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], small: bool
) -> None:
    compiled, pure = both_twins
    limits = {"max_line_length": 12, "max_reply_bytes": 40, "max_reply_lines": 3} if small else {}
    chunks = chunks_of(data, cuts)
    whole = parse_stream(pure, [data], **limits)
    assert parse_stream(compiled, [data], **limits) == whole
    split = parse_stream(pure, chunks, **limits)
    assert parse_stream(compiled, chunks, **limits) == split  # pending included
    if whole[1]:  # after an error, what is still pending depends on where the chunks end
        assert split[:2] == whole[:2]
    else:
        assert split == whole
