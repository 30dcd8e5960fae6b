"""Shared pieces of the rnncore benchmarks: configs, data, runners, correctness check, FLOPs, env.

Both entry points, ``test_bench_kernels.py`` (pytest-benchmark) and ``report.py`` (one markdown
table), import this module; nothing here times anything.

A *runner* is a zero-argument closure that does one full call of one implementation on one fixed
problem and returns its outputs as a dict of NumPy arrays (``OUTPUT_KEYS`` names them). The
implementations:

    rnncore     the C++ kernels: rnncore.<cell>_forward/_backward, or the rnncore.RNN/LSTM/GRU
                layer classes for stacks (num_layers > 1)
    reference   rnncore.reference, the NumPy oracle of the kernels (a Python loop over time)
    torch       torch.nn.RNN/LSTM/GRU with the same weights, torch.set_num_threads matched

"fwd" is inference (no cache kept; torch under no_grad); "fwdbwd" is a training forward followed
by the backward of the same upstream gradients dy, dh_n (, dc_n) for every implementation.
Before anything is timed its outputs are compared with the float64 reference on the same
float32 inputs (``check``), and a mismatch raises.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import rnncore
from rnncore import reference

Outputs = dict[str, np.ndarray]
Runner = Callable[[], Outputs]

IMPLS = ("rnncore", "reference", "torch")
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
    """A problem size: sequence length T, batch B, input size D, hidden size H, layers L."""

    name: str
    T: int
    B: int
    D: int
    H: int
    L: int = 1

    @property
    def is_stack(self) -> bool:
        """Whether this config runs a multi-layer stack (the layer classes) or one cell."""
        return self.L > 1

    def __str__(self) -> str:
        stack = f", L={self.L}" if self.is_stack else ""
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
    )
}


def flops(cell: Cell, cfg: Config, mode: str) -> float:
    """Floating-point operations of the matrix products: forward 2·T·B·(D+H)·G·H per layer.

    The backward does two products of the forward's size (dx/dh and dW), so fwd+bwd is 3×.
    """
    total = 0.0
    for layer in range(cfg.L):
        d_in = cfg.D if layer == 0 else cfg.H
        total += 2.0 * cfg.T * cfg.B * (d_in + cfg.H) * cell.gates * cfg.H
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
    """

    cell: Cell
    cfg: Config
    layers: tuple[dict[str, np.ndarray], ...]  # per layer: w_ih (G*H, D_in), w_hh (G*H, H),
    #                                            b_ih (G*H,), b_hh (G*H,)
    x: np.ndarray  # (T, B, D)
    dy: np.ndarray  # (T, B, H)
    h0: np.ndarray | None = None  # (B, H), single layer only
    c0: np.ndarray | None = None  # (B, H), LSTM single layer only
    dh: np.ndarray | None = None  # (B, H) dL/dh_n, single layer only
    dc: np.ndarray | None = None  # (B, H) dL/dc_n, LSTM single layer only

    @property
    def states(self) -> tuple[np.ndarray | None, ...]:
        """Initial states in the functional API's argument order: (h0,) or (h0, c0)."""
        return (self.h0, self.c0) if self.cell.has_c else (self.h0,)

    @property
    def dstates(self) -> tuple[np.ndarray | None, ...]:
        """Final-state gradients in the backward's argument order: (dh,) or (dh, dc)."""
        return (self.dh, self.dc) if self.cell.has_c else (self.dh,)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights under PyTorch's names (weight_ih_l0, weight_hh_l0, bias_ih_l0, ...)."""
        names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
        return {
            f"{names[k]}_l{i}": v for i, layer in enumerate(self.layers) for k, v in layer.items()
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
        )


@functools.lru_cache(maxsize=4)
def make_problem(cell_name: str, config_name: str) -> Problem:
    """The float32 problem of a cell at a config, the same on every call and machine.

    Weights follow PyTorch's init, U(-1/sqrt(H), 1/sqrt(H)); inputs, initial states and
    upstream gradients are standard normal.
    """
    cell, cfg = CELLS[cell_name], CONFIGS[config_name]
    rng = np.random.default_rng(SEED)
    T, B, D, H, G = cfg.T, cfg.B, cfg.D, cfg.H, cell.gates
    k = 1.0 / np.sqrt(H)
    f32 = np.float32
    layers = []
    for layer in range(cfg.L):
        d_in = D if layer == 0 else H
        layers.append(
            {
                "w_ih": rng.uniform(-k, k, (G * H, d_in)).astype(f32),
                "w_hh": rng.uniform(-k, k, (G * H, H)).astype(f32),
                "b_ih": rng.uniform(-k, k, G * H).astype(f32),
                "b_hh": rng.uniform(-k, k, G * H).astype(f32),
            }
        )
    x = rng.standard_normal((T, B, D), f32)
    dy = rng.standard_normal((T, B, H), f32)
    if cfg.is_stack:
        return Problem(cell, cfg, tuple(layers), x, dy)

    def state() -> np.ndarray:
        return rng.standard_normal((B, H), f32)

    h0, dh = state(), state()
    c0, dc = (state(), state()) if cell.has_c else (None, None)
    return Problem(cell, cfg, tuple(layers), x, dy, h0, c0, dh, dc)


