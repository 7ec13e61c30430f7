#!/usr/bin/env python3
"""Differential fuzz harness for smtpkit's hot path (the Cython and pure-Python twins).

Each input selects a target (the reply parser or the DATA encoder), its limits, a payload
and a list of split points. The payload is run through BOTH twins, whole and chunked at
the split points, and any divergence -- between the twins, between whole and chunked, or
from the encoder's documented rules -- fails with an ``AssertionError`` that prints the
decoded case, ready to paste into a test. Any exception other than ``SMTPProtocolError`` /
``MessageDataError`` is a failure too.

Usage (see fuzz/README.md)::

    python fuzz/fuzz_hotpath.py -max_total_time=60            # libFuzzer via atheris
    python fuzz/fuzz_hotpath.py fuzz/corpus -max_total_time=600 # seeds fuzz/corpus if empty
    python fuzz/fuzz_hotpath.py --smoke 2000 [--seed 1]         # no atheris needed
    python fuzz/fuzz_hotpath.py crash-<sha1>                    # replay one input
    python fuzz/fuzz_hotpath.py --show crash-<sha1>             # print its decoded case

``check(data)`` is the whole check, importable from a test::

    from fuzz_hotpath import check, check_case, Case
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Protocol

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:  # the smoke mode and check() work without it
    atheris = None

# Instrument smtpkit's Python code (the pure twin is the specification, so its branches
# are a good proxy for the Cython twin's) only when actually fuzzing: a plain import from
# a test, --smoke or --show stays uninstrumented.
_FUZZING = __name__ == "__main__" and atheris is not None and not {"--smoke", "--show"} & set(sys.argv)
if _FUZZING:
    with atheris.instrument_imports(include=["smtpkit"]):
        import smtpkit._speedups_py as _py_twin
        from smtpkit.errors import (
            MessageDataError,
            SMTPProtocolError,
            line_too_long_in_data,
            nul_in_data,
        )
        from smtpkit.reply import Reply
else:
    import smtpkit._speedups_py as _py_twin
    from smtpkit.errors import (
        MessageDataError,
        SMTPProtocolError,
        line_too_long_in_data,
        nul_in_data,
    )
    from smtpkit.reply import Reply

_cy_twin: ModuleType | None
try:
    import smtpkit._speedups as _cy_twin  # type: ignore[import-not-found,no-redef]
except ImportError:  # a pure-Python install: whole/chunked and the rules are still checked
    _cy_twin = None

TWINS: list[tuple[str, ModuleType]] = [("python", _py_twin)]
if _cy_twin is not None:
    TWINS.insert(0, ("cython", _cy_twin))

PARSER, ENCODER = "parser", "encoder"
MAX_SPLITS = 15
# Payload alphabets that make the interesting bytes dense (chosen by the "mode" field).
PARSER_ALPHABET = b"2503-  \r\n\n\t.x49\x00\x7f\x1b"
ENCODER_ALPHABET = b"\r\n\n..aaa \t\x00"
_BREAK = re.compile(rb"\r\n|\r|\n")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_REPLY_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


# --------------------------------------------------------------------------------------
# Decoding an input into a case
# --------------------------------------------------------------------------------------


class Provider(Protocol):
    """The part of ``atheris.FuzzedDataProvider`` the harness uses."""

    def ConsumeIntInRange(self, lo: int, hi: int, /) -> int: ...
    def ConsumeBytes(self, count: int, /) -> bytes: ...
    def remaining_bytes(self) -> int: ...


class FallbackProvider:
    """libFuzzer's FuzzedDataProvider semantics for the calls used here (no atheris).

    Integers come from the end of the data, bytes from the front, exactly as atheris does
    it, so an input decodes to the same case with or without atheris (``--smoke`` checks
    that when atheris is installed).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._front = 0
        self._back = len(data)

    def remaining_bytes(self) -> int:
        return self._back - self._front

    def ConsumeBytes(self, count: int, /) -> bytes:
        count = max(0, min(count, self.remaining_bytes()))
        out = self._data[self._front : self._front + count]
        self._front += count
        return out

    def ConsumeIntInRange(self, lo: int, hi: int, /) -> int:
        span = hi - lo
        acc = 0
        shift = 0
        while shift < 64 and (span >> shift) > 0 and self._back > self._front:
            self._back -= 1
            acc = (acc << 8) | self._data[self._back]
            shift += 8
        if span != (1 << 64) - 1:
            acc %= span + 1
        return lo + acc


