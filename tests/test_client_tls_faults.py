"""TLS and credential faults around STARTTLS, implicit TLS and AUTH (security.md B1-B7, E2).

Real peers only: aiosmtpd (tests/servers.py), trustme or self-signed certificates, and
raw-socket scripted servers (:class:`servers.Scripted`) that can switch to TLS themselves.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time
import traceback
import warnings
from collections.abc import Callable

import pytest
from servers import PASSWORD, USER, Conn, Scripted, aiosmtpd_server, tls_contexts

import smtpkit
from smtpkit.errors import SMTPProtocolError
from smtpkit.server import self_signed_context

GREETING = b"220 scripted ESMTP\r\n"
MSG = b"Subject: test\r\n\r\nbody of the message, longer than ten bytes\r\n"
TOKEN = "ya29.oauth-T0ken-xyz"


def client(port: int, **kw: object) -> smtpkit.SMTP:
    kw.setdefault("timeout", 2)
    return smtpkit.SMTP("127.0.0.1", port, local_hostname="client.example", **kw)  # type: ignore[arg-type]


def after_starttls(conn: Conn) -> bytes:
    """Everything the client sent after its STARTTLS line (on that connection)."""
    wire = b"".join(conn.received)
    return wire.split(b"STARTTLS\r\n", 1)[1]


def is_one_client_hello(data: bytes) -> bool:
    """``data`` is exactly one TLS handshake record (the ClientHello), nothing else."""
    return data[:2] == b"\x16\x03" and len(data) == 5 + int.from_bytes(data[3:5], "big")


def upgrade(conn: Conn, context: ssl.SSLContext) -> None:
    """The server side of the TLS handshake after its 220 (the rest of the script speaks TLS)."""
    assert conn.buf == b""
    conn.sock.settimeout(5)
    conn.sock = context.wrap_socket(conn.sock, server_side=True)


def close_tls(conn: Conn) -> None:
    if isinstance(conn.sock, ssl.SSLSocket):
        conn.sock.close()  # Scripted closes the original (detached) socket only


def send_then_fin(conn: Conn, data: bytes) -> None:
    """Send ``data`` and the FIN in one segment (TCP_CORK), so the client gets both at once."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    conn.send(data)
    conn.sock.shutdown(socket.SHUT_WR)


def reconnect_and_send(s: smtpkit.SMTP) -> None:
    """The same object connects again and sends over a verified STARTTLS (B7: reusable)."""
    tls = tls_contexts("localhost", "127.0.0.1")
    s.context = tls.client
    s.timeout = 5
    with aiosmtpd_server(tls_context=tls.server, auth_require_tls=True) as (capture, port):
        assert s.connect("127.0.0.1", port)[0] == 220
        s.ehlo()
        assert s.starttls()[0] == 220
        assert s.login(USER, PASSWORD)[0] == 235
        s.sendmail("a@example.org", ["b@example.org"], MSG)
        s.quit()
    assert len(capture.messages) == 1


# --- B7: failures around the handshake --------------------------------------------------


def test_disconnect_right_after_220_to_starttls() -> None:  # B7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH PLAIN")
        c.line()
        send_then_fin(c, b"220 2.0.0 go ahead\r\n")
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.starttls()
        assert time.monotonic() - start < 1
        assert s.sock is None
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.login(USER, PASSWORD)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.sendmail("a@example.org", ["b@example.org"], MSG)
    assert after_starttls(server.conns[0]) == b""  # no ClientHello, no plaintext
    reconnect_and_send(s)


def test_disconnect_right_after_220_is_reported_as_a_disconnect() -> None:  # B7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        c.line()
        send_then_fin(c, b"220 2.0.0 go ahead\r\n")
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPServerDisconnected) as info:
            s.starttls()
    assert "injection" not in str(info.value) and "sent data" not in str(info.value)
    assert getattr(info.value, "reason", None) != "unsolicited"


def test_disconnect_during_the_handshake() -> None:  # B7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        c.line()
        c.send(b"220 2.0.0 go ahead\r\n")
        c.sock.settimeout(2)
        c.received.append(c.sock.recv(1))  # the ClientHello has started: hang up

    with Scripted(script) as server:
        s = client(server.port)
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected) as info:
            s.starttls()
        assert time.monotonic() - start < 1
        assert not isinstance(info.value, smtpkit.SMTPTimeoutError)
        assert s.sock is None
    assert after_starttls(server.conns[0]) == b"\x16"
    reconnect_and_send(s)


