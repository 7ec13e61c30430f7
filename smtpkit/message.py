"""Compose mail from a notebook: text, HTML or Markdown, attachments, tables and figures.

:class:`Message` builds a standards-correct :class:`email.message.EmailMessage` that any
client can send (smtplib included)::

    msg = Message("me@example.org", to="team@example.org", subject="Weekly numbers")
    msg.add_text("Numbers attached.")
    msg.add_table(df)                 # an HTML table with inline styles (mail clients drop <style>)
    msg.add_figure(fig)               # a matplotlib figure, inline (multipart/related, Content-ID)
    msg.attach(df, filename="numbers.xlsx")
    msg                               # in a notebook: a preview (headers, body, attachments)
    smtp.sendmail(msg.sender, msg.recipients, msg.as_bytes())   # or msg.send(smtp)

The MIME structure is the one Gmail, Outlook and Thunderbird all display:
``multipart/mixed[ multipart/alternative[ text/plain, multipart/related[ text/html,
images... ] ], attachments... ]``, each level only when needed. Bcc never appears in the
headers; Message-ID and Date are set. pandas, matplotlib, Pillow, jinja2 and markdown
are imported only when used, with an error naming the extra to install when missing.
"""

from __future__ import annotations

import base64
import copy
import email
import email.policy
import html as htmllib
import io
import mimetypes
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from .address import header_addresses

__all__ = ["Message", "html_to_text", "load_eml", "table_html"]

_SMTP_POLICY = email.policy.SMTP  # CRLF line endings
_UTF8_POLICY = email.policy.SMTPUTF8


