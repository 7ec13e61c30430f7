"""What only the asyncio driver promises: loop-friendliness and concurrent batches."""

from __future__ import annotations

import asyncio
import inspect
import smtplib

import pytest
from servers import Capture, SmtpSink, aiosmtpd_server

import smtpkit
from smtpkit import aio
from smtpkit.aio import AsyncSMTP, BatchItem, send_batch

MSG = b"Subject: aio\r\n\r\nhello\r\n"


def test_never_calls_asyncio_run_behind_the_users_back() -> None:
    source = inspect.getsource(aio)
    assert "asyncio.run(" not in source and "run_until_complete" not in source


def test_works_inside_an_already_running_loop() -> None:
    # a notebook cell's top-level await runs inside the kernel's loop: same situation
    async def cell() -> list[str]:
        with aiosmtpd_server() as (capture, port):
            async with AsyncSMTP("127.0.0.1", port, timeout=5, local_hostname="c") as client:
                await client.sendmail("a@example.org", ["b@example.org"], MSG)
            await asyncio.sleep(0.05)
            return [m.mail_from for m in capture.messages]

    assert asyncio.run(cell()) == ["a@example.org"]


def test_name_lookup_and_connect_do_not_block_the_loop() -> None:
    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        with aiosmtpd_server() as (_, port):
            task = asyncio.create_task(ticker())
            client = AsyncSMTP("localhost", port, timeout=5, local_hostname="c")  # a name, resolved by the loop
            await client.connect()
            await client.quit()
            stop.set()
            await task
        return ticks

    assert asyncio.run(main()) > 1


def test_many_connections_in_one_loop() -> None:
    capture = Capture(refuse={"bad@example.org"})
    items = [BatchItem("a@example.org", [f"r{i}@example.org"], MSG, key=i) for i in range(40)]
    items.append(BatchItem("a@example.org", ["bad@example.org"], MSG))

    async def main() -> list[smtpkit.SendResult | BaseException]:
        with aiosmtpd_server(capture) as (_, port):
            return await send_batch(items, "127.0.0.1", port, connections=4, timeout=10, local_hostname="c")

    results = asyncio.run(main())
    assert all(isinstance(r, smtpkit.SendResult) for r in results[:40])
    assert isinstance(results[40], smtplib.SMTPRecipientsRefused)
    assert sorted(m.rcpt_tos[0] for m in capture.messages) == sorted(f"r{i}@example.org" for i in range(40))


def test_batch_against_smtp_sink_reconnects_after_421() -> None:
    async def main(port: int) -> list[smtpkit.SendResult | BaseException]:
        items = [("a@example.org", ["b@example.org"], MSG) for _ in range(6)]
        return await send_batch(items, "127.0.0.1", port, connections=2, timeout=10, local_hostname="c")

    with SmtpSink("-Q", "MAIL") as sink:  # every MAIL gets 421 and a drop
        results = asyncio.run(main(sink.port))
    assert all(isinstance(r, smtplib.SMTPSenderRefused) and r.smtp_code == 421 for r in results)


def test_top_level_name_is_lazy() -> None:
    assert smtpkit.AsyncSMTP is AsyncSMTP
    with pytest.raises(AttributeError):
        _ = smtpkit.NoSuchThing  # type: ignore[attr-defined]
