"""Drop-in: the same scripts through smtplib and smtpkit, against aiosmtpd on 127.0.0.1."""

from __future__ import annotations

import email.message
import inspect
import smtplib
from types import ModuleType

import pytest
from servers import PASSWORD, USER, Capture, aiosmtpd_server

import smtpkit

MODULES = [pytest.param(smtplib, id="smtplib"), pytest.param(smtpkit, id="smtpkit")]


def test_every_public_smtplib_name_exists() -> None:
    for name in [
        *smtplib.__all__,
        "SMTP_SSL",
        "LMTP",
        "SMTP_PORT",
        "SMTP_SSL_PORT",
        "LMTP_PORT",
        "CRLF",
        "bCRLF",
    ]:
        assert hasattr(smtpkit, name), name


@pytest.mark.parametrize("cls", ["SMTP", "SMTP_SSL", "LMTP"])
def test_methods_accept_smtplib_signatures(cls: str) -> None:
    ours, theirs = getattr(smtpkit, cls), getattr(smtplib, cls)
    for name, member in inspect.getmembers(theirs, inspect.isfunction):
        if name.startswith("__") and name not in ("__init__", "__enter__", "__exit__"):
            continue
        assert hasattr(ours, name), f"{cls}.{name} missing"
        if name.startswith("_") and name != "__init__":
            continue
        theirs_params = inspect.signature(member).parameters
        ours_params = inspect.signature(getattr(ours, name)).parameters
        for pname, param in theirs_params.items():
            if param.kind is param.VAR_KEYWORD:
                continue
            assert pname in ours_params, f"{cls}.{name}: parameter {pname} missing"
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                assert list(theirs_params).index(pname) == list(ours_params).index(pname), f"{cls}.{name}: {pname}"
            assert ours_params[pname].default == param.default or pname == "timeout", f"{cls}.{name}: {pname}"


@pytest.mark.parametrize("mod", MODULES)
def test_session_script(mod: ModuleType) -> None:
    with aiosmtpd_server() as (capture, port):
        with mod.SMTP("127.0.0.1", port, local_hostname="client.example") as s:
            assert s.noop() == (250, b"OK")
            code, _msg = s.ehlo()
            assert code == 250 and s.does_esmtp and s.has_extn("size") and s.has_extn("AUTH")
            assert s.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            assert s.rset() == (250, b"OK")
            assert s.verify("nobody@example.org")[0] == 252
            refused = s.sendmail("a@example.org", ["b@example.org", "c@example.org"], "Subject: hi\n\nline\n.dot\n")
            assert refused == {}
            assert s.mail("a@example.org") == (250, b"2.1.0 OK")
            assert s.rcpt("d@example.org") == (250, b"2.1.5 OK")
            assert s.data(b"Subject: manual\r\n\r\nbody") == (250, b"2.0.0 queued")
        assert s.sock is None
    first, second = capture.messages
    assert first.data == b"Subject: hi\r\n\r\nline\r\n.dot\r\n"
    assert first.rcpt_tos == ["b@example.org", "c@example.org"]
    assert second.data == b"Subject: manual\r\n\r\nbody\r\n"


