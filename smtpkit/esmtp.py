"""EHLO capabilities: smtplib's ``esmtp_features`` dict and a typed view of it.

:func:`parse_ehlo` builds exactly the dict smtplib builds (lower-case keyword -> its
parameters, ``auth`` accumulated over repeated and old-style ``AUTH=`` lines), so
``has_extn`` and code reading ``esmtp_features`` see what they always saw.
:class:`Capabilities` reads that dict defensively: a hostile or odd value (``SIZE -1``,
``SIZE 99999999999999999999``, a keyword of 500 characters) never produces a bogus
limit; an unusable SIZE counts as "no limit advertised". Storage is bounded because the
reply itself is (see ``smtpkit.speedups.MAX_REPLY_BYTES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Capabilities", "parse_ehlo"]

OLDSTYLE_AUTH = re.compile(r"auth=(.*)", re.I)
_FEATURE = re.compile(r"(?P<feature>[A-Za-z0-9][A-Za-z0-9\-]*) ?")
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")
_SIZE_DIGITS = 20  # anything longer than 10**20 bytes is not a real limit


def parse_ehlo(message: bytes) -> dict[str, str]:
    """smtplib's ``esmtp_features`` for an EHLO reply's text (first line = greeting)."""
    features: dict[str, str] = {}
    for line in message.decode("latin-1").split("\n")[1:]:
        old = OLDSTYLE_AUTH.match(line)
        if old:
            features["auth"] = features.get("auth", "") + " " + old.group(1)
            continue
        m = _FEATURE.match(line)
        if m:
            name = m.group("feature").lower()
            params = line[m.end("feature") :].strip()
            if name == "auth":
                features["auth"] = features.get("auth", "") + " " + params
            else:
                features[name] = params
    return features


@dataclass(frozen=True)
class Capabilities:
    """What the server advertised in its (latest) EHLO reply."""

    features: Mapping[str, str] = field(default_factory=dict)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.lower() in self.features

    @property
    def size(self) -> int | None:
        """The SIZE limit in bytes; None when absent, zero ("no fixed limit") or unusable."""
        value = self.features.get("size")
        if value is None:
            return None
        value = value.split(" ", 1)[0]
        if not value.isdigit() or not value.isascii() or len(value) > _SIZE_DIGITS:
            return None
        limit = int(value)
        return limit or None

    @property
    def auth(self) -> frozenset[str]:
        """The SASL mechanisms offered, upper-case."""
        words = self.features.get("auth", "").upper().split()
        return frozenset(w for w in words if _MECHANISM.fullmatch(w))

    pipelining = property(lambda self: "pipelining" in self.features)
    chunking = property(lambda self: "chunking" in self.features)
    binarymime = property(lambda self: "binarymime" in self.features)
    smtputf8 = property(lambda self: "smtputf8" in self.features)
    eightbitmime = property(lambda self: "8bitmime" in self.features)
    dsn = property(lambda self: "dsn" in self.features)
    starttls = property(lambda self: "starttls" in self.features)
    enhancedstatuscodes = property(lambda self: "enhancedstatuscodes" in self.features)
