"""Sizes, empty sequences and batches, caches: what docs/reliability.md promises.

Includes the regression tests of the bugs the property tests (tests/test_properties.py)
and this file's size checks found.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import rnncore

F32 = np.float32


def zeros_view(*shape, dtype=F32):
    """A read-only zero-stride view of any shape: costs one element of memory."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def assert_small_allocations(fn, exc, pattern, limit=1 << 20):
    """fn() raises exc matching pattern, and Python-side allocations (NumPy's included) stay
    under `limit` bytes: the call was refused before anything of its size was allocated."""
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=pattern):
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak} bytes allocated before the error"


# --- sizes ---------------------------------------------------------------------------------


def test_zero_stride_x_with_t_2_40_is_refused_before_copying():
    """Regression: the (2**40, 1, 1) view was copied (4 TiB) before its size was checked, and
    the failed copy surfaced as "x must be a float32 array ... that does not convert"."""
    x = zeros_view(2**40, 1, 1)
    w = np.zeros((1, 1), F32)
    assert_small_allocations(
        lambda: rnncore.rnn_forward(x, None, w, w),
        ValueError,
        r"rnn_forward: size T = 1099511627776 exceeds the 32-bit BLAS limit 2147483647",
    )


def test_call_larger_than_the_machine_is_a_memory_error_before_allocating():
    """T*B within the BLAS limit, but x alone (2^50 floats) is more than any machine has."""
    x = zeros_view(2**20, 2**10, 2**20)
    w_ih = zeros_view(1, 2**20)
    assert_small_allocations(
        lambda: rnncore.rnn_forward(x, None, w_ih, np.zeros((1, 1), F32)),
        MemoryError,
        r"rnn_forward: T=1048576, B=1024, D=1048576, H=1 needs at least [\d.]+ GiB, more than "
        r"this machine's memory and swap \([\d.]+ GiB\)",
    )


def test_zero_stride_token_ids_with_t_2_40_do_not_crash():
    """Regression: broadcast token ids failed to convert and were dereferenced as NULL
    (segfault). Run in a child process so that a regression cannot take pytest down."""
    code = (
        "import numpy as np, rnncore\n"
        "x = np.broadcast_to(np.int32(0), (2**40, 1))\n"
        "w = np.zeros((1, 1), np.float32)\n"
        "try:\n"
        "    rnncore.rnn_forward(x, None, w, w)\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ValueError: rnn_forward: size T = 1099511627776 exceeds the 32-bit BLAS" in out.stdout


@pytest.mark.parametrize(
    "fn,G,H,D,pattern",
    [
        # G*H*(D+H+2) elements: overflows size_t once multiplied by the element size
        ("rnn_forward", 1, 2**30, 2**30, r"the weights H\*\(D\+H\+2\) = 1073741824\*2147483650 "
         r"elements is too large to allocate \(the limit is 2\^59 elements\)"),
        ("gru_forward", 3, 2**29, 2**30, r"the weights 3H\*\(D\+H\+2\) = 1610612736\*1610612738 "
         r"elements is too large to allocate"),
        ("lstm_forward", 4, 2**29, 4, r"4H = 2147483648 exceeds the 32-bit BLAS limit 2147483647"),
    ],
)  # fmt: skip
def test_hidden_sizes_whose_workspace_overflows_are_refused(fn, G, H, D, pattern):
    x = zeros_view(1, 1, D)
    w_ih, w_hh = zeros_view(G * H, D), zeros_view(G * H, H)
    states = (None, None) if fn == "lstm_forward" else (None,)
    assert_small_allocations(
        lambda: getattr(rnncore, fn)(x, *states, w_ih, w_hh), ValueError, rf"{fn}: {pattern}"
    )


def test_workspace_of_long_sequence_times_wide_state_is_refused():
    """(T+1)*B*H = 2^31 * 2^30 elements: refused by the size check, not by a failed malloc."""
    x = zeros_view(2**31 - 1, 1, 1)
    w_ih, w_hh = zeros_view(2**30, 1), zeros_view(2**30, 2**30)
    assert_small_allocations(
        lambda: rnncore.rnn_forward(x, None, w_ih, w_hh),
        ValueError,
        r"rnn_forward: the workspace \(T\+1\)\*B\*H = 2147483648\*1\*1073741824 elements is too "
        r"large",
    )


def test_backward_checks_upstream_shapes_before_copying_them():
    w = np.zeros((2, 3), F32)
    _, _, cache = rnncore.rnn_forward(np.zeros((2, 1, 3), F32), None, w, np.zeros((2, 2), F32))
    assert_small_allocations(
        lambda: rnncore.rnn_backward(zeros_view(2**40, 1, 2), None, cache),
        ValueError,
        r"rnn_backward: dy must have shape \(T, B, H\) with T = 2 \(from the cache\), got shape "
        r"\(1099511627776, 1, 2\)",
    )


# --- layouts and dtypes --------------------------------------------------------------------


def test_layers_accept_non_native_byte_order():
    """Regression: the kernels took big-endian float arrays, the layers refused them as
    "must have dtype float32, got >f4"."""
    rng = np.random.default_rng(0)
    lstm = rnncore.LSTM(3, 4, 2, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(F32)
    want_y, want_state = lstm.forward(x)
    zeros = tuple(np.zeros_like(s).astype(">f4") for s in want_state)
    assert zeros[0].dtype.byteorder == ">"
    y, _ = lstm.forward(x.astype(">f4"), zeros)
    np.testing.assert_array_equal(y, want_y)
    dx, _ = lstm.backward(np.ones_like(y).astype(">f4"))
    assert dx.dtype == F32 and dx.shape == x.shape
    with pytest.raises(TypeError, match=r"LSTM.forward: x must have dtype float32 .*got >f8"):
        lstm.forward(x.astype(">f8"))


def test_misaligned_inputs_are_copied_to_aligned_memory():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5)).astype(F32)
    buf = np.zeros(x.nbytes + 1, np.uint8)
    mis = np.ndarray(x.shape, F32, buffer=buf, offset=1)
    mis[...] = x
    assert not mis.flags.aligned
    w_ih, w_hh = rng.standard_normal((9, 5)).astype(F32), rng.standard_normal((9, 3)).astype(F32)
    for training in (True, False):
        want = rnncore.gru_forward(x, None, w_ih, w_hh, training=training)[0]
        got = rnncore.gru_forward(mis, None, w_ih, w_hh, training=training)[0]
        np.testing.assert_array_equal(got, want)


