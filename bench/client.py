"""Client throughput and memory: smtpkit.SMTP vs smtplib.SMTP vs Postfix smtp-source.

Run:  python bench/client.py [--rounds 5] [--check] [--json out.json]

What it measures, all against one Postfix ``smtp-sink`` on 127.0.0.1 (started here):

* messages/s over ONE connection, ``sendmail`` per message, for 2000 messages of 2 KB
  and 300 of 100 KB: smtpkit, smtplib, and ``smtp-source -s 1`` (C, one session, no
  pipelining), contenders interleaved round by round (A B C A B C ...); the ratios are
  medians of the per-round ratios, because absolute numbers drift on shared machines;
  ``smtpkit send_many`` (pipelining across messages) is shown for information;
* the client's CPU time per message (user + system; for smtp-source, its process), since
  smtpkit busy-waits for quick replies (``SMTP(spin=...)``, on by default) where smtplib
  sleeps: throughput bought with CPU shows up here;
* peak memory added by sending one 100 MB message from a file with smtpkit (measured
  in a fresh subprocess with ``ru_maxrss``).

Targets (issue 3): 2 KB >= 3x smtplib and >= 1.5x smtp-source; 100 KB >= 2.5x smtplib;
100 MB from a file adds <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import smtpkit
from smtpkit import speedups

FROM, TO = "sender@example.org", "rcpt@example.org"


def find(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if not path:
        sys.exit(f"{binary} not found: install Debian's postfix package")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([find("smtp-sink"), *user, f"127.0.0.1:{port}", "1000"], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    sys.exit("smtp-sink did not start")


def message(size: int) -> bytes:
    head = f"From: {FROM}\r\nTo: {TO}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghij.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2]
    return head + body.rstrip(b"\r\n") + b"\r\n"


CPU: dict[str, list[float]] = {}  # contender -> CPU microseconds per message, per run


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_client(module: object, port: int, msg: bytes, count: int) -> float:
    smtp = module.SMTP("127.0.0.1", port, local_hostname="bench.example")  # type: ignore[attr-defined]
    smtp.ehlo()
    cpu = cpu_seconds()
    start = time.perf_counter()
    for _ in range(count):
        smtp.sendmail(FROM, [TO], msg)
    elapsed = time.perf_counter() - start
    CPU.setdefault(module.__name__, []).append((cpu_seconds() - cpu) / count * 1e6)  # type: ignore[attr-defined]
    smtp.quit()
    return count / elapsed


def run_many(port: int, msg: bytes, count: int) -> float:
    """smtpkit's batch path: the same messages through send_many (one round trip each)."""
    smtp = smtpkit.SMTP("127.0.0.1", port, local_hostname="bench.example")
    smtp.ehlo()
    start = time.perf_counter()
    results = smtp.send_many([(FROM, [TO], msg)] * count)
    elapsed = time.perf_counter() - start
    smtp.quit()
    assert all(isinstance(r, smtpkit.SendResult) for r in results)
    return count / elapsed


def run_source(port: int, size: int, count: int) -> float:
    cmd = [find("smtp-source"), "-s", "1", "-m", str(count), "-l", str(size), "-f", FROM, "-t", TO]
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*cmd, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    rate = count / (time.perf_counter() - start)
    CPU.setdefault("smtp-source -s 1", []).append((cpu_seconds(resource.RUSAGE_CHILDREN) - cpu) / count * 1e6)
    return rate


MEMORY_CHILD = r"""
import resource, sys, smtpkit
path, port = sys.argv[1], int(sys.argv[2])
s = smtpkit.SMTP("127.0.0.1", port, local_hostname="bench.example")
s.ehlo()
s.sendmail("a@example.org", ["b@example.org"], b"Subject: warm-up\r\n\r\nx\r\n")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(path, "rb") as fh:
    result = s.sendmail("a@example.org", ["b@example.org"], fh)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s.quit()
assert result.data_reply.code == 250, result.data_reply
print((after - before) / 1024)
"""


def memory_100mb(port: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".eml") as fh:
        fh.write(b"Subject: big\r\n\r\n")
        line = b".dotted line, and more text to make it about eighty bytes long, 0123456789abc\n"
        for _ in range(100 * 1024 * 1024 // len(line)):
            fh.write(line)
        fh.flush()
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, fh.name, str(port)], check=True, capture_output=True, text=True
        )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=2000, help="number of 2 KB messages")
    parser.add_argument("--large", type=int, default=300, help="number of 100 KB messages")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    sink, port = start_sink()
    try:
        print(f"Python {sys.version.split()[0]}, smtpkit {smtpkit.__version__}, kernels: {speedups.IMPLEMENTATION}")
        print(f"smtp-sink on 127.0.0.1:{port}; {args.rounds} interleaved rounds\n")
        cases = {"2 KB": (2048, args.small), "100 KB": (100 * 1024, args.large)}
        contenders: dict[str, Callable[[bytes, int, int], float]] = {
            "smtpkit": lambda msg, size, n: run_client(smtpkit, port, msg, n),
            "smtplib": lambda msg, size, n: run_client(smtplib, port, msg, n),
            "smtp-source -s 1": lambda msg, size, n: run_source(port, size, n),
            "smtpkit send_many": lambda msg, size, n: run_many(port, msg, n),  # informational
        }
        results: dict[str, dict[str, list[float]]] = {}
        cpu_results: dict[str, dict[str, float]] = {}
        for label, (size, count) in cases.items():
            msg = message(size)
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            run_client(smtpkit, port, msg, min(count, 100))  # warm-up
            run_client(smtplib, port, msg, min(count, 100))
            CPU.clear()
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    rates[name].append(fn(msg, size, count))
            results[label] = rates
            print(f"{label} messages, {count} per run, one connection")
            for name, values in rates.items():
                runs = ", ".join(f"{v:,.0f}" for v in values)
                cpu = CPU.get(name)
                used = f"{statistics.median(cpu):>5,.0f} us CPU/msg" if cpu else " " * 16
                print(f"  {name:<18} {statistics.median(values):>9,.0f} msg/s  {used}   (runs: {runs})")
            cpu_results[label] = {name: statistics.median(v) for name, v in CPU.items()}
            print()

        def ratio(label: str, a: str, b: str) -> float:
            r = results[label]
            return statistics.median(x / y for x, y in zip(r[a], r[b], strict=True))

        checks = [
            ("2 KB: smtpkit / smtplib", ratio("2 KB", "smtpkit", "smtplib"), 3.0),
            ("2 KB: smtpkit / smtp-source -s 1", ratio("2 KB", "smtpkit", "smtp-source -s 1"), 1.5),
            ("100 KB: smtpkit / smtplib", ratio("100 KB", "smtpkit", "smtplib"), 2.5),
        ]
        added = memory_100mb(port)
        missed = 0
        print("targets (median of paired ratios)                 value   target")
        for name, value, target in checks:
            ok = value >= target
            missed += not ok
            print(f"  {name:<44} {value:>6.2f}x  >= {target}x  {'PASS' if ok else 'MISS'}")
        mem_ok = added <= 20
        missed += not mem_ok
        label = "100 MB message from a file: peak memory added"
        print(f"  {label:<44} {added:>5.1f} MB <= 20 MB  {'PASS' if mem_ok else 'MISS'}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(
                    {
                        "rates": results,
                        "cpu_us_per_message": cpu_results,
                        "ratios": {n: v for n, v, _ in checks},
                        "memory_mb": added,
                    },
                    fh,
                    indent=2,
                )
        return 1 if (args.check and missed) else 0
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    sys.exit(main())
