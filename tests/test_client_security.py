"""The client against hostile and broken servers (security.md sections 1-5), all real sockets."""

from __future__ import annotations

import base64
import datetime
import email.message
import email.policy
import logging
import smtplib
import ssl
import time
from collections.abc import Callable

import pytest
from servers import PASSWORD, USER, Conn, Scripted, aiosmtpd_server, tls_contexts

import smtpkit
from smtpkit.errors import SMTPProtocolError

GREETING = b"220 scripted ESMTP\r\n"
MSG = b"Subject: test\r\n\r\nbody\r\n"


def client(port: int, **kw: object) -> smtpkit.SMTP:
    kw.setdefault("timeout", 5)
    return smtpkit.SMTP("127.0.0.1", port, local_hostname="client.example", **kw)  # type: ignore[arg-type]


# --- 1. replies ------------------------------------------------------------------------


def test_garbage_reply_closes_and_client_can_reconnect() -> None:
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        c.send(b"2x0 garbage\r\n250 looks fine\r\n")
        c.rest()

    with Scripted(script, connections=1) as server:
        s = client(server.port)
        with pytest.raises(SMTPProtocolError) as info:
            s.noop()
        assert info.value.reason == "malformed"
        assert s.sock is None
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)
    with aiosmtpd_server() as (_, port):  # the same object connects again
        assert s.connect("127.0.0.1", port)[0] == 220
        assert s.noop()[0] == 250
        s.quit()


