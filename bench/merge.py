"""Mail merge end to end: 5000 personalised ~2 KB messages from a DataFrame to smtp-sink.

Run:  python bench/merge.py [--rounds 3] [--count 5000]

Contenders, interleaved round by round in one run (ratios = medians of paired ratios):

* smtpkit: ``Campaign(df, ...).send(connections=4)``: render every row (Jinja2), then send
  over 4 pipelined connections (no journal, no progress bar);
* the plain loop: for each row, an ``EmailMessage`` (``str.format`` bodies) and
  ``smtplib.SMTP.send_message`` on one connection;
* Postfix ``smtp-source -s 4`` (C, 4 sessions) sending the same number of 2 KB messages.

Targets (issue 6): >= 6x the smtplib loop and >= 0.75x smtp-source -s 4.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import find, start_sink  # the shared benchmark helpers

from smtpkit.merge import Campaign

PARAGRAPH = (
    "Thank you for being a customer. This month your team {team} closed {tickets} tickets with an "
    "average satisfaction of {score:.2f}. The attached summary explains how the figures were computed "
    "and what changed since last month.\n"
)
TEMPLATE = (
    "Dear {{ name }},\n\n"
    + (
        PARAGRAPH.replace("{team}", "{{ team }}")
        .replace("{tickets}", "{{ tickets }}")
        .replace("{score:.2f}", "{{ '%.2f' % score }}")
    )
    * 7
    + "\nBest regards,\nThe support team\n"
)


def frame(count: int) -> object:
    import pandas as pd

    return pd.DataFrame(
        {
            "id": [f"row{i}" for i in range(count)],
            "email": [f"user{i}@example.org" for i in range(count)],
            "name": [f"User Number {i}" for i in range(count)],
            "team": [f"team-{i % 17}" for i in range(count)],
            "tickets": [i % 97 for i in range(count)],
            "score": [4 + (i % 10) / 10 for i in range(count)],
        }
    )


def run_smtpkit(df: object, port: int) -> float:
    campaign = Campaign(
        df,
        sender="Support <support@example.org>",
        subject="{{ name }}, your monthly report",
        text=TEMPLATE,
        key_column="id",
    )
    start = time.perf_counter()
    result = campaign.send(host="127.0.0.1", port=port, security="none", connections=4, progress=False)
    elapsed = time.perf_counter() - start
    assert result.summary() == {"sent": len(campaign)}, result.summary()
    return len(campaign) / elapsed


def run_smtplib(df: object, port: int) -> float:
    rows = df.to_dict("records")  # type: ignore[attr-defined]
    body = "Dear {name},\n\n" + PARAGRAPH * 7 + "\nBest regards,\nThe support team\n"
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.example") as smtp:
        for row in rows:
            msg = EmailMessage()
            msg["From"] = "Support <support@example.org>"
            msg["To"] = row["email"]
            msg["Subject"] = f"{row['name']}, your monthly report"
            msg.set_content(body.format(**row))
            smtp.send_message(msg)
    return len(rows) / (time.perf_counter() - start)


def run_source(port: int, count: int) -> float:
    import subprocess

    cmd = [find("smtp-source"), "-s", "4", "-m", str(count), "-l", "2048", "-f", "a@example.org", "-t", "b@example.org"]
    start = time.perf_counter()
    subprocess.run([*cmd, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    df = frame(args.count)
    sink, port = start_sink()
    try:
        size = len(Campaign(df.head(1), sender="s@example.org", subject="x", text=TEMPLATE).prepare()[0].data)  # type: ignore[attr-defined]
        print(f"{args.count} personalised messages of ~{size:,} bytes, smtp-sink on 127.0.0.1:{port}\n")
        rates: dict[str, list[float]] = {
            "smtpkit Campaign (4 conns)": [],
            "smtplib send_message loop": [],
            "smtp-source -s 4": [],
        }
        for _ in range(args.rounds):
            rates["smtpkit Campaign (4 conns)"].append(run_smtpkit(df, port))
            rates["smtplib send_message loop"].append(run_smtplib(df, port))
            rates["smtp-source -s 4"].append(run_source(port, args.count))
        for name, values in rates.items():
            runs = ", ".join(f"{v:,.0f}" for v in values)
            print(f"  {name:<28} {statistics.median(values):>8,.0f} msg/s   (runs: {runs})")
        names = list(rates)
        vs_lib = statistics.median(a / b for a, b in zip(rates[names[0]], rates[names[1]], strict=True))
        vs_src = statistics.median(a / b for a, b in zip(rates[names[0]], rates[names[2]], strict=True))
        ok1, ok2 = vs_lib >= 6, vs_src >= 0.75
        print(f"\n  smtpkit / smtplib loop     {vs_lib:5.2f}x  >= 6x     {'PASS' if ok1 else 'MISS'}")
        print(f"  smtpkit / smtp-source -s 4 {vs_src:5.2f}x  >= 0.75x  {'PASS' if ok2 else 'MISS'}")
        return 1 if args.check and not (ok1 and ok2) else 0
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    sys.exit(main())
