"""A pytest plugin: a running capture server for testing your own mail code.

Installed with smtpkit (entry point ``pytest11``), so in any project::

    def test_welcome_mail(smtp_capture):
        send_welcome("new@example.org", host=smtp_capture.host, port=smtp_capture.port)
        [message] = smtp_capture.messages
        assert message["To"] == "new@example.org"

``smtp_capture`` is a fresh :class:`smtpkit.CaptureServer` per test, on 127.0.0.1, with a
temporary Maildir. Importing this module is cheap: the server starts only when used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .server import CaptureServer


@pytest.fixture
def smtp_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureServer]:
    """A capture server for this test; ``.messages`` holds what it received."""
    from .server import CaptureServer

    with CaptureServer(maildir=tmp_path_factory.mktemp("captured-mail")) as server:
        yield server