def test_stalled_handshake_times_out_and_sends_nothing_else() -> None:  # B7
    rest: list[bytes] = []

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH PLAIN LOGIN")
        c.line()
        c.send(b"220 2.0.0 go ahead\r\n")
        rest.append(c.rest(timeout=3))  # never answers the ClientHello; returns when the client closes

    with Scripted(script) as server:
        s = client(server.port, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError) as info:
            s.starttls()
        elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 1.5
        assert isinstance(info.value, smtplib.SMTPServerDisconnected) and isinstance(info.value, TimeoutError)
        assert "handshake" in str(info.value)
        assert s.sock is None
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.login(USER, PASSWORD)
    [data] = rest
    assert is_one_client_hello(data)  # the ClientHello and nothing after it
    assert b"AUTH" not in server.wire and b"MAIL" not in server.wire
    reconnect_and_send(s)


def test_connect_after_failed_starttls_forgets_old_capabilities() -> None:  # B5, B7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "SIZE 10", "AUTH PLAIN")
        c.line()
        c.send(b"220 2.0.0 go ahead\r\n")
        c.rest(timeout=3)

    with Scripted(script) as server:
        s = client(server.port, timeout=0.5)
        with pytest.raises(smtpkit.SMTPTimeoutError):
            s.starttls()
    s.timeout = 5
    with aiosmtpd_server() as (capture, port):
        s.connect("127.0.0.1", port)
        s.sendmail("a@example.org", ["b@example.org"], MSG)  # EHLO again: no SIZE 10 here
        s.quit()
    assert len(capture.messages) == 1


# --- B4: plaintext after the 220 ----------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"220 go ahead\r\n250 AUTH PLAIN",  # a fragment with no CRLF behind the 220
        b"220 go ahead\n250-evil\n250 AUTH PLAIN\n",  # bare LF lines
        b"220 go ahead\r\n421 4.3.0 bye\r\n",  # a pipelined 421
        b"220 go ahead\r\n\x16\x03\x03\x00\x02\x02\x28",  # bytes that look like TLS
    ],
    ids=["fragment", "bare-lf", "pipelined-421", "tls-like"],
)
def test_bytes_pipelined_after_220_are_refused(answer: bytes) -> None:  # B4
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH LOGIN")
        c.line()
        c.send(answer)
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.starttls()
        assert s.sock is None
        assert "PLAIN" not in s.esmtp_features.get("auth", "")  # the injected lines were never parsed
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.login(USER, PASSWORD)
    assert after_starttls(server.conns[0]) == b""  # no handshake was attempted, nothing in clear


def test_220_without_crlf_is_not_a_reply() -> None:  # B4
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        c.line()
        c.send(b"220 go ahead")  # never completed
        c.rest(timeout=2)

    with Scripted(script) as server:
        s = client(server.port, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError):
            s.starttls()
        assert time.monotonic() - start < 1.5
        assert s.sock is None
    assert after_starttls(server.conns[0]) == b""  # no ClientHello on an incomplete reply


def test_plaintext_injected_into_the_handshake_is_never_a_reply() -> None:  # B4
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS")
        c.line()
        c.send(b"220 go ahead\r\n")
        c.sock.settimeout(2)
        c.received.append(c.sock.recv(65536))  # the ClientHello...
        c.send(b"250-evil\r\n250 AUTH PLAIN\r\n")  # ...answered with SMTP in clear
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtpkit.SMTPTLSError) as info:
            s.starttls()
        assert isinstance(info.value, ssl.SSLError) and isinstance(info.value, smtplib.SMTPServerDisconnected)
        assert s.sock is None and s.esmtp_features.get("auth") is None
    assert is_one_client_hello(after_starttls(server.conns[0]))


# --- B5: capabilities re-read after TLS ---------------------------------------------------


