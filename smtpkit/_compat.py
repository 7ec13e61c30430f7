"""Small shims for the Python versions smtpkit supports (3.11+)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:  # pragma: no cover - Python 3.11
    from typing import TypeAlias

    Buffer: TypeAlias = bytes | bytearray | memoryview

__all__ = ["Buffer"]