def test_dtype_message_names_what_set_the_dtype():
    w32 = np.zeros((3, 2), F32)
    with pytest.raises(
        TypeError,
        match=r"rnn_forward: w_hh must have dtype float64 \(the dtype of the weights\), got "
        r"float32; the call's dtype is set by w_ih$",
    ):
        rnncore.rnn_forward(np.zeros((1, 1, 2)), None, np.zeros((3, 2)), np.zeros((3, 3), F32))
    _, _, cache = rnncore.rnn_forward(np.zeros((1, 1, 2), F32), None, w32, np.zeros((3, 3), F32))
    with pytest.raises(TypeError, match=r"dh_n must have dtype float32 .*set by the cache$"):
        rnncore.rnn_backward(None, np.zeros((1, 3)), cache)


def test_sample_loop_rejects_a_strided_rng_state():
    """A strided uint64 view would have been written as if contiguous (private API)."""
    layers = [(np.zeros((3, 3), F32), np.zeros((3, 3), F32), None, None)]
    sampler = rnncore._core._Sampler("rnn_tanh", layers, None, np.zeros((3, 3), F32), None)
    h = np.zeros((1, 3), F32)
    rng_state = np.zeros(8, np.uint64)[::2]
    with pytest.raises(TypeError, match=r"rng_state must be a writeable C-contiguous uint64"):
        sampler.run(h, None, np.array([0]), 2, 1.0, 0, False, rng_state)


def test_sampler_checks_its_state_against_the_model():
    """The Sampler knows its model's (L, H): a state of another shape is refused by name."""
    layers = [(np.zeros((3, 3), F32), np.zeros((3, 3), F32), None, None)]
    sampler = rnncore._core._Sampler("rnn_tanh", layers, None, np.zeros((3, 3), F32), None)
    rng_state = np.zeros(4, np.uint64)
    with pytest.raises(ValueError, match=r"_Sampler.run: h must be .* shape \(1, 3\), got shape"):
        sampler.run(np.zeros((2, 3), F32), None, np.array([0]), 2, 1.0, 0, False, rng_state)
    with pytest.raises(ValueError, match=r"_Sampler: cell must be rnn_tanh, .* got 'lstmx'"):
        rnncore._core._Sampler("lstmx", layers, None, np.zeros((3, 3), F32), None)


