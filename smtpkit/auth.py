"""SASL mechanisms as pure functions, and the secret type that keeps passwords out of sight.

Each mechanism is a function from the server's decoded challenge (``None`` for the
initial response) to the bytes to send, before base64. Nothing here does I/O or logs.

* PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195)
* XOAUTH2 (Google/Microsoft) and OAUTHBEARER (RFC 7628); on failure both servers send a
  334 with a JSON error, to which the client answers with a dummy response to get the
  final 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

__all__ = [
    "PREFERRED",
    "Secret",
    "check_credential",
    "cram_md5",
    "login",
    "oauthbearer",
    "plain",
    "xoauth2",
]

PREFERRED = ("CRAM-MD5", "PLAIN", "LOGIN")
"""Password mechanisms in smtplib's order of preference (login() tries them in turn)."""

Responder = Callable[[bytes | None], bytes]


class Secret(str):
    """A ``str`` whose ``repr`` hides it (passwords, tokens).

    It is still the string itself for every other purpose, so code that reads
    ``smtp.password`` as smtplib sets it keeps working, while ``repr(obj)``, pytest's
    ``--showlocals`` and debuggers show ``'***'``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __reduce__(self) -> tuple[Any, ...]:  # never pickled (saved notebook state, caches)
        raise TypeError("a Secret cannot be pickled")


def check_credential(value: str, what: str) -> str:
    """Reject control characters in a user name or secret (they would split the exchange)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    for i, ch in enumerate(value):
        if ch < " " or ch == "\x7f":
            from .errors import CommandInjectionError

            raise CommandInjectionError(f"{what} contains a control character (U+{ord(ch):04X} at index {i})")
    return value


def plain(user: str, password: str, authzid: str = "") -> Responder:
    """PLAIN: one response, ``authzid NUL user NUL password``."""
    payload = f"{authzid}\0{user}\0{password}".encode()

    def respond(challenge: bytes | None) -> bytes:
        return payload

    return respond


def login(user: str, password: str) -> Responder:
    """LOGIN: the user name (initial response or first challenge), then the password."""
    answers = [user.encode(), password.encode()]
    state = {"step": 0}

    def respond(challenge: bytes | None) -> bytes:
        step = state["step"]
        state["step"] = step + 1
        if step == 0:
            return answers[0]
        # a server that sends "Username:" again after the initial response gets the user
        if challenge is not None and challenge.lower().startswith(b"user"):
            return answers[0]
        return answers[1]

    return respond


def cram_md5(user: str, password: str) -> Responder:
    """CRAM-MD5: ``user SP hex(HMAC-MD5(password, challenge))``; no initial response."""

    def respond(challenge: bytes | None) -> bytes:
        if challenge is None:
            raise ValueError("CRAM-MD5 has no initial response")
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{user} {digest}".encode()

    return respond


TokenSource = str | Callable[[], str]


def _token(source: TokenSource) -> str:
    token = source() if callable(source) else source
    return check_credential(token, "OAuth token")


def xoauth2(user: str, token: TokenSource) -> Responder:
    """XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``; a 334 error challenge gets an empty answer."""
    state = {"sent": False}

    def respond(challenge: bytes | None) -> bytes:
        if state["sent"]:
            return b""  # the 334 carries a JSON error; answering empty ends the exchange
        state["sent"] = True
        return f"user={user}\x01auth=Bearer {_token(token)}\x01\x01".encode()

    return respond


def oauth_responder(
    user: str, token: TokenSource, advertised: frozenset[str], mechanism: str | None, host: str, port: int
) -> tuple[str, Responder]:
    """The OAuth 2 mechanism to use (XOAUTH2 first, as Gmail and Microsoft 365 expect) and its responder."""
    from .errors import SMTPNotSupportedError

    choice = mechanism.upper() if mechanism else next((m for m in ("XOAUTH2", "OAUTHBEARER") if m in advertised), None)
    if choice is None or choice not in advertised:
        raise SMTPNotSupportedError(f"the server offers no OAuth 2 mechanism (it offers {sorted(advertised)})")
    if choice == "XOAUTH2":
        return choice, xoauth2(user, token)
    if choice == "OAUTHBEARER":
        return choice, oauthbearer(user, token, host, port)
    raise ValueError(f"not an OAuth 2 mechanism: {choice}")


def oauthbearer(user: str, token: TokenSource, host: str = "", port: int = 0) -> Responder:
    """OAUTHBEARER (RFC 7628): a GS2 header, host, port and bearer token; errors get ``^A``."""
    state = {"sent": False}
    safe_user = user.replace("=", "=3D").replace(",", "=2C")

    def respond(challenge: bytes | None) -> bytes:
        if state["sent"]:
            return b"\x01"
        state["sent"] = True
        fields = [f"n,a={safe_user},"]
        if host:
            fields.append(f"host={host}")
        if port:
            fields.append(f"port={port}")
        fields.append(f"auth=Bearer {_token(token)}")
        return ("\x01".join(fields) + "\x01\x01").encode()

    return respond
