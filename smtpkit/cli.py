"""``smtpkit`` on the command line: ``send``, ``serve`` and ``demo``.

Without ``--host``, ``send`` delivers to an embedded capture server and says so: nothing
leaves the machine by accident. Passwords come from ``SMTPKIT_PASSWORD``, the keyring
(if the ``keyring`` package is installed) or a prompt; never from the command line.

Exit codes: 0 success, 1 error, 2 usage error, 3 partial failure (some recipients refused).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import html
import mimetypes
import signal
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .account import PASSWORD_ENV, find_password
from .client import SMTP, SMTP_SSL
from .errors import SMTPKitError, text_of
from .protocol import SendResult

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class CLIError(Exception):
    """A problem to report as one readable line."""


def _password(host: str, user: str) -> str:
    """SMTPKIT_PASSWORD, the keyring, ~/.netrc (as the notebook forms), else a prompt."""
    found, _ = find_password(host, user)
    if found:
        return found
    if not sys.stdin.isatty():
        raise CLIError(f"no password for {user}: set {PASSWORD_ENV}, store it in the keyring or in ~/.netrc")
    return getpass.getpass(f"Password for {user} at {host}: ")


def _compose(args: argparse.Namespace) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = ", ".join(args.to)
    if args.cc:
        msg["Cc"] = ", ".join(args.cc)
    msg["Subject"] = args.subject
    msg["Message-ID"] = make_msgid(domain=args.sender.rpartition("@")[2] or None)
    from email.utils import formatdate

    msg["Date"] = formatdate(localtime=True)
    text = args.body if args.body is not None else Path(args.body_file).read_text(encoding="utf-8")
    msg.set_content(text)
    if args.html:
        msg.add_alternative(Path(args.html).read_text(encoding="utf-8"), subtype="html")
    for name in args.attach or ():
        path = Path(name)
        ctype, encoding = mimetypes.guess_type(path.name)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def _connect(args: argparse.Namespace, host: str, port: int) -> SMTP:
    context = None
    if args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)
    kwargs: dict[str, Any] = {"timeout": args.timeout, "context": context}
    if args.security == "ssl":
        return SMTP_SSL(host, port, **kwargs)
    smtp = SMTP(host, port, **kwargs)
    if args.security == "starttls":
        smtp.starttls()
    return smtp


def _report(result: SendResult, where: str) -> int:
    accepted = result.accepted
    for row in result.describe():
        mark = "ok  " if row["accepted"] else "FAIL"
        print(f"  {mark} {row['recipient']}: {row['code']} {row['text'] or ''}".rstrip())
    if len(accepted) == len(result.recipients):
        print(f"sent to {len(accepted)} recipient(s) via {where}")
        return EXIT_OK
    print(f"sent to {len(accepted)} of {len(result.recipients)} recipients via {where}")
    return EXIT_PARTIAL


def cmd_send(args: argparse.Namespace) -> int:
    if args.body is None and args.body_file is None:
        raise CLIError("give --body TEXT or --body-file FILE")
    msg = _compose(args)
    recipients = [*args.to, *(args.cc or ()), *(args.bcc or ())]
    if args.host is None:
        from .server import CaptureServer

        maildir = Path(args.maildir or "captured-mail")
        with CaptureServer(maildir=maildir) as server:
            print(f"no --host given: delivering to an embedded capture server (mail kept in {maildir}/new)")
            with SMTP(server.host, server.port, timeout=args.timeout) as smtp:
                if args.debug:
                    smtp.set_debuglevel(1)
                result = smtp.send_message(msg, to_addrs=recipients)
            return _report(result, "the embedded capture server")
    port = args.port or {"ssl": 465, "starttls": 587, "none": 25}[args.security]
    smtp = _connect(args, args.host, port)
    try:
        if args.debug:
            smtp.set_debuglevel(1)
        if args.user:
            smtp.login(args.user, _password(args.host, args.user))
        result = smtp.send_message(msg, to_addrs=recipients)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
    return _report(result, f"{args.host}:{port}")


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import CaptureServer

    users = {}
    if args.auth_user:
        users[args.auth_user] = _password(f"{args.host}:{args.port}", args.auth_user)
    maildir = Path(args.maildir or "captured-mail")

    def show(message: Any) -> None:
        env = message.envelope
        print(
            f"{time.strftime('%H:%M:%S')}  {env.mail_from} -> {', '.join(env.rcpt_tos)}  "
            f"{str(message.get('Subject', ''))[:60]!r}  {env.size} bytes{'  (TLS)' if env.tls else ''}",
            flush=True,
        )

    server = CaptureServer(
        args.host,
        args.port,
        maildir,
        users=users,
        starttls=args.starttls,
        smtputf8=not args.no_smtputf8,
        pipelining=not args.no_pipelining,
        chunking=not args.no_chunking,
        on_message=show,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(
            f"capture server on {server.host}:{server.port}, mail kept in {maildir}/new (Ctrl-C to stop)",
            flush=True,
        )
        if server.certificate:
            print(f"STARTTLS certificate (self-signed): {server.certificate}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print(f"stopped; {len(server.messages)} message(s) captured")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import Campaign

    template = Path(args.template).read_text(encoding="utf-8")
    kind = {".html": "html", ".htm": "html", ".md": "markdown"}.get(Path(args.template).suffix.lower(), "text")
    subject = args.subject
    if subject is None:  # a template file may start with "Subject: ..."
        first, _, rest = template.partition("\n")
        if not first.lower().startswith("subject:"):
            raise CLIError("give --subject, or start the template with a 'Subject: ...' line")
        subject, template = first.split(":", 1)[1].strip(), rest.lstrip("\n")
    campaign = Campaign(
        args.data,
        sender=args.sender,
        subject=subject,
        to_column=args.to_column,
        key_column=args.key_column,
        name=args.campaign or Path(args.data).stem,
        text=template if kind == "text" else None,
        html=template if kind == "html" else None,
        markdown=template if kind == "markdown" else None,
    )
    if args.dry_run:
        paths = campaign.dry_run(args.dry_run)
        print(f"dry run: {len(paths)} message(s) written to {args.dry_run}, nothing sent")
        return EXIT_OK
    login = (args.user, _password(args.host or "capture", args.user)) if args.user else None
    if args.host is None:
        from .server import CaptureServer

        maildir = Path(args.maildir or "captured-mail")
        with CaptureServer(maildir=maildir) as server:
            print(f"no --host given: delivering to an embedded capture server (mail kept in {maildir}/new)")
            result = campaign.send(
                host=server.host,
                port=server.port,
                security="none",
                journal=args.journal,
                connections=args.connections,
                rate=args.rate,
                progress=not args.quiet,
            )
    else:
        context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
        result = campaign.send(
            host=args.host,
            port=args.port or 0,
            security=args.security,
            login=login,
            context=context,
            journal=args.journal,
            connections=args.connections,
            rate=args.rate,
            progress=not args.quiet,
            resend_unknown=args.resend_unknown,
        )
    summary = result.summary()
    print(", ".join(f"{k}: {v}" for k, v in sorted(summary.items())) + f" in {result.elapsed:.1f} s")
    if result.stopped_by:
        print(f"stopped: {result.stopped_by}")
    if args.results:
        _write_results(result, args.results)
        print(f"per-row results written to {args.results}")
    bad = sum(v for k, v in summary.items() if k not in ("sent", "skipped"))
    return EXIT_OK if not bad else EXIT_PARTIAL


def _write_results(result: Any, path: str) -> None:
    from dataclasses import asdict

    rows = [asdict(o) for o in result.outcomes]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        for row in rows:
            row["recipients"] = " ".join(row["recipients"])
            row["refused"] = " ".join(f"{k}={v}" for k, v in row["refused"].items())
            writer.writerow(row)


def _svg_chart(rows: Sequence[dict[str, str]]) -> bytes:
    """A small bar chart as SVG, drawn without matplotlib."""
    width, bar, gap = 560, 18, 6
    top = max(int(r["tickets"]) for r in rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(rows) * (bar + gap) + 30}">']
    parts.append('<text x="10" y="16" font-family="sans-serif" font-size="13">Tickets closed this month</text>')
    for i, row in enumerate(rows):
        y = 26 + i * (bar + gap)
        length = int(int(row["tickets"]) / top * 360)
        parts.append(
            f'<text x="10" y="{y + 13}" font-family="sans-serif" font-size="11">{html.escape(row["name"])}</text>'
        )
        parts.append(f'<rect x="150" y="{y}" width="{length}" height="{bar}" fill="#4c78a8"/>')
        parts.append(
            f'<text x="{155 + length}" y="{y + 13}" font-family="sans-serif" font-size="11">{row["tickets"]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts).encode()


def _demo_message(row: dict[str, str], rows: Sequence[dict[str, str]], chart: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Support Reports <reports@example.org>"
    msg["To"] = f"{row['name']} <{row['email']}>"
    msg["Subject"] = f"{row['name'].split()[0]}, your {row['team']} report"
    msg["Message-ID"] = make_msgid(domain="example.org")
    text = (
        f"Hello {row['name'].split()[0]},\n\nYou closed {row['tickets']} tickets this month "
        f"with a satisfaction score of {row['satisfaction']}.\n\nThe team table and chart are in the HTML part.\n"
    )
    msg.set_content(text)
    cells = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['team'])}</td>"
        f"<td style='text-align:right'>{r['tickets']}</td><td style='text-align:right'>{r['satisfaction']}</td></tr>"
        for r in rows
    )
    cid = make_msgid(domain="example.org")
    page = (
        f"<p>Hello {html.escape(row['name'].split()[0])},</p>"
        f"<p>You closed <b>{row['tickets']}</b> tickets this month.</p>"
        "<table style='border-collapse:collapse' border='1' cellpadding='4'>"
        f"<tr><th>Name</th><th>Team</th><th>Tickets</th><th>Satisfaction</th></tr>{cells}</table>"
        f"<p><img src='cid:{cid[1:-1]}' alt='tickets chart'></p>"
    )
    msg.add_alternative(page, subtype="html")
    html_part: Any = msg.get_payload()[1]  # type: ignore[index]
    html_part.add_related(chart, maintype="image", subtype="svg+xml", cid=cid, filename="chart.svg")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def cmd_demo(args: argparse.Namespace) -> int:
    from .server import CaptureServer

    with resources.files("smtpkit").joinpath("data/sample.csv").open("r", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    maildir = Path(args.maildir or "captured-mail")
    chart = _svg_chart(rows)
    print(f"smtpkit {__version__} demo: {len(rows)} personalised reports, each with a table and a chart")
    with CaptureServer(maildir=maildir) as server:
        print(f"embedded capture server on {server.host}:{server.port} (nothing leaves this machine)")
        start = time.perf_counter()
        results = []
        with SMTP(server.host, server.port, timeout=30) as smtp:
            for row in rows:
                try:
                    result = smtp.sendmail("reports@example.org", [row["email"]], _demo_message(row, rows, chart))
                    reply = result.outcome(row["email"])
                    results.append((row["email"], "sent", reply.code if reply else None, reply.text if reply else ""))
                except (smtplib.SMTPException, SMTPKitError) as exc:
                    results.append((row["email"], "failed", getattr(exc, "smtp_code", None), str(exc)))
        elapsed = time.perf_counter() - start
        captured = len(server.messages)
    width = max(len(r[0]) for r in results)
    print()
    print(f"{'recipient':<{width}}  status  code  reply")
    for email_addr, status, code, text in results:
        print(f"{email_addr:<{width}}  {status:<6}  {code or '':<4}  {text}")
    sent = sum(r[1] == "sent" for r in results)
    print()
    print(f"{sent}/{len(results)} sent in {elapsed * 1000:.0f} ms ({len(results) / elapsed:,.0f} messages/s)")
    print(f"{captured} message(s) captured in {maildir.resolve()}/new  (open them with any mail client)")
    return EXIT_OK if sent == len(results) else EXIT_PARTIAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtpkit", description="A fast, safe SMTP toolkit.")
    parser.add_argument("--version", action="version", version=f"smtpkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    send = sub.add_parser("send", help="send one message", description=cmd_send.__doc__ or "send one message")
    send.add_argument("--host", help="SMTP server (default: an embedded capture server)")
    send.add_argument("--port", type=int, help="port (default: 465 for ssl, 587 for starttls, 25 for none)")
    send.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    send.add_argument("--to", action="append", required=True, metavar="ADDRESS")
    send.add_argument("--cc", action="append", metavar="ADDRESS")
    send.add_argument("--bcc", action="append", metavar="ADDRESS")
    send.add_argument("--subject", required=True)
    body = send.add_mutually_exclusive_group()
    body.add_argument("--body", help="the plain-text body")
    body.add_argument("--body-file", metavar="FILE", help="read the plain-text body from FILE")
    send.add_argument("--html", metavar="FILE", help="an HTML alternative body")
    send.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeatable)")
    send.add_argument("--security", choices=["ssl", "starttls", "none"], default="starttls")
    send.add_argument("--user", help=f"log in as USER (password from ${PASSWORD_ENV}, the keyring, or a prompt)")
    send.add_argument("--cafile", help="trust this CA bundle (e.g. a test server's certificate)")
    send.add_argument("--timeout", type=float, default=60.0)
    send.add_argument("--maildir", help="where the embedded capture server keeps mail (default: ./captured-mail)")
    send.add_argument("--debug", action="store_true", help="print the SMTP transcript (credentials redacted)")
    send.set_defaults(func=cmd_send)

    serve = sub.add_parser("serve", help="run a local capture server", description="Run a local SMTP capture server.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8025)
    serve.add_argument("--maildir", help="Maildir for captured mail (default: ./captured-mail)")
    serve.add_argument("--starttls", action="store_true", help="offer STARTTLS with a new self-signed certificate")
    serve.add_argument("--auth-user", help=f"require AUTH as this user (password from ${PASSWORD_ENV} or a prompt)")
    serve.add_argument("--no-smtputf8", action="store_true")
    serve.add_argument("--no-pipelining", action="store_true")
    serve.add_argument("--no-chunking", action="store_true")
    serve.set_defaults(func=cmd_serve)

    merge = sub.add_parser("merge", help="one message per row of a CSV/Parquet file", description="Mail merge.")
    merge.add_argument("data", help="a .csv or .parquet file, one row per message")
    merge.add_argument("--template", required=True, help="body template (.txt, .html or .md; Jinja2)")
    merge.add_argument("--subject", help="subject template (default: the template's 'Subject:' line)")
    merge.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    merge.add_argument("--to-column", default="email")
    merge.add_argument("--key-column", help="a column with a unique, stable id per row (default: a hash of the row)")
    merge.add_argument("--campaign", help="campaign name in the journal (default: the data file's name)")
    merge.add_argument("--host")
    merge.add_argument("--port", type=int)
    merge.add_argument("--security", choices=["ssl", "starttls", "none"], default="starttls")
    merge.add_argument("--user")
    merge.add_argument("--cafile")
    merge.add_argument("--connections", type=int, default=4)
    merge.add_argument("--rate", type=float, help="messages per second at most")
    merge.add_argument("--journal", help="SQLite journal: a re-run sends only what was not confirmed")
    merge.add_argument("--resend-unknown", action="store_true", help="also resend rows whose outcome is unknown")
    merge.add_argument("--dry-run", metavar="DIR", help="write .eml files to DIR and send nothing")
    merge.add_argument("--results", metavar="FILE", help="write per-row results as CSV")
    merge.add_argument("--maildir")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=cmd_merge)

    demo = sub.add_parser("demo", help="the whole job end to end, no set-up", description="Run the demo.")
    demo.add_argument("--maildir", help="where captured mail goes (default: ./captured-mail)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"smtpkit: {exc}", file=sys.stderr)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{r} ({c})" for r, (c, _) in exc.recipients.items())
        print(f"smtpkit: every recipient was refused: {refused}", file=sys.stderr)
    except smtplib.SMTPResponseException as exc:
        text = text_of(exc.smtp_error)
        print(f"smtpkit: {type(exc).__name__}: {exc.smtp_code} {text}", file=sys.stderr)
    except (smtplib.SMTPException, SMTPKitError, OSError, ValueError) as exc:
        print(f"smtpkit: {type(exc).__name__}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("smtpkit: interrupted", file=sys.stderr)
    return EXIT_ERROR
