"""Feed-forward building blocks beside the recurrent layers: Linear and Embedding.

Both follow the recurrent stacks' protocol (rnncore.stack.RecurrentStack): ``parameters()``
(the live arrays by PyTorch name), ``grads`` (backward adds into them), ``zero_grad()``,
``state_dict()`` / ``load_state_dict()`` (torch.nn's names and layouts, so a torch state dict
loads as is) and ``use_buffers(params, grads)`` (compute with a ParamGroup's views, see
rnncore.ParamGroup.of). ``forward`` keeps what ``backward`` needs on the module.

Shape legend
------------
    ...         any leading dimensions (none included), e.g. (T, B) or (B,)
    in, out     Linear's in_features and out_features
    V, E        Embedding's num_embeddings and embedding_dim

    Linear.weight       (out, in)   y = x weightᵀ + bias
    Linear.bias         (out,)      (absent with bias=False)
    Embedding.weight    (V, E)      y[...] = weight[ids[...]]

Training step::

    h = emb.forward(ids)                 # (T, B) -> (T, B, E)
    ...
    y = head.forward(h_out)              # (T, B, H) -> (T, B, V)
    dh_out = head.backward(dy)           # adds into head.grads
    emb.backward(dh)                     # scatter-adds into emb.grads["weight"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from .checks import flag, positive_int, seed
from .params import load_arrays

__all__ = ["Embedding", "Linear"]

Array = np.ndarray


def _layer_dtype(where: str, dtype: npt.DTypeLike) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}")
    return dt


class _Module:
    """The parameter protocol Linear and Embedding share (names -> live arrays)."""

    _params: dict[str, Array]
    _grads: dict[str, Array]
    dtype: np.dtype[Any]

    def _init_params(self, params: dict[str, Array]) -> None:
        self._params = {k: np.ascontiguousarray(v, self.dtype) for k, v in params.items()}
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}

    def parameters(self) -> dict[str, Array]:
        """The parameters by PyTorch name (the module's own arrays, not copies; a new dict)."""
        return dict(self._params)

    @property
    def grads(self) -> dict[str, Array]:
        """Gradients by parameter name, same shapes and dtype (backward adds into them)."""
        return dict(self._grads)

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place: arrays from ``grads`` stay valid)."""
        for g in self._grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters by PyTorch name (torch.nn's layout)."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, npt.ArrayLike]) -> None:
        """Copy parameters in place (every key, exact shapes; floating values of the other
        precision are rounded). Nothing is changed unless the whole dict is valid.

        Raises:
            ValueError: keys missing or unexpected (all listed), or a wrong shape.
            TypeError: a value is not a floating-point array.
        """
        load_arrays(f"{type(self).__name__}.load_state_dict", self._params, state_dict)

    def use_buffers(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Compute with these arrays from now on instead of the module's own (e.g. the views
        ``group.views(prefix)`` of a ParamGroup), as RecurrentStack.use_buffers.

        Raises:
            ValueError: other names, or an array of another shape, dtype or layout.
        """
        where = f"{type(self).__name__}.use_buffers"
        for given, what in ((params, "params"), (grads, "grads")):
            if set(given) != set(self._params):
                raise ValueError(
                    f"{where}: {what} must have keys {sorted(self._params)}, got {sorted(given)}"
                )
            for name, a in given.items():
                p = self._params[name]
                if (
                    not isinstance(a, np.ndarray)
                    or a.shape != p.shape
                    or a.dtype != p.dtype
                    or not a.flags.c_contiguous
                ):
                    got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                    raise ValueError(
                        f"{where}: {what}[{name!r}] must be C-contiguous {p.dtype} of shape "
                        f"{p.shape}, got {got}"
                    )
        self._params = {name: params[name] for name in self._params}
        self._grads = {name: grads[name] for name in self._params}


