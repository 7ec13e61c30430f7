"""The blocking client's busy-wait for quick replies (``SMTP(spin=...)``).

A real raw server on 127.0.0.1 answers NOOPs after a set delay; the client thread's CPU
time (``time.thread_time``) shows whether it busy-waited or slept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import Conn, Scripted

import smtpkit
from smtpkit import client as client_module
from smtpkit.server import CaptureServer

NOOPS = 10


def delayed_noops(delay: float, count: int = NOOPS + 2) -> Callable[[Conn], None]:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        for _ in range(count):
            conn.line()
            time.sleep(delay)
            conn.send(b"250 2.0.0 OK\r\n")
        conn.line()  # QUIT
        conn.send(b"221 bye\r\n")

    return script


def noop_cpu(port: int, spin: float | None, warm: int = 2) -> tuple[float, float]:
    """CPU and wall seconds the client thread spent on NOOPS NOOPs after ``warm`` others."""
    with smtpkit.SMTP("127.0.0.1", port, local_hostname="client.example", spin=spin, timeout=10) as s:
        s.ehlo()
        for _ in range(warm):
            assert s.noop()[0] == 250
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(NOOPS):
            assert s.noop() == (250, b"2.0.0 OK")
        return time.thread_time() - cpu, time.perf_counter() - wall


def test_default_spin() -> None:
    s = smtpkit.SMTP()
    assert s.spin == client_module.DEFAULT_SPIN
    assert 0.0 <= client_module.DEFAULT_SPIN <= 0.01
    assert smtpkit.SMTP(spin=0).spin == 0


def test_a_slow_server_gets_no_busy_waiting() -> None:
    # replies after 20 ms with a 5 ms spin: the first waits show the server is slow, and
    # from then on the client sleeps (without the adaptation: 10 x 5 ms of CPU at least)
    with Scripted(delayed_noops(0.02)) as server:
        cpu, wall = noop_cpu(server.port, spin=0.005)
    assert wall >= NOOPS * 0.02
    assert cpu < NOOPS * 0.005 / 2, f"{cpu * 1000:.1f} ms of CPU for {NOOPS} slow replies"


def test_spin_zero_never_busy_waits() -> None:
    with Scripted(delayed_noops(0.01, count=NOOPS)) as server:
        cpu, _ = noop_cpu(server.port, spin=0.0, warm=0)
    assert cpu < NOOPS * 0.01 / 2


@pytest.mark.skipif(not client_module._POLL, reason="the busy-wait needs poll() and MSG_DONTWAIT (POSIX)")
def test_a_quick_server_is_waited_for_without_sleeping() -> None:
    # replies after 2 ms, within a 50 ms spin: the thread polls instead of sleeping, so
    # its CPU time follows the time it waited (a sleeping thread would use almost none)
    with Scripted(delayed_noops(0.002)) as server:
        cpu, wall = noop_cpu(server.port, spin=0.05)
    assert wall >= NOOPS * 0.002
    assert cpu > NOOPS * 0.002 * 0.25, f"{cpu * 1000:.1f} ms of CPU in {wall * 1000:.1f} ms"


def test_spin_never_outlasts_the_timeout() -> None:
    def silent(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        conn.line()  # NOOP: never answered
        conn.rest(timeout=2)

    with Scripted(silent) as server:
        s = smtpkit.SMTP("127.0.0.1", server.port, local_hostname="client.example", spin=5.0, timeout=0.3)
        s.ehlo()
        started = time.monotonic()
        with pytest.raises(smtpkit.SMTPTimeoutError):
            s.noop()
        assert time.monotonic() - started < 2.0
        assert s.sock is None  # closed: the reply may still come and must not be misread


def test_no_busy_waiting_for_a_capture_server_in_this_process(tmp_path: Path) -> None:
    # Its replies come from a thread of this process, which needs the GIL a spinning
    # client would keep taking (bench: no faster, 40% more CPU), so the client sleeps.
    # (CPU time cannot show it here: a thread waiting for the GIL uses none either.)
    server = CaptureServer("127.0.0.1", 0, tmp_path).start()
    try:
        assert server.port in client_module.IN_PROCESS_PORTS
        with smtpkit.SMTP("127.0.0.1", server.port, local_hostname="client.example", spin=0.05) as s:
            assert s._spin_ok is False
            assert s.noop()[0] == 250
        with Scripted(delayed_noops(0.0, count=0)) as other:  # a server the client spins for
            with smtpkit.SMTP("127.0.0.1", other.port, local_hostname="client.example", spin=0.05) as s:
                s.ehlo()
                assert s._spin_ok is True
    finally:
        server.stop()
    assert server.port not in client_module.IN_PROCESS_PORTS
