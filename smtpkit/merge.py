"""Mail merge: one message per row of a DataFrame, CSV, Parquet file or list of dicts.

::

    campaign = Campaign(df, sender="Reports <reports@example.org>", to_column="email",
                        subject="Hello {{ name }}", text="Dear {{ name }}, you closed {{ tickets }} tickets.")
    campaign.preview(0)                  # a Message: look before you send
    campaign.dry_run("outbox/")          # .eml files, nothing sent
    result = campaign.send(host="smtp.example.org", port=587, login=(user, password),  # security="starttls"
                           journal="campaign.sqlite", connections=4, rate=10)
    result.to_frame()                    # one row per input row: status, code, enhanced, text, ...

Templates are Jinja2 with StrictUndefined, and every row is rendered before anything is
sent: a missing column or a bad address stops the campaign with the row named. Each row
has a stable key (``key_column``, or a hash of the row) and a Message-ID derived from it,
so a resend after a crash reuses the same Message-ID and the journal never sends a
confirmed row twice. Rows without attachments are built directly as MIME bytes (the same
structure the email package would produce), which is several times faster than building
and flattening an ``EmailMessage`` per row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import quopri
import threading
from collections.abc import Callable, Mapping, Sequence
from email.header import Header
from email.utils import formatdate
from pathlib import Path
from typing import Any

from .address import header_addresses
from .bulk import CampaignResult, Outcome, Prepared, RateLimit, RetryPolicy, send_campaign
from .journal import Journal
from .message import Message, check_header_value, html_to_text

__all__ = ["Campaign", "load_rows"]


def load_rows(data: Any) -> list[dict[str, Any]]:
    """Rows as dicts from a DataFrame, a CSV/Parquet path, or an iterable of mappings."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        if type(data).__module__.startswith("dask"):
            data = data.compute()
        if not hasattr(data, "iloc"):
            return [dict(r) for r in data.to_dict("records")]
        # column by column (Series.tolist gives Python values, as to_dict does), twice as fast
        columns = list(data.columns)
        values = [data.iloc[:, i].tolist() for i in range(len(columns))]
        return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if path.suffix.lower() == ".parquet":
            try:
                import pandas as pd  # type: ignore[import-untyped]
            except ImportError:
                raise ImportError("Parquet input needs pandas and pyarrow: pip install 'smtpkit[data]'") from None
            return load_rows(pd.read_parquet(path))
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    return [dict(row) for row in data]


def _environment(html: bool) -> Any:
    """Jinja2 with StrictUndefined; HTML templates escape every value taken from the data."""
    try:
        import jinja2
    except ImportError:
        raise ImportError("mail merge templates need jinja2: pip install 'smtpkit[data]'") from None
    # plain text (subject, text body) must not be HTML-escaped; HTML and Markdown bodies are
    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=html, keep_trailing_newline=True)  # noqa: S701


