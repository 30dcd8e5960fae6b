"""The C++ vanilla RNN kernels against the NumPy reference, PyTorch, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from conftest import EPS32, num_threads, rel_err, torch_or_skip
from rnncore import reference as ref


def make_rnn(rng, T, B, D, H, dtype, *, bias=True, h0=True, scale=1.0):
    """Inputs and PyTorch-style weights U(-1/sqrt(H), 1/sqrt(H)) (times `scale`)."""
    k = scale / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    return dict(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype) * 0.5 if h0 else None,
        w_ih=u(H, D),
        w_hh=u(H, H),
        b_ih=u(H) if bias else None,
        b_hh=u(H) if bias else None,
    )


def upstream(rng, T, B, H, dtype):
    return (
        rng.standard_normal((T, B, H)).astype(dtype),
        rng.standard_normal((B, H)).astype(dtype),
    )


def run_both(args, dy, dh, nonlinearity, *, reference_dtype=None):
    """rnncore fwd+bwd and the reference's (optionally in another dtype) on the same inputs."""
    y, h_n, cache = rnncore.rnn_forward(**args, nonlinearity=nonlinearity)
    grads = rnncore.rnn_backward(dy, dh, cache)
    rdt = reference_dtype
    rargs = {k: (None if v is None else v.astype(rdt or v.dtype)) for k, v in args.items()}
    yr, hr, rc = ref.rnn_forward(**rargs, nonlinearity=nonlinearity)
    rgrads = ref.rnn_backward(dy.astype(rdt or dy.dtype), dh.astype(rdt or dh.dtype), rc)
    return (y, h_n, *grads), (yr, hr, *rgrads)


