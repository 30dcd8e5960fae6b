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


# --- mask= and ignore_index= --------------------------------------------------------------------


def np_masked_xent(z: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[float, np.ndarray]:
    """The oracle for the kept rows only: the mean over them, gradient 0 on the others."""
    d = np.zeros(z.shape)
    if not keep.any():
        return 0.0, d
    loss, dk = np_xent(z[keep], y[keep])
    d[keep] = dk
    return loss, d


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_mask_and_ignore_index_match_numpy(rng, dtype):
    N, V = 97, 13
    z = (rng.standard_normal((N, V)) * 2).astype(dtype)
    y = rng.integers(0, V, N)
    mask = rng.random(N) < 0.6
    padded = np.where(mask, y, -100)  # dropped targets out of range: never checked
    tol = 1e-12 if dtype == np.float64 else 2e-6  # as the unmasked test
    for kwargs, targets in [
        ({"mask": mask}, y),
        ({"mask": mask}, padded),
        ({"ignore_index": -100}, padded),
        ({"mask": mask, "ignore_index": -100}, padded),
    ]:
        loss, d = rnncore.softmax_cross_entropy(z, targets, **kwargs)
        want_loss, want_d = np_masked_xent(z, y, mask)
        assert loss == pytest.approx(want_loss, rel=tol, abs=tol)
        assert d.dtype == dtype and rel_err(d, want_d) <= tol * 10
        assert not d[~mask].any()  # exactly 0 where dropped
        assert rnncore.softmax_cross_entropy(z, targets, grad=False, **kwargs)[0] == loss
    # An in-range ignore_index drops the positions of that class, like torch's.
    loss, d = rnncore.softmax_cross_entropy(z, y, ignore_index=3)
    want_loss, want_d = np_masked_xent(z, y, y != 3)
    assert loss == pytest.approx(want_loss, rel=tol) and rel_err(d, want_d) <= tol * 10
    # Both: a position is kept where mask is True and its target is not ignore_index.
    loss, _ = rnncore.softmax_cross_entropy(z, y, mask=mask, ignore_index=3)
    assert loss == pytest.approx(np_masked_xent(z, y, mask & (y != 3))[0], rel=tol)
    # mask all True is the unmasked call, bitwise.
    full = rnncore.softmax_cross_entropy(z, y, mask=np.ones(N, bool))
    plain = rnncore.softmax_cross_entropy(z, y)
    assert full[0] == plain[0] and np.array_equal(full[1], plain[1])


def test_masked_cross_entropy_keeps_nothing_and_ignores_dropped_nan():
    z = np.array([[0.0, np.nan, 1.0], [2.0, 0.5, -1.0]])
    loss, d = rnncore.softmax_cross_entropy(z, np.array([-100, -100]), ignore_index=-100)
    assert loss == 0.0 and d.shape == (2, 3) and not d.any()
    # The NaN row is dropped: never read, so the loss and gradients are finite.
    loss, d = rnncore.softmax_cross_entropy(z, np.array([7, 0]), mask=np.array([False, True]))
    assert loss == pytest.approx(np_xent(z[1:], np.array([0]))[0], rel=1e-12)
    assert np.isfinite(d).all() and not d[0].any()
    h, w = np.ones((2, 4)), np.ones((3, 4))
    loss, dh, dw, db = rnncore.linear_cross_entropy(
        h, w, np.ones(3), np.array([5, 9]), mask=np.zeros(2, bool)
    )
    assert loss == 0.0 and not dh.any() and not dw.any() and not db.any()


def test_masked_gradient_matches_central_differences(rng):
    z = rng.standard_normal((8, 5))
    y = np.array([1, -1, 4, 0, -1, 2, 3, -1])
    _, d = rnncore.softmax_cross_entropy(z, y, ignore_index=-1)
    f = lambda: rnncore.softmax_cross_entropy(z, y, ignore_index=-1, grad=False)[0]  # noqa: E731
    assert rel_err(d, central_difference(f, z)) <= 1e-6
    h, w, b = rng.standard_normal((8, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    mask = y >= 0
    _, dh, dw, db = rnncore.linear_cross_entropy(h, w, b, y, mask=mask)

    def g() -> float:
        return rnncore.linear_cross_entropy(h, w, b, y, mask=mask, grad=False)[0]

    for analytic, a in ((dh, h), (dw, w), (db, b)):
        assert rel_err(analytic, central_difference(g, a)) <= 1e-6
    assert not dh[~mask].any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_cross_entropy_mask_matches_numpy_at_any_thread_count(rng, dtype):
    N, H, V = 203, 17, 23
    h = rng.standard_normal((N, H)).astype(dtype)
    w = (rng.standard_normal((V, H)) * 0.3).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    y = rng.integers(0, V, N)
    keep = rng.random(N) < 0.5
    targets = np.where(keep, y, -100)
    z = h.astype(np.float64) @ w.T.astype(np.float64) + b
    want_loss, dz = np_masked_xent(z, y, keep)
    tol = 1e-12 if dtype == np.float64 else 1e-5  # as the unmasked test
    for n in (1, 2):
        with num_threads(n):
            loss, dh, dw, db = rnncore.linear_cross_entropy(h, w, b, targets, ignore_index=-100)
        assert loss == pytest.approx(want_loss, rel=tol)
        assert rel_err(dh, dz @ w.astype(np.float64)) <= tol and not dh[~keep].any()
        assert rel_err(dw, dz.T @ h.astype(np.float64)) <= tol
        assert rel_err(db, dz.sum(0)) <= tol
        # The same through mask= (the targets at dropped positions are -100, unchecked).
        masked = rnncore.linear_cross_entropy(h, w, b, targets, mask=keep)
        assert masked[0] == loss and all(
            np.array_equal(a, c) for a, c in zip(masked[1:], (dh, dw, db), strict=True)
        )


def test_masked_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    N, V = 40, 11
    z = rng.standard_normal((N, V))
    y = rng.integers(0, V, N)
    y[rng.random(N) < 0.3] = -100
    tz = torch.from_numpy(z).requires_grad_()
    tl = torch.nn.functional.cross_entropy(tz, torch.from_numpy(y), ignore_index=-100)
    tl.backward()
    loss, d = rnncore.softmax_cross_entropy(z, y, ignore_index=-100)
    # float64 log-sum-exp over 11 terms and a mean over ~28 rows, summed in other orders.
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    assert rel_err(d, tz.grad.numpy()) <= 1e-12


def test_mask_and_ignore_index_reject_bad_input():
    z, y = np.zeros((3, 4)), np.array([0, 1, 2])
    with pytest.raises(
        ValueError,
        match=r"targets must hold ids in \[0, 4\) at the kept positions, got 9 at flat position 1",
    ):
        rnncore.softmax_cross_entropy(z, np.array([0, 9, -100]), ignore_index=-100)
    with pytest.raises(ValueError, match=r"got -100 at flat position 2 \(mask is True there\)"):
        rnncore.softmax_cross_entropy(z, np.array([0, 9, -100]), mask=np.array([1, 0, 1], bool))
    with pytest.raises(
        TypeError,
        match=r"softmax_cross_entropy: mask must be a bool array of shape \(N,\) .*got an array "
        r"of dtype int64",
    ):
        rnncore.softmax_cross_entropy(z, y, mask=np.array([1, 0, 1]))
    with pytest.raises(TypeError, match=r"mask must be a bool array .*got str"):
        rnncore.softmax_cross_entropy(z, y, mask="yes")
    with pytest.raises(
        ValueError,
        match=r"mask must have shape \(N,\) with N = 3 \(from logits\), got shape \(2,\)",
    ):
        rnncore.softmax_cross_entropy(z, y, mask=np.ones(2, bool))
    with pytest.raises(TypeError, match=r"ignore_index must be an int or None, got float"):
        rnncore.softmax_cross_entropy(z, y, ignore_index=-100.0)
    with pytest.raises(TypeError, match=r"ignore_index must be an int or None, got bool"):
        rnncore.linear_cross_entropy(np.zeros((3, 2)), np.zeros((4, 2)), None, y, ignore_index=True)
    with pytest.raises(
        ValueError, match=r"ignore_index must fit in 64 bits, got 1267650600228229401496703205376"
    ):
        rnncore.softmax_cross_entropy(z, y, ignore_index=2**100)
    with pytest.raises(
        ValueError, match=r"linear_cross_entropy: mask must have shape \(N,\) with N = 3"
    ):
        rnncore.linear_cross_entropy(
            np.zeros((3, 2)), np.zeros((4, 2)), None, y, mask=np.ones(4, bool)
        )
    # numpy integer ignore_index is accepted, as is a list mask.
    a = rnncore.softmax_cross_entropy(z, y, ignore_index=np.int64(1), mask=[True, True, False])
    assert a[0] == pytest.approx(math.log(4))
