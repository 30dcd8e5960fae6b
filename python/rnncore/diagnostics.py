"""Gradient diagnostics: how ‖∂L/∂h_t‖ falls (or grows) as a loss at the last step is
back-propagated through a recurrent layer, and the gates' activations recomputed from a
layer's weights and states.

The vanishing-gradient demonstration on the real kernels::

    rnn = rnncore.RNN(32, 32, dtype=np.float64, seed=0)
    w_hh = rnn.parameters()["weight_hh_l0"]
    w_hh[...] = scale_spectral_radius(w_hh, 0.9)
    g = state_gradients(rnn, 0.01 * np.random.default_rng(0).standard_normal((100, 1, 32)))
    decay_per_step(g.h_norms)  # ≈ 0.9 while |h| stays small (tanh' ≈ 1)

Method (exact, O(T), the default): for a loss L = <u, h_T> at the last step, one forward
and one backward of the C++ kernel on the input widened by G*H zero features that an
identity block appended to weight_ih reads: the forward is unchanged (those features add
exact zeros) and the backward's dx of those features is δ_t, the gradient of step t's
pre-activations. Then ∂L/∂h_{t-1} = δ_t W_hh for the RNN and the LSTM (h_{t-1} reaches L
only through W_hh h_{t-1}); the GRU adds its reset gate's scaling of the n block and its
direct path z_t ⊙ ∂L/∂h_t; the LSTM's ∂L/∂c_{t-1} = f_t ⊙ (∂L/∂c_t + ∂L/∂h_t ⊙ o_t ⊙
tanh'(c_t)), with the gates recomputed in NumPy from the weights and the states
(gate_activations). method="suffix" is a second exact method with no NumPy calculus: each
∂L/∂h_t is dh0 of the kernels' backward of the sub-sequence x[t:T] started from (h_t, c_t),
every t as rows of one batch (lengths=), O(T²) work; the tests hold the two to each other
and to central differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from .checks import int_at_least, number, positive_int

__all__ = [
    "StateGradients",
    "decay_per_step",
    "gate_activations",
    "scale_spectral_radius",
    "spectral_radius",
    "state_gradients",
]

Array = np.ndarray


def spectral_radius(w: npt.ArrayLike) -> float:
    """ρ(w) = max |eigenvalue| of a square (H, H) matrix (e.g. an RNN's weight_hh_l0)."""
    a = np.asarray(w, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"spectral_radius: w must be a square 2-D matrix, got shape {a.shape}")
    return float(np.max(np.abs(np.linalg.eigvals(a))))


def scale_spectral_radius(w: npt.ArrayLike, radius: float) -> Array:
    """w (H, H) rescaled to spectral radius `radius` (> 0): a new array of w's dtype.

    Raises:
        ValueError: w is not square, radius is not a finite number > 0, or ρ(w) = 0.
    """
    radius = number("scale_spectral_radius", "radius", radius, low=0.0, low_ok=False)
    a = np.asarray(w)
    rho = spectral_radius(a)
    if rho == 0:
        raise ValueError("scale_spectral_radius: w has spectral radius 0, it cannot be rescaled")
    return (a * (radius / rho)).astype(a.dtype if a.dtype.kind == "f" else np.float64)


@dataclass
class StateGradients:
    """Per-step states and state gradients of one layer for a loss at the last step.

    Attributes:
        dh: (T+1, B, H) ∂L/∂h_t for t = 0..T (dh[T] is the gradient put at the last step).
        dc: (T+1, B, H) ∂L/∂c_t (LSTM; None otherwise): the gradient with respect to the cell
            state of the state (h_t, c_t) handed from step t to step t+1, as the kernels'
            backward returns dc0 for a sequence started there; dc[T] = 0 (L reads h_T only).
        h: (T+1, B, H) the hidden states h_0 (the initial state) .. h_T.
        c: (T+1, B, H) the LSTM's cell states (None otherwise).
    """

    dh: Array
    dc: Array | None
    h: Array
    c: Array | None

    @property
    def h_norms(self) -> Array:
        """(T+1,) ‖∂L/∂h_t‖ (the Frobenius norm over the batch and the units)."""
        return np.sqrt(np.sum(self.dh.astype(np.float64) ** 2, axis=(1, 2)))

    @property
    def c_norms(self) -> Array | None:
        """(T+1,) ‖∂L/∂c_t‖ (LSTM; None otherwise); the last entry is 0."""
        if self.dc is None:
            return None
        return np.sqrt(np.sum(self.dc.astype(np.float64) ** 2, axis=(1, 2)))


def _kernels(layer: object) -> tuple[str, object, object, dict]:
    cell = getattr(layer, "cell", None)
    if cell not in ("rnn", "lstm", "gru"):
        raise TypeError(
            "state_gradients: layer must be an rnncore.RNN, LSTM or GRU, got "
            f"{type(layer).__name__}"
        )
    if layer.num_layers != 1 or layer.bidirectional:  # type: ignore[attr-defined]
        raise ValueError(
            "state_gradients: layer must have num_layers=1 and one direction, got "
            f"num_layers={layer.num_layers}, bidirectional={layer.bidirectional}"  # type: ignore[attr-defined]
        )
    fwd = getattr(_core, f"{cell}_forward")
    bwd = getattr(_core, f"{cell}_backward")
    return cell, fwd, bwd, layer.options  # type: ignore[attr-defined]


def _rows(x: Array, starts: Sequence[int], lengths: Sequence[int]) -> Array:
    """(T, n*B, D): row j*B + b holds x[starts[j] + s, b] for s < lengths[j], zeros after."""
    T, B, D = x.shape
    out = np.zeros((T, len(starts) * B, D), x.dtype)
    for j, (s0, n) in enumerate(zip(starts, lengths, strict=True)):
        out[:n, j * B : (j + 1) * B] = x[s0 : s0 + n]
    return out


def state_gradients(
    layer: object,
    x: npt.ArrayLike,
    state: Array | tuple[Array, Array] | None = None,
    *,
    grad_output: npt.ArrayLike | None = None,
    method: str = "delta",
    chunk: int = 64,
) -> StateGradients:
    """∂L/∂h_t (and ∂L/∂c_t for an LSTM) at every step t for L = <grad_output, h_T>.

    Args:
        layer: an rnncore.RNN, LSTM or GRU with num_layers=1, unidirectional (its weights
            and cell options are used as they are, through the C++ kernels).
        x: (T, B, D) inputs of the layer's dtype (T >= 1).
        state: the initial state as the layer's forward takes it: (1, B, H), or for the LSTM a
            tuple (h, c) of (1, B, H) arrays (either may be None); None: zeros.
        grad_output: (B, H) ∂L/∂h_T; None: every entry 1/√(B·H) (a unit-norm gradient).
        method: "delta" (default): one forward and one backward, O(T) (see the module's
            docstring); "suffix": each ∂L/∂state_t as the kernels' own dh0 (dc0) of the
            sub-sequence x[t:T], O(T²) work, kept as the second, independent exact method.
        chunk: "suffix" only: values of t per kernel call (memory ~ chunk·B·T·G·H values).

    Returns:
        StateGradients with dh, dc, h, c of shape (T+1, B, H) (dc, c: LSTM only).

    Raises:
        TypeError: layer is not an RNN/LSTM/GRU, x is not of the layer's dtype.
        ValueError: a stacked or bidirectional layer, x not (T, B, input_size) with T >= 1,
            grad_output or state of the wrong shape, an unknown method.
    """
    cell, fwd, bwd, options = _kernels(layer)
    chunk = positive_int("state_gradients", "chunk", chunk)
    if method not in ("delta", "suffix"):
        raise ValueError(f"state_gradients: method must be 'delta' or 'suffix', got {method!r}")
    dtype, D, H = layer.dtype, layer.input_size, layer.hidden_size  # type: ignore[attr-defined]
    xa = np.asarray(x)
    if xa.dtype != dtype:
        raise TypeError(f"state_gradients: x must be {dtype} (the layer's dtype), got {xa.dtype}")
    if xa.ndim != 3 or xa.shape[2] != D or xa.shape[0] < 1:
        raise ValueError(f"state_gradients: x must be (T >= 1, B, {D}), got shape {xa.shape}")
    B = xa.shape[1]
    h0 = np.zeros((B, H), dtype)
    c0 = np.zeros((B, H), dtype) if cell == "lstm" else None
    parts = (state if isinstance(state, tuple) else (state,)) if state is not None else ()
    for k, s in enumerate(parts):
        if s is None:
            continue
        a = np.asarray(s, dtype)
        if a.shape != (1, B, H):
            raise ValueError(f"state_gradients: state must be (1, {B}, {H}), got {a.shape}")
        if k == 0:
            h0 = a[0].copy()
        elif c0 is not None:
            c0 = a[0].copy()
    if grad_output is None:
        u = np.full((B, H), 1 / np.sqrt(B * H), dtype)
    else:
        u = np.asarray(grad_output, dtype)
        if u.shape != (B, H):
            raise ValueError(f"state_gradients: grad_output must be ({B}, {H}), got {u.shape}")
    w = layer.layer_weights(0)  # type: ignore[attr-defined]

    if method == "suffix":
        return _by_suffixes(cell, fwd, bwd, options, w, xa, h0, c0, u, chunk)
    return _by_deltas(cell, fwd, bwd, options, w, xa, h0, c0, u)


def _by_deltas(
    cell: str, fwd: Any, bwd: Any, options: dict, w: tuple, xa: Array, h0: Array,
    c0: Array | None, u: Array,
) -> StateGradients:  # fmt: skip
    """One forward and one backward of the kernels with the input widened by G*H zero
    features read through an identity block of weight_ih: the forward is unchanged (those
    features add exact zeros) and their dx is δ_t, the gradient of each step's input-side
    pre-activations. The state gradients follow in NumPy from δ and the weights: dh_t =
    δ_{t+1} W_hh (LSTM, RNN), plus the GRU's reset scaling of its n block and its direct path
    z_{t+1} ⊙ dh_{t+1}; the LSTM's dc_t = f_{t+1} ⊙ (dc_{t+1} + dh_{t+1} ⊙ o_{t+1} ⊙
    tanh'(c_{t+1})), with the gates recomputed by gate_activations."""
    T, B, D = xa.shape
    H, dtype = h0.shape[1], xa.dtype
    w_ih, w_hh, b_ih, b_hh = w
    GH = w_hh.shape[0]
    x_aug = np.concatenate([xa, np.zeros((T, B, GH), dtype)], axis=2)
    w_aug = np.concatenate([w_ih, np.eye(GH, dtype=dtype)], axis=1)
    if cell == "lstm":
        y, _, _, cache = fwd(x_aug, h0, c0, w_aug, w_hh, b_ih, b_hh, training=True)
        dx = bwd(None, u, np.zeros_like(u), cache)[0]
    else:
        y, _, cache = fwd(x_aug, h0, w_aug, w_hh, b_ih, b_hh, training=True, **options)
        dx = bwd(None, u, cache)[0]
    delta = dx[:, :, D:].astype(np.float64)  # (T, B, G*H): δ of steps 1..T
    h = np.concatenate([h0[None], y]).astype(np.float64)
    wh = np.asarray(w_hh, np.float64)
    dh = np.empty((T + 1, B, H))
    dh[T] = u
    dc = c = None
    if cell == "rnn":
        dh[:T] = delta @ wh
    elif cell == "lstm":
        dh[:T] = delta @ wh
        g = gate_activations("lstm", w, xa, h[:-1])
        c = np.empty((T + 1, B, H))
        c[0] = np.asarray(c0, np.float64)
        for t in range(T):
            c[t + 1] = g["f"][t] * c[t] + g["i"][t] * g["g"][t]
        dc = np.zeros((T + 1, B, H))
        for t in range(T - 1, -1, -1):  # c_t reaches L through c_{t+1} = f_{t+1} c_t + ...
            total = dc[t + 1] + dh[t + 1] * g["o"][t] * (1 - np.tanh(c[t + 1]) ** 2)
            dc[t] = g["f"][t] * total
    else:
        after = bool(options.get("reset_after", True))
        g = gate_activations("gru", w, xa, h[:-1], reset_after=after)
        rz = delta[..., : 2 * H] @ wh[: 2 * H]
        dn = delta[..., 2 * H :]
        if after:  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
            via_n = (g["r"] * dn) @ wh[2 * H :]
        else:  # n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
            via_n = g["r"] * (dn @ wh[2 * H :])
        for t in range(T - 1, -1, -1):  # h_{t+1} = (1 - z) n + z h_t
            dh[t] = rz[t] + via_n[t] + g["z"][t] * dh[t + 1]
    return StateGradients(
        dh=dh.astype(dtype),
        dc=None if dc is None else dc.astype(dtype),
        h=h.astype(dtype),
        c=None if c is None else c.astype(dtype),
    )


def _by_suffixes(
    cell: str, fwd: Any, bwd: Any, options: dict, w: tuple, xa: Array, h0: Array,
    c0: Array | None, u: Array, chunk: int,
) -> StateGradients:  # fmt: skip
    """dh_t (dc_t) as the kernels' dh0 (dc0) of the sub-sequence x[t:T] from (h_t, c_t)."""
    T, B, _ = xa.shape
    H, dtype = h0.shape[1], xa.dtype

    def run(xs: Array, lengths: Array, hs: Array, cs: Array | None, training: bool) -> tuple:
        if cell == "lstm":
            return fwd(xs, hs, cs, *w, lengths=lengths, training=training, **options)
        return fwd(xs, hs, *w, lengths=lengths, training=training, **options)

    h = np.empty((T + 1, B, H), dtype)
    c = np.empty((T + 1, B, H), dtype) if cell == "lstm" else None
    dh = np.empty((T + 1, B, H), dtype)
    dc = np.empty((T + 1, B, H), dtype) if cell == "lstm" else None
    for lo in range(0, T + 1, chunk):
        ts = list(range(lo, min(T + 1, lo + chunk)))
        n = len(ts)
        # The states after each prefix x[0:t]: h_t (and c_t) = the final state of that row.
        lengths = np.repeat(np.array(ts, np.int64), B)
        out = run(_rows(xa, [0] * n, ts), lengths, np.tile(h0, (n, 1)),
                  None if c0 is None else np.tile(c0, (n, 1)), False)  # fmt: skip
        h[ts] = out[1].reshape(n, B, H)
        if c is not None:
            c[ts] = out[2].reshape(n, B, H)
    for lo in range(0, T + 1, chunk):
        ts = list(range(lo, min(T + 1, lo + chunk)))
        n = len(ts)
        # The sub-sequences x[t:T] started from (h_t, c_t): their dh0 (dc0) is ∂L/∂h_t (c_t).
        steps = [T - t for t in ts]
        lengths = np.repeat(np.array(steps, np.int64), B)
        hs = h[ts].reshape(n * B, H)
        cs = None if c is None else c[ts].reshape(n * B, H)
        out = run(_rows(xa, ts, steps), lengths, hs, cs, True)
        dn = np.tile(u, (n, 1))
        if cell == "lstm":
            grads = bwd(None, dn, np.zeros_like(dn), out[-1])
            dc[ts] = grads[2].reshape(n, B, H)  # type: ignore[index]
        else:
            grads = bwd(None, dn, out[-1])
        dh[ts] = grads[1].reshape(n, B, H)
    return StateGradients(dh=dh, dc=dc, h=h, c=c)


def decay_per_step(norms: npt.ArrayLike, window: int = 50, *, end: int | None = None) -> float:
    """The mean per-step factor of a gradient norm over the first `window` steps of a
    sequence: (norms[0] / norms[window]) ** (1 / window), the geometric mean of the ratios
    ‖g_t‖ / ‖g_{t+1}‖ for t < window (the steps farthest from the loss, where the backward
    has run longest). Below 1 the gradient vanishes going back in time, above 1 it grows.

    Args:
        norms: (T+1,) ‖∂L/∂h_t‖ for t = 0..T (StateGradients.h_norms).
        window: steps averaged over, >= 1; clipped to the steps available.
        end: the last index to use (default: the last; e.g. T-1 for c_norms, whose last
            entry is 0).

    Raises:
        ValueError: fewer than two norms, or a norm that is not finite and > 0 in the window.
    """
    a = np.asarray(norms, dtype=np.float64)
    window = int_at_least("decay_per_step", "window", window, 1)
    last = a.size - 1 if end is None else int(end)
    if a.ndim != 1 or last < 1 or last >= a.size:
        raise ValueError(f"decay_per_step: norms must be 1-D with >= 2 entries, got {a.shape}")
    k = min(window, last)
    lo, hi = a[0], a[k]
    if not (np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi > 0):
        raise ValueError(
            f"decay_per_step: norms[0] and norms[{k}] must be finite and > 0, got {lo}, {hi}"
        )
    return float((lo / hi) ** (1 / k))


def _sigmoid(a: Array) -> Array:
    return 1 / (1 + np.exp(-a))


def gate_activations(
    cell: str,
    weights: tuple[Array, Array, Array | None, Array | None],
    x: npt.ArrayLike,
    h_prev: npt.ArrayLike,
    *,
    reset_after: bool = True,
) -> dict[str, Array]:
    """The gates of every step, recomputed in NumPy from a layer's weights and its states.

    Args:
        cell: "rnn", "lstm" or "gru".
        weights: (weight_ih (G*H, D), weight_hh (G*H, H), bias_ih (G*H,) | None,
            bias_hh (G*H,) | None), as RecurrentStack.layer_weights returns them.
        x: (T, B, D) inputs, or (T, B) integer token ids (one-hot input).
        h_prev: (T, B, H) the hidden state each step starts from (h_0 .. h_{T-1}).
        reset_after: the GRU's variant (its cell option).

    Returns:
        name -> (T, B, H): "i", "f", "g", "o" for the LSTM, "r", "z", "n" for the GRU,
        nothing for the vanilla RNN (it has no gates).

    Raises:
        ValueError: an unknown cell, or shapes that do not match the weights.
    """
    if cell not in ("rnn", "lstm", "gru"):
        raise ValueError(f"gate_activations: cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
    if cell == "rnn":
        return {}
    w_ih, w_hh, b_ih, b_hh = (None if a is None else np.asarray(a, np.float64) for a in weights)
    assert w_ih is not None and w_hh is not None
    H = w_hh.shape[1]
    hp = np.asarray(h_prev, np.float64)
    xa = np.asarray(x)
    if np.issubdtype(xa.dtype, np.integer):
        gx = np.moveaxis(w_ih[:, xa], 0, -1)  # (T, B, G*H): the one-hot rows' columns
    else:
        gx = xa.astype(np.float64) @ w_ih.T
    if gx.shape[:2] != hp.shape[:2] or hp.shape[2] != H:
        raise ValueError(
            f"gate_activations: x gives {gx.shape[:2]} steps x rows but h_prev is {hp.shape}"
        )
    if b_ih is not None:
        gx = gx + b_ih
    if cell == "lstm":
        a = gx + hp @ w_hh.T + (0 if b_hh is None else b_hh)
        i, f, g, o = (a[..., k * H : (k + 1) * H] for k in range(4))
        return {"i": _sigmoid(i), "f": _sigmoid(f), "g": np.tanh(g), "o": _sigmoid(o)}
    bh = np.zeros(3 * H) if b_hh is None else b_hh
    gh = hp @ w_hh[: 2 * H].T + bh[: 2 * H]
    r = _sigmoid(gx[..., :H] + gh[..., :H])
    z = _sigmoid(gx[..., H : 2 * H] + gh[..., H:])
    if reset_after:
        n = np.tanh(gx[..., 2 * H :] + r * (hp @ w_hh[2 * H :].T + bh[2 * H :]))
    else:
        n = np.tanh(gx[..., 2 * H :] + (r * hp) @ w_hh[2 * H :].T + bh[2 * H :])
    return {"r": r, "z": z, "n": n}