def test_garbage_is_never_paired_with_a_later_command() -> None:  # A7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()  # NOOP
        c.send(b"250 ok\r\n\x00bad\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        assert s.noop() == (250, b"ok")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()  # the bad line is waiting: the next command must not take it (or anything after it)
        assert s.sock is None


def test_unsolicited_reply_while_idle() -> None:  # A9
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        c.send(b"250 ok\r\n250 surprise\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        assert s.noop() == (250, b"ok")  # its own reply, intact
        assert s.sock is None  # the surprise closed the connection...
        with pytest.raises(smtplib.SMTPServerDisconnected, match="unsolicited"):
            s.noop()  # ...and was never taken as the next command's reply


def test_unsolicited_421_while_idle_is_a_disconnect() -> None:
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        c.send(b"250 ok\r\n")
        time.sleep(0.2)
        c.send(b"421 4.4.2 idle timeout\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        assert s.noop()[0] == 250
        time.sleep(0.5)
        with pytest.raises(smtplib.SMTPServerDisconnected, match="421"):
            s.noop()
        assert b"NOOP" not in server.conns[0].received[-1]  # nothing was sent after the 421


def test_slow_drip_cannot_outlast_the_timeout() -> None:  # A3
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        for byte in b"250-" + b"x" * 200 + b"\r\n250 ok\r\n":
            c.send(bytes([byte]))
            time.sleep(0.1)

    with Scripted(script) as server:
        s = client(server.port, timeout=1.0)
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError):
            s.noop()
        elapsed = time.monotonic() - start
        assert 0.9 < elapsed < 2.0
        assert isinstance(smtpkit.SMTPTimeoutError("x"), TimeoutError)


def test_silent_greeting_times_out() -> None:  # A4
    with Scripted(lambda c: c.rest(timeout=3)) as server:
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client(server.port, timeout=0.5)
        assert time.monotonic() - start < 2


def test_endless_reply_is_cut_off() -> None:  # A2
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        for _ in range(2000):
            c.send(b"250-x\r\n" * 50)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(SMTPProtocolError) as info:
            s.noop()
        assert info.value.reason == "too-many-lines"


def test_hostile_ehlo_values() -> None:  # A13
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("SIZE 99999999999999999999", "SIZE -1", "AUTH=LOGIN", "X" * 500, "PIPELINING", "PIPELINING")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        s.ehlo()
        caps = s.capabilities
        assert caps.size is None  # "SIZE -1" came last: unusable, so no limit advertised
        assert caps.pipelining
        assert caps.auth == frozenset({"LOGIN"})
        s.close()


def test_size_too_big_for_any_integer_and_non_ascii_keywords() -> None:  # A13
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.line()
        c.send(
            b"250-scripted\r\n250-SIZE 99999999999999999999\r\n250-\xc3\xa9T\xc3\xa9 x\r\n"
            b"250-X\xffY\r\n250 8BITMIME\r\n"
        )
        c.line()
        c.send(b"250 ok\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        assert s.ehlo()[0] == 250
        caps = s.capabilities
        assert caps.size is None or caps.size >= 10**19  # never wrapped to a small or negative limit
        assert caps.eightbitmime
        assert s.noop()[0] == 250
        s.close()


def test_ehlo_reply_never_carries_an_enhanced_code() -> None:  # A12
    def script(c: Conn) -> None:
        c.send(b"220 2.0.0 scripted ESMTP\r\n")
        c.line()
        c.send(b"250-2.1.0 looks like a status\r\n250 PIPELINING\r\n")
        c.line()
        c.send(b"250 2.1.0 Ok\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        reply = s.ehlo()
        assert reply.code == 250 and reply.enhanced is None
        assert s.noop().enhanced == (2, 1, 0)  # the same text on another reply is one
        s.close()


# --- 2. TLS ----------------------------------------------------------------------------


def test_starttls_verified_and_capabilities_reread() -> None:
    tls = tls_contexts("localhost", "127.0.0.1")
    with aiosmtpd_server(tls_context=tls.server, auth_require_tls=True) as (capture, port):
        s = smtpkit.SMTP("127.0.0.1", port, local_hostname="c.example", timeout=5, context=tls.client)
        s.ehlo()
        assert not s.has_extn("auth")  # aiosmtpd offers AUTH only over TLS
        s.starttls()
        assert s.esmtp_features == {}
        assert s.login(USER, PASSWORD)[0] == 235  # re-EHLO happened, AUTH now advertised
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.sendmail("a@example.org", ["b@example.org"], MSG)
        s.quit()
    assert len(capture.messages) == 1


@pytest.mark.parametrize(
    ("names", "kwargs", "connect_to"),
    [
        (("localhost", "127.0.0.1"), {}, "system trust"),  # unknown CA (trustme's)
        (("other.example",), {}, "trusted CA"),  # host name mismatch
        (
            ("localhost", "127.0.0.1"),
            {"not_after": datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)},
            "trusted CA",
        ),  # expired
    ],
    ids=["unknown-ca", "name-mismatch", "expired"],
)
def test_starttls_refuses_bad_certificates(names: tuple[str, ...], kwargs: dict, connect_to: str) -> None:  # B1
    tls = tls_contexts(*names, **kwargs)
    context = None if connect_to == "system trust" else tls.client
    with aiosmtpd_server(tls_context=tls.server, auth_require_tls=True) as (capture, port):
        s = smtpkit.SMTP("127.0.0.1", port, local_hostname="c.example", timeout=5, context=context)
        with pytest.raises(smtpkit.SMTPCertificateError) as info:
            s.starttls()
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)
        assert s.sock is None
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.sendmail("a@example.org", ["b@example.org"], MSG)
    assert capture.messages == [] and capture.logins == []


def test_server_hostname_for_a_pinned_ip() -> None:  # B2
    tls = tls_contexts("mail.example")
    with aiosmtpd_server(tls_context=tls.server) as (_, port):
        s = smtpkit.SMTP(timeout=5, context=tls.client, server_hostname="mail.example", local_hostname="c")
        s.connect("127.0.0.1", port)  # construct-then-connect
        s.starttls()
        s.quit()
        s = smtpkit.SMTP(timeout=5, context=tls.client, local_hostname="c")
        s.connect("127.0.0.1", port)
        with pytest.raises(smtpkit.SMTPCertificateError):  # the IP is not the certified name
            s.starttls()


def test_validate_certs_false_is_an_explicit_opt_out(caplog: pytest.LogCaptureFixture) -> None:
    tls = tls_contexts("other.example")
    with aiosmtpd_server(tls_context=tls.server) as (_, port):
        s = smtpkit.SMTP("127.0.0.1", port, local_hostname="c", timeout=5, validate_certs=False)
        with caplog.at_level(logging.WARNING, logger="smtpkit.client"):
            s.starttls()
        assert "verification is disabled" in caplog.text
        s.quit()


def test_implicit_tls_verified_by_default() -> None:
    tls = tls_contexts("localhost", "127.0.0.1")
    with aiosmtpd_server(ssl_context=tls.server) as (capture, port):
        with pytest.raises(smtpkit.SMTPCertificateError):
            smtpkit.SMTP_SSL("127.0.0.1", port, local_hostname="c", timeout=5)
        with smtpkit.SMTP_SSL("127.0.0.1", port, local_hostname="c", timeout=5, context=tls.client) as s:
            s.login(USER, PASSWORD)
            s.sendmail("a@example.org", ["b@example.org"], MSG)
    assert len(capture.messages) == 1


def test_smtp_ssl_context_attribute_is_the_verifying_context() -> None:  # B1, as smtplib
    s = smtpkit.SMTP_SSL(local_hostname="c")
    assert isinstance(s.context, ssl.SSLContext)
    assert s.context.verify_mode == ssl.CERT_REQUIRED and s.context.check_hostname
    off = smtpkit.SMTP_SSL(local_hostname="c", validate_certs=False)
    assert off.context.verify_mode == ssl.CERT_NONE
    mine = ssl.create_default_context()
    assert smtpkit.SMTP_SSL(local_hostname="c", context=mine).context is mine


def test_implicit_tls_against_a_plaintext_server() -> None:  # B7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.rest(timeout=2)

    with Scripted(script) as server:
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTLSError):
            smtpkit.SMTP_SSL("127.0.0.1", server.port, local_hostname="c", timeout=2)
        assert time.monotonic() - start < 3


@pytest.mark.parametrize("answer", [b"454 4.7.0 TLS not available\r\n", b"502 5.5.1 no\r\n", None])
def test_starttls_stripped_then_no_plaintext_login(
    answer: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:  # B3, E3
    monkeypatch.setattr("smtpkit.client._is_loopback", lambda sock: False)  # as if the server were remote

    def script(c: Conn) -> None:
        c.send(GREETING)
        if answer is None:
            c.ehlo("AUTH PLAIN LOGIN")  # a MITM removed STARTTLS
        else:
            c.ehlo("STARTTLS", "AUTH PLAIN LOGIN")
            c.line()
            c.send(answer)
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPException):
            s.starttls()
        with pytest.raises(smtpkit.SMTPInsecureAuthError, match="unencrypted"):
            s.login(USER, PASSWORD)
        s.close()
    assert b"AUTH" not in server.wire
    assert base64.b64encode(PASSWORD.encode()) not in server.wire


def test_response_injection_before_handshake() -> None:  # B4
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        c.line()
        c.send(b"220 Go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(SMTPProtocolError):
            s.starttls()
        assert s.sock is None
    assert not server.conns[0].received[-1].startswith(b"\x16")  # no TLS ClientHello was sent


def test_nothing_sent_after_starttls_until_its_reply() -> None:  # B6
    seen: list[bytes] = []

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        assert c.line() == b"STARTTLS"
        seen.append(c.rest(timeout=0.5))  # the client must be silent now
        c.send(b"454 4.7.0 not now\r\n")
        c.rest(timeout=0.5)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPResponseException):
            s.starttls()
        s.close()
    assert seen == [b""]


# --- 3. injection ----------------------------------------------------------------------

INJECTIONS = [
    "a@b.org\r\nRCPT TO:<evil@x>",
    "a@b.org\rRSET",
    "a@b.org\nDATA",
    "a\x00@b.org",
    "a\x7f@b.org",
    "a\x1b@b.org",
]


def assert_refused_before_any_byte(
    extensions: tuple[str, ...], calls: Callable[[smtpkit.SMTP], list[Callable[[], object]]], match: str | None = None
) -> None:
    """Each call, on a connection to a peer offering ``extensions`` (EHLO done), raises
    ValueError, and none of them writes a byte."""

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo(*extensions)
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        s.ehlo()
        before = len(server.wire)
        for call in calls(s):
            with pytest.raises(ValueError, match=match):
                call()
        time.sleep(0.2)
        s.close()
    assert server.wire[before:] == b""


@pytest.mark.parametrize("payload", INJECTIONS)
def test_control_characters_refused_before_any_byte(payload: str) -> None:  # C1
    assert_refused_before_any_byte(
        ("PIPELINING", "DSN", "AUTH PLAIN"),
        lambda s: [
            lambda: s.mail(payload),
            lambda: s.rcpt(payload),
            lambda: s.mail("a@b.org", [f"ENVID={payload}"]),
            lambda: s.rcpt("a@b.org", [f"NOTIFY={payload}"]),
            lambda: s.sendmail(payload, ["x@y.org"], MSG),
            lambda: s.sendmail("x@y.org", [payload], MSG),
            lambda: s.sendmail("x@y.org", ["z@y.org"], MSG, rcpt_options=[f"ORCPT={payload}"]),
            lambda: s.ehlo(payload),
            lambda: s.helo(payload),
            lambda: s.verify(payload),
            lambda: s.expn(payload),
            lambda: s.putcmd("NOOP", payload),
            lambda: s.login(payload, PASSWORD),
        ],
    )


@pytest.mark.parametrize("payload", ["a\x85@b.org", "a\u2028@b.org", "a\u2029@b.org", "a\x9b@b.org"])
def test_unicode_line_breaks_refused_in_smtputf8_commands(payload: str) -> None:  # C1
    # NEL, LINE/PARAGRAPH SEPARATOR, CSI: sent as UTF-8 in SMTPUTF8 mail, where a lenient
    # peer may take them for line breaks; credentials are base64 on the wire, so they may
    assert_refused_before_any_byte(
        ("PIPELINING", "DSN", "SMTPUTF8", "8BITMIME"),
        lambda s: [
            lambda: s.mail(payload, ["SMTPUTF8"]),
            lambda: s.rcpt(payload),
            lambda: s.mail("a@b.org", [f"ENVID={payload}"]),
            lambda: s.sendmail(payload, ["x@y.org"], MSG, ["SMTPUTF8"]),
            lambda: s.sendmail("x@y.org", [payload], MSG),
            lambda: s.sendmail("x@y.org", ["z@y.org"], MSG, rcpt_options=[f"ORCPT=rfc822;{payload}"]),
            lambda: s.ehlo(payload),
            lambda: s.helo(payload),
            lambda: s.verify(payload),
            lambda: s.putcmd("NOOP", payload),
        ],
        match="control character",
    )


def test_bad_arguments_refused_before_the_first_ehlo() -> None:  # C1
    # on a fresh connection the EHLO is owed: a bad argument must fail before it too
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.rest(timeout=1)

    bad = "a@b.org\r\nRSET"
    message = email.message.EmailMessage()
    message["From"] = "a@b.org"
    message["To"] = "b@example.org"
    message["Subject"] = "x"
    calls = [
        lambda s: s.sendmail(bad, ["x@y.org"], MSG),
        lambda s: s.sendmail("x@y.org", ["ok@y.org", bad], MSG),
        lambda s: s.sendmail("x@y.org", ["z@y.org"], MSG, ["BODY=8BITMIME\r\nRSET"]),
        lambda s: s.sendmail("x@y.org", ["z@y.org"], MSG, rcpt_options={"z@y.org": ["NOTIFY=\rX"]}),
        lambda s: s.send_message(message, from_addr=bad),
        lambda s: s.send_message(message, mail_options=["X\nY"]),
        lambda s: s.login("ann\r\nMAIL FROM:<x@y>", PASSWORD),
        lambda s: s.login("ann", "pass\nword"),
        lambda s: s.login_oauth2("ann\r\n", "token"),
    ]
    with Scripted(script, connections=len(calls)) as server:
        for call in calls:
            s = client(server.port)
            with pytest.raises(ValueError):
                call(s)
            assert s.ehlo_resp is None and s.helo_resp is None
            s.close()
    assert server.wire == b""


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.org)<bob@example.com>",
        "alice@example.org(<bob@example.com>",
        "a@example.org, b@example.org",
        "Doe, John <john@example.org>",
        '"a\r\nRCPT TO:<x>"@example.org',
    ],
)
def test_addresses_from_data_cells(address: str) -> None:  # C2
    with aiosmtpd_server() as (capture, port), client(port) as s:
        with pytest.raises(ValueError):
            s.sendmail("sender@example.org", [address], MSG)
        assert s.noop()[0] == 250
    assert capture.messages == []


