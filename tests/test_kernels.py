"""The C++ kernels (RNN, LSTM, GRU) against the NumPy reference, PyTorch, and bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import rnncore
from conftest import EPS32, num_threads, rel_err, torch_or_skip
from rnncore import reference as ref


@dataclass(frozen=True)
class Cell:
    """One recurrent cell as both implementations expose it."""

    name: str
    gates: int  # G: weights are (G*H, D) and (G*H, H)
    has_c: bool  # LSTM: a cell state beside h
    options: dict = field(default_factory=dict)
    ours: tuple[Callable, Callable] = (rnncore.rnn_forward, rnncore.rnn_backward)
    reference: tuple[Callable, Callable] = (ref.rnn_forward, ref.rnn_backward)

    def __str__(self) -> str:
        return self.name

    @property
    def fn(self) -> str:
        """The kernels' prefix: rnn, lstm or gru."""
        return self.name.split("-")[0]

    @property
    def arg_names(self) -> list[str]:
        states = ["h0", "c0"] if self.has_c else ["h0"]
        return ["x", *states, "w_ih", "w_hh", "b_ih", "b_hh"]

    @property
    def upstream_names(self) -> list[str]:
        return ["dy", "dh_n", "dc_n"] if self.has_c else ["dy", "dh_n"]

    @property
    def outputs(self) -> list[str]:
        return ["y", "h_n", "c_n"] if self.has_c else ["y", "h_n"]

    @property
    def grads(self) -> list[str]:
        states = ["dx", "dh0", "dc0"] if self.has_c else ["dx", "dh0"]
        return [*states, "dw_ih", "dw_hh", "db_ih", "db_hh"]

    def forward(self, args: dict, *, impl: str = "ours", **kw):
        """(outputs, cache) of the forward pass; args as made by make_args."""
        fwd = (self.ours if impl == "ours" else self.reference)[0]
        states = [args["h0"], args["c0"]] if self.has_c else [args["h0"]]
        out = fwd(
            args["x"], *states, args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"],
            **self.options, **kw,
        )  # fmt: skip
        return out[:-1], out[-1]

    def backward(self, upstream: tuple, cache, *, impl: str = "ours"):
        bwd = (self.ours if impl == "ours" else self.reference)[1]
        return bwd(*upstream, cache)


RNN_TANH = Cell("rnn-tanh", 1, False, {"nonlinearity": "tanh"})
RNN_RELU = Cell("rnn-relu", 1, False, {"nonlinearity": "relu"})
LSTM = Cell(
    "lstm", 4, True, {},
    (rnncore.lstm_forward, rnncore.lstm_backward), (ref.lstm_forward, ref.lstm_backward),
)  # fmt: skip
GRU = Cell(
    "gru", 3, False, {"reset_after": True},
    (rnncore.gru_forward, rnncore.gru_backward), (ref.gru_forward, ref.gru_backward),
)  # fmt: skip
GRU_RESET_BEFORE = Cell(
    "gru-reset-before", 3, False, {"reset_after": False},
    (rnncore.gru_forward, rnncore.gru_backward), (ref.gru_forward, ref.gru_backward),
)  # fmt: skip
CELLS = [RNN_TANH, RNN_RELU, LSTM, GRU, GRU_RESET_BEFORE]
cells = pytest.mark.parametrize("cell", CELLS, ids=str)


def make_args(cell, rng, T, B, D, H, dtype, *, bias=True, h0=True, scale=1.0):
    """Inputs and PyTorch-style weights U(-1/sqrt(H), 1/sqrt(H)) (times `scale`)."""
    k = scale / np.sqrt(H)
    G = cell.gates

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    def state():
        return rng.standard_normal((B, H)).astype(dtype) * 0.5 if h0 else None

    return dict(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=state(),
        c0=state() if cell.has_c else None,
        w_ih=u(G * H, D),
        w_hh=u(G * H, H),
        b_ih=u(G * H) if bias else None,
        b_hh=u(G * H) if bias else None,
    )


