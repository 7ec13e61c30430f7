"""Hot-path benchmark: DATA encoding and reply parsing, both twins against smtplib.

Run from the repository root (with smtpkit installed, e.g. ``pip install -e .``)::

    python bench/hotpath.py                   # print the table; always exits 0
    python bench/hotpath.py --check           # exit 1 if a target is missed
    python bench/hotpath.py --json out.json   # also write every sample as JSON
    python bench/hotpath.py --rounds 25       # more rounds, tighter medians

What it measures, in one run:

1. ``encode_data`` throughput (MB/s of input, 1 MB = 10**6 bytes) on a 1 MB and a 10 MB
   body of 70-78 byte printable-ASCII lines, half of them starting with ``.``, ending in a
   random mix of CRLF, bare LF and bare CR. Contenders: the Cython twin
   (``smtpkit._speedups``), the pure twin (``smtpkit._speedups_py``), smtplib's own path
   (``smtplib._fix_eols`` on the text as ``str``, then ``smtplib._quote_periods`` on its
   ASCII encoding, exactly as ``SMTP.sendmail`` + ``SMTP.data`` do it; only those two
   calls are timed, not the ``str.encode`` between them), and a plain ``bytearray(data)``
   copy as the speed-of-memory ceiling. Targets: Cython >= 50x smtplib and >= 40% of the
   copy rate.
2. ``ReplyParser.feed`` throughput (replies/s, one complete reply per call) on a 10-line
   EHLO reply and on ``250 OK``, for both twins, against ``smtplib.SMTP.getreply()``
   reading the same bytes from an ``io.BytesIO``. Target: EHLO parsing with Cython
   >= 20x smtplib.

Methodology, for a noisy shared machine: every contender of a workload is run once per
round, interleaved (A B C D, A B C D, ...); each run is a batch of calls sized to take
about ``--sample-ms`` milliseconds, with the garbage collector off. The table shows the
median rate over the rounds and its spread: half the min-max range, as a percentage of
the median.
Ratios are the median of the per-round ratios (each paired within the same round), so
a slow patch of the machine hits both sides of a ratio alike. The outputs of all the
encoders are checked to be identical before anything is timed.

The PASS/MISS markers are informational unless ``--check`` is given.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import platform
import random
import smtplib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import smtpkit._speedups_py as pure_twin
from smtpkit.speedups import IMPLEMENTATION

MB = 1_000_000
BODY_SIZES = (1 * MB, 10 * MB)
EHLO_REPLY = (
    b"250-mx.example.com Hello client.example.org [192.0.2.25]\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-PIPELINING\r\n"
    b"250-ETRN\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-STARTTLS\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250 SMTPUTF8\r\n"
)
OK_REPLY = b"250 OK\r\n"

Timer = Callable[[int], float]
"""Runs a batch of ``n`` operations and returns the seconds they took."""


@dataclass
class Case:
    """One workload: contenders measured in the same rounds, in the same units."""

    name: str
    short: str  # names the case in the ratio rows
    unit: str  # "MB/s" or "replies/s"
    work_per_op: float  # units of work (MB or replies) done by one operation
    timers: dict[str, Timer]
    rates: dict[str, list[float]] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)  # operations per timed batch


@dataclass
class Target:
    """A ratio ``numerator / denominator`` within one case that should reach ``minimum``."""

    case: str
    numerator: str
    denominator: str
    minimum: float


# --------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------


def load_cython_twin() -> ModuleType | None:
    """The compiled twin, or None when it was not built (its rows are then skipped)."""
    try:
        return importlib.import_module("smtpkit._speedups")
    except ImportError:
        return None


def make_body(size: int, seed: int = 5321) -> bytes:
    """About ``size`` bytes of whole lines: half dot-led, with CRLF/LF/CR endings mixed."""
    rng = random.Random(seed)
    printable = bytes(0x20 + i % 95 for i in range(256))  # byte -> printable ASCII
    raw = rng.randbytes(size).translate(printable)
    endings = (b"\r\n", b"\n", b"\r")
    parts: list[bytes | bytearray] = []
    total = pos = i = 0
    while total < size:
        length = rng.randint(70, 78)
        if pos + length > len(raw):
            pos = 0
        line = bytearray(raw[pos : pos + length])
        pos += length
        if i % 2 == 0:
            line[0] = 0x2E  # "."
        elif line[0] == 0x2E:
            line[0] = 0x78  # "x": exactly half the lines are dot-led
        ending = endings[rng.randrange(3)]
        parts += (line, ending)
        total += length + len(ending)
        i += 1
    return b"".join(parts)


def smtplib_encode(text: str) -> tuple[bytes, float]:
    """smtplib's DATA path on ``text``: the result and the seconds its two calls took."""
    t0 = time.perf_counter()
    fixed = smtplib._fix_eols(text)  # type: ignore[attr-defined]
    t1 = time.perf_counter()
    data = fixed.encode("ascii")  # what SMTP.sendmail does between the two; not timed
    t2 = time.perf_counter()
    quoted: bytes = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    t3 = time.perf_counter()
    return quoted, (t1 - t0) + (t3 - t2)


