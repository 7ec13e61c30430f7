"""smtpkit: a fast, safe SMTP toolkit for notebooks and data.

``import smtpkit`` stays light: pandas, ipywidgets, jinja2 and matplotlib are imported
only by the parts that need them, when they are used.
"""

from __future__ import annotations

from . import errors, speedups
from .errors import (
    CommandInjectionError,
    MessageDataError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPKitError,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from .reply import Reply

__version__ = "0.1.0"

__all__ = [
    "CommandInjectionError",
    "MessageDataError",
    "Reply",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPKitError",
    "SMTPNotSupportedError",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "__version__",
    "errors",
    "speedups",
]