@pytest.mark.parametrize("mod", MODULES)
def test_partial_and_total_refusal(mod: ModuleType) -> None:
    capture = Capture(refuse={"bad@example.org", "worse@example.org"})
    with aiosmtpd_server(capture) as (_, port), mod.SMTP("127.0.0.1", port, local_hostname="c.example") as s:
        refused = s.sendmail("a@example.org", ["ok@example.org", "bad@example.org"], b"Subject: x\r\n\r\ny\r\n")
        assert refused == {"bad@example.org": (550, b"5.1.1 <bad@example.org>: no such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            s.sendmail("a@example.org", ["bad@example.org", "worse@example.org"], b"x")
        assert set(info.value.recipients) == {"bad@example.org", "worse@example.org"}
        assert s.noop()[0] == 250  # the connection is still usable (RSET was sent)
    assert [m.rcpt_tos for m in capture.messages] == [["ok@example.org"]]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize(
    ("verb", "reply", "error"),
    [
        ("MAIL", "550 5.7.1 sender rejected", smtplib.SMTPSenderRefused),
        ("MAIL", "421 4.3.2 shutting down", smtplib.SMTPSenderRefused),
        ("RCPT", "421 4.3.2 shutting down", smtplib.SMTPRecipientsRefused),
        ("DATA", "554 5.6.0 message refused", smtplib.SMTPDataError),
        ("DATA", "451 4.3.0 try later", smtplib.SMTPDataError),
    ],
)
def test_failures_raise_smtplib_exceptions(mod: ModuleType, verb: str, reply: str, error: type) -> None:
    capture = Capture(faults={verb: reply})
    with aiosmtpd_server(capture) as (_, port):
        s = mod.SMTP("127.0.0.1", port, local_hostname="c.example")
        with pytest.raises(error) as info:
            s.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\ny\r\n")
        code = int(reply[:3])
        if error is smtplib.SMTPRecipientsRefused:
            assert info.value.recipients["b@example.org"][0] == code
        else:
            assert info.value.smtp_code == code
        if code == 421:
            assert s.sock is None  # 421: closed, no RSET
        else:
            assert s.noop()[0] == 250  # otherwise RSET and carry on
        s.close()
    assert capture.messages == []


@pytest.mark.parametrize("mod", MODULES)
def test_send_message_drops_bcc_and_uses_headers(mod: ModuleType) -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "Bob <bob@example.org>, carol@example.org"
    msg["Cc"] = "dave@example.org"
    msg["Bcc"] = "eve@example.org"
    msg["Subject"] = "hello"
    msg.set_content("hi\n")
    with aiosmtpd_server() as (capture, port), mod.SMTP("127.0.0.1", port, local_hostname="c.example") as s:
        assert s.send_message(msg) == {}
    [got] = capture.messages
    assert got.mail_from == "alice@example.org"
    assert sorted(got.rcpt_tos) == [
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
        "eve@example.org",
    ]
    assert b"eve@example.org" not in got.data
    assert b"Bcc" not in got.data


@pytest.mark.parametrize("mod", MODULES)
def test_login_on_loopback(mod: ModuleType) -> None:
    with aiosmtpd_server() as (capture, port), mod.SMTP("127.0.0.1", port, local_hostname="c.example") as s:
        assert s.login(USER, PASSWORD)[0] == 235
    assert capture.logins == [("PLAIN", PASSWORD.encode())]


@pytest.mark.parametrize("mod", MODULES)
def test_bad_login(mod: ModuleType) -> None:
    with aiosmtpd_server() as (_, port), mod.SMTP("127.0.0.1", port, local_hostname="c.example") as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.login(USER, "wrong")
        assert info.value.smtp_code == 535


def test_results_are_structured() -> None:
    capture = Capture(refuse={"bad@example.org"})
    with (
        aiosmtpd_server(capture) as (_, port),
        smtpkit.SMTP("127.0.0.1", port, local_hostname="c.example") as s,
    ):
        result = s.sendmail("a@example.org", ["ok@example.org", "bad@example.org"], b"Subject: x\r\n\r\ny\r\n")
        assert isinstance(result, smtpkit.SendResult)
        assert result.accepted == ["ok@example.org"]
        assert result.rcpt_replies["bad@example.org"].enhanced == (5, 1, 1)
        assert result.outcome("ok@example.org") == (250, b"2.0.0 queued")
        assert result.mail_reply == (250, b"2.1.0 OK")
        rows = result.describe()
        assert [(r["recipient"], r["code"], r["accepted"]) for r in rows] == [
            ("ok@example.org", 250, True),
            ("bad@example.org", 550, False),
        ]
        assert rows[1]["enhanced"] == "5.1.1"
        assert s.last_result is result
        with pytest.raises(smtpkit.SMTPRecipientsRefused) as info:
            s.sendmail("a@example.org", ["bad@example.org"], b"x")
        assert info.value.result.rcpt_replies["bad@example.org"].code == 550  # type: ignore[attr-defined]
