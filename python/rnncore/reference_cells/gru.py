"""NumPy reference of the GRU (both reset placements) over a whole sequence.

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

__all__ = ["GRUCache", "gru_backward", "gru_forward"]


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

    x: Array  # (T, B, D)  in reading order (flipped within lengths if reverse), padding 0
    hs: Array  # (T+1, B, H)  hs[0] = h0, hs[t+1] = state after step t (held past a length)
    r: Array  # (T, B, H) reset gate
    z: Array  # (T, B, H) update gate
    n: Array  # (T, B, H) candidate state
    gh_n: Array  # (T, B, H) hidden-side term of n: W_hn h + b_hn, or W_hn (r*h) + b_hn
    w_ih: Array  # (3H, D)
    w_hh: Array  # (3H, H)
    has_b_ih: bool
    has_b_hh: bool
    reset_after: bool
    lengths: Array  # (B,) int64  steps each element ran
    reverse: bool  # whether x and y were read and written in reverse


def gru_forward(
    x: Array,
    h0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    reset_after: bool = True,
    lengths: Array | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[Array, Array, GRUCache | None]:
    """GRU over a whole sequence (gate order r, z, n; one direction).

    reset_after=True is torch.nn.GRU (reset gate applied after the hidden matmul);
    reset_after=False is the original GRU of Cho et al. (reset gate applied to h before it).

    Element b runs steps 0 .. lengths[b]-1 (all T when lengths is None); y[t, b] = 0 for
    t >= lengths[b] and h_n[b] is the state after its own last step (h0[b] for length 0).
    reverse=True reads x[lengths[b]-1, b], ..., x[0, b] and writes each output at the position
    it read (the reverse direction of a bidirectional torch layer); h_n is then the state after
    reading x[0]. Nothing in x past a length is read.

    Args:
        x: (T, B, D) inputs.
        h0: (B, H) initial hidden state, or None for zeros.
        w_ih: (3H, D) input-to-hidden weights.
        w_hh: (3H, H) hidden-to-hidden weights.
        b_ih, b_hh: (3H,) biases, or None.
        reset_after: where the reset gate is applied, see above.
        lengths: (B,) integer array with values in [0, T], any order, or None for all T.
        reverse: run each sequence from its own last step back to step 0 (a bool).
        training: if False, no cache is kept and None is returned in its place.

    Returns:
        y: (T, B, H) hidden state after reading x[t], 0 past each length.
        h_n: (B, H) final hidden state.
        cache: GRUCache for gru_backward, or None when training is False.
    """
    reverse = check_reverse(reverse)
    dtype = compute_dtype(w_ih)
    x = copy_as(x, dtype)  # (T, B, D)
    w_ih = copy_as(w_ih, dtype)  # (3H, D)
    w_hh = copy_as(w_hh, dtype)  # (3H, H)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    lengths = check_lengths(lengths, T, B)  # (B,)
    valid = valid_steps(lengths, T)  # (T, B) the steps that run
    if reverse:
        x = flip_within_lengths(x, lengths)  # (T, B, D) in reading order, padding 0
    else:
        x[~valid] = 0  # padding never reaches the arithmetic
    bias_ih = or_zeros(b_ih, (3 * H,), dtype)  # (3H,)
    bias_hh = or_zeros(b_hh, (3 * H,), dtype)  # (3H,)
    w_hrz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]  # (2H, H), (H, H)
    b_hrz, b_hn = bias_hh[: 2 * H], bias_hh[2 * H :]  # (2H,), (H,)

    hs = np.empty((T + 1, B, H), dtype)  # (T+1, B, H)
    hs[0] = or_zeros(h0, (B, H), dtype)
    r = np.empty((T, B, H), dtype)  # (T, B, H)
    z = np.empty((T, B, H), dtype)  # (T, B, H)
    n = np.empty((T, B, H), dtype)  # (T, B, H)
    gh_n = np.empty((T, B, H), dtype)  # (T, B, H)
    for t in range(T):
        h = hs[t]  # (B, H)
        gi = x[t] @ w_ih.T + bias_ih  # (B, 3H) input-side pre-activations of r, z, n
        gh_rz = h @ w_hrz.T + b_hrz  # (B, 2H) hidden-side pre-activations of r, z
        r[t] = sigmoid(gi[:, 0:H] + gh_rz[:, 0:H])  # (B, H)
        z[t] = sigmoid(gi[:, H : 2 * H] + gh_rz[:, H : 2 * H])  # (B, H)
        if reset_after:
            gh_n[t] = h @ w_hn.T + b_hn  # (B, H)
            n[t] = np.tanh(gi[:, 2 * H :] + r[t] * gh_n[t])  # (B, H)
        else:
            gh_n[t] = (r[t] * h) @ w_hn.T + b_hn  # (B, H)
            n[t] = np.tanh(gi[:, 2 * H :] + gh_n[t])  # (B, H)
        h_new = (1 - z[t]) * n[t] + z[t] * h  # (B, H)
        hs[t + 1] = np.where(valid[t][:, None], h_new, h)  # rows past their length keep h

    y = hs[1:].copy()  # (T, B, H)
    y[~valid] = 0
    if reverse:
        y = flip_within_lengths(y, lengths)  # (T, B, H) each output where its input was read
    h_n = hs[T].copy()  # (B, H)
    cache = None
    if training:
        cache = GRUCache(
            x, hs, r, z, n, gh_n, w_ih, w_hh, b_ih is not None, b_hh is not None, reset_after,
            lengths, reverse,
        )  # fmt: skip
    return y, h_n, cache


def gru_backward(
    dy: Array | None, dh_n: Array | None, cache: GRUCache
) -> tuple[Array, Array, Array, Array, Array | None, Array | None]:
    """Backward pass of gru_forward (backpropagation through time).

    With lengths, dy past a sequence's length is ignored, dx there is 0, and gradients flow
    only through the steps that ran (dh_n enters at each sequence's own last step).

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
    valid = valid_steps(cache.lengths, T)  # (T, B) the steps that ran
    dy = or_zeros(dy, (T, B, H), dtype)  # (T, B, H)
    if cache.reverse:
        dy = flip_within_lengths(dy, cache.lengths)  # (T, B, H) in reading order, padding 0
    else:
        dy[~valid] = 0  # dy past a length is ignored
    dh = or_zeros(dh_n, (B, H), dtype)  # (B, H) dL/dh flowing back from later steps

    dx = np.zeros_like(x)  # (T, B, D)
    dw_ih = np.zeros_like(w_ih)  # (3H, D)
    dw_hh = np.zeros_like(w_hh)  # (3H, H)
    db_i = np.zeros(3 * H, dtype)  # (3H,)
    db_h = np.zeros(3 * H, dtype)  # (3H,)
    for t in reversed(range(T)):
        ran = valid[t][:, None]  # (B, 1) rows whose step t ran
        # (B, H) each, 0 in the rows that did not run step t; h is the state entering the step
        r, z, n, gh_n, h = ran_only(ran, cache.r[t], cache.z[t], cache.n[t], cache.gh_n[t], hs[t])
        dh = dh + dy[t]  # (B, H) total dL/dh'
        dh_ran = np.where(ran, dh, 0)  # (B, H) only rows that ran step t backpropagate through it
        # h' = (1 - z) * n + z * h
        dn = dh_ran * (1 - z)  # (B, H)
        dz = dh_ran * (h - n)  # (B, H)
        dh_prev = dh_ran * z  # (B, H) direct path to h
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
        dh = np.where(ran, dh_prev + da_rz @ w_hrz, dh)  # (B, H) dL/dh entering the step

    if cache.reverse:
        dx = flip_within_lengths(dx, cache.lengths)  # (T, B, D) back to x's positions
    else:
        dx[~valid] = 0  # exactly 0 past a length
    db_ih = db_i if cache.has_b_ih else None
    db_hh = db_h if cache.has_b_hh else None
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