def test_only_post_tls_capabilities_are_used() -> None:  # B5
    tls = tls_contexts("localhost", "127.0.0.1")
    seen: dict[str, bytes] = {}

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH CRAM-MD5 PLAIN LOGIN", "SIZE 10", "SMTPUTF8", "8BITMIME")
        assert c.line() == b"STARTTLS"
        c.send(b"220 2.0.0 go ahead\r\n")
        upgrade(c, tls.server)
        try:
            c.ehlo("AUTH LOGIN", "PIPELINING")
            seen["auth"] = c.line()
            c.send(b"334 UGFzc3dvcmQ6\r\n")
            c.line()
            c.send(b"235 2.7.0 ok\r\n")
            seen["mail"] = c.line()
            c.line()
            c.line()
            c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
            c.until(b"\r\n.\r\n")
            c.send(b"250 queued\r\n")
            c.line()
            c.send(b"221 bye\r\n")
        finally:
            close_tls(c)

    with Scripted(script) as server:
        s = client(server.port, context=tls.client)
        s.ehlo()
        assert s.capabilities.size == 10 and s.has_extn("smtputf8")
        s.starttls()
        assert isinstance(s.sock, ssl.SSLSocket)
        assert s.esmtp_features == {} and s.ehlo_resp is None and not s.does_esmtp
        assert s.login(USER, PASSWORD)[0] == 235  # EHLO re-sent over TLS first
        assert set(s.esmtp_features) == {"auth", "pipelining"}
        assert s.capabilities.auth == frozenset({"LOGIN"}) and s.capabilities.size is None
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.sendmail("zoë@example.org", ["b@example.org"], MSG)  # SMTPUTF8 was pre-TLS only
        s.sendmail("a@example.org", ["b@example.org"], MSG)  # larger than the pre-TLS SIZE 10
        s.quit()
    tls_part = server.wire.split(b"STARTTLS\r\n", 1)[1]
    assert tls_part.startswith(b"ehlo client.example\r\n")
    assert seen["auth"].startswith(b"AUTH LOGIN")  # not CRAM-MD5 or PLAIN, preferred but pre-TLS only
    assert seen["mail"] == b"MAIL FROM:<a@example.org>"  # no SIZE=, no SMTPUTF8, no BODY=


def test_auth_advertised_only_before_tls_is_never_used() -> None:  # B5, E3
    tls = tls_contexts("localhost", "127.0.0.1")

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH PLAIN LOGIN", "XOAUTH2")
        c.line()
        c.send(b"220 2.0.0 go ahead\r\n")
        upgrade(c, tls.server)
        try:
            c.ehlo("SIZE 1000")
            c.rest(timeout=1)
        finally:
            close_tls(c)

    with Scripted(script) as server:
        s = client(server.port, context=tls.client)
        s.starttls()
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.login(USER, PASSWORD)
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.login_oauth2(USER, TOKEN)
        assert not s.has_extn("auth") and not s.has_extn("starttls")
        s.close()
    assert b"AUTH" not in server.wire


# --- B3: a garbage or refusing answer to STARTTLS ----------------------------------------


@pytest.mark.parametrize(
    "answer",
    [b"xyz\r\n", b"999 what\r\n", b"220-go\r\n250 ahead\r\n", b"2 20 go\r\n"],
    ids=["xyz", "code-range", "mixed-codes", "split-code"],
)
def test_garbage_answer_to_starttls(answer: bytes) -> None:  # B3
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH PLAIN LOGIN")
        c.line()
        c.send(answer)
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(SMTPProtocolError) as info:
            s.starttls()
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)
        assert s.sock is None
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.login(USER, PASSWORD)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    assert after_starttls(server.conns[0]) == b""
    reconnect_and_send(s)


@pytest.mark.parametrize("code", [421, 454, 501, 554])
def test_refused_starttls_leaves_no_plaintext_auth(code: int, monkeypatch: pytest.MonkeyPatch) -> None:  # B3, E3
    monkeypatch.setattr("smtpkit.client._is_loopback", lambda sock: False)  # as if the server were remote
    answer = b"%d 4.7.0 no TLS for you\r\n" % code

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("STARTTLS", "AUTH PLAIN LOGIN XOAUTH2")
        c.line()
        c.send(answer)
        if code == 421:
            return  # and close
        assert c.line().upper() == b"NOOP"
        c.send(b"250 ok\r\n")
        c.rest(timeout=1)

    def refused_by_smtplib() -> smtplib.SMTPResponseException:
        with Scripted(script, connections=1) as server:
            ref = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example", timeout=2)
            with pytest.raises(smtplib.SMTPResponseException) as info:
                ref.starttls()
            if code != 421:
                ref.noop()
            ref.close()
        return info.value

    expected = refused_by_smtplib()
    with Scripted(script) as server:
        s = client(server.port)
        with pytest.raises(smtplib.SMTPResponseException) as info:
            s.starttls()
        assert (info.value.smtp_code, info.value.smtp_error) == (expected.smtp_code, expected.smtp_error)
        assert type(info.value).__name__ == type(expected).__name__ == "SMTPResponseException"
        assert not isinstance(s.sock, ssl.SSLSocket)
        with pytest.raises(smtpkit.SMTPInsecureAuthError):
            s.login(USER, PASSWORD)
        with pytest.raises(smtpkit.SMTPInsecureAuthError):
            s.login_oauth2(USER, TOKEN)
        if code == 421:
            time.sleep(0.1)  # the server has hung up
            with pytest.raises(smtplib.SMTPServerDisconnected):
                s.noop()
            assert s.sock is None
        else:
            assert s.noop()[0] == 250  # still in sync on the plain connection
        s.close()
    assert b"AUTH" not in server.wire and b"MAIL" not in server.wire
    assert base64.b64encode(PASSWORD.encode()) not in server.wire


