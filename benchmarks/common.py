"""Shared pieces of the rnncore benchmarks: configs, data, runners, correctness check, FLOPs, env.

Both entry points, ``test_bench_kernels.py`` (pytest-benchmark) and ``report.py`` (one markdown
table; it and its worker processes, one per implementation, see ``workers.py``), import this
module; nothing here times anything.

A *runner* is a zero-argument closure that does one full call of one implementation on one fixed
problem and returns its outputs as a dict of NumPy arrays (``OUTPUT_KEYS`` names them). The
implementations:

    rnncore     the C++ kernels: rnncore.<cell>_forward/_backward, or the rnncore.RNN/LSTM/GRU
                layer classes for stacks (num_layers > 1); configs with random lengths
                (``Config.varlen``) call the kernels layer by layer, lengths= and reverse=True
    reference   rnncore.reference, the NumPy oracle of the kernels (a Python loop over time)
    torch       torch.nn.RNN/LSTM/GRU with the same weights, torch.set_num_threads matched;
                on a PackedSequence built once (pack_padded_sequence) for random lengths

report.py adds ``rnncore-full`` (``FULL``) for configs with random lengths: the same rnncore
kernels on the same batch with lengths=None, so that the cost of a random-length batch can be
put against the full-length batch of the same T and B.

"fwd" is inference (no cache kept; torch under no_grad); "fwdbwd" is a training forward followed
by the backward of the same upstream gradients dy, dh_n (, dc_n) for every implementation.
Before anything is timed its outputs are compared with the float64 reference on the same
float32 inputs (``check``), and a mismatch raises.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import rnncore
from rnncore import reference

# Arrays by name; a value may also be a zero-argument callable returning the array, for work
# that the timed call leaves out (torch's packed dx padded back): compare calls it.
Outputs = dict[str, Any]
Runner = Callable[[], Outputs]

IMPLS = ("rnncore", "reference", "torch")
FULL = "rnncore-full"  # rnncore on a random-length config's batch with every length T
MODES = ("fwd", "fwdbwd")
MODE_LABELS = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}
SEED = 0

# --------------------------------------------------------------------------------------------
# Cells and configs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A cell kind: its name in rnncore's function names, gate count, and whether it has c."""

    name: str  # "rnn", "lstm", "gru": rnncore.<name>_forward, torch.nn.<NAME>
    gates: int  # G: rows of w_ih / w_hh are G*H
    has_c: bool  # LSTM carries a cell state c next to h


CELLS: dict[str, Cell] = {
    "rnn": Cell("rnn", 1, False),
    "lstm": Cell("lstm", 4, True),
    "gru": Cell("gru", 3, False),
}


@dataclass(frozen=True)
class Config:
    """A problem size: sequence length T, batch B, input size D, hidden size H, layers L.

    varlen: the batch's lengths are drawn uniformly from [1, T] (``lengths_of``, fixed by
    seed); bidirectional: every layer runs a forward and a reverse direction, y is (T, B, 2H).
    """

    name: str
    T: int
    B: int
    D: int
    H: int
    L: int = 1
    varlen: bool = False
    bidirectional: bool = False

    @property
    def directions(self) -> int:
        """1, or 2 for a bidirectional stack."""
        return 2 if self.bidirectional else 1

    @property
    def is_stack(self) -> bool:
        """Whether this config runs a multi-layer stack (the layer classes) or one cell."""
        return self.L > 1

    @property
    def by_kernels(self) -> bool:
        """Whether the layers run as kernel calls chained by hand, with lengths= and reverse=
        (random lengths or bidirectional), rather than through the layer classes."""
        return self.varlen or self.bidirectional

    def __str__(self) -> str:
        stack = f", L={self.L}" if self.is_stack else ""
        stack += ", lengths U[1, T]" if self.varlen else ""
        stack += ", bidirectional" if self.bidirectional else ""
        return f"{self.name} (T={self.T}, B={self.B}, D={self.D}, H={self.H}{stack})"


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("minchar", 25, 1, 65, 100),  # min-char-rnn: batch 1, vocabulary 65 (dense here)
        Config("charrnn", 50, 50, 64, 128),  # char-rnn defaults
        Config("medium", 100, 64, 256, 512),
        Config("large", 64, 128, 1024, 1024),
        # 2-layer stacks, through the layer classes rnncore.RNN/LSTM/GRU
        Config("charrnn-L2", 50, 50, 64, 128, 2),
        Config("medium-L2", 100, 64, 256, 512, 2),
        # the same stacks with lengths drawn uniformly from [1, T], uni- and bidirectional:
        # the kernels layer by layer with lengths= (reverse=True), torch on a PackedSequence
        Config("charrnn-L2-len", 50, 50, 64, 128, 2, varlen=True),
        Config("charrnn-L2-len-bi", 50, 50, 64, 128, 2, varlen=True, bidirectional=True),
        Config("medium-L2-len", 100, 64, 256, 512, 2, varlen=True),
        Config("medium-L2-len-bi", 100, 64, 256, 512, 2, varlen=True, bidirectional=True),
    )
}


