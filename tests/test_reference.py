"""Tests of the NumPy reference RNN / LSTM / GRU (rnncore.reference), the oracle of the kernels.

Gradients are checked against float64 central differences of the forward pass, through the
scalar loss L = sum(y * Gy) + sum(h_n * Gh) (+ sum(c_n * Gc)) with fixed random G's, whose
gradients with respect to y, h_n, c_n are exactly Gy, Gh, Gc.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from gradcheck import central_difference
from rnncore import reference as ref

T, B, D, H = 3, 2, 4, 5  # D != H so that transposed weights cannot go unnoticed
EPS = 1e-6
TOL = 1e-6

PARAM_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a-b| / max(max|a|, max|b|, tiny)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


# --------------------------------------------------------------------------------------------
# One uniform interface per cell kind, so the same tests run over all of them.
# --------------------------------------------------------------------------------------------


class Cell:
    """A cell kind: its forward/backward, gate count and state names, behind one interface."""

    def __init__(self, name: str, gates: int, has_c: bool, **options: Any) -> None:
        self.name = name
        self.gates = gates
        self.has_c = has_c
        self.options = options

    def __repr__(self) -> str:
        return self.name

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.has_c else ("h0",)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("x", *self.state_names, *PARAM_NAMES)

    def make_inputs(self, rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
        G = self.gates * H
        scale = 1 / np.sqrt(H)
        inputs = {
            "x": rng.standard_normal((T, B, D)),
            "h0": 0.5 * rng.standard_normal((B, H)),
            "w_ih": rng.uniform(-scale, scale, (G, D)) * 2,
            "w_hh": rng.uniform(-scale, scale, (G, H)) * 2,
            "b_ih": rng.uniform(-scale, scale, G),
            "b_hh": rng.uniform(-scale, scale, G),
        }
        if self.has_c:
            inputs["c0"] = 0.5 * rng.standard_normal((B, H))
        return {k: v.astype(dtype) for k, v in inputs.items()}

    def forward(self, inputs: dict[str, Any], training: bool = True) -> tuple:
        """Returns (outputs, cache) where outputs is (y, h_n) or (y, h_n, c_n)."""
        states = [inputs.get(s) for s in self.state_names]
        args = [inputs["x"], *states, inputs["w_ih"], inputs["w_hh"]]
        kwargs = dict(b_ih=inputs.get("b_ih"), b_hh=inputs.get("b_hh"), training=training)
        fwd = {"rnn": ref.rnn_forward, "lstm": ref.lstm_forward, "gru": ref.gru_forward}
        *outputs, cache = fwd[self.name.split("-")[0]](*args, **kwargs, **self.options)
        return tuple(outputs), cache

    def backward(self, douts: tuple, cache: Any) -> dict[str, Any]:
        """douts is (dy, dh_n) or (dy, dh_n, dc_n); returns the gradients by input name."""
        bwd = {"rnn": ref.rnn_backward, "lstm": ref.lstm_backward, "gru": ref.gru_backward}
        grads = bwd[self.name.split("-")[0]](*douts, cache)
        assert len(grads) == len(self.input_names)
        return dict(zip(self.input_names, grads, strict=True))


CELLS = [
    Cell("rnn-tanh", 1, False, nonlinearity="tanh"),
    Cell("rnn-relu", 1, False, nonlinearity="relu"),
    Cell("lstm", 4, True),
    Cell("gru-reset_after", 3, False, reset_after=True),
    Cell("gru-reset_before", 3, False, reset_after=False),
]


def output_weights(cell: Cell, rng: np.random.Generator, dtype=np.float64) -> tuple:
    """Fixed random G's: (Gy, Gh) or (Gy, Gh, Gc)."""
    shapes = [(T, B, H), (B, H)] + ([(B, H)] if cell.has_c else [])
    return tuple(rng.standard_normal(s).astype(dtype) for s in shapes)


def loss(outputs: tuple, gs: tuple) -> float:
    return float(sum(np.sum(o * g) for o, g in zip(outputs, gs, strict=True)))


