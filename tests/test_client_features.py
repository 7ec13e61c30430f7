"""ESMTP features against real peers: CHUNKING/BDAT, SIZE, SMTPUTF8, 8BITMIME, LMTP."""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import sys
import tempfile
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import UnixSocketController
from aiosmtpd.lmtp import LMTP as AioLMTP
from servers import Capture, Conn, Scripted, aiosmtpd_server

import smtpkit

MSG = b"Subject: x\r\n\r\nfirst line\r\n.leading dot\r\nlast line\r\n"
GREETING = b"220 scripted ESMTP\r\n"


def connect(port: int, **kw: object) -> smtpkit.SMTP:
    kw.setdefault("timeout", 5)
    return smtpkit.SMTP("127.0.0.1", port, local_hostname="client.example", **kw)  # type: ignore[arg-type]


def test_bdat_delivers_the_same_message_as_data() -> None:
    body = b"Subject: x\n\nbare LF line\r\n.leading dot\rbare CR\r\nno final newline"
    with aiosmtpd_server(chunking=True) as (capture, port), connect(port) as s:
        s.sendmail("a@example.org", ["b@example.org"], body)
        s.chunking = False
        s.sendmail("a@example.org", ["b@example.org"], body)
    chunked, plain = capture.messages
    assert chunked.chunked and not plain.chunked
    assert (
        chunked.data
        == plain.data
        == b"Subject: x\r\n\r\nbare LF line\r\n.leading dot\r\nbare CR\r\nno final newline\r\n"
    )


def test_bdat_with_refused_recipients() -> None:
    capture = Capture(refuse={"bad@example.org"})
    with aiosmtpd_server(capture, chunking=True) as (_, port), connect(port) as s:
        assert s.sendmail("a@example.org", ["ok@example.org", "bad@example.org"], MSG) == {
            "bad@example.org": (550, b"5.1.1 <bad@example.org>: no such user")
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@example.org", ["bad@example.org"], MSG)
        assert s.noop()[0] == 250
    assert [m.rcpt_tos for m in capture.messages] == [["ok@example.org"]]


def test_pipelined_bdat_is_one_round_trip() -> None:
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING", "CHUNKING", "8BITMIME")
        head = c.until(b"LAST\r\n")
        size = int(head.rsplit(b"BDAT ", 1)[1].split()[0])
        while len(c.buf) < size:
            c.buf += c.sock.recv(65536)
        assert head.count(b"\r\n") == 2  # MAIL and RCPT came in the same write
        c.send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 queued as X\r\n")
        c.line()
        c.send(b"221 bye\r\n")

    with Scripted(script) as server, connect(server.port) as s:
        result = s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert result.data_reply == (250, b"2.0.0 queued as X")


def test_size_is_checked_before_sending() -> None:
    with aiosmtpd_server(data_size_limit=100) as (capture, port), connect(port) as s:
        with pytest.raises(smtpkit.SMTPMessageTooLarge) as info:
            s.sendmail("a@example.org", ["b@example.org"], b"x" * 500)
        assert isinstance(info.value, smtplib.SMTPSenderRefused)
        assert info.value.smtp_code == 552
        assert s.noop()[0] == 250
    assert capture.messages == []


def test_smtputf8_added_when_an_address_needs_it() -> None:
    with aiosmtpd_server(enable_SMTPUTF8=True) as (capture, port), connect(port) as s:
        s.sendmail("jörg@exämple.org", ["zoë@example.org"], "Subject: ü\r\n\r\nGrüße\r\n".encode())
    [got] = capture.messages
    assert got.mail_from == "jörg@exämple.org" and got.rcpt_tos == ["zoë@example.org"]
    assert "SMTPUTF8" in got.mail_options and "BODY=8BITMIME" in got.mail_options


def test_smtputf8_missing_is_a_clear_error_before_sending() -> None:
    with aiosmtpd_server(enable_SMTPUTF8=False) as (capture, port), connect(port) as s:
        with pytest.raises(smtplib.SMTPNotSupportedError, match="SMTPUTF8"):
            s.sendmail("jörg@example.org", ["b@example.org"], MSG)
        assert s.noop()[0] == 250
    assert capture.messages == []


def test_8bit_body_without_8bitmime() -> None:  # D7
    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING")
        c.rest(timeout=1)

    with Scripted(script) as server:
        s = connect(server.port)
        with pytest.raises(smtplib.SMTPNotSupportedError, match="8BITMIME"):
            s.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nGrüße\r\n".encode())
        s.close()
    assert b"MAIL" not in server.wire


@contextlib.contextmanager
def lmtp_server(capture: Capture) -> Iterator[str]:
    class Controller(UnixSocketController):
        def factory(self) -> AioLMTP:
            return AioLMTP(self.handler)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lmtp.sock")
        controller = Controller(capture, unix_socket=path)
        controller.start()
        try:
            yield path
        finally:
            controller.stop()


@pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(socket, "AF_UNIX"),
    reason="needs AF_UNIX sockets and asyncio Unix servers (not available on Windows)",
)
def test_lmtp_over_a_unix_socket_gives_one_result_per_recipient() -> None:
    capture = Capture(refuse={"bad@example.org"}, lmtp=True)
    with lmtp_server(capture) as path:
        with smtpkit.LMTP(path, local_hostname="client.example", timeout=5) as s:
            result = s.sendmail("a@example.org", ["one@example.org", "bad@example.org", "two@example.org"], MSG)
            assert set(result) == {"bad@example.org"}
            assert set(result.delivery) == {"one@example.org", "two@example.org"}
            assert all(r.code == 250 for r in result.delivery.values())
            assert result.accepted == ["one@example.org", "two@example.org"]
    assert capture.messages[0].rcpt_tos == ["one@example.org", "two@example.org"]


def test_lmtp_data_by_hand_reads_one_reply_per_accepted_recipient() -> None:
    # smtplib-style code (mail, rcpt, data, then getreply for the other recipients) on
    # LMTP: every per-recipient reply is read by data(), getreply() hands out the others,
    # and once another command is sent none of them can be taken as its reply
    def script(c: Conn) -> None:
        c.send(b"220 scripted LMTP\r\n")
        c.ehlo("PIPELINING", "8BITMIME")  # the LHLO
        for _ in range(2):
            for answer in (b"250 sender ok", b"250 one ok", b"550 5.1.1 no such user", b"250 two ok"):
                c.line()
                c.send(answer + b"\r\n")
            c.line()  # DATA
            c.send(b"354 go\r\n")
            c.until(b"\r\n.\r\n")
            c.send(b"250 2.0.0 <one@example.org> delivered\r\n452 4.2.2 <two@example.org> mailbox full\r\n")
            c.line()  # NOOP
            c.send(b"250 2.0.0 noop\r\n")
        c.rest()

    with Scripted(script) as server, smtpkit.LMTP("127.0.0.1", server.port, local_hostname="c", timeout=5) as s:
        s.ehlo()
        for smtplib_style in (True, False):
            assert s.mail("a@example.org")[0] == 250
            assert s.rcpt("one@example.org")[0] == 250
            assert s.rcpt("bad@example.org")[0] == 550
            assert s.rcpt("two@example.org")[0] == 250
            assert s.data(MSG) == (250, b"2.0.0 <one@example.org> delivered")
            assert {r: reply.code for r, reply in s.delivery.items()} == {
                "one@example.org": 250,
                "two@example.org": 452,
            }
            if smtplib_style:
                assert s.getreply() == (452, b"4.2.2 <two@example.org> mailbox full")
            assert s.noop() == (250, b"2.0.0 noop")  # its own reply, never the 452
