"""Resident memory stays flat over many kernel and layer calls: nothing leaks per call.

Each case runs in a fresh Python process (see measure()): a warm-up (so the layers' workspace pools, NumPy's and CPython's allocators and the
OpenMP threads reach their working set), reads the resident set size from /proc/self/statm,
runs 10,000 forward+backward calls and reads it again.

The bound, 2 MiB: every call allocates at least its outputs and its cache, several KiB at the
shapes below (float64 y alone is T·B·H·8 = 4 KiB); had any of them, or the C++ state behind the
cache, leaked, 10,000 calls would add 40 MiB or more. Allocator noise after a warm-up -- a new
glibc heap segment or a few pymalloc arenas (256 KiB each) -- stays well under 2 MiB. A leak
smaller than ~200 bytes a call is below what RSS can see; ASan and valgrind cover those
(tools/asan_tests.sh, tools/valgrind_check.sh). test_the_measurement_sees_a_leak shows that a
leak of one 4 KiB array a call is caught.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

import rnncore


def _asan_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/proc/self/statm"), reason="reads the RSS from /proc/self/statm (Linux)"
    ),
    # ASan keeps freed memory in quarantine (256 MiB by default): the RSS grows by design.
    pytest.mark.skipif(_asan_loaded(), reason="RSS is meaningless under AddressSanitizer"),
]

CALLS = 10_000
WARMUP = 500
BOUND_MB = 2.0
T, B, D, H = 8, 4, 8, 16
MB = 1024 * 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MB


def weights(rng: np.random.Generator, gates: int) -> list[np.ndarray]:
    k = 1 / np.sqrt(H)
    return [
        rng.uniform(-k, k, (gates * H, D)),
        rng.uniform(-k, k, (gates * H, H)),
        rng.uniform(-k, k, gates * H),
        rng.uniform(-k, k, gates * H),
    ]


def make_case(name: str) -> Callable[[], None]:
    """One forward+backward call of `name` (float64, fresh outputs each time)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D))
    ids = rng.integers(0, D, (T, B))
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    dh = rng.standard_normal((B, H))
    if name in ("rnn_tanh", "rnn_relu"):
        w = weights(rng, 1)
        nl = name.split("_")[1]

        def call() -> None:
            _y, _h, cache = rnncore.rnn_forward(x, h0, *w, nonlinearity=nl)
            rnncore.rnn_backward(dy, dh, cache)

    elif name in ("lstm", "lstm_onehot"):
        w = weights(rng, 4)
        inp = ids if name == "lstm_onehot" else x

        def call() -> None:
            _y, _h, _c, cache = rnncore.lstm_forward(inp, h0, c0, *w)
            rnncore.lstm_backward(dy, dh, dh, cache)

    elif name in ("gru", "gru_reset_before"):
        w = weights(rng, 3)
        reset_after = name == "gru"

        def call() -> None:
            _y, _h, cache = rnncore.gru_forward(x, h0, *w, reset_after=reset_after)
            rnncore.gru_backward(dy, dh, cache)

    elif name == "layer_lstm_2x_dropout":
        layer = rnncore.LSTM(D, H, num_layers=2, dropout=0.2, dtype=np.float64, seed=0)

        def call() -> None:
            layer.zero_grad()
            layer.forward(x)
            layer.backward(dy)

    else:
        raise ValueError(f"make_case: unknown case {name!r}")
    return call


def growth(call: Callable[[], None]) -> tuple[float, float]:
    """(RSS in MiB after the warm-up, RSS after CALLS more calls)."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    start = rss_mb()
    for _ in range(CALLS):
        call()
    gc.collect()
    return start, rss_mb()


CASES = ["rnn_tanh", "rnn_relu", "lstm", "lstm_onehot", "gru", "gru_reset_before",
         "layer_lstm_2x_dropout"]  # fmt: skip


def measure(name: str) -> tuple[float, float]:
    """growth() of case `name` in a fresh Python process: in a process that has already freed
    memory (the rest of the test suite), new allocations reuse pages that are still resident
    and a leak would not show in the RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, name],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{name}: the measuring process failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["start"], result["end"]


@pytest.mark.parametrize("name", CASES)
def test_rss_stays_flat_over_10000_forward_backward_calls(name):
    start, end = measure(name)
    print(
        f"\nRSS {name}: {start:.2f} MiB after {WARMUP} warm-up calls, {end:.2f} MiB after "
        f"{CALLS} more (+{end - start:.2f} MiB)",
        file=sys.stderr,
    )
    assert end - start <= BOUND_MB, (
        f"{name}: RSS grew by {end - start:.2f} MiB over {CALLS} forward+backward calls "
        f"({start:.2f} -> {end:.2f} MiB); expected at most {BOUND_MB} MiB"
    )


def leaky_case() -> Callable[[], None]:
    """rnn_tanh, plus one 4 KiB output kept per call: the leak a lost y would be."""
    call = make_case("rnn_tanh")
    kept: list[np.ndarray] = []
    w = weights(np.random.default_rng(1), 1)
    x = np.random.default_rng(2).standard_normal((T, B, D))

    def leaky() -> None:
        call()
        kept.append(rnncore.rnn_forward(x, None, *w)[0])  # y: T*B*H*8 bytes = 4 KiB

    return leaky


def test_the_measurement_sees_a_leak():
    """The control: the 40 MiB kept over 10,000 calls show in the RSS, far above the bound, so
    the test above can fail."""
    start, end = measure("leak_4k_per_call")
    assert end - start > 10 * BOUND_MB, (
        f"a 4 KiB leak per call grew the RSS by only {end - start:.2f} MiB "
        f"({start:.2f} -> {end:.2f} MiB); expected more than {10 * BOUND_MB} MiB"
    )


if __name__ == "__main__":  # the measuring process: python tests/test_memory.py CASE
    case = sys.argv[1]
    start, end = growth(leaky_case() if case == "leak_4k_per_call" else make_case(case))
    print(json.dumps({"start": start, "end": end}))
