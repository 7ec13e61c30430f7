"""Picks the hot-path implementation: the Cython module, or its pure-Python twin.

The pure twin is used when ``SMTPKIT_NO_EXTENSIONS`` is set (to anything but ``0``), on
interpreters other than CPython, and when the extension is missing; the last case warns
if the install recorded that the build failed, so a slow fallback is never silent.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import resources
from types import ModuleType

from . import _speedups_py

NO_EXTENSIONS = os.environ.get("SMTPKIT_NO_EXTENSIONS", "") not in ("", "0")
BUILD_FAILED_MARKER = "_speedups_build_failed.txt"


def _load() -> tuple[ModuleType, str]:
    if NO_EXTENSIONS or sys.implementation.name != "cpython":
        return _speedups_py, "python"
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        if resources.files(__package__).joinpath(BUILD_FAILED_MARKER).is_file():
            warnings.warn(
                "smtpkit's C extension failed to build at install time; using the slower "
                "pure-Python implementation (set SMTPKIT_NO_EXTENSIONS=1 to silence this)",
                RuntimeWarning,
                stacklevel=3,
            )
        return _speedups_py, "python"
    return _speedups, "cython"


impl, IMPLEMENTATION = _load()
