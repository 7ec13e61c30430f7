#!/usr/bin/env bash
# Fuzzes smtpkit._speedups built with ASan + UBSan (+ libFuzzer coverage of the C code),
# following fuzz/README.md "Under AddressSanitizer + UndefinedBehaviorSanitizer".
#
# CI calls it from the repository root, inside the activated virtualenv where
# `pip install ".[test]"` has been done, as root on a fresh Debian machine. It installs clang
# (apt) and atheris (pip) when missing, builds the sanitized extension in a scratch copy
# (never in the work tree), fuzzes it, and fails on any sanitizer report, crash, twin
# divergence, or if the sanitized module is not the one under test.
#
# Environment:
#   SMTPKIT_ASAN_SECONDS   fuzzing time in seconds (default 45)
#   SMTPKIT_ASAN_SRC       source tree to copy (default: the repository root)
#   SMTPKIT_ASAN_DIR       scratch copy, deleted and recreated (default /tmp/smtpkit-asan)
#   SMTPKIT_ASAN_CC        compiler (default clang: Debian's default clang package)
#   SMTPKIT_ATHERIS        pip requirement for atheris when it is missing (default
#                          atheris==3.0.0, the version the README's recipe was checked with)
set -euo pipefail
started=$(date +%s)
trap 'echo "=== .ci/asan.sh: exit $? after $(( $(date +%s) - started ))s"' EXIT
step() { printf '\n=== %s (t+%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
die() { echo "asan.sh: FAIL: $*" >&2; exit 1; }

SRC=$(cd "${SMTPKIT_ASAN_SRC:-$(dirname "$0")/..}" && pwd -P)
cd "$SRC"
DEST=${SMTPKIT_ASAN_DIR:-/tmp/smtpkit-asan}
SECONDS_TO_FUZZ=${SMTPKIT_ASAN_SECONDS:-45}
CC_NAME=${SMTPKIT_ASAN_CC:-clang}
[[ $SECONDS_TO_FUZZ =~ ^[0-9]+$ ]] || die "SMTPKIT_ASAN_SECONDS must be a number of seconds"
[ -f "$SRC/setup.py" ] && [ -f "$SRC/fuzz/fuzz_hotpath.py" ] || die "$SRC is not an smtpkit tree"
mkdir -p "$(dirname "$DEST")"
DEST="$(cd "$(dirname "$DEST")" && pwd -P)/$(basename "$DEST")"
case "$DEST/" in
    / | "$SRC"/* ) die "scratch dir $DEST must be outside the source tree $SRC" ;;
esac
case "$SRC/" in "$DEST"/*) die "scratch dir $DEST must not contain the source tree" ;; esac

step "toolchain: $CC_NAME (apt), atheris (pip)"
export DEBIAN_FRONTEND=noninteractive
apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    echo "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
if ! command -v "$CC_NAME" >/dev/null; then
    apt_install "$CC_NAME"
fi
major=$("$CC_NAME" -dumpversion | cut -d. -f1)
# Debian's clang >= 14 keeps the sanitizer runtimes (libclang_rt.asan_static, which clang
# links into every -fsanitize=address shared object) in a separate package
rt_pkg="libclang-rt-$major-dev"
if command -v dpkg-query >/dev/null && ! installed "$rt_pkg"; then
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    if apt-cache show "$rt_pkg" >/dev/null 2>&1; then apt_install "$rt_pkg"; fi
fi
"$CC_NAME" --version | sed -n 1p
pip_missing=()
python -c 'import atheris' 2>/dev/null || pip_missing+=("${SMTPKIT_ATHERIS:-atheris==3.0.0}")
# `setup.py build_ext` runs in this environment, not in pip's isolated build one: it needs
# the build requirements of pyproject.toml (Cython, setuptools>=77) installed here
mapfile -t build_reqs < <(python - "$SRC/pyproject.toml" <<'EOF'
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare virtualenv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
with open(sys.argv[1], "rb") as fh:
    for req in tomllib.load(fh)["build-system"]["requires"]:
        r = Requirement(req)
        try:
            ok = r.specifier.contains(version(r.name), prereleases=True)
        except PackageNotFoundError:
            ok = False
        if not ok:
            print(req)
EOF
)
pip_missing+=("${build_reqs[@]}")
if [ "${#pip_missing[@]}" -gt 0 ]; then
    echo "pip install ${pip_missing[*]}"
    python -m pip install -q "${pip_missing[@]}"
fi
ATHERIS_DIR=$(python -c 'import atheris; print(atheris.path())')
RUNTIME="$ATHERIS_DIR/asan_with_fuzzer.so"
[ -f "$RUNTIME" ] || die "$RUNTIME not found (atheris without its sanitizer runtime?)"
echo "atheris $(python -m pip show atheris 2>/dev/null | sed -n 's/^Version: //p'), runtime $RUNTIME"

CFLAGS_ASAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize=function -fno-omit-frame-pointer -g -O1"
LDFLAGS_ASAN="-fsanitize=address,undefined -fno-sanitize-link-runtime"
probe=$(mktemp -d)
printf 'int smtpkit_probe(const char *p) { return p[1]; }\n' >"$probe/p.c"
# shellcheck disable=SC2086
"$CC_NAME" $CFLAGS_ASAN $LDFLAGS_ASAN -fPIC -shared -o "$probe/p.so" "$probe/p.c" \
    || die "$CC_NAME cannot build a sanitized shared object with the README's flags (too old? try SMTPKIT_ASAN_CC=clang-19)"
rm -rf "$probe"

step "sanitized build in $DEST (from $SRC)"
rm -rf "$DEST"
mkdir -p "$DEST"
# the sources only: no VCS, virtualenvs, caches or earlier build output
tar -C "$SRC" -cf - \
    --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
    --exclude=./wheelhouse --exclude=./fuzz/corpus --exclude='./.*_cache' \
    --exclude=./.hypothesis --exclude=./.benchmarks --exclude=__pycache__ --exclude='*.egg-info' . \
    | tar -C "$DEST" -xf -
(
    cd "$DEST"
    rm -rf build smtpkit/*.so smtpkit/_speedups_build_failed.txt src_ext/*.c
    # SMTPKIT_REQUIRE_EXTENSIONS: a failed compile must fail here, not fall back to Python
    CC="$CC_NAME" CFLAGS="$CFLAGS_ASAN" LDFLAGS="$LDFLAGS_ASAN" SMTPKIT_REQUIRE_EXTENSIONS=1 \
        python setup.py -q build_ext --inplace >"$DEST/build.log" 2>&1 \
        || { cat "$DEST/build.log"; die "sanitized build failed"; }
)
so=$(ls "$DEST"/smtpkit/_speedups*.so 2>/dev/null | head -n1) || true
[ -n "$so" ] || { cat "$DEST/build.log"; die "no smtpkit/_speedups*.so after the build"; }
nm -D --undefined-only "$so" | grep -c __asan_report >/dev/null || die "$so is not built with ASan"
echo "built $so"

step "fuzz for ${SECONDS_TO_FUZZ}s under ASan + UBSan"
# crash-* files, the log and the corpus (seeded by the harness with its hand-written cases)
RUN="$DEST/_asan_run"
mkdir -p "$RUN"
printf 'pointer-overflow:_speedups.c\n' >"$RUN/ubsan.supp"
LOG="$RUN/fuzz.log"
set +e
(
    cd "$RUN"
    LD_PRELOAD="$RUNTIME" \
    ASAN_OPTIONS=detect_leaks=0 \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$RUN/ubsan.supp" \
    PYTHONMALLOC=malloc \
    PYTHONPATH="$DEST" \
    timeout -k 10 $(( SECONDS_TO_FUZZ + 300 )) \
    python "$DEST/fuzz/fuzz_hotpath.py" "$RUN/corpus" -max_total_time="$SECONDS_TO_FUZZ" \
        -timeout=20 -artifact_prefix="$RUN/"
) 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e

step "checks"
fail=0
check() { if eval "$2"; then echo "ok:   $1"; else echo "FAIL: $1"; fail=1; fi; }
check "fuzzer exit status is 0 (got $rc)" '[ "$rc" -eq 0 ]'
check "the twins are the sanitized build ($so)" \
    'grep -Fq "INFO: smtpkit twins: $so and " "$LOG"'
check "libFuzzer preloaded from atheris" 'grep -q "^INFO: Using preloaded libfuzzer" "$LOG"'
check "the instrumented extension is loaded (INFO: Loaded 1 modules)" \
    'grep -Eq "^INFO: Loaded 1 modules +\([0-9]+ inline 8-bit counters\)" "$LOG"'
check "no sanitizer report, crash or Python exception" \
    '! grep -Eq "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|SUMMARY: [A-Za-z]+Sanitizer|runtime error:|Uncaught Python exception|^Traceback |deadly signal" "$LOG"'
check "fuzzing ran to the end (Done N runs)" 'grep -Eq "^Done [0-9]+ runs in" "$LOG"'
if [ "$fail" -ne 0 ]; then
    ls "$RUN"/crash-* "$RUN"/timeout-* "$RUN"/oom-* 2>/dev/null | sed 's/^/artifact: /' || true
    die "sanitized fuzz run failed (log: $LOG)"
fi
echo "sanitized fuzz run passed"
