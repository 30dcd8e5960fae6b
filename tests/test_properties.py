"""Property-based tests (hypothesis) of the kernels and the layers.

Every call made here is one of two kinds, decided when it is drawn:

* valid: random shapes (every size 0..4 for the kernels, T and B from 0 for the layers), both
  dtypes, any memory layout (C, Fortran, transposed, strided, negative strides, misaligned,
  big-endian, read-only, nested lists, zero-stride broadcast) and any values, including NaN,
  +-inf, +-1e30, denormals and -0.0. The result must equal the NumPy reference
  (rnncore.reference) run on the same values in the same dtype: same shapes and dtypes, the
  same positions NaN, the same positions +inf and -inf, and the finite values within a bound
  relative to the array's magnitude (see `tolerance`).
* one defect (a wrong shape, rank, dtype or type in exactly one argument, or a bad option):
  the call must raise TypeError or ValueError whose message names the function and that
  argument. A shape change that a simple model of the rules (`shapes_are_valid`) still finds
  consistent is a valid call of another shape, and is checked against the reference instead.

Runs are deterministic (derandomize=True, no example database): a failure reproduces with
the same command. The number of examples run is counted and checked by the last test of the
file (at least 2,000 per run); `python -m pytest tests/test_properties.py -q -s` prints it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip(
    "hypothesis", reason="property tests need `pip install hypothesis`"
)
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnncore  # noqa: E402
from test_kernels import CELLS, Cell  # noqa: E402

# Examples per test; their sum is what one run checks (asserted >= 2000 at the end).
EXAMPLES = {
    "test_kernels_match_reference": 900,
    "test_kernels_reject_one_defect": 500,
    "test_layers_match_reference": 350,
    "test_layers_reject_one_defect": 150,
    "test_backward_rejects_foreign_caches": 150,
}
MIN_TOTAL = 2000
# RNNCORE_PROPERTY_SCALE=10 runs ten times as many examples (a deeper, slower run).
SCALE = float(os.environ.get("RNNCORE_PROPERTY_SCALE", "1"))
RUN = Counter()  # test name -> examples executed in this session


def props(name: str) -> settings:
    return settings(
        max_examples=max(1, round(EXAMPLES[name] * SCALE)),
        derandomize=True,  # a fixed sequence of examples: failures reproduce
        database=None,  # nothing carried over between runs
        deadline=None,  # timings on a shared 2-core machine are noise
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # RNNCORE_PROPERTY_NO_SHRINK=1: report the first failing example as found (fast)
        phases=[Phase.explicit, Phase.generate]
        if os.environ.get("RNNCORE_PROPERTY_NO_SHRINK")
        else list(Phase),
    )


def dump(call) -> None:
    """RNNCORE_PROPERTY_DUMP=path: pickle each example there (the last one is the failing one),
    to replay it outside hypothesis."""
    if os.environ.get("RNNCORE_PROPERTY_DUMP"):
        import pickle

        with open(os.environ["RNNCORE_PROPERTY_DUMP"], "wb") as f:
            pickle.dump(call, f)


# --- cells ---------------------------------------------------------------------------------


def shapes_of(cell: Cell, T: int, B: int, D: int, H: int) -> dict[str, tuple[int, ...]]:
    G = cell.gates
    s = {"x": (T, B, D), "h0": (B, H), "w_ih": (G * H, D), "w_hh": (G * H, H)}
    s |= {"b_ih": (G * H,), "b_hh": (G * H,), "dy": (T, B, H), "dh_n": (B, H)}
    if cell.has_c:
        s |= {"c0": (B, H), "dc_n": (B, H)}
    return s


def shapes_are_valid(cell: Cell, shapes: dict[str, tuple[int, ...] | None]) -> bool:
    """The forward's shape rules, written independently of the C++: x (T, B, D),
    w_ih (G*H, D), w_hh (G*H, H), h0/c0 (B, H), biases (G*H,); None is always allowed for
    h0, c0 and the biases."""
    x, w_ih, w_hh = shapes["x"], shapes["w_ih"], shapes["w_hh"]
    if len(x) != 3 or len(w_ih) != 2 or len(w_hh) != 2 or w_ih[0] % cell.gates:
        return False
    _, B, D = x  # T is free
    H = w_ih[0] // cell.gates
    want = {"w_ih": (cell.gates * H, D), "w_hh": (cell.gates * H, H), "h0": (B, H)}
    want |= {"c0": (B, H), "b_ih": (cell.gates * H,), "b_hh": (cell.gates * H,)}
    return all(shapes.get(k) is None or shapes[k] == v for k, v in want.items())


# --- values and layouts --------------------------------------------------------------------

SPECIALS = ["nan", "inf", "-inf", "1e30", "-1e30", "denormal", "-0"]


def special_value(kind: str, dtype: np.dtype):
    if kind == "denormal":
        return np.finfo(dtype).smallest_subnormal * 3
    return dtype.type(float(kind))


LAYOUTS = ["C", "C", "F", "T", "strided", "negative", "misaligned", "bigendian", "readonly",
           "list", "broadcast"]  # fmt: skip


def relayout(v: np.ndarray, how: str) -> Any:
    """The values of `v` in another memory layout (or as nested lists); "broadcast" is applied
    by `values` beforehand, here it is a zero-stride view of the (already constant) axis 0."""
    if how == "F":
        return np.asfortranarray(v)
    if how == "T":  # a transposed view: strides in reverse order
        return np.ascontiguousarray(v.T).T
    if how == "strided":  # every other element of a buffer twice as large along each axis
        big = np.full(tuple(2 * s for s in v.shape), 7, v.dtype)
        every_other = tuple(slice(None, None, 2) for _ in v.shape)
        big[every_other] = v
        return big[every_other]
    if how == "negative":
        return np.flip(np.ascontiguousarray(np.flip(v)))
    if how == "misaligned":  # data pointer one byte past an aligned address
        buf = np.zeros(v.nbytes + v.itemsize + 1, np.uint8)
        a = np.ndarray(v.shape, v.dtype, buffer=buf, offset=1)
        a[...] = v
        assert a.size == 0 or not a.flags.aligned
        return a
    if how == "bigendian":
        return v.astype(v.dtype.newbyteorder(">"))
    if how == "readonly":
        a = v.copy()
        a.flags.writeable = False
        return a
    if how == "list" and v.ndim >= 1 and 0 not in v.shape:
        return v.tolist()
    if how == "broadcast" and v.ndim >= 1 and v.shape[0] > 0:
        view = np.broadcast_to(v[:1], v.shape)
        assert view.strides[0] == 0
        return view
    return v


@st.composite
def values(draw, shape: tuple[int, ...], dtype: np.dtype, specials: bool = True, lists=True):
    """(canonical C array, the same values as the callee gets them)."""
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    v = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    how = draw(st.sampled_from(LAYOUTS))
    if how == "list" and not lists:
        how = "C"
    if how == "broadcast" and v.ndim >= 1 and v.shape[0] > 0:
        v = np.array(np.broadcast_to(v[:1], v.shape))  # a writeable copy
    if specials and v.size and draw(st.integers(0, 5)) == 0:  # one array in six
        for kind, where in draw(st.lists(st.tuples(st.sampled_from(SPECIALS), st.floats(0, 1)),
                                         min_size=1, max_size=3)):  # fmt: skip
            if how == "broadcast":  # keep axis 0 constant: change a whole column
                v.reshape(v.shape[0], -1)[:, min(int(where * v[0].size), v[0].size - 1)] = (
                    special_value(kind, v.dtype)
                )
            else:
                v.flat[min(int(where * v.size), v.size - 1)] = special_value(kind, v.dtype)
    return v, relayout(v, how)


# --- comparison ----------------------------------------------------------------------------

EPS = {np.dtype(np.float32): float(np.finfo(np.float32).eps), np.dtype(np.float64): 2.0**-52}
# The "exact" answer of a float32 call is the reference in float64; of a float64 call, the
# reference in x86's 80-bit long double (11 more bits of mantissa).
EXACT = {np.dtype(np.float32): np.dtype(np.float64), np.dtype(np.float64): np.dtype(np.longdouble)}


def tolerance(dtype: np.dtype, T: int, D: int, H: int) -> float:
    """Allowance, relative to the largest finite magnitude of an array, beyond what the
    reference itself gets wrong in the same precision (see assert_same).

    A pre-activation is a sum of D + H + 2 terms (worst-case error (D + H + 2)·u of the
    terms' scale, u = eps/2); errors carried through T steps of the recurrence and of
    backpropagation add at most T more such terms, the gradients' sums over T·B rows (B <= 4
    here) a few more. 8·(D + H + T + 4)·eps covers that with room.
    """
    return 8 * (D + H + T + 4) * EPS[np.dtype(dtype)]


def assert_same(
    name: str, ours, same, exact, tol: float, floor: float = 0.0, mode: str = "finite"
) -> None:
    """`ours` against the reference in the same dtype (`same`) and in higher precision
    (`exact`), all computed from the same values. `mode` (see `value_mode`):

    * always: shapes and dtypes equal those of `same`;
    * "finite" (finite inputs, and no overflow in the reference): every value finite;
    * "nan" (NaN in some inputs, no inf anywhere): NaN is never lost and never invented:
      the array has a NaN if and only if the reference's has one, and no inf;
    * "inf" (an inf in an input or from an overflow): no promise on which values are
      non-finite. A saturating gate turns ±inf into a number in both implementations, but
      where the reference's sigmoid of -inf is exactly 0, the vectorised one gives about
      1e-38, so 0·inf = NaN in one is 1e-38·inf = inf, or through a later tanh a number, in
      the other;
    * in every mode, where both are finite, the error of ours against `exact` is at most 4
      times the error of `same` against `exact`, plus tol times the array's scale (its
      largest magnitude, at least `floor`). A bound relative to the result alone would not
      hold: near saturation (tanh' = 1 - h², h ≈ 1) the derivative is a cancellation whose
      rounding error is relative to 1, not to the small result, and every implementation in
      that precision has it. So the scale of a gradient is at least the largest upstream
      gradient (an error of k ulps in h = tanh(a) is 2k ulps of 1 in 1 - h², times |dy|; see
      gradient_floor for extreme inputs), and that of the outputs of a saturating cell at
      least 1 (see output_floor).
    """
    assert (ours is None) == (same is None), f"{name}: one result is None"
    if ours is None:
        return
    assert isinstance(ours, np.ndarray), f"{name}: {type(ours).__name__}"
    assert ours.shape == same.shape, f"{name}: shape {ours.shape} != {same.shape}"
    assert ours.dtype == same.dtype, f"{name}: dtype {ours.dtype} != {same.dtype}"
    fin_o, fin_s = np.isfinite(ours), np.isfinite(same)
    if mode == "finite":
        assert fin_o.all(), f"{name}: non-finite at {np.argwhere(~fin_o)[0].tolist()}"
    elif mode == "nan":
        assert not np.isinf(ours).any(), f"{name}: inf at {np.argwhere(np.isinf(ours))[0]}"
        has_o, has_s = np.isnan(ours).any(), np.isnan(same).any()
        assert has_o == has_s, (
            f"{name}: ours {'has a' if has_o else 'has no'} NaN, the reference "
            f"{'has a' if has_s else 'has no'} NaN"
        )
    fin = fin_o & fin_s & np.isfinite(exact)
    if not fin.any():
        return
    x = exact[fin].astype(np.longdouble)
    err_ours = np.abs(ours[fin].astype(np.longdouble) - x).max()
    err_same = np.abs(same[fin].astype(np.longdouble) - x).max()
    scale = max(np.abs(x).max(), np.longdouble(floor), np.longdouble(np.finfo(same.dtype).tiny))
    bound = 4 * err_same + tol * scale
    assert err_ours <= bound, (
        f"{name}: error {float(err_ours):.3g} > 4 x the reference's {float(err_same):.3g} "
        f"+ {tol:.3g} x scale {float(scale):.3g}"
    )


def value_mode(inputs, reference_results) -> str:
    """ "finite", "nan" or "inf": which promise of assert_same applies to a call."""
    arrays = [a for a in [*inputs, *reference_results] if a is not None]
    if any(np.isinf(a).any() for a in arrays):
        return "inf"
    return "nan" if any(np.isnan(a).any() for a in arrays) else "finite"


def output_floor(cell: Cell) -> float:
    """Scale floor of the forward outputs: 1 for the saturating cells (their states are
    products and sums of activations in [-1, 1] and cell states; a gate whose exact value is
    0 may come out as 1e-38 from a vectorised sigmoid), none for the ReLU RNN."""
    return 0.0 if cell.name == "rnn-relu" else 1.0


def magnitude(arrays) -> float:
    """The largest finite magnitude among some arrays (None: zeros)."""
    m = [np.abs(a[np.isfinite(a)]).max() for a in arrays if a is not None and np.isfinite(a).any()]
    return float(max(m, default=0.0))


EXTREME = 1e6  # inputs beyond this (the 1e30 specials) are "extreme magnitudes"


def gradient_floor(upstream, inputs) -> float:
    """Scale floor of the gradients: the largest upstream gradient; with extreme inputs (M =
    their largest magnitude > EXTREME), that times M², the size of the products a gradient
    sums (dW_hh = Σ dz·(h - n)·z(1 - z)·h for the GRU): a sigmoid whose exact value is 0 can
    come out as 6e-39 in float32, which times 1e30·1e30 is 1e21 where the exact answer is 0,
    an error of one part in 1e39 of those terms."""
    m = magnitude(inputs)
    return magnitude(upstream) * (m * m if m > EXTREME else 1.0)


def names_argument(msg: str, fn: str, name: str) -> bool:
    return msg.startswith(f"{fn}: ") and re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", msg)


# --- kernels: valid calls ------------------------------------------------------------------

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]


@st.composite
def kernel_calls(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(DTYPES))
    T, B, D, H = (draw(st.integers(0, 4)) for _ in range(4))
    shapes = shapes_of(cell, T, B, D, H)
    canon, given_ = {}, {}
    for name in [*cell.arg_names, *cell.upstream_names]:
        optional = name not in ("x", "w_ih", "w_hh")
        if optional and draw(st.booleans()) and draw(st.booleans()):  # None one time in four
            canon[name] = given_[name] = None
            continue
        # w_ih sets the call's dtype, and a list of floats is float64 (documented): as a
        # list it would make a float32 call a float64 one
        lists = name != "w_ih" or dtype == np.float64
        canon[name], given_[name] = draw(values(shapes[name], dtype, lists=lists))
    training_twice = draw(st.booleans())
    return cell, dtype, (T, B, D, H), canon, given_, training_twice


def run_kernel(cell, impl, args, upstream):
    """impl: "ours" or "reference"."""
    with np.errstate(all="ignore"):  # the reference computes with NaN and inf as they come
        outs, cache = cell.forward(args, impl=impl)
        return outs, cache, cell.backward(upstream, cache, impl=impl)


@props("test_kernels_match_reference")
@given(kernel_calls())
def test_kernels_match_reference(call):
    """Any valid call, any layout and any values: the reference's results, NaN and inf at the
    same positions; inference (training=False) gives the same outputs; a second backward on
    the same cache gives the same gradients."""
    RUN["test_kernels_match_reference"] += 1
    dump(call)
    cell, dtype, (T, B, D, H), canon, given_, twice = call
    args = {k: given_.get(k) for k in cell.arg_names}
    upstream = [given_[k] for k in cell.upstream_names]
    outs, cache, grads = run_kernel(cell, "ours", args, upstream)
    r_args = {k: canon.get(k) for k in cell.arg_names}
    r_up = [canon[k] for k in cell.upstream_names]
    r_outs, _, r_grads = run_kernel(cell, "reference", r_args, r_up)
    # the reference computes in w_ih's dtype and casts everything else to it
    x_args = dict(r_args, w_ih=r_args["w_ih"].astype(EXACT[dtype]))
    x_outs, _, x_grads = run_kernel(cell, "reference", x_args, r_up)
    tol = tolerance(dtype, T, D, H)
    floor = gradient_floor(r_up, [*r_args.values(), *r_up])
    mode = value_mode([*r_args.values(), *r_up], [*r_outs, *r_grads])
    for name, a, b, c in zip(cell.outputs, outs, r_outs, x_outs, strict=True):
        assert_same(name, a, b, c, tol, output_floor(cell), mode)
    for name, a, b, c in zip(cell.grads, grads, r_grads, x_grads, strict=True):
        assert_same(name, a, b, c, tol, floor, mode)
    assert cache.dtype == dtype and cache.shape == (T, B, D, H)
    with np.errstate(all="ignore"):
        infer, none = cell.forward(args, training=False)
    assert none is None
    for name, a, b in zip(cell.outputs, infer, outs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"training=False: {name}")
    if twice:  # the cache is read-only: a second backward is identical
        for name, a, b in zip(cell.grads, cell.backward(upstream, cache), grads,
                              strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b, err_msg=f"second backward: {name}")


# --- kernels: one defect -------------------------------------------------------------------

BAD_OBJECTS = [
    ("str", "abc"),
    ("dict", {"a": 1}),
    ("object", object()),
    ("float", 1.5),
    ("ragged list", [[1.0, 2.0], [3.0]]),
    ("string list", [["a", "b"]]),
]
BAD_DTYPES = [np.float16, np.complex64, np.complex128, np.int32, np.int64, np.bool_, object,
              np.longdouble]  # fmt: skip


@st.composite
def defective_calls(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(DTYPES))
    T, B, D, H = (draw(st.integers(1, 3)) for _ in range(4))
    shapes = shapes_of(cell, T, B, D, H)
    args = {}
    for name in cell.arg_names:
        lists = name != "w_ih" or dtype == np.float64  # see kernel_calls
        args[name] = draw(values(shapes[name], dtype, specials=False, lists=lists))[1]
    target = draw(st.sampled_from(cell.arg_names))
    kind = draw(st.sampled_from(["shape", "rank", "dtype", "object", "none"]))
    shape = shapes[target]
    if kind == "shape":  # one axis off by -1, +1 or +G (sizes >= 1, so never negative)
        axis = draw(st.integers(0, len(shape) - 1))
        new = list(shape)
        new[axis] += draw(st.sampled_from([-1, 1, cell.gates]))
        new_shape = tuple(new)
    elif kind == "rank":
        new_shape = (*shape, 1) if draw(st.booleans()) or len(shape) == 1 else shape[:-1]
    if kind in ("shape", "rank"):
        lists = target != "w_ih" or dtype == np.float64  # see kernel_calls
        args[target] = draw(values(new_shape, dtype, specials=False, lists=lists))[1]
        all_shapes = {k: shapes[k] for k in cell.arg_names} | {target: new_shape}
        valid = shapes_are_valid(cell, all_shapes)
        return cell, dtype, args, target, kind, ValueError if not valid else None
    if kind == "dtype":
        other = DTYPES[1 - DTYPES.index(dtype)]
        bad = draw(st.sampled_from([other, *BAD_DTYPES]))
        # An integer x of rank 3 is a dtype mistake (token ids are (T, B)). A w_ih of the
        # other float dtype sets the call's dtype: the next array checked is then named, with
        # "the call's dtype is set by w_ih".
        args[target] = np.zeros(shape, bad)
        return cell, dtype, args, target, kind, TypeError
    if kind == "object":
        _, obj = draw(st.sampled_from(BAD_OBJECTS))
        args[target] = obj
        # a nested list of numbers converts; a ragged or string list does not
        return cell, dtype, args, target, kind, TypeError
    # None where an array is required (h0, c0 and the biases may be None: valid)
    args[target] = None
    required = target in ("x", "w_ih", "w_hh")
    return cell, dtype, args, target, kind, TypeError if required else None


@props("test_kernels_reject_one_defect")
@given(defective_calls())
def test_kernels_reject_one_defect(call):
    """One argument wrong: TypeError/ValueError naming the function and that argument; where
    the change leaves a consistent call (a shape the rules allow, None for an optional
    state or bias), the call succeeds and matches the reference."""
    RUN["test_kernels_reject_one_defect"] += 1
    cell, dtype, args, target, kind, exc = call
    fn = f"{cell.fn}_forward"
    if exc is None:
        outs, cache = cell.forward(args)
        r_args = {k: None if v is None else np.array(v, dtype) for k, v in args.items()}
        r_outs, _ = cell.forward(r_args, impl="reference")
        x_args = dict(r_args, w_ih=r_args["w_ih"].astype(EXACT[dtype]))
        x_outs, _ = cell.forward(x_args, impl="reference")
        T, _, D, H = cache.shape
        for name, a, b, c in zip(cell.outputs, outs, r_outs, x_outs, strict=True):
            assert_same(name, a, b, c, tolerance(dtype, T, D, H))
        return
    with pytest.raises((TypeError, ValueError)) as info:
        cell.forward(args)
    msg = str(info.value)
    assert info.type is exc, f"{kind} defect in {target}: {info.type.__name__}: {msg}"
    assert names_argument(msg, fn, target), f"{kind} defect in {target}: {msg}"
    if kind == "shape":  # what came is quoted, as is the size expected
        assert re.search(r"got (a \d-D array of )?shape \(", msg), msg


# --- layers --------------------------------------------------------------------------------

LAYERS = [
    ("RNN", {"nonlinearity": "tanh"}, CELLS[0]),
    ("RNN", {"nonlinearity": "relu"}, CELLS[1]),
    ("LSTM", {}, CELLS[2]),
    ("GRU", {"reset_after": True}, CELLS[3]),
    ("GRU", {"reset_after": False}, CELLS[4]),
]


def reference_stack(cell: Cell, layer, x, states, dy, dstates, dtype):
    """The stack through rnncore.reference in `dtype`, layer by layer (no dropout): outputs,
    final states, then backward: dx, dstate0 and the parameter gradients by name."""
    L, n = layer.num_layers, (2 if cell.has_c else 1)
    p = {k: v.astype(dtype) for k, v in layer.parameters().items()}
    inp, caches, finals = x, [], [[] for _ in range(n)]
    for k in range(L):
        args = {"x": inp, "w_ih": p[f"weight_ih_l{k}"], "w_hh": p[f"weight_hh_l{k}"],
                "b_ih": p.get(f"bias_ih_l{k}"), "b_hh": p.get(f"bias_hh_l{k}"),
                "h0": None if states[0] is None else states[0][k],
                "c0": None if n == 1 or states[1] is None else states[1][k]}  # fmt: skip
        outs, cache = cell.forward(args, impl="reference")
        inp = outs[0]
        for f, s in zip(finals, outs[1:], strict=True):
            f.append(s)
        caches.append(cache)
    grads, d0 = {}, [[None] * L for _ in range(n)]
    grad = dy
    for k in reversed(range(L)):
        up = [grad] + [None if d is None else d[k] for d in dstates]
        dx, *rest = cell.backward(up, caches[k], impl="reference")
        for i in range(n):
            d0[i][k] = rest[i]
        for pname, g in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), rest[n:],
                            strict=True):  # fmt: skip
            if g is not None:
                grads[f"{pname}_l{k}"] = g
        grad = dx
    return inp, [np.stack(f) for f in finals], grad, [np.stack(d) for d in d0], grads


@st.composite
def layer_calls(draw):
    kind, options, cell = draw(st.sampled_from(LAYERS))
    dtype = draw(st.sampled_from(DTYPES))
    L = draw(st.integers(1, 2))
    T, B = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    D, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    n = 2 if cell.has_c else 1
    canon, given_ = {}, {}
    for name, shape in [("x", (T, B, D)), ("dy", (T, B, H))]:
        canon[name], given_[name] = draw(values(shape, dtype))
    for name in ("state", "dstate"):
        parts_c, parts_g = [], []
        for _ in range(n):
            if draw(st.integers(0, 3)) == 0:
                parts_c.append(None), parts_g.append(None)
            else:
                c, g = draw(values((L, B, H), dtype))
                parts_c.append(c), parts_g.append(g)
        canon[name], given_[name] = parts_c, parts_g
    return kind, options, cell, dtype, (L, T, B, D, H, bias, seed), canon, given_


def pack(cell: Cell, parts: list):
    if cell.has_c:
        return None if all(p is None for p in parts) else tuple(parts)
    return parts[0]


@props("test_layers_match_reference")
@given(layer_calls())
def test_layers_match_reference(call):
    """RNN/LSTM/GRU stacks of 1-2 layers, T and B from 0, any layout and values: outputs,
    final states, dx, dstate0 and every parameter gradient equal the reference stack's."""
    RUN["test_layers_match_reference"] += 1
    dump(call)
    kind, options, cell, dtype, (L, T, _, D, H, bias, seed), canon, given_ = call
    layer = getattr(rnncore, kind)(D, H, L, bias=bias, dtype=dtype, seed=seed, **options)
    with np.errstate(all="ignore"):
        y, state = layer.forward(given_["x"], pack(cell, given_["state"]))
        dx, dstate0 = layer.backward(given_["dy"], pack(cell, given_["dstate"]))
        same, exact = (
            reference_stack(
                cell, layer, canon["x"], canon["state"], canon["dy"], canon["dstate"], dt
            )
            for dt in (dtype, EXACT[dtype])
        )
    r_y, r_finals, r_dx, r_d0, r_grads = same
    e_y, e_finals, e_dx, e_d0, e_grads = exact
    tol = tolerance(dtype, T, max(D, H), H) * L
    inputs = [canon["x"], canon["dy"], *canon["state"], *canon["dstate"]]
    floor = gradient_floor([canon["dy"], *canon["dstate"]], inputs)
    mode = value_mode(inputs, [r_y, *r_finals, r_dx, *r_d0, *r_grads.values()])
    assert_same("y", y, r_y, e_y, tol, output_floor(cell), mode)
    finals = list(state) if cell.has_c else [state]
    d0 = list(dstate0) if cell.has_c else [dstate0]
    for i in range(len(finals)):
        assert_same(f"state[{i}]", finals[i], r_finals[i], e_finals[i], tol, output_floor(cell),
                    mode)  # fmt: skip
        assert_same(f"dstate0[{i}]", d0[i], r_d0[i], e_d0[i], tol, floor, mode)
    assert_same("dx", dx, r_dx, e_dx, tol, floor, mode)
    assert set(layer.grads) == set(r_grads)
    for name, g in layer.grads.items():
        assert_same(name, g, r_grads[name], e_grads[name], tol, floor, mode)


@st.composite
def defective_layer_calls(draw):
    kind, options, cell = draw(st.sampled_from(LAYERS))
    dtype = draw(st.sampled_from(DTYPES))
    L, T, B, D, H = (draw(st.integers(1, 3)) for _ in range(5))
    target = draw(st.sampled_from(["x", "state", "dy", "dstate"]))
    defect = draw(st.sampled_from(["shape", "rank", "dtype", "object"]))
    full = {"x": (T, B, D), "dy": (T, B, H), "state": (L, B, H), "dstate": (L, B, H)}[target]
    if defect == "shape":  # x's T and B are free (any sequence and batch): only its D is bound
        axis = 2 if target == "x" else draw(st.integers(0, 2))
        shape = list(full)
        shape[axis] += draw(st.sampled_from([-1, 1]))
        bad = np.zeros(tuple(shape), dtype)
    elif defect == "rank":
        bad = np.zeros(full[:-1] if draw(st.booleans()) else (*full, 1), dtype)
    elif defect == "dtype":
        other = DTYPES[1 - DTYPES.index(dtype)]
        bad_dtype = draw(st.sampled_from([other, np.float16, np.complex128, np.int64]))
        if target == "x" and np.issubdtype(bad_dtype, np.integer):
            bad_dtype = np.int64  # a 3-D integer x: a dtype mistake, not token ids
        bad = np.zeros(full, bad_dtype)
    else:
        bad = draw(st.sampled_from([o for _, o in BAD_OBJECTS]))
    return kind, options, cell, dtype, (L, T, B, D, H), target, defect, bad


@props("test_layers_reject_one_defect")
@given(defective_layer_calls())
def test_layers_reject_one_defect(call):
    """A bad x, state, dy or dstate: TypeError/ValueError naming it, and the layer unharmed
    (a valid call afterwards still matches a fresh layer of the same seed)."""
    RUN["test_layers_reject_one_defect"] += 1
    kind, options, cell, dtype, (L, T, B, D, H), target, defect, bad = call
    layer = getattr(rnncore, kind)(D, H, L, dtype=dtype, seed=1, **options)
    x = np.ones((T, B, D), dtype)
    n = 2 if cell.has_c else 1

    def state_like(a):  # bad in the state's format: LSTM states are (h, c) tuples
        return (a, None) if n == 2 else a

    where = f"{kind}.forward"
    with pytest.raises((TypeError, ValueError)) as info:
        if target == "x":
            layer.forward(bad)
        elif target == "state":
            layer.forward(x, state_like(bad))
        else:
            where = f"{kind}.backward"
            layer.forward(x)
            if target == "dy":
                layer.backward(bad)
            else:
                layer.backward(None, state_like(bad))
    msg = str(info.value)
    expected = TypeError if defect in ("dtype", "object") else ValueError
    if target == "x" and defect == "rank" and bad.ndim == 2:
        expected = ValueError  # (T, B) floats: not token ids, a wrong shape
    assert info.type is expected, f"{defect} {target}: {info.type.__name__}: {msg}"
    assert names_argument(msg, where, target), f"{defect} {target}: {msg}"
    fresh = getattr(rnncore, kind)(D, H, L, dtype=dtype, seed=1, **options)
    np.testing.assert_array_equal(layer.forward(x)[0], fresh.forward(x)[0])


# --- caches --------------------------------------------------------------------------------


@st.composite
def foreign_caches(draw):
    consumer = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(DTYPES))
    source = draw(st.sampled_from(["other cell", "other dtype", "inference", "foreign"]))
    return consumer, dtype, source, draw(st.sampled_from(CELLS)), draw(st.integers(0, 5))


