"""Variable lengths and the reverse direction in the NumPy reference (issue 12, point 2).

The reference is the oracle the kernels and the bidirectional layers are checked against, so
its semantics are pinned here from three sides: float64 central differences of its own forward
(the gradients), PyTorch's packed bidirectional layers (the meaning of lengths and reverse),
and exact properties (lengths = T is lengths = None, row permutation, padding never read,
length 0, reverse = forward on the flipped sequence, each row equal to its own short run).

Loss for the gradients: L = sum(y * Gy) + sum(h_n * Gh) (+ sum(c_n * Gc)) with fixed random
G's, so dL/dy = Gy, dL/dh_n = Gh, dL/dc_n = Gc.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from conftest import torch_or_skip
from gradcheck import central_difference
from rnncore import reference as ref

T, B, D, H = 5, 6, 3, 4  # D != H so that transposed weights cannot go unnoticed
TOL = 1e-6  # central differences, as tests/test_reference.py
PARAMS = ("w_ih", "w_hh", "b_ih", "b_hh")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a-b| / max(max|a|, max|b|, tiny), same shapes asserted."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def same_bits(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------
# One interface over the cell kinds
# --------------------------------------------------------------------------------------------


class Cell:
    def __init__(self, name: str, gates: int, has_c: bool, **options: Any) -> None:
        self.name, self.gates, self.has_c, self.options = name, gates, has_c, options
        self.kind = name.split("-")[0]

    def __repr__(self) -> str:
        return self.name

    @property
    def states(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.has_c else ("h0",)

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("x", *self.states, *PARAMS)

    def make(self, rng: np.random.Generator, batch: int = B, dtype=np.float64) -> dict:
        G, s = self.gates * H, 1 / np.sqrt(H)
        v = {
            "x": rng.standard_normal((T, batch, D)),
            "h0": 0.5 * rng.standard_normal((batch, H)),
            "w_ih": rng.uniform(-2 * s, 2 * s, (G, D)),
            "w_hh": rng.uniform(-2 * s, 2 * s, (G, H)),
            "b_ih": rng.uniform(-s, s, G),
            "b_hh": rng.uniform(-s, s, G),
        }
        if self.has_c:
            v["c0"] = 0.5 * rng.standard_normal((batch, H))
        return {k: a.astype(dtype) for k, a in v.items()}

    def grads_in(self, rng: np.random.Generator, batch: int = B, t: int = T) -> tuple:
        """(Gy, Gh) or (Gy, Gh, Gc)."""
        shapes = [(t, batch, H), (batch, H)] + ([(batch, H)] if self.has_c else [])
        return tuple(rng.standard_normal(s) for s in shapes)

    def forward(self, v: dict, training: bool = True, **kw: Any) -> tuple[tuple, Any]:
        fn = {"rnn": ref.rnn_forward, "lstm": ref.lstm_forward, "gru": ref.gru_forward}
        args = [v["x"], *(v[s] for s in self.states), v["w_ih"], v["w_hh"]]
        *out, cache = fn[self.kind](
            *args, b_ih=v["b_ih"], b_hh=v["b_hh"], training=training, **self.options, **kw
        )
        return tuple(out), cache

    def backward(self, g: tuple, cache: Any) -> dict:
        fn = {"rnn": ref.rnn_backward, "lstm": ref.lstm_backward, "gru": ref.gru_backward}
        return dict(zip(self.inputs, fn[self.kind](*g, cache), strict=True))

    def run(self, v: dict, g: tuple, **kw: Any) -> tuple[tuple, dict]:
        out, cache = self.forward(v, **kw)
        return out, self.backward(g, cache)


CELLS = [
    Cell("rnn-tanh", 1, False, nonlinearity="tanh"),
    Cell("rnn-relu", 1, False, nonlinearity="relu"),
    Cell("lstm", 4, True),
    Cell("gru-reset_after", 3, False, reset_after=True),
    Cell("gru-reset_before", 3, False, reset_after=False),
]
FWD = {"rnn": ref.rnn_forward, "lstm": ref.lstm_forward, "gru": ref.gru_forward}


def mixed_lengths(rng: np.random.Generator) -> np.ndarray:
    """(B,) lengths in random order, including 0, 1 and T."""
    return rng.permutation(np.array([0, 1, T, 2, T - 1, T])).astype(np.int64)


def valid(lengths: np.ndarray) -> np.ndarray:
    """(T, B) bool: t < lengths[b]."""
    return np.arange(T)[:, None] < lengths[None, :]


def loss(out: tuple, g: tuple) -> float:
    return float(sum(np.sum(o * w) for o, w in zip(out, g, strict=True)))


def relu_preactivations(v: dict, lengths: np.ndarray, reverse: bool) -> np.ndarray:
    """Pre-activations of the relu RNN at the steps that run, recomputed row by row."""
    pre = []
    for b in range(v["x"].shape[1]):
        steps = range(lengths[b])
        h = v["h0"][b]
        for t in reversed(steps) if reverse else steps:
            a = v["x"][t, b] @ v["w_ih"].T + v["b_ih"] + h @ v["w_hh"].T + v["b_hh"]
            pre.append(a)
            h = np.maximum(a, 0)
    return np.concatenate(pre)


def make_case(cell: Cell, seed: int, reverse: bool = False) -> tuple[dict, tuple, np.ndarray]:
    """Inputs, output gradients and mixed lengths; for relu, away from the kink."""
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        v, lengths = cell.make(rng), mixed_lengths(rng)
        if cell.options.get("nonlinearity") == "relu":
            pre = relu_preactivations(v, lengths, reverse)
            if np.min(np.abs(pre)) < 1e-2 or not (np.any(pre > 0) and np.any(pre < 0)):
                continue
        return v, cell.grads_in(rng), lengths
    raise AssertionError("no suitable seed found")


# --------------------------------------------------------------------------------------------
# Gradients against central differences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_gradients_match_central_differences(cell: Cell, reverse: bool) -> None:
    v, g, lengths = make_case(cell, seed=100, reverse=reverse)
    assert {0, 1, T} <= set(lengths.tolist())
    grads = cell.run(v, g, lengths=lengths, reverse=reverse)[1]

    def f() -> float:
        return loss(cell.forward(v, training=False, lengths=lengths, reverse=reverse)[0], g)

    for name in cell.inputs:
        num = central_difference(f, v[name])
        assert grads[name].shape == v[name].shape and grads[name].dtype == np.float64
        assert np.max(np.abs(num)) > 1e-3, f"{name}: degenerate check"
        err = rel_err(grads[name], num)
        assert err <= TOL, f"{cell} reverse={reverse} {name}: relative error {err:.3g}"
    pad = ~valid(lengths)
    assert np.all(grads["x"][pad] == 0)  # and the quotient agrees: padding is never read


# --------------------------------------------------------------------------------------------
# PyTorch parity: packed bidirectional layers = the forward and the reverse direction
# --------------------------------------------------------------------------------------------


TORCH_CELLS = [c for c in CELLS if c.name != "gru-reset_before"]  # no torch counterpart


@pytest.mark.parametrize("cell", TORCH_CELLS, ids=repr)
def test_pytorch_packed_bidirectional_parity(cell: Cell) -> None:
    torch = torch_or_skip()
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    lengths = rng.permutation(np.array([1, T, 3, 2, T, 4])).astype(np.int64)  # torch rejects 0
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell.kind]
    extra = {"nonlinearity": cell.options["nonlinearity"]} if cell.kind == "rnn" else {}
    net = cls(D, H, num_layers=1, bidirectional=True, **extra).double()
    x = rng.standard_normal((T, B, D))
    s0 = [rng.standard_normal((2, B, H)) for _ in cell.states]  # h0 (and c0), PyTorch's order
    gy = rng.standard_normal((T, B, 2 * H))
    gs = [rng.standard_normal((2, B, H)) for _ in cell.states]

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in s0]
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    y_p, state = net(packed, tuple(st) if cell.has_c else st[0])
    yt = pad_packed_sequence(y_p, total_length=T)[0]
    state = state if cell.has_c else (state,)
    total = (yt * torch.tensor(gy)).sum() + sum(
        (s * torch.tensor(w)).sum() for s, w in zip(state, gs, strict=True)
    )
    total.backward()

    p = dict(net.named_parameters())
    dx = np.zeros_like(x)
    for d, suffix in enumerate(("", "_reverse")):
        v = {"x": x, **{n: s[d] for n, s in zip(cell.states, s0, strict=True)}}
        v.update({k: p[f"weight_{k[2:]}_l0{suffix}"].detach().numpy() for k in PARAMS[:2]})
        v.update({k: p[f"bias_{k[2:]}_l0{suffix}"].detach().numpy() for k in PARAMS[2:]})
        g = (gy[..., d * H : (d + 1) * H], *(w[d] for w in gs))
        out, grads = cell.run(v, g, lengths=lengths, reverse=bool(d))
        where = f"{cell} direction {suffix or '_forward'}"
        assert rel_err(out[0], yt.detach().numpy()[..., d * H : (d + 1) * H]) < 1e-12, where
        for o, s in zip(out[1:], state, strict=True):
            assert rel_err(o, s.detach().numpy()[d]) < 1e-12, where
        for n, s in zip(cell.states, st, strict=True):
            assert rel_err(grads[n], s.grad.numpy()[d]) < 1e-10, f"{where} d{n}"
        for k in PARAMS:
            tname = f"{'weight' if k[0] == 'w' else 'bias'}_{k[2:]}_l0{suffix}"
            assert rel_err(grads[k], p[tname].grad.numpy()) < 1e-10, f"{where} d{k}"
        dx += grads["x"]
    assert rel_err(dx, xt.grad.numpy()) < 1e-10, f"{cell} dx"


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


DIRECTIONS = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])


@DIRECTIONS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_full_lengths_bitwise_equal_to_none(cell: Cell, dtype, reverse: bool) -> None:
    rng = np.random.default_rng(1)
    v, g = cell.make(rng, dtype=dtype), tuple(a.astype(dtype) for a in cell.grads_in(rng))
    out_n, grads_n = cell.run(v, g, reverse=reverse)
    for lengths in (np.full(B, T), np.full(B, T, np.int32), [T] * B):
        out_l, grads_l = cell.run(v, g, lengths=lengths, reverse=reverse)
        assert all(same_bits(a, b) for a, b in zip(out_n, out_l, strict=True))
        assert all(same_bits(grads_n[k], grads_l[k]) for k in cell.inputs)
        assert out_l[0].dtype == dtype


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_row_permutation_permutes_results(cell: Cell, reverse: bool) -> None:
    """Permuting the batch rows (with their lengths) permutes y, states, dx, dh0 (dc0).

    Exactly (bitwise) for the rows the reference alone computes: padding zeros and the states
    and state gradients passed through by length-0 rows. Elsewhere to a few ulps only: the
    reference's matrix products are NumPy's BLAS, and OpenBLAS's row results can depend on a
    row's position in the block (seen: (6, 16) @ (16, 3) in float64, the LSTM's dx here), and
    the lengths=None path must stay bitwise what it was. Bitwise permutation is the kernels'
    property (DESIGN.md, Sequences); the weight gradients' summation order changes anyway.
    """
    v, g, lengths = make_case(cell, seed=3, reverse=reverse)
    out, grads = cell.run(v, g, lengths=lengths, reverse=reverse)
    perm = np.random.default_rng(5).permutation(B)
    vp = dict(v, x=v["x"][:, perm], **{s: v[s][perm] for s in cell.states})
    gp = (g[0][:, perm], *(a[perm] for a in g[1:]))
    out_p, grads_p = cell.run(vp, gp, lengths=lengths[perm], reverse=reverse)
    pairs = [(out_p[0], out[0][:, perm]), (grads_p["x"], grads["x"][:, perm])]
    pairs += [(a, b[perm]) for a, b in zip(out_p[1:], out[1:], strict=True)]
    pairs += [(grads_p[s], grads[s][perm]) for s in cell.states]
    for a, b in pairs:
        assert rel_err(a, b) < 1e-14
    pad = ~valid(lengths[perm])
    assert np.all(out_p[0][pad] == 0) and np.all(grads_p["x"][pad] == 0)
    (empty,) = np.flatnonzero(lengths[perm] == 0)
    for a, b in pairs[2:]:
        assert same_bits(a[empty], b[empty])  # h_n = h0, dh0 = dh_n: nothing rounded
    for k in PARAMS:  # summed over rows in another order: equal to rounding
        assert rel_err(grads_p[k], grads[k]) < 1e-13, k


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_padding_is_never_read(cell: Cell, reverse: bool) -> None:
    """Whatever lies in x and dy past a length, nothing changes; dx there is exactly 0."""
    v, g, lengths = make_case(cell, seed=9, reverse=reverse)
    pad = ~valid(lengths)
    out, grads = cell.run(v, g, lengths=lengths, reverse=reverse)
    for fill in (np.nan, np.inf, 1e300):
        x, gy = v["x"].copy(), g[0].copy()
        x[pad], gy[pad] = fill, fill
        x_before, gy_before = x.copy(), gy.copy()
        out_f, grads_f = cell.run(dict(v, x=x), (gy, *g[1:]), lengths=lengths, reverse=reverse)
        assert all(same_bits(a, b) for a, b in zip(out, out_f, strict=True)), fill
        assert all(same_bits(grads[k], grads_f[k]) for k in cell.inputs), fill
        assert same_bits(x, x_before) and same_bits(gy, gy_before)  # inputs untouched
    assert np.all(out[0][pad] == 0) and np.all(grads["x"][pad] == 0)
    assert not np.any(np.signbit(grads["x"][pad]))  # +0, not -0


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_length_zero_keeps_the_initial_state(cell: Cell, reverse: bool) -> None:
    v, g, lengths = make_case(cell, seed=13, reverse=reverse)
    (b,) = np.flatnonzero(lengths == 0)
    out, grads = cell.run(v, g, lengths=lengths, reverse=reverse)
    assert not np.any(out[0][:, b])
    for o, s in zip(out[1:], cell.states, strict=True):
        assert same_bits(o[b], v[s][b])  # h_n = h0 (c_n = c0)
    for gs, s in zip(g[1:], cell.states, strict=True):
        assert same_bits(grads[s][b], gs[b])  # dh0 = dh_n (dc0 = dc_n)
    assert not np.any(grads["x"][:, b])
    # a batch of nothing but empty sequences: states pass through, no parameter gradient
    zero = np.zeros(B, np.int64)
    out0, grads0 = cell.run(v, g, lengths=zero, reverse=reverse)
    assert not np.any(out0[0])
    for o, s, gs in zip(out0[1:], cell.states, g[1:], strict=True):
        assert same_bits(o, v[s]) and same_bits(grads0[s], gs)
    for k in ("x", *PARAMS):
        assert not np.any(grads0[k]), k


@pytest.mark.parametrize("lengths", [None, "full"])
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_reverse_is_forward_on_the_flipped_sequence(cell: Cell, lengths) -> None:
    rng = np.random.default_rng(17)
    v, g = cell.make(rng), cell.grads_in(rng)
    L = None if lengths is None else np.full(B, T)
    out_r, grads_r = cell.run(v, g, lengths=L, reverse=True)
    vf = dict(v, x=v["x"][::-1].copy())
    out_f, grads_f = cell.run(vf, (g[0][::-1].copy(), *g[1:]), lengths=L)
    assert same_bits(out_r[0], out_f[0][::-1].copy())
    assert all(same_bits(a, b) for a, b in zip(out_r[1:], out_f[1:], strict=True))
    assert same_bits(grads_r["x"], grads_f["x"][::-1].copy())
    assert all(same_bits(grads_r[k], grads_f[k]) for k in cell.inputs[1:])


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_each_row_is_its_own_short_sequence(cell: Cell, reverse: bool) -> None:
    """Row b with lengths = the sequence x[:lengths[b], b] run alone (flipped when reverse)."""
    v, g, lengths = make_case(cell, seed=21, reverse=reverse)
    out, grads = cell.run(v, g, lengths=lengths, reverse=reverse)
    param_sum = {k: np.zeros_like(v[k]) for k in PARAMS}
    for b in range(B):
        n = lengths[b]
        order = np.arange(n)[::-1] if reverse else np.arange(n)  # the reading order
        vb = dict(v, x=v["x"][order, b : b + 1], **{s: v[s][b : b + 1] for s in cell.states})
        gb = (g[0][order, b : b + 1], *(a[b : b + 1] for a in g[1:]))
        out_b, grads_b = cell.run(vb, gb)
        assert rel_err(out[0][order, b], out_b[0][:, 0]) < 1e-13
        assert not np.any(out[0][n:, b])
        for o, ob in zip(out[1:], out_b[1:], strict=True):
            assert rel_err(o[b], ob[0]) < 1e-13
        assert rel_err(grads["x"][order, b], grads_b["x"][:, 0]) < 1e-13
        for s in cell.states:
            assert rel_err(grads[s][b], grads_b[s][0]) < 1e-13
        for k in PARAMS:
            param_sum[k] += grads_b[k]
    for k in PARAMS:
        assert rel_err(grads[k], param_sum[k]) < 1e-12, k


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_float32_with_lengths(cell: Cell, reverse: bool) -> None:
    v, g, lengths = make_case(cell, seed=25, reverse=reverse)
    v32 = {k: a.astype(np.float32) for k, a in v.items()}
    g32 = tuple(a.astype(np.float32) for a in g)
    out32, grads32 = cell.run(v32, g32, lengths=lengths.astype(np.int32), reverse=reverse)
    out64, grads64 = cell.run(v, g, lengths=lengths, reverse=reverse)
    for a, b in zip(out32, out64, strict=True):
        assert a.dtype == np.float32 and rel_err(a, b) < 1e-5
    for k in cell.inputs:
        assert grads32[k].dtype == np.float32 and rel_err(grads32[k], grads64[k]) < 1e-5, k
    inference, cache = cell.forward(v, training=False, lengths=lengths, reverse=reverse)
    assert cache is None
    assert all(same_bits(a, b) for a, b in zip(inference, out64, strict=True))


@DIRECTIONS
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_cache_owns_its_lengths(cell: Cell, reverse: bool) -> None:
    """The caller may reuse its lengths array after the forward; backward twice is identical."""
    v, g, lengths = make_case(cell, seed=29, reverse=reverse)
    mine = lengths.copy()
    _, cache = cell.forward(v, lengths=mine, reverse=reverse)
    first = cell.backward(g, cache)
    mine[:] = T
    second = cell.backward(g, cache)
    assert all(same_bits(first[k], second[k]) for k in cell.inputs)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def call(cell: Cell, **kw: Any) -> Any:
    v = cell.make(np.random.default_rng(0))
    return cell.forward(v, **kw)


BAD_LENGTHS = [
    (np.full(B + 1, 2), ValueError, f"lengths must have shape (B,) = ({B},), got shape ({B + 1},)"),
    (np.full((B, 1), 2), ValueError, f"lengths must have shape (B,) = ({B},), got shape ({B}, 1)"),
    (np.int64(2), ValueError, f"lengths must have shape (B,) = ({B},), got shape ()"),
    (np.full(B, 2.0), TypeError, f"lengths must be an integer array of shape ({B},), got dtype float64"),
    (np.ones(B, bool), TypeError, f"lengths must be an integer array of shape ({B},), got dtype bool"),
    ([2.5] * B, TypeError, f"lengths must be an integer array of shape ({B},), got dtype float64"),
    (np.array([2, 2, -1, 2, 2, 2]), ValueError, f"lengths must have values in [0, T] = [0, {T}], got lengths[2] = -1"),
    (np.array([2, 2, 2, 2, 2, T + 1]), ValueError, f"lengths must have values in [0, T] = [0, {T}], got lengths[5] = {T + 1}"),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(BAD_LENGTHS)))
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_bad_lengths_rejected(cell: Cell, case: int) -> None:
    lengths, error, message = BAD_LENGTHS[case]
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(cell, lengths=lengths)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(cell, lengths=lengths, reverse=True, training=False)


@pytest.mark.parametrize("reverse", ["yes", 1, None, np.array([True])], ids=repr)
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_bad_reverse_rejected(cell: Cell, reverse: Any) -> None:
    with pytest.raises(TypeError, match=r"^reverse must be a bool, got "):
        call(cell, reverse=reverse)


def test_numpy_bool_reverse_accepted() -> None:
    cell = CELLS[2]
    a = call(cell, reverse=np.bool_(True), training=False)[0]
    b = call(cell, reverse=True, training=False)[0]
    assert all(same_bits(u, w) for u, w in zip(a, b, strict=True))
