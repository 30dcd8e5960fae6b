"""Time rnncore against the NumPy reference and PyTorch side by side; print one markdown table.

    python benchmarks/report.py                     # all cells, fwd+bwd, 1 and 2 threads
    python benchmarks/report.py --cells rnn --configs charrnn,medium --threads 2 --fwd
    python benchmarks/report.py --json out.json --plot out.png

Every implementation runs in its own worker process (``workers.py``), started once per run and
driven by this one over pipes: rnncore and torch twice, with the environment as found and with
glibc's allocator tuned (``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``,
set before the worker's interpreter starts), the NumPy reference and ``rnncore-full`` as found;
the GEMM ceilings in one more. A worker loads only its own library (the torch workers torch,
the others not), sets its thread count itself, and blocks on its pipe while another is timed.

For each cell × config × pass × thread count, the float64 reference's outputs are computed
once here and handed to the workers (a file); each worker builds the same seed-fixed problem,
makes its warm-up call and checks its outputs against them (a mismatch stops the run with exit
status 1, as does a worker that fails or dies). Then rounds: in round r the workers, in an order
rotated by r, are asked one at a time for one sample, the mean of enough calls to last
--min-time after --settle seconds of untimed calls (another worker's idle OpenMP threads spin
for a while after it finished and would slow the first calls). The number of rounds is
--repeats, fewer when a round is so slow that --repeats of them would pass --budget seconds,
but never fewer than 3. Times are medians of the samples; ratios are medians of the per-round
ratios (other's sample / rnncore's sample of the same round), rnncore and torch each at the
faster of its two allocator settings. Timings on small shared machines vary by ±30% between
runs: compare the ratios within one table, not absolute times across runs.

Configs with random lengths (charrnn-L2-len, medium-L2-len, their -bi twins) time rnncore's
kernels layer by layer with lengths= (and reverse=True), the reference the same way, and torch
on a PackedSequence built before the timing; alongside them, in the same rounds, rnncore on the
same batch with every length T (``rnncore-full``): the table under the main one gives the
random-length batch's time over the full-length one.

Cells or configs that the imported rnncore build lacks are skipped (and listed under the table);
torch's columns are empty when torch is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import common
import workers
from workers import AS_FOUND, MALLOC_TUNED, WAVEFRONT, CpuWatch

MIN_ROUNDS = 3
REQUEST_TIMEOUT = 1800.0  # seconds a worker may take to answer one request before it is killed

# The allocator settings each implementation runs under, one worker process each.
IMPL_SETTINGS: dict[str, tuple[str, ...]] = {
    "rnncore": (AS_FOUND, MALLOC_TUNED),
    "reference": (AS_FOUND,),
    "torch": (AS_FOUND, MALLOC_TUNED),
    common.FULL: (AS_FOUND,),
}
CEILING = "ceiling"  # the worker that measures the GEMM ceilings


def labels_of(impl: str) -> list[str]:
    """The worker labels (table columns) of an implementation: one per allocator setting."""
    return [workers.label(impl, s) for s in IMPL_SETTINGS[impl]]


def columns() -> list[str]:
    """The main table's time columns: every worker label of every implementation."""
    return [lb for impl in common.IMPLS for lb in labels_of(impl)]


def add_wavefront_worker() -> None:
    """--wavefront: one more rnncore worker, its layer objects on the wavefront schedule."""
    if WAVEFRONT not in IMPL_SETTINGS["rnncore"]:
        IMPL_SETTINGS["rnncore"] = (*IMPL_SETTINGS["rnncore"], WAVEFRONT)


