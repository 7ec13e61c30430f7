"""smtpkit: a fast, safe SMTP toolkit for notebooks and data.

``import smtpkit`` stays light: pandas, ipywidgets, jinja2 and matplotlib are imported
only by the parts that need them, when they are used.
"""

from __future__ import annotations

from . import errors, speedups
from .client import (
    LMTP,
    LMTP_PORT,
    OLDSTYLE_AUTH,
    SMTP,
    SMTP_PORT,
    SMTP_SSL,
    SMTP_SSL_PORT,
    bCRLF,
    quoteaddr,
    quotedata,
)
from .errors import (
    CommandInjectionError,
    InvalidAddressError,
    MessageDataError,
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPInsecureAuthError,
    SMTPKitError,
    SMTPMessageTooLarge,
    SMTPNotAttempted,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPUnknownOutcome,
)
from .esmtp import Capabilities
from .protocol import SendResult
from .reply import Reply

CRLF = "\r\n"

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Heavier parts load on first use, so ``import smtpkit`` stays light."""
    if name == "CaptureServer":
        from .server import CaptureServer

        return CaptureServer
    if name in ("Message", "load_eml"):
        from . import message

        return getattr(message, name)
    if name == "Campaign":
        from .merge import Campaign

        return Campaign
    if name == "Account":
        from .account import Account

        return Account
    if name in ("AsyncSMTP", "send_batch"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'smtpkit' has no attribute {name!r}")


__all__ = [
    "CRLF",
    "LMTP",
    "LMTP_PORT",
    "OLDSTYLE_AUTH",
    "SMTP",
    "SMTP_PORT",
    "SMTP_SSL",
    "SMTP_SSL_PORT",
    "Account",
    "AsyncSMTP",
    "Campaign",
    "Capabilities",
    "CaptureServer",
    "CommandInjectionError",
    "InvalidAddressError",
    "Message",
    "MessageDataError",
    "Reply",
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
    "SendResult",
    "__version__",
    "bCRLF",
    "errors",
    "quoteaddr",
    "quotedata",
    "speedups",
]
