"""Both drivers behind one blocking interface, so behaviour tests run against each.

``blocking`` is ``smtpkit.SMTP`` itself. ``asyncio`` runs ``smtpkit.AsyncSMTP`` on an
event loop in a background thread; every coroutine method becomes a blocking call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import smtpkit
from smtpkit.aio import AsyncSMTP


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class AsyncAdapter:
    """A blocking facade over AsyncSMTP (the test's view of the asyncio driver)."""

    def __init__(self, runner: _Loop, host: str, port: int, **kwargs: Any) -> None:
        self._runner = runner
        kwargs.setdefault("local_hostname", "client.example")
        self.client = AsyncSMTP(host, port, **kwargs)
        runner.run(self.client.connect())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if asyncio.iscoroutinefunction(attr):
            return lambda *a, **kw: self._runner.run(attr(*a, **kw))
        return attr

    @property
    def sock(self) -> object | None:  # what the tests check for "closed"
        return self.client._transport

    def close(self) -> None:
        self.client.close()

    def set_debuglevel(self, level: int) -> None:  # the async driver logs only through logging
        pass

    def __enter__(self) -> AsyncAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.client.is_connected:
                self._runner.run(self.client.quit())
        except smtpkit.SMTPException:
            pass
        finally:
            self.client.close()


Factory = Callable[..., Any]


@pytest.fixture(params=["blocking", "asyncio"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """``make_client(host, port, **kwargs)`` for each driver."""
    if request.param == "blocking":

        def blocking(host: str, port: int, **kwargs: Any) -> smtpkit.SMTP:
            kwargs.setdefault("local_hostname", "client.example")
            return smtpkit.SMTP(host, port, **kwargs)

        yield blocking
        return
    runner = _Loop()
    try:
        yield lambda host, port, **kwargs: AsyncAdapter(runner, host, port, **kwargs)
    finally:
        runner.close()
