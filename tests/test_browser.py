"""The forms in a real browser: headless Chromium (Debian's) driven by Playwright.

JupyterLab and Voila each serve a copy of notebooks/forms.ipynb from a temporary folder,
with the SMTPKIT_* variables pointing the forms at a capture server (with AUTH) run by
this test. The tests type a password, test the connection, compose and send, then start a
bulk send, press Stop and Resume, and check what the capture server received. Screenshots
of each form go to $SMTPKIT_SCREENSHOTS (the README's come from ``docs/``).

Needs: ``apt-get install chromium`` and ``pip install playwright jupyterlab voila`` (in the
test extra). They skip when those are missing, unless SMTPKIT_TEST_STRICT is set (.ci/run sets it):
then they fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smtpkit.server import CaptureServer

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "forms.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-" + secrets.token_hex(8)  # typed into the form; must never reach a file
ROWS = 12  # smtpkit/data/sample.csv

pytestmark = [pytest.mark.timeout(240), pytest.mark.browser]


def _need() -> None:
    missing = [m for m in ("playwright", "jupyterlab", "voila", "ipywidgets", "pandas") if not _importable(m)]
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("SMTPKIT_TEST_STRICT"):
            pytest.fail(f"browser tests need: {missing}")
        pytest.skip(f"browser tests need: {missing}")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(ready: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready in {timeout} s")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _port_open(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), 1).close()
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureServer]:
    _need()
    with CaptureServer(maildir=tmp_path_factory.mktemp("browser-mail"), users={"ann": PASSWORD}) as server:
        yield server


def _server_env(capture: CaptureServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPKIT_") and k != "JUPYTER_PLATFORM_DIRS"}
    env.update(
        SMTPKIT_HOST=capture.host,
        SMTPKIT_PORT=str(capture.port),
        SMTPKIT_SECURITY="none",  # loopback: login without TLS is allowed
        SMTPKIT_USER="ann",  # no SMTPKIT_PASSWORD: it is typed into the form
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        NETRC=str(home / "no-netrc"),
    )
    return env


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 2600})
    # nothing but this machine: the pages must not wait on a CDN
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def lab(capture: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("lab-home")
    notebooks = tmp_path_factory.mktemp("lab-notebooks")
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # save widget state with the notebook (off by default): the saved file must still hold no password
    widgets_settings = home / "settings" / "@jupyter-widgets" / "jupyterlab-manager"
    widgets_settings.mkdir(parents=True)
    (widgets_settings / "plugin.jupyterlab-settings").write_text('{"saveState": true}')
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}", "--ServerApp.port_retries=0",
        "--LabApp.news_url=None", "--allow-root",
    ]  # fmt: skip
    log = open(home / "lab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=_server_env(capture, home), stdout=log, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _http_ok(f"{base}/api/status?token={token}"), "JupyterLab", proc)
        yield {"base": base, "token": token, "dir": notebooks}
    finally:
        _stop(proc)
        log.close()


def _screenshot(locator: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SMTPKIT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    locator.screenshot(path=str(path))
    assert path.stat().st_size > 5_000  # a real picture, not an empty box
    return path


def _open_lab_notebook(page: Any, lab: dict[str, Any]) -> Any:
    from playwright.sync_api import expect

    page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?reset&token={lab['token']}")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Python 3 (ipykernel) | Idle", timeout=90_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    out = page.locator(".jp-OutputArea-output")
    expect(out.locator(".smtpkit-bulk")).to_be_visible(timeout=60_000)
    return out


def _delete_sessions(lab: dict[str, Any]) -> None:
    url = f"{lab['base']}/api/sessions?token={lab['token']}"
    with urllib.request.urlopen(url, timeout=10) as response:
        sessions = json.load(response)
    for session in sessions:
        request = urllib.request.Request(
            f"{lab['base']}/api/sessions/{session['id']}?token={lab['token']}", method="DELETE"
        )
        urllib.request.urlopen(request, timeout=10).close()


def _connect_and_compose(scope: Any, capture: CaptureServer, page: Any, tmp_path: Path, prefix: str) -> None:
    from playwright.sync_api import expect

    conn = scope.locator(".smtpkit-connection")
    password = conn.get_by_label("Password")
    password.fill(PASSWORD)
    password.press("Tab")  # leaving the box sends the value to the kernel, which takes it and empties the box
    expect(password).to_have_value("", timeout=15_000)
    expect(conn).to_contain_text("kept in this kernel's memory only")
    conn.locator(".jupyter-button", has_text="Test connection").click()
    expect(conn.locator(".smtpkit-check")).to_contain_text("Connection works", timeout=30_000)
    expect(conn.locator(".smtpkit-check")).to_contain_text("logged in as ann")
    _screenshot(conn, f"{prefix}-connection.png", tmp_path)

    compose = scope.locator(".smtpkit-compose")
    compose.get_by_label("To").fill('Grace Hopper <grace@example.org>, "Doe, Jane" <jane@example.org>')
    compose.get_by_label("Subject").fill(f"{prefix}: weekly numbers")
    compose.get_by_label("Subject").press("Tab")
    expect(compose.locator("iframe")).to_be_visible()
    compose.locator(".jupyter-button", has_text="Send").click()
    expect(compose.locator(".smtpkit-ok")).to_contain_text("sent to 2 recipient(s)", timeout=30_000)
    _screenshot(compose, f"{prefix}-compose.png", tmp_path)
    [msg] = [m for m in capture.messages if m["Subject"] == f"{prefix}: weekly numbers"]
    assert msg.envelope.rcpt_tos == ("grace@example.org", "jane@example.org")
    assert msg.envelope.user == "ann"  # logged in with the typed password
    assert msg["To"] == 'Grace Hopper <grace@example.org>, "Doe, Jane" <jane@example.org>'
    assert {p.get_content_type() for p in msg.walk()} >= {"text/plain", "text/html"}  # Markdown body


def _bulk_stop_and_resume(scope: Any, capture: CaptureServer, tmp_path: Path, prefix: str) -> None:
    from playwright.sync_api import expect

    bulk = scope.locator(".smtpkit-bulk")
    bulk.get_by_label("Subject").fill(prefix + ": your numbers, {{ name }}")
    bulk.get_by_label("Max msg/s").fill("2")
    bulk.get_by_label("Max msg/s").press("Tab")
    expect(bulk.locator("iframe")).to_be_visible()
    before = len(capture.messages)
    send = bulk.locator(".jupyter-button", has_text=re.compile(r"^\s*Send\s*$"))
    send.click()
    try:  # a click lost by the page (seen once in CI, not reproduced) is retried once
        expect(send).to_be_disabled(timeout=10_000)
    except AssertionError:
        if send.is_enabled():
            send.click()
    expect(bulk.locator(".smtpkit-counts")).to_contain_text("sent:", timeout=30_000)
    bulk.locator(".jupyter-button", has_text="Stop").click()  # the kernel is free while it sends
    expect(bulk.locator(".smtpkit-error")).to_contain_text("stopped", timeout=30_000)
    first = len(capture.messages) - before
    assert 0 < first < ROWS
    _screenshot(bulk, f"{prefix}-bulk-stopped.png", tmp_path)
    bulk.locator(".jupyter-button", has_text="Resume").click()
    expect(bulk.locator(".smtpkit-ok")).to_contain_text(f"{ROWS} of {ROWS} sent", timeout=60_000)
    expect(bulk.locator(".smtpkit-results")).to_contain_text("skipped")
    _screenshot(bulk, f"{prefix}-bulk.png", tmp_path)
    subjects = [str(m["Subject"]) for m in capture.messages if str(m["Subject"]).startswith(prefix + ": your")]
    assert len(subjects) == ROWS and len(set(subjects)) == ROWS  # every row once: none twice, none lost


def test_jupyterlab_forms(lab: dict[str, Any], capture: CaptureServer, page: Any, tmp_path: Path) -> None:
    out = _open_lab_notebook(page, lab)
    try:
        _connect_and_compose(out, capture, page, tmp_path, "lab")
        _bulk_stop_and_resume(out, capture, tmp_path, "lab")
        path = lab["dir"] / NOTEBOOK.name
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while "application/vnd.jupyter.widget-state+json" not in path.read_text():
            assert time.monotonic() < deadline, "the notebook was not saved with its widget state"
            time.sleep(0.2)
        saved = json.loads(path.read_text())
        assert saved["metadata"]["widgets"]  # widget state saved ...
        assert PASSWORD not in path.read_text()  # ... without the password
        leaked = [p for p in lab["dir"].rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
        assert leaked == []
    finally:
        _delete_sessions(lab)


@pytest.fixture(scope="module")
def voila(capture: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("voila-home")
    notebooks = tmp_path_factory.mktemp("voila-notebooks")
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "voila", str(notebooks / NOTEBOOK.name), "--no-browser", "--Voila.ip=127.0.0.1",
        f"--port={port}", f"--token={token}",
        # cull only kernels idle for minutes: a short cull (seconds) can kill the page's kernel
        # between two steps on a loaded machine, and the clicks then go nowhere
        "--MappingKernelManager.cull_interval=60", "--MappingKernelManager.cull_idle_timeout=600",
    ]  # fmt: skip
    log = open(home / "voila.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, env=_server_env(capture, home), cwd=notebooks, stdout=log, stderr=log, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _port_open(port), "Voila", proc)  # no status API; its page would start a kernel
        yield {"base": base, "token": token, "dir": notebooks}
    finally:
        _stop(proc)
        log.close()


def test_voila_forms(voila: dict[str, Any], capture: CaptureServer, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{voila['base']}/?token={voila['token']}")
    expect(page.locator(".smtpkit-bulk")).to_be_visible(timeout=90_000)
    body = page.locator("body")
    _connect_and_compose(body, capture, page, tmp_path, "voila")
    _bulk_stop_and_resume(body, capture, tmp_path, "voila")
    leaked = [p for p in voila["dir"].rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
