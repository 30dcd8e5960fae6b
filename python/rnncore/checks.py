"""The small argument checks shared by every module: ints, flags, numbers, seeds.

Python checks only what the C++ kernels cannot see (sizes of layers, hyper-parameters,
options); shapes and dtypes of arrays are checked once, in C++. Every message has the kernels'
form, "<where>: <name> must ..., got ...", so a caller reads one style whichever layer caught
the mistake. `where` is the public function or class the user called ("LSTM", "sample",
"LRSchedule"), `name` the argument as the user spelled it.

Two forms exist for ints, both pinned by tests and kept on purpose:

- `integer` / `positive_int`: a TypeError for a value that is not an int ("must be an int, got
  float"), a ValueError for one out of range ("must be >= 1, got 0"); for constructor sizes.
- `int_at_least`: one ValueError for either ("must be an int >= 0, got '3'"); for values that
  come from configs and files, where the type and the range are one mistake.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "flag",
    "fraction",
    "int_at_least",
    "integer",
    "is_int",
    "number",
    "positive_int",
    "seed",
]


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer, False for everything else, bools included."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(where: str, name: str, value: Any, *, low: int = 1) -> int:
    """`value` as an int >= low.

    Raises:
        TypeError: "<where>: <name> must be an int, got <type>" (bools are not ints here).
        ValueError: "<where>: <name> must be >= <low>, got <value>".
    """
    if not is_int(value):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")
    return int(value)


def positive_int(where: str, name: str, value: Any) -> int:
    """`value` as an int >= 1 (a size): `integer` with low = 1."""
    return integer(where, name, value, low=1)


def int_at_least(where: str, name: str, value: Any, low: int) -> int:
    """`value` as an int >= low, or a ValueError "<where>: <name> must be an int >= <low>, got
    <repr>" whether the type or the range is wrong."""
    if not is_int(value) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def flag(where: str, name: str, value: Any) -> bool:
    """`value` (a Python or NumPy bool) as a bool, or a TypeError "<where>: <name> must be a
    bool, got <type>" (1 and 0 are not flags: they are usually a misplaced argument)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def number(where: str, name: str, value: Any, *, low: float, low_ok: bool = True) -> float:
    """`value` as a finite float >= low (> low when not low_ok).

    Raises:
        TypeError: "<where>: <name> must be a number, got <type>" (bools are not numbers here).
        ValueError: "<where>: <name> must be a finite number >= <low>, got <repr>" (or "> low").
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low or (v == low and not low_ok):
        op = ">=" if low_ok else ">"
        raise ValueError(f"{where}: {name} must be a finite number {op} {low:g}, got {value!r}")
    return v


def fraction(where: str, name: str, value: Any) -> float:
    """`value` as a float in [0, 1) (a dropout probability, a validation share).

    Raises:
        TypeError: "<where>: <name> must be a float, got <type>" (bools are not fractions).
        ValueError: "<where>: <name> must be in [0, 1), got <value>" (NaN included).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a float, got {type(value).__name__}")
    if not 0 <= value < 1:  # also rejects NaN
        raise ValueError(f"{where}: {name} must be in [0, 1), got {value}")
    return float(value)


def seed(where: str, name: str, value: Any) -> int | None:
    """A seed: None (fresh entropy) or an int >= 0.

    Raises:
        TypeError: "<where>: <name> must be an int or None, got <type>".
        ValueError: "<where>: <name> must be >= 0, got <value>".
    """
    if value is None:
        return None
    if not is_int(value):
        raise TypeError(f"{where}: {name} must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {value}")
    return int(value)
