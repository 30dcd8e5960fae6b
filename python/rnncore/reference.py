"""NumPy reference implementation of vanilla RNN, LSTM and GRU over a whole sequence.

This module is the test oracle and the benchmark baseline of the C++ kernels of rnncore. It is
written to be read and checked by eye, not to be fast: every cell is a plain loop over time (in
the style of min-char-rnn) with one batched matrix product per weight matrix and step.

Conventions are PyTorch's nn.RNN / nn.LSTM / nn.GRU (one layer, one direction, batch_first=False):
same equations, same weight layout, same gate order.

Shape legend
------------
    T           sequence length (number of time steps)
    B           batch size
    D           input size
    H           hidden size
    G           gates stacked in the weights: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    x           (T, B, D)    inputs, time-major
    h0, c0      (B, H)       initial hidden / cell state (None means zeros)
    y           (T, B, H)    y[t] is the hidden state after step t
    h_n, c_n    (B, H)       final hidden / cell state (h_n equals y[T-1] when T > 0)
    w_ih        (G*H, D)     input-to-hidden weights, gate blocks stacked by rows
    w_hh        (G*H, H)     hidden-to-hidden weights, gate blocks stacked by rows
    b_ih, b_hh  (G*H,)       biases (None means no bias)

Every gradient has the shape of the array it is the gradient of (dx: (T, B, D), dw_ih: (G*H, D),
...). The backward functions take dy = dL/dy and dh_n = dL/dh_n (and dc_n = dL/dc_n) for some
scalar loss L; dh_n is the gradient flowing into h_n as an output of its own and is added to
dy[T-1]. Any of them may be None, meaning zeros.

Time indexing inside the loops: hs[t] is the hidden state entering step t (hs[0] = h0) and
hs[t + 1] the one leaving it; likewise cs for the LSTM cell state.

All arithmetic is done in the dtype of w_ih (float32 or float64); the other inputs are cast to it.
A forward with training=True returns a cache holding private copies of what its backward needs;
backward only reads the cache, so it can be called any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "GRUCache",
    "LSTMCache",
    "RNNCache",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
]

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _sigmoid(a: Array) -> Array:
    """Logistic sigmoid 1 / (1 + exp(-a)), elementwise; finite and warning-free for any finite a."""
    # exp(-|a|) lies in [0, 1], so it never overflows. For large |a| it underflows to 0, which is
    # the correctly rounded result (sigmoid saturates to exactly 0 or 1), so that is not reported.
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(a))  # same shape as a
        return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _compute_dtype(w: Array) -> np.dtype:
    """The dtype to compute in: the weights' floating dtype (float64 for non-float weights)."""
    dtype = np.asarray(w).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _copy_as(a: Array, dtype: np.dtype) -> Array:
    """A private copy of a, cast to dtype."""
    return np.array(a, dtype=dtype, copy=True)


