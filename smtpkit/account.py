"""Where to send mail: a server, how to secure the connection, and whose credentials.

:class:`Account` is what the notebook forms edit and what scripts use directly::

    account = Account.from_env()                      # SMTPKIT_HOST, SMTPKIT_PORT, ... or the capture server
    account = Account.preset("gmail", user="me@gmail.com")
    print(account.check())                            # capabilities, TLS, login, in plain words
    with account.connect() as smtp:                   # connected, TLS done, logged in
        smtp.send_message(msg)

The password is looked up only when it is needed, in this order: the one given, the
``SMTPKIT_PASSWORD`` environment variable, the system keyring (service ``smtpkit``,
name ``user@host``), then ``~/.netrc`` (or ``$NETRC``). It is held as a
:class:`~smtpkit.auth.Secret`: never in ``repr``, never pickled.
"""

from __future__ import annotations

import ipaddress
import netrc
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from .auth import Secret, check_credential
from .errors import SMTPKitError

__all__ = ["PRESETS", "Account", "Check", "Preset", "explain", "find_password"]

PASSWORD_ENV = "SMTPKIT_PASSWORD"  # noqa: S105 - the variable's name, not a password
SECURITY_CHOICES = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
CAPTURE_PORT = 8025  # ``smtpkit serve``'s default


@dataclass(frozen=True)
class Preset:
    """A provider's submission settings."""

    label: str
    host: str
    port: int
    security: str
    note: str = ""


PRESETS: dict[str, Preset] = {
    "capture": Preset(
        "Local capture server",
        "127.0.0.1",
        CAPTURE_PORT,
        "none",
        "Nothing leaves this machine: mail is kept in ./captured-mail. If `smtpkit serve` is not running, "
        "an embedded capture server is started in this kernel.",
    ),
    "gmail": Preset(
        "Gmail",
        "smtp.gmail.com",
        587,
        "starttls",
        "Use an app password (Google account > Security > App passwords) or OAuth2; your normal password is refused.",
    ),
    "office365": Preset(
        "Outlook / Office 365",
        "smtp.office365.com",
        587,
        "starttls",
        "SMTP AUTH must be enabled for the mailbox; many tenants require OAuth2.",
    ),
    "ses": Preset(
        "Amazon SES",
        "email-smtp.us-east-1.amazonaws.com",
        587,
        "starttls",
        "Use SES SMTP credentials (not your AWS keys) and your region's host name.",
    ),
}


