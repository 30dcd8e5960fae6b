"""rnncore.softmax_cross_entropy and rnncore.linear_cross_entropy, the fused output kernels of the
language model: against a NumPy oracle in both dtypes and at 1 and 2 threads, central
differences, stability with huge logits, NaN rows, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore
from conftest import num_threads, rel_err
from gradcheck import central_difference


def np_xent(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The NumPy oracle: mean cross-entropy and its gradient, in float64."""
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    p = np.exp(z - lse[:, None])
    p[np.arange(len(y)), y] -= 1
    return float(np.mean(lse - z[np.arange(len(y)), y])), p / len(y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("N", "V"), [(1, 1), (7, 5), (300, 65), (64, 257)])
def test_softmax_cross_entropy_matches_numpy(rng, dtype, N, V):
    z = (rng.standard_normal((N, V)) * 3).astype(dtype)
    y = rng.integers(0, V, N)
    loss, d = rnncore.softmax_cross_entropy(z, y)
    want_loss, want_d = np_xent(z, y)
    # float32: a handful of roundings in log-sum-exp over V terms; exp is accurate to a few ulp.
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert loss == pytest.approx(want_loss, rel=tol, abs=tol)
    assert d.dtype == dtype and d.shape == (N, V)
    assert rel_err(d, want_d) <= tol * 10


def test_softmax_cross_entropy_gradient_matches_central_differences(rng):
    z, y = rng.standard_normal((6, 9)), rng.integers(0, 9, 6)
    _, d = rnncore.softmax_cross_entropy(z, y)
    num = central_difference(lambda: rnncore.softmax_cross_entropy(z, y, grad=False)[0], z)
    assert rel_err(d, num) <= 1e-6


def test_softmax_cross_entropy_is_stable_and_keeps_nan_in_its_row():
    z = np.array([[1e4, 0.0, -1e4], [1000.0, 1000.0, 1000.0], [0.0, np.nan, 1.0]], np.float32)
    loss, d = rnncore.softmax_cross_entropy(z[:2], np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx((1e4 + math.log(3)) / 2, rel=1e-6)
    loss, d = rnncore.softmax_cross_entropy(z, np.array([1, 2, 0]))
    assert math.isnan(loss)
    assert np.isfinite(d[:2]).all() and np.isnan(d[2]).all()
    assert rnncore.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, int))[0] == 0.0


def test_softmax_cross_entropy_rejects_bad_input():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"targets must hold ids in \[0, 4\), got 4 at flat position 1"
    ):
        rnncore.softmax_cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(
        TypeError,
        match=r"targets must be an integer array of token ids, got an array of dtype float64",
    ):
        rnncore.softmax_cross_entropy(z, np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"targets must have shape \(N,\) with N = 3 \(from logits\), got shape \(2,\)",
    ):
        rnncore.softmax_cross_entropy(z, np.array([0, 1]))
    with pytest.raises(
        ValueError, match=r"logits must be a 2-D array of shape \(N, V\), got a 1-D"
    ):
        rnncore.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(TypeError, match=r"logits must be a float32 or float64 array, got None"):
        rnncore.softmax_cross_entropy(None, np.array([0]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_numpy_at_any_thread_count(rng, dtype, bias):
    N, H, V = 203, 33, 29
    h = rng.standard_normal((N, H)).astype(dtype)
    w = (rng.standard_normal((V, H)) * 0.3).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    y = rng.integers(0, V, N)
    z = h.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    want_loss, dz = np_xent(z, y)
    results = []
    for n in (1, 2):
        with num_threads(n):
            results.append(rnncore.linear_cross_entropy(h, w, b, y))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for loss, dh, dw, db in results:
        assert loss == pytest.approx(want_loss, rel=tol)
        assert rel_err(dh, dz @ w.astype(np.float64)) <= tol
        assert rel_err(dw, dz.T @ h.astype(np.float64)) <= tol
        assert (db is None) == (b is None)
        if b is not None:
            assert rel_err(db, dz.sum(0)) <= tol
    (l1, *g1), (l2, *g2) = results
    # The loss is summed in row order; the logits of a row may round differently when OpenBLAS
    # gets it in another row block (float32: an ulp or two of each logit).
    assert l1 == pytest.approx(l2, rel=64 * float(np.finfo(dtype).eps))
    for a, c in zip(g1, g2, strict=True):
        if a is not None:
            assert rel_err(a, c) <= 4 * float(np.finfo(dtype).eps)
    loss_only = rnncore.linear_cross_entropy(h, w, b, y, grad=False)
    assert loss_only[0] == pytest.approx(results[0][0], rel=tol) and loss_only[1:] == (None,) * 3


def test_linear_cross_entropy_rejects_mismatched_shapes():
    h, w = np.zeros((4, 3)), np.zeros((5, 3))
    with pytest.raises(
        ValueError, match=r"h must have shape \(N, H\) with H = 3 \(from w\), got shape \(4, 2\)"
    ):
        rnncore.linear_cross_entropy(np.zeros((4, 2)), w, None, np.zeros(4, int))
    with pytest.raises(TypeError, match=r"h must have dtype float64"):
        rnncore.linear_cross_entropy(h.astype(np.float32), w, None, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"b must have shape \(V,\) with V = 5"):
        rnncore.linear_cross_entropy(h, w, np.zeros(4), np.zeros(4, int))