def lengths_of(cfg: Config) -> np.ndarray | None:
    """The (B,) int64 lengths of a varlen config, uniform on [1, T], fixed by seed; else None.

    Drawn from their own generator (seed SEED + 1), so every cell gets the same lengths and a
    unidirectional one keeps the weights and inputs of the full-length config of its sizes.
    """
    if not cfg.varlen:
        return None
    return np.random.default_rng(SEED + 1).integers(1, cfg.T + 1, cfg.B, dtype=np.int64)


def flops(cell: Cell, cfg: Config, mode: str) -> float:
    """Floating-point operations of the matrix products: forward 2·T·B·(D+H)·G·H per layer.

    The backward does two products of the forward's size (dx/dh and dW), so fwd+bwd is 3×.
    With random lengths only the steps that run count (sum(lengths) in place of T·B); a
    bidirectional layer counts twice and the next layer's input is 2H.
    """
    lengths = lengths_of(cfg)
    steps = cfg.T * cfg.B if lengths is None else int(lengths.sum())
    total = 0.0
    for layer in range(cfg.L):
        d_in = cfg.D if layer == 0 else cfg.directions * cfg.H
        total += cfg.directions * 2.0 * steps * (d_in + cfg.H) * cell.gates * cfg.H
    return total * (3 if mode == "fwdbwd" else 1)