def test_display_name_with_comma_is_one_recipient() -> None:  # C2
    with aiosmtpd_server() as (capture, port), client(port) as s:
        s.sendmail("sender@example.org", ['"Doe, Jane" <jane@example.org>'], MSG)
    assert capture.messages[0].rcpt_tos == ["jane@example.org"]


def test_idn_domain_goes_out_as_a_labels() -> None:
    with aiosmtpd_server() as (capture, port), client(port) as s:
        s.sendmail("sender@bücher.example", ["Zoë <zoe@Straße.de>"], MSG)
        with pytest.raises(ValueError, match="internationalised domain"):
            s.sendmail("sender@example.org", ["a@" + "ü" * 70 + ".example"], MSG)
    assert capture.messages[0].mail_from == "sender@xn--bcher-kva.example"
    assert capture.messages[0].rcpt_tos == ["zoe@xn--strae-oqa.de"]
    assert "SMTPUTF8" not in capture.messages[0].mail_options


def test_c1_characters_in_decoded_headers_are_not_refused() -> None:  # C1, C4
    # Windows "smart quotes" labelled ISO-8859-1 decode to C1 characters: the header goes
    # out encoded (ASCII), and only the addr-spec reaches MAIL FROM / RCPT TO
    raw = (
        b"From: =?iso-8859-1?q?=93Bob=94?= <bob@example.org>\r\n"
        b"To: =?iso-8859-1?q?Jos=85?= <jose@example.org>, =?utf-8?q?A=E2=80=A8B?= <ab@example.org>\r\n"
        b"Subject: quotes\r\n\r\nbody\r\n"
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    with aiosmtpd_server() as (capture, port), client(port) as s:
        s.send_message(message)
        with pytest.raises(ValueError, match="control character"):
            s.sendmail("a\x85b@example.org", ["jose@example.org"], MSG)  # in the addr-spec: refused
    [got] = capture.messages
    assert got.mail_from == "bob@example.org" and got.rcpt_tos == ["jose@example.org", "ab@example.org"]


def test_send_message_needing_smtputf8_fails_as_smtplib_on_a_fresh_connection() -> None:
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING", "8BITMIME")  # no SMTPUTF8
        c.rest(timeout=1)

    message = email.message.Message()  # compat32, as smtplib users build them
    message["From"] = "j\u00f6rg@example.org"
    message["To"] = "b@example.org"
    message.set_payload("hi")
    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPNotSupportedError, match="SMTPUTF8"):
            s.send_message(message)
        s.close()
    assert b"MAIL" not in server.wire