def make_upstream(cell, rng, T, B, H, dtype):
    """(dy, dh_n[, dc_n]): gradients of a loss with respect to the forward's outputs."""
    n = 2 if cell.has_c else 1
    return (
        rng.standard_normal((T, B, H)).astype(dtype),
        *(rng.standard_normal((B, H)).astype(dtype) for _ in range(n)),
    )


def run(cell, args, upstream, *, impl="ours", dtype=None):
    """Forward then backward; returns outputs + gradients as one list (optionally in dtype)."""
    if dtype is not None:
        args = {k: None if v is None else v.astype(dtype) for k, v in args.items()}
        upstream = tuple(g.astype(dtype) for g in upstream)
    outs, cache = cell.forward(args, impl=impl)
    return [*outs, *cell.backward(upstream, cache, impl=impl)]


SHAPES = [  # (T, B, D, H): T=1, B=1, D != H, H not a multiple of the vector width, long T
    (1, 1, 1, 1),
    (1, 4, 3, 5),
    (5, 1, 7, 3),
    (6, 3, 10, 17),
    (9, 8, 64, 48),
    (4, 33, 20, 130),
    (1000, 2, 3, 8),
]
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))


@cells
@shapes
@pytest.mark.parametrize("bias", [True, False])
def test_float64_matches_reference(rng, cell, shape, bias):
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, np.float64, bias=bias, h0=bias)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    ours, theirs = run(cell, args, upstream), run(cell, args, upstream, impl="reference")
    for name, a, b in zip(cell.outputs + cell.grads, ours, theirs, strict=True):
        assert rel_err(a, b) <= 1e-10, name
        if a is not None:
            assert a.dtype == np.float64 and a.shape == b.shape, name


def float32_tolerance(T, D, H):
    """Bound on the relative error of a float32 result against the exact one.

    Each step's pre-activations are dot products of length D + H (worst-case rounding error
    (D + H)·u relative to their scale, u = 2^-24); errors carried from earlier steps are damped
    by the gates and saturating activations but add up over at most T steps of the gradients.
    So the bound is linear in D + H + T: 4·u·(D + H + T), floored at 64·u for tiny shapes.
    Observed errors are 10-100x below it.
    """
    return max(64, 4 * (D + H + T)) * EPS32 / 2


