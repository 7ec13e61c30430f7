"""Every exception smtpkit raises.

Each SMTP error subclasses its :mod:`smtplib` namesake, so code written for smtplib
(``except smtplib.SMTPException``) keeps working, and :class:`SMTPKitError`, so code
written for smtpkit can catch everything smtpkit raises at once.

The exceptions are defined here once; the Cython kernels and their pure-Python twin
import them from this module and build them through the helper functions below, so
both raise the same class with the same message for the same input.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reply import Reply

__all__ = [
    "CommandInjectionError",
    "InvalidAddressError",
    "MessageDataError",
    "SMTPAuthenticationError",
    "SMTPCertificateError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPInsecureAuthError",
    "SMTPKitError",
    "SMTPMessageTooLarge",
    "SMTPNotAttempted",
    "SMTPNotSupportedError",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SMTPUnknownOutcome",
]


class SMTPKitError(Exception):
    """Base class of every exception smtpkit raises on purpose."""


class SMTPException(SMTPKitError, smtplib.SMTPException):
    """Base class of the SMTP errors; also an :class:`smtplib.SMTPException`."""


class SMTPNotSupportedError(SMTPException, smtplib.SMTPNotSupportedError):
    """The command or option is not supported by the server."""


class SMTPServerDisconnected(SMTPException, smtplib.SMTPServerDisconnected, ConnectionError):
    """The connection is gone: closed by the server, dropped, timed out, or never opened."""


class SMTPProtocolError(SMTPServerDisconnected):
    """The server broke the SMTP protocol; the connection cannot be trusted and is closed.

    ``reason`` names the fault (``"malformed"``, ``"code-range"``, ``"control-char"``,
    ``"mixed-codes"``, ``"line-too-long"``, ``"reply-too-long"``, ``"too-many-lines"``,
    ``"unsolicited"``, ``"broken"``). ``replies`` holds the complete replies that arrived
    before the fault, in order, so nothing that was received is lost.

    It subclasses :class:`SMTPServerDisconnected` because, as with smtplib's own
    "Line too long" error, the client closes the connection when it is raised.
    """

    def __init__(self, message: str, reason: str = "malformed", replies: list[Reply] | None = None):
        super().__init__(message)
        self.reason = reason
        self.replies: list[Reply] = list(replies) if replies else []


class SMTPNotAttempted(SMTPServerDisconnected):
    """The message was never started: the connection was lost before its first command."""


class SMTPTimeoutError(SMTPServerDisconnected, TimeoutError):
    """A command/reply exchange did not complete within its deadline; the connection is closed."""


class SMTPTLSError(SMTPServerDisconnected, ssl.SSLError):
    """The TLS handshake failed (also an :class:`ssl.SSLError`); nothing else was sent."""


class SMTPCertificateError(SMTPTLSError, ssl.SSLCertVerificationError):
    """The server's certificate did not verify (self-signed, unknown CA, wrong name, expired)."""


class SMTPUnknownOutcome(SMTPServerDisconnected):
    """The whole message was sent but its final reply never came (dropped or timed out).

    The server may or may not have accepted it: do not resend blindly (RFC 1047). The
    ``result`` attribute holds what is known (sender and recipient replies).
    """

    result: object = None


class SMTPResponseException(SMTPException, smtplib.SMTPResponseException):
    """The server answered with an error code; ``smtp_code`` and ``smtp_error`` hold it."""

    def __init__(self, code: int, msg: bytes):
        smtplib.SMTPResponseException.__init__(self, code, msg)


class SMTPSenderRefused(SMTPResponseException, smtplib.SMTPSenderRefused):
    """The server refused the sender address."""

    def __init__(self, code: int, msg: bytes, sender: str):
        smtplib.SMTPSenderRefused.__init__(self, code, msg, sender)


class SMTPRecipientsRefused(SMTPException, smtplib.SMTPRecipientsRefused):
    """Every recipient was refused; ``recipients`` maps each to its ``(code, msg)``."""

    def __init__(self, recipients: dict[str, Any]):
        smtplib.SMTPRecipientsRefused.__init__(self, recipients)


class SMTPDataError(SMTPResponseException, smtplib.SMTPDataError):
    """The server refused the message data."""


class SMTPConnectError(SMTPResponseException, smtplib.SMTPConnectError):
    """The server's greeting was an error."""


class SMTPHeloError(SMTPResponseException, smtplib.SMTPHeloError):
    """The server refused our HELO/EHLO."""


class SMTPAuthenticationError(SMTPResponseException, smtplib.SMTPAuthenticationError):
    """Authentication failed."""


class SMTPInsecureAuthError(SMTPException):
    """Credentials would travel in clear text; refused before anything was sent."""


class SMTPMessageTooLarge(SMTPSenderRefused):
    """The message is larger than the SIZE the server advertised; nothing was sent."""


class MessageDataError(SMTPKitError, ValueError):
    """The message data cannot be sent as it is (a NUL byte, or a line over the limit).

    Raised before anything is written. ``offset`` counts from the first byte given to the
    encoder and points at the NUL byte, or at the start of the overlong line.
    """

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class CommandInjectionError(SMTPKitError, ValueError):
    """A command argument holds a character that could end or split the command."""


class InvalidAddressError(SMTPKitError, ValueError):
    """Not exactly one well-formed mailbox address (parse defects, two addresses, ...)."""


# --- builders shared by the two kernel twins (same class, same text) -------------------

_REPLY_MESSAGES = {
    "malformed": "malformed reply line from server: {line}",
    "code-range": "reply code outside 200-599 from server: {line}",
    "control-char": "control character in reply line from server: {line}",
    "mixed-codes": "reply lines with different codes from server: {line}",
    "line-too-long": "reply line longer than {limit} bytes from server",
    "reply-too-long": "reply longer than {limit} bytes from server",
    "too-many-lines": "reply with more than {limit} lines from server",
}


def text_of(value: bytes | str) -> str:
    """A reply text as str (exceptions carry smtplib's bytes; undecodable bytes replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _show(line: bytes) -> str:
    text = repr(bytes(line[:60]))
    return text + ("..." if len(line) > 60 else "")


def reply_error(
    reason: str, line: bytes = b"", limit: int = 0, replies: list[Reply] | None = None
) -> SMTPProtocolError:
    """Build the protocol error for a bad reply (used by both kernel twins)."""
    message = _REPLY_MESSAGES[reason].format(line=_show(line), limit=limit)
    return SMTPProtocolError(message, reason, replies)


def parser_broken(previous: SMTPProtocolError) -> SMTPProtocolError:
    """The error a parser raises when fed again after it has failed."""
    return SMTPProtocolError(f"reply parser already failed: {previous}", "broken")


def nul_in_data(offset: int) -> MessageDataError:
    return MessageDataError(
        f"NUL byte in message data at offset {offset}; SMTP DATA cannot carry NUL (encode the content, e.g. as base64)",
        offset,
    )


def line_too_long_in_data(offset: int, limit: int) -> MessageDataError:
    return MessageDataError(
        f"message data line starting at offset {offset} is longer than {limit} bytes; "
        "encode the content (quoted-printable or base64) or raise max_line_length",
        offset,
    )
