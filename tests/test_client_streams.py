"""Messages streamed from a file or an iterator: checked before sending where they can be
(a seekable file is read through once first), BDAT for files, 8BITMIME declared or refused,
and what happens when a file changes under the client. Real peers on 127.0.0.1."""

from __future__ import annotations

import io
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Conn, Scripted, aiosmtpd_server

import smtpkit
from smtpkit import protocol

GREETING = b"220 scripted ESMTP\r\n"
# bare LF, bare CR, CRLF, a leading dot, no final line break
TEXT = b"Subject: streamed\n\nline one\rline two\r\n.dotted\nlast"
CANONICAL = b"Subject: streamed\r\n\r\nline one\r\nline two\r\n.dotted\r\nlast\r\n"


def connect(port: int, **kw: object) -> smtpkit.SMTP:
    kw.setdefault("timeout", 5)
    return smtpkit.SMTP("127.0.0.1", port, local_hostname="client.example", **kw)  # type: ignore[arg-type]


@pytest.fixture(params=[1, 2, 3, 7, 1 << 20], ids=lambda n: f"chunk{n}")
def chunk_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Files are read in chunks of this many bytes: CR LF and CR . split between chunks."""
    monkeypatch.setattr(protocol, "STREAM_CHUNK", request.param)
    return int(request.param)


def test_a_file_goes_out_with_bdat_and_the_same_bytes_as_data(tmp_path: Path, chunk_size: int) -> None:  # D8
    path = tmp_path / "m.eml"
    path.write_bytes(TEXT)
    with aiosmtpd_server(chunking=True) as (capture, port), connect(port) as s:
        with open(path, "rb") as fh:
            result = s.sendmail("a@example.org", ["b@example.org"], fh)
        assert result.data_reply.code == 250  # type: ignore[union-attr]
        s.chunking = False
        with open(path, "rb") as fh:
            s.sendmail("a@example.org", ["b@example.org"], fh)
    chunked, plain = capture.messages
    assert chunked.chunked and not plain.chunked
    assert chunked.data == plain.data == CANONICAL


def test_a_file_that_starts_mid_way_is_sent_from_there(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"junk before the message\n" + TEXT)
    with aiosmtpd_server(chunking=True) as (capture, port), connect(port) as s, open(path, "rb") as fh:
        fh.seek(len(b"junk before the message\n"))
        s.sendmail("a@example.org", ["b@example.org"], fh)
    assert capture.messages[0].data == CANONICAL


def test_bad_data_in_a_file_fails_before_the_first_command(tmp_path: Path) -> None:  # D7
    cases = {
        "nul.eml": b"Subject: x\r\n\r\n" + b"a" * 5000 + b"\x00\r\n",
        "long.eml": b"Subject: x\r\n\r\n" + b"y" * 999 + b"\r\n",
    }

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING", "CHUNKING", "8BITMIME")
        c.line()  # NOOP
        c.send(b"250 ok\r\n")
        c.rest(timeout=1)

    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with Scripted(script) as server, connect(server.port) as s, open(path, "rb") as fh:
            s.ehlo()
            before = len(server.wire)
            with pytest.raises(smtpkit.MessageDataError):
                s.sendmail("a@example.org", ["b@example.org"], fh)
            assert s.noop()[0] == 250  # nothing was sent: the connection is still in step
            assert fh.tell() == 0  # rewound
        assert server.wire[before:].startswith(b"noop\r\n")  # the first command after EHLO


def test_8bit_file_refused_before_sending_without_8bitmime(tmp_path: Path) -> None:  # D7
    path = tmp_path / "m.eml"
    path.write_bytes("Subject: x\r\n\r\ncaf\u00e9\r\n".encode())

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("PIPELINING")
        c.rest(timeout=1)

    with Scripted(script) as server, connect(server.port) as s, open(path, "rb") as fh:
        s.ehlo()
        before = len(server.wire)
        with pytest.raises(smtplib.SMTPNotSupportedError, match="8BITMIME"):
            s.sendmail("a@example.org", ["b@example.org"], fh)
        s.close()  # no QUIT: the wire holds only what sendmail wrote
    assert server.wire[before:] == b""


def test_8bit_file_declared_with_body_8bitmime(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes("Subject: x\r\n\r\ncaf\u00e9\r\n".encode())
    with aiosmtpd_server() as (capture, port), connect(port) as s, open(path, "rb") as fh:
        s.sendmail("a@example.org", ["b@example.org"], fh)
    [got] = capture.messages
    assert "BODY=8BITMIME" in got.mail_options
    assert got.data == "Subject: x\r\n\r\ncaf\u00e9\r\n".encode()


def test_an_iterator_is_declared_8bitmime_when_offered() -> None:
    # an iterator cannot be read twice: what it holds is known only as it is sent
    def parts() -> Iterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        yield "na\u00efve\r\n".encode()

    with aiosmtpd_server() as (capture, port), connect(port) as s:
        s.sendmail("a@example.org", ["b@example.org"], parts())
        s.sendmail("a@example.org", ["b@example.org"], iter([b"Subject: y\r\n\r\nascii\r\n"]))
    assert ["BODY=8BITMIME" in m.mail_options for m in capture.messages] == [True, True]
    assert capture.messages[0].data.endswith("na\u00efve\r\n".encode())


class ChangingFile(io.BytesIO):
    """A seekable file whose content grows after it was first read through."""

    def __init__(self, data: bytes, extra: bytes) -> None:
        super().__init__(data)
        self.extra = extra
        self.rewinds = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.rewinds += 1
        if self.rewinds == 1:  # the client rewinds after its first pass: now it changes
            end = super().seek(0, 2)
            self.write(self.extra)
            super().seek(end)
        return super().seek(pos, whence)


@pytest.mark.parametrize("extra", [b"more\r\n", b""])
def test_a_file_that_changes_while_sent_never_desyncs_bdat(extra: bytes) -> None:  # D8
    fh = ChangingFile(CANONICAL, extra)
    with aiosmtpd_server(chunking=True) as (capture, port), connect(port) as s:
        if not extra:  # unchanged: sent as declared
            s.sendmail("a@example.org", ["b@example.org"], fh)
            assert capture.messages[0].data == CANONICAL
            return
        with pytest.raises(smtpkit.MessageDataError, match="changed while it was being sent"):
            s.sendmail("a@example.org", ["b@example.org"], fh)
        assert s.sock is None  # BDAT's byte count was declared: the connection cannot go on
        assert capture.messages == []
        s.connect("127.0.0.1", port)  # the object is still usable
        assert s.noop()[0] == 250


def test_5xx_to_bdat_then_rset_and_never_data() -> None:  # D8
    seen: list[bytes] = []

    def script(c: Conn) -> None:
        c.send(GREETING)
        c.ehlo("CHUNKING", "8BITMIME")  # no PIPELINING: one command at a time
        for _ in range(2):  # MAIL, RCPT
            seen.append(c.line())
            c.send(b"250 ok\r\n")
        head = c.line()
        seen.append(head)
        size = int(head.split()[1])
        while len(c.buf) < size:
            c.buf += c.sock.recv(65536)
        c.buf = c.buf[size:]
        c.send(b"554 5.6.0 content refused\r\n")
        seen.append(c.line())  # RSET
        c.send(b"250 reset\r\n")
        seen.append(c.line())  # NOOP
        c.send(b"250 ok\r\n")
        c.rest(timeout=1)

    with Scripted(script) as server, connect(server.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail("a@example.org", ["b@example.org"], io.BytesIO(TEXT))
        assert info.value.smtp_code == 554
        assert s.noop()[0] == 250
    assert seen[2] == b"BDAT %d LAST" % len(CANONICAL)
    assert [line.upper() for line in seen[3:]] == [b"RSET", b"NOOP"]
    assert b"DATA" not in server.wire


def test_size_is_checked_before_a_file_is_read_through(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(b"Subject: x\r\n\r\n\x00" + b"y" * 25_000 + b"\r\n")  # too big, and a NUL
    with aiosmtpd_server(data_size_limit=1000) as (capture, port), connect(port) as s, open(path, "rb") as fh:
        with pytest.raises(smtpkit.SMTPMessageTooLarge):  # the first fault a reader would see
            s.sendmail("a@example.org", ["b@example.org"], fh)
        assert fh.tell() == 0  # never read
        assert s.noop()[0] == 250
    assert capture.messages == []


def test_a_file_object_without_a_descriptor_declares_its_exact_size() -> None:
    with aiosmtpd_server() as (capture, port), connect(port) as s:
        s.sendmail("a@example.org", ["b@example.org"], io.BytesIO(TEXT))
    [got] = capture.messages
    assert f"SIZE={len(CANONICAL)}" in [o.upper() for o in got.mail_options]
    assert got.data == CANONICAL


def test_a_text_mode_file_is_refused_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(TEXT)
    with aiosmtpd_server() as (capture, port), connect(port) as s, open(path) as fh:
        with pytest.raises(TypeError, match="binary mode"):
            s.sendmail("a@example.org", ["b@example.org"], fh)
        assert s.noop()[0] == 250
    assert capture.messages == []
