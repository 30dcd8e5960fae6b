"""The wavefront schedule of a unidirectional stack: layer l on a chunk of steps while layer l-1
is already on the next chunk.

The default schedule runs each layer over the whole sequence, one kernel call after the other,
every call splitting its products over all of rnncore's threads with a barrier per step. The
wavefront instead cuts the sequence into chunks of steps and gives each layer to one worker
(Python threads; the kernels release the GIL): with 2 layers on 2 cores each core owns a layer
and no small product is split. Forward, task (l, c) (layer l over chunk c) needs (l-1, c), its
input, and (l, c-1), its initial state; backward mirrors it, from the last layer and the last
chunk down. Worker p owns the layers l = p, p + P, ... and runs its tasks by diagonal l + c, so
every dependency lies on an earlier diagonal and the schedule cannot deadlock.

Results do not depend on the thread count or on timing: the chunks depend on T only, and each
layer's chunks are summed in a fixed order by the worker that owns it. They agree with the
default schedule to rounding: the forward is the same arithmetic (bitwise where the input
projection runs on the packed kernel), the weight gradients are summed chunk by chunk.
Unidirectional stacks only (a reverse direction needs the whole sequence of the layer below
before its first step); a bidirectional stack keeps the default schedule.

Shape legend: T steps, B batch, D input size, H hidden size, L layers, C chunks.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _core

__all__ = ["CHUNKS", "chunk_bounds", "run_diagonals"]

Array = np.ndarray

CHUNKS = 8  # chunks per sequence (fewer when T is smaller): the pipeline fills in 1/CHUNKS of it


def chunk_bounds(T: int, chunks: int = CHUNKS) -> list[tuple[int, int]]:
    """Steps [t0, t1) of each chunk: min(T, chunks) chunks as equal as possible (T >= 1)."""
    c = max(1, min(T, chunks))
    edges = [T * i // c for i in range(c + 1)]
    return list(itertools.pairwise(edges))


def run_diagonals(
    layers: int, chunks: int, task: Callable[[int, int], None], pool: Any, threads: int
) -> None:
    """task(l, c) for every layer l < layers and chunk c < chunks, on min(layers, threads) workers.

    task(l, c) starts only after task(l-1, c) and task(l, c-1) have finished (the caller maps
    backward's reversed order onto these indices). Each worker runs its kernels inside
    ``with pool:`` and capped at threads // workers OpenMP threads (the calling thread is worker
    0). The first exception a task raises stops every worker and is raised here.
    """
    workers = max(1, min(layers, threads))
    share = max(1, threads // workers)
    done = [[threading.Event() for _ in range(chunks)] for _ in range(layers)]
    failed: list[BaseException] = []

    def work(p: int) -> None:
        previous = _core._set_thread_limit(share)
        try:
            with pool:
                order = sorted(
                    ((i, c) for i in range(p, layers, workers) for c in range(chunks)),
                    key=lambda ic: (ic[0] + ic[1], ic[0]),
                )
                for i, c in order:
                    if i > 0:
                        done[i - 1][c].wait()
                    if failed:
                        return
                    task(i, c)
                    done[i][c].set()
        except BaseException as e:  # handed to the calling thread
            failed.append(e)
            for row in done:  # wake every waiting worker so that it sees the failure
                for event in row:
                    event.set()
        finally:
            _core._set_thread_limit(previous)

    helpers = [threading.Thread(target=work, args=(p,), daemon=True) for p in range(1, workers)]
    for h in helpers:
        h.start()
    work(0)
    for h in helpers:
        h.join()
    if failed:
        raise failed[0]


def chunk_lengths(lengths: Array | None, t0: int, t1: int) -> dict[str, Array]:
    """The kernel keyword for chunk [t0, t1): each row's steps inside it, or {} (all T)."""
    if lengths is None:
        return {}
    return {"lengths": np.clip(lengths - t0, 0, t1 - t0)}


def forward(
    fwd: Callable[..., Any],
    x: Array,
    states0: Sequence[Array | None],
    weights: Sequence[tuple[Any, ...]],
    masks: Sequence[Array | None],
    lengths: Array | None,
    options: dict[str, Any],
    training: bool,
    pool: Any,
    threads: int,
) -> tuple[Array, list[list[Array]], list[list[Any]]]:
    """A unidirectional stack's forward on the wavefront schedule.

    Args:
        fwd: the cell's forward kernel (rnncore._core.<cell>_forward).
        x: (T, B, D) inputs or (T, B) token ids; states0: per state component, (L, B, H) or None.
        weights: per layer, (w_ih, w_hh, b_ih, b_hh) as the kernel takes them.
        masks: per layer but the last, its (T, B, H) dropout mask (already scaled) or None.
        lengths: (B,) int64 or None; options: the cell's kernel options.

    Returns:
        y: (T, B, H) the last layer's outputs; finals[k][l]: component k of layer l's final
        state (B, H); caches[l][c]: layer l's kernel cache of chunk c (None unless training).
    """
    T = x.shape[0]
    bounds = chunk_bounds(T)
    L, C, n = len(weights), len(bounds), len(states0)
    ys: list[list[Array | None]] = [[None] * C for _ in range(L)]
    caches: list[list[Any]] = [[None] * C for _ in range(L)]
    carry: list[list[Array | None]] = [
        [None if s is None else s[i] for s in states0] for i in range(L)
    ]

    def task(i: int, c: int) -> None:
        t0, t1 = bounds[c]
        if i == 0:
            inp = x[t0:t1]
        else:
            inp = ys[i - 1][c]
            mask = masks[i - 1]
            if mask is not None:
                inp = inp * mask[t0:t1]
            ys[i - 1][c] = None  # consumed: only the last layer's outputs are kept
        y, *rest = fwd(
            inp,
            *carry[i],
            *weights[i],
            training=training,
            **chunk_lengths(lengths, t0, t1),
            **options,
        )
        carry[i] = list(rest[:n])
        caches[i][c] = rest[n]
        ys[i][c] = y

    run_diagonals(L, C, task, pool, threads)
    y = np.concatenate(ys[L - 1], axis=0)  # type: ignore[arg-type]
    finals = [[carry[i][k] for i in range(L)] for k in range(n)]
    return y, finals, caches  # type: ignore[return-value]


