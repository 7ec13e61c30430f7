"""The notebook forms, in process: set values, click, check what a real capture server got.

ipywidgets 8 lets a test drive a form without a browser: child ``.value``s are set and
``button.click()`` runs the handlers, exactly as a click in JupyterLab would. The browser
itself is covered by tests/test_browser.py.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("SMTPKIT_TEST_STRICT"):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("pandas")

import ipywidgets
import pandas as pd

from smtpkit.account import Account, find_password
from smtpkit.server import CaptureServer
from smtpkit.widgets import BulkForm, ComposeForm, ConnectionForm

SECRET = "correct-horse-battery-staple-7Q"


def all_widget_state() -> str:
    """Every live widget's state, as the notebook would save it."""
    return json.dumps(ipywidgets.Widget.get_manager_state(drop_defaults=False), default=str)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with CaptureServer(maildir=tmp_path / "mail", users={"ann": SECRET}, starttls=True) as srv:
        yield srv


@pytest.fixture
def plain_server(tmp_path: Path) -> Any:
    with CaptureServer(maildir=tmp_path / "mail") as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SMTPKIT_HOST", "SMTPKIT_PORT", "SMTPKIT_SECURITY", "SMTPKIT_USER", "SMTPKIT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")


def tls_form(server: CaptureServer) -> ConnectionForm:
    return ConnectionForm(Account(server.host, server.port, "starttls", context=server.client_context()))


def plain_form(server: CaptureServer) -> ConnectionForm:
    return ConnectionForm(Account(server.host, server.port, "none"))


# -- connection ---------------------------------------------------------------------------


def test_presets_fill_the_form_and_plaintext_shows_a_warning() -> None:
    form = ConnectionForm(preset="gmail")
    assert (form.host.value, form.port.value, form.security.value) == ("smtp.gmail.com", 587, "starttls")
    assert "app password" in form.note.value
    assert form.warning.value == ""
    form.preset.value = "ses"
    assert form.host.value.startswith("email-smtp.") and form.security.value == "starttls"
    form.preset.value = "office365"
    assert form.host.value == "smtp.office365.com"
    form.preset.value = "capture"
    assert (form.host.value, form.port.value, form.security.value) == ("127.0.0.1", 8025, "none")
    assert "No encryption" in form.warning.value
    form.security.value = "ssl"
    assert form.warning.value == ""


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPKIT_HOST", "mail.example.net")
    monkeypatch.setenv("SMTPKIT_PORT", "2525")
    monkeypatch.setenv("SMTPKIT_SECURITY", "ssl")
    monkeypatch.setenv("SMTPKIT_USER", "bob")
    monkeypatch.setenv("SMTPKIT_PASSWORD", SECRET)
    form = ConnectionForm()
    assert (form.host.value, form.port.value, form.security.value, form.user.value) == (
        "mail.example.net",
        2525,
        "ssl",
        "bob",
    )
    assert "SMTPKIT_PASSWORD environment variable" in form.note.value
    assert form.account().resolve_password()[0] == SECRET
    assert SECRET not in repr(form) and SECRET not in repr(form.account())
    assert SECRET not in all_widget_state()


def test_password_from_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine smtp.example.org login bob password {SECRET}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert find_password("smtp.example.org", "bob") == (SECRET, str(netrc))
    assert find_password("smtp.example.org", "someone-else") == (None, "")
    form = ConnectionForm(Account("smtp.example.org", 587, "starttls", user="bob"))
    assert str(netrc) in form.note.value


