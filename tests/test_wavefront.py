"""The wavefront schedule of a stack (rnncore.wavefront) against the default, layer after layer.

Every layer's kernel call runs at once, on its own thread, handing rows over through step
streams. The arithmetic is the default schedule's element by element, so float32 on the packed
kernel agrees bitwise. float64 runs the input side on OpenBLAS, whose projection and dx now go
by chunks of rows (dx one step, each thread's share of its B rows, per call) instead of all T*B
rows in one: 1e-12 relative covers a different blocking of the same sums.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

import rnncore
from rnncore import _core, wavefront

CELLS = ("RNN", "LSTM", "GRU")


@pytest.fixture(autouse=True)
def _threads_for_every_layer():
    """The wavefront needs a thread per layer (3 here); oversubscribing the cores is fine for
    the results, which do not depend on the thread count."""
    before = rnncore.get_num_threads()
    rnncore.set_num_threads(4)
    yield
    rnncore.set_num_threads(before)


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
    T, B = 23, 4
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
    assert b._tape.wavefront == (cell == "LSTM")  # the other cells keep the default schedule
    exact = dtype == np.float32  # the packed kernel; float64 runs on OpenBLAS
    tol, wtol = (0.0, 0.0) if exact else (1e-12, 1e-12)
    assert _rel(yb, ya) <= tol
    for u, v in zip(sb, sa, strict=True):
        assert _rel(u, v) <= tol
    assert _rel(dxb, dxa) <= max(tol, wtol)
    for u, v in zip(dsb, dsa, strict=True):
        assert _rel(u, v) <= max(tol, wtol)
    for name in ga:
        assert _rel(gb[name], ga[name]) <= wtol, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wavefront_with_dropout_and_token_ids(dtype: type) -> None:
    rng = np.random.default_rng(1)
    T, B, V = 17, 5, 7
    a, b = _pair("LSTM", dtype, dropout=0.3)
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    dy = rng.standard_normal((T, B, 16)).astype(dtype)
    ya, sa, dxa, _, ga = _run(a, x, dy)
    yb, sb, dxb, _, gb = _run(b, x, dy)
    assert b._tape.wavefront
    # The same masks were drawn (layer after layer) and applied by the producing layer.
    tol = 0.0 if dtype == np.float32 else 1e-12
    assert _rel(yb, ya) <= tol and _rel(dxb, dxa) <= tol
    for u, v in zip(sb, sa, strict=True):
        assert _rel(u, v) <= tol
    for name in ga:
        assert _rel(gb[name], ga[name]) <= tol, name
    # A folded embedding: token ids with an input weight (V columns); dx is None.
    ids = rng.integers(0, V, (T, B))
    w = rng.standard_normal((a.layer_weights(0)[0].shape[0], V)).astype(dtype)
    for layer in (a, b):
        layer.zero_grad()
        layer.forward(ids, input_weight=w)
        assert layer.backward(dy)[0] is None
    assert b._tape.wavefront
    assert _rel(b.input_weight_grad, a.input_weight_grad) <= tol
    assert not b.grads["weight_ih_l0"].any()


def test_wavefront_with_lengths_runs_the_default_schedule() -> None:
    rng = np.random.default_rng(4)
    a, b = _pair("LSTM", np.float64)
    x = rng.standard_normal((9, 3, 5))
    lengths = np.array([9, 0, 4])
    ya, _ = a.forward(x, lengths=lengths)
    yb, _ = b.forward(x, lengths=lengths)
    assert not b._tape.wavefront and np.array_equal(ya, yb)


def test_results_do_not_depend_on_the_thread_count_or_the_schedule() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((19, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((19, 3, 16)).astype(np.float32)
    results, schedules = [], []
    for threads in (1, 2, 3, 6):  # 3 layers: the default schedule below 3 threads
        rnncore.set_num_threads(threads)
        _, b = _pair("LSTM", np.float32)
        results.append(_run(b, x, dy))
        schedules.append(b._tape.wavefront)
    assert schedules == [False, False, True, True]
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


def test_run_layers_runs_every_layer_at_once_and_raises_the_first_error() -> None:
    pool = rnncore.WorkspacePool()
    barrier = threading.Barrier(3, timeout=10)  # passes only if all three run at the same time
    seen: list[int] = []
    wavefront.run_layers(3, lambda i: (barrier.wait(), seen.append(i)), pool, 2, lambda i: None)
    assert sorted(seen) == [0, 1, 2]
    failed: list[int] = []

    def task(i: int) -> None:
        if i == 1:
            raise ValueError("layer 1 failed")

    with pytest.raises(ValueError, match="layer 1 failed"):
        wavefront.run_layers(3, task, pool, 2, failed.append)
    assert failed == [1]


def _lstm_weights(rng, D: int, H: int):
    return [rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((4 * H, D), (4 * H, H))]


def _two_layers(seed: int, T: int, B: int, D: int, H: int):
    """x (T,B,D), the weights of two LSTM layers (D -> H -> H) and a dropout mask (T,B,H)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    w0, w1 = _lstm_weights(rng, D, H), _lstm_weights(rng, H, H)
    mask = (rng.random((T, B, H)) > 0.5).astype(np.float32) * 2
    return rng, x, w0, w1, mask


