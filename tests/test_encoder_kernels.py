"""Each DATA encoder kernel of the compiled twin against the pure twin.

``smtpkit._speedups`` has one kernel per instruction set it was built for and the CPU
runs (``_encode_kernels()``: the build's own, ``sse2``/``neon``/``scalar``, then ``avx2``
and ``avx512`` (AVX-512BW) on x86-64 CPUs that have them); it picks the best. These tests
run every one of them, on the inputs where a block kernel can go wrong: line breaks at
every position of a 64-byte block and across block ends, a stuffed dot just after a block
end, CRLF split between two chunks, NUL anywhere, lines around the limit, and output that
outgrows its first guess.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smtpkit._speedups_py as pure
from smtpkit.errors import MessageDataError


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("smtpkit._speedups")
    except ImportError:
        return None


COMPILED = _compiled()
KERNELS = COMPILED._encode_kernels() if COMPILED is not None else ()
pytestmark = pytest.mark.skipif(COMPILED is None, reason="smtpkit._speedups is not built")


@pytest.fixture(params=KERNELS)
def cy(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The compiled twin, using one kernel for the length of the test."""
    assert COMPILED is not None
    previous = COMPILED._use_encode_kernel(request.param)
    try:
        yield COMPILED
    finally:
        COMPILED._use_encode_kernel(previous)


def outcome(twin: ModuleType, chunks: list[bytes], limit: int) -> tuple[str, bytes | str]:
    encoder = twin.DataEncoder(max_line_length=limit)
    try:
        return "ok", b"".join(encoder.feed(c) for c in chunks) + encoder.finish()
    except MessageDataError as exc:
        return "error", str(exc)


def one_shot(twin: ModuleType, data: bytes, limit: int) -> tuple[str, bytes | str]:
    try:
        return "ok", twin.encode_data(data, max_line_length=limit)
    except MessageDataError as exc:
        return "error", str(exc)


def same(cy: ModuleType, data: bytes, limit: int = 0, cuts: tuple[int, ...] = ()) -> None:
    expected = one_shot(pure, data, limit)
    assert one_shot(cy, data, limit) == expected
    if cuts:
        points = [0, *sorted(cuts), len(data)]
        chunks = [data[a:b] for a, b in itertools.pairwise(points)]
        assert outcome(cy, chunks, limit) == expected
        assert outcome(pure, chunks, limit) == expected


