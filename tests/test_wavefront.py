"""The wavefront schedule of a stack (rnncore.wavefront) against the default, layer after layer.

The forward is the same arithmetic chunk by chunk: float32 on the packed kernel agrees bitwise
(every element of a product is one dot product in k order, whatever rows a call covers), float64
on OpenBLAS to 1e-12. The weight gradients are summed chunk by chunk instead of over the whole
sequence, so they agree to rounding: 2e-5 relative (float32: a few hundred terms per element,
each chunk's partial sum rounded once more) and 1e-11 (float64). The states and dx do not sum
over time differently, so they agree as the forward does.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

import rnncore
from rnncore import _core, wavefront

CELLS = ("RNN", "LSTM", "GRU")


def _pair(cell: str, dtype: type, layers: int = 3, dropout: float = 0.0, **kw):
    a = getattr(rnncore, cell)(5, 16, layers, dtype=dtype, seed=3, dropout=dropout, **kw)
    b = getattr(rnncore, cell)(5, 16, layers, dtype=dtype, seed=3, dropout=dropout, **kw)
    b.wavefront = True
    return a, b


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _states(s):
    return s if isinstance(s, tuple) else (s,)


def _run(layer, x, dy, state=None, dstate=None, lengths=None):
    y, s = layer.forward(x, state, lengths=lengths)
    dx, ds = layer.backward(dy, dstate)
    return y, _states(s), dx, _states(ds), layer.grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wavefront_matches_the_default_schedule(cell: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    T, B = 23, 4  # 8 chunks of 2-3 steps
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    dy = rng.standard_normal((T, B, 16)).astype(dtype)
    n = 2 if cell == "LSTM" else 1
    state = tuple(rng.standard_normal((3, B, 16)).astype(dtype) for _ in range(n))
    dstate = tuple(rng.standard_normal((3, B, 16)).astype(dtype) for _ in range(n))
    if n == 1:
        state, dstate = state[0], dstate[0]
    a, b = _pair(cell, dtype)
    ya, sa, dxa, dsa, ga = _run(a, x, dy, state, dstate)
    yb, sb, dxb, dsb, gb = _run(b, x, dy, state, dstate)
    exact = dtype == np.float32  # the packed kernel; float64 runs on OpenBLAS
    tol, wtol = (0.0, 2e-5) if exact else (1e-12, 1e-11)
    assert _rel(yb, ya) <= tol
    for u, v in zip(sb, sa, strict=True):
        assert _rel(u, v) <= tol
    assert _rel(dxb, dxa) <= max(tol, wtol)
    for u, v in zip(dsb, dsa, strict=True):
        assert _rel(u, v) <= max(tol, wtol)
    for name in ga:
        assert _rel(gb[name], ga[name]) <= wtol, name


@pytest.mark.parametrize("cell", CELLS)
def test_wavefront_with_lengths_dropout_and_token_ids(cell: str) -> None:
    rng = np.random.default_rng(1)
    T, B, V = 17, 5, 7
    lengths = np.array([17, 0, 9, 3, 12])
    a, b = _pair(cell, np.float64, dropout=0.3)
    x = rng.standard_normal((T, B, 5))
    dy = rng.standard_normal((T, B, 16))
    ya, sa, dxa, _, ga = _run(a, x, dy, lengths=lengths)
    yb, sb, dxb, _, gb = _run(b, x, dy, lengths=lengths)
    # The same masks were drawn (layer after layer), and the same lengths semantics hold.
    assert _rel(yb, ya) <= 1e-12 and np.all(yb[9:, 2] == 0) and np.all(yb[:, 1] == 0)
    for u, v in zip(sb, sa, strict=True):
        assert _rel(u, v) <= 1e-12
    assert _rel(dxb, dxa) <= 1e-11
    for name in ga:
        assert _rel(gb[name], ga[name]) <= 1e-11, name
    # A folded embedding: token ids with an input weight (V columns); dx is None.
    ids = rng.integers(0, V, (T, B))
    w = rng.standard_normal((a.layer_weights(0)[0].shape[0], V))
    for layer in (a, b):
        layer.zero_grad()
        layer.forward(ids, input_weight=w)
        assert layer.backward(dy)[0] is None
    assert _rel(b.input_weight_grad, a.input_weight_grad) <= 1e-11
    assert not b.grads["weight_ih_l0"].any()


def test_wavefront_does_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((19, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((19, 3, 16)).astype(np.float32)
    before = rnncore.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            rnncore.set_num_threads(threads)
            _, b = _pair("LSTM", np.float32)
            results.append(_run(b, x, dy))
    finally:
        rnncore.set_num_threads(before)
    for other in results[1:]:
        assert np.array_equal(other[0], results[0][0]) and np.array_equal(other[2], results[0][2])
        for name in results[0][4]:
            assert np.array_equal(other[4][name], results[0][4][name]), name


def test_a_bidirectional_or_single_layer_stack_keeps_the_default_schedule() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 5))
    for kw, layers in (({"bidirectional": True}, 2), ({}, 1)):
        a, b = _pair("GRU", np.float64, layers=layers, **kw)
        assert b.wavefront
        ya, _ = a.forward(x)
        yb, _ = b.forward(x)
        assert np.array_equal(ya, yb)  # the same calls, so bitwise
        assert not b._tape.wavefront


def test_wavefront_flag_is_checked() -> None:
    layer = rnncore.LSTM(3, 4, 2)
    assert layer.wavefront is False
    with pytest.raises(TypeError, match="wavefront"):
        layer.wavefront = "yes"  # type: ignore[assignment]


def test_chunk_bounds_cover_the_sequence() -> None:
    for T in (1, 2, 7, 8, 9, 50, 1000):
        bounds = wavefront.chunk_bounds(T)
        assert bounds[0][0] == 0 and bounds[-1][1] == T
        assert len(bounds) == min(T, wavefront.CHUNKS)
        assert all(t1 > t0 for t0, t1 in bounds)
        assert all(u[1] == v[0] for u, v in itertools.pairwise(bounds))


def test_run_diagonals_respects_the_dependencies_and_raises_the_first_error() -> None:
    finished: list[tuple[int, int]] = []
    lock = threading.Lock()

    def task(i: int, c: int) -> None:
        with lock:
            assert i == 0 or (i - 1, c) in finished
            assert c == 0 or (i, c - 1) in finished
            finished.append((i, c))

    pool = rnncore.WorkspacePool()
    wavefront.run_diagonals(3, 4, task, pool, 2)
    assert sorted(finished) == [(i, c) for i in range(3) for c in range(4)]

    def failing(i: int, c: int) -> None:
        if (i, c) == (1, 2):
            raise ValueError("task (1, 2) failed")

    with pytest.raises(ValueError, match=r"task \(1, 2\) failed"):
        wavefront.run_diagonals(3, 4, failing, pool, 2)


def test_thread_limit_is_per_os_thread() -> None:
    before = rnncore.get_num_threads()
    rnncore.set_num_threads(2)
    try:
        assert _core._set_thread_limit(1) == 0
        assert rnncore.get_num_threads() == 1
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(rnncore.get_num_threads()))
        t.start()
        t.join()
        assert seen == [2]  # another thread keeps the process-wide count
        assert _core._set_thread_limit(0) == 1
        assert rnncore.get_num_threads() == 2
        with pytest.raises(ValueError, match="_set_thread_limit: n must be between 0 and 4096"):
            _core._set_thread_limit(-1)
    finally:
        _core._set_thread_limit(0)
        rnncore.set_num_threads(before)
