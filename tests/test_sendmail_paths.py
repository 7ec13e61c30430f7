"""The lean paths (``SMTP.sendmail``'s common case, batch envelopes) against the general one.

``sendmail`` without options, with PIPELINING and an in-memory message takes a short path
(no generator machinery, MAIL/RCPT from one f-string); anything else takes the general
transaction. ``rcpt_options={}`` means "no options" too but forces the general path, so
each case runs both ways and must put the same bytes on the wire, return the same result
and raise the same errors.
"""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
from drivers import Factory
from servers import Conn, Scripted

import smtpkit
from smtpkit.esmtp import Capabilities, parse_ehlo
from smtpkit.protocol import Body, _envelope_plan, _plain_envelope, envelope_lines

GREETING = b"220 scripted ESMTP\r\n"
MSG = b"Subject: paths\r\n\r\nline\r\n.dot\r\n"


def serve(replies: dict[str, bytes], extensions: tuple[str, ...] = ("PIPELINING", "SIZE 100000", "8BITMIME")) -> Any:
    """A line-by-line server: ``replies`` maps MAIL, an RCPT address, DATA or "." to a reply."""

    def script(conn: Conn) -> None:
        conn.send(GREETING)
        conn.ehlo(*extensions)
        while True:
            line = conn.line()
            verb = line[:4].upper()
            if verb == b"MAIL":
                conn.send(replies.get("MAIL", b"250 2.1.0 sender ok\r\n"))
            elif verb == b"RCPT":
                addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                conn.send(replies.get(addr, b"250 2.1.5 recipient ok\r\n"))
            elif verb == b"DATA":
                reply = replies.get("DATA", b"354 go on\r\n")
                conn.send(reply)
                if reply.startswith(b"354"):
                    while conn.line() != b".":
                        pass
                    conn.send(replies.get(".", b"250 2.0.0 queued\r\n"))
            elif verb == b"QUIT":
                conn.send(b"221 bye\r\n")
                return
            else:
                conn.send(b"250 ok\r\n")
            if replies.get("close") == verb.decode():
                return

    return script


def run(make_client: Factory, replies: dict[str, bytes], *args: Any, **kwargs: Any) -> tuple[Any, bytes, Any]:
    """``sendmail(*args, **kwargs)``: (result or error, what the client wrote after EHLO, last_result)."""
    with Scripted(serve(replies)) as server:
        c = make_client("127.0.0.1", server.port, timeout=5)
        c.ehlo()
        try:
            outcome: Any = c.sendmail(*args, **kwargs)
        except (smtplib.SMTPException, ValueError) as exc:
            outcome = exc
        last = c.last_result
        try:
            if c.sock is not None:
                c.quit()
        finally:
            c.close()
    wire = server.wire
    return outcome, wire[wire.index(b"\n") + 1 :], last


def summary(outcome: Any) -> Any:
    result = getattr(outcome, "result", outcome)
    error = (type(outcome), str(outcome)) if isinstance(outcome, BaseException) else None
    if not isinstance(result, smtpkit.SendResult):
        return error
    return (
        error,
        dict(result),
        result.mail_reply,
        dict(result.rcpt_replies),
        result.data_reply,
        result.size,
        result.accepted,
    )


CASES = {
    "accepted": ({}, ["b@example.org"], MSG),
    "two recipients": ({}, ["b@example.org", "c@example.org"], MSG),
    "display name": ({}, ["Bob <b@example.org>"], MSG),
    "8-bit": ({}, ["b@example.org"], "Subject: é\r\n\r\ncafé\r\n".encode()),
    "one refused": ({"c@example.org": b"550 5.1.1 no such user\r\n"}, ["b@example.org", "c@example.org"], MSG),
    "all refused": ({"b@example.org": b"550 5.1.1 no such user\r\n"}, ["b@example.org"], MSG),
    "sender refused": ({"MAIL": b"553 5.1.8 bad sender\r\n"}, ["b@example.org"], MSG),
    "sender 421": ({"MAIL": b"421 4.3.2 going down\r\n", "close": "MAIL"}, ["b@example.org"], MSG),
    "DATA refused": ({"DATA": b"554 5.5.1 no valid recipients\r\n"}, ["b@example.org"], MSG),
    "final refused": ({".": b"554 5.7.1 spam\r\n"}, ["b@example.org"], MSG),
    "final 421": ({".": b"421 4.3.0 bye\r\n", "close": "DATA"}, ["b@example.org"], MSG),
    "final dropped": ({".": b"", "close": "DATA"}, ["b@example.org"], MSG),
    "bad address": ({}, ["b@example.org, c@example.org"], MSG),
    "NUL in message": ({}, ["b@example.org"], b"Subject: x\r\n\r\nnul \x00 here\r\n"),
    "over SIZE": ({}, ["b@example.org"], b"x" * 100001),
}


