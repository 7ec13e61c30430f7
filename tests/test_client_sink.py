"""The client against Postfix smtp-sink: pipelining and injected faults (security.md section 6)."""

from __future__ import annotations

import smtplib

import pytest
from servers import SmtpSink

import smtpkit

MSG = b"Subject: sink\r\n\r\n" + b"line of text\r\n" * 100


def connect(sink: SmtpSink, **kw: object) -> smtpkit.SMTP:
    kw.setdefault("timeout", 10)
    return smtpkit.SMTP("127.0.0.1", sink.port, local_hostname="client.example", **kw)  # type: ignore[arg-type]


def test_pipelined_sends_and_results() -> None:
    with SmtpSink() as sink, connect(sink) as s:
        s.ehlo()
        assert s.capabilities.pipelining and s.capabilities.dsn
        for i in range(200):
            result = s.sendmail("a@example.org", [f"r{i}@example.org", "x@example.org"], MSG)
            assert result == {}
            assert result.accepted == [f"r{i}@example.org", "x@example.org"]
            assert result.data_reply.enhanced == (2, 0, 0)  # type: ignore[union-attr]


def test_dsn_options_pass_through() -> None:
    with SmtpSink() as sink, connect(sink) as s:
        result = s.sendmail(
            "a@example.org",
            ["b@example.org"],
            MSG,
            mail_options=["RET=HDRS", "ENVID=abc123"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.org"],
        )
        assert result == {}


def test_dsn_options_need_dsn() -> None:
    with SmtpSink("-N") as sink, connect(sink) as s:
        with pytest.raises(smtplib.SMTPNotSupportedError, match="DSN"):
            s.sendmail("a@example.org", ["b@example.org"], MSG, rcpt_options=["NOTIFY=NEVER"])
        assert s.noop()[0] == 250


def test_options_as_a_single_string_are_refused() -> None:  # F12: ("SMTPUTF8") is a str
    with SmtpSink() as sink, connect(sink) as s:
        with pytest.raises(TypeError, match="sequence"):
            s.sendmail("a@example.org", ["b@example.org"], MSG, rcpt_options="NOTIFY=NEVER")  # type: ignore[arg-type]


def test_all_recipients_refused_in_a_pipelined_group() -> None:  # F4, F5
    with SmtpSink("-f", "RCPT") as sink, connect(sink) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            s.sendmail("a@example.org", ["b@example.org", "c@example.org"], MSG)
        assert {code for code, _ in info.value.recipients.values()} == {500}
        assert s.noop()[0] == 250  # in sync: every reply of the group was consumed


def test_transient_rcpt_failure() -> None:
    with SmtpSink("-r", "RCPT") as sink, connect(sink) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert info.value.recipients["b@example.org"][0] == 450


def test_421_on_mail_closes_and_reconnect_works() -> None:  # F1, F11
    with SmtpSink("-Q", "MAIL") as sink:
        s = connect(sink)
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert info.value.smtp_code == 421
        assert s.sock is None
        assert s.connect("127.0.0.1", sink.port)[0] == 220
        s.close()


def test_drop_after_data_command_is_not_delivered() -> None:  # F6
    with SmtpSink("-q", "DATA") as sink:
        s = connect(sink)
        with pytest.raises(smtplib.SMTPServerDisconnected) as info:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert not isinstance(info.value, smtpkit.SMTPUnknownOutcome)


def test_drop_after_final_dot_is_unknown() -> None:  # F7
    with SmtpSink("-q", ".") as sink:
        s = connect(sink)
        with pytest.raises(smtpkit.SMTPUnknownOutcome) as info:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)  # smtplib code still catches it
        result = info.value.result
        assert isinstance(result, smtpkit.SendResult)
        assert result.rcpt_replies["b@example.org"].code == 250
        assert result.data_reply is None


def test_data_aborted_before_the_dot() -> None:
    with SmtpSink("-A", "0") as sink:
        s = connect(sink)
        with pytest.raises(smtplib.SMTPException):
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        s.close()


def test_large_message_from_a_file(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "big.eml"  # type: ignore[operator]
    with open(path, "wb") as fh:
        fh.write(b"Subject: big\r\n\r\n")
        for i in range(30_000):
            fh.write(b".%d line that starts with a dot\n" % i)
    with SmtpSink() as sink, connect(sink) as s, open(path, "rb") as fh:
        result = s.sendmail("a@example.org", ["b@example.org"], fh)
        assert result == {} and result.data_reply.code == 250  # type: ignore[union-attr]
        assert result.size == path.stat().st_size


def test_dsn_helper_with_a_real_server() -> None:
    from smtpkit.dsn import dsn, xtext

    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    rcpts = ["b@example.org", "c@example.org"]
    mail_options, rcpt_options = dsn(rcpts, notify=("success", "failure"), ret="hdrs", envid="job 42")
    assert mail_options == ["RET=HDRS", "ENVID=job+2042"]
    with SmtpSink() as sink, connect(sink) as s:
        assert s.sendmail("a@example.org", rcpts, MSG, mail_options, rcpt_options) == {}
    with pytest.raises(ValueError):
        dsn(rcpts, notify=("never", "success"))


def test_message_streamed_from_an_iterator() -> None:
    chunks = (b"Subject: gen\r\n\r\n", *(b".line %d\n" % i for i in range(1000)))
    with SmtpSink() as sink, connect(sink) as s:
        result = s.sendmail("a@example.org", ["b@example.org"], iter(chunks))
        assert result.data_reply.code == 250  # type: ignore[union-attr]
        assert result.size is None  # unknown for an iterator: no SIZE= sent
