#!/usr/bin/env bash
# Build rnncore with AddressSanitizer + UndefinedBehaviorSanitizer (-DRNNCORE_SANITIZE=ON) in a
# fresh virtual environment of its own and run the test suite under it.
#
#   bash tools/asan_tests.sh [WORKDIR] [-- PYTEST-ARGS...]
#
# WORKDIR (default: a new temporary folder) receives the venv (WORKDIR/venv), the CMake build
# folder (WORKDIR/build, never the source tree's build/) and the sanitizer logs (WORKDIR/logs).
# An existing WORKDIR/venv is reused (delete it to rebuild). PyTorch is not installed: its
# parity tests skip (torch's own libraries are not instrumented and are far too slow under ASan).
#
# Fails (non-zero exit) when the build fails, a test fails, no test runs, or a sanitizer reports
# anything -- in the test process or in any subprocess a test starts: every report goes to a
# log file under WORKDIR/logs, and a run that leaves one fails even if its process exited 0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-}"
if [[ -z "$work" || "$work" == "--" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/rnncore-asan.XXXXXX")"
else
  shift
fi
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$work"
work="$(cd "$work" && pwd)"

# Python is not built with ASan, so its runtime must be preloaded (it has to come first). The
# C++ runtime is preloaded with it: python does not link libstdc++, and ASan's __cxa_throw
# interceptor aborts ("real___cxa_throw != 0") at the first C++ exception when libstdc++ only
# arrives later with the extension.
libasan="$(gcc -print-file-name=libasan.so)"
libstdcxx="$(gcc -print-file-name=libstdc++.so)"
for lib in "$libasan" "$libstdcxx"; do
  if [[ "$lib" != /* || ! -e "$lib" ]]; then
    echo "asan_tests.sh: gcc -print-file-name found no '$lib' (expected an absolute path to gcc's runtime); install gcc's libasan and libstdc++" >&2
    exit 1
  fi
done
preload="$libasan $libstdcxx"

if [[ ! -x "$work/venv/bin/python" ]]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --no-input -q --upgrade pip
  # The build folder is our own: the source tree's build/ belongs to the normal build.
  "$work/venv/bin/pip" install --no-input -q \
    -C cmake.define.RNNCORE_SANITIZE=ON \
    -C build-dir="$work/build" \
    -C install.strip=false \
    "$repo[test]"
fi
py="$work/venv/bin/python"
logs="$work/logs"
rm -rf "$logs"
mkdir -p "$logs"
# detect_leaks=0: CPython does not free everything at exit, and LeakSanitizer would report that.
# Everything else stays at ASan's defaults (halt at the first error).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$logs/asan:${ASAN_OPTIONS_EXTRA:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
# Two threads at most: the kernels' OpenMP paths run, on a machine shared with others.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# The extension really is instrumented (an ordinary build would pass every test and prove nothing).
if ! LD_PRELOAD="$preload" "$py" -c 'import pathlib, sys, rnncore._core as c; so = pathlib.Path(c.__file__).read_bytes(); sys.exit(b"__asan_init" not in so or b"__ubsan_handle" not in so)' 2>/dev/null; then
  echo "asan_tests.sh: $work/venv holds an rnncore built without -DRNNCORE_SANITIZE=ON (or one that does not import); delete $work/venv to rebuild" >&2
  exit 1
fi

echo "asan_tests.sh: $(LD_PRELOAD="$preload" "$py" -c 'import rnncore; print("rnncore", rnncore.__version__, "from", rnncore.__file__)')"
rc=0
(cd "$repo" && LD_PRELOAD="$preload" "$py" -m pytest -p no:cacheprovider -q "$@") || rc=$?

shopt -s nullglob
reports=("$logs"/*)
if ((${#reports[@]})); then
  echo "asan_tests.sh: sanitizer reports (${#reports[@]} file(s) in $logs):" >&2
  for f in "${reports[@]}"; do
    echo "--- $f" >&2
    cat "$f" >&2
  done
  exit 1
fi
if ((rc != 0)); then
  echo "asan_tests.sh: pytest exited with $rc under the sanitizers" >&2
  exit "$rc"
fi
echo "asan_tests.sh: no sanitizer reports; tests passed"