# --- B1: certificates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed_cert() -> tuple[ssl.SSLContext, bytes]:
    """A server context with a self-signed certificate for localhost/127.0.0.1, and its PEM
    (the capture server's own, from ``smtpkit.server.self_signed_context``)."""
    context, cert_path = self_signed_context("localhost")
    return context, cert_path.read_bytes()


def test_implicit_tls_refuses_a_self_signed_certificate(self_signed_cert: tuple[ssl.SSLContext, bytes]) -> None:  # B1
    server_context, cert_pem = self_signed_cert
    with aiosmtpd_server(ssl_context=server_context) as (capture, port):
        with pytest.raises(smtpkit.SMTPCertificateError) as info:
            smtpkit.SMTP_SSL("127.0.0.1", port, local_hostname="c", timeout=2)
        assert isinstance(info.value, ssl.SSLCertVerificationError)
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)
        assert info.value.verify_code == 18  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        assert "self-signed" in str(info.value) or "self signed" in str(info.value)
        # the documented opt-outs: validate_certs=False, or a context that trusts this certificate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # aiosmtpd's login_data
            with smtpkit.SMTP_SSL("127.0.0.1", port, local_hostname="c", timeout=2, validate_certs=False) as s:
                assert s.noop()[0] == 250
            pinned = ssl.create_default_context(cadata=cert_pem.decode())
            with smtpkit.SMTP_SSL("127.0.0.1", port, local_hostname="c", timeout=2, context=pinned) as s:
                assert s.login(USER, PASSWORD)[0] == 235
    assert [m for m, _ in capture.logins] == ["PLAIN"]  # only the verified (pinned) connection logged in


def test_starttls_refuses_a_self_signed_certificate(self_signed_cert: tuple[ssl.SSLContext, bytes]) -> None:  # B1
    server_context, _ = self_signed_cert
    with aiosmtpd_server(tls_context=server_context, auth_require_tls=True) as (capture, port):
        s = client(port)
        with pytest.raises(smtpkit.SMTPCertificateError) as info:
            s.starttls()
        assert isinstance(info.value, ssl.SSLCertVerificationError) and info.value.verify_code == 18
        assert s.sock is None
        with pytest.raises(smtplib.SMTPException):  # not connected (or no AUTH known): nothing is sent
            s.login(USER, PASSWORD)
        s = client(port, validate_certs=False)
        assert s.starttls()[0] == 220
        assert isinstance(s.sock, ssl.SSLSocket)
        s.sendmail("a@example.org", ["b@example.org"], MSG)
        s.quit()
    assert capture.logins == [] and len(capture.messages) == 1


@pytest.mark.parametrize("server_hostname", [None, "mail.example"], ids=["ip", "dns-name"])
def test_implicit_tls_refuses_a_name_mismatch(server_hostname: str | None) -> None:  # B1
    tls = tls_contexts("other.example")  # trusted CA, but a certificate for another name
    with aiosmtpd_server(ssl_context=tls.server) as (capture, port):
        with pytest.raises(smtpkit.SMTPCertificateError) as info:
            smtpkit.SMTP_SSL(
                "127.0.0.1", port, local_hostname="c", timeout=2, context=tls.client, server_hostname=server_hostname
            )
        assert isinstance(info.value, ssl.SSLCertVerificationError)
        assert "mismatch" in str(info.value)
        with smtpkit.SMTP_SSL(
            "127.0.0.1", port, local_hostname="c", timeout=2, context=tls.client, server_hostname="other.example"
        ) as s:
            assert s.noop()[0] == 250
    assert capture.logins == [] and capture.messages == []


# --- E2: no secret in errors, tracebacks or repr -----------------------------------------


