"""What every reference cell shares: the dtype rule, private copies and a stable sigmoid."""

from __future__ import annotations

import numpy as np

__all__ = ["Array", "compute_dtype", "copy_as", "or_zeros", "sigmoid"]

Array = np.ndarray


def sigmoid(a: Array) -> Array:
    """Logistic sigmoid 1 / (1 + exp(-a)), elementwise; finite and warning-free for any finite a."""
    # exp(-|a|) lies in [0, 1], so it never overflows. For large |a| it underflows to 0, which is
    # the correctly rounded result (sigmoid saturates to exactly 0 or 1), so that is not reported.
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(a))  # same shape as a
        return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def compute_dtype(w: Array) -> np.dtype:
    """The dtype to compute in: the weights' floating dtype (float64 for non-float weights)."""
    dtype = np.asarray(w).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def copy_as(a: Array, dtype: np.dtype) -> Array:
    """A private copy of a, cast to dtype."""
    return np.array(a, dtype=dtype, copy=True)


def or_zeros(a: Array | None, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """A private copy of a cast to dtype, or zeros of the given shape when a is None."""
    return np.zeros(shape, dtype) if a is None else copy_as(a, dtype)
