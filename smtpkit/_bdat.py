"""CHUNKING/BDAT (RFC 3030) for aiosmtpd, which has no BDAT of its own.

``BDAT <size> [LAST]`` is followed by exactly ``size`` octets, read whatever the outcome
(the byte count, not a terminator, delimits the data: no dot-stuffing). Chunks add up
until ``LAST``, when the message goes to the handler's ``handle_DATA`` like any other.
"""

from __future__ import annotations

import socket
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

__all__ = ["ChunkingSMTP"]


class ChunkingSMTP(SMTP):
    """aiosmtpd's SMTP server plus the BDAT command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunks = bytearray()
        self._chunk_failed: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies go out at once

    def _set_rset_state(self) -> None:
        super()._set_rset_state()  # type: ignore[no-untyped-call]
        self._chunks = bytearray()
        self._chunk_failed = None

    @syntax("BDAT size [LAST]")
    async def smtp_BDAT(self, arg: str) -> None:
        words = arg.split() if arg else []
        if (
            not words
            or not words[0].isdigit()
            or len(words[0]) > 12
            or len(words) > 2
            or (len(words) == 2 and words[1].upper() != "LAST")
        ):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        size = int(words[0])
        last = len(words) == 2
        data = await self._reader.readexactly(size)  # always consume the chunk
        envelope: Any = self.envelope
        if envelope is None or envelope.mail_from is None or not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need MAIL and RCPT before BDAT")
            return
        if self._chunk_failed is not None:
            await self.push(self._chunk_failed)
            return
        limit = self.data_size_limit
        if limit and len(self._chunks) + size > limit:
            self._chunk_failed = "552 5.3.4 Error: message too big"
            await self.push(self._chunk_failed)
            return
        self._chunks += data
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        content = bytes(self._chunks)
        envelope.original_content = content
        envelope.content = content if not self._decode_data else content.decode("utf-8", "surrogateescape")
        envelope.chunked = True
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        self._chunks = bytearray()
        await self.push("250 OK" if status is None else status)
