"""What a recurrent stack's forward and backward accept: checked once, before any kernel runs.

rnncore.stack.RecurrentStack computes; this module validates and converts what its callers
pass in: arrays of the layer's dtype, the input x (features or token ids), states and their
gradients in the stack's (L·dirs, B, H) format, and the (B,) lengths of variable-length
batches. Every message has the form "<where>: <name> must ..., got ...", where `where` is the
public method the user called ("LSTM.forward").

Shape legend
------------
    T, B        sequence length, batch size
    D           input_size (or the columns of forward's input_weight)
    H           hidden_size
    L           num_layers
    dirs        directions per layer: 1, or 2 for a bidirectional stack
    x           (T, B, D) floats, or (T, B) integer token ids
    state       (L*dirs, B, H) per state component ("h", or "h" and "c" for the LSTM), in
                PyTorch's order: layer 0 forward, layer 0 reverse, layer 1 forward, ...
    lengths     (B,) integers in [0, T]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .reference_cells.common import check_lengths as _reference_check_lengths

__all__ = ["as_float_array", "check_input", "check_lengths", "pack_state", "unpack_state"]

Array = np.ndarray


def as_float_array(where: str, name: str, a: Any, dtype: np.dtype, shape: str) -> Array:
    """`a` as an array of `dtype`: arrays must have it (either byte order), lists are converted.

    Raises:
        TypeError: an array of another dtype ("<where>: <name> must have dtype float64 (the
            layer's dtype), got float32"), or something that is not an array of numbers
            (the message names `shape`, e.g. "(T, B, D)").
    """
    if isinstance(a, np.ndarray):
        if a.dtype.kind != "f" or a.dtype.newbyteorder("=") != dtype:
            raise TypeError(
                f"{where}: {name} must have dtype {dtype} (the layer's dtype), got {a.dtype}"
            )
        return a  # the kernels take the other byte order too (converting it once)
    if isinstance(a, (list, tuple)):
        try:
            return np.asarray(a, dtype=dtype)
        except (TypeError, ValueError):
            pass
    raise TypeError(
        f"{where}: {name} must be a {dtype} array of shape {shape}, got {type(a).__name__}"
    )


def check_input(where: str, x: Any, dtype: np.dtype, d_in: int) -> Array:
    """x as the stack's input: a (T, B, d_in) array of `dtype`, or (T, B) integer token ids.

    Raises:
        TypeError: an integer array that is not (T, B), or x of another dtype / not an array.
        ValueError: a float x whose shape is not (T, B, d_in).
    """
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer):
        # One-hot input: (T, B) token ids; the kernel gathers weight columns, no dx.
        if x.ndim != 2:  # an integer (T, B, D) array is a dtype mistake, not token ids
            raise TypeError(
                f"{where}: x must have dtype {dtype} (the layer's dtype), or be a (T, B) "
                f"integer array of token ids; got {x.dtype} of shape {x.shape}"
            )
        return x
    x = as_float_array(where, "x", x, dtype, "(T, B, D)")
    if x.ndim != 3 or x.shape[2] != d_in:
        raise ValueError(
            f"{where}: x must have shape (T, B, D) with D = input_size = {d_in}, "
            f"got shape {x.shape}"
        )
    return x


def check_lengths(where: str, lengths: Any, T: int, B: int) -> Array | None:
    """lengths as a private (B,) int64 copy with values in [0, T]; None stays None.

    The rule and its wording are the kernels' and the reference's (rnncore.reference), with
    `where` in front, e.g. "LSTM.forward: lengths must have shape (B,) = (6,), got shape (7,)".

    Raises:
        TypeError: a bool or non-integer dtype (floats are refused, not rounded).
        ValueError: a shape other than (B,), or a value outside [0, T] (the first is named).
    """
    if lengths is None:
        return None
    try:
        return _reference_check_lengths(lengths, T, B)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def unpack_state(
    where: str,
    name: str,
    state: Any,
    names: tuple[str, ...],
    expected: tuple[int, int, int],
    dtype: np.dtype,
    *,
    bidirectional: bool,
) -> list[Array | None]:
    """A state or its gradient as one (L*dirs, B, H) array (or None) per state component.

    Args:
        state: None, an array (one component), or a tuple/list of len(names) arrays or Nones.
        names: the components, ("h",) or ("h", "c").
        expected: (L*dirs, B, H).
        bidirectional: words the expected shape as (2L, B, H) instead of (L, B, H).

    Raises:
        TypeError: not a tuple of the right length (LSTM), or a component of another dtype.
        ValueError: a component of another shape.
    """
    layout = "(2L, B, H)" if bidirectional else "(L, B, H)"
    meaning = "num_layers * 2 directions" if bidirectional else "num_layers"
    if state is None:
        return [None] * len(names)
    if len(names) == 1:
        parts, labels = [state], [name]
    else:
        if not isinstance(state, (tuple, list)) or len(state) != len(names):
            raise TypeError(
                f"{where}: {name} must be a tuple ({', '.join(names)}) of arrays of shape "
                f"{layout}, or None, got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
            )
        parts, labels = list(state), [f"{name}[{i}] ({s})" for i, s in enumerate(names)]
    out: list[Array | None] = []
    for part, label in zip(parts, labels, strict=True):
        if part is None:
            out.append(None)
            continue
        a = as_float_array(where, label, part, dtype, layout)
        if a.shape != expected:
            raise ValueError(
                f"{where}: {label} must have shape {layout} = {expected} "
                f"({meaning}, batch, hidden_size), got shape {a.shape}"
            )
        out.append(a)
    return out


def pack_state(states: Sequence[Array]) -> Any:
    """The state in the user's format: the one array, or a tuple (h, c) for the LSTM."""
    return states[0] if len(states) == 1 else tuple(states)