def test_streams_hand_over_rows_and_a_failed_producer_stops_its_consumer() -> None:
    T, B, D, H = 6, 2, 3, 4
    _, x, w0, w1, mask = _two_layers(5, T, B, D, H)
    y0 = _core.lstm_forward(x, None, None, *w0)[0]
    want = _core.lstm_forward(y0 * mask, None, None, *w1)[0]
    s = _core._StepStream(np.empty((T, B, H), np.float32), mask)
    got: list = []
    t = threading.Thread(
        target=lambda: got.append(_core.lstm_forward(s.rows, None, None, *w1, stream_in=s)[0]),
        daemon=True,
    )
    t.start()
    _core.lstm_forward(x, None, None, *w0, stream_out=s)
    t.join(timeout=30)
    assert not t.is_alive(), "the consumer did not finish"
    assert s.done == T and not s.failed and np.array_equal(got[0], want)

    # The producer fails (a bad h0): the consumer stops waiting and raises.
    s = _core._StepStream(np.empty((T, B, H), np.float32))
    errors: list = []

    def consume() -> None:
        try:
            _core.lstm_forward(s.rows, None, None, *w1, stream_in=s)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    with pytest.raises(ValueError, match="h0"):
        _core.lstm_forward(x, np.zeros((B + 1, H), np.float32), None, *w0, stream_out=s)
    t.join(timeout=30)
    assert not t.is_alive() and s.failed
    assert len(errors) == 1 and "stream_in failed" in str(errors[0])


def test_stream_arguments_are_checked() -> None:
    rng = np.random.default_rng(6)
    T, B, D, H = 4, 2, 3, 4
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    w = _lstm_weights(rng, D, H)
    s = _core._StepStream(np.empty((T, B, H), np.float32))
    with pytest.raises(ValueError, match=r"stream_out.rows must be float32 of shape \(4, 2, 4\)"):
        _core.lstm_forward(x, None, None, *w, stream_out=_core._StepStream(np.empty((T, B, 5))))
    with pytest.raises(ValueError, match=r"x must be stream_in\.rows itself"):
        _core.lstm_forward(x.copy(), None, None, *w, stream_in=_core._StepStream(x))
    with pytest.raises(ValueError, match="need every length T and reverse=False, got lengths < T"):
        _core.lstm_forward(x, None, None, *w, lengths=np.array([4, 2]), stream_out=s)
    with pytest.raises(TypeError, match="stream_out must be a _StepStream or None, got list"):
        _core.lstm_forward(x, None, None, *w, stream_out=[])
    with pytest.raises(ValueError, match="writable C-contiguous"):
        _core._StepStream(np.empty((T, B, H), np.float32)[:, :, ::2])
    cache = _core.lstm_forward(x, None, None, *w)[3]
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    with pytest.raises(ValueError, match=r"dy must be stream_in\.rows itself"):
        _core.lstm_backward(dy, None, None, cache, stream_in=s)
    with pytest.raises(ValueError, match=r"stream_out.rows must be float32 of shape \(4, 2, 3\)"):
        _core.lstm_backward(dy, None, None, cache, stream_out=s)


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


