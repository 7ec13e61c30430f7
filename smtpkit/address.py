"""Envelope addresses: exactly one well-formed mailbox, or an error.

``MAIL FROM`` and ``RCPT TO`` take an address from user data (a CSV cell, a form field).
smtplib runs it through ``email.utils.parseaddr``, which quietly picks *one* address out
of ``"a@x, b@y"`` or ``"alice@example.org)<bob@example.com>"``: the envelope then goes
somewhere nobody intended. Here a value must hold exactly one mailbox with no parse
defect and no control character, or it is refused before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import HeaderRegistry
from functools import lru_cache
from typing import Any

from .errors import CommandInjectionError, InvalidAddressError

__all__ = ["ascii_domain", "check_no_controls", "envelope_address", "header_addresses", "needs_smtputf8"]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_SIMPLE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # C0 and DEL
_WIRE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # Cc, Zl, Zp: C1 (NEL), U+2028-9 too
_registry = HeaderRegistry()


def check_no_controls(value: str, what: str, *, wire: bool = True) -> str:
    """Refuse CR, LF, NUL and any other C0 control or DEL, before any byte is written.

    With ``wire`` (text that goes into a command as it is: arguments, options, the
    addr-spec of an address) also C1 controls such as NEL (U+0085) and the Unicode line
    and paragraph separators: SMTPUTF8 mail sends them raw, as UTF-8, where a lenient peer
    may break a line. Header text is checked without it (``wire=False``): it goes out
    encoded, and decoded RFC 2047 words legitimately hold C1 characters (Windows "smart
    quotes" labelled ISO-8859-1).
    """
    m = (_WIRE_CONTROL if wire else _CONTROL).search(value)
    if m:
        raise CommandInjectionError(
            f"{what} contains a control character (U+{ord(m.group()):04X} at index {m.start()}); refusing to send it"
        )
    return value


@lru_cache(maxsize=8192)
def envelope_address(value: str) -> str:
    """The addr-spec for ``MAIL FROM:<...>`` / ``RCPT TO:<...>``.

    Accepts ``user@example.org``, ``<user@example.org>``, ``Name <user@example.org>``,
    ``"Doe, Jane" <jane@example.org>`` and ``""``/``"<>"`` (the null reverse-path).
    Refuses control characters, several addresses, groups and anything the email
    parser flags as defective.
    """
    if not isinstance(value, str):
        raise TypeError(f"address must be a str, not {type(value).__name__}")
    check_no_controls(value, "address", wire=False)  # the display name is never sent
    text = value.strip()
    if text in ("", "<>"):
        return ""
    if text.lower() in ("postmaster", "<postmaster>"):
        return "Postmaster"  # RFC 5321 4.5.1: the one address without a domain
    if _SIMPLE.fullmatch(text):
        return text
    if text[0] == "<" and text[-1] == ">" and _SIMPLE.fullmatch(text[1:-1]):
        return text[1:-1]
    try:
        header: Any = _registry("To", text)
    except Exception as exc:  # the parser raises on some inputs rather than noting a defect
        raise InvalidAddressError(f"not a valid address: {text!r} ({exc})") from None
    addresses = header.addresses
    # a non-ASCII local part is fine in SMTPUTF8 mail (RFC 6531); every other defect is not
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or len(addresses) != 1 or len(header.groups) != 1 or header.groups[0].display_name:
        why = "; ".join(str(d) for d in defects) or f"{len(addresses)} addresses"
        raise InvalidAddressError(f"not exactly one valid address: {text!r} ({why})")
    spec: str = addresses[0].addr_spec
    if "@" not in spec or spec.startswith("@") or spec.endswith("@") or "<" in spec or ">" in spec:
        raise InvalidAddressError(f"not a valid address: {text!r}")
    check_no_controls(spec, "address")  # what goes into MAIL FROM / RCPT TO
    return ascii_domain(spec)


def ascii_domain(spec: str) -> str:
    """``user@bücher.example`` -> ``user@xn--bcher-kva.example``; the domain is checked.

    An internationalised domain is written as its A-labels when the local part is ASCII,
    so that the mail needs no SMTPUTF8 and works with every server. The encoding is IDNA
    2008 with the UTS #46 mapping (the ``idna`` package), so ``straße.de`` stays distinct
    from ``strasse.de``, which Python's IDNA 2003 codec would silently turn it into.
    With a non-ASCII local part SMTPUTF8 is needed anyway, and the domain is kept as
    typed (RFC 6531 allows U-labels) after the same check.
    """
    local, at, domain = spec.rpartition("@")
    if not at or domain.isascii() or domain.startswith("["):
        return spec
    import idna  # a dependency; imported on the first non-ASCII domain only

    try:
        encoded = idna.encode(domain, uts46=True).decode("ascii")
    except (UnicodeError, ValueError) as exc:
        raise InvalidAddressError(f"not a valid internationalised domain: {domain!r} ({exc})") from None
    if not all(label and len(label) <= 63 for label in encoded.split(".")):
        raise InvalidAddressError(f"not a valid internationalised domain: {domain!r}")
    return f"{local}@{encoded}" if local.isascii() else spec


def needs_smtputf8(address: str) -> bool:
    """True when the address has non-ASCII characters (RFC 6531)."""
    return not address.isascii()


_FOLD = re.compile(r"\r?\n(?=[ \t])")
# "Name <user@example.org>" with a plain display name: no need for the full header parser
_NAMED = re.compile(rf"([A-Za-z0-9!#$%&'*+/=?^_`{{|}}~ -]*?)\s*<({_SIMPLE.pattern})>")


def header_addresses(values: Iterable[object], what: str = "header") -> list[str]:
    """Every mailbox in address header values (To, Cc, From...), parsed strictly.

    Legitimate folding (a line break followed by a space or tab) is unfolded; any other
    CR or LF is an injection attempt and is refused, as is any parse defect. Groups are
    allowed (``undisclosed-recipients:;`` contributes no address).
    """
    found: list[str] = []
    for value in values:
        text = _FOLD.sub("", str(value))
        check_no_controls(text.replace("\t", " "), f"{what} header", wire=False)
        if not text.strip():
            continue
        plain = text.strip()
        if _SIMPLE.fullmatch(plain):  # the common cases, without the full parser
            found.append(plain)
            continue
        named = _NAMED.fullmatch(plain)
        if named:
            found.append(named.group(2))
            continue
        try:
            header: Any = _registry("To", text)
        except Exception as exc:
            raise InvalidAddressError(f"cannot parse the {what} header {text!r} ({exc})") from None
        defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
        if defects:
            why = "; ".join(str(d) for d in defects)
            raise InvalidAddressError(f"invalid address in the {what} header {text!r} ({why})")
        for address in header.addresses:
            spec = address.addr_spec
            if spec and spec != "<>":
                found.append(envelope_address(spec))
    return found