@dataclass
class Measurement:
    """The timings of every worker on one cell × config × pass × thread count.

    Keyed by worker label: "rnncore", "rnncore (malloc tuned)", "reference", "torch", ...
    """

    cell: str
    config: str
    mode: str
    threads: int
    flops: float
    threads_set: dict[str, int | None] = field(default_factory=dict)  # what each worker's
    #                                   library reports after set_threads (None: not limited)
    samples_s: dict[str, list[float]] = field(default_factory=dict)  # seconds per call, by round
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    max_rel_err: dict[str, float] = field(default_factory=dict)  # against float64 reference
    cpu_others: dict[str, float] = field(default_factory=dict)  # CpuWatch.others() while timing

    @property
    def disturbed(self) -> bool:
        """Whether other processes used a noticeable share of the CPUs during the measurement."""
        return sum(self.cpu_others.values()) > BUSY_WARNING

    def median_ms(self, name: str) -> float | None:
        """Median time of one call of a worker in milliseconds, None if it did not run."""
        samples = self.samples_s.get(name)
        return statistics.median(samples) * 1e3 if samples else None

    def best(self, impl: str) -> str | None:
        """The label of impl's faster allocator setting here (None: impl did not run)."""
        return workers.fastest(self.samples_s, labels_of(impl))

    def best_ms(self, impl: str) -> float | None:
        """impl's median time at its faster setting, in milliseconds."""
        name = self.best(impl)
        return None if name is None else self.median_ms(name)

    def ratio(self, other: str, ours: str = "rnncore") -> float | None:
        """Median of the per-round ratios other / ours, each at its faster setting (None if
        either did not run): how many times faster ours is."""
        a, b = self.best(other), self.best(ours)
        if a is None or b is None:
            return None
        return workers.paired_ratio(self.samples_s[a], self.samples_s[b])

    def spread(self, name: str) -> float:
        """(slowest - fastest) / median of a worker's samples: how noisy the measurement was."""
        samples = self.samples_s[name]
        return (max(samples) - min(samples)) / statistics.median(samples)


# --------------------------------------------------------------------------------------------
# The workers' side
# --------------------------------------------------------------------------------------------