def test_backward_streams_hand_over_dx_and_a_failed_producer_stops_its_consumer() -> None:
    T, B, D, H = 7, 3, 4, 5
    rng, x, w0, w1, mask = _two_layers(7, T, B, D, H)
    y0, _, _, c0 = _core.lstm_forward(x, None, None, *w0)
    c1 = _core.lstm_forward(y0, None, None, *w1)[3]
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    want1 = _core.lstm_backward(dy, None, None, c1)
    want0 = _core.lstm_backward(want1[0] * mask, None, None, c0)
    s = _core._StepStream(np.empty((T, B, H), np.float32), mask)
    got: list = []
    t = threading.Thread(
        target=lambda: got.append(_core.lstm_backward(s.rows, None, None, c0, stream_in=s)),
        daemon=True,
    )
    t.start()
    top = _core.lstm_backward(dy, None, None, c1, stream_out=s)
    t.join(timeout=30)
    assert not t.is_alive(), "the consumer did not finish"
    assert top[0] is None and s.done == T
    for u, v in zip(top[1:], want1[1:], strict=True):  # dh0, dc0 and the weight gradients
        assert u is v is None or np.array_equal(u, v)
    for u, v in zip(got[0], want0, strict=True):
        assert u is v is None or np.array_equal(u, v)

    # The producer fails (a bad dh_n): the consumer stops waiting and raises; a used stream
    # cannot carry a second call's rows.
    with pytest.raises(ValueError, match="stream_out must be a new _StepStream, got one with 7"):
        _core.lstm_backward(dy, None, None, c1, stream_out=s)
    s = _core._StepStream(np.empty((T, B, H), np.float32))
    errors: list = []

    def consume() -> None:
        try:
            _core.lstm_backward(s.rows, None, None, c0, stream_in=s)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    with pytest.raises(ValueError, match="dh_n"):
        _core.lstm_backward(dy, np.zeros((B, H + 1), np.float32), None, c1, stream_out=s)
    t.join(timeout=30)
    assert not t.is_alive() and s.failed
    assert len(errors) == 1 and "stream_in failed" in str(errors[0])
    with pytest.raises(ValueError, match="stream_out must not be stream_in"):
        _core.lstm_forward(s.rows, None, None, *w1, stream_in=s, stream_out=s)


@pytest.mark.parametrize(
    ("cell", "kw"),
    [("rnn", {}), ("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})],
)
def test_the_input_projection_by_chunks_changes_no_element(cell: str, kw: dict) -> None:
    # 5000 rows: InputProjection takes about 256 KB of gate columns a chunk, so one thread's G*H
    # columns (32 to 128 here) make 3 to 10 chunks. Feeding the same sequence in pieces of 7
    # steps (other row ranges for every product) gives the whole-sequence call's y bitwise on
    # the packed float32 kernel.
    rng = np.random.default_rng(8)
    T, B, D, H = 100, 50, 24, 32
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    fwd = getattr(_core, f"{cell}_forward")
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    w = [rng.standard_normal(sh).astype(np.float32) * 0.2 for sh in ((G * H, D), (G * H, H))]
    states = (None, None) if cell == "lstm" else (None,)
    whole = fwd(x, *states, *w, training=False, **kw)[0]
    pieces, carry = [], states
    for t0 in range(0, T, 7):
        out = fwd(x[t0 : t0 + 7], *carry, *w, training=False, **kw)
        pieces.append(out[0])
        carry = tuple(out[1 : 1 + len(states)])
    assert np.array_equal(np.concatenate(pieces), whole)


def test_wavefront_over_many_chunks_matches_bitwise() -> None:
    # T*B = 1200 rows: the consumer's input projection waits for several chunks in turn.
    rng = np.random.default_rng(9)
    T, B = 60, 20
    a, b = _pair("LSTM", np.float32, layers=2, dropout=0.2)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    dy = rng.standard_normal((T, B, 16)).astype(np.float32)
    ya, sa, dxa, dsa, ga = _run(a, x, dy)
    yb, sb, dxb, dsb, gb = _run(b, x, dy)
    assert b._tape.wavefront
    assert np.array_equal(ya, yb) and np.array_equal(dxa, dxb)
    for u, v in (*zip(sa, sb, strict=True), *zip(dsa, dsb, strict=True)):
        assert np.array_equal(u, v)
    for name in ga:
        assert np.array_equal(ga[name], gb[name]), name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_wavefront_on_threads_of_its_own() -> None:
    # The parent's persistent workers do not exist in a child: it must start its own instead of
    # waiting on theirs forever.
    rng = np.random.default_rng(10)
    _, b = _pair("LSTM", np.float32, layers=2)
    x = rng.standard_normal((5, 2, 5)).astype(np.float32)
    want, _ = b.forward(x)  # starts the parent's workers
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_forward_in_child, args=(b, x, out))  # forked: nothing pickled
    child.start()
    try:
        got = out.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert not isinstance(got, str), got
    assert np.array_equal(got, want)


def _forward_in_child(layer, x, out) -> None:
    try:
        y, _ = layer.forward(x)
        out.put(y if layer._tape.wavefront else "the child ran the default schedule")
    except BaseException as e:
        out.put(f"the child failed: {e!r}")