# --------------------------------------------------------------------------------------------
# Problems: deterministic weights, inputs and upstream gradients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One fixed problem: weights per layer, inputs, initial states, upstream gradients.

    Single-layer problems have initial states (h0, c0) and gradients for the final states
    (dh, dc). Stacks start from zero states and get gradients through y only (dy), so that the
    layer classes need nothing beyond ``forward(x)`` and ``backward(dy)``.
    Bidirectional problems hold two weight sets per layer (forward, then reverse direction).
    """

    cell: Cell
    cfg: Config
    layers: tuple[dict[str, np.ndarray], ...]  # per layer (and direction): w_ih (G*H, D_in),
    #                                            w_hh (G*H, H), b_ih (G*H,), b_hh (G*H,)
    x: np.ndarray  # (T, B, D)
    dy: np.ndarray  # (T, B, H), (T, B, 2H) bidirectional
    h0: np.ndarray | None = None  # (B, H), single layer only
    c0: np.ndarray | None = None  # (B, H), LSTM single layer only
    dh: np.ndarray | None = None  # (B, H) dL/dh_n, single layer only
    dc: np.ndarray | None = None  # (B, H) dL/dc_n, LSTM single layer only
    lengths: np.ndarray | None = None  # (B,) int64 in [1, T] (varlen configs), None: all T

    @property
    def states(self) -> tuple[np.ndarray | None, ...]:
        """Initial states in the functional API's argument order: (h0,) or (h0, c0)."""
        return (self.h0, self.c0) if self.cell.has_c else (self.h0,)

    @property
    def dstates(self) -> tuple[np.ndarray | None, ...]:
        """Final-state gradients in the backward's argument order: (dh,) or (dh, dc)."""
        return (self.dh, self.dc) if self.cell.has_c else (self.dh,)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights under PyTorch's names (weight_ih_l0, weight_hh_l0, bias_ih_l0, ...,
        weight_ih_l0_reverse, ... for the reverse direction)."""
        names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
        dirs = self.cfg.directions
        return {
            f"{names[k]}_l{i // dirs}{'_reverse' if i % dirs else ''}": v
            for i, layer in enumerate(self.layers)
            for k, v in layer.items()
        }

    def astype(self, dtype: type[np.floating]) -> Problem:
        """The same problem with every array cast to dtype (float32 values are exact in f64)."""

        def cast(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.astype(dtype)

        layers = tuple({k: v.astype(dtype) for k, v in layer.items()} for layer in self.layers)
        return Problem(
            self.cell,
            self.cfg,
            layers,
            cast(self.x),
            cast(self.dy),
            cast(self.h0),
            cast(self.c0),
            cast(self.dh),
            cast(self.dc),
            self.lengths,
        )


@functools.lru_cache(maxsize=4)
def make_problem(cell_name: str, config_name: str) -> Problem:
    """The float32 problem of a cell at a config, the same on every call and machine.

    Weights follow PyTorch's init, U(-1/sqrt(H), 1/sqrt(H)); inputs, initial states and
    upstream gradients are standard normal. Varlen configs get ``lengths_of(cfg)``; x and dy
    past a length hold the same random values (every implementation must ignore them).
    """
    cell, cfg = CELLS[cell_name], CONFIGS[config_name]
    rng = np.random.default_rng(SEED)
    T, B, D, H, G = cfg.T, cfg.B, cfg.D, cfg.H, cell.gates
    k = 1.0 / np.sqrt(H)
    f32 = np.float32
    layers = []
    for layer in range(cfg.L):
        d_in = D if layer == 0 else cfg.directions * H
        for _ in range(cfg.directions):
            layers.append(
                {
                    "w_ih": rng.uniform(-k, k, (G * H, d_in)).astype(f32),
                    "w_hh": rng.uniform(-k, k, (G * H, H)).astype(f32),
                    "b_ih": rng.uniform(-k, k, G * H).astype(f32),
                    "b_hh": rng.uniform(-k, k, G * H).astype(f32),
                }
            )
    x = rng.standard_normal((T, B, D), f32)
    dy = rng.standard_normal((T, B, cfg.directions * H), f32)
    if cfg.is_stack or cfg.by_kernels:
        return Problem(cell, cfg, tuple(layers), x, dy, lengths=lengths_of(cfg))

    def state() -> np.ndarray:
        return rng.standard_normal((B, H), f32)

    h0, dh = state(), state()
    c0, dc = (state(), state()) if cell.has_c else (None, None)
    return Problem(cell, cfg, tuple(layers), x, dy, h0, c0, dh, dc)


def output_keys(cell: Cell, cfg: Config, mode: str) -> tuple[str, ...]:
    """The outputs every runner of (cell, cfg, mode) returns, and that check compares.

    Stacks compare y and dx only: the layer classes' state and weight-gradient containers are
    their own business, and dx already depends on every layer's backward. Configs run layer by
    layer through the kernels (random lengths, bidirectional) compare the same two.
    """
    if cfg.is_stack or cfg.by_kernels:
        return ("y",) if mode == "fwd" else ("y", "dx")
    c = cell.has_c
    fwd = ("y", "h_n", "c_n") if c else ("y", "h_n")
    if mode == "fwd":
        return fwd
    return (*fwd, "dx", "dh0", *(("dc0",) if c else ()), "dw_ih", "dw_hh", "db_ih", "db_hh")


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


@functools.cache
def torch_module() -> ModuleType | None:
    """torch, imported on first use (it takes a second or two), or None if not installed."""
    try:
        import torch  # optional, and slow to import
    except ImportError:
        return None
    return torch


def torch_installed() -> bool:
    """Whether torch can be imported, without importing it (for pytest's collection)."""
    return importlib.util.find_spec("torch") is not None


def unavailable(impl: str, cell: Cell, cfg: Config) -> str | None:
    """Why impl cannot run (cell, cfg), or None if it can.

    Every cell of this tree has its kernels and its layer class; the check keeps an older
    installed build (or a new cell added to CELLS before its kernels) from failing the suite:
    what the imported rnncore lacks is skipped with its name. Configs with random lengths or
    bidirectional need kernels that take lengths= and reverse= (issue 12).
    """
    if impl in ("rnncore", FULL):
        # Stacks need the layer class and the cell's kernels too: a layer class may fall back to
        # the NumPy reference while a kernel is missing, which is not worth timing as rnncore.
        names = [cell.name.upper()] if cfg.is_stack and not cfg.by_kernels else []
        names += [f"{cell.name}_forward", f"{cell.name}_backward"]
        missing = [f"rnncore.{name}" for name in names if not hasattr(rnncore, name)]
        if missing:
            return f"{', '.join(missing)} not in this rnncore build"
        if cfg.by_kernels and not kernels_take_lengths(cell.name):
            return f"rnncore.{cell.name}_forward(..., lengths=, reverse=) not in this rnncore build"
        return None
    if impl == "torch":
        return None if torch_installed() else "torch is not installed"
    if impl == "reference":
        return None
    raise ValueError(f"unknown implementation {impl!r}, expected one of {IMPLS}")


@functools.cache
def kernels_take_lengths(cell_name: str) -> bool:
    """Whether rnncore.<cell>_forward accepts lengths= and reverse= (one tiny probing call)."""
    cell = CELLS[cell_name]
    forward = getattr(rnncore, f"{cell_name}_forward")
    x = np.zeros((2, 1, 1), np.float32)
    w = np.zeros((cell.gates, 1), np.float32)
    states = (None, None) if cell.has_c else (None,)
    try:
        forward(x, *states, w, w, lengths=np.array([1]), reverse=True, training=False)
    except TypeError:  # an older build: unexpected keyword arguments
        return False
    return True


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------


def make_runner(impl: str, problem: Problem, mode: str) -> Runner:
    """A closure doing one call of impl on problem in mode ("fwd" or "fwdbwd")."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
    reason = unavailable(impl, problem.cell, problem.cfg)
    if reason is not None:
        raise RuntimeError(f"cannot run {impl}: {reason}")
    if impl == "torch":
        if problem.cfg.by_kernels:
            return _torch_packed_runner(problem, mode)
        return _torch_runner(problem, mode)
    if impl == FULL:
        if not problem.cfg.by_kernels:
            raise ValueError(f"{FULL} is for configs with random lengths, not {problem.cfg.name}")
        return _pooled(
            _kernel_stack_runner(rnncore, dataclasses.replace(problem, lengths=None), mode)
        )
    module = rnncore if impl == "rnncore" else reference
    if problem.cfg.by_kernels:
        run = _kernel_stack_runner(module, problem, mode)
    elif problem.cfg.is_stack:
        return _stack_runner(module, problem, mode)  # the stack holds its own pool
    else:
        run = _functional_runner(module, problem, mode)
    return _pooled(run) if module is rnncore else run


def _pooled(run: Runner) -> Runner:
    """run inside a WorkspacePool of its own, as a loop calling rnncore's kernels should be: the
    buffers of one call are reused by the next (the stacks hold such a pool themselves)."""
    make_pool = getattr(rnncore, "WorkspacePool", None)
    if make_pool is None:  # an rnncore build from before the pools
        return run
    pool = make_pool()

    def pooled() -> Outputs:
        with pool:
            return run()

    return pooled


def _functional_runner(module: ModuleType, problem: Problem, mode: str) -> Runner:
    """rnncore's or the reference's <cell>_forward / <cell>_backward on one layer."""
    cell = problem.cell
    forward = getattr(module, f"{cell.name}_forward")
    backward = getattr(module, f"{cell.name}_backward")
    w = problem.layers[0]
    args = (problem.x, *problem.states, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    fwd_keys = ("y", "h_n", "c_n") if cell.has_c else ("y", "h_n")
    grad_keys = output_keys(cell, problem.cfg, "fwdbwd")[len(fwd_keys) :]

    if mode == "fwd":

        def run() -> Outputs:
            *outs, _ = forward(*args, training=False)
            return dict(zip(fwd_keys, outs, strict=True))

        return run

    def run_fwdbwd() -> Outputs:
        *outs, cache = forward(*args, training=True)
        grads = backward(problem.dy, *problem.dstates, cache)
        return dict(zip(fwd_keys + grad_keys, (*outs, *grads), strict=True))

    return run_fwdbwd


def _torch_runner(problem: Problem, mode: str) -> Runner:
    """torch.nn.RNN/LSTM/GRU (num_layers = cfg.L) holding a copy of the problem's weights."""
    torch = torch_module()
    if torch is None:
        raise RuntimeError("torch is not installed")
    cell, cfg = problem.cell, problem.cfg
    module = getattr(torch.nn, cell.name.upper())(cfg.D, cfg.H, num_layers=cfg.L)
    with torch.no_grad():
        for name, value in problem.state_dict().items():
            getattr(module, name).copy_(torch.from_numpy(value))
    params = {
        short: getattr(module, f"{long}_l0")
        for short, long in (
            ("w_ih", "weight_ih"),
            ("w_hh", "weight_hh"),
            ("b_ih", "bias_ih"),
            ("b_hh", "bias_hh"),
        )
    }

    def state(a: np.ndarray) -> Any:
        # torch wants states as (num_layers, B, H); from_numpy shares memory, nothing is written
        return torch.from_numpy(a[None])

    training = mode == "fwdbwd"
    x = torch.from_numpy(problem.x).requires_grad_(training)
    states = [state(s).requires_grad_(training) for s in problem.states if s is not None]
    hx = None if not states else (tuple(states) if cell.has_c else states[0])
    # Upstream gradients of (y, h_n[, c_n]): the same dy, dh_n, dc_n the other runners get.
    upstream = [torch.from_numpy(problem.dy)]
    upstream += [state(d) for d in problem.dstates if d is not None]

    def outputs(y: Any, final: Any) -> Outputs:
        out = {"y": y.detach().numpy()}
        if cfg.is_stack:
            return out
        h_n, c_n = final if cell.has_c else (final, None)
        out["h_n"] = h_n[0].detach().numpy()
        if c_n is not None:
            out["c_n"] = c_n[0].detach().numpy()
        return out

    if mode == "fwd":

        def run() -> Outputs:
            with torch.no_grad():
                y, final = module(x, hx)
            return outputs(y, final)

        return run

    def run_fwdbwd() -> Outputs:
        module.zero_grad(set_to_none=True)
        for t in (x, *states):
            t.grad = None
        y, final = module(x, hx)
        finals = list(final) if cell.has_c else [final]
        # Backward of sum(y·dy) + sum(h_n·dh) (+ sum(c_n·dc)), without building that sum.
        torch.autograd.backward([y, *finals][: len(upstream)], upstream)
        out = outputs(y, final)
        out["dx"] = x.grad.numpy()
        if not cfg.is_stack:
            for key, s in zip(("dh0", "dc0"), states, strict=False):
                out[key] = s.grad[0].numpy()
            out.update({f"d{k}": p.grad.numpy() for k, p in params.items()})
        return out

    return run_fwdbwd


# ---- stacks (num_layers > 1): rnncore's layer classes, and the reference layer by layer ----


def _stack_runner(module: ModuleType, problem: Problem, mode: str) -> Runner:
    """A 2+ layer stack: rnncore.RNN/LSTM/GRU, or the reference functions chained by hand."""
    cell, cfg = problem.cell, problem.cfg
    training = mode == "fwdbwd"
    if module is rnncore:
        layer = getattr(rnncore, cell.name.upper())(
            cfg.D, cfg.H, cfg.L, dtype=problem.x.dtype.type, seed=SEED
        )
        layer.load_state_dict(problem.state_dict())
        # report.py --wavefront's worker (workers.WAVEFRONT): the layers at once, each on its
        # own thread; stacks where it does not apply run the default schedule.
        layer.wavefront = os.environ.get("RNNCORE_BENCH_WAVEFRONT") == "1"

        def run_layer() -> Outputs:
            y, _ = layer.forward(problem.x, state=None, training=training)
            if not training:
                return {"y": y}
            dx, _ = layer.backward(problem.dy, dstate=None)
            return {"y": y, "dx": dx}

        return run_layer

    forward = getattr(module, f"{cell.name}_forward")
    backward = getattr(module, f"{cell.name}_backward")
    zeros = (None, None) if cell.has_c else (None,)  # zero initial states / final-state grads

    def run_reference() -> Outputs:
        inp, caches = problem.x, []
        for w in problem.layers:
            inp, *_, cache = forward(
                inp, *zeros, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], training=training
            )
            caches.append(cache)
        if not training:
            return {"y": inp}
        grad = problem.dy
        for cache in reversed(caches):
            grad = backward(grad, *zeros, cache)[0]  # dx of this layer = dy of the one below
        return {"y": inp, "dx": grad}

    return run_reference