def make_provider(data: bytes) -> Provider:
    if atheris is not None:
        provider: Provider = atheris.FuzzedDataProvider(data)
        return provider
    return FallbackProvider(data)


@dataclass(frozen=True)
class Case:
    """One decoded input: what to run, with which limits, on which bytes, split where."""

    target: str
    payload: bytes
    splits: tuple[int, ...] = ()
    # parser limits
    max_line_length: int = _py_twin.MAX_LINE_LENGTH
    max_reply_bytes: int = _py_twin.MAX_REPLY_BYTES
    max_reply_lines: int = _py_twin.MAX_REPLY_LINES
    # encoder limit
    data_line_length: int = _py_twin.MAX_DATA_LINE_LENGTH
    # how each chunk is passed: 0/1 bytes, 2 bytearray, 3 memoryview
    kinds: tuple[int, ...] = ()

    def chunks(self) -> list[bytes]:
        bounds = [0, *self.splits, len(self.payload)]
        return [self.payload[a:b] for a, b in itertools.pairwise(bounds)]

    def describe(self) -> str:
        if self.target == PARSER:
            limits = (
                f"max_line_length={self.max_line_length}, max_reply_bytes={self.max_reply_bytes}, "
                f"max_reply_lines={self.max_reply_lines}"
            )
        else:
            limits = f"max_line_length={self.data_line_length}"
        return (
            f"target={self.target} ({limits})\n  payload={self.payload!r}\n"
            f"  splits={list(self.splits)} kinds={list(self.kinds)}\n  chunks={self.chunks()!r}"
        )


# Field layout, consumed from the END of the input in this order (the payload is the
# front): target, mode, limit selector, 3 parser limits or 1 encoder limit, split count,
# chunk kinds, then one 16-bit fraction per split.
def decode(data: bytes, provider: Provider | None = None) -> Case:
    fdp = provider if provider is not None else make_provider(data)
    target = PARSER if fdp.ConsumeIntInRange(0, 1) == 0 else ENCODER
    mode = fdp.ConsumeIntInRange(0, 3)
    limit_sel = fdp.ConsumeIntInRange(0, 3)
    kw: dict[str, int] = {}
    if target == PARSER:
        line = fdp.ConsumeIntInRange(5, 64)
        nbytes = fdp.ConsumeIntInRange(5, 300)
        nlines = fdp.ConsumeIntInRange(1, 8)
        if limit_sel & 1:
            kw["max_line_length"] = line
        if limit_sel & 2:
            kw["max_reply_bytes"] = nbytes
            kw["max_reply_lines"] = nlines
    else:
        small = fdp.ConsumeIntInRange(1, 40)
        kw["data_line_length"] = (_py_twin.MAX_DATA_LINE_LENGTH, 0, small, small)[limit_sel]
    nsplits = fdp.ConsumeIntInRange(0, MAX_SPLITS)
    kind_bits = fdp.ConsumeIntInRange(0, 2**32 - 1)
    fracs = [fdp.ConsumeIntInRange(0, 65535) for _ in range(nsplits)]
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode >= 2:
        alphabet = PARSER_ALPHABET if target == PARSER else ENCODER_ALPHABET
        payload = bytes(alphabet[b % len(alphabet)] for b in payload)
    n = len(payload)
    splits = tuple(sorted((f * (n + 1)) >> 16 for f in fracs))
    kinds = tuple((kind_bits >> (2 * i)) & 3 for i in range(nsplits + 1))
    return Case(target=target, payload=payload, splits=splits, kinds=kinds, **kw)


