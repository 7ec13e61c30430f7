"""Compose speed: a message with a table and an inline figure, built and flattened.

Run:  python bench/compose.py [--rounds 7] [--count 300]

smtpkit.Message (add_table + embed a PNG + as_bytes) beside the same message built by
hand with the email package (EmailMessage, DataFrame.to_html, add_related, as_bytes), in
one run, interleaved; the figure is rendered to PNG once, outside the timing, so both
sides do the same work. Informational: the issue sets no target.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from smtpkit.message import Message


def fixtures() -> tuple[object, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(
        {"team": [f"team {i}" for i in range(20)], "tickets": range(20), "score": [i / 7 for i in range(20)]}
    )
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(df.team, df.tickets)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return df, buf.getvalue()


def with_smtpkit(df: object, png: bytes) -> bytes:
    msg = Message("Reports <reports@example.org>", to="ada@example.org", subject="Weekly numbers")
    msg.add_html("<p>Hello Ada, here are this week's numbers.</p>").add_table(df)
    msg.add_html(f'<p><img src="{msg.embed(png)}" alt="chart"></p>')
    return msg.as_bytes()


def by_hand(df: object, png: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Reports <reports@example.org>"
    msg["To"] = "ada@example.org"
    msg["Subject"] = "Weekly numbers"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content("Hello Ada, here are this week's numbers.")
    cid = make_msgid(domain="example.org")
    html = f"<p>Hello Ada, here are this week's numbers.</p>{df.to_html()}<p><img src='cid:{cid[1:-1]}'></p>"  # type: ignore[attr-defined]
    msg.add_alternative(html, subtype="html")
    msg.get_payload()[1].add_related(png, maintype="image", subtype="png", cid=cid)  # type: ignore[index]
    return msg.as_bytes()


def rate(fn: object, df: object, png: bytes, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn(df, png)  # type: ignore[operator]
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    df, png = fixtures()
    with_smtpkit(df, png), by_hand(df, png)  # warm-up
    rates: dict[str, list[float]] = {"smtpkit.Message": [], "email package by hand": []}
    for _ in range(args.rounds):
        rates["smtpkit.Message"].append(rate(with_smtpkit, df, png, args.count))
        rates["email package by hand"].append(rate(by_hand, df, png, args.count))
    print(f"message with a 20-row table and an inline {len(png):,}-byte PNG, built and flattened")
    for name, values in rates.items():
        print(f"  {name:<24} {statistics.median(values):>8,.0f} messages/s")
    ratio = statistics.median(a / b for a, b in zip(*rates.values(), strict=True))
    print(f"  smtpkit / by hand: {ratio:.2f}x (median of paired rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