def find_password(host: str, user: str) -> tuple[Secret | None, str]:
    """The password for ``user`` at ``host`` and where it came from (``None, ""`` if nowhere)."""
    value = os.environ.get(PASSWORD_ENV)
    env_host, env_user = os.environ.get("SMTPKIT_HOST"), os.environ.get("SMTPKIT_USER")
    # with SMTPKIT_HOST (and SMTPKIT_USER) set, the variable belongs to that server (and user) only
    if value and (not env_host or env_host == host) and (not env_user or env_user == user):
        return Secret(value), f"the {PASSWORD_ENV} environment variable"
    try:
        import keyring  # type: ignore[import-not-found,unused-ignore]

        stored = keyring.get_password("smtpkit", f"{user}@{host}")
        if stored:
            return Secret(str(stored)), "the system keyring"
    except Exception:  # noqa: S110 - no keyring package or no usable backend: try .netrc
        pass
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        rc = netrc.netrc(path)
        entry = rc.hosts.get(host)  # its "default" entry would hand the password to any host: not used
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry is not None:
        login, _, password = entry
        if password and (not user or not login or login == user):
            return Secret(password), f"{path}"
    return None, ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Account:
    """A submission server and credentials; ``connect()`` gives a ready ``smtpkit.SMTP``.

    ``security`` is ``"ssl"`` (implicit TLS, port 465), ``"starttls"`` (port 587) or
    ``"none"`` (plain text: only sensible for a local test server; ``login()`` is then
    refused unless the server is on a loopback address). Certificates are always
    verified; give ``context=`` (an ``ssl.SSLContext``) to trust a private CA.
    """

    host: str = "127.0.0.1"
    port: int = 0
    security: str = "starttls"
    user: str = ""
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    context: ssl.SSLContext | None = field(default=None, repr=False)
    local_hostname: str | None = None
    start_capture: bool = False  # start an embedded capture server if none answers (the capture preset)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}, not {self.security!r}")
        self.host = (self.host or "").strip()
        if not self.host:
            raise ValueError("give the server's host name")
        check_credential(self.host, "host")
        if any(c.isspace() for c in self.host):
            raise ValueError(f"not a host name: {self.host!r}")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be between 1 and 65535, not {self.port}")
        self.port = int(self.port)
        self.user = check_credential((self.user or "").strip(), "user name")
        if self.password is not None:
            self.password = Secret(check_credential(self.password, "password"))

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.effective_port}"

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Account:
        """An account from one of :data:`PRESETS` (``capture``, ``gmail``, ``office365``, ``ses``)."""
        try:
            p = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        settings: dict[str, Any] = {"host": p.host, "port": p.port, "security": p.security}
        settings["start_capture"] = name == "capture"
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_env(cls, **overrides: Any) -> Account:
        """``SMTPKIT_HOST``, ``SMTPKIT_PORT``, ``SMTPKIT_SECURITY`` and ``SMTPKIT_USER``; without
        ``SMTPKIT_HOST``, the local capture server."""
        host = os.environ.get("SMTPKIT_HOST")
        if not host:
            return cls.preset("capture", **overrides)
        settings: dict[str, Any] = {
            "host": host,
            "port": int(os.environ.get("SMTPKIT_PORT") or 0),
            "security": os.environ.get("SMTPKIT_SECURITY") or "starttls",
            "user": os.environ.get("SMTPKIT_USER") or "",
        }
        settings.update(overrides)
        return cls(**settings)

    # -- connecting ---------------------------------------------------------------------------

    def resolve_password(self) -> tuple[Secret | None, str]:
        """The password to use and where it came from."""
        if self.password:
            return Secret(self.password), "the form" if not self.user else "the account"
        if not self.user:
            return None, ""
        return find_password(self.host, self.user)

    def _open(self) -> Any:
        from .client import SMTP, SMTP_SSL

        kwargs: dict[str, Any] = {"timeout": self.timeout, "local_hostname": self.local_hostname}
        if self.security == "ssl":
            return SMTP_SSL(self.host, self.effective_port, context=self.context, **kwargs)
        try:
            smtp = SMTP(self.host, self.effective_port, context=self.context, **kwargs)
        except ConnectionRefusedError:
            if not (self.start_capture and _is_loopback(self.host)):
                raise
            from .server import embedded_capture_server

            embedded_capture_server(self.host, self.effective_port)
            smtp = SMTP(self.host, self.effective_port, context=self.context, **kwargs)
        if self.security == "starttls":
            try:
                smtp.starttls()
            except BaseException:
                smtp.close()
                raise
        return smtp

    def require_password(self) -> Secret:
        """The password for ``user`` (see :meth:`resolve_password`), or a ValueError saying where to put it."""
        password, _ = self.resolve_password()
        if password is None:
            raise ValueError(
                f"no password for {self.user}: type it in, set {PASSWORD_ENV}, store it in the keyring "
                f"(service 'smtpkit', name '{self.user}@{self.host}') or put it in ~/.netrc"
            )
        return password

    def connect(self) -> Any:
        """A connected ``smtpkit.SMTP``: TLS as chosen, logged in when a user is set."""
        password = self.require_password() if self.user else None  # before anything is sent
        smtp = self._open()
        try:
            if self.user and password is not None:
                smtp.login(self.user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def connector(self) -> Callable[[], Any]:
        """``connect`` as a callable, for :func:`smtpkit.bulk.send_campaign` and ``Campaign.send``."""
        return self.connect

    def check(self) -> Check:
        """Connect, secure, log in and QUIT; report each step in plain words (never raises)."""
        check = Check(self.where, self.security)
        try:
            smtp = self._open()
        except Exception as exc:  # every failure becomes a readable report
            check.fail("connect", explain(exc, self))
            return check
        try:
            smtp.ehlo_or_helo_if_needed()
            check.capabilities = dict(smtp.esmtp_features)
            sock = smtp.sock
            if isinstance(sock, ssl.SSLSocket):
                cipher = sock.cipher()
                check.tls = f"{sock.version()} ({cipher[0] if cipher else '?'}), certificate verified"
                check.ok("tls", f"encrypted with {check.tls}")
            else:
                check.ok("tls", "not encrypted: everything, passwords included, travels in clear text")
            if self.user:
                try:
                    self._login(smtp)
                    check.ok("login", f"logged in as {self.user}")
                except Exception as exc:
                    check.fail("login", explain(exc, self))
            else:
                check.ok("login", "no user name given: not logging in")
            try:
                smtp.quit()
            except Exception:  # noqa: S110 - the check is over either way
                pass
        except Exception as exc:
            check.fail("session", explain(exc, self))
        finally:
            smtp.close()
        return check

    def _login(self, smtp: Any) -> None:
        smtp.login(self.user, self.require_password())


@dataclass
class Check:
    """The outcome of :meth:`Account.check`: one line per step, and what the server offers."""

    where: str
    security: str
    steps: list[tuple[str, bool, str]] = field(default_factory=list)
    capabilities: dict[str, str] = field(default_factory=dict)
    tls: str | None = None

    def ok(self, step: str, text: str) -> None:
        self.steps.append((step, True, text))

    def fail(self, step: str, text: str) -> None:
        self.steps.append((step, False, text))

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(good for _, good, _ in self.steps)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"{'OK' if self.passed else 'PROBLEM'}: {self.where} ({self.security})"]
        lines += [f"  {'ok ' if good else 'ERR'} {step}: {text}" for step, good, text in self.steps]
        if self.capabilities:
            lines.append("  offers: " + ", ".join(_capability_words(self.capabilities)))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.passed else "#cf222e"
        head = f"<b style='color:{color}'>{'Connection works' if self.passed else 'Connection problem'}</b>"
        rows = "".join(
            f"<li><span style='color:{'#1a7f37' if good else '#cf222e'}'>{'✓' if good else '✗'}</span> "
            f"<b>{html.escape(step)}</b>: {html.escape(text)}</li>"
            for step, good, text in self.steps
        )
        offers = ""
        if self.capabilities:
            offers = "<div><b>Server offers:</b> " + html.escape(", ".join(_capability_words(self.capabilities)))
            offers += "</div>"
        return (
            f"<div class='smtpkit-check'>{head} <code>{html.escape(self.where)}</code>"
            f"<ul style='margin:4px 0'>{rows}</ul>{offers}</div>"
        )


def _capability_words(features: dict[str, str]) -> list[str]:
    words = []
    for name, value in features.items():
        if name == "size" and value.split(" ")[0].isdigit() and int(value.split(" ")[0]):
            words.append(f"SIZE (max {int(value.split(' ')[0]) / 1e6:,.1f} MB)")
        elif value:
            words.append(f"{name.upper()} {value}")
        else:
            words.append(name.upper())
    return words


def explain(exc: BaseException, account: Account | None = None) -> str:
    """One plain-words sentence (or two) for what went wrong while connecting or sending."""
    where = account.where if account is not None else "the server"
    security = account.security if account is not None else ""
    if isinstance(exc, errors.SMTPCertificateError | ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or str(exc)
        return (
            f"The server's TLS certificate could not be verified ({reason}). This is what an attacker in the "
            "middle looks like, so nothing was sent. If it is your own server with a private CA, pass its "
            "certificate as an ssl.SSLContext (context=)."
        )
    if isinstance(exc, errors.SMTPTLSError | ssl.SSLError):
        hint = ""
        if security == "ssl":
            hint = " Port 465 speaks TLS from the start; ports 587 and 25 need STARTTLS instead."
        return f"The TLS handshake with {where} failed ({exc}).{hint}"
    if isinstance(exc, errors.SMTPInsecureAuthError):
        return (
            "Refused to send the password over an unencrypted connection. Choose STARTTLS or SSL/TLS "
            "(only a server on this machine may be used without encryption)."
        )
    if isinstance(exc, errors.SMTPAuthenticationError):
        text = errors.text_of(exc.smtp_error)
        hint = ""
        if account is not None and account.host.endswith("gmail.com"):
            hint = " Gmail needs an app password, not your account password."
        return f"The server refused the login ({exc.smtp_code} {text}).{hint}"
    if isinstance(exc, errors.SMTPNotSupportedError):
        text = str(exc).rstrip(".")
        if "auth" in text.lower():
            return (
                f"{text}: the server does not offer a login. Leave User empty for a server that needs none "
                "(such as the capture server), or choose STARTTLS/SSL: many servers offer AUTH only after TLS."
            )
        return f"{text}. Check the security setting (STARTTLS, SSL/TLS) for this server."
    if isinstance(exc, errors.SMTPTimeoutError | TimeoutError | socket.timeout):
        return f"{where} did not answer in time. Check the host and port, and that a firewall lets you through."
    if isinstance(exc, ConnectionRefusedError):
        return f"Nothing is listening on {where}. Check the host and port (or start `smtpkit serve`)."
    if isinstance(exc, socket.gaierror):
        name = f"The host name {account.host}" if account else "The host name"
        if exc.errno == socket.EAI_AGAIN:
            return f"{name} could not be looked up just now (a temporary DNS failure: is the network up?)."
        return f"{name} could not be found. Check its spelling."
    if isinstance(exc, errors.SMTPRecipientsRefused):
        refused = ", ".join(f"{r} ({c} {errors.text_of(m)})" for r, (c, m) in exc.recipients.items())
        return f"Every recipient was refused: {refused}."
    if isinstance(exc, errors.SMTPResponseException):
        text = errors.text_of(exc.smtp_error)
        return f"The server said {exc.smtp_code} {text}."
    if isinstance(exc, errors.SMTPServerDisconnected):
        return f"The connection to {where} was lost ({exc})."
    if isinstance(exc, OSError):
        return f"Could not reach {where}: {exc.strerror or exc}."
    if isinstance(exc, ValueError | SMTPKitError | errors.SMTPException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
