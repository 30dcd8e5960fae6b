"""The wavefront schedule of a unidirectional stack: layer l at step t while layer l-1 is already
at step t+1, each layer's kernel call on its own thread.

The default schedule runs the layers one after the other, each kernel call splitting its
products over all of rnncore's threads with a barrier per step. The wavefront runs every layer's
call at once, each on its own Python thread (the kernels release the GIL) with its share of the
threads, and hands the rows between them step by step through step streams
(``_core._StepStream``, csrc/common/stream.h). Forward, layer l writes h_t times its dropout mask
into a (T, B, H) buffer after each step and publishes the step; layer l+1 reads its input rows
once they are published. Backward, layer l+1 sends its dx rows (times the mask) from the last step
down and layer l reads them as its dy, while layer l+1's weight gradients, computed after its time
loop, overlap with layer l's steps. On 2 cores and 2 layers each core owns a layer and no small
product is split. Measured on 2 cores it is slower than the default schedule (0.84x at the
char-rnn size, docs/performance.md), so stacks run it only when asked (``wavefront = True``).

The arithmetic is the default schedule's, element by element: the same products over the same
rows (dx one step at a time, each element still one dot product in order) and the same weight
gradients. On the packed float32 kernel the results match it bitwise and so do not depend on
the thread count; where OpenBLAS runs the input side (float64, or W_ih past L2) the projection
and dx go by chunks of rows whose blocking may round differently, so they agree to rounding.
A layer's threads are an OpenMP team of their own: with OMP_PROC_BIND set, every layer's team
binds to the same first places, so leave it unset for the wavefront.

Where it applies: unidirectional LSTM stacks of 2+ layers, every length T (lengths=None), with at
least as many of rnncore's threads as layers; other stacks, cells and calls run the default
schedule.

Shape legend: T steps, B batch, D input size, H hidden size, L layers.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _core

__all__ = ["applies", "run_layers", "stack_backward", "stack_forward"]

Array = np.ndarray

CELLS = frozenset({"lstm"})  # the cells whose kernels take stream_in / stream_out


def applies(cell: str, layers: int, bidirectional: bool, lengths: Array | None, T: int) -> bool:
    """Whether a stack's call runs on the wavefront schedule when its ``wavefront`` is on: an
    LSTM of 2+ layers, one direction, every length T, and at least one of rnncore's threads
    (get_num_threads()) per layer, so that no layer waits for a core."""
    return (
        cell in CELLS
        and 1 < layers <= _core.get_num_threads()
        and not bidirectional
        and lengths is None
        and T > 0
    )


class _Workers:
    """Threads kept for the wavefront (a new thread per call cost more than it saved: its first
    kernel call pays for thread-local setup, and starting it takes about 0.3 ms). Worker i - 1
    runs layer i; one run at a time (a second caller waits for the lock), so a run always finds
    its workers free. A forked child starts with none (its parent's threads do not exist there)."""

    def __init__(self) -> None:
        self._forget()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._inboxes: list[queue.SimpleQueue[Any]] = []

    def _serve(self, inbox: queue.SimpleQueue[Any]) -> None:
        while True:
            work, i, finished = inbox.get()
            try:
                work(i)  # catches and keeps its task's errors: this thread stays up
            except BaseException:  # a last resort: run_layers reports the errors
                pass
            finally:
                finished.set()

    def run(self, layers: int, work: Callable[[int], None]) -> None:
        """work(i) for i in [0, layers) at once: i = 0 on the calling thread."""
        with self._lock:
            while len(self._inboxes) < layers - 1:
                inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(inbox,), daemon=True).start()
                self._inboxes.append(inbox)
            finished = [threading.Event() for _ in range(layers - 1)]
            for i in range(1, layers):
                self._inboxes[i - 1].put((work, i, finished[i - 1]))
            work(0)
            for f in finished:
                f.wait()


_WORKERS = _Workers()