def test_password_from_the_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("SMTPKIT_TEST_STRICT"):  # strict (.ci/run): a missing keyring fails
        pytest.importorskip("keyring")
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        stored = {("smtpkit", "bob@smtp.example.org"): SECRET}

        def get_password(self, service: str, username: str) -> str | None:
            return self.stored.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.stored[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.stored.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        assert find_password("smtp.example.org", "bob") == (SECRET, "the system keyring")
        form = ConnectionForm(Account("smtp.example.org", 587, "starttls", user="bob"))
        assert "the system keyring" in form.note.value
        assert SECRET not in all_widget_state() and SECRET not in repr(form.account())
        monkeypatch.setenv("SMTPKIT_PASSWORD", "from-env")  # the environment comes first
        assert find_password("smtp.example.org", "bob")[1] == "the SMTPKIT_PASSWORD environment variable"
    finally:
        keyring.set_keyring(previous)


def test_typed_password_leaves_the_widget_state_at_once(server: CaptureServer) -> None:
    form = tls_form(server)
    form.user.value = "ann"
    form.password.value = SECRET  # what the browser sends when the box loses focus
    assert form.password.value == ""
    assert SECRET not in all_widget_state()
    assert "kept in this kernel's memory only" in form.note.value
    assert SECRET not in repr(form) and SECRET not in repr(form.account())
    check = form.test()
    assert check.passed, str(check)
    assert "logged in as ann" in form.status.value
    assert "TLSv1" in form.status.value and "PIPELINING" in form.status.value
    assert SECRET not in form.status.value and SECRET not in all_widget_state()
    # a password belongs to one user at one host: changing either forgets it
    form.host.value = "localhost"
    assert form._secret is None
    assert form.account().resolve_password() == (None, "")


def test_test_connection_button_leaves_the_kernel_free(server: CaptureServer) -> None:
    form = tls_form(server)
    thread = form.test_in_background()  # what the button does
    assert isinstance(thread, threading.Thread)
    _wait_for(lambda: "Connection works" in form.status.value)
    _wait_for(lambda: not form.test_button.disabled)


def test_connection_problems_in_plain_words(server: CaptureServer, tmp_path: Path) -> None:
    form = tls_form(server)
    form.user.value = "ann"
    form.password.value = "wrong"
    assert not form.test()
    assert "refused the login (535" in form.status.value
    # no trust for the self-signed certificate: verification is on by default
    untrusted = ConnectionForm(Account(server.host, server.port, "starttls"))
    assert not untrusted.test()
    assert "certificate could not be verified" in untrusted.status.value
    # implicit TLS against a STARTTLS port
    wrong_mode = ConnectionForm(Account(server.host, server.port, "ssl", timeout=5))
    assert not wrong_mode.test()
    assert "TLS" in wrong_mode.status.value
    # nothing listening
    closed = ConnectionForm(Account("127.0.0.1", _closed_port(), "none"))
    assert not closed.test()
    assert "Nothing is listening" in closed.status.value
    # bad input is an error in the form, not an exception
    form.host.value = "bad\r\nhost"
    assert form.test() is None
    assert "control character" in form.status.value


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_capture_preset_starts_an_embedded_server_when_none_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    form = ConnectionForm(Account.preset("capture", port=port))
    assert form.preset.value == "custom"  # the port differs from the preset's
    account = Account.preset("capture", port=port)
    check = account.check()
    assert check.passed, str(check)
    from smtpkit.server import _EMBEDDED

    server = _EMBEDDED.pop(("127.0.0.1", port))
    try:
        assert server.maildir_path == Path("captured-mail")
    finally:
        server.stop()


# -- compose ------------------------------------------------------------------------------


def test_compose_sends_what_the_form_says(server: CaptureServer) -> None:
    connection = tls_form(server)
    form = ComposeForm(connection, show_connection=True)
    assert isinstance(form.children[0], ipywidgets.Accordion)
    form.sender.value = "Ann <ann@example.org>"
    form.to.value = '"Doe, Jane" <jane@example.org>, bob@example.org'
    form.cc.value = "carol@example.org"
    form.bcc.value = "archive@example.org"
    form.subject.value = "Quarterly numbers"
    form.mode.value = "markdown"
    form.body.value = "Hello **team**,\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    form.attachments.value = (
        {
            "name": "notes.txt",
            "type": "text/plain",
            "size": 5,
            "content": memoryview(b"hello"),
            "last_modified": datetime.now(UTC),
        },
    )
    assert html.escape("<strong>team</strong>") in form.preview.value  # inside the iframe's srcdoc
    assert "notes.txt" in form.preview.value
    form.send_button.click()
    assert "sent to 4 recipient(s)" in form.status.value, form.status.value
    assert "jane@example.org" in form.result.value
    [msg] = server.messages
    assert msg.envelope.rcpt_tos == ("jane@example.org", "bob@example.org", "carol@example.org", "archive@example.org")
    assert msg["Bcc"] is None and "archive@example.org" not in msg.as_string()
    assert msg["To"] == '"Doe, Jane" <jane@example.org>, bob@example.org'
    assert msg.envelope.tls
    types = [p.get_content_type() for p in msg.walk()]
    assert "text/plain" in types and "text/html" in types
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "notes.txt" and attachment.get_content() == "hello"


