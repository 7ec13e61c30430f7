"""Delivery Status Notification options (RFC 3461) for ``sendmail``.

>>> mail_options, rcpt_options = dsn(["a@example.org"], notify=("failure", "delay"), ret="hdrs", envid="job-42")
>>> mail_options
['RET=HDRS', 'ENVID=job-42']
>>> rcpt_options["a@example.org"]
['NOTIFY=FAILURE,DELAY', 'ORCPT=rfc822;a@example.org']

``smtp.sendmail(sender, rcpts, msg, mail_options, rcpt_options)`` then asks the server
for the notifications; the client refuses these options when the server does not
advertise DSN, instead of sending them to be rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["dsn", "xtext"]

_NOTIFY = {"success", "failure", "delay", "never"}


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except ``+`` and ``=`` as is, the rest as ``+HH``."""
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def dsn(
    recipients: Iterable[str],
    *,
    notify: Sequence[str] | None = None,
    ret: str | None = None,
    envid: str | None = None,
    orcpt: bool = True,
) -> tuple[list[str], dict[str, list[str]]]:
    """``(mail_options, rcpt_options)`` asking for delivery status notifications.

    ``notify``: any of ``success``, ``failure``, ``delay``, or ``("never",)`` alone.
    ``ret``: ``"full"`` or ``"hdrs"`` (what a bounce returns). ``envid``: your id for this
    message, echoed in every notification. ``orcpt``: include each original recipient.
    """
    mail: list[str] = []
    if ret is not None:
        if ret.lower() not in ("full", "hdrs"):
            raise ValueError("ret must be 'full' or 'hdrs'")
        mail.append(f"RET={ret.upper()}")
    if envid is not None:
        if not envid or len(envid) > 100:
            raise ValueError("envid must be 1-100 characters")
        mail.append(f"ENVID={xtext(envid)}")
    per_rcpt: dict[str, list[str]] = {}
    words = [w.lower() for w in notify] if notify is not None else None
    if words is not None:
        if not words or not set(words) <= _NOTIFY or ("never" in words and len(words) > 1):
            raise ValueError("notify takes success/failure/delay, or never alone")
    for rcpt in recipients:
        options = []
        if words is not None:
            options.append("NOTIFY=" + ",".join(w.upper() for w in words))
        if orcpt:
            options.append(f"ORCPT=rfc822;{xtext(rcpt)}")
        per_rcpt[rcpt] = options
    return mail, per_rcpt