class Campaign:
    """A merge: rows, templates, and how to address each message."""

    def __init__(
        self,
        data: Any,
        *,
        sender: str,
        subject: str,
        to_column: str = "email",
        text: str | None = None,
        html: str | None = None,
        markdown: str | None = None,
        cc_column: str | None = None,
        bcc_column: str | None = None,
        attachments_column: str | None = None,
        key_column: str | None = None,
        name: str = "campaign",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if text is None and html is None and markdown is None:
            raise ValueError("give at least one body template: text=, html= or markdown=")
        self._spec: dict[str, Any] = {
            "sender": sender,
            "subject": subject,
            "to_column": to_column,
            "text": text,
            "html": html,
            "markdown": markdown,
            "cc_column": cc_column,
            "bcc_column": bcc_column,
            "attachments_column": attachments_column,
            "key_column": key_column,
            "name": name,
            "headers": dict(headers or {}),
        }
        self._dask = data if type(data).__module__.startswith("dask") else None
        if self._dask is not None:  # rows stay on the cluster; only the first one is looked at here
            if key_column is None:
                raise ValueError("a Dask DataFrame needs key_column= (a stable, unique id per row)")
            self.rows = load_rows(self._dask.head(1))
        else:
            self.rows = load_rows(data)
        self.name = check_header_value("campaign name", name)
        self.sender = sender
        self.columns = {"to": to_column, "cc": cc_column, "bcc": bcc_column, "attachments": attachments_column}
        self.key_column = key_column
        self.headers = dict(headers or {})
        plain, escaped = _environment(html=False), _environment(html=True)
        self._subject = plain.from_string(subject)
        self._text = plain.from_string(text) if text is not None else None
        self._html = escaped.from_string(html) if html is not None else None
        # Markdown passes raw HTML through, so values in it are escaped like HTML's
        self._markdown = escaped.from_string(markdown) if markdown is not None else None
        if self.rows:
            missing = [
                c
                for c in (to_column, cc_column, bcc_column, attachments_column, key_column)
                if c and c not in self.rows[0]
            ]
            if missing:
                raise KeyError(f"columns not in the data: {missing} (have {sorted(self.rows[0])})")
        self._sender_spec = header_addresses([sender], "sender")[0]
        self._domain = self._sender_spec.rpartition("@")[2] or "smtpkit.local"

    def __len__(self) -> int:
        return len(self.rows)

    # -- per row --------------------------------------------------------------------------

    def key(self, index: int) -> str:
        row = self.rows[index]
        if self.key_column:
            return str(row[self.key_column])
        blob = json.dumps(row, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def message_id(self, key: str) -> str:
        digest = hashlib.sha256(f"{self.name}\0{key}".encode()).hexdigest()[:32]
        return f"<{digest}@{self._domain}>"

    def _addresses(self, row: Mapping[str, Any], column: str | None) -> list[str]:
        if not column or row.get(column) in (None, ""):
            return []
        value = row[column]
        items = value if isinstance(value, list | tuple) else [value]
        return [str(v).strip() for v in items]

    def _render(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        try:
            parts: dict[str, Any] = {"subject": self._subject.render(**row).strip()}
            if self._text is not None:
                parts["text"] = self._text.render(**row)
            if self._html is not None:
                parts["html"] = self._html.render(**row)
            if self._markdown is not None:
                import markdown  # type: ignore[import-untyped,import-not-found,unused-ignore]

                parts["html"] = (parts.get("html") or "") + markdown.markdown(
                    self._markdown.render(**row), extensions=["tables", "fenced_code"]
                )
        except Exception as exc:  # jinja2.UndefinedError and friends: name the row
            raise ValueError(f"row {index}: {exc}") from exc
        return parts

    def preview(self, index: int = 0) -> Message:
        """The message for one row (a :class:`Message`: shows a preview in a notebook)."""
        row = self.rows[index]
        parts = self._render(index)
        msg = Message(
            self.sender,
            to=self._addresses(row, self.columns["to"]),
            cc=self._addresses(row, self.columns["cc"]),
            bcc=self._addresses(row, self.columns["bcc"]),
            subject=parts["subject"],
            text=parts.get("text"),
            html=parts.get("html"),
            headers=self.headers,
            message_id=self.message_id(self.key(index)),
        )
        for path in self._addresses(row, self.columns["attachments"]):
            msg.attach(path)
        return msg

    def prepare(self) -> list[Prepared]:
        """Render every row (errors name the row) into ready-to-send messages."""
        prepared = []
        seen: dict[str, int] = {}
        date = formatdate(localtime=True)  # one composition time for the run
        for index, row in enumerate(self.rows):
            key = self.key(index)
            if key in seen:
                raise ValueError(f"rows {seen[key]} and {index} have the same key {key!r}: give key_column=")
            seen[key] = index
            to = self._addresses(row, self.columns["to"])
            cc = self._addresses(row, self.columns["cc"])
            bcc = self._addresses(row, self.columns["bcc"])
            if not (to or cc or bcc):
                raise ValueError(f"row {index}: no recipient in column {self.columns['to']!r}")
            recipients = []
            for value in (*to, *cc, *bcc):  # one mailbox per value: "a@x, b@y" in a cell is refused
                check_header_value("recipient", value)
                found = header_addresses([value], "recipient")
                if len(found) != 1:
                    raise ValueError(f"row {index}: {value!r} must be exactly one address")
                recipients.append(found[0])
            if (
                self._markdown is None
                and not self._addresses(row, self.columns["attachments"])
                and all(a.isascii() for a in [self._sender_spec, *recipients])
                # an address written with an IDN domain goes out as A-labels: Message rewrites its header
                and all(
                    text.isascii() or spec in text
                    for text, spec in zip([self.sender, *to, *cc], [self._sender_spec, *recipients], strict=False)
                )
            ):
                data = self._fast_bytes(index, key, to, cc, date)
            else:
                data = self.preview(index).as_bytes()
            prepared.append(Prepared(key, self._sender_spec, recipients, data, self.message_id(key)))
        return prepared

    def _fast_bytes(self, index: int, key: str, to: Sequence[str], cc: Sequence[str], date: str) -> bytes:
        """The row's MIME bytes built directly (text and/or HTML, no attachments)."""
        parts = self._render(index)
        # (the addresses were checked one by one in prepare)
        subject = check_header_value("Subject", parts["subject"])
        head = [
            f"From: {_header(self.sender)}",
            f"To: {', '.join(_header(a) for a in to)}" if to else None,
            f"Cc: {', '.join(_header(a) for a in cc)}" if cc else None,
            f"Subject: {_header(subject)}",
            f"Date: {date}",
            f"Message-ID: {self.message_id(key)}",
            *(f"{k}: {_header(check_header_value(k, str(v)))}" for k, v in self.headers.items()),
            "MIME-Version: 1.0",
        ]
        html = parts.get("html")
        text = parts.get("text")
        if text is None and html is not None:
            text = html_to_text(html)
        assert text is not None
        if html is None:
            body = _leaf("plain", text)
        else:
            boundary = "==smtpkit-" + hashlib.sha256(f"{self.name}\0{key}".encode()).hexdigest()[:24]
            body = (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
                + f"--{boundary}\r\n".encode()
                + _leaf("plain", text)
                + f"\r\n--{boundary}\r\n".encode()
                + _leaf("html", f"<!DOCTYPE html><html><body>{html}</body></html>")
                + f"\r\n--{boundary}--\r\n".encode()
            )
        return "\r\n".join(h for h in head if h is not None).encode("ascii") + b"\r\n" + body

    # -- actions --------------------------------------------------------------------------

    def dry_run(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write every message as ``<key>.eml`` into ``folder``; send nothing."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for message in self.prepare():
            path = target / f"{message.key}.eml"
            path.write_bytes(message.data)
            paths.append(path)
        return paths

    def send(
        self,
        *,
        host: str | None = None,
        port: int = 0,
        connect: Callable[[], Any] | None = None,
        security: str = "starttls",
        login: tuple[str, str] | None = None,
        context: Any = None,
        connections: int = 4,
        rate: float | RateLimit | None = None,
        retry: RetryPolicy | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        resend_unknown: bool = False,
        stop: threading.Event | None = None,
        progress: bool | Callable[[Outcome], None] = True,
        timeout: float = 60.0,
        prepared: Sequence[Prepared] | None = None,
    ) -> CampaignResult:
        """Send the campaign (see :func:`smtpkit.bulk.send_campaign` for the guarantees).

        With a Dask DataFrame, each partition is rendered and sent on the Dask workers
        (the active ``dask.distributed`` client, if any), each with its own connections,
        rate limit and journal connection; the results are gathered in partition order.
        """
        if self._dask is not None:
            if connect is not None or isinstance(journal, Journal) or isinstance(rate, RateLimit):
                raise ValueError(
                    "with Dask, give host=/port=, a journal path and a numeric rate (they travel to workers)"
                )
            options = {
                "host": host,
                "port": port,
                "security": security,
                "login": login,
                "context": context,
                "connections": connections,
                "rate": rate,
                "retry": retry,
                "journal": None if journal is None else str(journal),
                "resend_unknown": resend_unknown,
                "progress": False,
                "timeout": timeout,
            }
            return _send_dask(self._dask, self._spec, options)
        # every row rendered and checked before the first send (``prepared``: what prepare() gave)
        messages = list(prepared) if prepared is not None else self.prepare()
        if connect is None:
            if host is None:
                raise ValueError("give host= (and port=), or connect=")
            connect = _connector(host, port, security, login, context, timeout)
        limit = RateLimit(per_second=rate) if isinstance(rate, int | float) else rate
        owned = None
        if journal is not None and not isinstance(journal, Journal):
            owned = journal = Journal(journal)
        callback = _progress_bar(len(messages)) if progress is True else (progress or None)
        try:
            return send_campaign(
                messages,
                connect,
                campaign=self.name,
                journal=journal,
                connections=connections,
                rate=limit,
                retry=retry,
                stop=stop,
                resend_unknown=resend_unknown,
                progress=callback,
            )
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
            if owned is not None:
                owned.close()


def _send_partition(frame: Any, spec: dict[str, Any], options: dict[str, Any]) -> CampaignResult:
    """One Dask partition: a campaign of its own, on the worker."""
    return Campaign(frame, **spec).send(**options)


def _send_dask(data: Any, spec: dict[str, Any], options: dict[str, Any]) -> CampaignResult:
    import importlib
    import time

    dask: Any = importlib.import_module("dask")  # installed with the dask extra; typed loosely
    started = time.monotonic()
    tasks = [dask.delayed(_send_partition)(part, spec, options) for part in data.to_delayed()]
    results: tuple[CampaignResult, ...] = dask.compute(*tasks)
    outcomes = [o for result in results for o in result.outcomes]
    stopped = next((r.stopped_by for r in results if r.stopped_by), None)
    return CampaignResult(spec["name"], outcomes, time.monotonic() - started, stopped)


def _header(value: str) -> str:
    """A header value: as is when ASCII, else RFC 2047 encoded (addresses keep their angle part)."""
    if value.isascii():
        return value
    if "<" in value and value.rstrip().endswith(">"):
        name, _, addr = value.rpartition("<")
        return f"{Header(name.strip().strip(chr(34)), 'utf-8').encode()} <{addr}"
    return Header(value, "utf-8").encode()


def _leaf(subtype: str, text: str) -> bytes:
    raw = text.replace("\r\n", "\n").encode("utf-8")
    if raw.isascii() and all(len(line) <= 76 for line in raw.split(b"\n")):
        cte, payload = "7bit", raw.replace(b"\n", b"\r\n")
    else:
        cte, payload = "quoted-printable", quopri.encodestring(raw).replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    return head.encode() + payload


def _connector(
    host: str, port: int, security: str, login: tuple[str, str] | None, context: Any, timeout: float
) -> Callable[[], Any]:
    from .client import SMTP, SMTP_SSL

    if security not in ("ssl", "starttls", "none"):
        raise ValueError("security must be 'ssl', 'starttls' or 'none'")
    port = port or {"ssl": 465, "starttls": 587, "none": 25}[security]

    def connect() -> Any:
        smtp = (SMTP_SSL if security == "ssl" else SMTP)(host, port, timeout=timeout, context=context)
        if security == "starttls":
            smtp.starttls()
        if login is not None:
            smtp.login(*login)
        return smtp

    return connect


class _Bar:
    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]

        self.bar = tqdm(total=total, unit="msg")

    def __call__(self, outcome: Outcome) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(total: int) -> Callable[[Outcome], None] | None:
    try:
        return _Bar(total)
    except ImportError:  # tqdm is optional: no bar then
        return None