def test_compose_errors_stay_in_the_form_and_send_nothing(plain_server: CaptureServer) -> None:
    form = ComposeForm(plain_form(plain_server), sender="ann@example.org", to="bob@example.org", body="hi")
    form.subject.value = "hello\r\nBcc: victim@example.org"
    assert "line break or control character" in form.preview.value
    form.send_button.click()
    assert "line break or control character" in form.status.value
    form.subject.value = "fine"
    form.to.value = "bob@example.org\r\nRCPT TO:<victim@example.org>"
    form.send_button.click()
    assert "To header contains a line break" in form.status.value  # never split into two recipients
    form.to.value = ""
    form.send_button.click()
    assert "at least one recipient" in form.status.value
    form.to.value = "bob@example.org"
    form.sender.value = ""
    form.send_button.click()
    assert "fill in From" in form.status.value
    assert plain_server.messages == []
    # a server that is gone: plain words, no traceback
    form.sender.value = "ann@example.org"
    dead = ComposeForm(
        ConnectionForm(Account("127.0.0.1", _closed_port(), "none")), sender="a@example.org", to="b@example.org"
    )
    dead.send_button.click()
    assert "Nothing is listening" in dead.status.value and "Traceback" not in dead.status.value
    # a message send works once the input is fixed
    form.send_button.click()
    assert "sent to 1 recipient(s)" in form.status.value
    assert len(plain_server.messages) == 1


def test_compose_preview_runs_no_script_from_the_body(plain_server: CaptureServer) -> None:
    form = ComposeForm(plain_form(plain_server), sender="a@example.org", to="b@example.org", mode="html")
    form.body.value = "<p>hi</p><script>alert(1)</script>"
    assert '<iframe sandbox=""' in form.preview.value
    assert "<script>" not in form.preview.value.split("srcdoc=")[0]


# -- bulk ---------------------------------------------------------------------------------


def people(n: int = 12) -> Any:
    return pd.DataFrame(
        {
            "name": [f"Person {i}" for i in range(n)],
            "email": [f"p{i}@example.org" for i in range(n)],
            "tickets": list(range(n)),
        }
    )


def test_bulk_preview_follows_the_slider_and_shows_template_errors(plain_server: CaptureServer, tmp_path: Path) -> None:
    form = BulkForm(
        people(),
        plain_form(plain_server),
        sender="Reports <reports@example.org>",
        subject="Hi {{ name }}",
        body="You closed {{ tickets }} tickets.",
        journal=str(tmp_path / "j.sqlite"),
    )
    assert form.to_column.value == "email"
    assert "You closed 0 tickets." in form.preview.value
    form.row.value = 7
    assert "You closed 7 tickets." in form.preview.value and "p7@example.org" in form.preview.value
    form.body.value = "Hello {{ nmae }}"
    assert "nmae" in form.preview.value and "smtpkit-error" in form.preview.value
    form.dry_button.click()
    assert "nmae" in form.status.value
    form.body.value = "Hello {{ name }}"
    form.dry_button.click()
    assert "all 12 messages rendered and checked" in form.status.value
    assert plain_server.messages == []


