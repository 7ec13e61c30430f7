"""What only the asyncio driver promises: loop-friendliness and concurrent batches."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import smtplib
import time
from typing import Any

import pytest
from servers import Capture, Conn, Scripted, SmtpSink, aiosmtpd_server

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


def test_callbacks_drive_a_batch_in_the_callers_context() -> None:
    # send_many runs from the protocol's callbacks (no task step per exchange); on_result
    # still sees the caller's context variables, and every outcome arrives in order
    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="loop")

    async def main(port: int) -> tuple[list[int], set[str]]:
        seen: list[int] = []
        contexts: set[str] = set()

        def on_result(index: int, outcome: smtpkit.SendResult | BaseException) -> None:
            seen.append(index)
            contexts.add(where.get())

        where.set("caller")
        async with AsyncSMTP("127.0.0.1", port, timeout=10, local_hostname="c") as client:
            await client.ehlo()
            results = await client.send_many([("a@example.org", ["b@example.org"], MSG)] * 50, on_result=on_result)
            assert all(isinstance(r, smtpkit.SendResult) for r in results)
            assert client._protocol is not None and client._protocol.driver is None
            assert (await client.noop())[0] == 250
        return seen, contexts

    with SmtpSink() as sink:
        seen, contexts = asyncio.run(main(sink.port))
    assert seen == list(range(50)) and contexts == {"caller"}


def test_cancelling_a_driven_batch_stops_it() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        conn.rest(timeout=3)  # never answers the first group

    async def main(port: int) -> None:
        client = AsyncSMTP("127.0.0.1", port, timeout=30, local_hostname="c")
        await client.connect()
        await client.ehlo()
        task = asyncio.create_task(client.send_many([("a@example.org", ["b@example.org"], MSG)] * 3))
        await asyncio.sleep(0.2)
        protocol = client._protocol
        assert protocol is not None and protocol.driver is not None  # waiting in the callbacks
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 1.0
        assert protocol.driver is None
        client.close()

    with Scripted(script) as server:
        asyncio.run(main(server.port))


def test_top_level_name_is_lazy() -> None:
    assert smtpkit.AsyncSMTP is AsyncSMTP
    with pytest.raises(AttributeError):
        _ = smtpkit.NoSuchThing  # type: ignore[attr-defined]


# -- one operation at a time, and nothing owed survives a cancel (review findings) -----------


def test_a_cancelled_send_closes_the_connection_so_no_reply_goes_astray() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        conn.line()  # MAIL, RCPT and DATA arrive together; the replies come late
        time.sleep(0.5)
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.rest(timeout=2)

    async def main(port: int) -> None:
        client = AsyncSMTP("127.0.0.1", port, timeout=10, local_hostname="c")
        await client.connect()
        await client.ehlo()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                client.sendmail("a@example.org", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n"), 0.2
            )
        assert not client.is_connected  # its three replies are still owed: the connection is gone
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await client.noop()  # never gets the cancelled MAIL's "250 ok"

    with Scripted(script) as server:
        asyncio.run(main(server.port))
    assert b"carol" not in server.wire


def test_concurrent_operations_take_turns() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        assert conn.line().startswith(b"NOOP")
        time.sleep(0.2)
        conn.send(b"250 2.0.0 noop reply\r\n")
        assert conn.line().startswith(b"RSET")
        conn.send(b"250 2.0.0 rset reply\r\n")
        conn.rest(timeout=1)

    async def main(port: int) -> tuple[Any, Any]:
        client = AsyncSMTP("127.0.0.1", port, timeout=5, local_hostname="c")
        await client.connect()
        await client.ehlo()
        first = asyncio.create_task(client.noop())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(client.rset())
        results = await asyncio.gather(first, second)
        client.close()
        return results[0], results[1]

    with Scripted(script) as server:
        noop, rset = asyncio.run(main(server.port))
    assert noop[1].endswith(b"noop reply") and rset[1].endswith(b"rset reply")


def test_close_from_another_task_ends_the_driven_operation() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        conn.ehlo("PIPELINING")
        conn.rest(timeout=2)  # never answers

    async def main(port: int) -> None:
        client = AsyncSMTP("127.0.0.1", port, timeout=30, local_hostname="c")
        await client.connect()
        await client.ehlo()
        task = asyncio.create_task(client.noop())
        await asyncio.sleep(0.1)
        client.close()  # a shutdown handler, a watchdog
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await asyncio.wait_for(task, 5)

    with Scripted(script) as server:
        asyncio.run(main(server.port))


def test_a_new_connection_forgets_the_old_capabilities_and_checks_before_ehlo() -> None:  # B5, C1
    def script(c: Conn) -> None:
        c.send(b"220 scripted ESMTP\r\n")
        c.ehlo("SIZE 10", "PIPELINING")
        c.rest(timeout=2)

    async def main() -> tuple[int, bytes]:
        with Scripted(script) as old, aiosmtpd_server() as (capture, port):
            client = AsyncSMTP("127.0.0.1", old.port, timeout=5, local_hostname="c")
            await client.connect()
            await client.ehlo()
            assert client.capabilities.size == 10
            await client.connect("127.0.0.1", port)  # another server: EHLO again, no stale SIZE 10
            before = len(capture.messages)
            with pytest.raises(ValueError):  # refused before the EHLO the new connection owes
                await client.sendmail("a@example.org\r\nRSET", ["b@example.org"], MSG)
            assert client.ehlo_resp is None
            await client.sendmail("a@example.org", ["b@example.org"], MSG + b"x" * 60)
            await client.quit()
            return len(capture.messages) - before, capture.messages[-1].data

    count, data = asyncio.run(main())
    assert count == 1 and data.endswith(b"x" * 60 + b"\r\n")


def test_a_stream_that_fails_mid_data_drops_the_connection() -> None:  # D7
    # 8-bit data found while an iterator is sent to a server without 8BITMIME: the server
    # is inside DATA, so anything sent later would become message content
    def script(c: Conn) -> None:
        c.send(b"220 scripted ESMTP\r\n")
        c.ehlo("PIPELINING")
        c.until(b"DATA\r\n")
        c.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        c.rest(timeout=1)

    async def main() -> None:
        client = AsyncSMTP("127.0.0.1", server.port, timeout=5, local_hostname="c")
        await client.connect()
        chunks = iter([b"Subject: x\r\n\r\nascii\r\n", "caf\u00e9\r\n".encode()])
        with pytest.raises(smtplib.SMTPNotSupportedError, match="8BITMIME"):
            await client.sendmail("a@example.org", ["b@example.org"], chunks)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await client.noop()  # never written into the open DATA

    with Scripted(script) as server:
        asyncio.run(main())
    assert b"NOOP" not in server.wire.upper() and "caf\u00e9".encode() not in server.wire