def encode(case: Case, mode: int = 0, limit_sel: int | None = None, fracs: Sequence[int] = ()) -> bytes:
    """The input bytes that ``decode`` turns back into ``case`` (raw payload, mode 0).

    Used for the seed corpus. ``fracs`` are the 16-bit split fractions; ``case.splits`` is
    ignored (it is derived from them).
    """
    fields: list[tuple[int, int, int]] = []  # (value, lo, hi) in consumption order
    fields.append((0 if case.target == PARSER else 1, 0, 1))
    fields.append((mode, 0, 3))
    if case.target == PARSER:
        sel = limit_sel if limit_sel is not None else 0
        fields += [(sel, 0, 3), (case.max_line_length if sel & 1 else 5, 5, 64)]
        fields += [(case.max_reply_bytes if sel & 2 else 5, 5, 300)]
        fields += [(case.max_reply_lines if sel & 2 else 1, 1, 8)]
    else:
        lim = case.data_line_length
        sel = 0 if lim == _py_twin.MAX_DATA_LINE_LENGTH else 1 if lim == 0 else 2
        fields += [(sel, 0, 3), (lim if sel == 2 else 1, 1, 40)]
    fields.append((len(fracs), 0, MAX_SPLITS))
    kind_bits = sum((k & 3) << (2 * i) for i, k in enumerate(case.kinds))
    fields.append((kind_bits, 0, 2**32 - 1))
    fields += [(f, 0, 65535) for f in fracs]
    tail = bytearray()  # bytes in the order they are read (from the end backwards)
    for value, lo, hi in fields:
        span = hi - lo
        width = (span.bit_length() + 7) // 8
        tail += (value - lo).to_bytes(width, "big")
    return case.payload + bytes(reversed(tail))


# --------------------------------------------------------------------------------------
# Running the twins
# --------------------------------------------------------------------------------------


def _as_kind(chunk: bytes, kind: int) -> bytes | bytearray | memoryview:
    if kind == 2:
        return bytearray(chunk)
    if kind == 3:
        return memoryview(chunk)
    return chunk


def _fail(case: Case, what: str, **details: object) -> AssertionError:
    lines = [f"{what}", f"  case: {case.describe()}"]
    lines += [f"  {key}: {value!r}" for key, value in details.items()]
    return AssertionError("\n".join(lines))


