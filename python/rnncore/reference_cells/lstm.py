"""NumPy reference of the LSTM over a whole sequence.

The shape legend and the conventions are in rnncore.reference, which exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import (
    Array,
    check_lengths,
    check_reverse,
    compute_dtype,
    copy_as,
    flip_within_lengths,
    or_zeros,
    ran_only,
    sigmoid,
    valid_steps,
)

__all__ = ["LSTMCache", "lstm_backward", "lstm_forward"]


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

    x: Array  # (T, B, D)  in reading order (flipped within lengths if reverse), padding 0
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = state after step t (held past a length)
    cs: Array  # (T+1, B, H)  cs[0] = c0, cs[t+1] = cell state after step t (held likewise)
    i: Array  # (T, B, H) input gate
    f: Array  # (T, B, H) forget gate
    g: Array  # (T, B, H) cell candidate
    o: Array  # (T, B, H) output gate
    tanh_c: Array  # (T, B, H) tanh(cs[t+1])
    w_ih: Array  # (4H, D)
    w_hh: Array  # (4H, H)
    has_b_ih: bool
    has_b_hh: bool
    lengths: Array  # (B,) int64  steps each element ran
    reverse: bool  # whether x and y were read and written in reverse


def lstm_forward(
    x: Array,
    h0: Array | None,
    c0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[Array, Array, Array, LSTMCache | None]:
    """LSTM over a whole sequence, as torch.nn.LSTM (gate order i, f, g, o; one direction).

    Element b runs steps 0 .. lengths[b]-1 (all T when lengths is None); y[t, b] = 0 for
    t >= lengths[b] and h_n[b], c_n[b] are the states after its own last step (h0[b], c0[b]
    for length 0). reverse=True reads x[lengths[b]-1, b], ..., x[0, b] and writes each output
    at the position it read (the reverse direction of a bidirectional torch layer); h_n, c_n
    are then the states after reading x[0]. Nothing in x past a length is read.

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        c0: (B, H) initial cell state, or None for zeros.
        w_ih: (4H, D) input-to-hidden weights.
        w_hh: (4H, H) hidden-to-hidden weights.
        b_ih, b_hh: (4H,) biases, or None.
        lengths: (B,) integer array with values in [0, T], any order, or None for all T.
        reverse: run each sequence from its own last step back to step 0 (a bool).
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state after reading x[t], 0 past each length.
        h_n: (B, H) final hidden state.
        c_n: (B, H) final cell state.
        cache: LSTMCache for lstm_backward, or None when training is False.
    """
    reverse = check_reverse(reverse)
    dtype = compute_dtype(w_ih)
    x = copy_as(x, dtype)  # (T, B, D)
    w_ih = copy_as(w_ih, dtype)  # (4H, D)
    w_hh = copy_as(w_hh, dtype)  # (4H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    lengths = check_lengths(lengths, T, B)  # (B,)
    valid = valid_steps(lengths, T)  # (T, B) the steps that run
    if reverse:
        x = flip_within_lengths(x, lengths)  # (T, B, D) in reading order, padding 0
    else:
        x[~valid] = 0  # padding never reaches the arithmetic
    bias_ih = or_zeros(b_ih, (4 * H,), dtype)  # (4H,)
    bias_hh = or_zeros(b_hh, (4 * H,), dtype)  # (4H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    cs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = or_zeros(h0, (B, H), dtype)
    cs[0] = or_zeros(c0, (B, H), dtype)
    i = np.empty((T, B, H), dtype)  # (T, B, H)
    f = np.empty((T, B, H), dtype)  # (T, B, H)
    g = np.empty((T, B, H), dtype)  # (T, B, H)
    o = np.empty((T, B, H), dtype)  # (T, B, H)
    tanh_c = np.empty((T, B, H), dtype)  # (T, B, H)
    for t in range(T):
        a = x[t] @ w_ih.T + bias_ih + hs[t] @ w_hh.T + bias_hh  # (B, 4H) gate pre-activations
        i[t] = sigmoid(a[:, 0 * H : 1 * H])  # (B, H)
        f[t] = sigmoid(a[:, 1 * H : 2 * H])  # (B, H)
        g[t] = np.tanh(a[:, 2 * H : 3 * H])  # (B, H)
        o[t] = sigmoid(a[:, 3 * H : 4 * H])  # (B, H)
        c = f[t] * cs[t] + i[t] * g[t]  # (B, H)
        tanh_c[t] = np.tanh(c)  # (B, H)
        ran = valid[t][:, None]  # (B, 1) rows past their length keep h and c
        cs[t + 1] = np.where(ran, c, cs[t])  # (B, H)
        hs[t + 1] = np.where(ran, o[t] * tanh_c[t], hs[t])  # (B, H)

    y = hs[1:].copy()  # (T, B, H)
    y[~valid] = 0
    if reverse:
        y = flip_within_lengths(y, lengths)  # (T, B, H) each output where its input was read
    h_n = hs[T].copy()  # (B, H)
    c_n = cs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = LSTMCache(
            x, hs, cs, i, f, g, o, tanh_c, w_ih, w_hh, b_ih is not None, b_hh is not None,
            lengths, reverse,
        )  # fmt: skip
    return y, h_n, c_n, cache


def lstm_backward(
    dy: Array | None, dh_n: Array | None, dc_n: Array | None, cache: LSTMCache
) -> tuple[Array, Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of lstm_forward (backpropagation through time).

    With lengths, dy past a sequence's length is ignored, dx there is 0, and gradients flow
    only through the steps that ran (dh_n, dc_n enter at each sequence's own last step).

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
    valid = valid_steps(cache.lengths, T)  # (T, B) the steps that ran
    dy = or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    if cache.reverse:
        dy = flip_within_lengths(dy, cache.lengths)  # (T, B, H) in reading order, padding 0
    else:
        dy[~valid] = 0  # dy past a length is ignored
    dh = or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps
    dc = or_zeros(dc_n, (B, H), dtype)  # (B, H) dL/dc flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (4H, D)
    dw_hh = np.zeros_like(w_hh)  # (4H, H)
    db = np.zeros(4 * H, dtype)  # (4H,) gradient of either bias
    for t in reversed(range(T)):
        ran = valid[t][:, None]  # (B, 1) rows whose step t ran
        # (B, H) each, 0 in the rows that did not run step t
        i, f, g, o, tanh_c, c_prev, h_prev = ran_only(
            ran, cache.i[t], cache.f[t], cache.g[t], cache.o[t], cache.tanh_c[t], cs[t], hs[t]
        )
        dh = dh + dy[t]  # (B, H) total dL/dh_t
        # only rows that ran step t backpropagate through it; the others carry dh, dc past it
        dh_ran = np.where(ran, dh, 0)  # (B, H)
        dc_ran = np.where(ran, dc, 0)  # (B, H)
        # h_t = o * tanh(c_t)
        do = dh_ran * tanh_c  # (B, H)
        dc_ran = dc_ran + dh_ran * o * (1 - tanh_c * tanh_c)  # (B, H) total dL/dc_t
        # c_t = f * c_{t-1} + i * g
        di = dc_ran * g  # (B, H)
        df = dc_ran * c_prev  # (B, H)
        dg = dc_ran * i  # (B, H)
        # through the gate nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - tanh^2
        da = np.concatenate(
            [di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1
        )  # (B, 4H) dL/d(gate pre-activations)
        dx[t] = da @ w_ih  # (B, D)
        dw_ih += da.T @ x[t]  # (4H, D)
        dw_hh += da.T @ h_prev  # (4H, H)
        db += da.sum(axis=0)  # (4H,)
        dh = np.where(ran, da @ w_hh, dh)  # (B, H) dL/dh_{t-1}
        dc = np.where(ran, dc_ran * f, dc)  # (B, H) dL/dc_{t-1}

    if cache.reverse:
        dx = flip_within_lengths(dx, cache.lengths)  # (T, B, D) back to x's positions
    else:
        dx[~valid] = 0  # exactly 0 past a length
    db_ih = db.copy() if cache.has_b_ih else None
    db_hh = db.copy() if cache.has_b_hh else None
    return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh
