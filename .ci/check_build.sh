#!/usr/bin/env bash
# Checks the three ways smtpkit can be installed, each in a new virtual environment:
#   plain `pip install .`          -> IMPLEMENTATION == "cython"
#   `CC=false pip install .`       -> install succeeds, warns, IMPLEMENTATION == "python"
#   `CIBUILDWHEEL=1 CC=false ...`  -> the build fails (no wheel without its extension)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# run from outside the source tree, so the installed package is the one imported
impl() { (cd "$work" && "$1/bin/python" -W always -c 'import smtpkit.speedups as s; print(s.IMPLEMENTATION)' 2>"$2"); }

"$PY" -m venv "$work/a"
"$work/a/bin/pip" install -q . >"$work/a.log" 2>&1 || { cat "$work/a.log"; exit 1; }
got=$(impl "$work/a" "$work/a.err")
echo "pip install .            -> $got"
[ "$got" = cython ]

"$PY" -m venv "$work/b"
CC=false "$work/b/bin/pip" install -v . >"$work/b.log" 2>&1 || { cat "$work/b.log"; exit 1; }
got=$(impl "$work/b" "$work/b.err")
echo "CC=false pip install .   -> $got"
[ "$got" = python ]
grep -q "C extension (smtpkit._speedups) could not be built" "$work/b.log"
grep -q "failed to build at install time" "$work/b.err"
echo "                            (warned at install and at import)"

"$PY" -m venv "$work/c"
if CIBUILDWHEEL=1 CC=false "$work/c/bin/pip" install -q . >"$work/c.log" 2>&1; then
    echo "CIBUILDWHEEL=1 CC=false: the install should have failed"; exit 1
fi
echo "CIBUILDWHEEL=1 CC=false  -> build failed, as required"

got=$(cd "$work" && SMTPKIT_NO_EXTENSIONS=1 "$work/a/bin/python" -c 'import smtpkit.speedups as s; print(s.IMPLEMENTATION)')
echo "SMTPKIT_NO_EXTENSIONS=1  -> $got"
[ "$got" = python ]
