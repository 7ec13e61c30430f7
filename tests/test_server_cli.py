"""The capture server against real clients, and the command line end to end."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import Capture, aiosmtpd_server, free_port, wait_for_port

import smtpkit
from smtpkit.server import CaptureServer

MSG = b"Subject: hello\r\nFrom: a@example.org\r\nTo: b@example.org\r\n\r\nbody\r\n.dot line\r\n"


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "smtpkit", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_capture_server_with_smtplib_and_smtpkit(tmp_path: Path) -> None:
    with CaptureServer(maildir=tmp_path / "mail") as server:
        with smtplib.SMTP(server.host, server.port) as s:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        with smtpkit.SMTP(server.host, server.port) as s:
            s.ehlo()
            assert s.capabilities.pipelining and s.capabilities.chunking and s.capabilities.smtputf8
            s.sendmail("a@example.org", ["b@example.org", "c@example.org"], MSG)
            s.sendmail("jörg@example.org", ["zoë@example.org"], "Subject: ü\r\n\r\nGrüße\r\n".encode())
        first, second, third = server.messages
    assert first["Subject"] == "hello" and first.envelope.chunked is False
    assert second.envelope.chunked is True and second.envelope.rcpt_tos == ("b@example.org", "c@example.org")
    assert first.get_content() == second.get_content() == "body\r\n.dot line\r\n"
    assert third.envelope.mail_from == "jörg@example.org"
    stored = sorted((tmp_path / "mail" / "new").iterdir())
    assert len(stored) == 3
    assert stored[0].read_bytes().startswith(b"Return-Path: <a@example.org>")


def test_capture_server_starttls_and_auth() -> None:
    with CaptureServer(users={"ann": "pw"}, starttls=True) as server:
        with smtpkit.SMTP(server.host, server.port, context=server.client_context(), timeout=10) as s:
            s.starttls()
            s.login("ann", "pw")
            s.sendmail("a@example.org", ["b@example.org"], MSG)
        with smtpkit.SMTP(server.host, server.port, context=server.client_context(), timeout=10) as s:
            s.starttls()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login("ann", "wrong")
        [message] = server.messages
    assert message.envelope.tls and message.envelope.user == "ann"


@pytest.mark.skipif(
    shutil.which("swaks") is None and not os.environ.get("SMTPKIT_TEST_STRICT"), reason="swaks not installed"
)
def test_capture_server_with_swaks() -> None:
    with CaptureServer() as server:
        out = subprocess.run(
            [
                "swaks",
                "--server",
                f"{server.host}:{server.port}",
                "--from",
                "a@example.org",
                "--to",
                "b@example.org",
                "--header",
                "Subject: via swaks",
                "--body",
                "swaks body",
                "--pipeline",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        [message] = server.messages
    assert message["Subject"] == "via swaks"
    assert "swaks body" in message.get_content()


def test_pytest_plugin_fixture(smtp_capture: CaptureServer) -> None:  # used the way a user would
    with smtplib.SMTP(smtp_capture.host, smtp_capture.port) as s:
        s.sendmail("a@example.org", ["b@example.org"], MSG)
    [message] = smtp_capture.messages
    assert message["To"] == "b@example.org"


def test_cli_send_without_host_uses_the_embedded_server(tmp_path: Path) -> None:
    attachment = tmp_path / "data.csv"
    attachment.write_text("a,b\n1,2\n")
    out = run_cli(
        "send",
        "--from",
        "a@example.org",
        "--to",
        "b@example.org",
        "--subject",
        "cli test",
        "--body",
        "hello from the cli",
        "--attach",
        str(attachment),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "embedded capture server" in out.stdout
    [stored] = (tmp_path / "captured-mail" / "new").iterdir()
    content = stored.read_bytes()
    assert b"Subject: cli test" in content and b'filename="data.csv"' in content


def test_cli_send_to_a_server_with_starttls_and_login(tmp_path: Path) -> None:
    with CaptureServer(users={"ann": "s3cret"}, starttls=True) as server:
        out = run_cli(
            "send",
            "--host",
            server.host,
            "--port",
            str(server.port),
            "--security",
            "starttls",
            "--cafile",
            str(server.certificate),
            "--user",
            "ann",
            "--from",
            "a@example.org",
            "--to",
            "b@example.org",
            "--subject",
            "tls",
            "--body",
            "x",
            "--debug",
            cwd=tmp_path,
            env={"SMTPKIT_PASSWORD": "s3cret"},
        )
        assert out.returncode == 0, out.stderr
        assert "s3cret" not in out.stdout + out.stderr  # --debug transcript is redacted
        assert "[redacted]" in out.stderr
        [message] = server.messages
    assert message.envelope.user == "ann" and message.envelope.tls


def test_cli_partial_failure_and_error_exit_codes(tmp_path: Path) -> None:
    capture = Capture(refuse={"bad@example.org"})
    with aiosmtpd_server(capture) as (_, port):
        out = run_cli(
            "send",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--security",
            "none",
            "--from",
            "a@example.org",
            "--to",
            "ok@example.org",
            "--to",
            "bad@example.org",
            "--subject",
            "s",
            "--body",
            "b",
            cwd=tmp_path,
        )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "1 of 2" in out.stdout
    closed = free_port()
    out = run_cli(
        "send",
        "--host",
        "127.0.0.1",
        "--port",
        str(closed),
        "--security",
        "none",
        "--from",
        "a@example.org",
        "--to",
        "b@example.org",
        "--subject",
        "s",
        "--body",
        "b",
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "Connection refused" in out.stderr
    out = run_cli(
        "send",
        "--from",
        "a@example.org",
        "--to",
        "x@y.org\r\nRCPT TO:<e@x>",
        "--subject",
        "s",
        "--body",
        "b",
        cwd=tmp_path,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_cli_password_never_from_the_command_line(tmp_path: Path) -> None:
    out = run_cli(
        "send",
        "--host",
        "127.0.0.1",
        "--user",
        "ann",
        "--password",
        "x",
        "--from",
        "a@example.org",
        "--to",
        "b@example.org",
        "--subject",
        "s",
        "--body",
        "b",
        cwd=tmp_path,
    )
    assert out.returncode == 2  # there is no --password option


@pytest.mark.parametrize("command", [[], ["send"], ["serve"], ["demo"]])
def test_cli_help(command: list[str], tmp_path: Path) -> None:
    out = run_cli(*command, "--help", cwd=tmp_path)
    assert out.returncode == 0 and "usage: smtpkit" in out.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM kills a Windows process outright: no clean exit")
def test_cli_serve_prints_one_line_per_message(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtpkit", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.sendmail("a@example.org", ["b@example.org"], MSG)
            s.sendmail("c@example.org", ["d@example.org"], MSG)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    lines = [line for line in stdout.splitlines() if "->" in line]
    assert len(lines) == 2 and "a@example.org -> b@example.org" in lines[0]
    assert len(list((tmp_path / "captured-mail" / "new").iterdir())) == 2


def test_cli_demo(tmp_path: Path) -> None:
    out = run_cli("demo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "12/12 sent" in out.stdout and "messages/s" in out.stdout
    stored = list((tmp_path / "captured-mail" / "new").iterdir())
    assert len(stored) == 12
    body = stored[0].read_bytes()
    assert b"image/svg+xml" in body and b"Content-ID" in body and b"<table" in body


def test_cli_merge_dry_run_send_rerun_and_results(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "id,email,name\n1,ada@example.org,Ada\n2,bad@example.org,Bob\n3,cy@example.org,Cy\n"
    )
    (tmp_path / "body.txt").write_text("Subject: Hello {{ name }}\n\nDear {{ name }},\nhi.\n")
    common = ["merge", "rows.csv", "--template", "body.txt", "--from", "r@example.org", "--key-column", "id", "--quiet"]
    out = run_cli(*common, "--dry-run", "outbox", cwd=tmp_path)
    assert out.returncode == 0 and sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        "1.eml",
        "2.eml",
        "3.eml",
    ]
    capture = Capture(refuse={"bad@example.org"}, pipelining=True)
    with aiosmtpd_server(capture) as (_, port):
        args = [*common, "--host", "127.0.0.1", "--port", str(port), "--security", "none", "--journal", "j.sqlite"]
        out = run_cli(*args, "--results", "res.csv", cwd=tmp_path)
        assert out.returncode == 3, out.stdout + out.stderr  # a row failed
        assert "failed: 1" in out.stdout and "sent: 2" in out.stdout
        rerun = run_cli(*args, cwd=tmp_path)
        assert "failed: 1, skipped: 2" in rerun.stdout  # nothing resent; the 5xx stays failed
    assert sorted(m.rcpt_tos[0] for m in capture.messages) == ["ada@example.org", "cy@example.org"]
    results = (tmp_path / "res.csv").read_text()
    assert "bad@example.org" not in results.split("\n")[0] and ",failed,550," in results
