"""Property-based tests (hypothesis) of the kernels' `lengths=` and `reverse=` arguments.

The same promises as tests/test_properties.py, whose machinery (value layouts, specials,
tolerances, `assert_same`) this file reuses, for calls with variable lengths and the reverse
direction:

* valid: every cell, both dtypes, T and B from 0, any memory layout and any values (NaN, inf,
  1e30, denormals) in the arrays, lengths in [0, T] in any order and several integer dtypes
  (or a list), reverse True or False. The results equal the NumPy reference's
  (rnncore.reference, the oracle of the length semantics) within the bounds of
  `assert_same`; the outputs past each length are exactly 0 and so is dx there.
* one defect in `lengths` (wrong shape, a float or bool dtype, a value below 0 or above T) or
  a `reverse` that is not a bool: TypeError or ValueError whose message starts with the
  function's name and names the argument.

Deterministic (derandomize=True, no example database), like the rest of the property tests.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip(
    "hypothesis", reason="property tests need `pip install hypothesis`"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_kernels import CELLS  # noqa: E402
from test_properties import (  # noqa: E402
    DTYPES,
    EXACT,
    assert_same,
    gradient_floor,
    names_argument,
    output_floor,
    shapes_of,
    tolerance,
    value_mode,
    values,
)

EXAMPLES_VALID = 400
EXAMPLES_DEFECT = 150


def props(n: int) -> settings:
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


LENGTH_FORMS = ["int64", "int32", "uint8", "intp", "list", "strided"]


def as_form(lengths: np.ndarray, form: str):
    """The same lengths as the caller may pass them."""
    if form == "list":
        return lengths.tolist()
    if form == "strided":  # every other element of a twice-as-long array
        big = np.zeros(2 * lengths.size, np.int64)
        big[::2] = lengths
        return big[::2]
    return lengths.astype(form)


@st.composite
def length_calls(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(DTYPES))
    T, B = draw(st.integers(0, 5)), draw(st.integers(0, 4))
    D, H = draw(st.integers(0, 4)), draw(st.integers(1, 4))
    shapes = shapes_of(cell, T, B, D, H)
    canon, given_ = {}, {}
    for name in [*cell.arg_names, *cell.upstream_names]:
        optional = name not in ("x", "w_ih", "w_hh")
        if optional and draw(st.booleans()) and draw(st.booleans()):
            canon[name] = given_[name] = None
            continue
        lists = name != "w_ih" or dtype == np.float64  # a float list would make it float64
        canon[name], given_[name] = draw(values(shapes[name], dtype, lists=lists))
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), np.int64)
    form = draw(st.sampled_from(LENGTH_FORMS))
    reverse = draw(st.booleans())
    return cell, dtype, (T, B, D, H), canon, given_, lengths, form, reverse


@props(EXAMPLES_VALID)
@given(length_calls())
def test_kernels_with_lengths_match_reference(call):
    """Any valid call with lengths (and reverse): the reference's results, NaN and inf at the
    same positions, zeros past each length in y and dx; training=False gives the same
    outputs."""
    cell, dtype, (T, _, D, H), canon, given_, lengths, form, reverse = call
    kw = {"lengths": as_form(lengths, form), "reverse": reverse}
    r_kw = {"lengths": lengths, "reverse": reverse}
    args = {k: given_.get(k) for k in cell.arg_names}
    upstream = [given_[k] for k in cell.upstream_names]
    with np.errstate(all="ignore"):
        outs, cache = cell.forward(args, **kw)
        grads = cell.backward(upstream, cache)
        r_args = {k: canon.get(k) for k in cell.arg_names}
        r_up = [canon[k] for k in cell.upstream_names]
        r_outs, r_cache = cell.forward(r_args, impl="reference", **r_kw)
        r_grads = cell.backward(r_up, r_cache, impl="reference")
        x_args = dict(r_args, w_ih=r_args["w_ih"].astype(EXACT[dtype]))
        x_outs, x_cache = cell.forward(x_args, impl="reference", **r_kw)
        x_grads = cell.backward(r_up, x_cache, impl="reference")
    tol = tolerance(dtype, T, D, H)
    floor = gradient_floor(r_up, [*r_args.values(), *r_up])
    mode = value_mode([*r_args.values(), *r_up], [*r_outs, *r_grads])
    for name, a, b, c in zip(cell.outputs, outs, r_outs, x_outs, strict=True):
        assert_same(name, a, b, c, tol, output_floor(cell), mode)
    for name, a, b, c in zip(cell.grads, grads, r_grads, x_grads, strict=True):
        assert_same(name, a, b, c, tol, floor, mode)
    past = np.arange(T)[:, None] >= lengths[None, :]  # (T, B) steps that did not run
    y, dx = outs[0], grads[0]
    assert np.all(y[past] == 0), "y past a length is not 0"
    assert np.all(dx[past] == 0), "dx past a length is not 0"
    with np.errstate(all="ignore"):
        infer, none = cell.forward(args, training=False, **kw)
    assert none is None
    for name, a, b in zip(cell.outputs, infer, outs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"training=False: {name}")


BAD_LENGTHS = ["short", "long", "2-D", "scalar", "float", "bool", "negative", "above T"]


@st.composite
def bad_length_calls(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(DTYPES))
    T, B, D, H = draw(st.integers(1, 4)), draw(st.integers(1, 4)), 2, 3
    shapes = shapes_of(cell, T, B, D, H)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    args = {k: rng.standard_normal(shapes[k]).astype(dtype) for k in cell.arg_names}
    lengths = rng.integers(0, T + 1, B)
    defect = draw(st.sampled_from([*BAD_LENGTHS, "reverse"]))
    kw = {"lengths": lengths, "reverse": False}
    if defect == "short":
        kw["lengths"] = lengths[:-1]
    elif defect == "long":
        kw["lengths"] = np.append(lengths, 1)
    elif defect == "2-D":
        kw["lengths"] = lengths[:, None]
    elif defect == "scalar":
        kw["lengths"] = np.int64(T)
    elif defect == "float":
        kw["lengths"] = lengths.astype(draw(st.sampled_from([np.float32, np.float64])))
    elif defect == "bool":
        kw["lengths"] = lengths > 0
    elif defect == "negative":
        kw["lengths"] = lengths.copy()
        kw["lengths"][draw(st.integers(0, B - 1))] = -draw(st.integers(1, 2**40))
    elif defect == "above T":
        kw["lengths"] = lengths.copy()
        kw["lengths"][draw(st.integers(0, B - 1))] = T + draw(st.integers(1, 2**40))
    else:
        kw["reverse"] = draw(st.sampled_from(["yes", 1, 0.0, None, np.array([True])]))
    return cell, args, kw, defect


@props(EXAMPLES_DEFECT)
@given(bad_length_calls())
def test_kernels_reject_bad_lengths_and_reverse(call):
    """A bad `lengths` or `reverse` is a TypeError/ValueError that names the function and the
    argument; nothing is computed."""
    cell, args, kw, defect = call
    name = "reverse" if defect == "reverse" else "lengths"
    with pytest.raises((TypeError, ValueError)) as info:
        cell.forward(args, **kw)
    msg = str(info.value)
    assert names_argument(msg, f"{cell.fn}_forward", name), msg
    if defect in ("float", "bool", "reverse"):
        assert info.type is TypeError, msg
    else:
        assert info.type is ValueError, msg