def _call(case: Case, where: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; let the expected errors through, turn any other into a failure."""
    try:
        return fn()
    except (SMTPProtocolError, MessageDataError):
        raise
    except Exception as exc:
        raise _fail(case, f"unexpected exception in {where}: {type(exc).__name__}: {exc}") from exc


# A parser run: per feed, (replies as plain tuples, pending); then the error (reason, str,
# its .replies, index of the failing chunk, the "broken" error's (reason, str)) or None;
# then the final pending and what reset() returned (None after an error).
ParserRun = tuple[
    tuple[tuple[tuple[tuple[int, bytes], ...], int], ...],
    tuple[str, str, tuple[tuple[int, bytes], ...], int, tuple[str, str]] | None,
]


def _replies(case: Case, where: str, replies: object) -> tuple[tuple[int, bytes], ...]:
    if not isinstance(replies, list):
        raise _fail(case, f"{where}: replies is {type(replies).__name__}, not list")
    out = []
    for reply in replies:
        if not isinstance(reply, Reply) or len(reply) != 2:
            raise _fail(case, f"{where}: not a Reply: {reply!r}")
        code, message = reply
        if type(code) is not int or type(message) is not bytes:
            raise _fail(case, f"{where}: bad reply field types: {reply!r}")
        if not 200 <= code < 600 or _REPLY_CONTROL.search(message):
            raise _fail(case, f"{where}: invalid reply returned: {reply!r}")
        out.append((code, message))
    return tuple(out)


def run_parser(case: Case, name: str, mod: ModuleType, chunks: Sequence[bytes]) -> ParserRun:
    where = f"{name} ReplyParser"
    parser = _call(
        case,
        where,
        lambda: mod.ReplyParser(case.max_line_length, case.max_reply_bytes, case.max_reply_lines),
    )
    feeds: list[tuple[tuple[tuple[int, bytes], ...], int]] = []
    for i, chunk in enumerate(chunks):
        data = _as_kind(chunk, case.kinds[i] if i < len(case.kinds) else 0)
        try:
            got = _call(case, f"{where}.feed", lambda data=data: parser.feed(data))
        except SMTPProtocolError as exc:
            err_replies = _replies(case, f"{where} error.replies", exc.replies)
            try:
                _call(case, f"{where}.feed after error", lambda: parser.feed(b"250 ok\r\n"))
            except SMTPProtocolError as again:
                broken = (again.reason, str(again))
            else:
                raise _fail(case, f"{where}: feed after an error did not raise") from None
            if broken[0] != "broken":
                raise _fail(case, f"{where}: feed after an error gave reason {broken[0]!r}") from None
            return tuple(feeds), (exc.reason, str(exc), err_replies, i, broken)
        feeds.append((_replies(case, f"{where}.feed", got), parser.pending))
    pending = parser.pending
    dropped = _call(case, f"{where}.reset", parser.reset)
    if dropped != pending or parser.pending != 0:
        raise _fail(
            case, f"{where}: reset() returned {dropped} with {pending} pending, then pending={parser.pending}"
        )
    # after reset() the parser must parse the whole payload like a fresh one
    payload = b"".join(chunks)
    fresh = mod.ReplyParser(case.max_line_length, case.max_reply_bytes, case.max_reply_lines)
    reused, new = _parse_once(case, where, parser, payload), _parse_once(case, where, fresh, payload)
    if reused != new:
        raise _fail(case, f"{where}: reset() did not clear the parser", after_reset=reused, fresh=new)
    return tuple(feeds), None


def _parse_once(case: Case, where: str, parser: Any, data: bytes) -> object:
    try:
        got = _call(case, f"{where}.feed", lambda: parser.feed(data))
    except SMTPProtocolError as exc:
        return ("error", exc.reason, str(exc), _replies(case, where, exc.replies))
    return _replies(case, where, got), parser.pending


# An encoder run: per feed output, then finish() output or the error (message, offset,
# index of the failing chunk, and what a probe fed after the failure gave).
EncoderRun = tuple[tuple[bytes, ...], bytes | None, tuple[str, int, int, object] | None]


def _enc_probes(case: Case, where: str, make: Callable[[], Any]) -> tuple[object, ...]:
    """A fingerprint of an encoder's state: what a few probes give, each on a new ``make()``.

    The probes reveal each piece of state: a pending CR (``\\n.``), the start of a line
    (``.``), the length of the current line (a full-length line), the offset (a NUL), and
    whether anything was sent (``finish()``).
    """
    limit = case.data_line_length
    probes = (b"\n.", b".", b"z" * (limit if limit else 1), b"\x00", b"")
    results: list[object] = []
    for probe in probes:
        encoder = make()
        try:
            results.append(_call(case, where, lambda e=encoder, p=probe: e.feed(p) + e.finish()))
        except MessageDataError as exc:
            results.append(("error", str(exc), exc.offset))
    return tuple(results)


def run_encoder(case: Case, name: str, mod: ModuleType, chunks: Sequence[bytes]) -> EncoderRun:
    where = f"{name} DataEncoder"
    encoder = _call(case, where, lambda: mod.DataEncoder(case.data_line_length))
    outs: list[bytes] = []

    def replay(count: int, fail: bool = False, finish: bool = False) -> Any:
        fresh = mod.DataEncoder(case.data_line_length)
        for ok in chunks[:count]:
            _call(case, f"{where} replay", lambda ok=ok: fresh.feed(ok))
        if fail:
            try:
                _call(case, f"{where} replay", lambda: fresh.feed(chunks[count]))
            except MessageDataError:
                return fresh
            raise _fail(case, f"{where}: chunk {count} failed once and passed on replay")
        if finish:
            _call(case, f"{where} replay", fresh.finish)
        return fresh

    for i, chunk in enumerate(chunks):
        data = _as_kind(chunk, case.kinds[i] if i < len(case.kinds) else 0)
        try:
            out = _call(case, f"{where}.feed", lambda data=data: encoder.feed(data))
        except MessageDataError as exc:
            # a failing feed changes no state: same as a fresh encoder fed what succeeded
            after = _enc_probes(case, f"{where} probe after error", lambda i=i: replay(i, fail=True))
            before = _enc_probes(case, f"{where} probe before error", lambda i=i: replay(i))
            if after != before:
                raise _fail(
                    case,
                    f"{where}: a failing feed (chunk {i}) changed the encoder's state",
                    after_failure=after,
                    before_failure=before,
                ) from None
            return tuple(outs), None, (str(exc), exc.offset, i, after)
        if type(out) is not bytes:
            raise _fail(case, f"{where}.feed returned {type(out).__name__}, not bytes")
        outs.append(out)
    end = _call(case, f"{where}.finish", encoder.finish)
    if type(end) is not bytes:
        raise _fail(case, f"{where}.finish returned {type(end).__name__}, not bytes")
    # finish() resets: the same encoder must then behave like a fresh one
    reused = _enc_probes(case, f"{where} probe after finish", lambda: replay(len(chunks), finish=True))
    fresh = _enc_probes(case, f"{where} probe fresh", lambda: mod.DataEncoder(case.data_line_length))
    if reused != fresh:
        raise _fail(case, f"{where}: finish() did not reset the encoder", reused=reused, fresh=fresh)
    return tuple(outs), end, None


def expected_encoding(payload: bytes, limit: int) -> tuple[bytes | None, str | None]:
    """The encoder rules written out independently: (output, None) or (None, message)."""
    line_start = 0
    i = 0
    n = len(payload)
    while i < n:
        c = payload[i]
        if c == 0x0D:
            i += 2 if payload[i + 1 : i + 2] == b"\n" else 1
            line_start = i
        elif c == 0x0A:
            i += 1
            line_start = i
        elif c == 0:
            return None, str(nul_in_data(i))
        elif limit and i + 1 - line_start > limit:
            return None, str(line_too_long_in_data(line_start, limit))
        else:
            i += 1
    normalized = _BREAK.sub(b"\r\n", payload)
    body = b"\r\n".join(b"." + line if line[:1] == b"." else line for line in normalized.split(b"\r\n"))
    return body + (b".\r\n" if normalized.endswith(b"\r\n") else b"\r\n.\r\n"), None


def _check_encoded(case: Case, where: str, out: bytes) -> None:
    """Invariants of every successful encoding."""
    problems = []
    if not out.endswith(b".\r\n"):
        problems.append("does not end with .CRLF")
    if _BARE.search(out):
        problems.append("has a bare CR or LF")
    if (b"\r\n" + out).find(b"\r\n.\r\n") != len(out) - 3:
        problems.append("CRLF.CRLF occurs before the end (or the terminator is missing)")
    if b"\x00" in out:
        problems.append("has a NUL byte")
    lines = out.split(b"\r\n")[:-2]  # the body lines, without the final "." and ""
    if any(line[:1] == b"." and line[:2] != b".." for line in lines):
        problems.append("a line starting with a dot was not stuffed")
    limit = case.data_line_length
    if limit and any(len(line) - (line[:1] == b".") > limit for line in lines):
        problems.append(f"a line is longer than {limit}")
    if problems:
        raise _fail(case, f"{where}: invalid DATA output: " + "; ".join(problems), output=out)


def _parser_summary(run: ParserRun) -> tuple[object, ...]:
    """What the contract says must not depend on chunking."""
    feeds, error = run
    replies = tuple(r for got, _ in feeds for r in got)
    if error is None:
        return replies, None, feeds[-1][1] if feeds else 0
    reason, message, err_replies, _, broken = error
    return replies + err_replies, (reason, message, broken), None


def check_case(case: Case) -> None:
    """Run ``case`` through every twin, whole and chunked; raise AssertionError on a divergence."""
    whole = [case.payload]
    chunked = case.chunks()
    whole_case = replace(case, kinds=(0,))
    if case.target == PARSER:
        prun: dict[tuple[str, str], ParserRun] = {}
        for name, mod in TWINS:
            prun[name, "whole"] = run_parser(whole_case, name, mod, whole)
            prun[name, "chunked"] = run_parser(case, name, mod, chunked)
        for how in ("whole", "chunked"):
            first = TWINS[0][0]
            for name, _ in TWINS[1:]:
                if prun[first, how] != prun[name, how]:
                    raise _fail(
                        case,
                        f"twins diverge ({how}): {first} vs {name}",
                        **{first: prun[first, how], name: prun[name, how]},
                    )
        for name, _ in TWINS:
            a, b = _parser_summary(prun[name, "whole"]), _parser_summary(prun[name, "chunked"])
            if a != b:
                raise _fail(case, f"{name}: whole and chunked parses differ", whole=a, chunked=b)
        return

    limit = case.data_line_length
    erun: dict[tuple[str, str], EncoderRun] = {}
    oneshot: dict[str, tuple[bytes | None, str | None]] = {}
    for name, mod in TWINS:
        erun[name, "whole"] = run_encoder(whole_case, name, mod, whole)
        erun[name, "chunked"] = run_encoder(case, name, mod, chunked)
        try:
            got = _call(case, f"{name} encode_data", lambda mod=mod: mod.encode_data(case.payload, limit))
            oneshot[name] = (got, None)
        except MessageDataError as exc:
            oneshot[name] = (None, str(exc))
    first = TWINS[0][0]
    for name, _ in TWINS[1:]:
        for how in ("whole", "chunked"):
            if erun[first, how] != erun[name, how]:
                raise _fail(
                    case,
                    f"twins diverge ({how}): {first} vs {name}",
                    **{first: erun[first, how], name: erun[name, how]},
                )
    expected = expected_encoding(case.payload, limit)
    for name, _ in TWINS:
        results: dict[str, tuple[bytes | None, str | None]] = {"encode_data": oneshot[name]}
        for how in ("whole", "chunked"):
            outs, end, error = erun[name, how]
            if end is not None:
                results[how] = (b"".join(outs) + end, None)
            else:
                results[how] = (None, error[0] if error else "")
        for label, result in results.items():
            if result != expected:
                raise _fail(
                    case,
                    f"{name} {label}: output differs from the encoding rules",
                    got=result,
                    expected=expected,
                    **{k: v for k, v in results.items() if k != label},
                )
            if result[0] is not None:
                _check_encoded(case, f"{name} {label}", result[0])


def check(data: bytes) -> None:
    """The fuzz target: decode ``data`` into a case and check it (AssertionError on a bug)."""
    check_case(decode(data))


# --------------------------------------------------------------------------------------
# Seeds, smoke mode, entry point
# --------------------------------------------------------------------------------------


def seed_inputs() -> list[bytes]:
    """A few hand-written interesting inputs, encoded for ``decode``."""
    p, e = PARSER, ENCODER
    seeds = [
        encode(Case(p, b"220 mx.example ESMTP\r\n")),
        encode(Case(p, b"250-mx.example\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"), fracs=[20000, 40000]),
        encode(Case(p, b"250-a\r\n251 b\r\n"), fracs=[32768]),
        encode(Case(p, b"250 \t ok \t\r\n354\n199 x\r\n"), fracs=[1000]),
        encode(Case(p, b"250 " + b"x" * 40 + b"\r\n", max_line_length=16), limit_sel=1, fracs=[30000]),
        encode(
            Case(p, b"250-a\r\n250-b\r\n250 c\r\n", max_reply_bytes=12, max_reply_lines=2),
            limit_sel=2,
        ),
        encode(Case(p, b"250 a\x01b\r\n")),
        # a line exactly at the line cap, split just before its LF (or between CR and LF):
        # the end of the line is assembled from two chunks right at the buffer's edge
        encode(Case(p, b"250 abc\n250 d\n", max_line_length=8), limit_sel=1, fracs=[28100]),
        encode(Case(p, b"250 ab\r\n", max_line_length=8), limit_sel=1, fracs=[57344]),
        encode(Case(p, b"250 abcd\n", max_line_length=8), limit_sel=1, fracs=[53000]),
        encode(Case(e, b"Subject: hi\n\n.hidden\r\n..x\r\r\n.\r\n", kinds=(0, 2, 3)), fracs=[9000, 30000]),
        encode(Case(e, b"a\r", kinds=(0, 3)), fracs=[65535]),
        encode(Case(e, b"line\r\nmore\r", kinds=(0, 2)), fracs=[40000]),
        encode(Case(e, b"x" * 30 + b"\r\n" + b"\x00", data_line_length=8), fracs=[10000]),
        encode(Case(e, b".\r\n.\n", data_line_length=0)),
        encode(Case(e, b"")),
    ]
    for seed in seeds:  # each must decode without error (and exercises check())
        check(seed)
    return seeds


def write_seeds(directory: str) -> None:
    """Create ``directory`` with the seeds if it does not exist or is empty."""
    os.makedirs(directory, exist_ok=True)
    if os.listdir(directory):
        return
    for i, seed in enumerate(seed_inputs()):
        with open(os.path.join(directory, f"seed-{i:02d}"), "wb") as fh:
            fh.write(seed)


_TOKENS = (
    b"250",
    b"2",
    b"5",
    b"-",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b".",
    b"..",
    b"\x00",
    b"x",
    b"ok",
    b"\x7f",
    b"\x01",
    b"\xff",
)


def _random_line(rng: random.Random) -> bytes:
    code = rng.choice([b"250", b"250", b"250", b"220", b"354", b"550", b"199", b"600", b"25", b"2x0", b""])
    sep = rng.choice([b" ", b" ", b"-", b"-", b"", b"x", b"\t"])
    text = b"".join(
        rng.choice(_TOKENS[:-6] if rng.random() < 0.3 else (b"a", b" ", b"\t", b"."))
        for _ in range(rng.randrange(0, 12))
    )
    return code + sep + text + rng.choice([b"\r\n", b"\r\n", b"\n", b"\r\r\n", b"\r", b""])


def random_input(rng: random.Random) -> bytes:
    """A random input for --smoke: a payload (lines, token soup or noise), then header bytes."""
    roll = rng.random()
    if roll < 0.15:
        payload = rng.randbytes(rng.randrange(0, 200))
    elif roll < 0.5:
        payload = b"".join(rng.choice(_TOKENS) for _ in range(rng.randrange(0, 80)))
    else:
        payload = b"".join(_random_line(rng) for _ in range(rng.randrange(0, 10)))
    return payload + rng.randbytes(rng.randrange(0, 48))


def smoke(count: int, seed: int) -> int:
    rng = random.Random(seed)
    for data in seed_inputs():
        check(data)
    for _ in range(count):
        data = random_input(rng)
        if atheris is not None:  # the fallback decoder must agree with atheris
            assert decode(data, FallbackProvider(data)) == decode(data), data
        check(data)
    twins = ", ".join(name for name, _ in TWINS)
    print(f"smoke: {count} random inputs + {len(seed_inputs())} seeds passed ({twins})")
    return 0


def _test_one_input(data: bytes) -> None:
    check(data)


def main(argv: list[str]) -> int:
    if "--smoke" in argv:
        i = argv.index("--smoke")
        count = int(argv[i + 1]) if i + 1 < len(argv) else 1000
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        return smoke(count, seed)
    if "--show" in argv:  # print the case each input file decodes to, then check it
        for path in argv[argv.index("--show") + 1 :]:
            with open(path, "rb") as fh:
                data = fh.read()
            print(f"{path}: {decode(data).describe()}")
            check(data)
        return 0
    if atheris is None:
        print("atheris is not installed (pip install atheris); use --smoke N instead", file=sys.stderr)
        return 2
    if _cy_twin is None:
        print("warning: smtpkit._speedups is not built; checking the Python twin alone", file=sys.stderr)
    else:
        print(f"INFO: smtpkit twins: {_cy_twin.__file__} and {_py_twin.__file__}", file=sys.stderr)
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    if corpus and not os.path.isfile(corpus[0]):  # a corpus directory, not a crash file
        write_seeds(corpus[0])
    atheris.Setup(argv, _test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