def _refusing_auth_script(mechanisms: str) -> Callable[[Conn], None]:
    """Advertise ``mechanisms``; every AUTH attempt ends in 535 (with the usual challenges)."""

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo(f"AUTH {mechanisms}")
        while True:
            words = c.line().split()
            if not words or words[0].upper() != b"AUTH":
                c.send(b"221 bye\r\n")
                return
            mechanism = words[1].upper()
            if mechanism == b"LOGIN":
                if len(words) == 2:
                    c.send(b"334 VXNlcm5hbWU6\r\n")
                    c.line()
                c.send(b"334 UGFzc3dvcmQ6\r\n")
                c.line()
            elif mechanism == b"CRAM-MD5":
                c.send(b"334 " + base64.b64encode(b"<1896.697170952@example.org>") + b"\r\n")
                c.line()
            elif mechanism in (b"XOAUTH2", b"OAUTHBEARER"):
                error = b'{"status":"invalid_token","schemes":"bearer","scope":"https://mail.example/"}'
                c.send(b"334 " + base64.b64encode(error) + b"\r\n")
                c.line()
            c.send(b"535 5.7.8 Authentication credentials invalid\r\n")

    return script


def _secret_forms(wire: bytes) -> list[str]:
    """The secrets, and every AUTH payload the client sent (base64 and decoded)."""
    forms = [
        PASSWORD,
        TOKEN,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
        base64.b64encode(TOKEN.encode()).decode(),
    ]
    in_auth = False
    for line in wire.split(b"\r\n"):
        if line.upper().startswith(b"AUTH "):
            in_auth = True
            words = line.split()
            line = words[2] if len(words) > 2 else b""
        elif not in_auth or line.upper().startswith((b"EHLO", b"QUIT")):
            in_auth = False
            continue
        decoded = base64.b64decode(line)
        if len(line) >= 8 and decoded != USER.encode():  # every response but the bare user name
            forms.append(line.decode())
            forms.append(decoded.decode("latin-1"))
    return forms


@pytest.mark.parametrize(
    ("advertised", "oauth"),
    [
        ("PLAIN", None),
        ("LOGIN", None),
        ("CRAM-MD5", None),
        ("CRAM-MD5 PLAIN LOGIN", None),  # login() tries all three, each refused
        ("XOAUTH2", "XOAUTH2"),
        ("OAUTHBEARER", "OAUTHBEARER"),
    ],
    ids=["plain", "login", "cram-md5", "all-password", "xoauth2", "oauthbearer"],
)
def test_refused_credentials_leave_no_secret_in_errors(advertised: str, oauth: str | None) -> None:  # E2
    with Scripted(_refusing_auth_script(advertised)) as server:
        s = client(server.port)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                if oauth is None:
                    s.login(USER, PASSWORD)
                else:
                    s.login_oauth2(USER, lambda: TOKEN, mechanism=oauth)
        error = info.value
        assert error.smtp_code == 535
        shown = "\n".join(
            [
                str(error),
                repr(error),
                repr(error.args),
                "".join(traceback.format_exception(error)),
                repr(s),
                repr(vars(s)),
                *(str(w.message) for w in caught),
            ]
        )
        s.quit()
    wire = server.wire
    assert wire.count(b"AUTH ") == len(advertised.split())  # every mechanism was really tried
    for form in _secret_forms(wire):
        assert form not in shown, form


# --- pipelining: a 421 to DATA itself -------------------------------------------------------


@pytest.mark.parametrize("hang_up", [True, False], ids=["421-and-close", "421-then-wait"])
def test_421_to_pipelined_data(hang_up: bool) -> None:  # F5
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING", "8BITMIME")
        for reply in (b"250 2.1.0 ok\r\n", b"250 2.1.5 ok\r\n", b"421 4.3.2 shutting down\r\n"):
            c.line()  # MAIL, RCPT, DATA (one write from smtpkit, three from smtplib)
            c.send(reply)
        if not hang_up:
            c.rest(timeout=0.5)

    def by_smtplib() -> smtplib.SMTPDataError:
        with Scripted(script) as server:
            ref = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example", timeout=2)
            with pytest.raises(smtplib.SMTPDataError) as info:
                ref.sendmail("a@example.org", ["b@example.org"], MSG)
            ref.close()
        assert b"body of the message" not in server.wire
        return info.value

    expected = by_smtplib()
    with Scripted(script) as server:
        s = client(server.port)
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert time.monotonic() - start < 1
        assert isinstance(info.value, smtpkit.SMTPDataError)
        assert (info.value.smtp_code, info.value.smtp_error) == (expected.smtp_code, expected.smtp_error)
        assert info.value.smtp_code == 421
        assert s.sock is None  # smtpkit closes on 421 (smtplib's data() leaves it open)
        result = info.value.result  # type: ignore[attr-defined]
        assert result.mail_reply.code == 250 and result.rcpt_replies["b@example.org"].code == 250
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    wire = server.wire
    assert wire.endswith(b"\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")  # then nothing
    assert wire.count(b"MAIL FROM") == 1 and b"body of the message" not in wire and b"RSET" not in wire