def test_bulk_test_send_goes_to_me_only(plain_server: CaptureServer, tmp_path: Path) -> None:
    form = BulkForm(people(), plain_form(plain_server), sender="r@example.org", subject="Hi {{ name }}", body="x")
    form.row.value = 3
    form.test_to.value = "me@example.org"
    form.test_button.click()
    assert "test of row 3 sent to me@example.org only" in form.status.value
    [msg] = plain_server.messages
    assert msg.envelope.rcpt_tos == ("me@example.org",)
    assert msg["Subject"] == "Hi Person 3"


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the form")
        time.sleep(0.02)


def test_bulk_send_stop_and_resume_sends_every_row_once(plain_server: CaptureServer, tmp_path: Path) -> None:
    n = 24
    form = BulkForm(
        people(n),
        plain_form(plain_server),
        sender="r@example.org",
        subject="Hi {{ name }}",
        body="Hello {{ name }}",
        journal=str(tmp_path / "journal.sqlite"),
        rate=8,
        connections=2,
    )
    thread = form.send_button.click() or form._thread
    assert thread is not None
    assert form.sending and not form.stop_button.disabled and form.send_button.disabled
    _wait_for(lambda: form.progress.value >= 2)  # the kernel is free while it sends
    form.stop_button.click()
    result = form.wait(20)
    assert result is not None and result.stopped_by == "stop requested"
    first = len(plain_server.messages)
    assert 2 <= first < n
    assert result.summary()["sent"] == first
    assert form.send_button.description == "Resume" and "stopped" in form.status.value
    form.rate.value = 0
    form.send_button.click()
    result = form.wait(30)
    assert result is not None and result.stopped_by is None
    assert result.summary() == {"sent": n - first, "skipped": first}
    assert form.progress.value == n and form.progress.bar_style == "success"
    assert "finished" in form.status.value and form.send_button.description == "Send"
    subjects = [m["Subject"] for m in plain_server.messages]
    assert sorted(subjects) == sorted(f"Hi Person {i}" for i in range(n))  # every row exactly once
    assert "p23@example.org" in form.results.value and "skipped" in form.results.value


def test_bulk_errors_are_shown_not_raised(tmp_path: Path) -> None:
    form = BulkForm(
        people(3),
        ConnectionForm(Account("127.0.0.1", _closed_port(), "none", timeout=2)),
        sender="r@example.org",
        subject="Hi",
        body="x",
        journal=str(tmp_path / "j.sqlite"),
    )
    form.send_button.click()
    result = form.wait(60)
    assert result is not None and result.stopped_by and "cannot connect" in result.stopped_by
    assert "smtpkit-error" in form.status.value
    assert set(result.summary()) == {"not_attempted"}
    form.sender.value = ""
    form.send_button.click()
    assert "fill in From" in form.status.value
    with pytest.raises(ValueError, match="no rows"):
        BulkForm(people(0), sender="r@example.org")


# -- review findings: each once a bug --------------------------------------------------------


def test_stored_passwords_go_only_to_their_own_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMTPKIT_HOST", "mail.example.net")
    monkeypatch.setenv("SMTPKIT_USER", "bob")
    monkeypatch.setenv("SMTPKIT_PASSWORD", SECRET)
    assert find_password("mail.example.net", "bob")[0] == SECRET
    assert find_password("attacker.example", "bob") == (None, "")
    assert find_password("mail.example.net", "mallory") == (None, "")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"default login bob password {SECRET}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("SMTPKIT_PASSWORD")
    assert find_password("attacker.example", "bob") == (None, "")  # netrc's "default" is never used
    # the form: switching to another provider does not carry the password along
    form = ConnectionForm()
    form.password.value = SECRET
    form.preset.value = "gmail"
    assert form.account().resolve_password() == (None, "")


