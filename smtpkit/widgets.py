"""Notebook forms (ipywidgets 8): connect, compose, send in bulk.

Each form is itself a widget (a ``VBox``): display it, or place it in a layout. The forms
are thin views over the same code a script calls: :class:`~smtpkit.account.Account` for
the connection, :class:`~smtpkit.message.Message` for composing, and
:class:`~smtpkit.merge.Campaign` for bulk sends::

    from smtpkit.widgets import ConnectionForm, ComposeForm, BulkForm
    conn = ConnectionForm()                 # presets, "Test connection"
    ComposeForm(conn)                       # From/To/.../body, live preview, Send
    BulkForm(df, conn)                      # templates, row preview, test, dry run, Send/Stop/Resume

Secrets: the password box is emptied as soon as its value reaches the kernel; the
password is then held in memory only (a :class:`~smtpkit.auth.Secret`), so it is never
part of the widget state that a saved notebook keeps. It is forgotten when the host or
user changes. Errors are shown in the form in plain words, never as a traceback.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import getaddresses
from pathlib import Path
from typing import Any, cast

try:
    import ipywidgets as W  # type: ignore[import-untyped,unused-ignore]
    from traitlets import Unicode
except ImportError:  # pragma: no cover - exercised by the import-time check in the tests
    raise ImportError("the notebook forms need ipywidgets: pip install 'smtpkit[notebook]'") from None

from .account import PRESETS, Account, explain
from .auth import Secret, check_credential
from .bulk import CampaignResult, Outcome
from .errors import SMTPException
from .message import Message, check_header_value

__all__ = ["BulkForm", "ComposeForm", "ConnectionForm"]

_WIDE = W.Layout(width="100%")
_LABEL_STYLE = {"description_width": "90px"}
_SECURITY = [("SSL/TLS", "ssl"), ("STARTTLS", "starttls"), ("None", "none")]
_MODES = [("Text", "text"), ("HTML", "html"), ("Markdown", "markdown")]


def _ok(text: str) -> str:
    return f"<span class='smtpkit-ok' style='color:#1a7f37'>✓ {html.escape(text)}</span>"


def _error(text: str) -> str:
    return f"<span class='smtpkit-error' style='color:#cf222e'>✗ {html.escape(text)}</span>"


def _busy(text: str) -> str:
    return f"<span class='smtpkit-busy' style='color:#57606a'><i>{html.escape(text)}</i></span>"


def _text(description: str, value: str = "", placeholder: str = "") -> Any:
    return W.Text(
        value=value,
        description=description,
        placeholder=placeholder,
        layout=_WIDE,
        style=_LABEL_STYLE,
    )


class _PasswordBox(W.Password):  # type: ignore[misc]
    """A Password box whose value is never echoed back to the browser (ipywidgets 8 echoes
    every update to all frontends before the kernel's own change, which empties it)."""

    value = Unicode("", help="the typed password; emptied by the form as soon as it arrives").tag(
        sync=True, echo_update=False
    )


def _split_addresses(value: str, field: str = "address") -> list[str]:
    """``"A <a@x>, "Doe, J" <j@y>"`` -> one entry per mailbox (commas inside quotes kept).

    A line break or other control character anywhere is an error, never a separator.
    """
    check_header_value(field, value)
    if not value.strip():
        return []
    out = []
    for name, addr in getaddresses([value]):
        if not addr:
            raise ValueError(f"not an address list: {value!r}")
        if name:
            quoted = name if name.replace(" ", "").isalnum() else '"' + name.replace('"', '\\"') + '"'
            out.append(f"{quoted} <{addr}>")
        else:
            out.append(addr)
    return out


# -- connection ------------------------------------------------------------------------------


class ConnectionForm(W.VBox):  # type: ignore[misc]
    """Host, port, security, user and password, with provider presets and a connection test.

    Defaults come from ``SMTPKIT_HOST``/``SMTPKIT_PORT``/``SMTPKIT_SECURITY``/``SMTPKIT_USER``
    or, without them, the local capture server. The password may also come from
    ``SMTPKIT_PASSWORD``, the keyring or ``~/.netrc`` (the form says which).
    """

    def __init__(self, account: Account | None = None, *, preset: str | None = None) -> None:
        if account is None:
            account = Account.preset(preset) if preset else Account.from_env()
        self._secret: Secret | None = Secret(account.password) if account.password else None
        self._timeout, self._context = account.timeout, account.context
        matching = [
            k
            for k, p in PRESETS.items()
            if (p.host, p.port, p.security) == (account.host, account.effective_port, account.security)
        ]
        self.preset = W.Dropdown(
            options=[(p.label, key) for key, p in PRESETS.items()] + [("Other server", "custom")],
            value=matching[0] if matching else "custom",
            description="Provider",
            style=_LABEL_STYLE,
        )
        self.host = _text("Host", account.host, "smtp.example.org")
        self.port = W.IntText(value=account.effective_port, description="Port", style=_LABEL_STYLE)
        self.security = W.ToggleButtons(
            options=_SECURITY, value=account.security, description="Security", style=_LABEL_STYLE
        )
        self.warning = W.HTML()
        self.user = _text("User", account.user, "(none: no login)")
        self.password = _PasswordBox(
            description="Password", placeholder="", continuous_update=False, layout=_WIDE, style=_LABEL_STYLE
        )
        self.note = W.HTML()
        self.test_button = W.Button(description="Test connection", icon="plug")
        self.status = W.HTML()
        self._applying_preset = False
        self.preset.observe(self._on_preset, "value")
        self.security.observe(lambda _: self._refresh(), "value")
        for box in (self.host, self.port, self.security):
            box.observe(self._on_setting, "value")
        self.password.observe(self._on_password, "value")
        for box in (self.host, self.user):
            box.continuous_update = False
            box.observe(self._on_identity, "value")
        self.test_button.on_click(lambda _: self.test_in_background())
        super().__init__(
            children=[
                W.HTML("<b>SMTP server</b>"),
                self.preset,
                self.host,
                self.port,
                self.security,
                self.warning,
                self.user,
                self.password,
                self.note,
                self.test_button,
                self.status,
            ]
        )
        self.add_class("smtpkit-connection")
        self._refresh()

    # events
    def _on_preset(self, change: Mapping[str, Any]) -> None:
        preset = PRESETS.get(change["new"])
        if preset is not None:
            self._applying_preset = True
            try:
                self.host.value, self.port.value, self.security.value = preset.host, preset.port, preset.security
            finally:
                self._applying_preset = False
        self._refresh()

    def _on_setting(self, change: Mapping[str, Any]) -> None:
        """A host, port or security edited by hand no longer is the preset ("Other server")."""
        preset = PRESETS.get(self.preset.value)
        if self._applying_preset or preset is None:
            return
        if (self.host.value.strip(), self.port.value, self.security.value) != (
            preset.host,
            preset.port,
            preset.security,
        ):
            self.preset.value = "custom"

    def _on_password(self, change: Mapping[str, Any]) -> None:
        if change["new"]:
            self._secret = Secret(change["new"])
            self.password.value = ""  # out of the widget state at once: kept in kernel memory only
            self._refresh()

    def _on_identity(self, change: Mapping[str, Any]) -> None:
        self._secret = None  # a password belongs to one user at one host
        self._refresh()

    def _refresh(self) -> None:
        none = self.security.value == "none"
        self.warning.value = (
            "<div class='smtpkit-warning' style='color:#9a6700'>⚠ No encryption: the message (and any password) "
            "travels in clear text. Use this only for a server on this machine, such as the capture server.</div>"
            if none
            else ""
        )
        preset = PRESETS.get(self.preset.value)
        notes = [html.escape(preset.note)] if preset and preset.note else []
        if self._secret:
            notes.append("Password: typed in, kept in this kernel's memory only (not saved in the notebook).")
            self.password.placeholder = "•••••• (kept in memory)"
        elif self.user.value.strip():
            try:
                _, source = self._account(read_password=False).resolve_password()
            except ValueError:
                source = ""
            notes.append(f"Password: from {html.escape(source)}." if source else "Password: type it in.")
            self.password.placeholder = ""
        self.note.value = "<div style='color:#57606a;font-size:90%'>" + "<br>".join(notes) + "</div>"

    # the script-level object
    def _account(self, read_password: bool = True) -> Account:
        return Account(
            host=self.host.value,
            port=self.port.value or 0,
            security=self.security.value,
            user=self.user.value,
            password=self._secret if read_password else None,
            timeout=self._timeout,
            context=self._context,
            start_capture=self.preset.value == "capture",
        )

    def account(self) -> Account:
        """The :class:`Account` the form describes (password included, never shown)."""
        if self.password.value:  # typed but not yet moved (no blur): take it now
            self._on_password({"new": self.password.value})
        return self._account()

    def connect(self) -> Any:
        """A connected, secured and logged-in ``smtpkit.SMTP``."""
        return self.account().connect()

    def forget_password(self) -> None:
        self._secret = None
        self.password.value = ""
        self._refresh()

    def test(self) -> Any:
        """Run :meth:`Account.check` and show its report in the form; returns it."""
        self.status.value = _busy(f"Connecting to {self.host.value}:{self.port.value}…")
        try:
            check = self.account().check()
        except (ValueError, TypeError) as exc:
            self.status.value = _error(str(exc))
            return None
        self.status.value = check._repr_html_()
        return check

    def test_in_background(self) -> threading.Thread:
        """:meth:`test` in a thread (the button): the kernel stays free for the other widgets'
        updates, the password box's among them, however long the server takes."""
        self.test_button.disabled = True

        def run() -> None:
            try:
                self.test()
            finally:
                self.test_button.disabled = False

        thread = threading.Thread(target=run, name="smtpkit-connection-test", daemon=True)
        thread.start()
        return thread

    def __repr__(self) -> str:
        return f"<ConnectionForm {self.host.value}:{self.port.value} {self.security.value} user={self.user.value!r}>"


def _connection(connection: ConnectionForm | Account | None) -> ConnectionForm | Account:
    return connection if connection is not None else ConnectionForm()


def _with_server(children: list[Any], connection: Any, show: bool | None, created_here: bool) -> list[Any]:
    """The form's children, under a collapsible "Server" section when the form made its own connection form."""
    if (created_here if show is None else show) and isinstance(connection, ConnectionForm):
        return [W.Accordion(children=[connection], titles=("Server",)), *children]
    return children


def _account_of(connection: ConnectionForm | Account) -> Account:
    return connection.account() if isinstance(connection, ConnectionForm) else connection


# -- compose ---------------------------------------------------------------------------------


class ComposeForm(W.VBox):  # type: ignore[misc]
    """From, To, Cc, Bcc, Subject, a body (text, HTML or Markdown), attachments, a live
    preview and Send. ``message()`` gives the :class:`~smtpkit.message.Message`."""

    def __init__(
        self,
        connection: ConnectionForm | Account | None = None,
        *,
        sender: str = "",
        to: str = "",
        subject: str = "",
        body: str = "",
        mode: str = "text",
        show_connection: bool | None = None,
    ) -> None:
        self.connection = _connection(connection)
        account_user = self.connection.user.value if isinstance(self.connection, ConnectionForm) else ""
        self.sender = _text("From", sender or (account_user if "@" in account_user else ""), "You <you@example.org>")
        self.to = _text("To", to, 'a@example.org, "Doe, Jane" <jane@example.org>')
        self.cc = _text("Cc")
        self.bcc = _text("Bcc", placeholder="not shown to the other recipients")
        self.subject = _text("Subject", subject)
        self.mode = W.ToggleButtons(options=_MODES, value=mode, description="Format", style=_LABEL_STYLE)
        self.body = W.Textarea(
            value=body, description="Body", layout=W.Layout(width="100%", height="180px"), style=_LABEL_STYLE
        )
        self.attachments = W.FileUpload(description="Attach files", multiple=True)
        self.preview = W.HTML()
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.status = W.HTML()
        self.result = W.HTML()
        self.last_result: Any = None
        for box in (self.sender, self.to, self.cc, self.bcc, self.subject, self.mode, self.body, self.attachments):
            box.observe(self._on_edit, "value")
        self.send_button.on_click(self._on_send_click)
        children = [
            self.sender,
            self.to,
            self.cc,
            self.bcc,
            self.subject,
            self.mode,
            self.body,
            self.attachments,
            W.HTML("<b>Preview</b>"),
            self.preview,
            self.send_button,
            self.status,
            self.result,
        ]
        super().__init__(children=_with_server(children, self.connection, show_connection, connection is None))
        self.add_class("smtpkit-compose")
        self.refresh_preview()

    def _files(self) -> list[tuple[str, bytes, str]]:
        # ipywidgets 8 (the required version): a tuple of dicts
        return [(f["name"], bytes(f["content"]), f.get("type") or "") for f in self.attachments.value]

    def message(self) -> Message:
        """The message the form describes (raises ValueError for bad addresses or headers)."""
        body = self.body.value
        mode = self.mode.value
        msg = Message(
            self.sender.value.strip() or None,
            to=_split_addresses(self.to.value, "To"),
            cc=_split_addresses(self.cc.value, "Cc"),
            bcc=_split_addresses(self.bcc.value, "Bcc"),
            subject=self.subject.value,
            text=body if mode == "text" else None,
            html=body if mode == "html" else None,
            markdown=body if mode == "markdown" else None,
        )
        for name, data, ctype in self._files():
            msg.attach(data, name, mimetype=ctype if ctype and "/" in ctype else None)
        return msg

    def refresh_preview(self) -> None:
        try:
            self.preview.value = self.message()._repr_html_()
        except (ValueError, TypeError, ImportError) as exc:
            self.preview.value = _error(f"Cannot build the message yet: {exc}")

    def _on_edit(self, change: Mapping[str, Any]) -> None:
        if self.send_button.disabled:  # a sent message was edited: it can be sent again
            self.send_button.disabled = False
            self.send_button.description = "Send"
        self.refresh_preview()

    def _on_send_click(self, button: Any) -> None:
        # clicks queue up while a send runs: a second click on the same message arrives after
        # it was sent, when the button is disabled (until the message is edited): ignored
        if not self.send_button.disabled:
            self.send()

    def send(self) -> Any:
        """Send the message; the result (or a plain-words error) is shown in the form."""
        self.send_button.disabled = True
        self.status.value = _busy("Sending…")
        self.result.value = ""
        account: Account | None = None
        try:
            msg = self.message()
            if not msg.sender:
                raise ValueError("fill in From")
            if not msg.recipients:
                raise ValueError("give at least one recipient (To, Cc or Bcc)")
            account = _account_of(self.connection)
            with account.connect() as smtp:
                result = msg.send(smtp)
        except Exception as exc:  # shown in the form, not as a traceback
            self.status.value = _error(explain(exc, account))
            self.last_result = exc
            self.send_button.disabled = False
            return exc
        self.send_button.description = "Sent (edit to send again)"
        accepted = len(result.accepted)
        total = len(msg.recipients)
        where = f"{account.host}:{account.effective_port}"
        if accepted == total:
            self.status.value = _ok(f"sent to {accepted} recipient(s) via {where}")
        else:
            self.status.value = _error(f"sent to {accepted} of {total} recipients via {where}")
        self.result.value = result._repr_html_()
        self.last_result = result
        return result


# -- bulk ------------------------------------------------------------------------------------


def _guess_email_column(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str | None:
    for name in columns:
        if name.lower() in ("email", "e-mail", "mail", "to", "address"):
            return name
    for name in columns:
        if rows and "@" in str(rows[0].get(name, "")):
            return name
    return columns[0] if columns else None


class BulkForm(W.VBox):  # type: ignore[misc]
    """Mail merge from a DataFrame (or CSV path, or list of dicts) in a form.

    Edit the templates (Jinja2: ``{{ column }}``) with a live preview of any row, send a
    test of that row to yourself, dry-run every row, then Send: the send runs in a
    background thread (the kernel stays free), with a progress bar, live counts and a
    Stop button; a journal makes "Resume" send only what was not sent yet.
    ``campaign()`` gives the :class:`~smtpkit.merge.Campaign`; ``wait()`` joins the send.
    """

    def __init__(
        self,
        data: Any,
        connection: ConnectionForm | Account | None = None,
        *,
        sender: str = "",
        to_column: str | None = None,
        subject: str = "",
        body: str = "",
        mode: str = "text",
        name: str = "campaign",
        key_column: str | None = None,
        journal: str | None = None,
        connections: int = 2,
        rate: float = 0.0,
        show_connection: bool | None = None,
    ) -> None:
        from .merge import load_rows

        self.data = data
        self.key_column = key_column  # a stable id per row; without it a row's key is a hash of the row
        self.rows = load_rows(data)
        if not self.rows:
            raise ValueError("the data has no rows")
        columns = [str(c) for c in self.rows[0]]
        self.connection = _connection(connection)
        self.sender = _text("From", sender, "Reports <reports@example.org>")
        self.to_column = W.Dropdown(
            options=columns,
            value=to_column or _guess_email_column(self.rows, columns),
            description="To column",
            style=_LABEL_STYLE,
        )
        self.subject = _text("Subject", subject, "Hello {{ name }}")
        self.mode = W.ToggleButtons(options=_MODES, value=mode, description="Format", style=_LABEL_STYLE)
        self.body = W.Textarea(
            value=body, description="Body", layout=W.Layout(width="100%", height="160px"), style=_LABEL_STYLE
        )
        fields = ", ".join("{{ " + c + " }}" for c in columns)
        self.help = W.HTML(
            f"<div style='color:#57606a;font-size:90%'>Columns: <code>{html.escape(fields)}</code></div>"
        )
        self.row = W.IntSlider(
            value=0,
            min=0,
            max=len(self.rows) - 1,
            description="Preview row",
            style=_LABEL_STYLE,
            continuous_update=False,
        )
        self.preview = W.HTML()
        self.test_to = _text("Test to", placeholder="you@example.org")
        self.test_button = W.Button(description="Send test to me", icon="flask")
        self.dry_button = W.Button(description="Dry run", icon="check")
        self.name = _text("Campaign", name)
        self.journal = _text("Journal", journal or f"{name}.journal.sqlite")
        self.connections = W.BoundedIntText(
            value=connections, min=1, max=32, description="Connections", style=_LABEL_STYLE
        )
        self.rate = W.BoundedFloatText(value=rate, min=0, max=10_000, description="Max msg/s", style=_LABEL_STYLE)
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = W.IntProgress(
            value=0, min=0, max=len(self.rows), description=f"0 / {len(self.rows)}", style=_LABEL_STYLE
        )
        self.counts = W.HTML()
        self.status = W.HTML()
        self.results = W.HTML()
        self.result: CampaignResult | None = None
        self._campaign: Any = None
        self._thread: threading.Thread | None = None
        self._counts: dict[str, int] = {}
        self._base = 0
        self._sent_name = ""
        self._trailing: threading.Timer | None = None
        self._last_draw = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        for box in (self.sender, self.to_column, self.subject, self.mode, self.body, self.name):
            box.observe(self._on_template, "value")
        self.name.observe(self._on_name, "value")
        self.row.observe(lambda _: self.refresh_preview(), "value")
        self.test_button.on_click(lambda _: self.send_test())
        self.dry_button.on_click(lambda _: self.dry_run())
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        children = [
            self.sender,
            self.to_column,
            self.subject,
            self.mode,
            self.body,
            self.help,
            W.HTML("<b>Preview</b>"),
            self.row,
            self.preview,
            W.HBox([self.test_to, self.test_button]),
            W.HBox([self.name, self.journal]),
            W.HBox([self.connections, self.rate]),
            W.HBox([self.dry_button, self.send_button, self.stop_button]),
            self.progress,
            self.counts,
            self.status,
            self.results,
        ]
        super().__init__(children=_with_server(children, self.connection, show_connection, connection is None))
        self.add_class("smtpkit-bulk")
        self.refresh_preview()

    # -- templates and preview
    def _on_template(self, change: Mapping[str, Any]) -> None:
        self._campaign = None
        self.refresh_preview()

    def _on_name(self, change: Mapping[str, Any]) -> None:
        old, new = change["old"], change["new"]
        if self.journal.value == f"{old}.journal.sqlite":
            self.journal.value = f"{new}.journal.sqlite"
        if self.send_button.description == "Resume" and new.strip() != self._sent_name:
            self.send_button.description = "Send"  # a new name is a new campaign: nothing to resume
            self.status.value = _error(
                f"renamed: this is a new campaign, and Send sends every row again; rename it back to "
                f"{self._sent_name!r} to resume the stopped one"
            )

    def _spec(self) -> dict[str, Any]:
        body, mode = self.body.value, self.mode.value
        if not body.strip():
            raise ValueError("write the body template")
        if not self.sender.value.strip():
            raise ValueError("fill in From")
        return {
            "sender": self.sender.value.strip(),
            "subject": self.subject.value,
            "to_column": self.to_column.value,
            "text": body if mode == "text" else None,
            "html": body if mode == "html" else None,
            "markdown": body if mode == "markdown" else None,
            "name": self.name.value.strip() or "campaign",
            "key_column": self.key_column,
        }

    def campaign(self) -> Any:
        """The :class:`~smtpkit.merge.Campaign` the form describes (cached until an edit)."""
        if self._campaign is None:
            from .merge import Campaign

            self._campaign = Campaign(self.rows, **self._spec())
        return self._campaign

    def _row_message(self, index: int) -> Message:
        """One row's message; while editing, only that row is set up (fast on large tables)."""
        if self._campaign is not None:
            return cast(Message, self._campaign.preview(index))
        from .merge import Campaign

        return Campaign([self.rows[index]], **self._spec()).preview(0)

    def refresh_preview(self) -> None:
        try:
            self.preview.value = self._row_message(self.row.value)._repr_html_()
        except Exception as exc:  # a template error is shown, not raised
            self.preview.value = _error(f"Row {self.row.value}: {_plain(exc)}")

    # -- actions
    def send_test(self) -> Any:
        """Send the previewed row's message to the "Test to" address only (envelope)."""
        try:
            to = _split_addresses(self.test_to.value, "Test to")
            if len(to) != 1:
                raise ValueError("give one address in 'Test to'")
            from .address import header_addresses

            rcpt = header_addresses(to, "Test to")
            msg = self._row_message(self.row.value)
            account = _account_of(self.connection)
            with account.connect() as smtp:
                result = smtp.sendmail(msg._sender_spec, rcpt, msg.as_bytes())
        except Exception as exc:
            self.status.value = _error(_plain(exc))
            return exc
        self.status.value = _ok(f"test of row {self.row.value} sent to {rcpt[0]} only")
        return result

    def dry_run(self) -> Any:
        """Render and check every row; nothing is sent."""
        try:
            prepared = self.campaign().prepare()
        except Exception as exc:
            self.status.value = _error(f"Dry run: {_plain(exc)}")
            return exc
        size = sum(len(p.data) for p in prepared)
        self.status.value = _ok(
            f"dry run: all {len(prepared)} messages rendered and checked ({size / 1024:,.0f} KB); nothing sent"
        )
        return prepared

    def send(self) -> threading.Thread | None:
        """Start sending in a background thread (returns it); Stop, then Send again to resume."""
        if self._thread is not None and self._thread.is_alive():
            self.status.value = _error("a send is already running")
            return None
        account: Account | None = None
        try:
            campaign = self.campaign()
            prepared = campaign.prepare()  # every row checked before the first message leaves
            account = _account_of(self.connection)
            if account.user:
                account.require_password()  # a missing password is said here, not after a failed connect
            journal = self.journal.value.strip() or None
            if journal is not None:
                check_credential(journal, "journal path")
            claim = (str(Path(journal).resolve()) if journal else f"form-{id(self)}", campaign.name)
            with _ACTIVE_LOCK:
                if claim in _ACTIVE:  # another form (or a re-run cell) is sending this campaign now
                    raise ValueError(
                        f"campaign {campaign.name!r} with journal {journal!r} is already being sent "
                        "from another form: stop that one first"
                    )
                _ACTIVE.add(claim)
        except Exception as exc:
            self.status.value = _error(_plain(exc, account))
            return None
        self._stop = threading.Event()
        self._counts = {}
        self._base = _already_done(journal, campaign.name, [p.key for p in prepared])
        self._last_draw = 0.0
        self._sent_name = campaign.name
        self.progress.max = len(prepared)
        self.progress.value = self._base
        self.progress.bar_style = ""
        self._draw()
        self.results.value = ""
        self.send_button.disabled = True
        self.test_button.disabled = self.dry_button.disabled = True
        self.stop_button.disabled = False
        self.status.value = _busy(f"sending {len(prepared) - self._base} messages…")
        thread = threading.Thread(
            target=self._run,
            args=(campaign, prepared, account, journal, claim),
            name="smtpkit-bulk-form",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        return thread

    def _run(
        self, campaign: Any, prepared: list[Any], account: Account, journal: str | None, claim: tuple[str, str]
    ) -> None:
        try:
            rate = float(self.rate.value or 0)
            result = campaign.send(
                connect=account.connector(),
                journal=journal,
                connections=int(self.connections.value),
                rate=rate or None,
                stop=self._stop,
                progress=self._on_outcome,
                prepared=prepared,
            )
            self.result = result
            self._show_result(result, account)
        except Exception as exc:  # shown in the form
            self.status.value = _error(_plain(exc, account))
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(claim)
            self.stop_button.disabled = True
            self.send_button.disabled = self.test_button.disabled = self.dry_button.disabled = False

    def _on_outcome(self, outcome: Outcome) -> None:
        with self._lock:
            self._counts[outcome.status] = self._counts.get(outcome.status, 0) + 1
            now = time.monotonic()
            if now - self._last_draw < 0.1:  # at most ten updates a second reach the browser,
                if self._trailing is None:  # and the last of a burst always does
                    self._trailing = threading.Timer(0.1, self._draw_trailing)
                    self._trailing.daemon = True
                    self._trailing.start()
                return
            self._last_draw = now
        self._draw()

    def _draw_trailing(self) -> None:
        with self._lock:
            self._trailing = None
            self._last_draw = time.monotonic()
        self._draw()

    def _draw(self) -> None:
        with self._lock:
            counts = dict(self._counts)
        done = self._base + sum(counts.values())
        self.progress.value = min(done, self.progress.max)
        self.progress.description = f"{done} / {self.progress.max}"
        self.counts.value = _counts_html(counts)

    def _show_result(self, result: CampaignResult, account: Account | None = None) -> None:
        summary = result.summary()
        with self._lock:
            if self._trailing is not None:  # the final figures below replace any pending update
                self._trailing.cancel()
                self._trailing = None
        self.counts.value = _counts_html(summary)
        done = sum(v for k, v in summary.items() if k in ("sent", "skipped"))
        self.progress.value = min(done, self.progress.max)
        self.progress.description = f"{done} / {self.progress.max}"
        unknown = summary.get("unknown", 0)
        note = f"; {unknown} unknown (sent, but no reply came: possibly delivered, so never resent)" if unknown else ""
        if result.stopped_by:
            self.progress.bar_style = "warning"
            self.send_button.description = "Resume"
            reason = result.stopped_by
            if result.connect_error is not None:
                reason = "cannot connect: " + explain(result.connect_error, account)
            self.status.value = _error(
                f"stopped ({reason}): {done} of {len(result.outcomes)} sent{note}; "
                "press Resume to send the rest (the journal skips what was sent)"
            )
        else:
            bad = len(result.outcomes) - done
            self.progress.bar_style = "success" if not bad else "danger"
            self.send_button.description = "Send"
            line = f"finished in {result.elapsed:.1f} s: {done} of {len(result.outcomes)} sent{note}"
            self.status.value = _ok(line) if not bad else _error(line + f", {bad} not sent (see the table)")
        self.results.value = _results_table(result)

    def stop(self) -> None:
        """Ask the running send to stop (batches in flight finish; the journal stays consistent)."""
        if not self.sending:
            return  # a late click: the send is over and its status stays
        self._stop.set()
        self.stop_button.disabled = True
        self.status.value = _busy("stopping after the messages in flight…")

    def wait(self, timeout: float | None = None) -> CampaignResult | None:
        """Block until the running send ends; its result (None if still running)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
        return self.result

    @property
    def sending(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _counts_html(counts: Mapping[str, int]) -> str:
    """``sent: 10 · skipped: 2``: the live counts and the final summary alike."""
    line = " · ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return f"<div class='smtpkit-counts'>{html.escape(line)}</div>"


def _already_done(journal: str | None, campaign: str, keys: Sequence[str]) -> int:
    """How many of ``keys`` the journal will skip (sent, failed or unknown before): a resumed
    campaign reports no progress for them, so the bar starts there."""
    if not journal or not Path(journal).exists():
        return 0
    from .journal import SENDABLE, Journal

    with Journal(journal) as j:
        rows = j.rows(campaign)
    return sum(1 for k in keys if k in rows and rows[k].status not in SENDABLE)


def _plain(exc: BaseException, account: Account | None = None) -> str:
    if isinstance(exc, SMTPException | OSError):
        return explain(exc, account)
    return str(exc) or type(exc).__name__


_ACTIVE: set[tuple[str, str]] = set()  # (journal, campaign) being sent by a form in this kernel
_ACTIVE_LOCK = threading.Lock()


def _results_table(result: CampaignResult, limit: int = 200) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("row key", "status", "code", "enhanced", "reply", "recipients"))
    rows = []
    for o in result.outcomes[:limit]:
        color = {"sent": "#1a7f37", "skipped": "#57606a"}.get(o.status, "#cf222e")
        cells = [
            html.escape(o.key),
            f"<span style='color:{color}'>{html.escape(o.status)}</span>",
            html.escape(str(o.code or "")),
            html.escape(o.enhanced or ""),
            html.escape((o.text or "")[:120]),
            html.escape(", ".join(o.recipients)),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = (
        f"<p>… and {len(result.outcomes) - limit} more rows (see form.result.to_frame())</p>"
        if len(result.outcomes) > limit
        else ""
    )
    return (
        "<table class='smtpkit-results' style='border-collapse:collapse;font-size:90%'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )
