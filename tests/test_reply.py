"""The Reply type: a (code, message) tuple like smtplib's, with derived attributes."""

from __future__ import annotations

import copy
import pickle

import pytest

from smtpkit.reply import Reply, parse_enhanced


def test_behaves_like_smtplib_tuple() -> None:
    reply = Reply(250, b"mx.example\nSIZE 10")
    code, message = reply
    assert (code, message) == (250, b"mx.example\nSIZE 10")
    assert reply == (250, b"mx.example\nSIZE 10")
    assert reply[0] == 250
    assert isinstance(reply, tuple)
    assert len(reply) == 2
    assert repr(reply) == "(250, b'mx.example\\nSIZE 10')"
    assert hash(reply) == hash((250, b"mx.example\nSIZE 10"))


def test_derived_attributes() -> None:
    reply = Reply(550, b"5.1.1 <a@b>: no such user\nsecond line")
    assert reply.code == 550
    assert reply.lines == [b"5.1.1 <a@b>: no such user", b"second line"]
    assert reply.text.startswith("5.1.1 <a@b>")
    assert reply.enhanced == (5, 1, 1)
    assert (reply.is_positive, reply.is_intermediate, reply.is_transient, reply.is_permanent) == (
        False,
        False,
        False,
        True,
    )
    assert Reply(354, b"go").is_intermediate
    assert Reply(421, b"bye").is_transient
    assert Reply(250).message == b""


def test_text_keeps_undecodable_bytes_visible() -> None:
    assert Reply(250, b"caf\xe9").text == "caf\\xe9"


def test_pickle_and_copy() -> None:
    reply = Reply(250, b"ok")
    for clone in (pickle.loads(pickle.dumps(reply)), copy.copy(reply), copy.deepcopy(reply)):
        assert clone == reply
        assert type(clone) is Reply
    plain = reply.without_enhanced()
    assert type(pickle.loads(pickle.dumps(plain))) is type(plain)


def test_no_instance_dict() -> None:
    with pytest.raises(AttributeError):
        Reply(250, b"ok").extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "line", "expected"),
    [
        (550, b"5.1.1 x", (5, 1, 1)),
        (250, b"2.0.0", (2, 0, 0)),
        (451, b"4.7.1\tx", (4, 7, 1)),
        (550, b"4.1.1 x", None),
        (220, b"2.0.0 ready", None),
        (334, b"3.0.0 x", None),
        (550, b"5.1.1.1 x", None),
        (550, b"5.1", None),
        (550, b"", None),
        (550, b"x.1.1", None),
    ],
)
def test_parse_enhanced(code: int, line: bytes, expected: tuple[int, int, int] | None) -> None:
    assert parse_enhanced(code, line) == expected