BREAKS = [b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\r", b"\r\n\r\n", b"\n\n"]


def test_the_kernels() -> None:
    assert COMPILED is not None
    names = COMPILED._encode_kernels()
    assert names[0] == COMPILED._SIMD
    if not os.environ.get("SMTPKIT_ENCODE_KERNEL"):
        assert COMPILED._encode_kernel() == names[-1]  # the best one by default
    with pytest.raises(ValueError, match="no DATA encoder kernel"):
        COMPILED._use_encode_kernel("mmx")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif(
    not (COMPILED is not None and COMPILED._SIMD == "sse2" and _cpu_flags()),
    reason="x86-64 Linux build only (reads /proc/cpuinfo)",
)
def test_the_cpu_s_vector_kernels_are_offered() -> None:
    """Run-time dispatch: every vector kernel the CPU (and OS) supports is in the table."""
    assert COMPILED is not None
    flags = _cpu_flags()
    names = COMPILED._encode_kernels()
    assert ("avx2" in names) == ({"avx2", "bmi1", "bmi2"} <= flags)
    assert ("avx512" in names) == ({"avx512f", "avx512bw", "bmi1", "bmi2"} <= flags)


@pytest.mark.parametrize("brk", BREAKS)
@pytest.mark.parametrize("after", [b"x", b"."])
def test_a_break_at_every_position(cy: ModuleType, brk: bytes, after: bytes) -> None:
    for pos in range(0, 200):
        data = b"a" * pos + brk + after + b"b" * (300 - pos)
        same(cy, data)
        same(cy, data, limit=998)


@pytest.mark.parametrize("brk", BREAKS)
def test_two_breaks_at_every_distance(cy: ModuleType, brk: bytes) -> None:
    for first, gap in itertools.product((0, 30, 62, 63, 64, 65), range(0, 70)):
        data = b"a" * first + brk + b"." * (gap % 2) + b"c" * gap + brk + b".d" + b"e" * 260
        same(cy, data)


def test_lines_of_every_length(cy: ModuleType) -> None:
    for length in range(0, 140):
        for brk in (b"\r\n", b"\n", b"\r"):
            line = (b"." + b"z" * length)[: max(length, 1)] if length % 3 == 0 else b"y" * length
            same(cy, (line + brk) * 12)
            same(cy, (line + brk) * 12 + b"tail")


def test_block_aligned_bodies(cy: ModuleType) -> None:
    """Lines whose breaks fall at the same place of every block, at the end of a block,
    and CRLFs split by a block's end."""
    for width in (62, 63, 64, 65, 126, 127, 128):
        for brk in (b"\r\n", b"\n", b"\r"):
            for lead in (b"", b"x", b"xy"):
                line = b"." + b"w" * (width - len(brk) - 1)
                same(cy, lead + (line + brk) * 20)


def test_crlf_split_between_chunks(cy: ModuleType) -> None:
    data = (b"first line\r\n.second\r\n" + b"q" * 150 + b"\r\n.\r\n") * 3
    for cut in range(len(data) + 1):
        same(cy, data, cuts=(cut,))
    for cut in (i for i in range(len(data)) if data[i : i + 1] == b"\r"):
        same(cy, data, cuts=(cut + 1, min(cut + 1 + 130, len(data))))


def test_nul_everywhere(cy: ModuleType) -> None:
    base = bytearray((b"line .x\r\n.dot\n" + b"m" * 70 + b"\r") * 4)
    for pos in range(len(base)):
        data = bytes(base[:pos] + b"\x00" + base[pos + 1 :])
        same(cy, data)
        same(cy, data, limit=20)


def test_other_control_bytes(cy: ModuleType) -> None:
    for ctl in (b"\t", b"\x01", b"\x0b", b"\x0c", b"\x0e", b"\x1f", b"\x7f"):
        for pos in range(0, 140, 3):
            data = b"k" * pos + ctl + b"\n." + b"k" * 200 + ctl + b"\r\n"
            same(cy, data)


@pytest.mark.parametrize("limit", [1, 5, 63, 64, 65, 77, 998])
def test_lines_around_the_limit(cy: ModuleType, limit: int) -> None:
    for length in {limit - 1, limit, limit + 1, 2 * limit, 3 * limit + 7}:
        if length < 0:
            continue
        for brk in (b"\r\n", b"\n", b"\r"):
            ok = b"ok" + brk
            long = b"L" * length
            same(cy, ok * 40 + long + brk + ok * 40, limit=limit)
            same(cy, ok * 40 + long, limit=limit)
            same(cy, ok * 40 + long + b"\x00" + brk, limit=limit)  # NUL after the limit
            same(cy, long + brk + ok * 40, limit=limit, cuts=(len(long) // 2,))


def test_output_that_outgrows_its_first_guess(cy: ModuleType) -> None:
    """Every byte doubles: the output is encoded in segments, then the buffer grows."""
    for data in (b"\n" * 100_000, b".\n" * 60_000, b"\r" * 70_001, (b"a\n" + b".\r") * 40_000):
        same(cy, data)
        same(cy, data, limit=998, cuts=(len(data) // 3,))


def test_large_output_within_its_spare_room(cy: ModuleType) -> None:
    """Over 64 KiB and growing by less than 1/32: the bytes object is not trimmed."""
    line = b".dotted line of text, long enough to be an ordinary line of mail!!\n"
    data = line * 5_000
    out = cy.encode_data(data)
    assert out == pure.encode_data(data)
    assert len(out) == len(data) + 2 * 5_000 + 3
    assert out.endswith(b"\r\n.\r\n")
    assert hash(out) == hash(bytes(bytearray(out)))


TEXT = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"\x00", b"\t", b".\r\n", b"\r\n."]),
        st.binary(min_size=1, max_size=90).map(lambda b: b.replace(b"\x00", b"n")),
        st.integers(min_value=0, max_value=130).map(lambda k: b"t" * k),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=TEXT,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=5),
    limit=st.sampled_from([0, 7, 64, 998]),
)
def test_kernels_agree_with_the_pure_twin(data: bytes, cuts: list[int], limit: int) -> None:
    assert COMPILED is not None
    points = tuple(sorted({c % (len(data) + 1) for c in cuts}))
    previous = COMPILED._encode_kernel()
    try:
        for name in KERNELS:
            COMPILED._use_encode_kernel(name)
            same(COMPILED, data, limit, points)
    finally:
        COMPILED._use_encode_kernel(previous)