@cells
@shapes
def test_float32_matches_float64_reference(rng, cell, shape):
    """float32 against the exact (float64) answer on the same float32 inputs."""
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    ours = run(cell, args, upstream)
    exact = run(cell, args, upstream, impl="reference", dtype=np.float64)
    tol = float32_tolerance(T, D, H)
    for name, a, b in zip(cell.outputs + cell.grads, ours, exact, strict=True):
        assert a.dtype == np.float32, name
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(12, 16, 40, 100), (7, 1, 30, 256), (5, 64, 20, 129)])
def test_same_result_with_one_and_two_threads(rng, cell, dtype, shape):
    """Thread count changes only rounding.

    Each thread runs single-threaded BLAS on its own slice of hidden units, and OpenBLAS picks
    its kernel (and so its summation order) by the shape of the call, so slices of different
    widths can round differently. Both results are within float32_tolerance of the exact
    answer, so within twice that of each other; in float64 the same argument gives ~1e-13.
    """
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, dtype)
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    results = []
    for n in (1, 2):
        with num_threads(n):
            results.append(run(cell, args, upstream))
    tol = 2 * float32_tolerance(T, D, H) if dtype == np.float32 else 1e-12
    for name, a, b in zip(cell.outputs + cell.grads, *results, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


def test_thread_count_api():
    old = rnncore.get_num_threads()
    assert old >= 1
    with num_threads(1):
        assert rnncore.get_num_threads() == 1
    assert rnncore.get_num_threads() == old
    with pytest.raises(ValueError, match=r"n must be between 1 and 4096, got 0"):
        rnncore.set_num_threads(0)
    with pytest.raises(TypeError, match=r"n must be an int, got float"):
        rnncore.set_num_threads(2.0)
    assert rnncore.blas_info()["blas_threads"] == 1


def test_blas_is_put_back_at_one_thread_after_threadpoolctl_raises_it(rng):
    """threadpoolctl sees rnncore's OpenBLAS as an ordinary one; a global threadpool_limits
    would otherwise leave two thread pools fighting inside every kernel."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ours = [
        i for i in threadpoolctl.threadpool_info() if "libscipy_openblas_rnncore" in i["filepath"]
    ]
    assert len(ours) == 1, "rnncore's OpenBLAS is not visible to threadpoolctl"
    x, w_ih, w_hh = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 4)), np.eye(5)
    want = rnncore.rnn_forward(x, None, w_ih, w_hh)[0]
    with threadpoolctl.threadpool_limits(limits={ours[0]["filepath"]: 2}):
        assert rnncore.blas_info()["blas_threads"] == 2  # the limit did reach it
        got = rnncore.rnn_forward(x, None, w_ih, w_hh)[0]
        assert rnncore.blas_info()["blas_threads"] == 1  # and the kernel put it back
    np.testing.assert_array_equal(got, want)


def torch_module(torch, cell, D, H, tdt):
    if cell.gates == 1:
        return torch.nn.RNN(D, H, nonlinearity=cell.options["nonlinearity"], dtype=tdt)
    return (torch.nn.LSTM if cell.has_c else torch.nn.GRU)(D, H, dtype=tdt)


@pytest.mark.parametrize("cell", [RNN_TANH, RNN_RELU, LSTM, GRU], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pytorch_parity(rng, cell, dtype):
    """Same weights in torch.nn.RNN/LSTM/GRU: same outputs, final states and every gradient."""
    torch = torch_or_skip()
    T, B, D, H = 11, 4, 9, 13
    args = make_args(cell, rng, T, B, D, H, dtype)
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    net = torch_module(torch, cell, D, H, tdt)
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            torch_name = name.replace("w_", "weight_").replace("b_", "bias_") + "_l0"
            getattr(net, torch_name).copy_(torch.from_numpy(args[name]))
    x = torch.from_numpy(args["x"]).requires_grad_()
    names = ("h0", "c0") if cell.has_c else ("h0",)
    states = [torch.from_numpy(args[k])[None].clone().requires_grad_() for k in names]
    y, final = net(x, tuple(states) if cell.has_c else states[0])
    final = list(final) if cell.has_c else [final]
    loss = (y * torch.from_numpy(upstream[0])).sum()
    for f, g in zip(final, upstream[1:], strict=True):
        loss = loss + (f[0] * torch.from_numpy(g)).sum()
    loss.backward()
    theirs = [y.detach().numpy(), *(f[0].detach().numpy() for f in final)]
    theirs += [x.grad.numpy(), *(s.grad[0].numpy() for s in states)]
    theirs += [
        getattr(net, n).grad.numpy()
        for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    ]
    ours = run(cell, args, upstream)
    # float32: both sides round; pre-activations are sums of D + H = 22 terms over 11 steps.
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for name, a, b in zip(cell.outputs + cell.grads, ours, theirs, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


@cells
def test_backward_twice_is_identical(rng, cell):
    args = make_args(cell, rng, 6, 3, 4, 5, np.float64)
    upstream = make_upstream(cell, rng, 6, 3, 5, np.float64)
    _, cache = cell.forward(args)
    first = cell.backward(upstream, cache)
    for a, b in zip(first, cell.backward(upstream, cache), strict=True):
        np.testing.assert_array_equal(a, b)


@cells
def test_cache_is_independent_of_later_input_changes(rng, cell):
    args = make_args(cell, rng, 6, 3, 4, 5, np.float64)
    upstream = make_upstream(cell, rng, 6, 3, 5, np.float64)
    _, cache = cell.forward(args)
    expected = cell.backward(upstream, cache)
    for v in args.values():
        if v is not None:
            v *= 3.0  # e.g. an optimizer step between forward and backward
    for a, b in zip(expected, cell.backward(upstream, cache), strict=True):
        np.testing.assert_array_equal(a, b)


@cells
def test_none_gradients_are_zero(rng, cell):
    T, B, H = 4, 2, 5
    args = make_args(cell, rng, T, B, 3, H, np.float64)
    _, cache = cell.forward(args)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    zeros = tuple(np.zeros_like(g) for g in upstream)
    nones = (None,) * len(upstream)
    for a, b in zip(cell.backward(nones, cache), cell.backward(zeros, cache), strict=True):
        np.testing.assert_array_equal(a, b)
    only_dy = cell.backward((upstream[0], *nones[1:]), cache)
    with_zeros = cell.backward((upstream[0], *zeros[1:]), cache)
    for a, b in zip(only_dy, with_zeros, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(only_dy[0]).max() > 0


@cells
def test_inference_mode_matches_training(rng, cell):
    for h0 in (True, False):
        args = make_args(cell, rng, 5, 3, 4, 6, np.float32, h0=h0)
        outs, cache = cell.forward(args)
        outs2, none = cell.forward(args, training=False)
        assert cache is not None and none is None
        for a, b in zip(outs, outs2, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(outs[1], outs[0][-1])  # h_n is the last y


@cells
def test_lists_and_noncontiguous_inputs(rng, cell):
    args = make_args(cell, rng, 4, 3, 5, 6, np.float64)
    outs, _ = cell.forward(args)
    # Fortran order, a transposed view, nested lists and a strided view give the same answer.
    other = dict(args)
    other["x"] = np.asfortranarray(args["x"])
    other["w_hh"] = np.ascontiguousarray(args["w_hh"].T).T
    other["h0"] = args["h0"].tolist()
    other["b_ih"] = list(args["b_ih"])
    other["w_ih"] = np.repeat(args["w_ih"], 2, axis=1)[:, ::2]
    for a, b in zip(outs, cell.forward(other)[0], strict=True):
        np.testing.assert_array_equal(a, b)


@cells
def test_empty_sequence_and_batch(rng, cell):
    args = make_args(cell, rng, 0, 3, 4, 5, np.float64)
    outs, cache = cell.forward(args)
    assert outs[0].shape == (0, 3, 5)
    np.testing.assert_array_equal(outs[1], args["h0"])
    upstream = make_upstream(cell, rng, 0, 3, 5, np.float64)
    grads = cell.backward(upstream, cache)
    assert grads[0].shape == (0, 3, 4)
    np.testing.assert_array_equal(grads[1], upstream[1])  # dh0 = dh_n
    assert not any(g.any() for g in grads[-4:])  # no weight or bias gradient
    args = make_args(cell, rng, 4, 0, 4, 5, np.float32, h0=False)
    outs, cache = cell.forward(args)
    assert outs[0].shape == (4, 0, 5) and outs[1].shape == (0, 5)
    assert cell.backward((None,) * (len(outs)), cache)[0].shape == (4, 0, 4)


@cells
def test_nan_in_one_batch_element_stays_there(rng, cell):
    T, B, D, H = 8, 4, 5, 6
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    clean = run(cell, args, upstream)
    args["x"][3, 1, 2] = np.nan
    dirty = run(cell, args, upstream)
    y, dx = dirty[0], dirty[len(cell.outputs)]
    others = [0, 2, 3]
    np.testing.assert_array_equal(y[:, others], clean[0][:, others])
    np.testing.assert_array_equal(dx[:, others], clean[len(cell.outputs)][:, others])
    assert np.isnan(y[3:, 1]).all() and np.isfinite(y[:3, 1]).all()  # propagated, not hidden


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturating_inputs_stay_finite(rng, cell, dtype):
    """|pre-activation| ~ 1e4: no overflow warning, no NaN, gradients finite."""
    args = make_args(cell, rng, 50, 2, 3, 4, dtype, scale=3.0)
    args["x"] = np.full_like(args["x"], 1e4)
    args["x"][::2] *= -1
    upstream = make_upstream(cell, rng, 50, 2, 4, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = run(cell, args, upstream)
    assert all(np.isfinite(r).all() for r in results if r is not None)
    if cell is not RNN_RELU:
        assert np.abs(results[0]).max() <= 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_saturated_gate_is_exactly_zero(dtype):
    """sigmoid(-inf) is 0, not the smallest normal float: a forget gate shut by an infinite
    input times an infinite cell state is NaN (0 * inf), as in the reference and PyTorch."""
    one = np.ones((1, 1), dtype)
    w_ih = np.array([[1.0], [-1.0], [1.0], [1.0]], dtype)  # i, f, g, o: f's pre-activation -inf
    x = np.full((1, 1, 1), np.inf, dtype)
    c0 = np.full((1, 1), np.inf, dtype)
    y, _, c, _ = rnncore.lstm_forward(x, 0 * one, c0, w_ih, np.zeros((4, 1), dtype))
    with np.errstate(invalid="ignore"):  # the reference's 0 * inf
        _, _, c_ref, _ = ref.lstm_forward(x, 0 * one, c0, w_ih, np.zeros((4, 1), dtype))
    assert np.isnan(c_ref).all() and np.isnan(c).all() and np.isnan(y).all()
    # float32 flushes sigmoid below -87 (a denormal at most) to 0; float64 keeps 3.7e-44
    x2 = np.full((1, 1, 1), 100.0, dtype)
    _, _, c2, _ = rnncore.lstm_forward(x2, 0 * one, c0, w_ih, np.zeros((4, 1), dtype))
    assert np.isnan(c2).all() if dtype == np.float32 else np.isinf(c2).all()


@cells
def test_ten_thousand_steps_stay_finite(rng, cell):
    T, B, D, H = 10_000, 1, 2, 8
    args = make_args(cell, rng, T, B, D, H, np.float32, scale=2.0)
    results = run(cell, args, make_upstream(cell, rng, T, B, H, np.float32))
    assert all(np.isfinite(r).all() for r in results if r is not None)


# --- bad input: TypeError / ValueError naming the argument, what was expected and what came --


def good(cell=RNN_TANH, dtype=np.float32):
    args = make_args(cell, np.random.default_rng(0), 3, 2, 4, 5, dtype)
    if not cell.has_c:
        del args["c0"]
    return args


BAD_FORWARD = [
    # (override, exception, pattern)
    (
        {"x": np.zeros((3, 2), np.float32)},
        ValueError,
        r"x must be a 3-D array of shape \(T, B, D\), got a 2-D array of shape \(3, 2\)",
    ),
    (
        {"x": np.zeros((3, 2, 7), np.float32)},
        ValueError,
        r"x must have shape \(T, B, D\) with D = 4 \(from w_ih\), got shape \(3, 2, 7\)",
    ),
    (
        {"h0": np.zeros((3, 5), np.float32)},
        ValueError,
        r"h0 must have shape \(B, H\) with B = 2 \(from x\), got shape \(3, 5\)",
    ),
    (
        {"w_hh": np.zeros((5, 4), np.float32)},
        ValueError,
        r"w_hh must have shape \(H, H\) with H = 5 \(from w_ih\), got shape \(5, 4\)",
    ),
    (
        {"b_ih": np.zeros(6, np.float32)},
        ValueError,
        r"b_ih must have shape \(H,\) with H = 5 \(from w_ih\), got shape \(6,\)",
    ),
    (
        {"b_hh": np.zeros((5, 1), np.float32)},
        ValueError,
        r"b_hh must be a 1-D array of shape \(H,\), got a 2-D array",
    ),
    (
        {"x": np.zeros((3, 2, 4), np.float64)},
        TypeError,
        r"x must have dtype float32 \(the dtype of the weights\), got float64",
    ),
    ({"x": np.zeros((3, 2, 4), np.int64)}, TypeError, r"x must have dtype float32 .*got int64"),
    (
        {"w_ih": np.zeros((5, 4), np.int32)},
        TypeError,
        r"w_ih must be a float32 or float64 array, got an array of dtype int32",
    ),
    ({"w_ih": None}, TypeError, r"w_ih must be a float32 or float64 array, got None"),
    ({"w_hh": None}, TypeError, r"w_hh must be a float32 array of shape \(H, H\), got None"),
    (
        {"x": None},
        TypeError,
        r"x must be a float32 array of shape \(T, B, D\), or integer ids of shape \(T, B\), got None",
    ),
    (
        {"x": "hello"},
        TypeError,
        r"x must be a float32 array of shape \(T, B, D\), or integer ids of shape \(T, B\), got str",
    ),
    ({"x": [[["a"]]]}, TypeError, r"x must be a float32 array .*does not convert"),
    ({"h0": {"a": 1}}, TypeError, r"h0 must be a float32 array of shape \(B, H\), got dict"),
    (
        {"w_hh": np.zeros((5, 5), np.float16)},
        TypeError,
        r"w_hh must have dtype float32 .*got float16",
    ),
]


@pytest.mark.parametrize("override,exc,pattern", BAD_FORWARD)
def test_forward_rejects_bad_input(override, exc, pattern):
    args = {**good(), **override}
    with pytest.raises(exc, match=pattern):
        rnncore.rnn_forward(**args)


def test_forward_rejects_bad_options():
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        rnncore.rnn_forward(**good(), nonlinearity="sigmoid")
    with pytest.raises(TypeError, match=r"nonlinearity must be 'tanh' or 'relu', got int"):
        rnncore.rnn_forward(**good(), nonlinearity=3)
    with pytest.raises(TypeError, match=r"rnn_forward: training must be True or False, got str"):
        rnncore.rnn_forward(**good(), training="yes")
    with pytest.raises(TypeError, match=r"gru_forward: reset_after must be True or False, got int"):
        rnncore.gru_forward(**good(GRU), reset_after=1)
    assert rnncore.rnn_forward(**good(), training=np.bool_(False))[2] is None
    with pytest.raises(TypeError):
        rnncore.rnn_forward(*good().values(), "tanh")  # options are keyword-only


def test_backward_rejects_bad_input():
    args = good()
    _, _, cache = rnncore.rnn_forward(**args)
    with pytest.raises(
        TypeError, match=r"cache must be the RNNCache returned by rnn_forward.*got dict"
    ):
        rnncore.rnn_backward(None, None, {"x": 1})
    with pytest.raises(TypeError, match=r"got None \(was the forward run with training=False\?\)"):
        rnncore.rnn_backward(None, None, None)
    with pytest.raises(
        ValueError,
        match=r"dy must have shape \(T, B, H\) with T = 3 \(from the cache\), got shape \(4, 2, 5\)",
    ):
        rnncore.rnn_backward(np.zeros((4, 2, 5), np.float32), None, cache)
    with pytest.raises(
        ValueError,
        match=r"dh_n must have shape \(B, H\) with H = 5 \(from the cache\), got shape \(2, 6\)",
    ):
        rnncore.rnn_backward(None, np.zeros((2, 6), np.float32), cache)
    with pytest.raises(
        TypeError, match=r"dy must have dtype float32 \(the dtype of the weights\), got float64"
    ):
        rnncore.rnn_backward(np.zeros((3, 2, 5)), None, cache)


def test_gated_cells_reject_bad_shapes():
    args = good(LSTM)
    with pytest.raises(
        ValueError,
        match=r"lstm_forward: w_ih must have shape \(4H, D\), got shape \(18, 4\): 18 is not a multiple of 4",
    ):
        rnncore.lstm_forward(**{**args, "w_ih": np.zeros((18, 4), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"lstm_forward: w_hh must have shape \(4H, H\) with 4H = 20 \(from w_ih\), got shape \(12, 5\)",
    ):
        rnncore.lstm_forward(**{**args, "w_hh": np.zeros((12, 5), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"lstm_forward: c0 must have shape \(B, H\) with H = 5 \(from w_ih\), got shape \(2, 4\)",
    ):
        rnncore.lstm_forward(**{**args, "c0": np.zeros((2, 4), np.float32)})
    with pytest.raises(
        TypeError,
        match=r"lstm_forward: c0 must have dtype float32 \(the dtype of the weights\), got float64",
    ):
        rnncore.lstm_forward(**{**args, "c0": np.zeros((2, 5))})
    gargs = good(GRU)
    with pytest.raises(
        ValueError,
        match=r"gru_forward: b_hh must have shape \(3H,\) with 3H = 15 \(from w_ih\), got shape \(20,\)",
    ):
        rnncore.gru_forward(**{**gargs, "b_hh": np.zeros(20, np.float32)})
    with pytest.raises(TypeError):
        rnncore.gru_forward(**gargs, reset_after=True, nonlinearity="tanh")  # not a GRU option


@pytest.mark.parametrize("producer", CELLS, ids=str)
@pytest.mark.parametrize("consumer", [RNN_TANH, LSTM, GRU], ids=str)
def test_backward_rejects_a_cache_from_another_cell(producer, consumer):
    _, cache = producer.forward(good(producer))
    upstream = (None, None, None) if consumer.has_c else (None, None)
    same_kind = type(cache) is type(consumer.forward(good(consumer))[1])
    if same_kind:
        assert consumer.backward(upstream, cache)[0].shape == (3, 2, 4)
    else:
        with pytest.raises(
            TypeError,
            match=rf"cache must be the \w+Cache returned by \w+_forward\(\.\.\., training=True\), got {type(cache).__name__}",
        ):
            consumer.backward(upstream, cache)


def test_dtype_travels_with_the_cache():
    _, cache = LSTM.forward(good(LSTM, np.float64))
    assert cache.dtype == np.float64 and cache.shape == (3, 2, 4, 5) and cache.nbytes > 0
    with pytest.raises(
        TypeError,
        match=r"lstm_backward: dh_n must have dtype float64 \(the dtype of the weights\), got float32",
    ):
        rnncore.lstm_backward(None, np.zeros((2, 5), np.float32), None, cache)
    assert "GRUCache" in repr(GRU_RESET_BEFORE.forward(good(GRU))[1])


# --- one-hot input: token ids instead of x -------------------------------------------------------


@cells
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 5, 11, 20), (3, 50, 65, 128), (1, 1, 1, 3)], ids=str)
def test_token_ids_equal_one_hot_rows(rng, cell, dtype, shape):
    """x as (T, B) integer ids gives what the one-hot (T, B, D) float rows give, with dx None;
    ids repeat, so the weight gradient's scatter-add sums several positions."""
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, dtype)
    ids = rng.integers(0, D, (T, B))
    dense = dict(args, x=np.eye(D, dtype=dtype)[ids])
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    want = run(cell, dense, upstream)
    for x in (ids, ids.astype(np.uint8) if D <= 256 else ids, ids.astype(np.int32)):
        for n in (1, 2):
            with num_threads(n):
                got = run(cell, dict(args, x=x), upstream)
            tol = 1e-12 if dtype == np.float64 else 1e-5
            for name, a, b in zip(cell.outputs + cell.grads, got, want, strict=True):
                if name == "dx":
                    assert a is None
                    continue
                assert rel_err(a, b) <= tol, (name, rel_err(a, b))