FOREIGN = [None, {"x": 1}, "cache", 3, np.zeros(3), [1, 2, 3]]


@props("test_backward_rejects_foreign_caches")
@given(foreign_caches())
def test_backward_rejects_foreign_caches(call):
    """backward with a cache of another kind of cell, None (a training=False forward) or
    any other object: TypeError naming `cache`, the class expected and what came. A cache of
    the same kind from a call of another dtype is that call's (its dtype travels with it): it
    is accepted, and rejects upstream gradients of the other dtype, naming them."""
    RUN["test_backward_rejects_foreign_caches"] += 1
    consumer, dtype, source, producer, i = call
    T, B, D, H = 2, 2, 3, 4
    rng = np.random.default_rng(i)

    def args_for(cell, dt):
        return {name: rng.standard_normal(shape).astype(dt) if name in cell.arg_names else None
                for name, shape in shapes_of(cell, T, B, D, H).items()}  # fmt: skip

    cls = {"rnn": "RNNCache", "lstm": "LSTMCache", "gru": "GRUCache"}[consumer.fn]
    none_up = [None] * len(consumer.upstream_names)
    fn = f"{consumer.fn}_backward"
    if source == "other dtype":
        other = DTYPES[1 - DTYPES.index(dtype)]
        _, cache = consumer.forward(args_for(consumer, other))
        assert cache.dtype == other
        assert consumer.backward(none_up, cache)[3].dtype == other
        with pytest.raises(TypeError) as info:
            consumer.backward([np.zeros((T, B, H), dtype), *none_up[1:]], cache)
        assert names_argument(str(info.value), fn, "dy"), info.value
        assert f"must have dtype {other.name}" in str(info.value)
        return
    if source == "other cell":
        _, cache = producer.forward(args_for(producer, dtype))
        if producer.fn == consumer.fn:  # same kind of cache: valid (options travel with it)
            assert consumer.backward(none_up, cache)[0].shape == (T, B, D)
            return
    elif source == "inference":
        _, cache = consumer.forward(args_for(consumer, dtype), training=False)
        assert cache is None
    else:
        cache = FOREIGN[i]
    with pytest.raises(TypeError) as info:
        consumer.backward(none_up, cache)
    msg = str(info.value)
    assert names_argument(msg, fn, "cache"), msg
    assert f"must be the {cls} returned by {consumer.fn}_forward" in msg, msg
    assert msg.endswith("(was the forward run with training=False?)") or (
        f"got {type(cache).__name__}" in msg
    ), msg


# --- the count -----------------------------------------------------------------------------


def test_zz_number_of_examples(capsys):
    """At least MIN_TOTAL examples ran in this session (runs last: pytest keeps file order)."""
    if set(RUN) != set(EXAMPLES):
        pytest.skip(f"only {sorted(RUN)} ran: the count needs the whole file")
    total = sum(RUN.values())
    with capsys.disabled():
        print(f"\nhypothesis examples run: {total} ({dict(RUN)})")
    want = MIN_TOTAL * min(SCALE, 1)
    assert total >= want, f"{total} examples < {want}: {dict(RUN)}"
