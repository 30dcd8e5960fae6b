"""One direction of one recurrent layer as a torch.autograd.Function on rnncore's kernels.

The building block of rnncore.torch (the torch.nn modules): ``run_direction`` runs
``rnncore.<cell>_forward`` over the whole sequence and, when autograd needs it, records a
``KernelDirection`` node whose backward is ``rnncore.<cell>_backward`` on the forward's cache.
Importing this module imports torch; ``import rnncore`` never imports it.

No copy at the torch <-> NumPy boundary: a CPU tensor goes in as ``tensor.detach().numpy()``
(a view of its memory) and every array the kernels return comes out as ``torch.from_numpy``
(a tensor over the array's memory). Whatever copying remains is the kernels' own (an input
that is not C-contiguous, e.g. a slice of a bidirectional layer's gradient, is made contiguous
once in C++); the kernel's cache holds its own copies of x and the weights, so changing them in
place after the forward does not change the gradients of that forward.

Shape legend
------------
    T, B, D, H  sequence length, batch, input features, hidden size
    G           gate blocks: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    x           (T, B, D)   time-major input, float32 or float64 (the weights' dtype)
    h0, c0      (B, H)      initial states (None: zeros); c0 for the LSTM only
    w_ih, w_hh  (G*H, D), (G*H, H);  b_ih, b_hh (G*H,) or None
    lengths     (B,) int64 NumPy array in [0, T], or None (all T)
    y           (T, B, H)   every step's h (0 past a row's length)
    h_n, c_n    (B, H)      final states
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _core

__all__ = ["KernelDirection", "Spec", "run_direction"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class Spec:
    """What a kernel call is, besides its tensors.

    cell: "rnn", "lstm" or "gru" (rnncore.<cell>_forward / _backward); options: the cell's
    keyword options (``{"nonlinearity": "tanh"}``, ``{"reset_after": True}``, ``{}``);
    reverse: run the sequence backwards (the reverse direction of a bidirectional layer);
    pool: the rnncore.WorkspacePool the kernel calls draw their buffers from (the module's own),
    or None.
    """

    cell: str
    options: dict[str, Any] = field(default_factory=dict)
    reverse: bool = False
    pool: Any = field(default=None, compare=False)  # the module's WorkspacePool, or None

    @property
    def has_c(self) -> bool:
        """Whether the cell carries a cell state c (the LSTM)."""
        return self.cell == "lstm"


def _array(t: Tensor | None) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (no copy), or None."""
    return None if t is None else t.detach().numpy()


def _tensor(a: np.ndarray | None) -> Tensor | None:
    """A tensor over a NumPy array's memory (no copy), or None."""
    return None if a is None else torch.from_numpy(a)


def _forward(
    spec: Spec,
    tensors: tuple[Tensor | None, ...],
    lengths: np.ndarray | None,
    training: bool,
) -> tuple[list[np.ndarray], Any]:
    """Call rnncore.<cell>_forward: ([y, h_n(, c_n)], cache or None)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = (_array(t) for t in tensors)
    states = (h0, c0) if spec.has_c else (h0,)
    seq: dict[str, Any] = {} if lengths is None else {"lengths": lengths}
    if spec.reverse:
        seq["reverse"] = True
    fwd = getattr(_core, f"{spec.cell}_forward")
    with _pooled(spec):
        *outs, cache = fwd(
            x, *states, w_ih, w_hh, b_ih, b_hh, training=training, **seq, **spec.options
        )
    return outs, cache


def _pooled(spec: Spec) -> Any:
    """The context in which spec's kernel calls run: its pool, or nothing."""
    return spec.pool if spec.pool is not None else contextlib.nullcontext()


class KernelDirection(torch.autograd.Function):
    """Autograd node of one kernel call: forward rnncore.<cell>_forward, backward its BPTT.

    ``apply(spec, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)`` -> (y, h_n) or (y, h_n, c_n);
    c0 is None for the RNN and GRU, h0/c0/b_ih/b_hh may be None. Once differentiable (the
    backward is a kernel, not a torch graph): a second-order gradient raises.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        spec: Spec,
        lengths: np.ndarray | None,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
    ) -> tuple[Tensor, ...]:
        outs, cache = _forward(spec, (x, h0, c0, w_ih, w_hh, b_ih, b_hh), lengths, True)
        ctx.spec, ctx.cache = spec, cache
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros
        return tuple(torch.from_numpy(a) for a in outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Tensor | None, *dstates: Tensor | None) -> tuple[Any, ...]:
        spec: Spec = ctx.spec
        bwd = getattr(_core, f"{spec.cell}_backward")
        n = 2 if spec.has_c else 1
        with _pooled(spec):
            dx, *rest = bwd(_array(dy), *(_array(d) for d in dstates), ctx.cache)
        d0 = [_tensor(a) for a in rest[:n]]
        if not spec.has_c:
            d0.append(None)  # c0
        dw = [_tensor(a) for a in rest[n:]]  # dw_ih, dw_hh, db_ih, db_hh
        grads = (_tensor(dx), *d0, *dw)
        # No gradient where autograd did not ask for one (spec and lengths: never).
        need = ctx.needs_input_grad[2:]
        return (None, None, *(g if ok else None for g, ok in zip(grads, need, strict=True)))


def run_direction(
    spec: Spec,
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    lengths: np.ndarray | None,
) -> tuple[Tensor, ...]:
    """One direction of one layer over the whole sequence: (y, h_n) or (y, h_n, c_n).

    Records a KernelDirection node when autograd is on and any tensor requires grad; otherwise
    runs the kernel's inference forward (no cache kept). Every tensor must already be a CPU
    tensor of the weights' dtype and of the shapes of the legend (rnncore.torch checks them).
    """
    tensors = (x, h0, c0, *weights)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return KernelDirection.apply(spec, lengths, *tensors)
    outs, _ = _forward(spec, tensors, lengths, False)
    return tuple(torch.from_numpy(a) for a in outs)
