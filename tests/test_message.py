"""Composing messages: structure, attachments, tables, figures, injection, preview, sending."""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

import smtpkit
from smtpkit.message import Message, html_to_text, load_eml, table_html
from smtpkit.server import CaptureServer


def need(module: str) -> Any:
    """Optional dependencies: skipped if missing, but required with SMTPKIT_TEST_STRICT (.ci/run)."""
    import importlib

    if os.environ.get("SMTPKIT_TEST_STRICT"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def kinds(msg: email.message.Message) -> list[str]:
    return [part.get_content_type() for part in msg.walk()]


def test_text_only() -> None:
    msg = Message("Me <me@example.org>", to="you@example.org", subject="Hi", text="hello\n.dot\n")
    parsed = parse(msg.as_bytes())
    assert kinds(parsed) == ["text/plain"]
    assert parsed["Message-ID"].endswith("@example.org>") and parsed["Date"]
    assert parsed.get_content() == "hello\r\n.dot\r\n"  # as on the wire: CRLF
    assert b"\r\n" in msg.as_bytes() and b"\n" not in msg.as_bytes().replace(b"\r\n", b"")


def test_html_gets_a_text_alternative() -> None:
    msg = Message("me@example.org", to="you@example.org", subject="s", html="<h1>Title</h1><p>Para <b>bold</b></p>")
    parsed = parse(msg.as_bytes())
    assert kinds(parsed) == ["multipart/alternative", "text/plain", "text/html"]
    assert "Title" in parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>").strip() == "a\tb"


def test_markdown_and_templates() -> None:
    need("markdown")
    need("jinja2")
    msg = Message(
        "me@example.org",
        to="you@example.org",
        subject="Hi {{ name }}",
        markdown="# Hello {{ name }}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        context={"name": "Ada"},
    )
    assert msg.subject == "Hi Ada"
    html = parse(msg.as_bytes()).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<h1>Hello Ada</h1>" in html and "<table>" in html
    with pytest.raises(Exception, match="missing"):
        Message("me@example.org", subject="{{ missing }}", context={})


def test_attachments_from_path_bytes_file_and_dataframes(tmp_path: Path) -> None:
    pd = need("pandas")
    need("openpyxl")
    need("pyarrow")
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 fake")
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 22.0]})
    msg = Message("me@example.org", to="you@example.org", subject="files", text="see attached")
    msg.attach(path).attach(b"\x00\x01", "blob.bin").attach(io.BytesIO(b"a,b\n"), "data.csv")
    msg.attach(df).attach(df, "t.xlsx").attach(df, "t.parquet")
    parsed = parse(msg.as_bytes())
    parts = {p.get_filename(): p for p in parsed.iter_attachments()}
    assert parts["report.pdf"].get_content_type() == "application/pdf"
    assert parts["blob.bin"].get_content() == b"\x00\x01"
    assert parts["table.csv"].get_content_type() == "text/csv"
    assert pd.read_excel(io.BytesIO(parts["t.xlsx"].get_content()), index_col=0).equals(df)
    assert pd.read_parquet(io.BytesIO(parts["t.parquet"].get_content())).equals(df)


