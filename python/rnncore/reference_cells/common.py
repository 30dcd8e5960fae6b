"""What every reference cell shares: the dtype rule, private copies, a stable sigmoid, lengths."""

from __future__ import annotations

import numpy as np

__all__ = [
    "Array",
    "check_lengths",
    "check_reverse",
    "compute_dtype",
    "copy_as",
    "flip_within_lengths",
    "or_zeros",
    "ran_only",
    "sigmoid",
    "valid_steps",
]

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


# --- variable lengths and the reverse direction ----------------------------------------------
# lengths[b] is how many steps element b runs (0 .. T). valid[t, b] = t < lengths[b] marks the
# steps that run; every other (t, b) is padding: its input is never read (zeroed in the private
# copy), its output is 0, and the state of row b is carried through it unchanged, so the final
# state of b is the state after its own last step (h0 itself for length 0).


def check_lengths(lengths: object, T: int, B: int) -> Array:
    """lengths validated and copied as a (B,) int64 array; None means every length is T.

    Raises TypeError for a bool or non-integer dtype, ValueError for a shape other than (B,) or
    a value outside [0, T]; every message names `lengths`, the expected and the received value.
    """
    if lengths is None:
        return np.full(B, T, np.int64)  # (B,)
    if isinstance(lengths, list | tuple) and len(lengths) == 0:
        lengths = np.zeros(0, np.int64)  # an empty list has no values to type it
    a = np.asarray(lengths)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"lengths must be an integer array of shape ({B},), got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got shape {a.shape}")
    bad = np.flatnonzero((a < 0) | (a > T))
    if bad.size:
        raise ValueError(
            f"lengths must have values in [0, T] = [0, {T}], got lengths[{bad[0]}] = {a[bad[0]]}"
        )
    return a.astype(np.int64)  # (B,) private copy


def check_reverse(reverse: object) -> bool:
    """reverse, which must be a bool (TypeError naming `reverse` otherwise)."""
    if not isinstance(reverse, bool | np.bool_):
        raise TypeError(f"reverse must be a bool, got {reverse!r} ({type(reverse).__name__})")
    return bool(reverse)


def ran_only(ran: Array, *arrays: Array) -> tuple[Array, ...]:
    """The arrays of one step with the rows that did not run it set to 0.

    ran: (B, 1) bool, the rows whose step ran; arrays: (B, ·) each. A row past its length
    holds whatever it carried (a NaN initial state of a length-0 row, say): zeroing it keeps
    it out of the weight gradients' sums, as the kernels skip such rows. With every row
    valid the values are unchanged (bitwise).
    """
    return tuple(np.where(ran, a, 0) for a in arrays)


def valid_steps(lengths: Array, T: int) -> Array:
    """(T, B) bool: valid[t, b] is True where step t of element b runs (t < lengths[b])."""
    return np.arange(T)[:, None] < lengths[None, :]


def flip_within_lengths(a: Array, lengths: Array) -> Array:
    """A copy of a (T, B, ...) with each column b reversed over its first lengths[b] steps.

    out[s, b] = a[lengths[b] - 1 - s, b] for s < lengths[b], and 0 in the padding. This is the
    reading order of the reverse direction (x[lengths[b]-1], ..., x[0]); it is its own inverse
    on the valid steps, so it also puts the reverse direction's outputs back where they were read.
    """
    T, B = a.shape[:2]
    valid = valid_steps(lengths, T)  # (T, B)
    s = np.arange(T)[:, None]  # (T, 1)
    src = np.where(valid, lengths[None, :] - 1 - s, s)  # (T, B) time index read by out[s, b]
    out = a[src, np.arange(B)[None, :]]  # (T, B, ...) gather: a copy
    out[~valid] = 0
    return out
