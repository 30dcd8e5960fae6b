#!/usr/bin/env bash
# Run tools/valgrind_workload.py (every kernel forward and backward, the cross-entropy kernels,
# a layer, training steps, a checkpoint round trip, sampling) under valgrind's memcheck.
#
#   bash tools/valgrind_check.sh [PYTHON]      # PYTHON: one with rnncore installed (default: python3)
#
# Fails (exit 1) on any memcheck error -- invalid reads or writes, uses of uninitialised values,
# bad frees, and memory definitely leaked -- or when the workload's results are wrong. The log is
# kept in $VALGRIND_LOG (default: a temporary file, printed on failure).
#
# Settings, each needed for a clean run of an unmodified CPython and NumPy (no suppression file):
#   PYTHONMALLOC=malloc      pymalloc reads its own arena headers uninitialised by design; with
#                            plain malloc every Python object is visible to memcheck.
#   OMP_WAIT_POLICY=passive  libgomp's spinning idle threads make valgrind crawl (it runs one
#                            thread at a time); passive waits are the same code, only sleeping.
#   OPENBLAS_CORETYPE        valgrind's virtual CPU has no AVX-512; pin OpenBLAS to the Haswell
#                            (AVX2) kernels, as rnncore's own dispatch does from valgrind's CPUID.
#   leak check               only "definite" leaks count as errors: CPython keeps its
#                            interpreter state reachable at exit ("still reachable"/"possibly lost"
#                            are by design and not reported as errors).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${1:-python3}"
if ! command -v valgrind >/dev/null; then
  echo "valgrind_check.sh: valgrind is not installed (apt-get install valgrind)" >&2
  exit 1
fi
if ! "$py" -c "import rnncore" 2>/dev/null; then
  echo "valgrind_check.sh: '$py' cannot import rnncore; pass a python with rnncore installed" >&2
  exit 1
fi
log="${VALGRIND_LOG:-$(mktemp "${TMPDIR:-/tmp}/rnncore-valgrind.XXXXXX")}"

rc=0
PYTHONMALLOC=malloc OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}" \
  valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --suppressions="$repo/tools/valgrind.supp" --log-file="$log" \
  "$py" "$repo/tools/valgrind_workload.py" || rc=$?

summary="$(grep -E "ERROR SUMMARY" "$log" | tail -n 1 || true)"
echo "valgrind_check.sh: ${summary:-no ERROR SUMMARY in $log}"
if ((rc != 0)) || [[ "$summary" != *"ERROR SUMMARY: 0 errors"* ]]; then
  cat "$log" >&2
  echo "valgrind_check.sh: FAILED (exit $rc; log $log)" >&2
  exit 1
fi
echo "valgrind_check.sh: clean (log $log)"