def run_layers(
    layers: int,
    task: Callable[[int], None],
    pool: Any,
    threads: int,
    fail: Callable[[int], None],
) -> None:
    """task(l) for every layer l at once, each on its own thread (l = 0 on the calling one).

    Each runs its kernels inside ``with pool:`` and capped at max(1, threads // layers) OpenMP
    threads. If task(l) raises, fail(l) marks its output stream failed, so the layer that reads
    it stops waiting; the first exception (in layer order) is raised here after every layer
    has finished.
    """
    share = max(1, threads // layers)
    errors: list[BaseException | None] = [None] * layers

    def work(layer: int) -> None:
        previous = None
        try:
            previous = _core._set_thread_limit(share)
            with pool:
                task(layer)
        except BaseException as e:  # handed to the calling thread
            errors[layer] = e
            fail(layer)
        finally:
            if previous is not None:
                _core._set_thread_limit(previous)

    _WORKERS.run(layers, work)
    for e in errors:
        if e is not None:
            raise e


def stack_forward(
    stack: Any,
    x: Array,
    states0: list[Array | None],
    training: bool,
    input_weight: Array | None,
) -> tuple[Array, Any]:
    """RecurrentStack.forward on the wavefront schedule (applies() holds): the same arguments,
    checked by it, and the same results; the caches go on its tape.

    x: (T, B, D) or (T, B) token ids; states0: per state component, (L, B, H) or None.
    """
    from .stack import _kernel, _Tape  # here, not at the top: stack imports this module
    from .stack_inputs import pack_state

    T, B, H, L = x.shape[0], x.shape[1], stack.hidden_size, stack.num_layers
    masks = [stack._dropout_mask((T, B, H), training, layer) for layer in range(L)]
    weights = [stack.layer_weights(layer) for layer in range(L)]
    if input_weight is not None:
        weights[0] = (input_weight, *weights[0][1:])
    # streams[l]: layer l's output times its mask, layer l+1's input (T, B, H)
    streams = [_core._StepStream(np.empty((T, B, H), stack.dtype), masks[i]) for i in range(L - 1)]
    fwd, n = _kernel(stack._forward), len(states0)
    results: list[Any] = [None] * L

    def task(i: int) -> None:
        kw = {}
        if i > 0:
            kw["stream_in"] = streams[i - 1]
        if i < L - 1:
            kw["stream_out"] = streams[i]
        inp = x if i == 0 else streams[i - 1].rows
        s0 = [None if s is None else s[i] for s in states0]
        results[i] = fwd(inp, *s0, *weights[i], training=training, **kw, **stack._options)

    def fail(i: int) -> None:
        if i < L - 1:
            streams[i].fail()

    run_layers(L, task, stack._pool, _core.get_num_threads(), fail)
    if training:
        caches = [[r[1 + n]] for r in results]  # caches[layer][direction]
        stack._tape = _Tape(caches, masks, T, B, input_weight is not None, wavefront=True)
    finals = [np.stack([r[1 + k] for r in results]) for k in range(n)]  # (L, B, H) each
    return results[L - 1][0], pack_state(finals)


def stack_backward(
    stack: Any, tape: Any, dy: Array | None, dstates: list[Array | None]
) -> tuple[Array | None, Any]:
    """RecurrentStack.backward through a wavefront forward's tape: adds into stack's grads (its
    input_weight_grad after a forward with input_weight) and returns (dx, dstate0).

    dy: (T, B, H) or None; dstates: per state component, (L, B, H) or None.
    """
    from .stack import _kernel
    from .stack_inputs import pack_state

    T, B, H, L = tape.T, tape.B, stack.hidden_size, stack.num_layers
    # streams[l] (l >= 1): layer l's dx times the mask of layer l-1's output: layer l-1's dy
    streams = {
        i: _core._StepStream(np.empty((T, B, H), stack.dtype), tape.masks[i - 1])
        for i in range(1, L)
    }
    bwd, n = _kernel(stack._backward), len(dstates)
    results: list[Any] = [None] * L

    def task(i: int) -> None:
        kw = {}
        g = dy
        if i < L - 1:
            g = streams[i + 1].rows
            kw["stream_in"] = streams[i + 1]
        if i > 0:
            kw["stream_out"] = streams[i]
        dn = [None if d is None else d[i] for d in dstates]
        results[i] = bwd(g, *dn, tape.caches[i][0], **kw)

    def fail(i: int) -> None:
        if i > 0:
            streams[i].fail()

    run_layers(L, task, stack._pool, _core.get_num_threads(), fail)
    for i, r in enumerate(results):  # on this thread, as the default schedule adds them
        stack._add_grads(tape, i, False, r[1 + n :])
    d0 = [np.stack([r[1 + k] for r in results]) for k in range(n)]  # (L, B, H) each
    return results[0][0], pack_state(d0)
