"""Mail merge: rendering, checks before sending, the fast MIME path, sending with a journal."""

from __future__ import annotations

import email
import email.policy
import os
from pathlib import Path
from typing import Any

import pytest

from smtpkit.merge import Campaign, load_rows
from smtpkit.server import CaptureServer


def need(module: str) -> Any:
    import importlib

    if os.environ.get("SMTPKIT_TEST_STRICT"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


ROWS = [
    {"id": "a1", "email": "ada@example.org", "name": "Ada", "tickets": 42},
    {"id": "g2", "email": "Grace Hopper <grace@example.org>", "name": "Grâce <b>", "tickets": 37},
]


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def campaign(rows: Any = ROWS, **kw: Any) -> Campaign:
    need("jinja2")
    kw.setdefault("html", "<p>Hello {{ name }}, you closed <b>{{ tickets }}</b> tickets.</p>")
    return Campaign(
        rows,
        sender="Reports <reports@example.org>",
        subject="{{ name }}: {{ tickets }} tickets",
        text="Hello {{ name }}, you closed {{ tickets }} tickets.\n",
        key_column="id",
        **kw,
    )


def test_rows_render_into_correct_messages(tmp_path: Path) -> None:
    paths = campaign().dry_run(tmp_path)
    assert [p.name for p in paths] == ["a1.eml", "g2.eml"]
    first, second = (parse(p.read_bytes()) for p in paths)
    assert first["Subject"] == "Ada: 42 tickets" and first["To"] == "ada@example.org"
    assert second["Subject"] == "Grâce <b>: 37 tickets"  # RFC 2047 on the wire, decoded here
    assert b"=?utf-8?" in paths[1].read_bytes()
    assert [p.get_content_type() for p in second.walk()] == ["multipart/alternative", "text/plain", "text/html"]
    html = second.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Gr\u00e2ce &lt;b&gt;" in html  # values from the data are escaped in HTML
    assert "Grâce <b>, you closed 37" in second.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    again = campaign().prepare()
    assert [m.message_id for m in again] == [first["Message-ID"], second["Message-ID"]]  # stable per key


def test_fast_path_matches_the_email_package_path() -> None:
    c = campaign()
    fast = parse(c.prepare()[1].data)
    slow = parse(c.preview(1).as_bytes())
    for header in ("From", "To", "Subject", "Message-ID"):
        assert fast[header] == slow[header], header
    for kind in ("plain", "html"):
        assert fast.get_body((kind,)).get_content().strip() == slow.get_body((kind,)).get_content().strip()  # type: ignore[union-attr]


def test_problems_are_found_before_anything_is_sent() -> None:
    with CaptureServer() as server:
        with pytest.raises(ValueError, match="row 1"):
            campaign([ROWS[0], {"id": "x", "email": "x@example.org", "name": "X"}]).send(
                host=server.host, port=server.port, security="none", progress=False
            )
        with pytest.raises(ValueError, match="row 1"):
            campaign([ROWS[0], {**ROWS[1], "email": "two@example.org, three@example.org"}]).send(
                host=server.host, port=server.port, security="none", progress=False
            )
        with pytest.raises(KeyError, match="mail"):
            Campaign(ROWS, sender="r@example.org", subject="s", text="t", to_column="mail")
        with pytest.raises(ValueError, match="same key"):
            campaign([ROWS[0], ROWS[0]]).prepare()
        with pytest.raises(ValueError):
            campaign([{**ROWS[0], "name": "x\r\nBcc: evil@example.org"}]).prepare()
        assert server.messages == []


def test_send_with_a_journal_then_rerun(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "email": f"user{i}@example.org", "name": f"U{i}", "tickets": i} for i in range(40)]
    journal = tmp_path / "merge.sqlite"
    with CaptureServer() as server:
        result = campaign(rows).send(
            host=server.host, port=server.port, security="none", journal=journal, progress=False
        )
        assert result.summary() == {"sent": 40}
        again = campaign(rows).send(
            host=server.host, port=server.port, security="none", journal=journal, progress=False
        )
        assert again.summary() == {"skipped": 40}
        assert len(server.messages) == 40
    need("pandas")
    frame = result.to_frame()
    assert list(frame.index) == [f"r{i}" for i in range(40)]
    assert set(frame["status"]) == {"sent"} and set(frame["code"]) == {250}


def test_inputs_csv_list_and_dataframe(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,email,name,tickets\na1,ada@example.org,Ada,42\n", encoding="utf-8")
    assert load_rows(path) == [{"id": "a1", "email": "ada@example.org", "name": "Ada", "tickets": "42"}]
    pd = need("pandas")
    assert load_rows(pd.DataFrame(ROWS)) == ROWS
    assert len(campaign(pd.DataFrame(ROWS)).prepare()) == 2


def test_dask_partitions_are_sent_on_the_workers(tmp_path: Path) -> None:
    need("pandas")
    dd = need("dask.dataframe")
    distributed = need("distributed")
    import pandas as pd

    rows = pd.DataFrame(
        [{"id": f"d{i}", "email": f"u{i}@example.org", "name": f"U{i}", "tickets": i} for i in range(60)]
    )
    frame = dd.from_pandas(rows, npartitions=4)
    journal = tmp_path / "dask.sqlite"
    with (
        CaptureServer() as server,
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        result = campaign(frame).send(
            host=server.host, port=server.port, security="none", journal=journal, connections=2
        )
        assert result.summary() == {"sent": 60}
        assert [o.key for o in result.outcomes] == [f"d{i}" for i in range(60)]
        again = campaign(frame).send(host=server.host, port=server.port, security="none", journal=journal)
        assert again.summary() == {"skipped": 60}
        assert sorted(m.envelope.rcpt_tos[0] for m in server.messages) == sorted(f"u{i}@example.org" for i in range(60))
    with pytest.raises(ValueError, match="key_column"):
        Campaign(frame, sender="s@example.org", subject="s", text="t")


def test_idn_domains_in_the_data_go_out_as_a_labels() -> None:
    rows = [{"email": "Zoë <zoe@bücher.example>", "name": "Zoë"}, {"email": "bob@example.org", "name": "Bob"}]
    campaign = Campaign(rows, sender="Jörg <news@straße.de>", subject="Hi {{ name }}", text="Hello {{ name }}")
    first, second = campaign.prepare()
    assert (first.sender, list(first.recipients)) == ("news@xn--strae-oqa.de", ["zoe@xn--bcher-kva.example"])
    for prepared in (first, second):
        assert prepared.data.split(b"\r\n\r\n")[0].isascii()  # headers: no SMTPUTF8 needed
        parsed = email.message_from_bytes(prepared.data, policy=email.policy.default)
        assert parsed["From"].addresses[0].addr_spec == "news@xn--strae-oqa.de"
        assert parsed["From"].addresses[0].display_name == "Jörg"
        assert [a.addr_spec for a in parsed["To"].addresses] == list(prepared.recipients)


def test_template_values_cannot_smuggle_commands_into_the_body() -> None:  # C5
    evil = "x\r\n.\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nspam\r\n.\r\n"
    need("jinja2")
    rows = [{"id": "e1", "email": "ada@example.org", "note": evil}]
    merge = Campaign(rows, sender="r@example.org", subject="Your note", text="Note: {{ note }}\n", key_column="id")
    with CaptureServer() as server:
        result = merge.send(host=server.host, port=server.port, security="none", progress=False)
        assert result.summary() == {"sent": 1}
        [got] = server.messages
    assert got.envelope.rcpt_tos == ("ada@example.org",)  # one message, to the row's address only
    assert "MAIL FROM:<evil@example.net>" in got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