def _or_zeros(a: Array | None, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """A private copy of a cast to dtype, or zeros of the given shape when a is None."""
    return np.zeros(shape, dtype) if a is None else _copy_as(a, dtype)


# --------------------------------------------------------------------------------------------
# Vanilla RNN
#   a_t = x_t @ w_ih.T + b_ih + h_{t-1} @ w_hh.T + b_hh
#   h_t = act(a_t),  act = tanh or relu
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RNNCache:
    """What rnn_backward needs from rnn_forward. Read-only."""

    x: Array  # (T, B, D)
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = y[t]
    w_ih: Array  # (H, D)
    w_hh: Array  # (H, H)
    has_b_ih: bool
    has_b_hh: bool
    nonlinearity: str  # "tanh" or "relu"


def rnn_forward(
    x: Array,
    h0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    training: bool = True,
) -> tuple[Array, Array, RNNCache | None]:
    """Vanilla (Elman) RNN over a whole sequence, as torch.nn.RNN.

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        w_ih: (H, D) input-to-hidden weights.
        w_hh: (H, H) hidden-to-hidden weights.
        b_ih, b_hh: (H,) biases, or None.
        nonlinearity: "tanh" or "relu".
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state of every step.
        h_n: (B, H) final hidden state.
        cache: RNNCache for rnn_backward, or None when training is False.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    dtype = _compute_dtype(w_ih)
    x = _copy_as(x, dtype)  # (T, B, D)
    w_ih = _copy_as(w_ih, dtype)  # (H, D)
    w_hh = _copy_as(w_hh, dtype)  # (H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    bias_ih = _or_zeros(b_ih, (H,), dtype)  # (H,)
    bias_hh = _or_zeros(b_hh, (H,), dtype)  # (H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = _or_zeros(h0, (B, H), dtype)
    for t in range(T):
        a = x[t] @ w_ih.T + bias_ih + hs[t] @ w_hh.T + bias_hh  # (B, H) pre-activation
        hs[t + 1] = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)  # (B, H)

    y = hs[1:].copy()  # (T, B, H)
    h_n = hs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = RNNCache(x, hs, w_ih, w_hh, b_ih is not None, b_hh is not None, nonlinearity)
    return y, h_n, cache


def rnn_backward(
    dy: Array | None, dh_n: Array | None, cache: RNNCache
) -> tuple[Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of rnn_forward (backpropagation through time).

    Args:
        dy: (T, B, H) dL/dy, or None for zeros.
        dh_n: (B, H) dL/dh_n, or None for zeros.
        cache: the cache returned by rnn_forward(..., training=True); not modified.

    Returns:
        dx: (T, B, D), dh0: (B, H), dw_ih: (H, D), dw_hh: (H, H),
        db_ih: (H,) or None if b_ih was None, db_hh: (H,) or None if b_hh was None.
    """
    x, hs, w_ih, w_hh = cache.x, cache.hs, cache.w_ih, cache.w_hh
    dtype = hs.dtype
    T, B, _ = x.shape
    H = hs.shape[2]
    dy = _or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    dh = _or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (H, D)
    dw_hh = np.zeros_like(w_hh)  # (H, H)
    db = np.zeros(H, dtype)  # (H,) gradient of either bias (both enter a_t the same way)
    for t in reversed(range(T)):
        dh = dh + dy[t]  # (B, H) total dL/dh leaving step t
        h = hs[t + 1]  # (B, H)
        if cache.nonlinearity == "tanh":
            da = dh * (1 - h * h)  # (B, H) dL/da, tanh' = 1 - tanh^2
        else:
            da = dh * (h > 0)  # (B, H) dL/da, relu' = 1 where a > 0 (i.e. h > 0), else 0
        dx[t] = da @ w_ih  # (B, D)
        dw_ih += da.T @ x[t]  # (H, D)
        dw_hh += da.T @ hs[t]  # (H, H)
        db += da.sum(axis=0)  # (H,)
        dh = da @ w_hh  # (B, H) dL/dh entering step t

    db_ih = db.copy() if cache.has_b_ih else None
    db_hh = db.copy() if cache.has_b_hh else None
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# --------------------------------------------------------------------------------------------
# LSTM, gate order i, f, g, o (rows [0:H], [H:2H], [2H:3H], [3H:4H] of w_ih, w_hh, biases)
#   a_t = x_t @ w_ih.T + b_ih + h_{t-1} @ w_hh.T + b_hh           (B, 4H)
#   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
#   c_t = f * c_{t-1} + i * g
#   h_t = o * tanh(c_t)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LSTMCache:
    """What lstm_backward needs from lstm_forward. Read-only."""

    x: Array  # (T, B, D)
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = y[t]
    cs: Array  # (T+1, B, H)  cs[0] = c0, cs[t+1] = cell state after step t
    i: Array  # (T, B, H) input gate
    f: Array  # (T, B, H) forget gate
    g: Array  # (T, B, H) cell candidate
    o: Array  # (T, B, H) output gate
    tanh_c: Array  # (T, B, H) tanh(cs[t+1])
    w_ih: Array  # (4H, D)
    w_hh: Array  # (4H, H)
    has_b_ih: bool
    has_b_hh: bool


def lstm_forward(
    x: Array,
    h0: Array | None,
    c0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    training: bool = True,
) -> tuple[Array, Array, Array, LSTMCache | None]:
    """LSTM over a whole sequence, as torch.nn.LSTM (gate order i, f, g, o).

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        c0: (B, H) initial cell state, or None for zeros.
        w_ih: (4H, D) input-to-hidden weights.
        w_hh: (4H, H) hidden-to-hidden weights.
        b_ih, b_hh: (4H,) biases, or None.
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state of every step.
        h_n: (B, H) final hidden state.
        c_n: (B, H) final cell state.
        cache: LSTMCache for lstm_backward, or None when training is False.
    """
    dtype = _compute_dtype(w_ih)
    x = _copy_as(x, dtype)  # (T, B, D)
    w_ih = _copy_as(w_ih, dtype)  # (4H, D)
    w_hh = _copy_as(w_hh, dtype)  # (4H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    bias_ih = _or_zeros(b_ih, (4 * H,), dtype)  # (4H,)
    bias_hh = _or_zeros(b_hh, (4 * H,), dtype)  # (4H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    cs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = _or_zeros(h0, (B, H), dtype)
    cs[0] = _or_zeros(c0, (B, H), dtype)
    i = np.empty((T, B, H), dtype)  # (T, B, H)
    f = np.empty((T, B, H), dtype)  # (T, B, H)
    g = np.empty((T, B, H), dtype)  # (T, B, H)
    o = np.empty((T, B, H), dtype)  # (T, B, H)
    tanh_c = np.empty((T, B, H), dtype)  # (T, B, H)
    for t in range(T):
        a = x[t] @ w_ih.T + bias_ih + hs[t] @ w_hh.T + bias_hh  # (B, 4H) gate pre-activations
        i[t] = _sigmoid(a[:, 0 * H : 1 * H])  # (B, H)
        f[t] = _sigmoid(a[:, 1 * H : 2 * H])  # (B, H)
        g[t] = np.tanh(a[:, 2 * H : 3 * H])  # (B, H)
        o[t] = _sigmoid(a[:, 3 * H : 4 * H])  # (B, H)
        cs[t + 1] = f[t] * cs[t] + i[t] * g[t]  # (B, H)
        tanh_c[t] = np.tanh(cs[t + 1])  # (B, H)
        hs[t + 1] = o[t] * tanh_c[t]  # (B, H)

    y = hs[1:].copy()  # (T, B, H)
    h_n = hs[T].copy()  # (B, H)
    c_n = cs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = LSTMCache(
            x, hs, cs, i, f, g, o, tanh_c, w_ih, w_hh, b_ih is not None, b_hh is not None
        )
    return y, h_n, c_n, cache


def lstm_backward(
    dy: Array | None, dh_n: Array | None, dc_n: Array | None, cache: LSTMCache
) -> tuple[Array, Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of lstm_forward (backpropagation through time).

    Args:
        dy: (T, B, H) dL/dy, or None for zeros.
        dh_n: (B, H) dL/dh_n, or None for zeros.
        dc_n: (B, H) dL/dc_n, or None for zeros.
        cache: the cache returned by lstm_forward(..., training=True); not modified.

    Returns:
        dx: (T, B, D), dh0: (B, H), dc0: (B, H), dw_ih: (4H, D), dw_hh: (4H, H),
        db_ih: (4H,) or None if b_ih was None, db_hh: (4H,) or None if b_hh was None.
    """
    x, hs, cs, w_ih, w_hh = cache.x, cache.hs, cache.cs, cache.w_ih, cache.w_hh
    dtype = hs.dtype
    T, B, _ = x.shape
    H = hs.shape[2]
    dy = _or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    dh = _or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps
    dc = _or_zeros(dc_n, (B, H), dtype)  # (B, H) dL/dc flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (4H, D)
    dw_hh = np.zeros_like(w_hh)  # (4H, H)
    db = np.zeros(4 * H, dtype)  # (4H,) gradient of either bias
    for t in reversed(range(T)):
        i, f, g, o, tanh_c = cache.i[t], cache.f[t], cache.g[t], cache.o[t], cache.tanh_c[t]
        dh = dh + dy[t]  # (B, H) total dL/dh_t
        # h_t = o * tanh(c_t)
        do = dh * tanh_c  # (B, H)
        dc = dc + dh * o * (1 - tanh_c * tanh_c)  # (B, H) total dL/dc_t
        # c_t = f * c_{t-1} + i * g
        di = dc * g  # (B, H)
        df = dc * cs[t]  # (B, H)
        dg = dc * i  # (B, H)
        # through the gate nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - tanh^2
        da = np.concatenate(
            [di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1
        )  # (B, 4H) dL/d(gate pre-activations)
        dx[t] = da @ w_ih  # (B, D)
        dw_ih += da.T @ x[t]  # (4H, D)
        dw_hh += da.T @ hs[t]  # (4H, H)
        db += da.sum(axis=0)  # (4H,)
        dh = da @ w_hh  # (B, H) dL/dh_{t-1}
        dc = dc * f  # (B, H) dL/dc_{t-1}

    db_ih = db.copy() if cache.has_b_ih else None
    db_hh = db.copy() if cache.has_b_hh else None
    return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh


# --------------------------------------------------------------------------------------------
# GRU, gate order r, z, n (rows [0:H], [H:2H], [2H:3H] of w_ih, w_hh, biases)
#   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
#   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
#   reset_after=True (PyTorch):       n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
#   reset_after=False (Cho et al.):   n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
#   h' = (1 - z) * n + z * h
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GRUCache:
    """What gru_backward needs from gru_forward. Read-only."""

    x: Array  # (T, B, D)
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = y[t]
    r: Array  # (T, B, H) reset gate
    z: Array  # (T, B, H) update gate
    n: Array  # (T, B, H) candidate state
    gh_n: Array  # (T, B, H) hidden-side term of n: W_hn h + b_hn, or W_hn (r*h) + b_hn
    w_ih: Array  # (3H, D)
    w_hh: Array  # (3H, H)
    has_b_ih: bool
    has_b_hh: bool
    reset_after: bool


def gru_forward(
    x: Array,
    h0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    reset_after: bool = True,
    training: bool = True,
) -> tuple[Array, Array, GRUCache | None]:
    """GRU over a whole sequence (gate order r, z, n).

    reset_after=True is torch.nn.GRU (reset gate applied after the hidden matmul);
    reset_after=False is the original GRU of Cho et al. (reset gate applied to h before it).

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        w_ih: (3H, D) input-to-hidden weights.
        w_hh: (3H, H) hidden-to-hidden weights.
        b_ih, b_hh: (3H,) biases, or None.
        reset_after: where the reset gate is applied, see above.
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state of every step.
        h_n: (B, H) final hidden state.
        cache: GRUCache for gru_backward, or None when training is False.
    """
    dtype = _compute_dtype(w_ih)
    x = _copy_as(x, dtype)  # (T, B, D)
    w_ih = _copy_as(w_ih, dtype)  # (3H, D)
    w_hh = _copy_as(w_hh, dtype)  # (3H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    bias_ih = _or_zeros(b_ih, (3 * H,), dtype)  # (3H,)
    bias_hh = _or_zeros(b_hh, (3 * H,), dtype)  # (3H,)
    w_hrz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]  # (2H, H), (H, H)
    b_hrz, b_hn = bias_hh[: 2 * H], bias_hh[2 * H :]  # (2H,), (H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = _or_zeros(h0, (B, H), dtype)
    r = np.empty((T, B, H), dtype)  # (T, B, H)
    z = np.empty((T, B, H), dtype)  # (T, B, H)
    n = np.empty((T, B, H), dtype)  # (T, B, H)
    gh_n = np.empty((T, B, H), dtype)  # (T, B, H)
    for t in range(T):
        h = hs[t]  # (B, H)
        gi = x[t] @ w_ih.T + bias_ih  # (B, 3H) input-side pre-activations of r, z, n
        gh_rz = h @ w_hrz.T + b_hrz  # (B, 2H) hidden-side pre-activations of r, z
        r[t] = _sigmoid(gi[:, 0:H] + gh_rz[:, 0:H])  # (B, H)
        z[t] = _sigmoid(gi[:, H : 2 * H] + gh_rz[:, H : 2 * H])  # (B, H)
        if reset_after:
            gh_n[t] = h @ w_hn.T + b_hn  # (B, H)
            n[t] = np.tanh(gi[:, 2 * H :] + r[t] * gh_n[t])  # (B, H)
        else:
            gh_n[t] = (r[t] * h) @ w_hn.T + b_hn  # (B, H)
            n[t] = np.tanh(gi[:, 2 * H :] + gh_n[t])  # (B, H)
        hs[t + 1] = (1 - z[t]) * n[t] + z[t] * h  # (B, H)

    y = hs[1:].copy()  # (T, B, H)
    h_n = hs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = GRUCache(
            x, hs, r, z, n, gh_n, w_ih, w_hh, b_ih is not None, b_hh is not None, reset_after
        )
    return y, h_n, cache


def gru_backward(
    dy: Array | None, dh_n: Array | None, cache: GRUCache
) -> tuple[Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of gru_forward (backpropagation through time).

    Args:
        dy: (T, B, H) dL/dy, or None for zeros.
        dh_n: (B, H) dL/dh_n, or None for zeros.
        cache: the cache returned by gru_forward(..., training=True); not modified.

    Returns:
        dx: (T, B, D), dh0: (B, H), dw_ih: (3H, D), dw_hh: (3H, H),
        db_ih: (3H,) or None if b_ih was None, db_hh: (3H,) or None if b_hh was None.
    """
    x, hs, w_ih, w_hh = cache.x, cache.hs, cache.w_ih, cache.w_hh
    dtype = hs.dtype
    T, B, _ = x.shape
    H = hs.shape[2]
    w_hrz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]  # (2H, H), (H, H)
    dy = _or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    dh = _or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (3H, D)
    dw_hh = np.zeros_like(w_hh)  # (3H, H)
    db_i = np.zeros(3 * H, dtype)  # (3H,)
    db_h = np.zeros(3 * H, dtype)  # (3H,)
    for t in reversed(range(T)):
        r, z, n, gh_n = cache.r[t], cache.z[t], cache.n[t], cache.gh_n[t]
        h = hs[t]  # (B, H) state entering the step
        dh = dh + dy[t]  # (B, H) total dL/dh'
        # h' = (1 - z) * n + z * h
        dn = dh * (1 - z)  # (B, H)
        dz = dh * (h - n)  # (B, H)
        dh_prev = dh * z  # (B, H) direct path to h
        da_n = dn * (1 - n * n)  # (B, H) dL/d(pre-activation of n)
        da_z = dz * z * (1 - z)  # (B, H) dL/d(pre-activation of z)
        if cache.reset_after:
            # n = tanh(gi_n + r * gh_n),  gh_n = W_hn h + b_hn
            dr = da_n * gh_n  # (B, H)
            dgh_n = da_n * r  # (B, H) dL/d(gh_n)
            dw_hh[2 * H :] += dgh_n.T @ h  # (H, H)
            db_h[2 * H :] += dgh_n.sum(axis=0)  # (H,)
            dh_prev += dgh_n @ w_hn  # (B, H)
        else:
            # n = tanh(gi_n + gh_n),  gh_n = W_hn (r * h) + b_hn
            drh = da_n @ w_hn  # (B, H) dL/d(r * h)
            dw_hh[2 * H :] += da_n.T @ (r * h)  # (H, H)
            db_h[2 * H :] += da_n.sum(axis=0)  # (H,)
            dr = drh * h  # (B, H)
            dh_prev += drh * r  # (B, H)
        da_r = dr * r * (1 - r)  # (B, H) dL/d(pre-activation of r)
        da_rz = np.concatenate([da_r, da_z], axis=1)  # (B, 2H)
        dgi = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H) dL/d(input-side terms)
        dx[t] = dgi @ w_ih  # (B, D)
        dw_ih += dgi.T @ x[t]  # (3H, D)
        db_i += dgi.sum(axis=0)  # (3H,)
        dw_hh[: 2 * H] += da_rz.T @ h  # (2H, H)
        db_h[: 2 * H] += da_rz.sum(axis=0)  # (2H,)
        dh = dh_prev + da_rz @ w_hrz  # (B, H) dL/dh entering the step

    db_ih = db_i if cache.has_b_ih else None
    db_hh = db_h if cache.has_b_hh else None
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