def test_envelope_from_header_cannot_smuggle() -> None:  # C4
    msg = email.message.Message()
    msg["From"] = "s@example.org\r\nRCPT TO:<hijacker@example.org>"
    msg["To"] = "victim@example.org"
    msg.set_payload("hi")
    with aiosmtpd_server() as (capture, port), client(port) as s, pytest.raises(ValueError):
        s.send_message(msg)
    assert capture.messages == []


SMUGGLING = [b"\n.\n", b"\n.\r", b"\r.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n"]


@pytest.mark.parametrize("as_str", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("seq", SMUGGLING)
def test_smuggling_sequences_reach_the_server_as_data(seq: bytes, as_str: bool) -> None:  # C5 / D1
    body = b"Subject: x\r\n\r\nhello" + seq + b"MAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@y.org>\r\nDATA\r\nbad\r\n"
    seen: list[bytes] = []

    def script(c: Conn) -> None:  # a raw peer, to see the DATA bytes exactly as sent
        c.send(GREETING)
        c.ehlo("PIPELINING", "8BITMIME")
        c.until(b"DATA\r\n")
        c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        seen.append(c.until(b"\r\n.\r\n") + b"\r\n.\r\n")
        c.send(b"250 queued\r\n")
        c.rest()

    with Scripted(script) as server:
        s = client(server.port)
        s.sendmail("a@example.org", ["b@example.org"], body.decode("ascii") if as_str else body)
        s.close()
    [wire] = seen
    assert server.conns[0].received[-1] == b""  # nothing after the one terminator
    assert wire.count(b"\r\n.\r\n") == 1 and wire.endswith(b"\r\n.\r\n")
    assert wire.replace(b"\r\n", b"").count(b"\r") == 0 and wire.replace(b"\r\n", b"").count(b"\n") == 0
    with aiosmtpd_server() as (capture, port), client(port) as s:
        s.sendmail("a@example.org", ["b@example.org"], body.decode("ascii") if as_str else body)
    [got] = capture.messages
    assert got.rcpt_tos == ["b@example.org"]
    assert b"MAIL FROM:<evil@x.org>" in got.data


@pytest.mark.parametrize("as_str", [False, True], ids=["bytes", "str"])
def test_the_nul_smuggling_sequence_is_refused(as_str: bool) -> None:  # D1, D7
    body = b"Subject: x\r\n\r\nhello\r\n\x00.\r\nMAIL FROM:<evil@x.org>\r\n"
    with aiosmtpd_server() as (capture, port), client(port) as s:
        with pytest.raises(smtpkit.MessageDataError):
            s.sendmail("a@example.org", ["b@example.org"], body.decode("ascii") if as_str else body)
        assert s.noop()[0] == 250
    assert capture.messages == []


def test_nul_in_message_is_refused_before_sending() -> None:
    with aiosmtpd_server() as (capture, port), client(port) as s:
        with pytest.raises(smtpkit.MessageDataError):
            s.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\n\x00\r\n")
        assert s.noop()[0] == 250
    assert capture.messages == []


# --- 5. credentials ----------------------------------------------------------------------


def _secrets() -> list[bytes]:
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    return [PASSWORD.encode(), plain, base64.b64encode(PASSWORD.encode())]


def _auth_script(mechanism: str):  # type: ignore[no-untyped-def]
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo(f"AUTH {mechanism}")
        line = c.line()
        if mechanism == "LOGIN":
            c.send(b"334 UGFzc3dvcmQ6\r\n")
            c.line()
        elif mechanism == "CRAM-MD5":
            c.send(b"334 " + base64.b64encode(b"<1896.697170952@example.org>") + b"\r\n")
            c.line()
        elif mechanism == "XOAUTH2" and b"fail" in base64.b64decode(line.split()[-1]):
            c.send(b"334 " + base64.b64encode(b'{"status":"401"}') + b"\r\n")
            c.line()
            c.send(b"535 5.7.8 bad token\r\n")
            c.rest(timeout=1)
            return
        c.send(b"235 2.7.0 ok\r\n")
        c.rest(timeout=1)

    return script


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"])
def test_no_secret_in_logs_debug_output_or_repr(
    mechanism: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:  # E1, E2
    with Scripted(_auth_script(mechanism)) as server:
        s = client(server.port)
        s.set_debuglevel(2)
        with caplog.at_level(logging.DEBUG, logger="smtpkit"):
            if mechanism in ("XOAUTH2", "OAUTHBEARER"):
                s.login_oauth2(USER, lambda: PASSWORD)
            else:
                s.login(USER, PASSWORD)
        assert "AUTH" in caplog.text and "[redacted]" in caplog.text
        shown = caplog.text + capsys.readouterr().err + repr(s) + repr(vars(s))
        s.close()
    wire = server.wire
    assert any(secret in wire for secret in _secrets()) or mechanism in ("CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
    if mechanism == "OAUTHBEARER":  # RFC 7628 GS2 header, host, port and bearer token
        auth_line = next(line for line in server.conns[0].received if line.startswith(b"AUTH"))
        sent = base64.b64decode(auth_line.split()[-1])
        assert sent.startswith(b"n,a=alice,\x01host=127.0.0.1\x01port=") and b"auth=Bearer " in sent
    for secret in _secrets():
        assert secret.decode() not in shown, mechanism
    assert PASSWORD not in shown


def test_hand_made_auth_through_docmd_is_redacted(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:  # E1: smtplib-style code doing AUTH LOGIN by hand
    with Scripted(_auth_script("LOGIN")) as server:
        s = client(server.port)
        s.set_debuglevel(2)
        s.ehlo()
        user64 = base64.b64encode(USER.encode()).decode()
        pass64 = base64.b64encode(PASSWORD.encode()).decode()
        with caplog.at_level(logging.DEBUG, logger="smtpkit"):
            assert s.docmd("AUTH", "LOGIN " + user64)[0] == 334
            assert s.docmd(pass64)[0] == 235
            s.putcmd("NOOP")  # logged as it is
        shown = caplog.text + capsys.readouterr().err
        s.close()
    assert pass64 not in shown and PASSWORD not in shown and user64 not in shown
    assert "[redacted SASL response]" in shown
    assert "NOOP" in shown  # only the answer to the 334 is hidden


def test_failed_oauth_keeps_the_token_out_of_errors() -> None:  # E2
    with Scripted(_auth_script("XOAUTH2")) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.login_oauth2(USER, "fail-" + PASSWORD)
        s.close()
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value.args)


def test_auth_challenge_loop_is_bounded() -> None:  # E4
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("AUTH LOGIN")
        for _ in range(20):
            c.line()
            c.send(b"334 UGFzc3dvcmQ6\r\n")
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPException, match="infinite loop"):
            s.login(USER, PASSWORD)
        s.close()
    assert server.wire.count(base64.b64encode(PASSWORD.encode())) <= 5


def test_password_attribute_is_redacted_but_usable() -> None:
    with aiosmtpd_server() as (_, port), client(port) as s:
        s.login(USER, PASSWORD)
        assert s.password == PASSWORD
        assert repr(s.password) == "'***'"
        assert PASSWORD not in repr(s)