def test_password_is_not_echoed_back_to_the_browser() -> None:
    form = ConnectionForm(preset="gmail")
    sent: list[Any] = []

    class Comm:  # records what the kernel would send to the browser
        kernel = object()
        comm_id = "test"

        def send(self, data: Any = None, buffers: Any = None, **_: Any) -> None:
            sent.append(data)

        def on_msg(self, *_: Any) -> None:
            pass

        def close(self, *_: Any, **__: Any) -> None:
            pass

    form.password.comm = Comm()
    form.password.set_state({"value": SECRET})  # what a browser's update does
    assert form._secret == SECRET and form.password.value == ""
    assert sent and SECRET not in json.dumps(sent)


def test_editing_a_preset_makes_it_another_server() -> None:
    form = ConnectionForm(preset="capture")
    assert form.preset.value == "capture" and form.account().start_capture
    form.host.value = "smtp.remote.example"
    assert form.preset.value == "custom"
    assert not form.account().start_capture and "Nothing leaves this machine" not in form.note.value
    form.preset.value = "office365"
    assert form.preset.value == "office365" and form.host.value == "smtp.office365.com"


def test_compose_double_click_sends_once(plain_server: CaptureServer) -> None:
    form = ComposeForm(plain_form(plain_server), sender="a@example.org", to="b@example.org", body="hi")
    form.send_button.click()
    form.send_button.click()  # queued behind the first: arrives when the button is disabled
    assert len(plain_server.messages) == 1
    assert form.send_button.disabled and "edit to send again" in form.send_button.description
    form.subject.value = "second"
    form.send_button.click()
    assert len(plain_server.messages) == 2


def test_bulk_missing_or_wrong_password_stops_at_once(
    server: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smtpkit.client

    logins: list[str] = []
    original = smtpkit.client.SMTP.login

    def counting(self: Any, user: str, password: str, **kwargs: Any) -> Any:
        logins.append(user)
        return original(self, user, password, **kwargs)

    monkeypatch.setattr(smtpkit.client.SMTP, "login", counting)
    connection = tls_form(server)
    connection.user.value = "ann"
    form = BulkForm(people(4), connection, sender="r@example.org", subject="Hi", body="x", journal=str(tmp_path / "j"))
    assert form.send() is None  # no password anywhere: said before anything starts
    assert "no password for ann" in form.status.value and logins == []
    connection.password.value = "wrong"
    form.send_button.click()
    result = form.wait(30)
    assert result is not None and result.stopped_by and result.connect_error is not None
    assert 1 <= len(logins) <= form.connections.value  # at most once per connection, never retried
    assert "refused the login (535" in form.status.value
    assert set(result.summary()) == {"not_attempted"} and server.messages == []


def test_one_campaign_at_a_time_and_renaming_is_a_new_campaign(plain_server: CaptureServer, tmp_path: Path) -> None:
    journal = str(tmp_path / "shared.sqlite")
    kwargs: dict[str, Any] = {"sender": "r@example.org", "subject": "Hi {{ name }}", "body": "x", "journal": journal}
    first = BulkForm(people(20), plain_form(plain_server), rate=10, **kwargs)
    second = BulkForm(people(20), plain_form(plain_server), **kwargs)  # e.g. the cell run again
    assert first.send() is not None
    assert second.send() is None and "already being sent" in second.status.value
    _wait_for(lambda: first.progress.value >= 2)
    first.stop_button.click()
    first.wait(20)
    sent = len(plain_server.messages)
    assert 2 <= sent < 20 and first.send_button.description == "Resume"
    first.stop_button.click()  # a late click changes nothing
    assert "stopped" in first.status.value
    first.name.value = "q4-final"
    assert first.send_button.description == "Send" and "new campaign" in first.status.value
    first.name.value = "campaign"
    second.send_button.click()  # the first is stopped: the second may resume it
    result = second.wait(30)
    assert result is not None and result.summary() == {"sent": 20 - sent, "skipped": sent}
    assert len(plain_server.messages) == 20