# ---- random lengths and bidirectional: kernel calls layer by layer; torch on PackedSequence ----


def _kernel_stack_runner(module: ModuleType, problem: Problem, mode: str) -> Runner:
    """rnncore's kernels or the reference, layer by layer, with lengths= (problem.lengths).

    A bidirectional layer is a forward call and a reverse=True call on the same input, outputs
    concatenated (forward direction first) into the next layer's input; its backward adds the
    two directions' dx. Zero initial states, gradients through y only, as the other stacks.
    """
    cell, cfg = problem.cell, problem.cfg
    forward = getattr(module, f"{cell.name}_forward")
    backward = getattr(module, f"{cell.name}_backward")
    training = mode == "fwdbwd"
    zeros = (None, None) if cell.has_c else (None,)  # zero initial states / final-state grads
    dirs, H = cfg.directions, cfg.H
    layers = [problem.layers[i : i + dirs] for i in range(0, len(problem.layers), dirs)]

    def run() -> Outputs:
        inp, caches = problem.x, []
        for weights in layers:
            ys = []
            for d, w in enumerate(weights):
                y, *_, cache = forward(
                    inp,
                    *zeros,
                    w["w_ih"],
                    w["w_hh"],
                    w["b_ih"],
                    w["b_hh"],
                    lengths=problem.lengths,
                    reverse=d == 1,
                    training=training,
                )
                ys.append(y)
                caches.append(cache)
            inp = ys[0] if dirs == 1 else np.concatenate(ys, axis=2)
        if not training:
            return {"y": inp}
        grad = problem.dy
        for layer in reversed(range(len(layers))):
            if dirs == 1:
                grad = backward(grad, *zeros, caches[layer])[0]
                continue
            dy_f = np.ascontiguousarray(grad[..., :H])
            dy_r = np.ascontiguousarray(grad[..., H:])
            grad = (
                backward(dy_f, *zeros, caches[2 * layer])[0]
                + backward(dy_r, *zeros, caches[2 * layer + 1])[0]
            )
        return {"y": inp, "dx": grad}

    return run


