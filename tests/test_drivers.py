"""The same behaviour, proven for both drivers (smtpkit.SMTP and smtpkit.AsyncSMTP).

TLS, AUTH, pipelining, CHUNKING, deadlines, redaction and bad input, against real peers.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import time

import pytest
from drivers import Factory
from servers import PASSWORD, USER, Capture, Conn, Scripted, SmtpSink, aiosmtpd_server, tls_contexts

import smtpkit
from smtpkit.errors import SMTPProtocolError

MSG = b"Subject: drivers\r\n\r\nline\r\n.dot\r\n"
GREETING = b"220 scripted ESMTP\r\n"


def test_send_and_partial_refusal(make_client: Factory) -> None:
    capture = Capture(refuse={"bad@example.org"})
    with aiosmtpd_server(capture) as (_, port), make_client("127.0.0.1", port, timeout=5) as c:
        result = c.sendmail("a@example.org", ["ok@example.org", "bad@example.org"], MSG)
        assert dict(result) == {"bad@example.org": (550, b"5.1.1 <bad@example.org>: no such user")}
        assert result.accepted == ["ok@example.org"]
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@example.org", ["bad@example.org"], MSG)
        assert c.noop()[0] == 250
    assert capture.messages[0].data == b"Subject: drivers\r\n\r\nline\r\n.dot\r\n"


def test_pipelining_and_faults_with_smtp_sink(make_client: Factory) -> None:
    with SmtpSink() as sink, make_client("127.0.0.1", sink.port, timeout=10) as c:
        for i in range(50):
            assert c.sendmail("a@example.org", [f"r{i}@example.org"], MSG) == {}
    with SmtpSink("-q", ".") as sink:
        c = make_client("127.0.0.1", sink.port, timeout=10)
        with pytest.raises(smtpkit.SMTPUnknownOutcome) as info:
            c.sendmail("a@example.org", ["b@example.org"], MSG)
        assert info.value.result.rcpt_replies["b@example.org"].code == 250
    with SmtpSink("-Q", "RCPT") as sink:
        c = make_client("127.0.0.1", sink.port, timeout=10)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            c.sendmail("a@example.org", ["b@example.org"], MSG)
        assert refused.value.recipients["b@example.org"][0] == 421
        assert c.sock is None


def test_chunking(make_client: Factory) -> None:
    with aiosmtpd_server(chunking=True) as (capture, port), make_client("127.0.0.1", port, timeout=5) as c:
        c.sendmail("a@example.org", ["b@example.org"], b"Subject: x\n\nbare LF")
    [got] = capture.messages
    assert got.chunked and got.data == b"Subject: x\r\n\r\nbare LF\r\n"


def test_starttls_verification_and_login(make_client: Factory) -> None:
    tls = tls_contexts("localhost", "127.0.0.1")
    with aiosmtpd_server(tls_context=tls.server, auth_require_tls=True) as (capture, port):
        c = make_client("127.0.0.1", port, timeout=5)
        with pytest.raises(smtpkit.SMTPCertificateError):
            c.starttls()  # default trust store: trustme's CA is unknown
        c = make_client("127.0.0.1", port, timeout=5, context=tls.client)
        c.starttls()
        assert c.login(USER, PASSWORD)[0] == 235
        c.sendmail("a@example.org", ["b@example.org"], MSG)
        c.quit()
    assert capture.logins == [("PLAIN", PASSWORD.encode())]


def test_implicit_tls(make_client: Factory) -> None:
    tls = tls_contexts("localhost", "127.0.0.1")
    with aiosmtpd_server(ssl_context=tls.server) as (capture, port):
        if make_client.__name__ == "blocking":
            with pytest.raises(smtpkit.SMTPCertificateError):
                smtpkit.SMTP_SSL("127.0.0.1", port, timeout=5, local_hostname="c")
            c = smtpkit.SMTP_SSL("127.0.0.1", port, timeout=5, local_hostname="c", context=tls.client)
        else:
            with pytest.raises(smtpkit.SMTPCertificateError):
                make_client("127.0.0.1", port, timeout=5, use_tls=True)
            c = make_client("127.0.0.1", port, timeout=5, use_tls=True, context=tls.client)
        c.sendmail("a@example.org", ["b@example.org"], MSG)
        c.quit()
    assert len(capture.messages) == 1


def test_response_injection_before_handshake(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("STARTTLS")
        conn.line()
        conn.send(b"220 Go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
        conn.rest(timeout=1)

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=5)
        with pytest.raises(SMTPProtocolError):
            c.starttls()
        assert c.sock is None


def test_no_plaintext_login_to_a_remote_peer(make_client: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("smtpkit.client._is_loopback", lambda sock: False)
    monkeypatch.setattr("smtpkit.aio._is_loopback", lambda sock: False)

    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("AUTH PLAIN LOGIN")
        conn.rest(timeout=1)

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=5)
        with pytest.raises(smtpkit.SMTPInsecureAuthError):
            c.login(USER, PASSWORD)
        c.close()
    assert b"AUTH" not in server.wire


def test_deadline_against_a_slow_drip(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.line()
        for byte in b"250-" + b"x" * 100 + b"\r\n250 ok\r\n":
            conn.send(bytes([byte]))
            time.sleep(0.05)

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=1.0)
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError):
            c.noop()
        assert time.monotonic() - start < 2.0


def test_every_exchange_gets_its_own_deadline(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.line()
        conn.send(b"250 ok\r\n")
        conn.line()
        time.sleep(0.7)
        conn.send(b"250 late but in time\r\n")
        conn.line()
        conn.rest(timeout=3)  # silent from now on

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=1.0)
        assert c.noop()[0] == 250
        time.sleep(0.6)
        # 1.3 s after the first read began, but 0.7 s into its own: the earlier deadline is gone
        assert c.noop() == (250, b"late but in time")
        getattr(c, "client", c).timeout = 0.3  # a shorter timeout applies to the next read at once
        start = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError):
            c.noop()
        assert 0.25 < time.monotonic() - start < 0.9


def test_a_server_that_stops_reading_cannot_outlast_the_timeout(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("PIPELINING")
        conn.until(b"DATA\r\n")
        conn.send(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        time.sleep(4)  # and never read the message: the client's writes block

    big = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 400_000  # 32 MB
    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=1.0)
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected):  # a timeout, or an unknown outcome
            c.sendmail("a@example.org", ["b@example.org"], big)
        assert time.monotonic() - start < 3.0
        assert c.sock is None


def test_send_many_gives_each_group_its_own_deadline_and_stops_at_a_stall(make_client: Factory) -> None:
    def group(conn: Conn) -> None:
        for verb in (b"MAIL", b"RCPT", b"DATA"):
            assert conn.line().startswith(verb)

    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("PIPELINING")
        group(conn)
        time.sleep(0.6)
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.until(b"\r\n.\r\n")
        group(conn)
        time.sleep(0.6)  # 1.2 s since the batch began, 0.6 s into this group's deadline
        conn.send(b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        conn.until(b"\r\n.\r\n")
        group(conn)
        conn.rest(timeout=3)  # silent from now on

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=1.0)
        c.ehlo()
        items = [("a@example.org", [f"r{i}@example.org"], MSG) for i in range(4)]
        start = time.monotonic()
        results = c.send_many(items)
        elapsed = time.monotonic() - start
        assert isinstance(results[0], smtpkit.SendResult) and results[0].data_reply == (250, b"queued")
        assert isinstance(results[1], smtpkit.SMTPUnknownOutcome)  # its content went out, no final reply
        assert results[1].result.rcpt_replies["r1@example.org"].code == 250
        assert type(results[2]) is smtpkit.SMTPServerDisconnected  # its commands went out, not its content
        assert isinstance(results[3], smtpkit.SMTPNotAttempted)
        assert 2.0 < elapsed < 3.5  # 0.6 + 0.6 + the 1 s deadline of the silent group
        assert c.sock is None


def test_garbage_and_unsolicited_replies(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.line()
        conn.send(b"250 ok\r\n")
        time.sleep(0.2)
        conn.send(b"250 surprise\r\n")
        conn.rest(timeout=1)

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=5)
        assert c.noop() == (250, b"ok")
        time.sleep(0.5)
        with pytest.raises(SMTPProtocolError, match="unsolicited"):
            c.noop()  # the surprise is never taken as this command's reply


@pytest.mark.parametrize("payload", ["a@b.org\r\nRCPT TO:<evil@x>", "a\x00@b.org", "a@b.org\rX"])
def test_bad_input_refused_before_any_byte(make_client: Factory, payload: str) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("PIPELINING", "AUTH PLAIN")
        conn.rest(timeout=1)

    with Scripted(script) as server:
        c = make_client("127.0.0.1", server.port, timeout=5)
        c.ehlo()
        before = len(server.wire)
        for call in (
            lambda: c.sendmail(payload, ["x@y.org"], MSG),
            lambda: c.sendmail("x@y.org", [payload], MSG),
            lambda: c.sendmail("x@y.org", ["z@y.org"], MSG, ["X=" + payload]),
            lambda: c.ehlo(payload),
            lambda: c.login(payload, PASSWORD),
            lambda: c.verify(payload),
        ):
            with pytest.raises(ValueError):
                call()
        time.sleep(0.1)
        c.close()
    assert server.wire[before:] == b""


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_secrets_never_logged(make_client: Factory, mechanism: str, caplog: pytest.LogCaptureFixture) -> None:
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo(f"AUTH {mechanism}")
        conn.line()
        if mechanism == "LOGIN":
            conn.send(b"334 UGFzc3dvcmQ6\r\n")
            conn.line()
        conn.send(b"235 2.7.0 ok\r\n")
        conn.rest(timeout=1)

    with Scripted(script) as server:
        with caplog.at_level(logging.DEBUG, logger="smtpkit"):
            c = make_client("127.0.0.1", server.port, timeout=5)
            c.login(USER, PASSWORD)
        shown = caplog.text + repr(c)
        c.close()
    assert "[redacted]" in caplog.text
    for secret in (
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ):
        assert secret not in shown


def test_send_message_uses_headers_and_drops_bcc(make_client: Factory) -> None:
    import email.message

    msg = email.message.EmailMessage()
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "bob@example.org"
    msg["Bcc"] = "eve@example.org"
    msg["Subject"] = "hi"
    msg.set_content("hello\n")
    with aiosmtpd_server() as (capture, port), make_client("127.0.0.1", port, timeout=5) as c:
        assert c.send_message(msg) == {}
    [got] = capture.messages
    assert got.mail_from == "alice@example.org" and sorted(got.rcpt_tos) == ["bob@example.org", "eve@example.org"]
    assert b"eve@" not in got.data


def test_send_many_pipelines_and_attributes_every_outcome(make_client: Factory) -> None:
    capture = Capture(refuse={"bad@example.org"}, pipelining=True)
    rcpts = ["one@example.org", "bad@example.org", "two@example.org", "three@example.org"]
    with aiosmtpd_server(capture) as (_, port), make_client("127.0.0.1", port, timeout=5) as c:
        c.ehlo()
        assert c.capabilities.pipelining and not c.capabilities.chunking
        seen: list[int] = []
        results = c.send_many(
            [("a@example.org", [r], b"Subject: %d\r\n\r\nx\r\n" % i) for i, r in enumerate(rcpts)],
            on_result=lambda i, r: seen.append(i),
        )
        assert isinstance(results[1], smtplib.SMTPRecipientsRefused)
        assert [isinstance(r, smtpkit.SendResult) for r in results] == [True, False, True, True]
        assert sorted(seen) == [0, 1, 2, 3]
        assert c.noop()[0] == 250  # still in sync
    assert [m.rcpt_tos for m in capture.messages] == [["one@example.org"], ["two@example.org"], ["three@example.org"]]
    assert [m.data.split(b"\r\n")[0] for m in capture.messages] == [b"Subject: 0", b"Subject: 2", b"Subject: 3"]


def test_send_many_with_smtp_sink_and_a_drop_after_the_dot(make_client: Factory) -> None:
    items = [("a@example.org", ["b@example.org"], MSG)] * 200
    with SmtpSink() as sink, make_client("127.0.0.1", sink.port, timeout=10) as c:
        assert all(isinstance(r, smtpkit.SendResult) and r.data_reply.code == 250 for r in c.send_many(items))
    with SmtpSink("-q", ".") as sink:
        c = make_client("127.0.0.1", sink.port, timeout=10)
        results = c.send_many(items[:5])
        assert isinstance(results[0], smtpkit.SMTPUnknownOutcome)  # its content went out: unknown
        second = results[1]  # its commands were sent with the first one's content; its own content was not
        assert type(second) is smtpkit.SMTPServerDisconnected and "before the message content" in str(second)
        assert all(isinstance(r, smtpkit.SMTPNotAttempted) for r in results[2:])
        c.close()


def test_send_many_leaves_no_failed_transaction_open(make_client: Factory) -> None:
    capture = Capture(refuse={"bad@example.org"}, pipelining=True)
    with aiosmtpd_server(capture) as (_, port), make_client("127.0.0.1", port, timeout=5) as c:
        results = c.send_many([("a@example.org", ["ok@example.org"], MSG), ("a@example.org", ["bad@example.org"], MSG)])
        assert isinstance(results[1], smtplib.SMTPRecipientsRefused)
        assert c.sendmail("a@example.org", ["next@example.org"], MSG) == {}  # no "nested MAIL"
    assert [m.rcpt_tos for m in capture.messages] == [["ok@example.org"], ["next@example.org"]]


@pytest.mark.parametrize("when", ["after MAIL", "after the content"])
def test_a_dropped_connection_raises_the_same_error_in_both(make_client: Factory, when: str) -> None:
    # both drivers map a failed wait through protocol.read_failure: same type, same words
    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("PIPELINING")
        if when == "after MAIL":
            conn.line()
            return  # closed with MAIL/RCPT/DATA unanswered
        conn.until(b"DATA\r\n")
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.until(b"\r\n.\r\n")  # the content arrived; closed before the final reply

    with Scripted(script) as server, make_client("127.0.0.1", server.port, timeout=5) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPServerDisconnected) as caught:
            c.sendmail("a@example.org", ["b@example.org"], MSG)
        if when == "after MAIL":
            assert type(caught.value) is smtpkit.SMTPServerDisconnected
            assert str(caught.value) == "Connection unexpectedly closed"
        else:
            assert type(caught.value) is smtpkit.SMTPUnknownOutcome
            assert str(caught.value) == "the connection was closed before the final reply"


@pytest.mark.parametrize(
    ("error", "final", "expected", "words"),
    [
        (None, False, smtpkit.SMTPServerDisconnected, "Connection unexpectedly closed"),
        (None, True, smtpkit.SMTPUnknownOutcome, "closed before the final reply"),
        (TimeoutError("t"), False, smtpkit.SMTPTimeoutError, "timed out waiting for the server's reply (5 s)"),
        (TimeoutError("t"), True, smtpkit.SMTPUnknownOutcome, "may have been delivered"),
        (ConnectionResetError("reset"), False, smtpkit.SMTPServerDisconnected, "unexpectedly closed: reset"),
        (ConnectionResetError("reset"), True, smtpkit.SMTPUnknownOutcome, "connection lost"),
        (SMTPProtocolError("garbage"), True, smtpkit.SMTPUnknownOutcome, "unreadable: garbage"),
    ],
)
def test_read_failure_mapping(error: BaseException | None, final: bool, expected: type, words: str) -> None:
    from smtpkit.protocol import raise_read_failure, read_failure

    failure = read_failure(error, final=final, timeout=5)
    assert type(failure) is expected and words in str(failure)
    with pytest.raises(expected) as caught:
        raise_read_failure(error, final=final, timeout=5)
    assert caught.value.__cause__ is error


def test_read_failure_keeps_typed_errors() -> None:
    from smtpkit.protocol import read_failure

    garbage = SMTPProtocolError("garbage")
    assert read_failure(garbage, final=False) is garbage  # before the final reply: as it is
    unknown = smtpkit.SMTPUnknownOutcome("already decided")
    assert read_failure(unknown, final=True) is unknown


def test_replies_written_one_by_one_with_nagle_do_not_stall(make_client: Factory) -> None:
    # A server that leaves Nagle's algorithm on and writes each pipelined reply on its own
    # holds the second reply until the first is acknowledged: a client that delays its ACK
    # (Linux: 40 ms) would stall on every message. The client acknowledges partial reads.
    count = 10

    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo("PIPELINING", "8BITMIME")
        for _ in range(count):
            for _ in range(3):  # MAIL, RCPT, DATA: one write each
                line = conn.line()
                conn.send(b"354 go\r\n" if line.startswith(b"DATA") else b"250 ok\r\n")
            conn.until(b"\r\n.\r\n")
            conn.send(b"250 queued\r\n")
        conn.line()
        conn.send(b"221 bye\r\n")

    with Scripted(script) as server, make_client("127.0.0.1", server.port, timeout=5) as c:
        c.ehlo()
        started = time.monotonic()
        for _ in range(count):
            assert c.sendmail("a@example.org", ["b@example.org"], MSG) == {}
        elapsed = time.monotonic() - started
    # one delayed ACK per message would take 0.4 s at least
    assert elapsed < 0.2, f"{elapsed * 1000:.0f} ms for {count} messages"
