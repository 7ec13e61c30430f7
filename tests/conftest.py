"""Shared fixtures.

``twin`` runs a test against both hot-path implementations: the compiled
``smtpkit._speedups`` and the pure ``smtpkit._speedups_py``. A missing compiled module
fails the run, unless ``--no-c-extensions`` is given or ``SMTPKIT_NO_EXTENSIONS`` is set
(then the Cython half of each such test is skipped).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
from drivers import make_client

__all__ = ["make_client"]  # the two-driver fixture (tests/drivers.py)

NO_EXT_ENV = os.environ.get("SMTPKIT_NO_EXTENSIONS", "") not in ("", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="run without the compiled smtpkit._speedups (its half of the twin tests is skipped)",
    )


def c_extensions_disabled(config: pytest.Config) -> bool:
    return NO_EXT_ENV or bool(config.getoption("--no-c-extensions"))


@pytest.fixture(scope="session", params=["cython", "python"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """One hot-path implementation (the test runs once with each)."""
    if request.param == "python":
        return importlib.import_module("smtpkit._speedups_py")
    if c_extensions_disabled(request.config):
        pytest.skip("C extension disabled (--no-c-extensions or SMTPKIT_NO_EXTENSIONS)")
    try:
        return importlib.import_module("smtpkit._speedups")
    except ImportError as exc:  # a missing build must not pass silently
        pytest.fail(
            f"the compiled smtpkit._speedups is missing ({exc}); build it "
            "(pip install .) or run with --no-c-extensions",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def both_twins(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    """(compiled, pure) for differential tests; skipped without the extension."""
    if c_extensions_disabled(request.config):
        pytest.skip("C extension disabled (--no-c-extensions or SMTPKIT_NO_EXTENSIONS)")
    try:
        compiled = importlib.import_module("smtpkit._speedups")
    except ImportError as exc:
        pytest.fail(f"the compiled smtpkit._speedups is missing ({exc})", pytrace=False)
    return compiled, importlib.import_module("smtpkit._speedups_py")