def _torch_packed_runner(problem: Problem, mode: str) -> Runner:
    """torch.nn.RNN/LSTM/GRU(num_layers, bidirectional) on a PackedSequence built once.

    The PackedSequence (pack_padded_sequence(x, lengths, enforce_sorted=False)) is built here,
    outside the timed call; its data is a leaf whose gradient is torch's dx. A call runs the
    module on it, pads y back (pad_packed_sequence, total_length=T, zeros past each length) and,
    for fwd+bwd, backpropagates dy from the padded y. The dx returned is a closure that pads the
    packed gradient back, evaluated when the outputs are checked: torch hands the gradient over
    in the packed layout, and padding it is no part of its training step.
    """
    torch = torch_module()
    if torch is None:
        raise RuntimeError("torch is not installed")
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    cell, cfg = problem.cell, problem.cfg
    module = getattr(torch.nn, cell.name.upper())(
        cfg.D, cfg.H, num_layers=cfg.L, bidirectional=cfg.bidirectional
    )
    with torch.no_grad():
        for name, value in problem.state_dict().items():
            getattr(module, name).copy_(torch.from_numpy(value))
    lengths = problem.lengths
    if lengths is None:
        lengths = np.full(cfg.B, cfg.T, np.int64)
    training = mode == "fwdbwd"
    packed = pack_padded_sequence(
        torch.from_numpy(problem.x), torch.from_numpy(lengths), enforce_sorted=False
    )
    layout = (packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    data = packed.data.detach().clone().requires_grad_(training)
    packed = PackedSequence(data, *layout)
    dy = torch.from_numpy(problem.dy)

    def padded(values: Any) -> Any:
        return pad_packed_sequence(PackedSequence(values, *layout), total_length=cfg.T)[0]

    if mode == "fwd":

        def run() -> Outputs:
            with torch.no_grad():
                y_packed, _ = module(packed)
                y, _ = pad_packed_sequence(y_packed, total_length=cfg.T)
            return {"y": y.numpy()}

        return run

    def run_fwdbwd() -> Outputs:
        module.zero_grad(set_to_none=True)
        data.grad = None
        y_packed, _ = module(packed)
        y, _ = pad_packed_sequence(y_packed, total_length=cfg.T)
        torch.autograd.backward([y], [dy])
        grad = data.grad
        return {"y": y.detach().numpy(), "dx": lambda: padded(grad).numpy()}

    return run_fwdbwd


# --------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------


class CorrectnessError(AssertionError):
    """An implementation's outputs differ from the float64 reference beyond the tolerance."""


@functools.lru_cache(maxsize=2)
def oracle(cell_name: str, config_name: str, full_length: bool = False) -> Outputs:
    """Every output of the float64 reference on the float32 problem's values (fwd+bwd).

    full_length: a random-length config's batch with every length T (what FULL computes).
    """
    problem = make_problem(cell_name, config_name).astype(np.float64)
    if full_length:
        problem = dataclasses.replace(problem, lengths=None)
    if problem.cfg.by_kernels:
        return _kernel_stack_runner(reference, problem, "fwdbwd")()
    runner = _stack_runner if problem.cfg.is_stack else _functional_runner
    return runner(reference, problem, "fwdbwd")()


def tolerance(cfg: Config) -> float:
    """Largest accepted relative error of a float32 result against the float64 reference.

    The bound of tests/test_rnn.py: each step's outputs are dot products of length D_in + H
    (rounding error up to (D_in + H)·u relative to their scale, u = 2^-24) and errors add up
    over at most T steps of the gradients, so 4·u·(D + L·H + T), with a floor of 64·u. Observed
    errors of rnncore, the float32 reference and torch sit 20-200× below it, for every cell; a
    wrong formula or a dropped term is off by orders of magnitude more. Bidirectional layers
    above the first read 2H inputs: L·H becomes 2·L·H.
    """
    u = 2.0**-24
    return max(64.0, 4.0 * (cfg.D + cfg.L * cfg.directions * cfg.H + cfg.T)) * u


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|: the error relative to the scale of the exact answer b."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b64), initial=0.0)), 1e-30)
    return float(np.max(np.abs(a64 - b64), initial=0.0)) / scale


def compare(
    got: Mapping[str, Any],
    want: Mapping[str, np.ndarray],
    keys: tuple[str, ...],
    tol: float,
    lengths: np.ndarray | None = None,
) -> list[str]:
    """What is wrong with got against want on keys (missing, shape, NaN/inf, error > tol).

    A callable value of got is called first (see Outputs). With lengths, the time-major outputs
    y and dx must also be exactly 0 at every step t >= lengths[b] of element b.
    """
    problems = []
    for key in keys:
        value = got.get(key)
        if callable(value):
            value = value()
        if value is None:
            problems.append(f"{key}: missing")
            continue
        a = np.asarray(value)
        if a.shape != want[key].shape:
            problems.append(f"{key}: shape {a.shape}, expected {want[key].shape}")
        elif not np.all(np.isfinite(a)):
            problems.append(f"{key}: not finite")
        elif (err := rel_err(a, want[key])) > tol:
            problems.append(f"{key}: relative error {err:.3g} > {tol:.3g}")
        elif lengths is not None and key in ("y", "dx"):
            past = np.arange(a.shape[0])[:, None] >= lengths[None, :]  # (T, B)
            if np.any(a[past] != 0):
                problems.append(f"{key}: not 0 past a sequence's length")
    return problems


def check(
    impl: str,
    got: Outputs,
    cell: Cell,
    cfg: Config,
    mode: str,
    want: Mapping[str, np.ndarray] | None = None,
) -> float:
    """Raise CorrectnessError unless got matches the float64 reference; return the max error.

    FULL is checked against the reference with every length T; the others with cfg's lengths,
    where outputs past a length must be 0 as the reference's are. want: the reference's
    outputs, ``oracle(cell.name, cfg.name, impl == FULL)``, when computed elsewhere (report.py
    computes them once in the parent and hands them to its worker processes).
    """
    if want is None:
        want = oracle(cell.name, cfg.name, impl == FULL)
    keys = output_keys(cell, cfg, mode)
    got = {k: v() if callable(v) else v for k, v in got.items()}
    lengths = None if impl == FULL else lengths_of(cfg)
    problems = compare(got, want, keys, tolerance(cfg), lengths)
    if problems:
        raise CorrectnessError(
            f"{impl} {cell.name} {cfg} {MODE_LABELS[mode]} differs from the float64 reference: "
            + "; ".join(problems)
        )
    return max(rel_err(got[k], want[k]) for k in keys)


# --------------------------------------------------------------------------------------------
# Threads and environment
# --------------------------------------------------------------------------------------------


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def _under(path: str, module: ModuleType | None) -> bool:
    """Whether a library path lies inside the installed package of module."""
    if module is None or module.__file__ is None:
        return False
    # The compiled extension, not __file__: an editable install keeps the Python sources in the
    # checkout and the libraries in site-packages.
    ext = getattr(module, "_core", module)
    root = Path(ext.__file__).resolve().parent
    return Path(path).resolve().is_relative_to(root)


def _limit_numpy_blas(n: int) -> bool:
    """Limit the BLAS numpy (so the reference) uses to n threads; False if that's not possible.

    Only with threadpoolctl, and only the BLAS libraries that are neither rnncore's own
    (which must stay at 1 thread: rnncore splits work with OpenMP) nor torch's (when torch is
    imported: otherwise its libraries are not loaded).
    """
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return False
    libs = [
        info["filepath"]
        for info in threadpool_info()
        if info["user_api"] == "blas"
        and not _under(info["filepath"], rnncore)
        and not _under(info["filepath"], sys.modules.get("torch"))
    ]
    if libs:
        threadpool_limits(limits=dict.fromkeys(libs, n))
    return bool(libs)


def set_threads(n: int, impl: str | None = None) -> dict[str, int | None]:
    """Run every implementation on n threads where it can be told; returns what was set.

    "reference" is None when numpy's BLAS could not be limited (threadpoolctl not installed):
    it then uses its own default, usually every CPU. impl: only that implementation's library
    (rnncore for "rnncore" and FULL, torch for "torch", nothing more for "reference") besides
    numpy's BLAS, and only its entry in the result: for a worker process that runs one
    implementation and should not load the others' libraries (importing torch loads its
    OpenMP runtime and BLAS into the process).
    """
    if impl is not None and impl not in (*IMPLS, FULL):
        raise ValueError(f"unknown implementation {impl!r}, expected one of {(*IMPLS, FULL)}")
    result: dict[str, int | None] = {}
    if impl in (None, "rnncore", FULL):
        rnncore.set_num_threads(n)
        result["rnncore" if impl is None else impl] = rnncore.get_num_threads()
    if impl in (None, "torch"):
        torch = torch_module() if torch_installed() else None
        if torch is not None:
            torch.set_num_threads(n)
        result["torch"] = torch.get_num_threads() if torch is not None else None
    limited = _limit_numpy_blas(n)
    if impl in (None, "reference"):
        result["reference"] = n if limited else None
    return result


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The date, CPU model and count, Python and numpy: what every process of a run shares."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": available_cpus(),
        "numpy": np.__version__,
        "threadpoolctl": importlib.util.find_spec("threadpoolctl") is not None,
        "python": platform.python_version(),
    }