@cells
def test_token_ids_are_checked(cell):
    G = cell.gates
    args = dict(h0=None, c0=None, w_ih=np.zeros((G * 4, 6)), w_hh=np.zeros((G * 4, 4)),
                b_ih=None, b_hh=None)  # fmt: skip
    with pytest.raises(ValueError, match=r"x must hold ids in \[0, 6\), got 6 at flat position 3"):
        cell.forward(dict(args, x=np.array([[0, 1], [2, 6]])))
    with pytest.raises(ValueError, match=r"x must hold ids in \[0, 6\), got -1"):
        cell.forward(dict(args, x=np.array([[-1]])))
    with pytest.raises(
        TypeError,
        match=r"or be a \(T, B\) integer array of token ids; got int64 of shape \(2, 1, 6\)",
    ):
        cell.forward(dict(args, x=np.zeros((2, 1, 6), np.int64)))


def test_layers_take_token_ids(rng):
    lstm = rnncore.LSTM(9, 6, num_layers=2, dtype=np.float64, seed=0)
    ids = rng.integers(0, 9, (5, 3))
    y_ids, _ = lstm.forward(ids)
    dx, _ = lstm.backward(np.ones_like(y_ids))
    g_ids = {k: v.copy() for k, v in lstm.grads.items()}
    lstm.zero_grad()
    y_dense, _ = lstm.forward(np.eye(9)[ids])
    lstm.backward(np.ones_like(y_dense))
    assert dx is None
    np.testing.assert_allclose(y_ids, y_dense, rtol=1e-13, atol=1e-15)
    for k, v in lstm.grads.items():
        np.testing.assert_allclose(g_ids[k], v, rtol=1e-12, atol=1e-14)
