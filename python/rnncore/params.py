"""Named parameters in one flat buffer, and the one way of loading a state dict into them.

Used by the layers (rnncore.layers), the model (a ParamGroup holds every parameter) and the
optimizers (rnncore.optim update a ParamGroup's flat buffers): the key check and the
validate-then-copy of ``load_state_dict`` live here once.

Shape legend
------------
    P           padded size of the flat buffer: the parameters' sizes summed, each rounded up
                so that every view starts on a 64-byte boundary (the padding stays zero)
    data, grad  (P,)   ParamGroup.data and ParamGroup.grad
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Module", "ParamGroup", "check_keys", "load_arrays", "load_params", "save_params"]

Array = np.ndarray
_ALIGN_BYTES = 64  # a cache line, and an AVX-512 vector: every view starts on one


class Module(Protocol):
    """What ParamGroup.of needs of a module: rnncore.Linear, Embedding, RNN, LSTM, GRU."""

    def parameters(self) -> dict[str, Array]: ...
    def use_buffers(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None: ...


def check_keys(where: str, expected: tuple[str, ...], given: Mapping[str, Any]) -> None:
    """Raise ValueError listing the missing and unexpected keys of `given`, if any."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s) {', '.join(map(repr, missing))}")
        if unexpected:
            parts.append(f"unexpected key(s) {', '.join(map(repr, unexpected))}")
        raise ValueError(f"{where}: {'; '.join(parts)} (expected {list(expected)})")


def load_arrays(
    where: str, targets: Mapping[str, Array], state_dict: Mapping[str, npt.ArrayLike]
) -> None:
    """Copy ``state_dict[name]`` into ``targets[name]`` in place, for every name of targets.

    Every name must be present, with the exact shape of its target; floating-point values of
    another precision are rounded to the target's dtype. Nothing is changed unless the whole
    dict is valid, so a failed load leaves the targets as they were.

    Raises:
        ValueError: keys missing or unexpected (all are listed), or a value has the wrong
            shape (the message names the key).
        TypeError: a value is not a floating-point array.
    """
    check_keys(where, tuple(targets), state_dict)
    new = {}
    for name, p in targets.items():
        v = np.asarray(state_dict[name])
        if not np.issubdtype(v.dtype, np.floating):
            raise TypeError(
                f"{where}: {name!r} must be a floating-point array, got dtype {v.dtype}"
            )
        if v.shape != p.shape:
            raise ValueError(f"{where}: {name!r} must have shape {p.shape}, got {v.shape}")
        new[name] = v
    for name, v in new.items():
        targets[name][...] = v