def _need(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the '{module}' package: pip install 'smtpkit[{extra}]'") from None


_ADDRESS_HEADER = HeaderRegistry()
_BREAKS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # Cc (but TAB), Zl, Zp


def check_header_value(name: str, value: str) -> str:
    """Refuse line breaks of any kind (CR, LF, U+2028, U+0085, ...) and other controls."""
    m = _BREAKS.search(value)
    if m:
        raise ValueError(
            f"the {name} header contains a line break or control character "
            f"(U+{ord(m.group()):04X} at index {m.start()}); refusing to build the message"
        )
    return value


def _addresses(value: str | Sequence[str] | None, name: str) -> list[tuple[str, str]]:
    """``(header text, addr-spec)`` for each address; each must be exactly one valid mailbox."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [_one_address(item, name) for item in items]


@lru_cache(maxsize=4096)
def _one_address(item: str, name: str) -> tuple[str, str]:
    check_header_value(name, item)
    found = header_addresses([item], name)
    if len(found) != 1:
        raise ValueError(f"{name}: {item!r} must be exactly one address (give a list for several)")
    text = item.strip()
    if not text.isascii() and found[0].isascii():  # an IDN domain now in A-labels: the header says the same
        header: Any = _ADDRESS_HEADER("To", text)
        [parsed] = header.addresses
        if parsed.addr_spec != found[0]:
            text = formataddr((parsed.display_name, found[0]))
    return text, found[0]


@dataclass
class _Part:
    data: bytes
    maintype: str
    subtype: str
    filename: str | None = None
    cid: str | None = None  # inline parts: the Content-ID, without angle brackets


def _image_bytes(obj: Any, dpi: int = 144) -> tuple[bytes, str]:
    """PNG bytes for a matplotlib Figure (or Axes) or a PIL image."""
    figure = getattr(obj, "figure", None) if not hasattr(obj, "savefig") else obj
    if figure is not None and hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue(), "png"
    if hasattr(obj, "save") and hasattr(obj, "mode") and hasattr(obj, "size"):  # PIL.Image.Image
        buf = io.BytesIO()
        obj.save(buf, format="PNG")
        return buf.getvalue(), "png"
    raise TypeError(f"not an image or figure: {type(obj).__name__}")


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "to_csv") and hasattr(obj, "columns")


def _is_styler(obj: Any) -> bool:
    return type(obj).__name__ == "Styler" and hasattr(obj, "to_html") and hasattr(obj, "data")


_TABLE_STYLE = "border-collapse:collapse;font-family:Arial,Helvetica,sans-serif;font-size:13px"
_TH_STYLE = "border:1px solid #d0d7de;padding:4px 8px;background:#f6f8fa;text-align:left;font-weight:600"
_TD_STYLE = "border:1px solid #d0d7de;padding:4px 8px"


def table_html(table: Any, *, index: bool = True, max_rows: int = 500, float_format: str = "{:,.4g}") -> str:
    """A pandas DataFrame or Styler as an HTML table with inline styles (no <style> block).

    Mail clients (Gmail, Outlook) drop ``<style>`` blocks, so every cell carries its own
    style. A Styler keeps its per-cell styles (colours from ``background_gradient``,
    ``highlight_max``, ...), inlined from its CSS.
    """
    if _is_styler(table):
        return _inline_styler(table)
    if not _is_dataframe(table):
        raise TypeError(f"expected a pandas DataFrame or Styler, not {type(table).__name__}")
    frame = table.head(max_rows)
    esc = htmllib.escape
    numeric = {c for c in frame.columns if getattr(frame[c].dtype, "kind", "O") in "iufc"}

    def cell(value: Any, col: Any) -> str:
        if isinstance(value, float) and col in numeric:
            text = float_format.format(value)
        else:
            text = str(value)
        align = ";text-align:right" if col in numeric else ""
        return f'<td style="{_TD_STYLE}{align}">{esc(text)}</td>'

    head = "".join(f'<th style="{_TH_STYLE}">{esc(str(c))}</th>' for c in frame.columns)
    if index:
        head = f'<th style="{_TH_STYLE}">{esc(str(frame.index.name or ""))}</th>' + head
    rows = []
    for idx, row in zip(frame.index, frame.itertuples(index=False, name=None), strict=True):
        cells = "".join(cell(v, c) for v, c in zip(row, frame.columns, strict=True))
        if index:
            cells = f'<th style="{_TH_STYLE}">{esc(str(idx))}</th>' + cells
        rows.append(f"<tr>{cells}</tr>")
    more = ""
    if len(table) > max_rows:
        more = f'<p style="font-size:12px;color:#57606a">{len(table) - max_rows:,} more rows not shown</p>'
    return f'<table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_COMPOUND = re.compile(r"(?P<tag>[a-z][a-z0-9]*)?(?P<id>#[\w-]+)?(?P<classes>(?:\.[\w-]+)*)")
_STYLED_TAGS = re.compile(r"<(table|caption|thead|tbody|tr|th|td)(\s[^>]*)?>")
_BASE_STYLE = {"table": _TABLE_STYLE, "th": _TH_STYLE, "td": _TD_STYLE}


def _compound(selector: str) -> tuple[str | None, str | None, frozenset[str]] | None:
    """``td.data.col0`` -> ("td", None, {"data", "col0"}); None for what cannot be inlined."""
    m = _COMPOUND.fullmatch(selector)
    if not m or not selector:
        return None
    classes = frozenset(c for c in (m.group("classes") or "").split(".") if c)
    return m.group("tag"), (m.group("id") or "")[1:] or None, classes


def _inline_styler(styler: Any) -> str:
    """Styler HTML with its CSS rules moved into the elements' style attributes.

    Mail clients drop ``<style>`` blocks, so each rule is applied to the table elements
    it selects: ``#cell-id`` (cell styles from ``apply``/``highlight_*``), and the
    ``set_table_styles`` forms ``#table-id tag``, ``#table-id .class``,
    ``#table-id tag.class`` (also without the table id). Rules apply in source order.
    Selectors with pseudo-classes (``:hover``, ``:nth-child``) or other combinators
    cannot be inlined and are left out.
    """
    raw = styler.to_html()
    css = " ".join(re.findall(r"<style[^>]*>(.*?)</style>", raw, flags=re.S))
    body = re.sub(r"<style[^>]*>.*?</style>", "", raw, flags=re.S)
    table_id = m.group(1) if (m := re.search(r'<table[^>]*\bid="([^"]+)"', body)) else None
    rules: list[tuple[tuple[str | None, str | None, frozenset[str]], str]] = []
    for selectors, decls in _RULE.findall(css):
        decls = " ".join(decls.split()).strip().rstrip(";")
        for selector in selectors.split(","):
            parts = selector.split()
            if len(parts) == 2 and parts[0] in (f"#{table_id}", "table"):
                parts = parts[1:]  # "#T_x td": every element is inside that table
            compound = _compound(parts[0]) if len(parts) == 1 else None
            if compound is not None and decls:
                rules.append((compound, decls))

    def add_style(match: re.Match[str]) -> str:
        tag, attrs = match.group(1), match.group(2) or ""
        found_id = m.group(1) if (m := re.search(r'\bid="([^"]+)"', attrs)) else None
        found_classes = frozenset(m.group(1).split()) if (m := re.search(r'\bclass="([^"]*)"', attrs)) else frozenset()
        styles = [_BASE_STYLE.get(tag, "")]
        for (want_tag, want_id, want_classes), decls in rules:
            if (
                (want_tag is None or want_tag == tag)
                and (want_id is None or want_id == found_id)
                and want_classes <= found_classes
            ):
                styles.append(decls)
        style = ";".join(s for s in styles if s)
        return f'<{tag}{attrs} style="{htmllib.escape(style)}">' if style else match.group(0)

    return _STYLED_TAGS.sub(add_style, body)


class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "table", "ul", "ol", "pre", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.cells = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag in ("td", "th"):
            if self.cells:
                self.out.append("\t")
            self.cells += 1
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(f"[{alt}]")
        elif tag in self.BLOCK:
            self.out.append("\n")
        if tag == "tr":
            self.cells = 0

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data if self.cells else " ".join(data.split()) if data.strip() else "")


def html_to_text(html: str) -> str:
    """A readable plain-text alternative for an HTML body."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _render(template: str, context: Mapping[str, Any] | None) -> str:
    if context is None:
        return template
    jinja2 = _need("jinja2", "data", "template rendering")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return str(env.from_string(template).render(**context))


class Message:
    """A message being composed; ``to_email()`` gives the ``EmailMessage``.

    Bodies: ``text=``, ``html=`` and/or ``markdown=`` (rendered to HTML); with
    ``context=`` each is a Jinja2 template rendered with StrictUndefined (a missing
    variable is an error). HTML without ``text`` gets a generated plain-text alternative.
    """

    def __init__(
        self,
        sender: str | None = None,
        to: str | Sequence[str] = (),
        *,
        cc: str | Sequence[str] = (),
        bcc: str | Sequence[str] = (),
        reply_to: str | Sequence[str] | None = None,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        markdown: str | None = None,
        context: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | bool = True,
        date: bool = True,
    ) -> None:
        senders = _addresses(sender, "From") if sender else []
        self.sender = senders[0][0] if senders else None
        self._sender_spec = senders[0][1] if senders else None
        parsed = {
            name: _addresses(v, name) for name, v in (("To", to), ("Cc", cc), ("Bcc", bcc), ("Reply-To", reply_to))
        }
        self.to = [text for text, _ in parsed["To"]]
        self.cc = [text for text, _ in parsed["Cc"]]
        self.bcc = [text for text, _ in parsed["Bcc"]]
        self.reply_to = [text for text, _ in parsed["Reply-To"]]
        self._recipient_specs = [spec for name in ("To", "Cc", "Bcc") for _, spec in parsed[name]]
        self.subject = check_header_value("Subject", _render(subject, context))
        self.headers: dict[str, str] = {}
        for name, value in (headers or {}).items():
            if not re.fullmatch(r"[!-9;-~]+", name):
                raise ValueError(f"not a valid header name: {name!r}")
            if name.lower() in ("bcc", "from", "to", "cc", "subject", "message-id", "date"):
                raise ValueError(f"set {name} with its own argument, not headers=")
            self.headers[name] = check_header_value(name, str(value))
        self._text: list[str] = [_render(text, context)] if text is not None else []
        self._html: list[str] = [_render(html, context)] if html is not None else []
        if markdown is not None:
            self.add_markdown(_render(markdown, context))
        self._related: list[_Part] = []
        self._attachments: list[_Part] = []
        self.message_id = message_id
        self.date = date
        self._built: EmailMessage | None = None

    # -- building -------------------------------------------------------------------------

    def _changed(self) -> Message:
        self._built = None
        return self

    def add_text(self, text: str) -> Message:
        """Append a paragraph to the plain-text body (and, escaped, to the HTML body)."""
        self._text.append(text)
        if self._html:
            self._html.append("<p>" + htmllib.escape(text).replace("\n", "<br>") + "</p>")
        return self._changed()

    def add_html(self, fragment: str) -> Message:
        """Append raw HTML to the HTML body."""
        self._html.append(fragment)
        return self._changed()

    def add_markdown(self, source: str) -> Message:
        """Append Markdown, rendered to HTML (needs the ``markdown`` package)."""
        markdown = _need("markdown", "data", "Markdown bodies")
        self._html.append(markdown.markdown(source, extensions=["tables", "fenced_code"]))
        return self._changed()

    def add_table(self, table: Any, **options: Any) -> Message:
        """Append a DataFrame or Styler as an HTML table with inline styles."""
        self._html.append(table_html(table, **options))
        return self._changed()

    def embed(self, obj: Any, *, filename: str | None = None, subtype: str | None = None) -> str:
        """Add an inline image (a figure, a PIL image, PNG/JPEG bytes or a path); returns ``cid:...``."""
        if isinstance(obj, bytes | bytearray):
            data, sub = bytes(obj), subtype or _sniff_image(bytes(obj))
        elif isinstance(obj, str | os.PathLike):
            path = Path(obj)
            data = path.read_bytes()
            guessed = mimetypes.guess_type(path.name)[0] or "image/" + _sniff_image(data)
            sub = subtype or guessed.split("/", 1)[1]
            filename = filename or path.name
        else:
            data, sub = _image_bytes(obj)
        cid = make_msgid(domain="smtpkit.inline")[1:-1]
        self._related.append(_Part(data, "image", sub, filename or f"image{len(self._related) + 1}.{sub}", cid))
        self._changed()
        return f"cid:{cid}"

    def add_figure(self, figure: Any, *, alt: str = "figure", width: int | None = None) -> Message:
        """Append a matplotlib figure (or PIL image) inline, below the current HTML."""
        src = self.embed(figure)
        size = f' width="{int(width)}"' if width else ""
        self._html.append(f'<p><img src="{src}" alt="{htmllib.escape(alt)}"{size}></p>')
        return self._changed()

    def attach(
        self,
        obj: Any,
        filename: str | None = None,
        *,
        mimetype: str | None = None,
    ) -> Message:
        """Attach a file (path, bytes, binary file object), a DataFrame or a figure.

        DataFrames become CSV, XLSX or Parquet by the filename's extension (CSV if none);
        figures and PIL images become PNG.
        """
        if _is_dataframe(obj) or _is_styler(obj):
            frame = obj.data if _is_styler(obj) else obj
            filename = filename or "table.csv"
            data, ctype = _dataframe_bytes(frame, filename)
        elif isinstance(obj, bytes | bytearray):
            if not filename:
                raise ValueError("attaching bytes needs a filename")
            data, ctype = bytes(obj), None
        elif isinstance(obj, str | os.PathLike):
            path = Path(obj)
            data, ctype = path.read_bytes(), None
            filename = filename or path.name
        elif hasattr(obj, "read"):
            data = obj.read()
            if isinstance(data, str):
                data = data.encode("utf-8")
            filename = filename or Path(getattr(obj, "name", "attachment")).name
            ctype = None
        else:
            data, sub = _image_bytes(obj)
            filename = filename or f"figure.{sub}"
            ctype = f"image/{sub}"
        assert filename is not None
        check_header_value("attachment filename", filename)
        ctype = mimetype or ctype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        self._attachments.append(_Part(data, maintype, subtype, filename))
        return self._changed()

    # -- results --------------------------------------------------------------------------

    @property
    def recipients(self) -> list[str]:
        """Every envelope recipient: To, Cc and Bcc (addr-specs)."""
        return list(self._recipient_specs)

    @property
    def needs_smtputf8(self) -> bool:
        specs = [*([self._sender_spec] if self._sender_spec else []), *self._recipient_specs]
        return not all(a.isascii() for a in specs)

    def to_email(self) -> EmailMessage:
        """The message as an ``EmailMessage`` (Bcc excluded from the headers); yours to change."""
        return copy.deepcopy(self._build())

    def _build(self) -> EmailMessage:
        if self._built is not None:
            return self._built
        policy = _UTF8_POLICY if self.needs_smtputf8 else _SMTP_POLICY
        msg = EmailMessage(policy=policy)
        if self.sender:
            msg["From"] = self.sender
        if self.to:
            msg["To"] = ", ".join(self.to)
        if self.cc:
            msg["Cc"] = ", ".join(self.cc)
        if self.reply_to:
            msg["Reply-To"] = ", ".join(self.reply_to)
        msg["Subject"] = self.subject
        if self.date:
            msg["Date"] = formatdate(localtime=True)
        if self.message_id:
            if isinstance(self.message_id, str):
                msg["Message-ID"] = check_header_value("Message-ID", self.message_id)
            else:
                domain = self._sender_spec.rpartition("@")[2] if self._sender_spec else None
                msg["Message-ID"] = make_msgid(domain=domain or None)
        for name, value in self.headers.items():
            msg[name] = value
        html = "\n".join(self._html) if self._html else None
        text = "\n\n".join(self._text) if self._text else (html_to_text(html) if html else "")
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(f"<!DOCTYPE html><html><body>{html}</body></html>", subtype="html")
            html_part: Any = msg.get_payload()[1]  # type: ignore[index]
            for part in self._related:
                html_part.add_related(
                    part.data, maintype=part.maintype, subtype=part.subtype, cid=f"<{part.cid}>", filename=part.filename
                )
        elif self._related:
            raise ValueError("inline images need an HTML body to show them in")
        for part in self._attachments:
            if part.maintype == "text":
                msg.add_attachment(part.data, maintype="text", subtype=part.subtype, filename=part.filename)
            else:
                msg.add_attachment(part.data, maintype=part.maintype, subtype=part.subtype, filename=part.filename)
        self._built = msg
        return msg

    def as_bytes(self) -> bytes:
        """The message, flattened with CRLF line endings, ready for ``sendmail``."""
        msg = self._build()
        return msg.as_bytes(policy=msg.policy)

    def send(self, smtp: Any) -> Any:
        """Send with an open ``smtpkit.SMTP`` (or smtplib) connection; returns its result."""
        if not self.sender:
            raise ValueError("the message has no sender")
        return smtp.sendmail(self._sender_spec, self.recipients, self.as_bytes())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the message as an .eml file (Bcc excluded, as sent)."""
        target = Path(path)
        target.write_bytes(self.as_bytes())
        return target

    # -- notebook preview -----------------------------------------------------------------

    def _repr_html_(self) -> str:
        msg = self._build()
        esc = htmllib.escape
        rows = [(name, str(msg[name])) for name in ("From", "To", "Cc", "Reply-To", "Subject", "Date") if msg[name]]
        if self.bcc:
            rows.append(("Bcc", ", ".join(self.bcc) + "  (envelope only, not in the headers)"))
        head = "".join(
            f'<tr><th style="text-align:left;padding:2px 8px;color:#57606a">{esc(k)}</th>'
            f'<td style="padding:2px 8px">{esc(v)}</td></tr>'
            for k, v in rows
        )
        body = msg.get_body(preferencelist=("html", "plain"))
        if body is not None and body.get_content_type() == "text/html":
            page = body.get_content()
            for part in self._related:
                uri = f"data:{part.maintype}/{part.subtype};base64,{base64.b64encode(part.data).decode()}"
                page = page.replace(f"cid:{part.cid}", uri)
        else:
            page = (
                "<pre style='white-space:pre-wrap;font-family:inherit'>"
                + esc(body.get_content() if body else "")
                + "</pre>"
            )
        # a sandbox without allow-scripts: nothing in the message can run in the notebook
        style = "width:100%;height:420px;border:1px solid #d0d7de"
        frame = f'<iframe sandbox="" srcdoc="{esc(page, quote=True)}" style="{style}"></iframe>'
        files = "".join(
            f"<li>{esc(p.filename or '')} ({esc(p.maintype)}/{esc(p.subtype)}, {len(p.data):,} bytes)</li>"
            for p in self._attachments
        )
        attachments = f"<p><b>Attachments</b></p><ul>{files}</ul>" if files else ""
        return f'<div class="smtpkit-message"><table>{head}</table>{frame}{attachments}</div>'


def _sniff_image(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.lstrip().startswith(b"<svg") or b"<svg" in data[:256]:
        return "svg+xml"
    raise ValueError("unknown image format: give subtype=")


def _dataframe_bytes(frame: Any, filename: str) -> tuple[bytes, str]:
    suffix = Path(filename).suffix.lower()
    buf = io.BytesIO()
    if suffix in ("", ".csv"):
        return frame.to_csv(index=True).encode("utf-8"), "text/csv"
    if suffix == ".xlsx":
        _need("openpyxl", "data", "XLSX attachments")
        frame.to_excel(buf)
        return buf.getvalue(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    if suffix == ".parquet":
        _need("pyarrow", "data", "Parquet attachments")
        frame.to_parquet(buf)
        return buf.getvalue(), "application/vnd.apache.parquet"
    raise ValueError(f"DataFrames attach as .csv, .xlsx or .parquet, not {suffix}")


def load_eml(path: str | os.PathLike[str]) -> EmailMessage:
    """Read an .eml file back as an ``EmailMessage``."""
    message = email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message