def backward(
    bwd: Callable[..., Any],
    dy: Array | None,
    dstates: Sequence[Array | None],
    caches: Sequence[Sequence[Any]],
    masks: Sequence[Array | None],
    T: int,
    add_grads: Callable[[int, Sequence[Array | None]], None],
    pool: Any,
    threads: int,
) -> tuple[Array | None, list[list[Array]]]:
    """Backward through forward()'s caches on the wavefront schedule.

    Args:
        bwd: the cell's backward kernel; dy: (T, B, H) gradient of the last layer's y, or None.
        dstates: per state component, (L, B, H) gradient of the final state, or None.
        caches, masks: as forward() returned and used them.
        add_grads: add_grads(l, grads) adds one chunk's parameter gradients (dw_ih, dw_hh,
            db_ih, db_hh) of layer l; called by layer l's worker, chunks last to first.

    Returns:
        dx: (T, B, D) gradient of x (None for token ids); d0[k][l]: component k of the gradient
        of layer l's initial state (B, H).
    """
    bounds = chunk_bounds(T)
    L, C, n = len(caches), len(bounds), len(dstates)
    dxs: list[list[Array | None]] = [[None] * C for _ in range(L)]
    carry: list[list[Array | None]] = [
        [None if d is None else d[i] for d in dstates] for i in range(L)
    ]

    def task(ri: int, rc: int) -> None:
        i, c = L - 1 - ri, C - 1 - rc  # run_diagonals' order: the last layer and chunk first
        t0, t1 = bounds[c]
        if i == L - 1:
            g = None if dy is None else dy[t0:t1]
        else:
            g = dxs[i + 1][c]
            dxs[i + 1][c] = None  # consumed
            mask = masks[i]
            if mask is not None and g is not None:
                g = g * mask[t0:t1]
        dx, *rest = bwd(g, *carry[i], caches[i][c])
        carry[i] = list(rest[:n])
        add_grads(i, rest[n:])
        dxs[i][c] = dx

    run_diagonals(L, C, task, pool, threads)
    dx = None if dxs[0][0] is None else np.concatenate(dxs[0], axis=0)  # type: ignore[arg-type]
    d0 = [[carry[i][k] for i in range(L)] for k in range(n)]
    return dx, d0  # type: ignore[return-value]


def stack_forward(
    stack: Any,
    x: Array,
    states0: list[Array | None],
    lengths: Array | None,
    training: bool,
    input_weight: Array | None,
) -> tuple[Array, Any]:
    """RecurrentStack.forward on the wavefront schedule (unidirectional, 2+ layers): the same
    arguments, checked by it, and the same results; the caches go on its tape."""
    from .stack import _kernel, _Tape  # here, not at the top: stack imports this module
    from .stack_inputs import pack_state

    T, B, L = x.shape[0], x.shape[1], stack.num_layers
    masks = [stack._dropout_mask((T, B, stack.hidden_size), training, layer) for layer in range(L)]
    weights = [stack.layer_weights(layer) for layer in range(L)]
    if input_weight is not None:
        weights[0] = (input_weight, *weights[0][1:])
    y, finals, caches = forward(
        _kernel(stack._forward), x, states0, weights, masks, lengths, stack._options, training,
        stack._pool, _core.get_num_threads(),
    )  # fmt: skip
    if training:
        stack._tape = _Tape(caches, masks, T, B, input_weight is not None, wavefront=True)
    return y, pack_state([np.stack(f) for f in finals])


def stack_backward(
    stack: Any, tape: Any, dy: Array | None, dstates: list[Array | None]
) -> tuple[Array | None, Any]:
    """RecurrentStack.backward through a wavefront forward's tape: adds into stack's grads (its
    input_weight_grad after a forward with input_weight) and returns (dx, dstate0)."""
    from .stack import _PARAM_NAMES, _kernel, _key
    from .stack_inputs import pack_state

    stack._input_weight_grad = None

    def add_grads(layer: int, grads: Sequence[Array | None]) -> None:
        for name, gw in zip(_PARAM_NAMES, grads, strict=True):
            if layer == 0 and name == "weight_ih" and tape.input_weight_given:
                iw = stack._input_weight_grad
                stack._input_weight_grad = gw if iw is None else iw + gw
            elif gw is not None:
                stack._grads[_key(name, layer, False)] += gw

    dx, d0 = backward(
        _kernel(stack._backward), dy, dstates, tape.caches, tape.masks, tape.T, add_grads,
        stack._pool, _core.get_num_threads(),
    )  # fmt: skip
    return dx, pack_state([np.stack(d) for d in d0])