def output_keys(cell: Cell, cfg: Config, mode: str) -> tuple[str, ...]:
    """The outputs every runner of (cell, cfg, mode) returns, and that check compares.

    Stacks compare y and dx only: the layer classes' state and weight-gradient containers are
    their own business, and dx already depends on every layer's backward.
    """
    if cfg.is_stack:
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
    what the imported rnncore lacks is skipped with its name.
    """
    if impl == "rnncore":
        # Stacks need the layer class and the cell's kernels too: a layer class may fall back to
        # the NumPy reference while a kernel is missing, which is not worth timing as rnncore.
        names = [cell.name.upper()] if cfg.is_stack else []
        names += [f"{cell.name}_forward", f"{cell.name}_backward"]
        missing = [f"rnncore.{name}" for name in names if not hasattr(rnncore, name)]
        return f"{', '.join(missing)} not in this rnncore build" if missing else None
    if impl == "torch":
        return None if torch_installed() else "torch is not installed"
    if impl == "reference":
        return None
    raise ValueError(f"unknown implementation {impl!r}, expected one of {IMPLS}")


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
        return _torch_runner(problem, mode)
    module = rnncore if impl == "rnncore" else reference
    if problem.cfg.is_stack:
        return _stack_runner(module, problem, mode)
    return _functional_runner(module, problem, mode)


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


# --------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------


class CorrectnessError(AssertionError):
    """An implementation's outputs differ from the float64 reference beyond the tolerance."""


@functools.lru_cache(maxsize=2)
def oracle(cell_name: str, config_name: str) -> Outputs:
    """Every output of the float64 reference on the float32 problem's values (fwd+bwd)."""
    problem = make_problem(cell_name, config_name).astype(np.float64)
    runner = _stack_runner if problem.cfg.is_stack else _functional_runner
    return runner(reference, problem, "fwdbwd")()


def tolerance(cfg: Config) -> float:
    """Largest accepted relative error of a float32 result against the float64 reference.

    The bound of tests/test_rnn.py: each step's outputs are dot products of length D_in + H
    (rounding error up to (D_in + H)·u relative to their scale, u = 2^-24) and errors add up
    over at most T steps of the gradients, so 4·u·(D + L·H + T), with a floor of 64·u. Observed
    errors of rnncore, the float32 reference and torch sit 20-200× below it, for every cell; a
    wrong formula or a dropped term is off by orders of magnitude more.
    """
    u = 2.0**-24
    return max(64.0, 4.0 * (cfg.D + cfg.L * cfg.H + cfg.T)) * u


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|: the error relative to the scale of the exact answer b."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b64), initial=0.0)), 1e-30)
    return float(np.max(np.abs(a64 - b64), initial=0.0)) / scale


def compare(
    got: Mapping[str, Any], want: Mapping[str, np.ndarray], keys: tuple[str, ...], tol: float
) -> list[str]:
    """What is wrong with got against want on keys (missing, shape, NaN/inf, error > tol)."""
    problems = []
    for key in keys:
        if key not in got or got[key] is None:
            problems.append(f"{key}: missing")
            continue
        a = np.asarray(got[key])
        if a.shape != want[key].shape:
            problems.append(f"{key}: shape {a.shape}, expected {want[key].shape}")
        elif not np.all(np.isfinite(a)):
            problems.append(f"{key}: not finite")
        elif (err := rel_err(a, want[key])) > tol:
            problems.append(f"{key}: relative error {err:.3g} > {tol:.3g}")
    return problems


def check(impl: str, got: Outputs, cell: Cell, cfg: Config, mode: str) -> float:
    """Raise CorrectnessError unless got matches the float64 reference; return the max error."""
    want = oracle(cell.name, cfg.name)
    keys = output_keys(cell, cfg, mode)
    problems = compare(got, want, keys, tolerance(cfg))
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
    (which must stay at 1 thread: rnncore splits work with OpenMP) nor torch's.
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
        and not _under(info["filepath"], torch_module() if torch_installed() else None)
    ]
    if libs:
        threadpool_limits(limits=dict.fromkeys(libs, n))
    return bool(libs)


def set_threads(n: int) -> dict[str, int | None]:
    """Run every implementation on n threads where it can be told; returns what was set.

    "reference" is None when numpy's BLAS could not be limited (threadpoolctl not installed):
    it then uses its own default, usually every CPU.
    """
    rnncore.set_num_threads(n)
    torch = torch_module() if torch_installed() else None
    if torch is not None:
        torch.set_num_threads(n)
    return {
        "rnncore": rnncore.get_num_threads(),
        "torch": torch.get_num_threads() if torch is not None else None,
        "reference": n if _limit_numpy_blas(n) else None,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What a benchmark result depends on besides the code: BLAS core, CPU, versions, threads."""
    torch = torch_module() if torch_installed() else None
    blas = rnncore.blas_info()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": available_cpus(),
        "rnncore": rnncore.__version__,
        "corename": blas["corename"],
        "blas_config": blas.get("config"),
        "rnncore_threads": rnncore.get_num_threads(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "numpy": np.__version__,
        "threadpoolctl": importlib.util.find_spec("threadpoolctl") is not None,
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python": platform.python_version(),
    }