# --- T = 0 and B = 0 -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layers_with_an_empty_sequence(kind):
    """T = 0: y is (0, B, H), the final state is the initial state, dx is (0, B, D), dstate0
    is dstate, and every parameter gradient is zero."""
    rng = np.random.default_rng(2)
    layer = getattr(rnncore, kind)(3, 4, 2, dtype=np.float64, seed=0)
    L, B, H = 2, 5, 4
    s0 = rng.standard_normal((L, B, H))
    state = (s0, s0 + 1) if kind == "LSTM" else s0
    y, final = layer.forward(np.zeros((0, B, 3)), state)
    assert y.shape == (0, B, H)
    for a, b in zip(final, state, strict=True) if kind == "LSTM" else [(final, state)]:
        np.testing.assert_array_equal(a, b)
    ds = rng.standard_normal((L, B, H))
    dstate = (ds, 2 * ds) if kind == "LSTM" else ds
    dx, d0 = layer.backward(np.zeros((0, B, H)), dstate)
    assert dx.shape == (0, B, 3)
    for a, b in zip(d0 if kind == "LSTM" else [d0], dstate if kind == "LSTM" else [ds],
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert all(not g.any() for g in layer.grads.values())


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layers_with_an_empty_batch(kind):
    """B = 0: every output and state is empty, every parameter gradient zero."""
    layer = getattr(rnncore, kind)(3, 4, 2, seed=0)
    y, final = layer.forward(np.zeros((6, 0, 3), F32))
    assert y.shape == (6, 0, 4)
    for s in final if kind == "LSTM" else [final]:
        assert s.shape == (2, 0, 4)
    dx, d0 = layer.backward(np.zeros((6, 0, 4), F32))
    assert dx.shape == (6, 0, 3)
    for s in d0 if kind == "LSTM" else [d0]:
        assert s.shape == (2, 0, 4)
    assert all(not g.any() for g in layer.grads.values())


def test_kernels_with_zero_input_or_hidden_size():
    """D = 0 (no input features) and H = 0 (no hidden units) are valid: D = 0 is a pure
    recurrence from h0, H = 0 has empty outputs."""
    rng = np.random.default_rng(3)
    w_hh = rng.standard_normal((2, 2)) * 0.5
    h0 = rng.standard_normal((3, 2))
    y, h_n, _ = rnncore.rnn_forward(np.zeros((4, 3, 0)), h0, np.zeros((2, 0)), w_hh)
    want = rnncore.reference.rnn_forward(np.zeros((4, 3, 0)), h0, np.zeros((2, 0)), w_hh)[0]
    np.testing.assert_allclose(y, want, rtol=1e-12)
    y, h_n, _, cache = rnncore.lstm_forward(np.ones((4, 3, 5)), None, None, np.zeros((0, 5)),
                                            np.zeros((0, 0)))  # fmt: skip
    assert y.shape == (4, 3, 0) and h_n.shape == (3, 0)
    dx = rnncore.lstm_backward(None, None, None, cache)[0]
    np.testing.assert_array_equal(dx, np.zeros((4, 3, 5)))


# --- caches --------------------------------------------------------------------------------


def test_layer_backward_twice_adds_the_gradients_twice():
    """The caches stay on the layer until the next forward: a second backward gives the same
    dx and dstate0 and adds the same parameter gradients again."""
    rng = np.random.default_rng(4)
    gru = rnncore.GRU(3, 5, 2, dtype=np.float64, seed=0)
    x, dy = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 5))
    gru.forward(x)
    dx1, d01 = gru.backward(dy)
    once = {k: v.copy() for k, v in gru.grads.items()}
    dx2, d02 = gru.backward(dy)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(d01, d02)
    for k, v in gru.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-15, atol=0)


def test_layer_backward_after_inference_forward_is_a_runtime_error():
    lstm = rnncore.LSTM(2, 3, seed=0)
    lstm.forward(np.zeros((2, 1, 2), F32))
    lstm.forward(np.zeros((2, 1, 2), F32), training=False)  # drops the caches
    with pytest.raises(RuntimeError, match=r"LSTM.backward: nothing to backpropagate through"):
        lstm.backward(None)