@pytest.mark.parametrize("case", CASES)
def test_lean_sendmail_matches_the_general_path(make_client: Factory, case: str) -> None:
    replies, recipients, message = CASES[case]
    lean, lean_wire, lean_last = run(make_client, replies, "a@example.org", recipients, message)
    general, general_wire, general_last = run(make_client, replies, "a@example.org", recipients, message, (), {})
    assert summary(lean) == summary(general)
    assert lean_wire == general_wire
    assert summary(lean_last) == summary(general_last)
    if case in ("bad address", "NUL in message", "over SIZE"):
        assert isinstance(lean, (ValueError, smtplib.SMTPException)) and lean_wire.upper() == b"QUIT\r\n"
    if case == "final refused":
        assert isinstance(lean, smtplib.SMTPDataError) and lean.result.data_reply.code == 554
        assert lean_wire.upper().endswith(b"RSET\r\nQUIT\r\n")  # no failed transaction left open
    if case == "final dropped":
        assert isinstance(lean, smtpkit.SMTPUnknownOutcome) and lean.result.rcpt_replies
    if case == "8-bit":
        assert b" BODY=8BITMIME\r\n" in lean_wire
    if case == "accepted":
        assert lean_wire.startswith(b"MAIL FROM:<a@example.org> size=%d\r\n" % len(MSG))


@pytest.mark.parametrize(
    ("features", "sender", "recipients", "message"),
    [
        (b"x\nPIPELINING\nSIZE 100000\n8BITMIME\n", "a@example.org", ["b@example.org"], MSG),
        (b"x\nPIPELINING\n", "a@example.org", ["b@example.org", "Carol <c@example.org>"], MSG),
        (b"x\nSIZE\n8BITMIME\n", "<a@example.org>", ["b@example.org"], b"caf\xc3\xa9\r\n"),
        (b"x\nSIZE 0\n", "", ["postmaster"], MSG),
        (b"x\nSIZE 10\n", "a@example.org", ["b@example.org"], MSG),  # over the limit: general
        (b"x\n", "a@example.org", ["b@example.org"], b"caf\xc3\xa9\r\n"),  # 8-bit, no 8BITMIME: general
        (b"x\nSMTPUTF8\n8BITMIME\n", "j\xf6rg@example.org", ["b@example.org"], MSG),  # SMTPUTF8: general
    ],
)
def test_plain_envelope_is_envelope_lines(features: bytes, sender: str, recipients: list[str], message: bytes) -> None:
    caps = Capabilities(parse_ehlo(features))
    try:
        mail_line, rcpt_lines = envelope_lines(sender, recipients, Body(message), caps=caps, esmtp=True)
        expected: bytes | type[BaseException] = mail_line + b"".join(rcpt_lines)
    except (smtplib.SMTPException, ValueError) as exc:
        expected = type(exc)
    plain = _plain_envelope(sender, recipients, Body(message), _envelope_plan(caps))
    if plain is None:  # left to envelope_lines: only when that refuses, or for SMTPUTF8
        assert not isinstance(expected, bytes) or b"SMTPUTF8" in expected
    else:
        assert plain == expected


def test_the_common_case_takes_the_lean_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def general(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the general transaction ran")

    with Scripted(serve({})) as server:
        c = smtpkit.SMTP("127.0.0.1", server.port, timeout=5, local_hostname="c")
        monkeypatch.setattr("smtpkit.client.transaction", general)
        result = c.sendmail("a@example.org", "b@example.org", MSG)
        assert result == {} and result.data_reply == (250, b"2.0.0 queued") and c.last_result is result
        with pytest.raises(AssertionError, match="general transaction"):
            c.sendmail("a@example.org", "b@example.org", MSG, ["SMTPUTF8"])  # options: the general path
        c.close()


def test_no_recipients_is_refused_as_smtplib_does(make_client: Factory) -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        conn.until(b"DATA\r\n")
        conn.send(b"250 ok\r\n354 go\r\n")  # a lenient server lets an empty envelope through
        conn.until(b".\r\n")  # the general path ends the DATA at once, empty
        conn.send(b"250 queued\r\n")
        conn.rest(timeout=1)

    with Scripted(script) as server, make_client("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@example.org", [], b"Subject: secret\r\n\r\nbody\r\n")
    assert b"secret" not in server.wire