class Linear(_Module):
    """y = x weightᵀ + bias over the last dimension, torch.nn.Linear's layout and init.

    Args:
        in_features: in >= 1.
        out_features: out >= 1.
        bias: keep a bias (out,) (named "bias").
        dtype: float32 or float64, the dtype of the parameters and of every input.
        seed: seed of ``np.random.default_rng`` for the init U(-1/sqrt(in), 1/sqrt(in)) of
            weight then bias (torch's default); None for fresh entropy.

    Attributes:
        in_features, out_features, dtype.

    Raises:
        TypeError / ValueError: a bad argument (the message names it).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        has_bias = flag("Linear", "bias", bias)
        self.dtype = _layer_dtype("Linear", dtype)
        rng = np.random.default_rng(_seed("Linear", seed))
        k = 1.0 / np.sqrt(self.in_features)
        init = {"weight": rng.uniform(-k, k, (self.out_features, self.in_features))}
        if has_bias:
            init["bias"] = rng.uniform(-k, k, self.out_features)
        self._init_params(init)
        self._x: Array | None = None  # (N, in) input of the last forward
        self._lead: tuple[int, ...] = ()

    @property
    def weight(self) -> Array:
        """(out, in), the live array."""
        return self._params["weight"]

    @property
    def bias(self) -> Array | None:
        """(out,), the live array, or None with bias=False."""
        return self._params.get("bias")

    def forward(self, x: npt.ArrayLike) -> Array:
        """x (..., in) of the module's dtype -> y (..., out) = x weightᵀ + bias (a new array).

        Keeps x for backward (until the next forward).

        Raises:
            TypeError: x is not a floating array of the module's dtype.
            ValueError: x has no dimensions, or its last one is not in_features.
        """
        x = _float_input("Linear.forward", "x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear.forward: x must have shape (..., {self.in_features}), got {x.shape}"
            )
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        y = _core._matmul(x2, self.weight, trans_b=True)  # (N, out)
        if self.bias is not None:
            y += self.bias
        self._x, self._lead = x2, lead
        return y.reshape(*lead, self.out_features)

    def backward(self, dy: npt.ArrayLike) -> Array:
        """dy (..., out) of the last forward's leading shape -> dx (..., in); adds
        dyᵀ x into grads["weight"] and the sum of dy into grads["bias"].

        Raises:
            RuntimeError: no forward since the module was built.
            TypeError / ValueError: dy of another dtype or shape than y.
        """
        if self._x is None:
            raise RuntimeError("Linear.backward: call forward first")
        dy = _float_input("Linear.backward", "dy", dy, self.dtype)
        want = (*self._lead, self.out_features)
        if dy.shape != want:
            raise ValueError(f"Linear.backward: dy must have shape {want} (y's), got {dy.shape}")
        dy2 = np.ascontiguousarray(dy.reshape(-1, self.out_features))
        self._grads["weight"] += _core._matmul(dy2, self._x, trans_a=True)
        if "bias" in self._grads:
            self._grads["bias"] += dy2.sum(0)
        dx = _core._matmul(dy2, self.weight)
        return dx.reshape(*self._lead, self.in_features)

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.dtype.name})"
        )


class Embedding(_Module):
    """A lookup table, torch.nn.Embedding's layout and init: y[...] = weight[ids[...]].

    Args:
        num_embeddings: V >= 1 rows.
        embedding_dim: E >= 1 columns.
        dtype: float32 or float64.
        seed: seed of ``np.random.default_rng`` for the init N(0, 1) (torch's); None for fresh
            entropy.

    Attributes:
        num_embeddings, embedding_dim, dtype.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        self.dtype = _layer_dtype("Embedding", dtype)
        rng = np.random.default_rng(_seed("Embedding", seed))
        self._init_params(
            {"weight": rng.standard_normal((self.num_embeddings, self.embedding_dim))}
        )
        self._ids: Array | None = None  # (N,) ids of the last forward
        self._lead: tuple[int, ...] = ()

    @property
    def weight(self) -> Array:
        """(V, E), the live array."""
        return self._params["weight"]

    def forward(self, ids: npt.ArrayLike) -> Array:
        """ids (...) integers in [0, V) -> (..., E), the rows of weight (a new array).

        Raises:
            TypeError: ids is not an integer array.
            ValueError: an id outside [0, V) (the first one and its flat position are named).
        """
        a = np.asarray(ids)
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"Embedding.forward: ids must be an integer array, got dtype {a.dtype}")
        flat = a.reshape(-1).astype(np.intp, copy=False)
        bad = np.flatnonzero((flat < 0) | (flat >= self.num_embeddings))
        if bad.size:
            raise ValueError(
                f"Embedding.forward: ids must be in [0, {self.num_embeddings}), got "
                f"{int(flat[bad[0]])} at flat position {int(bad[0])}"
            )
        self._ids, self._lead = flat, a.shape
        return self.weight[flat].reshape(*a.shape, self.embedding_dim)

    def backward(self, dy: npt.ArrayLike) -> None:
        """dy (..., E) of the last forward's ids shape: scatter-adds each row of dy into
        grads["weight"][id] (repeated ids add up). Returns None (ids have no gradient).

        Raises:
            RuntimeError: no forward since the module was built.
            TypeError / ValueError: dy of another dtype or shape than y.
        """
        if self._ids is None:
            raise RuntimeError("Embedding.backward: call forward first")
        dy = _float_input("Embedding.backward", "dy", dy, self.dtype)
        want = (*self._lead, self.embedding_dim)
        if dy.shape != want:
            raise ValueError(f"Embedding.backward: dy must have shape {want} (y's), got {dy.shape}")
        np.add.at(self._grads["weight"], self._ids, dy.reshape(-1, self.embedding_dim))

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype.name})"


def _seed(where: str, value: Any) -> int | None:
    return seed(where, "seed", value)


def _float_input(where: str, name: str, value: npt.ArrayLike, dtype: np.dtype[Any]) -> Array:
    """`value` as an array of exactly `dtype` (a float array of the other precision, an integer
    array or a non-array is a TypeError naming `name`, the expected and the received dtype)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where}: {name} must be a {dtype.name} array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(
            f"{where}: {name} must have dtype {dtype.name} (the module's), got {value.dtype}"
        )
    return value