def relu_preactivations(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """(T, B, H) pre-activations of the relu RNN, recomputed independently of the module."""
    h = inputs["h0"]
    pre = []
    for t in range(T):
        a = inputs["x"][t] @ inputs["w_ih"].T + h @ inputs["w_hh"].T
        for b in ("b_ih", "b_hh"):
            if inputs.get(b) is not None:
                a = a + inputs[b]
        pre.append(a)
        h = np.maximum(a, 0)
    return np.stack(pre)


def make_case(cell: Cell, seed: int, missing: tuple[str, ...] = ()) -> tuple[dict, tuple]:
    """Inputs and output weights; for relu, a seed whose pre-activations stay away from 0."""
    for s in range(seed, seed + 1000):
        rng = np.random.default_rng(s)
        inputs = cell.make_inputs(rng)
        for name in missing:
            inputs[name] = None
        if cell.options.get("nonlinearity") == "relu":
            pre = relu_preactivations(inputs)
            # far from the kink compared with what an EPS perturbation can move them, and both
            # sides of it exercised
            if np.min(np.abs(pre)) < 1e-2 or not (np.any(pre > 0) and np.any(pre < 0)):
                continue
        return inputs, output_weights(cell, rng)
    raise AssertionError("no suitable seed found")


# --------------------------------------------------------------------------------------------
# Gradient checks
# --------------------------------------------------------------------------------------------


BIAS_MODES = {"both": (), "ih_only": ("b_hh",), "hh_only": ("b_ih",), "none": ("b_ih", "b_hh")}


@pytest.mark.parametrize("bias_mode", BIAS_MODES)
@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_gradients_match_central_differences(cell: Cell, bias_mode: str) -> None:
    missing = BIAS_MODES[bias_mode]
    inputs, gs = make_case(cell, seed=1234, missing=missing)
    _, cache = cell.forward(inputs)
    grads = cell.backward(gs, cache)

    def f() -> float:
        return loss(cell.forward(inputs, training=False)[0], gs)

    checked = []
    for name in cell.input_names:
        if name in missing:
            assert grads[name] is None, f"{name}: gradient of a missing bias must be None"
            continue
        assert grads[name].shape == inputs[name].shape, name
        assert grads[name].dtype == np.float64, name
        num = central_difference(f, inputs[name], h=EPS)
        assert np.max(np.abs(num)) > 1e-3, f"{name}: degenerate check, gradient ~ 0"
        err = rel_err(grads[name], num)
        assert err <= TOL, f"{cell} {name}: relative error {err:.3g}"
        checked.append(name)
    assert set(checked) == set(cell.input_names) - set(missing)


# --------------------------------------------------------------------------------------------
# API behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_backward_twice_is_identical_and_pure(cell: Cell) -> None:
    inputs, gs = make_case(cell, seed=7)
    _, cache = cell.forward(inputs)
    cache_copy = {k: np.copy(v) for k, v in vars(cache).items()}
    gs_copy = tuple(g.copy() for g in gs)
    first = cell.backward(gs, cache)
    second = cell.backward(gs, cache)
    for name in cell.input_names:
        assert first[name] is not second[name]
        np.testing.assert_array_equal(first[name], second[name])
    for k, v in vars(cache).items():
        np.testing.assert_array_equal(v, cache_copy[k], err_msg=f"cache.{k} was modified")
    for g, g0 in zip(gs, gs_copy, strict=True):
        np.testing.assert_array_equal(g, g0, err_msg="backward modified its gradient inputs")


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_none_output_gradients_are_zeros(cell: Cell) -> None:
    inputs, gs = make_case(cell, seed=11)
    _, cache = cell.forward(inputs)
    n_out = len(gs)
    for k in range(n_out):
        with_none = list(gs)
        with_none[k] = None
        with_zero = list(gs)
        with_zero[k] = np.zeros_like(gs[k])
        a = cell.backward(tuple(with_none), cache)
        b = cell.backward(tuple(with_zero), cache)
        full = cell.backward(gs, cache)
        for name in cell.input_names:
            np.testing.assert_array_equal(a[name], b[name])
        # the dropped output gradient did matter
        assert any(not np.array_equal(a[n], full[n]) for n in cell.input_names)
    zero = cell.backward((None,) * n_out, cache)
    for name in cell.input_names:
        assert zero[name].shape == inputs[name].shape
        assert not np.any(zero[name])


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_none_initial_state_is_zeros_and_dstate_returned(cell: Cell) -> None:
    inputs, gs = make_case(cell, seed=5)
    zeros = dict(inputs, **{s: np.zeros((B, H)) for s in cell.state_names})
    nones = dict(inputs, **{s: None for s in cell.state_names})
    out_z, cache_z = cell.forward(zeros)
    out_n, cache_n = cell.forward(nones)
    for a, b in zip(out_z, out_n, strict=True):
        np.testing.assert_array_equal(a, b)
    g_z = cell.backward(gs, cache_z)
    g_n = cell.backward(gs, cache_n)
    for name in cell.input_names:
        np.testing.assert_array_equal(g_z[name], g_n[name])
    for s in cell.state_names:
        assert isinstance(g_n[s], np.ndarray) and g_n[s].shape == (B, H)
        assert np.any(g_n[s])


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_inference_mode_has_no_cache_and_same_outputs(cell: Cell) -> None:
    inputs, _ = make_case(cell, seed=3)
    out_train, cache = cell.forward(inputs, training=True)
    out_eval, no_cache = cell.forward(inputs, training=False)
    assert cache is not None
    assert no_cache is None
    assert len(out_train) == len(out_eval) == (3 if cell.has_c else 2)
    for a, b in zip(out_train, out_eval, strict=True):
        np.testing.assert_array_equal(a, b)
    y, h_n = out_train[0], out_train[1]
    assert y.shape == (T, B, H) and h_n.shape == (B, H)
    np.testing.assert_array_equal(y[-1], h_n)


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_outputs_do_not_alias_cache(cell: Cell) -> None:
    inputs, gs = make_case(cell, seed=21)
    outputs, cache = cell.forward(inputs)
    before = cell.backward(gs, cache)
    for o in outputs:
        o[...] = 123.0  # a caller scribbling on its outputs
    for v in inputs.values():
        if v is not None:
            v[...] = -7.0  # or on its inputs after the forward
    after = cell.backward(gs, cache)
    for name in cell.input_names:
        np.testing.assert_array_equal(before[name], after[name])


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_saturated_preactivations_are_finite_and_warning_free(cell: Cell) -> None:
    rng = np.random.default_rng(42)
    inputs = cell.make_inputs(rng)
    signs = np.where(rng.standard_normal((T, B, D)) >= 0, 1.0, -1.0)
    inputs["x"] = 1e4 * signs  # pre-activations of order +-1e4
    inputs["b_ih"] = 1e4 * np.where(rng.standard_normal(cell.gates * H) >= 0, 1.0, -1.0)
    gs = output_weights(cell, rng)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        outputs, cache = cell.forward(inputs)
        grads = cell.backward(gs, cache)
    pre = inputs["x"][0] @ inputs["w_ih"].T + inputs["b_ih"]
    assert np.max(np.abs(pre)) >= 1e4  # the case really is saturated
    for o in outputs:
        assert np.all(np.isfinite(o))
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
    if cell.name in ("rnn-tanh", "lstm"):
        assert np.all(np.abs(outputs[0]) <= 1)  # h is bounded by tanh (and the output gate)


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_float32_in_float32_out(cell: Cell) -> None:
    inputs, gs = make_case(cell, seed=17)
    inputs32 = {k: v.astype(np.float32) for k, v in inputs.items()}
    gs32 = tuple(g.astype(np.float32) for g in gs)
    outputs, cache = cell.forward(inputs32)
    grads = cell.backward(gs32, cache)
    for o in outputs:
        assert o.dtype == np.float32
    for name, g in grads.items():
        assert g.dtype == np.float32, name
    # and agrees with the float64 computation to float32 accuracy
    outputs64, cache64 = cell.forward(inputs)
    grads64 = cell.backward(gs, cache64)
    for o, o64 in zip(outputs, outputs64, strict=True):
        assert rel_err(o, o64) < 1e-5
    for name in cell.input_names:
        assert rel_err(grads[name], grads64[name]) < 1e-5, name


def test_relu_and_tanh_differ() -> None:
    """The nonlinearity option is honoured (guards against it being silently ignored)."""
    inputs, _ = make_case(CELLS[1], seed=1234)
    y_tanh = CELLS[0].forward(inputs)[0][0]
    y_relu = CELLS[1].forward(inputs)[0][0]
    assert np.all(y_relu >= 0) and np.any(y_tanh < 0)
    assert not np.allclose(y_tanh, y_relu)


def test_gru_reset_after_and_before_differ() -> None:
    inputs, _ = make_case(CELLS[3], seed=1234)
    y_after = CELLS[3].forward(inputs)[0][0]
    y_before = CELLS[4].forward(inputs)[0][0]
    assert not np.allclose(y_after, y_before)


def test_zero_length_sequence() -> None:
    """T = 0: y is empty, h_n = h0, and the gradient passes straight through to h0."""
    rng = np.random.default_rng(0)
    x = np.zeros((0, B, D))
    h0 = rng.standard_normal((B, H))
    w_ih, w_hh = rng.standard_normal((H, D)), rng.standard_normal((H, H))
    y, h_n, cache = ref.rnn_forward(x, h0, w_ih, w_hh)
    assert y.shape == (0, B, H)
    np.testing.assert_array_equal(h_n, h0)
    dh_n = rng.standard_normal((B, H))
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = ref.rnn_backward(None, dh_n, cache)
    assert dx.shape == (0, B, D) and db_ih is None and db_hh is None
    np.testing.assert_array_equal(dh0, dh_n)
    assert not np.any(dw_ih) and not np.any(dw_hh)


def test_bad_nonlinearity_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        ref.rnn_forward(
            rng.standard_normal((T, B, D)),
            None,
            rng.standard_normal((H, D)),
            rng.standard_normal((H, H)),
            nonlinearity="sigmoid",
        )