class ParamGroup:
    """Named parameter arrays packed into one contiguous flat buffer, with their gradients.

    The values are copied in; afterwards ``params[name]`` and ``grads[name]`` are views into
    ``data`` and ``grad``. The owner of the original arrays (a model, a layer) must compute
    with the views from then on: rebind its arrays to ``params`` and accumulate its gradients
    into ``grads`` (in place: ``g += ...``, never ``g = ...``). Every update that works on the
    flat buffers (optimizers, clipping, zero_grad) then reaches every parameter at once.

    Args:
        params: name -> array; all float32 or all float64 (one dtype for the group).
        dtype: the group's dtype; None to take the params' (which must then agree).

    Attributes:
        data: (P,) all parameters (padding between them is zero and stays zero).
        grad: (P,) all gradients, same layout.
        params: name -> view of data, the shape of the original array (C-contiguous).
        grads: name -> view of grad, same shapes.
        names, shapes, offsets: the layout, in insertion order (offsets in elements).
        size: number of parameter elements (without padding).

    Raises:
        TypeError: mixed or non-floating dtypes; ValueError: no parameters.
    """

    def __init__(
        self, params: Mapping[str, npt.ArrayLike], *, dtype: npt.DTypeLike | None = None
    ) -> None:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"ParamGroup: params must be a dict of name -> array, got {type(params).__name__}"
            )
        if not params:
            raise ValueError("ParamGroup: params must not be empty")
        arrays = {str(k): np.asarray(v) for k, v in params.items()}
        if dtype is None:
            dtypes = sorted({str(a.dtype) for a in arrays.values()})
            if len(dtypes) != 1:
                raise TypeError(
                    f"ParamGroup: all params must have one dtype (or pass dtype=), got {dtypes}"
                )
            dtype = dtypes[0]
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"ParamGroup: dtype must be float32 or float64, got {self.dtype}")
        align = _ALIGN_BYTES // self.dtype.itemsize
        self.names: tuple[str, ...] = tuple(arrays)
        self.shapes: tuple[tuple[int, ...], ...] = tuple(a.shape for a in arrays.values())
        offsets, total = [], 0
        for a in arrays.values():
            offsets.append(total)
            total += -(-a.size // align) * align
        self.offsets: tuple[int, ...] = tuple(offsets)
        self.size = int(sum(a.size for a in arrays.values()))
        self.data = self._aligned_zeros(total)  # (P,)
        self.grad = self._aligned_zeros(total)  # (P,)
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        for name, off, a in zip(self.names, self.offsets, arrays.values(), strict=True):
            self.params[name] = self.data[off : off + a.size].reshape(a.shape)
            self.grads[name] = self.grad[off : off + a.size].reshape(a.shape)
            self.params[name][...] = a

    @classmethod
    def of(cls, modules: Mapping[str, Module], *, dtype: npt.DTypeLike | None = None) -> ParamGroup:
        """One group holding every parameter of several modules, which then compute with it.

        The parameters are named ``"<module name>.<parameter name>"`` (e.g. "enc.weight_ih_l0",
        "head.weight"), in the order of `modules` then of each module's parameters(); each
        module is bound to its views (``module.use_buffers(*group.views(name + "."))``), so
        backward adds into ``group.grad`` and an optimizer step or clipping on the group
        (``Adam(group, lr=...)``, ``clip_grad_norm(group, max_norm)``) updates every module.
        Call ``group.zero_grad()`` before each backward; ``save_params`` / ``load_params``
        write and read the whole group as one .npz.

        Args:
            modules: name -> module (anything with parameters() and use_buffers(), e.g.
                rnncore.Linear, Embedding, RNN, LSTM, GRU). Names are non-empty and have no
                '.'; a module appears once.
            dtype: as ParamGroup (None: the modules' common dtype).

        Raises:
            TypeError: modules is not a dict, or a value is not a module; mixed dtypes.
            ValueError: no modules, a bad or repeated name, the same module twice.
        """
        where = "ParamGroup.of"
        if not isinstance(modules, Mapping):
            raise TypeError(
                f"{where}: modules must be a dict of name -> module, got {type(modules).__name__}"
            )
        if not modules:
            raise ValueError(f"{where}: modules must not be empty")
        init: dict[str, Array] = {}
        seen: dict[int, str] = {}
        for name, m in modules.items():
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(
                    f"{where}: module names must be non-empty, without '.', got {name!r}"
                )
            if not (hasattr(m, "parameters") and hasattr(m, "use_buffers")):
                raise TypeError(
                    f"{where}: modules[{name!r}] must have parameters() and use_buffers(), "
                    f"got {type(m).__name__}"
                )
            if id(m) in seen:
                raise ValueError(
                    f"{where}: modules[{name!r}] is the same object as {seen[id(m)]!r}"
                )
            seen[id(m)] = name
            init |= {f"{name}.{k}": v for k, v in m.parameters().items()}
        group = cls(init, dtype=dtype)
        for name, m in modules.items():
            m.use_buffers(*group.views(name + "."))
        return group

    def _aligned_zeros(self, n: int) -> Array:
        """(n,) zeros of the group's dtype starting on a 64-byte boundary."""
        extra = _ALIGN_BYTES // self.dtype.itemsize
        raw = np.zeros(n + extra, self.dtype)
        skip = (-raw.ctypes.data % _ALIGN_BYTES) // self.dtype.itemsize
        return raw[skip : skip + n]

    def zero_grad(self) -> None:
        """Set every gradient to zero (one fill of the flat buffer; the views stay valid)."""
        self.grad.fill(0)

    def views(self, prefix: str) -> tuple[dict[str, Array], dict[str, Array]]:
        """The parameter and gradient views whose names start with `prefix`, prefix removed.

        E.g. with names "rnn.weight_ih_l0", ... ``views("rnn.")`` gives the dicts a layer
        keyed by "weight_ih_l0", ... can adopt.
        """
        n = len(prefix)
        keys = [k for k in self.names if k.startswith(prefix)]
        return {k[n:]: self.params[k] for k in keys}, {k[n:]: self.grads[k] for k in keys}

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters by name, (shape of each)."""
        return {name: p.copy() for name, p in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, npt.ArrayLike]) -> None:
        """Copy values into the parameters in place (the views stay valid).

        Every name must be present with its exact shape; floating values of the other
        precision are rounded. Nothing is changed unless the whole dict is valid.

        Raises:
            ValueError: missing or unexpected names (all listed), or a wrong shape.
            TypeError: a value is not a floating-point array.
        """
        load_arrays("ParamGroup.load_state_dict", self.params, state_dict)

    def __repr__(self) -> str:
        return f"ParamGroup({len(self.names)} arrays, {self.size} parameters, {self.dtype})"


def save_params(path: str | os.PathLike[str], group: ParamGroup) -> Path:
    """Write every parameter of `group` to one .npz at `path` (exactly that name), by name.

    Atomic: written to a temporary file beside `path`, fsynced and renamed over it; on any
    failure the temporary file is removed and an existing file at `path` is left as it was.
    ``np.load(path)`` reads it without rnncore.

    Returns:
        the path written.

    Raises:
        TypeError: group is not a ParamGroup. OSError: the folder cannot be written.
    """
    if not isinstance(group, ParamGroup):
        raise TypeError(f"save_params: group must be a ParamGroup, got {type(group).__name__}")
    dest = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **group.params)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


def load_params(path: str | os.PathLike[str], group: ParamGroup) -> None:
    """Copy the arrays of the .npz at `path` (from save_params) into `group`, in place.

    Every parameter name must be in the file with its exact shape and no other name may be;
    floating values of the other precision are rounded. Nothing is changed unless the whole
    file is valid (the modules bound to the group see the new values at once).

    Raises:
        TypeError: group is not a ParamGroup, or an array is not floating-point.
        ValueError: names missing from or unexpected in the file (all listed), a wrong shape
            (the name is given), or a file that is not a .npz.
        OSError: the file cannot be read.
    """
    if not isinstance(group, ParamGroup):
        raise TypeError(f"load_params: group must be a ParamGroup, got {type(group).__name__}")
    src = Path(os.fspath(path))
    try:
        z = np.load(src, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as e:
        raise ValueError(f"load_params: cannot read {src} as a .npz: {e}") from e
    if not isinstance(z, Mapping):
        raise ValueError(f"load_params: {src} holds one array (.npy), not a .npz of named arrays")
    with z:
        arrays = {k: z[k] for k in z.files}
    load_arrays(f"load_params({src})", group.params, arrays)