def test_tables_and_inline_figures_by_cid() -> None:
    pd = need("pandas")
    need("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"team": ["a", "b"], "tickets": [3, 4]})
    fig, ax = plt.subplots()
    ax.bar(df.team, df.tickets)
    msg = Message("me@example.org", to="you@example.org", subject="report")
    msg.add_html("<p>Numbers:</p>").add_table(df).add_figure(fig, alt="chart")
    msg.add_table(df.style.highlight_max(color="yellow"))
    parsed = parse(msg.as_bytes())
    assert kinds(parsed) == ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<style" not in html and 'style="border' in html and "yellow" in html
    [cid] = re.findall(r'src="cid:([^"]+)"', html)
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == f"<{cid}>"
    assert image.get_content().startswith(b"\x89PNG")
    assert "team" in parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<td" in table_html(df)


def test_styler_table_styles_are_inlined() -> None:
    pd = need("pandas")
    frame = pd.DataFrame({"region": ["EMEA", "AMER"], "orders": [1250, 1870]})
    styler = (
        frame.style.set_table_styles(
            [
                {"selector": "th", "props": "background: #123456"},
                {"selector": ".row_heading", "props": "color: blue"},
                {"selector": "caption", "props": "font-weight: bold"},
                {"selector": "tr:hover", "props": "color: red"},  # cannot be inlined
            ]
        )
        .set_table_styles({"orders": [{"selector": "td", "props": "text-align: right"}]}, overwrite=False)
        .set_caption("Orders")
        .highlight_max("orders", color="yellow")
    )
    msg = Message("me@example.org", to="you@example.org", subject="s").add_table(styler)
    html = parse(msg.as_bytes()).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<style" not in html and "hover" not in html and "color: red" not in html
    headers = re.findall(r"<th\s[^>]*>", html)
    assert headers and all("background: #123456" in h for h in headers)
    assert all("color: blue" in h for h in headers if "row_heading" in h)
    assert '<caption style="font-weight: bold">' in html
    cells = dict(re.findall(r'<td[^>]*class="data (row\d col\d)"[^>]*style="([^"]*)"', html))
    assert "text-align: right" in cells["row0 col1"] and "text-align: right" not in cells["row0 col0"]
    assert "background-color: yellow" in cells["row1 col1"] and "yellow" not in cells["row0 col1"]


@pytest.mark.parametrize(
    "value", ["x\r\nBcc: evil@x.org", "x\nBcc: evil@x.org", "x\rBcc: e", "x\u2028Bcc: e", "x\x85Bcc: e"]
)
def test_header_injection_refused_everywhere(value: str) -> None:
    for kwargs in (
        {"subject": value},
        {"to": f"a@example.org{value}"},
        {"cc": value},
        {"reply_to": value},
        {"headers": {"X-Campaign": value}},
    ):
        with pytest.raises(ValueError):
            Message("me@example.org", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Message(f"Me{value} <me@example.org>")
    with pytest.raises(ValueError):
        Message("me@example.org", text="x").attach(b"x", f"f{value}.txt")


def test_addresses_validated_and_bcc_hidden() -> None:
    msg = Message(
        '"Doe, Jane" <jane@example.org>',
        to=["Bob <bob@example.org>", "carol@example.org"],
        bcc="eve@example.org",
        subject="s",
        text="t",
    )
    data = msg.as_bytes()
    assert b"eve@example.org" not in data and b"Bcc" not in data
    assert msg.recipients == ["bob@example.org", "carol@example.org", "eve@example.org"]
    for bad in ("a@x.org, b@y.org", "alice@example.org)<bob@example.com>", "not an address"):
        with pytest.raises(ValueError):
            Message("me@example.org", to=bad)


def test_non_ascii_addresses_use_smtputf8_policy() -> None:
    msg = Message("jörg@exämple.org", to="zoë@example.org", subject="Grüße", text="ü")
    assert msg.needs_smtputf8
    assert "jörg@exämple.org".encode() in msg.as_bytes()


def test_idn_domains_become_a_labels_and_need_no_smtputf8() -> None:
    msg = Message("Jörg <joerg@bücher.example>", to=["Zoë <zoe@Straße.de>", "x@bücher.example"], subject="s", text="t")
    assert msg.recipients == ["zoe@xn--strae-oqa.de", "x@xn--bcher-kva.example"]  # IDNA 2008: ß is not "ss"
    assert not msg.needs_smtputf8
    data = msg.as_bytes()
    assert data.isascii()
    got = email.message_from_bytes(data, policy=email.policy.default)
    assert got["From"].addresses[0].display_name == "Jörg"
    assert got["From"].addresses[0].addr_spec == "joerg@xn--bcher-kva.example"
    assert [a.addr_spec for a in got["To"].addresses] == msg.recipients
    with CaptureServer(smtputf8=False) as server, smtpkit.SMTP(server.host, server.port) as smtp:
        msg.send(smtp)  # a server without SMTPUTF8 takes it
        [received] = server.messages
    assert received.envelope.mail_from == "joerg@xn--bcher-kva.example"
    assert received.envelope.rcpt_tos == ("zoe@xn--strae-oqa.de", "x@xn--bcher-kva.example")
    for bad in ("a@bücher..example", "a@" + "ü" * 70 + ".example", "a@b\u200dc.example"):
        with pytest.raises(ValueError, match=r"domain|address"):
            Message("me@example.org", to=bad)


def test_preview_is_sandboxed_and_runs_no_script() -> None:
    msg = Message(
        "me@example.org",
        to="you@example.org",
        subject="<script>alert(1)</script>",
        html='<p>hi</p><script>alert("x")</script><img src=x onerror=alert(2)>',
    )
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 20
    cid = msg.embed(png)
    msg.add_html(f'<img src="{cid}">')
    preview = msg._repr_html_()
    assert '<iframe sandbox=""' in preview and "allow-scripts" not in preview
    outside = re.sub(r'srcdoc="[^"]*"', "", preview)
    assert "<script" not in outside and "onerror" not in outside
    assert "data:image/png;base64," in preview  # inline images shown without network access


def test_send_through_the_capture_server_and_save_load(tmp_path: Path) -> None:
    msg = Message("me@example.org", to="you@example.org", bcc="audit@example.org", subject="sent", html="<p>hello</p>")
    msg.attach(b"col\n1\n", "x.csv")
    with CaptureServer() as server, smtpkit.SMTP(server.host, server.port) as smtp:
        result = msg.send(smtp)
        assert result.accepted == ["you@example.org", "audit@example.org"]
        assert "<table>" in result._repr_html_()
        [got] = server.messages
    assert got["Subject"] == "sent" and got.envelope.rcpt_tos == ("you@example.org", "audit@example.org")
    assert "Bcc" not in got and [p.get_filename() for p in got.iter_attachments()] == ["x.csv"]
    path = msg.save(tmp_path / "m.eml")
    assert load_eml(path)["Subject"] == "sent"


def test_import_smtpkit_does_not_load_the_heavy_parts() -> None:
    import subprocess
    import sys

    heavy = ("pandas", "matplotlib", "jinja2", "markdown")
    code = f"import sys, smtpkit; smtpkit.Message; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "[]"


def test_pil_images_inline_and_attached() -> None:
    image_module = need("PIL.Image")
    image = image_module.new("RGB", (8, 8), (200, 30, 30))
    msg = Message("me@example.org", to="you@example.org", subject="pil", html="<p>dot:</p>")
    msg.add_figure(image, alt="red square").attach(image, "square.png")
    parsed = parse(msg.as_bytes())
    inline = [p for p in parsed.walk() if p.get_content_type() == "image/png" and p["Content-ID"]]
    attached = [p for p in parsed.iter_attachments() if p.get_filename() == "square.png"]
    assert len(inline) == 1 and len(attached) == 1
    assert inline[0].get_content().startswith(b"\x89PNG")
