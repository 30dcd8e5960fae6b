"""NumPy reference of the vanilla RNN (tanh or relu) over a whole sequence.

The shape legend and the conventions are in rnncore.reference, which exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    valid_steps,
)

__all__ = ["RNNCache", "rnn_backward", "rnn_forward"]


# --------------------------------------------------------------------------------------------
# Vanilla RNN
#   a_t = x_t @ w_ih.T + b_ih + h_{t-1} @ w_hh.T + b_hh
#   h_t = act(a_t),  act = tanh or relu
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RNNCache:
    """What rnn_backward needs from rnn_forward. Read-only."""

    x: Array  # (T, B, D)  in reading order (flipped within lengths if reverse), padding 0
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = state after step t (held past a length)
    w_ih: Array  # (H, D)
    w_hh: Array  # (H, H)
    has_b_ih: bool
    has_b_hh: bool
    nonlinearity: str  # "tanh" or "relu"
    lengths: Array  # (B,) int64  steps each element ran
    reverse: bool  # whether x and y were read and written in reverse


def rnn_forward(
    x: Array,
    h0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    lengths: Array | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[Array, Array, RNNCache | None]:
    """Vanilla (Elman) RNN over a whole sequence, as torch.nn.RNN (one direction of it).

    Element b runs steps 0 .. lengths[b]-1 (all T when lengths is None); y[t, b] = 0 for
    t >= lengths[b] and h_n[b] is the state after its own last step (h0[b] for length 0).
    reverse=True reads x[lengths[b]-1, b], ..., x[0, b] and writes each output at the position
    it read (the reverse direction of a bidirectional torch layer); h_n is then the state after
    reading x[0]. Nothing in x past a length is read.

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        w_ih: (H, D) input-to-hidden weights.
        w_hh: (H, H) hidden-to-hidden weights.
        b_ih, b_hh: (H,) biases, or None.
        nonlinearity: "tanh" or "relu".
        lengths: (B,) integer array with values in [0, T], any order, or None for all T.
        reverse: run each sequence from its own last step back to step 0 (a bool).
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state after reading x[t], 0 past each length.
        h_n: (B, H) final hidden state.
        cache: RNNCache for rnn_backward, or None when training is False.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    reverse = check_reverse(reverse)
    dtype = compute_dtype(w_ih)
    x = copy_as(x, dtype)  # (T, B, D)
    w_ih = copy_as(w_ih, dtype)  # (H, D)
    w_hh = copy_as(w_hh, dtype)  # (H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    lengths = check_lengths(lengths, T, B)  # (B,)
    valid = valid_steps(lengths, T)  # (T, B) the steps that run
    if reverse:
        x = flip_within_lengths(x, lengths)  # (T, B, D) in reading order, padding 0
    else:
        x[~valid] = 0  # padding never reaches the arithmetic
    bias_ih = or_zeros(b_ih, (H,), dtype)  # (H,)
    bias_hh = or_zeros(b_hh, (H,), dtype)  # (H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = or_zeros(h0, (B, H), dtype)
    for t in range(T):
        a = x[t] @ w_ih.T + bias_ih + hs[t] @ w_hh.T + bias_hh  # (B, H) pre-activation
        h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)  # (B, H)
        hs[t + 1] = np.where(valid[t][:, None], h, hs[t])  # rows past their length keep h

    y = hs[1:].copy()  # (T, B, H)
    y[~valid] = 0
    if reverse:
        y = flip_within_lengths(y, lengths)  # (T, B, H) each output where its input was read
    h_n = hs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = RNNCache(
            x, hs, w_ih, w_hh, b_ih is not None, b_hh is not None, nonlinearity, lengths, reverse
        )
    return y, h_n, cache


def rnn_backward(
    dy: Array | None, dh_n: Array | None, cache: RNNCache
) -> tuple[Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of rnn_forward (backpropagation through time).

    With lengths, dy past a sequence's length is ignored, dx there is 0, and gradients flow
    only through the steps that ran (dh_n enters at each sequence's own last step).

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
    valid = valid_steps(cache.lengths, T)  # (T, B) the steps that ran
    dy = or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    if cache.reverse:
        dy = flip_within_lengths(dy, cache.lengths)  # (T, B, H) in reading order, padding 0
    else:
        dy[~valid] = 0  # dy past a length is ignored
    dh = or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (H, D)
    dw_hh = np.zeros_like(w_hh)  # (H, H)
    db = np.zeros(H, dtype)  # (H,) gradient of either bias (both enter a_t the same way)
    for t in reversed(range(T)):
        ran = valid[t][:, None]  # (B, 1) rows whose step t ran
        dh = dh + dy[t]  # (B, H) total dL/dh leaving step t
        dh_ran = np.where(ran, dh, 0)  # (B, H) only rows that ran step t backpropagate through it
        h, h_prev = ran_only(ran, hs[t + 1], hs[t])  # (B, H) each, 0 in rows that did not run
        if cache.nonlinearity == "tanh":
            da = dh_ran * (1 - h * h)  # (B, H) dL/da, tanh' = 1 - tanh^2
        else:
            da = dh_ran * (h > 0)  # (B, H) dL/da, relu' = 1 where a > 0 (i.e. h > 0), else 0
        dx[t] = da @ w_ih  # (B, D)
        dw_ih += da.T @ x[t]  # (H, D)
        dw_hh += da.T @ h_prev  # (H, H)
        db += da.sum(axis=0)  # (H,)
        dh = np.where(ran, da @ w_hh, dh)  # (B, H) dL/dh entering step t; others pass it on

    if cache.reverse:
        dx = flip_within_lengths(dx, cache.lengths)  # (T, B, D) back to x's positions
    else:
        dx[~valid] = 0  # exactly 0 past a length
    db_ih = db.copy() if cache.has_b_ih else None
    db_hh = db.copy() if cache.has_b_hh else None
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
