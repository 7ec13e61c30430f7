"""The package as installed: which kernel is live, and what ``import smtpkit`` costs."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import c_extensions_disabled

import smtpkit
from smtpkit import speedups


def test_compiled_kernel_is_the_one_in_use(request: pytest.FixtureRequest) -> None:
    if c_extensions_disabled(request.config):
        assert speedups.IMPLEMENTATION == "python"
        assert speedups.ReplyParser.__module__ == "smtpkit._speedups_py"
        return
    from smtpkit import _speedups

    assert speedups.IMPLEMENTATION == "cython"
    assert speedups.ReplyParser is _speedups.ReplyParser
    assert speedups.encode_data is _speedups.encode_data
    assert isinstance(_speedups.__loader__, importlib.machinery.ExtensionFileLoader)
    assert _speedups.__file__.endswith((".so", ".pyd"))


def test_environment_variable_selects_the_pure_twin(tmp_path: Path) -> None:
    code = "import smtpkit.speedups as s; print(s.IMPLEMENTATION, s.encode_data.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"SMTPKIT_NO_EXTENSIONS": "1", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # import the installed package, not the source tree
    ).stdout.split()
    assert out == ["python", "smtpkit._speedups_py"]


def test_import_stays_light(tmp_path: Path) -> None:
    heavy = ("pandas", "ipywidgets", "jinja2", "matplotlib", "numpy", "dask", "aiosmtpd")
    code = f"import sys, smtpkit; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"


def test_exceptions_are_smtplib_exceptions() -> None:
    import smtplib

    for name in (
        "SMTPException",
        "SMTPNotSupportedError",
        "SMTPServerDisconnected",
        "SMTPResponseException",
        "SMTPSenderRefused",
        "SMTPRecipientsRefused",
        "SMTPDataError",
        "SMTPConnectError",
        "SMTPHeloError",
        "SMTPAuthenticationError",
    ):
        ours = getattr(smtpkit, name)
        assert issubclass(ours, getattr(smtplib, name)), name
        assert issubclass(ours, smtpkit.SMTPKitError), name
    assert issubclass(smtpkit.SMTPServerDisconnected, ConnectionError)
    err = smtpkit.SMTPSenderRefused(550, b"no", "a@b")
    assert (err.smtp_code, err.smtp_error, err.sender) == (550, b"no", "a@b")
