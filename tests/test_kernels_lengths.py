"""The C++ kernels with lengths= and reverse= (issue 12, point 1) against the NumPy reference.

Semantics (the reference's, tests/test_reference_lengths.py): element b runs steps
0 .. lengths[b]-1, y is 0 past its length, h_n (c_n) is the state after its own last step (h0
for length 0), backward ignores dy past a length and returns dx = 0 there; reverse=True reads
x[lengths[b]-1] .. x[0] and writes each output where it read. The kernels sort the rows by
length and pack them (PyTorch's packed layout), so this file also pins what that must not
change: lengths all T is bitwise lengths=None, permuting the batch rows permutes y, the states,
dx and dh0 bitwise, the padding is never read (NaN there changes nothing), 1 and 2 threads agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import num_threads, rel_err
from test_kernels import CELLS, float32_tolerance, make_args, make_upstream

cells = pytest.mark.parametrize("cell", CELLS, ids=str)
reverses = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])


def random_lengths(rng, T, B, *, full=True):
    """(B,) lengths in [0, T] holding 0, 1 and (with full) T where B allows, shuffled."""
    lengths = rng.integers(0, T + 1 if full else T, B)
    special = [T, 0, 1] if full else [0, 1]
    lengths[: min(B, len(special))] = special[: min(B, len(special))]
    return rng.permutation(lengths)


def run(cell, args, upstream, *, impl="ours", dtype=None, **kw):
    """Forward then backward with lengths/reverse keywords; outputs + gradients as one list."""
    if dtype is not None:
        args = {k: None if v is None else v.astype(dtype) for k, v in args.items()}
        upstream = tuple(g.astype(dtype) for g in upstream)
    outs, cache = cell.forward(args, impl=impl, **kw)
    return [*outs, *cell.backward(upstream, cache, impl=impl)]


def names(cell):
    return cell.outputs + cell.grads


SHAPES = [(7, 6, 5, 20), (1, 3, 4, 5), (9, 1, 3, 17), (5, 9, 8, 33)]
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))


@cells
@shapes
@reverses
@pytest.mark.parametrize("full", [True, False], ids=["maxT", "max<T"])
def test_float64_matches_reference(rng, cell, shape, reverse, full):
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, np.float64)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    kw = dict(lengths=random_lengths(rng, T, B, full=full), reverse=reverse)
    ours, theirs = (
        run(cell, args, upstream, **kw),
        run(cell, args, upstream, impl="reference", **kw),
    )
    for name, a, b in zip(names(cell), ours, theirs, strict=True):
        assert a.dtype == np.float64 and a.shape == b.shape, name
        assert rel_err(a, b) <= 1e-10, f"{name}: {rel_err(a, b):.3g}"


@cells
@reverses
def test_float32_matches_float64_reference(rng, cell, reverse):
    T, B, D, H = 11, 8, 20, 48
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    kw = dict(lengths=random_lengths(rng, T, B), reverse=reverse)
    ours = run(cell, args, upstream, **kw)
    exact = run(cell, args, upstream, impl="reference", dtype=np.float64, **kw)
    tol = float32_tolerance(T, D, H)
    for name, a, b in zip(names(cell), ours, exact, strict=True):
        assert a.dtype == np.float32, name
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@cells
@reverses
def test_token_ids_with_lengths(rng, cell, reverse):
    """(T, B) token ids with lengths = the one-hot rows as dense x (dx: None), float64."""
    T, B, D, H = 6, 5, 7, 18
    args = make_args(cell, rng, T, B, D, H, np.float64)
    ids = rng.integers(0, D, (T, B)).astype(np.int32)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    kw = dict(lengths=random_lengths(rng, T, B), reverse=reverse)
    dense = run(cell, {**args, "x": np.eye(D)[ids]}, upstream, **kw)
    ours = run(cell, {**args, "x": ids}, upstream, **kw)
    for name, a, b in zip(names(cell), ours, dense, strict=True):
        if name == "dx":
            assert a is None
        else:
            assert rel_err(a, b) <= 1e-12, f"{name}: {rel_err(a, b):.3g}"


@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
def test_lengths_all_T_is_bitwise_lengths_none(rng, cell, dtype, ids):
    T, B, D, H = 6, 5, 7, 40
    args = make_args(cell, rng, T, B, D, H, dtype)
    if ids:
        args["x"] = rng.integers(0, D, (T, B))
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    plain = run(cell, args, upstream)
    full = run(cell, args, upstream, lengths=np.full(B, T), reverse=False)
    for name, a, b in zip(names(cell), plain, full, strict=True):
        if a is None:
            assert b is None, name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


@cells
@reverses
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_permuting_rows_permutes_results(rng, cell, reverse, dtype):
    """y, states, dx, dh0 (dc0) permute bitwise; weight gradients (summed in another order)
    to rounding."""
    T, B, D, H = 7, 9, 6, 24
    args = make_args(cell, rng, T, B, D, H, dtype)
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    lengths = random_lengths(rng, T, B)
    lengths[:3] = lengths[3]  # ties: their sorted order follows the caller's
    p = rng.permutation(B)
    pargs = {k: v for k, v in args.items()}
    pargs["x"] = args["x"][:, p]
    for s in ("h0", "c0"):
        if args[s] is not None:
            pargs[s] = args[s][p]
    pup = (upstream[0][:, p], *(g[p] for g in upstream[1:]))
    base = run(cell, args, upstream, lengths=lengths, reverse=reverse)
    perm = run(cell, pargs, pup, lengths=lengths[p], reverse=reverse)
    tol = 1e-12 if dtype == np.float64 else 8 * float32_tolerance(T, D, H)
    for name, a, b in zip(names(cell), base, perm, strict=True):
        if name in ("y", "dx"):
            np.testing.assert_array_equal(a[:, p], b, err_msg=name)
        elif name in ("h_n", "c_n", "dh0", "dc0"):
            np.testing.assert_array_equal(a[p], b, err_msg=name)
        else:
            assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


@cells
@reverses
def test_padding_is_never_read(rng, cell, reverse):
    """NaN in x's and dy's padding changes nothing; y and dx are 0 there."""
    T, B, D, H = 6, 5, 4, 20
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    lengths = random_lengths(rng, T, B)
    pad = np.arange(T)[:, None] >= lengths[None, :]  # (T, B)
    results = []
    for fill in (0.0, np.nan):
        x, dy = args["x"].copy(), upstream[0].copy()
        x[pad], dy[pad] = fill, fill
        results.append(run(cell, {**args, "x": x}, (dy, *upstream[1:]), lengths=lengths,
                           reverse=reverse))  # fmt: skip
    for name, a, b in zip(names(cell), *results, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    y, dx = results[1][0], results[1][len(cell.outputs)]
    assert not y[pad].any() and not dx[pad].any()


@cells
@reverses
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_result_with_one_and_two_threads(rng, cell, reverse, dtype):
    T, B, D, H = 12, 16, 30, 100
    args = make_args(cell, rng, T, B, D, H, dtype)
    upstream = make_upstream(cell, rng, T, B, H, dtype)
    kw = dict(lengths=random_lengths(rng, T, B), reverse=reverse)
    results = []
    for n in (1, 2):
        with num_threads(n):
            results.append(run(cell, args, upstream, **kw))
    tol = 2 * float32_tolerance(T, D, H) if dtype == np.float32 else 1e-12
    for name, a, b in zip(names(cell), *results, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@cells
@reverses
def test_all_lengths_zero(rng, cell, reverse):
    """Nothing runs: y = 0, final states = initial states, dh0 = dh_n, every other grad 0."""
    T, B, D, H = 4, 3, 5, 8
    args = make_args(cell, rng, T, B, D, H, np.float64)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    out = dict(zip(names(cell), run(cell, args, upstream, lengths=np.zeros(B, int),
                                    reverse=reverse), strict=True))  # fmt: skip
    assert not out["y"].any() and not out["dx"].any()
    np.testing.assert_array_equal(out["h_n"], args["h0"])
    np.testing.assert_array_equal(out["dh0"], upstream[1])
    if cell.has_c:
        np.testing.assert_array_equal(out["c_n"], args["c0"])
        np.testing.assert_array_equal(out["dc0"], upstream[2])
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert not out[name].any(), name


@cells
def test_inference_and_a_second_backward(rng, cell):
    """training=False gives the training outputs; a second backward on the cache is equal."""
    T, B, D, H = 5, 4, 3, 16
    args = make_args(cell, rng, T, B, D, H, np.float64)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    kw = dict(lengths=random_lengths(rng, T, B), reverse=True)
    outs, cache = cell.forward(args, **kw)
    infer, none = cell.forward(args, training=False, **kw)
    assert none is None
    for a, b in zip(outs, infer, strict=True):
        np.testing.assert_array_equal(a, b)
    first, second = cell.backward(upstream, cache), cell.backward(upstream, cache)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_reverse_without_lengths_matches_reference(rng):
    T, B, D, H = 5, 3, 4, 10
    cell = CELLS[2]  # lstm
    args = make_args(cell, rng, T, B, D, H, np.float64)
    upstream = make_upstream(cell, rng, T, B, H, np.float64)
    ours = run(cell, args, upstream, reverse=True)
    theirs = run(cell, args, upstream, impl="reference", reverse=True)
    for name, a, b in zip(names(cell), ours, theirs, strict=True):
        assert rel_err(a, b) <= 1e-10, name


@cells
@pytest.mark.parametrize(
    ("lengths", "error", "message"),
    [
        (np.full(7, 2), ValueError, r"lengths must have shape \(B,\) = \(6,\), got shape \(7,\)"),
        (np.full((6, 1), 2), ValueError,
         r"lengths must have shape \(B,\) = \(6,\), got shape \(6, 1\)"),
        (np.full(6, 2.0), TypeError,
         r"lengths must be an integer array of shape \(6,\), got dtype float64"),
        (np.ones(6, bool), TypeError,
         r"lengths must be an integer array of shape \(6,\), got dtype bool"),
        (np.array([1, 2, -1, 3, 4, 5]), ValueError,
         r"lengths must have values in \[0, T\] = \[0, 5\], got lengths\[2\] = -1"),
        (np.array([1, 2, 3, 4, 5, 6]), ValueError,
         r"lengths must have values in \[0, T\] = \[0, 5\], got lengths\[5\] = 6"),
    ],
    ids=["len7", "2d", "float", "bool", "negative", "above-T"],
)  # fmt: skip
def test_bad_lengths(rng, cell, lengths, error, message):
    args = make_args(cell, rng, 5, 6, 3, 4, np.float64)
    with pytest.raises(error, match=f"^{cell.fn}_forward: {message}"):
        cell.forward(args, lengths=lengths)


@cells
@pytest.mark.parametrize("reverse", [1, "yes", None, np.array([True, False])], ids=repr)
def test_bad_reverse(rng, cell, reverse):
    args = make_args(cell, rng, 5, 6, 3, 4, np.float64)
    with pytest.raises(TypeError, match=f"^{cell.fn}_forward: reverse must be a bool, got "):
        cell.forward(args, reverse=reverse)


def test_lengths_accepts_lists_and_any_integer_dtype(rng):
    cell = CELLS[0]
    args = make_args(cell, rng, 4, 3, 2, 5, np.float64)
    base = cell.forward(args, lengths=np.array([4, 0, 2]))[0]
    for lengths in ([4, 0, 2], np.array([4, 0, 2], np.uint8), np.array([4, 0, 2], np.int16)):
        for a, b in zip(base, cell.forward(args, lengths=lengths)[0], strict=True):
            np.testing.assert_array_equal(a, b)
    cell.forward(args, lengths=[4, 0, 2], reverse=np.bool_(True))  # NumPy's bool is a bool


@cells
@reverses
def test_token_id_padding_is_never_checked(rng, cell, reverse):
    """Ids past a length are never read, so not range-checked: -1 there is the same as 0; an
    out-of-range id inside a length is still a ValueError."""
    T, B, D, H = 5, 4, 6, 8
    args = make_args(cell, rng, T, B, D, H, np.float64)
    lengths = np.array([5, 0, 2, 3])
    ids = rng.integers(0, D, (T, B))
    pad = np.arange(T)[:, None] >= lengths[None, :]
    zero, minus = ids.copy(), ids.copy()
    zero[pad], minus[pad] = 0, -1
    kw = dict(lengths=lengths, reverse=reverse)
    for a, b in zip(cell.forward({**args, "x": zero}, **kw)[0],
                    cell.forward({**args, "x": minus}, **kw)[0], strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(minus[pad], -1)  # the caller's array is untouched
    bad = zero.copy()
    bad[1, 2] = D
    with pytest.raises(ValueError, match=f"x must hold ids in \\[0, {D}\\), got {D}"):
        cell.forward({**args, "x": bad}, **kw)
