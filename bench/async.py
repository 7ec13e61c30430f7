"""AsyncSMTP throughput: 2000 messages of 2 KB over 4 connections in one loop, to smtp-sink.

Run:  python bench/async.py [--rounds 5] [--check]

Beside aiosmtplib with the same 4 connections in the same loop, contenders interleaved
round by round; the ratio is the median of the per-round ratios. Target (issue 8): at
least 4x aiosmtplib.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import FROM, TO, message, start_sink  # the shared benchmark helpers

from smtpkit.aio import BatchItem, send_batch


async def run_smtpkit(port: int, msg: bytes, count: int, connections: int) -> float:
    items = [BatchItem(FROM, [TO], msg)] * count
    start = time.perf_counter()
    results = await send_batch(items, "127.0.0.1", port, connections=connections, local_hostname="bench.example")
    elapsed = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} smtpkit sends failed: {failed[0]!r}")
    return count / elapsed


async def run_aiosmtplib(port: int, msg: bytes, count: int, connections: int) -> float:
    import aiosmtplib

    async def worker(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench.example", start_tls=False)
        await smtp.connect()
        for _ in range(n):
            await smtp.sendmail(FROM, [TO], msg)
        await smtp.quit()

    share = [count // connections + (i < count % connections) for i in range(connections)]
    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in share))
    return count / (time.perf_counter() - start)


async def amain(args: argparse.Namespace, port: int) -> int:
    msg = message(2048)
    await run_smtpkit(port, msg, 200, args.connections)  # warm-up
    await run_aiosmtplib(port, msg, 200, args.connections)
    rates: dict[str, list[float]] = {"smtpkit.AsyncSMTP": [], "aiosmtplib": []}
    for _ in range(args.rounds):
        rates["smtpkit.AsyncSMTP"].append(await run_smtpkit(port, msg, args.count, args.connections))
        rates["aiosmtplib"].append(await run_aiosmtplib(port, msg, args.count, args.connections))
    print(f"{args.count} messages of 2 KB, {args.connections} connections, one loop, smtp-sink")
    for name, values in rates.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {name:<18} {statistics.median(values):>9,.0f} msg/s   (runs: {runs})")
    ratio = statistics.median(a / b for a, b in zip(rates["smtpkit.AsyncSMTP"], rates["aiosmtplib"], strict=True))
    ok = ratio >= 4.0
    print(f"\n  smtpkit / aiosmtplib (median of paired ratios): {ratio:.2f}x  >= 4x  {'PASS' if ok else 'MISS'}")
    return 1 if (args.check and not ok) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    sink, port = start_sink()
    try:
        return asyncio.run(amain(args, port))
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    sys.exit(main())