def encode_timers(body: bytes, twins: dict[str, ModuleType]) -> dict[str, Timer]:
    """Timers for each DATA encoder on ``body``, after checking they all agree."""
    text = body.decode("ascii")
    expected, _ = smtplib_encode(text)
    expected += b".\r\n"  # SMTP.data's terminator (the body ends with a line break)
    for name, twin in twins.items():
        if twin.encode_data(body, 0) != expected:
            raise SystemExit(f"{name} encode_data disagrees with smtplib on the benchmark body")

    def twin_timer(encode: Callable[[bytes, int], bytes]) -> Timer:
        def run(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                encode(body, 0)
            return time.perf_counter() - t0

        return run

    def smtplib_timer(n: int) -> float:
        return sum(smtplib_encode(text)[1] for _ in range(n))

    def copy_timer(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            bytearray(body)
        return time.perf_counter() - t0

    timers = {name: twin_timer(twin.encode_data) for name, twin in twins.items()}
    timers["smtplib"] = smtplib_timer
    timers["copy"] = copy_timer
    return timers


def reply_timers(reply: bytes, twins: dict[str, ModuleType]) -> dict[str, Timer]:
    """Timers for each reply parser fed ``reply`` once per call, and for smtplib."""
    client = smtplib.SMTP(local_hostname="localhost")  # no connect, no DNS lookup
    client.file = io.BytesIO(reply)
    expected = client.getreply()
    for name, twin in twins.items():
        if twin.ReplyParser().feed(reply) != [expected]:
            raise SystemExit(f"{name} ReplyParser disagrees with smtplib on {reply[:20]!r}...")

    def twin_timer(twin: ModuleType) -> Timer:
        def run(n: int) -> float:
            feed = twin.ReplyParser().feed
            t0 = time.perf_counter()
            for _ in range(n):
                feed(reply)
            return time.perf_counter() - t0

        return run

    def smtplib_timer(n: int) -> float:
        client.file = io.BytesIO(reply * n)
        getreply = client.getreply
        t0 = time.perf_counter()
        for _ in range(n):
            getreply()
        elapsed = time.perf_counter() - t0
        client.file = None
        return elapsed

    timers = {name: twin_timer(twin) for name, twin in twins.items()}
    timers["smtplib"] = smtplib_timer
    return timers


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def calibrate(timer: Timer, sample_s: float) -> int:
    """How many operations make one batch of about ``sample_s`` seconds (at least 1)."""
    n = 1
    while True:
        elapsed = timer(n)
        if elapsed >= sample_s / 4 or n >= 1 << 24:
            return max(1, round(n * sample_s / max(elapsed, 1e-9)))
        n *= 4


def run_case(case: Case, rounds: int, sample_s: float) -> None:
    """Fill ``case.rates``: one batch per contender per round, contenders interleaved."""
    case.batch = batch = {name: calibrate(timer, sample_s) for name, timer in case.timers.items()}
    case.rates = {name: [] for name in case.timers}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, timer in case.timers.items():
                n = batch[name]
                case.rates[name].append(n * case.work_per_op / timer(n))
    finally:
        if gc_was_enabled:
            gc.enable()


def paired_ratio(case: Case, numerator: str, denominator: str) -> tuple[float, list[float]]:
    """Median of the per-round ratios of two contenders' rates, and the ratios."""
    ratios = [a / b for a, b in zip(case.rates[numerator], case.rates[denominator], strict=True)]
    return statistics.median(ratios), ratios


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f}" if unit == "replies/s" or value >= 100 else f"{value:,.1f}"


def spread(values: Sequence[float]) -> str:
    """Min-max range as a percentage of the median."""
    mid = statistics.median(values)
    return f"±{50 * (max(values) - min(values)) / mid:.0f}%"


def print_table(cases: list[Case], ratio_rows: list[tuple[str, str, str]]) -> None:
    width = 78
    for case in cases:
        print(f"\n{case.name}")
        print("-" * width)
        print(f"  {'contender':<12}{'median ' + case.unit:>20}{'spread':>10}{'vs smtplib':>14}")
        for name, rates in case.rates.items():
            versus = ""
            if name not in ("smtplib", "copy"):
                versus = f"{paired_ratio(case, name, 'smtplib')[0]:.1f}x"
            print(
                f"  {name:<12}{fmt_rate(statistics.median(rates), case.unit):>20}"
                f"{spread(rates):>10}{versus:>14}"
            )
    if ratio_rows:
        print(f"\n{'ratios (median of paired rounds)':<52}{'value':>10}{'target':>9}{'':>7}")
        print("-" * width)
        for label, value, verdict in ratio_rows:
            print(f"  {label:<50}{value:>10}{verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--sample-ms", type=float, default=50.0, help="target length of one batch (default 50)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.sample_ms <= 0:
        parser.error("--rounds and --sample-ms must be positive")
    sample_s = args.sample_ms / 1000

    cython_twin = load_cython_twin()
    twins: dict[str, ModuleType] = {}
    if cython_twin is not None:
        twins["cython"] = cython_twin
    twins["pure"] = pure_twin

    print("smtpkit hot-path benchmark")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}")
    print(f"smtpkit.speedups.IMPLEMENTATION = {IMPLEMENTATION!r}")
    if cython_twin is None:
        print("smtpkit._speedups is not importable: Cython rows skipped, its targets missed")
    print(f"{args.rounds} interleaved rounds, batches of ~{args.sample_ms:g} ms, GC off while timing")

    started = time.perf_counter()
    cases: list[Case] = []
    targets: list[Target] = []
    for size in BODY_SIZES:
        body = make_body(size)
        name = f"encode_data, {len(body) / MB:.0f} MB body (mixed EOLs, half the lines dot-led)"
        short = f"encode_data {len(body) / MB:.0f} MB"
        cases.append(Case(name, short, "MB/s", len(body) / MB, encode_timers(body, twins)))
        targets += [Target(name, "cython", "smtplib", 50.0), Target(name, "cython", "copy", 0.40)]
    for label, short, reply in (
        ("10-line EHLO reply", "feed EHLO", EHLO_REPLY),
        ("one-line 250 OK", "feed 250 OK", OK_REPLY),
    ):
        name = f"ReplyParser.feed, {label} ({len(reply)} bytes), one reply per call"
        cases.append(Case(name, short, "replies/s", 1.0, reply_timers(reply, twins)))
    targets.append(Target(cases[2].name, "cython", "smtplib", 20.0))

    for case in cases:
        run_case(case, args.rounds, sample_s)
    elapsed = time.perf_counter() - started

    by_name = {case.name: case for case in cases}
    ratio_rows: list[tuple[str, str, str]] = []
    results: list[dict[str, Any]] = []
    missed = 0
    for target in targets:
        case = by_name[target.case]
        label = f"{case.short}: {target.numerator}/{target.denominator}"
        if target.numerator not in case.rates:
            value: float | None = None
            ratios: list[float] = []
        else:
            value, ratios = paired_ratio(case, target.numerator, target.denominator)
        ok = value is not None and value >= target.minimum
        missed += not ok
        shown = "n/a" if value is None else (f"{value:.1f}x" if value >= 2 else f"{value:.1%}")
        wanted = f"{target.minimum:g}x" if target.minimum >= 2 else f"{target.minimum:.0%}"
        ratio_rows.append((label, shown, f"{'>= ' + wanted:>9}  {'PASS' if ok else 'MISS'}"))
        results.append(
            {
                "case": target.case,
                "ratio": f"{target.numerator}/{target.denominator}",
                "minimum": target.minimum,
                "median": value,
                "per_round": ratios,
                "pass": ok,
            }
        )

    print_table(cases, ratio_rows)
    verdict = "all targets met" if not missed else f"{missed} of {len(targets)} targets missed"
    print(f"\n{verdict} (measured in {elapsed:.0f} s)")

    if args.json is not None:
        report = {
            "python": sys.version,
            "platform": platform.platform(),
            "implementation": IMPLEMENTATION,
            "rounds": args.rounds,
            "sample_ms": args.sample_ms,
            "cases": [
                {
                    "name": case.name,
                    "unit": case.unit,
                    "contenders": {
                        name: {
                            "median": statistics.median(rates),
                            "batch": case.batch[name],
                            "per_round": rates,
                        }
                        for name, rates in case.rates.items()
                    },
                }
                for case in cases
            ],
            "targets": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")

    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