NAMES = ["y", "h_n", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"]

SHAPES = [  # (T, B, D, H): T=1, B=1, D != H, H not a multiple of the vector width, long T
    (1, 1, 1, 1),
    (1, 4, 3, 5),
    (5, 1, 7, 3),
    (6, 3, 10, 17),
    (9, 8, 64, 48),
    (4, 33, 20, 130),
    (1000, 2, 3, 8),
]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))
@pytest.mark.parametrize("bias", [True, False])
def test_float64_matches_reference(rng, shape, nonlinearity, bias):
    T, B, D, H = shape
    args = make_rnn(rng, T, B, D, H, np.float64, bias=bias, h0=bias)
    dy, dh = upstream(rng, T, B, H, np.float64)
    ours, theirs = run_both(args, dy, dh, nonlinearity)
    for name, a, b in zip(NAMES, ours, theirs, strict=True):
        assert rel_err(a, b) <= 1e-10, name
        if a is not None:
            assert a.dtype == np.float64 and a.shape == b.shape, name


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))
def test_float32_matches_float64_reference(rng, shape, nonlinearity):
    """float32 against the exact (float64) answer on the same float32 inputs.

    Each step's outputs are dot products of length D + H (worst-case rounding error
    (D + H)·u relative to their scale, u = 2^-24), and errors carried from earlier steps are
    damped by the contractive recurrence but add up over at most T steps of the gradients. So
    the tolerance is linear in D + H + T: 4·u·(D + H + T), with a floor of 64·u for tiny shapes.
    Observed errors are 10-100x below it.
    """
    T, B, D, H = shape
    args = make_rnn(rng, T, B, D, H, np.float32)
    dy, dh = upstream(rng, T, B, H, np.float32)
    ours, exact = run_both(args, dy, dh, nonlinearity, reference_dtype=np.float64)
    tol = max(64, 4 * (D + H + T)) * EPS32 / 2
    for name, a, b in zip(NAMES, ours, exact, strict=True):
        assert a.dtype == np.float32, name
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(12, 16, 40, 100), (7, 1, 30, 256), (5, 64, 20, 129)])
def test_same_result_with_one_and_two_threads(rng, dtype, shape):
    """Thread count changes only rounding.

    Each thread runs single-threaded BLAS on its own slice of hidden units, and OpenBLAS picks
    its kernel (and so its summation order) by the shape of the call, so slices of different
    widths can round differently. Both results are within the float32 bound of
    test_float32_matches_float64_reference of the exact answer, so they are within twice that
    of each other; in float64 the same argument gives ~1e-13.
    """
    T, B, D, H = shape
    args = make_rnn(rng, T, B, D, H, dtype)
    dy, dh = upstream(rng, T, B, H, dtype)
    results = []
    for n in (1, 2):
        with num_threads(n):
            y, h_n, cache = rnncore.rnn_forward(**args)
            results.append((y, h_n, *rnncore.rnn_backward(dy, dh, cache)))
    tol = 2 * 4 * (D + H + T) * EPS32 / 2 if dtype == np.float32 else 1e-12
    for name, a, b in zip(NAMES, *results, strict=True):
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_pytorch_parity(rng, dtype, nonlinearity):
    torch = torch_or_skip()
    T, B, D, H = 11, 4, 9, 13
    args = make_rnn(rng, T, B, D, H, dtype)
    dy, dh = upstream(rng, T, B, H, dtype)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    net = torch.nn.RNN(D, H, nonlinearity=nonlinearity, dtype=tdt)
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            getattr(net, name.replace("w_", "weight_").replace("b_", "bias_") + "_l0").copy_(
                torch.from_numpy(args[name])
            )
    x = torch.from_numpy(args["x"]).requires_grad_()
    h0 = torch.from_numpy(args["h0"])[None].clone().requires_grad_()
    y, h_n = net(x, h0)
    ((y * torch.from_numpy(dy)).sum() + (h_n[0] * torch.from_numpy(dh)).sum()).backward()
    theirs = [
        y.detach().numpy(),
        h_n[0].detach().numpy(),
        x.grad.numpy(),
        h0.grad[0].numpy(),
        net.weight_ih_l0.grad.numpy(),
        net.weight_hh_l0.grad.numpy(),
        net.bias_ih_l0.grad.numpy(),
        net.bias_hh_l0.grad.numpy(),
    ]
    y2, h2, cache = rnncore.rnn_forward(**args, nonlinearity=nonlinearity)
    ours = [y2, h2, *rnncore.rnn_backward(dy, dh, cache)]
    tol = 1e-12 if dtype == np.float64 else 2e-5  # float32: both sides round, T*(D+H) ~ 250 ops
    for name, a, b in zip(NAMES, ours, theirs, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


def test_backward_twice_is_identical(rng):
    args = make_rnn(rng, 6, 3, 4, 5, np.float64)
    dy, dh = upstream(rng, 6, 3, 5, np.float64)
    _, _, cache = rnncore.rnn_forward(**args)
    first = rnncore.rnn_backward(dy, dh, cache)
    second = rnncore.rnn_backward(dy, dh, cache)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cache_is_independent_of_later_input_changes(rng):
    args = make_rnn(rng, 6, 3, 4, 5, np.float64)
    dy, dh = upstream(rng, 6, 3, 5, np.float64)
    _, _, cache = rnncore.rnn_forward(**args)
    expected = rnncore.rnn_backward(dy, dh, cache)
    for v in args.values():
        v *= 3.0  # e.g. an optimizer step between forward and backward
    for a, b in zip(expected, rnncore.rnn_backward(dy, dh, cache), strict=True):
        np.testing.assert_array_equal(a, b)


def test_none_gradients_are_zero(rng):
    args = make_rnn(rng, 4, 2, 3, 5, np.float64)
    _, _, cache = rnncore.rnn_forward(**args)
    zeros = rnncore.rnn_backward(np.zeros((4, 2, 5)), np.zeros((2, 5)), cache)
    for a, b in zip(rnncore.rnn_backward(None, None, cache), zeros, strict=True):
        np.testing.assert_array_equal(a, b)
    dy, _ = upstream(rng, 4, 2, 5, np.float64)
    only_dy = rnncore.rnn_backward(dy, None, cache)
    for a, b in zip(only_dy, rnncore.rnn_backward(dy, np.zeros((2, 5)), cache), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(only_dy[0]).max() > 0


def test_inference_mode_matches_training(rng):
    for h0 in (True, False):
        args = make_rnn(rng, 5, 3, 4, 6, np.float32, h0=h0)
        y, h_n, cache = rnncore.rnn_forward(**args)
        y2, h2, none = rnncore.rnn_forward(**args, training=False)
        assert cache is not None and none is None
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(h_n, h2)
        np.testing.assert_array_equal(h_n, y[-1])


def test_lists_and_noncontiguous_inputs(rng):
    args = make_rnn(rng, 4, 3, 5, 6, np.float64)
    y, h_n, _ = rnncore.rnn_forward(**args)
    # Fortran order, a transposed view and nested lists give the same answer.
    x_f = np.asfortranarray(args["x"])
    w_hh_view = np.ascontiguousarray(args["w_hh"].T).T
    y2, h2, _ = rnncore.rnn_forward(
        x_f, args["h0"].tolist(), args["w_ih"], w_hh_view, list(args["b_ih"]), args["b_hh"]
    )
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h_n, h2)
    # Every other time step: a strided view.
    xs = np.repeat(args["x"], 2, axis=0)[::2]
    np.testing.assert_array_equal(rnncore.rnn_forward(xs, *list(args.values())[1:])[0], y)


def test_empty_sequence_and_batch(rng):
    args = make_rnn(rng, 0, 3, 4, 5, np.float64)
    y, h_n, cache = rnncore.rnn_forward(**args)
    assert y.shape == (0, 3, 5)
    np.testing.assert_array_equal(h_n, args["h0"])
    dh = rng.standard_normal((3, 5))
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = rnncore.rnn_backward(None, dh, cache)
    assert dx.shape == (0, 3, 4)
    np.testing.assert_array_equal(dh0, dh)
    assert not dw_ih.any() and not dw_hh.any() and not db_ih.any() and not db_hh.any()
    args = make_rnn(rng, 4, 0, 4, 5, np.float32, h0=False)
    y, h_n, cache = rnncore.rnn_forward(**args)
    assert y.shape == (4, 0, 5) and h_n.shape == (0, 5)
    assert rnncore.rnn_backward(None, None, cache)[0].shape == (4, 0, 4)


def test_nan_in_one_batch_element_stays_there(rng):
    T, B, D, H = 8, 4, 5, 6
    args = make_rnn(rng, T, B, D, H, np.float32)
    dy, dh = upstream(rng, T, B, H, np.float32)
    clean_y, _, clean_cache = rnncore.rnn_forward(**args)
    clean_dx = rnncore.rnn_backward(dy, dh, clean_cache)[0]
    args["x"][3, 1, 2] = np.nan
    y, _, cache = rnncore.rnn_forward(**args)
    dx = rnncore.rnn_backward(dy, dh, cache)[0]
    others = [0, 2, 3]
    np.testing.assert_array_equal(y[:, others], clean_y[:, others])
    np.testing.assert_array_equal(dx[:, others], clean_dx[:, others])
    assert np.isnan(y[3:, 1]).all() and np.isfinite(y[:3, 1]).all()  # propagated, not hidden


def test_saturating_inputs_stay_finite(rng):
    args = make_rnn(rng, 50, 2, 3, 4, np.float32)
    args["x"] = np.full_like(args["x"], 1e4)
    args["x"][::2] *= -1
    y, h_n, cache = rnncore.rnn_forward(**args)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert all(np.isfinite(g).all() for g in rnncore.rnn_backward(None, h_n, cache))


# --- bad input: TypeError / ValueError naming the argument, what was expected and what came --


def good(dtype=np.float32):
    rng = np.random.default_rng(0)
    return make_rnn(rng, 3, 2, 4, 5, dtype)


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
    ({"x": None}, TypeError, r"x must be a float32 array of shape \(T, B, D\), got None"),
    ({"x": "hello"}, TypeError, r"x must be a float32 array of shape \(T, B, D\), got str"),
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
    with pytest.raises(TypeError):
        rnncore.rnn_forward(**good(), training="yes")
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
