"""Central differences: the one numerical gradient the gradient tests compare against.

``central_difference(f, a, index=None, h=1e-6)`` perturbs entries of ``a`` in place, one at a
time, and returns ``(f(a + h e_i) - f(a - h e_i)) / 2h`` for each ``i`` (``f`` is evaluated at
the plus point first, then the minus point, then ``a[i]`` is restored exactly). ``f`` takes no
arguments: it closes over ``a`` and anything it must reset per evaluation (a generator's state,
say, so that both points see the same dropout mask).

Step size. In float64, h = 1e-6 balances the two errors of the central quotient: truncation is
O(h²·|f'''|) ~ 1e-12 and rounding is ~ eps·|f|/h ~ 1e-10..1e-9 for losses of order 1-10, both
far below the 1e-6 the checks allow (DESIGN.md's correctness tier 1). A smaller h would raise
the rounding error, a larger one the truncation error; relu cells need every pre-activation
farther than h from the kink, which the callers' seeds ensure.

Relative error. The callers compare with one of two formulas, each written out in the test:

* array-scale, ``rel_err(numeric, analytic) <= tol``: max|n - g| / max(max|n|, max|g|) over
  the whole checked set, so small entries are judged on the scale of the largest (test_layers
  and test_xent with conftest.rel_err, test_reference with its own copy, which also asserts
  equal shapes; tol = 1e-6);
* per entry, mixed absolute/relative, ``|n - g| <= tol * max(1, |n|)`` for each sampled entry
  (test_model, which checks 30-40 randomly picked weights of the whole model; tol = 1e-6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

STEP = 1e-6


def central_difference(
    f: Callable[[], float], a: np.ndarray, index: Iterable[Any] | None = None, h: float = STEP
) -> np.ndarray:
    """(f(a + h e_i) - f(a - h e_i)) / 2h for each i in index, perturbing a in place.

    index None: every entry of a, and the result has a's shape (and dtype); otherwise a 1-D
    array with one value per index in the order given (an index is anything a[i] accepts).
    """
    if index is None:
        grad = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            grad[idx] = _quotient(f, a, idx, h)
        return grad
    return np.array([_quotient(f, a, i, h) for i in index])


def _quotient(f: Callable[[], float], a: np.ndarray, i: Any, h: float) -> float:
    old = a[i]
    a[i] = old + h
    plus = f()
    a[i] = old - h
    minus = f()
    a[i] = old
    return (plus - minus) / (2 * h)