def _call_time(run: common.Runner) -> float:
    """Seconds one call of run takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class _Worker:
    """What a report worker process does for one implementation (see worker_handlers)."""

    def __init__(self, impl: str) -> None:
        if impl != CEILING and impl not in IMPL_SETTINGS:
            raise ValueError(
                f"unknown implementation {impl!r}, expected one of {[*IMPL_SETTINGS, CEILING]}"
            )
        self.impl = impl
        self.runners: dict[tuple[str, str, str], common.Runner] = {}
        self.runner: common.Runner | None = None
        self.oracles: dict[str, dict[str, np.ndarray]] = {}

    def hello(self) -> dict[str, Any]:
        """Where this worker runs (before any set_threads: the libraries' default threads)."""
        return workers.worker_environment(self.impl)

    def setup(
        self, cell: str, config: dict[str, Any], mode: str, threads: int, oracle: str
    ) -> dict[str, Any]:
        """Set threads, build (or reuse) the runner, make the warm-up call, check its outputs
        against the reference's in the file oracle; the time of one call, for the sample size."""
        cfg = _register(common.Config(**config))
        threads_set = common.set_threads(threads, self.impl)
        key = (cell, cfg.name, mode)
        if key not in self.runners:
            self.runners[key] = common.make_runner(
                self.impl, common.make_problem(cell, cfg.name), mode
            )
        run = self.runner = self.runners[key]
        if oracle not in self.oracles:
            with np.load(oracle) as f:
                self.oracles[oracle] = {k: f[k] for k in f.files}
        start = time.perf_counter()
        outputs = run()  # warm-up call, whose outputs are the ones checked
        first = time.perf_counter() - start
        err = common.check(self.impl, outputs, common.CELLS[cell], cfg, mode, self.oracles[oracle])
        # The first call pays one-off costs (allocation, lazy init); time a second one unless
        # the call is so long that those do not matter for the estimate.
        estimate = first if first > 1.0 else _call_time(run)
        return {"estimate_s": estimate, "max_rel_err": err, "threads_set": threads_set}

    def sample(self, settle: int, calls: int) -> dict[str, float]:
        """settle untimed calls, then the mean seconds of calls timed ones (gc off meanwhile)."""
        run = self.runner
        if run is None:
            raise RuntimeError("'sample' before 'setup': there is nothing to time")
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as timeit does: a collection inside one sample is noise, not cost
        try:
            for _ in range(settle):
                run()
            start = time.perf_counter()
            for _ in range(calls):
                run()
            return {"seconds": (time.perf_counter() - start) / calls}
        finally:
            if gc_was_enabled:
                gc.enable()

    def ceiling(
        self, M: int, N: int, K: int, kernel: str, threads: int, min_time: float, runs: int
    ) -> dict[str, Any]:
        """The best GFLOP/s of runs probes of one GEMM (rnncore._core._gemm_probe)."""
        from rnncore import _core

        probes = [_core._gemm_probe(M, N, K, kernel, threads, min_time) for _ in range(runs)]
        return {"gflops": max(r["gflops"] for r in probes), "kernel": probes[0]["kernel"]}


def _register(cfg: common.Config) -> common.Config:
    """Make a config the parent sent known here (tests add configs to the parent's table)."""
    known = common.CONFIGS.get(cfg.name)
    if known is not None and known != cfg:
        raise ValueError(f"config {cfg.name!r}: the parent sent {cfg}, this worker knows {known}")
    common.CONFIGS[cfg.name] = cfg
    return cfg


def worker_handlers(impl: str) -> dict[str, Callable[..., Any]]:
    """The requests a report worker of impl serves (workers.serve calls this)."""
    w = _Worker(impl)
    if impl == CEILING:
        return {"hello": w.hello, "ceiling": w.ceiling}
    return {"hello": w.hello, "setup": w.setup, "sample": w.sample}


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

BUSY_WARNING = 0.1  # share of the CPUs used by other processes that makes timings suspect


def measure(
    m: Measurement,
    team: list[workers.Worker],
    args: argparse.Namespace,
    oracles: dict[bool, Path],
    pids: list[int],
) -> None:
    """Set every worker up and check it against the reference, then time them in rounds.

    pids: every worker process of the run (CpuWatch counts their CPU time as ours, the idle
    ones' included), not only the team's."""
    cfg = common.CONFIGS[m.config]
    estimate = {}
    for w in team:
        info = w.request(
            "setup",
            REQUEST_TIMEOUT,
            cell=m.cell,
            config=dataclasses.asdict(cfg),
            mode=m.mode,
            threads=m.threads,
            oracle=str(oracles[w.impl == common.FULL]),
        )
        estimate[w.label] = info["estimate_s"]
        m.max_rel_err[w.label] = info["max_rel_err"]
        m.threads_set[w.label] = info["threads_set"][w.impl]

    calls = {i: max(1, math.ceil(args.min_time / max(t, 1e-9))) for i, t in estimate.items()}
    # Untimed calls before each sample, lasting --settle: when one worker follows another, the
    # other's idle BLAS/OpenMP threads go on spinning for a while (numpy's OpenBLAS for ~0.1 s)
    # and would steal a core from the first calls of the sample.
    settle = {i: math.ceil(args.settle / max(t, 1e-9)) for i, t in estimate.items()}
    round_s = sum((calls[i] + settle[i]) * estimate[i] for i in estimate)
    rounds = max(MIN_ROUNDS, min(args.repeats, int(args.budget // round_s)))
    requests = {i: {"settle": settle[i], "calls": calls[i]} for i in estimate}
    watch = CpuWatch(pids)
    m.samples_s = workers.run_rounds(team, rounds, requests)
    m.calls_per_sample, m.cpu_others = calls, watch.others()


CEILING_SQUARE = 1024  # the plain sgemm ceiling: M = N = K
CEILING_MIN_TIME = 0.2  # seconds per probe
CEILING_RUNS = 3  # probes per figure, the best reported


def ceiling_shapes(configs: list[common.Config]) -> list[tuple[str, int, int, int]]:
    """(label, M, N, K) of the GEMMs whose ceilings the report measures.

    A large square product (the machine's plain sgemm ceiling) and, for each config's hidden
    size, the recurrent step of an LSTM: M = B rows of h, N = 4H gate columns, K = H.
    """
    n = CEILING_SQUARE
    shapes = [(f"sgemm {n}×{n}×{n}", n, n, n)]
    for cfg in configs:
        if cfg.by_kernels and any(s[1:] == (cfg.B, 4 * cfg.H, cfg.H) for s in shapes):
            continue  # a random-length twin of a config already listed: the same step
        shape = (f"LSTM step {cfg.name} (B={cfg.B}, 4H={4 * cfg.H}, H={cfg.H})",)
        shapes.append((*shape, cfg.B, 4 * cfg.H, cfg.H))
    return shapes


def measure_ceilings(args: argparse.Namespace, worker: workers.Worker) -> list[dict[str, Any]]:
    """GFLOP/s of each ceiling shape, OpenBLAS (as found) and the packed micro-kernel, per
    thread count, measured in the ceiling worker; the best of CEILING_RUNS probes of about
    CEILING_MIN_TIME s each (a ceiling: the best is the figure)."""
    rows = []
    for label, M, N, K in ceiling_shapes(args.configs):
        for n in args.threads:
            row: dict[str, Any] = {"shape": label, "M": M, "N": N, "K": K, "threads": n}
            for kernel in ("blas", "packed"):
                probe = worker.request(
                    "ceiling",
                    REQUEST_TIMEOUT,
                    M=M,
                    N=N,
                    K=K,
                    kernel=kernel,
                    threads=n,
                    min_time=CEILING_MIN_TIME,
                    runs=CEILING_RUNS,
                )
                row[kernel], row[f"{kernel}_name"] = probe["gflops"], probe["kernel"]
            rows.append(row)
            print(
                f"ceiling {label} {n} thread(s): OpenBLAS {row['blas']:.1f}, "
                f"{row['packed_name']} {row['packed']:.1f} GFLOP/s",
                file=sys.stderr,
                flush=True,
            )
    return rows


def best_ceilings(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ceilings measured before and after the timings, each kernel's better figure of the
    two (rows in the same order: the same shapes and thread counts)."""
    rows = []
    for a, b in zip(before, after, strict=True):
        rows.append(a | {k: max(a[k], b[k]) for k in ("blas", "packed")})
    return rows


def step_ceiling_for(
    ceilings: list[dict[str, Any]], cfg: common.Config, threads: int
) -> float | None:
    """The packed micro-kernel's GFLOP/s on the config's LSTM step product (B, 4H, H) at a
    thread count: the ceiling of the recurrent product the cells run every step."""
    for row in ceilings:
        if (row["M"], row["N"], row["K"]) == (cfg.B, 4 * cfg.H, cfg.H) and row[
            "threads"
        ] == threads:
            return row["packed"]
    return None


def ceiling_for(ceilings: list[dict[str, Any]], threads: int) -> float | None:
    """The sgemm ceiling at a thread count: the better kernel on the square shape."""
    for row in ceilings:
        if row["M"] == row["N"] == row["K"] == CEILING_SQUARE and row["threads"] == threads:
            return max(row["blas"], row["packed"])
    return None


def worker_specs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(implementation, allocator setting) of every worker process the run needs."""
    impls = [i for i in common.IMPLS if i != "torch" or common.torch_installed()]
    if any(cfg.varlen for cfg in args.configs):
        impls.append(common.FULL)
    specs = [(impl, setting) for impl in impls for setting in IMPL_SETTINGS[impl]]
    return specs + ([] if args.no_ceiling else [(CEILING, AS_FOUND)])


def _write_oracle(cell: str, config: str, full_length: bool, folder: Path) -> Path:
    """The float64 reference's outputs saved for the workers (computed once, here)."""
    path = folder / f"oracle-{cell}-{config}{'-full' if full_length else ''}.npz"
    if not path.exists():
        np.savez(path, **common.oracle(cell, config, full_length))
    return path


def run_all(
    args: argparse.Namespace, pool: workers.Pool, folder: Path
) -> tuple[list[Measurement], list[str]]:
    """Every requested measurement, and a line for each cell × config that was skipped."""
    measurements, skipped = [], []
    modes = ["fwdbwd", "fwd"] if args.fwd else ["fwdbwd"]
    for cell in args.cells:
        for cfg in args.configs:
            reason = common.unavailable("rnncore", cell, cfg)
            if reason is not None:
                skipped.append(f"{cell.name} {cfg.name}: {reason}")
                continue
            impls = [i for i in common.IMPLS if common.unavailable(i, cell, cfg) is None]
            if cfg.varlen:
                impls.append(common.FULL)  # the same batch at full length, same rounds
            team = [pool[lb] for impl in impls for lb in labels_of(impl) if lb in pool]
            oracles = {
                full: _write_oracle(cell.name, cfg.name, full, folder)
                for full in ([False, True] if cfg.varlen else [False])
            }
            for mode in modes:
                for n in args.threads:
                    m = Measurement(cell.name, cfg.name, mode, n, common.flops(cell, cfg, mode))
                    start = time.perf_counter()
                    measure(m, team, args, oracles, pool.pids())
                    times = ", ".join(f"{i} {m.median_ms(i):.3g} ms" for i in m.samples_s)
                    print(
                        f"{cell.name} {cfg.name} {common.MODE_LABELS[mode]} {n} thread(s): "
                        f"{times} [{time.perf_counter() - start:.1f} s]",
                        file=sys.stderr,
                        flush=True,
                    )
                    measurements.append(m)
    return measurements, skipped


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    """A time in ms with about three significant digits, or '–' when there is none."""
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _times(m: Measurement, impl: str) -> list[str]:
    """impl's median ms per allocator setting, the faster in bold when there are two."""
    best = m.best(impl)
    cells = []
    for name in labels_of(impl):
        text = _ms(m.median_ms(name))
        both = len(labels_of(impl)) > 1 and text != "–"
        cells.append(f"**{text}**" if both and name == best else text)
    return cells


def _ratio(value: float | None) -> str:
    """A ratio with two decimals, or '–' when there is none."""
    return "–" if value is None else f"{value:.2f}"


def command_line() -> str:
    """The command this process was started with, interpreter as its bare name."""
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def render(
    measurements: list[Measurement],
    skipped: list[str],
    env: dict[str, Any],
    args: argparse.Namespace,
    ceilings: list[dict[str, Any]] | None = None,
) -> str:
    """The markdown report: header lines, one table, notes."""
    reference_limited = all(m.threads_set.get("reference") is not None for m in measurements)
    passes = " and ".join(
        common.MODE_LABELS[m] for m in (["fwdbwd", "fwd"] if args.fwd else ["fwdbwd"])
    )
    hellos = env["workers"]
    lines = [
        f"## rnncore benchmark: {passes}, float32",
        "",
        f"- command: `{command_line()}`",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpus']} CPUs available); "
        f"threads: {', '.join(map(str, args.threads))}; numpy {env['numpy']}; "
        f"Python {env['python']}",
        *workers.header_lines(hellos),
    ]
    if not any(h["impl"] == "torch" for h in hellos.values()):
        lines.append("- torch not installed: its columns are empty")
    lines += [
        f"- other processes used {env['cpu_during_run']['others']:.0%} of the CPUs during the run"
        f" (hypervisor steal {env['cpu_during_run']['steal']:.0%})",
        "- processes: each column's implementation in its own worker process (benchmarks/"
        "workers.py), started once for the run; (malloc tuned): that worker started with "
        + " ".join(f"`{k}={v}`" for k, v in workers.MALLOC_TUNING.items())
        + "; the GEMM ceilings in one more worker"
        + (
            "; (wavefront): rnncore's layer objects with `wavefront = True` (rnncore.wavefront: "
            "the layers at once, each on its own thread; unidirectional LSTM stacks without "
            "lengths, the others run the default schedule)"
            if WAVEFRONT in IMPL_SETTINGS["rnncore"]
            else ""
        ),
        "- threads: rnncore.set_num_threads(n), torch.set_num_threads(n), each in its worker; "
        "reference (NumPy): "
        + (
            "its BLAS limited to n with threadpoolctl"
            if reference_limited
            else "**not limited** (threadpoolctl not installed): numpy's BLAS uses its default "
            "thread count in every row"
        ),
        f"- time: median of {MIN_ROUNDS}-{args.repeats} rounds (budget {args.budget:g} s; in "
        f"each round every worker, in rotating order, takes one sample of ≥ {args.min_time:g} s "
        f"after {args.settle:g} s of untimed calls); every worker checked against the float64 "
        "reference first",
        "- GFLOP/s: matrix-product FLOPs (fwd 2·T·B·(D+H)·G·H per layer, fwd+bwd 3×) / rnncore's "
        "time at its faster setting (**bold**); × reference, × torch: the median over rounds of "
        "(their sample / rnncore's sample of the same round), rnncore and torch each at its "
        "faster setting (> 1: rnncore is faster)",
        "- configs: " + "; ".join(str(c) for c in args.configs),
    ]
    if any(c.varlen for c in args.configs):
        lines.append(
            "- random lengths (`-len`, seed-fixed, U[1, T]): rnncore = its kernels layer by layer "
            "with lengths= (a bidirectional layer: a forward and a reverse=True call, outputs "
            "concatenated), the reference likewise; torch = nn.RNN/LSTM/GRU(num_layers=2, "
            "bidirectional=…) on a PackedSequence built before timing (pack_padded_sequence, "
            "enforce_sorted=False), timed: forward, pad_packed_sequence of y, backward. GFLOP/s "
            "count the steps that run (sum(lengths) for T·B; 2 directions, 2H inputs above "
            "layer 0); y and dx checked, and exactly 0 past each length"
        )
    lines.append("")
    head = ["cell", "config", "threads", *(f"{c} ms" for c in columns())]
    head += ["rnncore GFLOP/s", "% of ceiling", "% of step ceiling", "× reference", "× torch"]
    if args.fwd:
        head.insert(2, "pass")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in measurements:
        ours = m.best_ms("rnncore")
        gflops = m.flops / (ours * 1e-3) / 1e9 if ours else None
        threads = f"{m.threads} †" if m.disturbed else str(m.threads)
        row = [m.cell, m.config, threads]
        row += [t for impl in common.IMPLS for t in _times(m, impl)]
        ceiling = ceiling_for(ceilings or [], m.threads)
        row.append(f"{gflops:.1f}" if gflops else "–")
        row.append(f"{gflops / ceiling:.0%}" if gflops and ceiling else "–")
        step = step_ceiling_for(ceilings or [], common.CONFIGS[m.config], m.threads)
        row.append(f"{gflops / step:.0%}" if gflops and step else "–")
        row += [_ratio(m.ratio("reference")), _ratio(m.ratio("torch"))]
        if args.fwd:
            row.insert(2, common.MODE_LABELS[m.mode])
        lines.append("| " + " | ".join(row) + " |")

    if ceilings:
        kernel = ceilings[0]["packed_name"]
        corename = hellos[CEILING]["corename"]
        lines += [
            "",
            f"GEMM ceilings, same run, own worker process (float32 GFLOP/s, best of "
            f"{CEILING_RUNS} before and {CEILING_RUNS} after the timings; `% of ceiling` above "
            f"is rnncore's GFLOP/s over the better kernel's sgemm {CEILING_SQUARE}³ figure at "
            f"the same thread count, `% of step ceiling` over the packed kernel's figure on the "
            f"config's LSTM step product). Each thread owns a slice "
            f"of the N columns in one parallel region with a barrier after each product, as the "
            f"kernels run; OpenBLAS as found (corename {corename}, one thread per slice) and "
            f"rnncore's packed micro-kernel ({kernel}):",
            "",
            "| GEMM (M×N×K) | threads | OpenBLAS | packed |",
            "|---|---|---|---|",
        ]
        for c in ceilings:
            lines.append(f"| {c['shape']} | {c['threads']} | {c['blas']:.1f} | {c['packed']:.1f} |")
    lines += _lengths_table(measurements, args)
    noisy = [
        f"{m.cell} {m.config} {common.MODE_LABELS[m.mode]} {m.threads}t {i} ({m.spread(i):.0%})"
        for m in measurements
        for i in m.samples_s
        if m.spread(i) > 0.5
    ]
    disturbed = [m for m in measurements if m.disturbed]
    if disturbed:
        worst = max(sum(m.cpu_others.values()) for m in disturbed)
        lines += [
            "",
            f"† **Not trustworthy**: other processes (or the hypervisor) took more than "
            f"{BUSY_WARNING:.0%} of the CPUs while these rows were measured (up to {worst:.0%}); "
            "with every core busy, threads that wait for each other slow down by 10-1000×. "
            "Run again on an idle machine.",
        ]
    if noisy:
        lines += ["", "Noisy (slowest − fastest round > 50% of the median): " + ", ".join(noisy)]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines)


LENGTHS_TARGET = 0.6  # issue 12: a random-length batch costs at most this share of a full one


def _lengths_table(measurements: list[Measurement], args: argparse.Namespace) -> list[str]:
    """For configs with random lengths: rnncore's time with them over its time at full length.

    Both are the same kernels on the same batch, both workers as found, timed in the same
    rounds; the full-length run (``rnncore-full``) passes lengths=None. The ratio is the median
    of the per-round ratios. Empty when there are none.
    """
    rows = [m for m in measurements if m.median_ms(common.FULL) and m.median_ms("rnncore")]
    if not rows:
        return []
    lines = [
        "",
        "Random lengths against full length, rnncore as found (the same kernels on the same "
        "batch with lengths=None, timed in the same rounds; ratio: median of the per-round "
        f"ratios; target ≤ {LENGTHS_TARGET:g}×):",
        "",
    ]
    head = ["cell", "config", "threads", "mean length / T", "ms, lengths", "ms, all T", "ratio"]
    if args.fwd:
        head.insert(2, "pass")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        cfg = common.CONFIGS[m.config]
        lengths = common.lengths_of(cfg)
        share = float(lengths.mean()) / cfg.T if lengths is not None else 1.0
        ratio = workers.paired_ratio(m.samples_s["rnncore"], m.samples_s[common.FULL])
        mark = "" if ratio <= LENGTHS_TARGET else " ✗"
        threads = f"{m.threads} †" if m.disturbed else str(m.threads)
        row = [m.cell, m.config, threads, f"{share:.2f}"]
        row += [_ms(m.median_ms("rnncore")), _ms(m.median_ms(common.FULL)), f"{ratio:.2f}{mark}"]
        if args.fwd:
            row.insert(2, common.MODE_LABELS[m.mode])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_plot(measurements: list[Measurement], env: dict[str, Any], path: Path) -> None:
    """A bar chart of rnncore's speed-up over the reference and torch, per config (the
    medians of per-round ratios, each implementation at its faster allocator setting)."""
    import matplotlib  # optional: checked for before the run starts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((m.cell, m.mode) for m in measurements))  # in the table's order
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, (cell, mode) in zip(axes[:, 0], panels, strict=True):
        ms = [m for m in measurements if (m.cell, m.mode) == (cell, mode)]
        configs = list(dict.fromkeys(m.config for m in ms))
        series = [(b, n) for b in ("reference", "torch") for n in sorted({m.threads for m in ms})]
        width = 0.8 / len(series)
        for k, (baseline, n) in enumerate(series):
            heights = []
            for config in configs:
                m = next((m for m in ms if m.config == config and m.threads == n), None)
                ratio = m.ratio(baseline) if m else None
                heights.append(ratio or 0.0)
            xs = [c + (k - (len(series) - 1) / 2) * width for c in range(len(configs))]
            ax.bar(xs, heights, width, label=f"vs {baseline}, {n} thread(s)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(configs)), configs)
        ax.set_ylabel("speed-up of rnncore (×)")
        ax.set_title(f"{cell} {common.MODE_LABELS[mode]}")
        ax.legend(fontsize="small")
    corename = env["workers"]["rnncore"]["corename"]
    fig.suptitle(f"rnncore, corename {corename}, {env['cpu']}", fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the suptitle
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _names(table: dict[str, Any], what: str) -> Any:
    """An argparse type: a comma-separated list of keys of table, as its values."""

    def parse(text: str) -> list[Any]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from "
                + ", ".join(table)
            )
        return [table[n] for n in names]

    return parse


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Time rnncore, the NumPy reference and torch side by side (markdown table).",
    )
    parser.add_argument(
        "--cells",
        type=_names(common.CELLS, "cell"),
        default=list(common.CELLS.values()),
        help="comma-separated cells, from " + ", ".join(common.CELLS) + " (default: all)",
    )
    parser.add_argument(
        "--configs",
        type=_names(common.CONFIGS, "config"),
        default=list(common.CONFIGS.values()),
        help="comma-separated configs, from " + ", ".join(common.CONFIGS) + " (default: all)",
    )
    parser.add_argument(
        "--threads",
        type=workers.thread_counts,
        default=[1, 2],
        help="comma-separated thread counts (1,2)",
    )
    parser.add_argument("--fwd", action="store_true", help="also time the forward pass alone")
    parser.add_argument(
        "--wavefront",
        action="store_true",
        help="also time rnncore's stacks on the wavefront schedule (its own worker)",
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="interleaved rounds per measurement (7; ≥ 3)"
    )
    parser.add_argument(
        "--min-time", type=_positive, default=0.05, help="seconds per sample, at least (0.05)"
    )
    parser.add_argument(
        "--budget",
        type=_positive,
        default=10.0,
        help="seconds per measurement beyond which rounds drop towards 3 (10)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.1,
        help="seconds of untimed calls before each sample, so that the previous "
        "implementation's threads stop spinning (0.1; 0: none)",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the GEMM ceiling measurements"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write raw results as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="bar chart of speed-ups")
    args = parser.parse_args(argv)
    if args.settle < 0:
        parser.error("--settle must be ≥ 0")
    if args.repeats < MIN_ROUNDS:
        parser.error(f"--repeats must be at least {MIN_ROUNDS}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed: pip install matplotlib")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table; 1 if a worker gave a wrong answer, failed or died."""
    args = parse_args(argv)
    saved = IMPL_SETTINGS["rnncore"]
    if args.wavefront:
        add_wavefront_worker()
    try:
        return run(args)
    finally:
        IMPL_SETTINGS["rnncore"] = saved


def run(args: argparse.Namespace) -> int:
    """main() after parsing: the workers, the measurements, the table (and the JSON, the plot)."""
    started = time.perf_counter()
    env = common.machine()
    try:
        with (
            workers.Pool("report", worker_specs(args)) as pool,
            tempfile.TemporaryDirectory(prefix="rnncore-report-") as folder,
        ):
            env["workers"] = {name: w.hello for name, w in pool.workers.items()}
            watch = CpuWatch(pool.pids())
            ceilings = [] if args.no_ceiling else measure_ceilings(args, pool[CEILING])
            measurements, skipped = run_all(args, pool, Path(folder))
            if ceilings:  # again after the timings: a passing slowdown must not lower a ceiling
                ceilings = best_ceilings(ceilings, measure_ceilings(args, pool[CEILING]))
            env["cpu_during_run"] = watch.others()
    except workers.WorkerError as error:  # WorkerMismatch: a wrong answer
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render(measurements, skipped, env, args, ceilings))
    if args.json:
        settings = vars(args) | {
            "cells": [c.name for c in args.cells],
            "configs": [c.name for c in args.configs],
        }
        payload = {
            "command": command_line(),
            "env": env,
            "settings": settings,
            "results": [asdict(m) for m in measurements],
            "skipped": skipped,
            "ceilings": ceilings,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if args.plot and measurements:
        write_plot(measurements, env, args.plot)
    print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
