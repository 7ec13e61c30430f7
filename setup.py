"""Build script: compiles the Cython hot path as ``smtpkit._speedups`` when it can.

* ``SMTPKIT_NO_EXTENSIONS=1`` skips the extension (pure-Python install).
* A failed compile (no C compiler, ``CC=false``) prints a warning and installs the
  pure-Python twin, unless ``CIBUILDWHEEL=1`` or ``SMTPKIT_REQUIRE_EXTENSIONS=1`` is set:
  then the build fails, so that no wheel ever ships without its extension.
* Non-CPython interpreters get the pure-Python twin.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("SMTPKIT_NO_EXTENSIONS") or platform.python_implementation() != "CPython"
REQUIRE_EXTENSIONS = _flag("CIBUILDWHEEL") or _flag("SMTPKIT_REQUIRE_EXTENSIONS")
FAILED_MARKER = "_speedups_build_failed.txt"

WARNING = """
**********************************************************************
WARNING: smtpkit's C extension (smtpkit._speedups) could not be built:
    {error}
smtpkit is installed with its pure-Python twin: it works the same,
but parsing and DATA encoding are much slower.
Install a C compiler and the Python headers, then reinstall, to get it.
**********************************************************************
"""


def _remove(paths: list[str]) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


class CleanBuildPy(build_py):
    """build_py that drops extension output left in build/ by an earlier build.

    pip builds in the source tree's build/ directory, so without this a pure-Python build
    (no compiler, SMTPKIT_NO_EXTENSIONS=1) could ship a stale compiled module, or a stale
    "build failed" marker could outlive a later successful build.
    """

    def run(self) -> None:
        target = os.path.join(self.build_lib, "smtpkit")
        _remove([*glob.glob(os.path.join(target, "_speedups.*")), os.path.join(target, FAILED_MARKER)])
        super().run()


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all: DistutilsPlatformError and friends
            self._failed(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a CC that is not a compiler
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if REQUIRE_EXTENSIONS:
            raise exc
        if not self.inplace:  # never ship a half-built or stale module
            _remove([self.get_ext_fullpath(ext.name) for ext in self.extensions])
        message = WARNING.format(error=f"{type(exc).__name__}: {exc}")
        sys.stderr.write(message)
        sys.stdout.write(message)
        if not self.inplace:  # tells ``import smtpkit`` to repeat the warning
            target = os.path.join(self.build_lib, "smtpkit")
            os.makedirs(target, exist_ok=True)
            with open(os.path.join(target, FAILED_MARKER), "w") as fh:
                fh.write(f"{type(exc).__name__}: {exc}\n")


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:  # Cython is a build requirement; this is a broken build env
        if REQUIRE_EXTENSIONS:
            raise
        sys.stderr.write(WARNING.format(error=f"Cython is not available ({exc})"))
        return []
    ext = Extension(
        "smtpkit._speedups",
        ["src_ext/_speedups.pyx"],
        # the SIMD kernels: rebuild when they change, ship in sdists
        depends=["src_ext/_hotpath.h", "src_ext/_hotpath_encode.h"],
        extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "build_py": CleanBuildPy})
