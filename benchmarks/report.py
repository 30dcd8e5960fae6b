"""Time rnncore against the NumPy reference and PyTorch side by side; print one markdown table.

    python benchmarks/report.py                     # all cells, fwd+bwd, 1 and 2 threads
    python benchmarks/report.py --cells rnn --configs charrnn,medium --threads 2 --fwd
    python benchmarks/report.py --json out.json --plot out.png

Everything runs in one process. For each cell × config × pass × thread count, every
implementation is first called once and its outputs are checked against the float64 reference
(a mismatch stops the run with exit status 1), then timed in rounds that interleave the
implementations (their order rotating each round), each sample being the mean of enough calls
to last --min-time, after --settle seconds of untimed calls (when one implementation follows
another, the other's idle threads spin for a while and would slow the first calls); the table
shows the median of the rounds. The number of rounds is
--repeats, fewer when a round is so slow that --repeats of them would pass --budget seconds,
but never fewer than 3. Timings on small shared machines vary by ±30% between processes:
compare the ratios within one table, not absolute times across runs.

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
import gc
import importlib.util
import json
import math
import os
import resource
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common

MIN_ROUNDS = 3


@dataclass
class Measurement:
    """The timings of every implementation on one cell × config × pass × thread count."""

    cell: str
    config: str
    mode: str
    threads: int
    flops: float
    threads_set: dict[str, int | None]  # what each implementation was told (None: not limited)
    samples_s: dict[str, list[float]] = field(default_factory=dict)  # seconds per call, by round
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    max_rel_err: dict[str, float] = field(default_factory=dict)  # against float64 reference
    cpu_others: dict[str, float] = field(default_factory=dict)  # CpuWatch.others() while timing

    @property
    def disturbed(self) -> bool:
        """Whether other processes used a noticeable share of the CPUs during the measurement."""
        return sum(self.cpu_others.values()) > BUSY_WARNING

    def median_ms(self, impl: str) -> float | None:
        """Median time of one call of impl in milliseconds, None if impl did not run."""
        samples = self.samples_s.get(impl)
        return statistics.median(samples) * 1e3 if samples else None

    def spread(self, impl: str) -> float:
        """(slowest - fastest) / median of impl's samples: how noisy the measurement was."""
        samples = self.samples_s[impl]
        return (max(samples) - min(samples)) / statistics.median(samples)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

BUSY_WARNING = 0.1  # share of the CPUs used by other processes that makes timings suspect


class CpuWatch:
    """How much of the machine's CPU time went to other processes since the watch started.

    On a 2-core machine a second busy process wrecks every multi-threaded timing (threads that
    wait at a barrier for a descheduled partner), by factors of 10-1000, so the report says
    when that happened instead of printing such numbers as if they were real.
    """

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float, float]:
        """(wall s, CPU s busy on the machine, CPU s stolen by the hypervisor, our CPU s)."""
        tick = os.sysconf("SC_CLK_TCK")
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            fields = []
        # user nice system idle iowait irq softirq steal ...
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6) if i < len(fields)) / tick
        steal = (fields[7] if len(fields) > 7 else 0) / tick
        own = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), busy, steal, own.ru_utime + own.ru_stime

    def others(self) -> dict[str, float]:
        """Shares of all CPUs' time since start: used by other processes, and stolen."""
        now = self._now()
        wall, busy, steal, own = (b - a for a, b in zip(self.start, now, strict=True))
        capacity = max(wall * common.available_cpus(), 1e-9)
        return {"others": max(0.0, busy - own) / capacity, "steal": steal / capacity}


def _call_time(run: common.Runner) -> float:
    """Seconds one call of run takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(
    m: Measurement,
    runners: dict[str, common.Runner],
    args: argparse.Namespace,
) -> None:
    """Check every runner against the reference, then time them interleaved into m."""
    cell, cfg = common.CELLS[m.cell], common.CONFIGS[m.config]
    estimate = {}
    for impl, run in runners.items():
        start = time.perf_counter()
        outputs = run()  # warm-up call, whose outputs are the ones checked
        first = time.perf_counter() - start
        m.max_rel_err[impl] = common.check(impl, outputs, cell, cfg, m.mode)
        # The first call pays one-off costs (allocation, lazy init); time a second one unless
        # the call is so long that those do not matter for the estimate.
        estimate[impl] = first if first > 1.0 else _call_time(run)

    calls = {i: max(1, math.ceil(args.min_time / max(t, 1e-9))) for i, t in estimate.items()}
    # Untimed calls before each sample, lasting --settle: when one implementation follows
    # another, the other's idle BLAS/OpenMP threads go on spinning for a while (numpy's OpenBLAS
    # for ~0.1 s) and would steal a core from the first calls of the sample.
    settle = {i: math.ceil(args.settle / max(t, 1e-9)) for i, t in estimate.items()}
    round_s = sum((calls[i] + settle[i]) * estimate[i] for i in runners)
    rounds = max(MIN_ROUNDS, min(args.repeats, int(args.budget // round_s)))
    order = list(runners)
    samples: dict[str, list[float]] = {impl: [] for impl in order}
    watch = CpuWatch()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one sample is noise, not cost
    try:
        for r in range(rounds):
            for impl in order[r % len(order) :] + order[: r % len(order)]:
                run, n = runners[impl], calls[impl]
                for _ in range(settle[impl]):
                    run()
                start = time.perf_counter()
                for _ in range(n):
                    run()
                samples[impl].append((time.perf_counter() - start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    m.samples_s, m.calls_per_sample, m.cpu_others = samples, calls, watch.others()


CEILING_SQUARE = 1024  # the plain sgemm ceiling: M = N = K


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


def measure_ceilings(args: argparse.Namespace) -> list[dict[str, Any]]:
    """GFLOP/s of each ceiling shape, OpenBLAS (as found) and the packed micro-kernel, per
    thread count; the best of 3 runs of about 0.2 s each (a ceiling: the best is the figure)."""
    from rnncore import _core

    rows = []
    for label, M, N, K in ceiling_shapes(args.configs):
        for n in args.threads:
            row: dict[str, Any] = {"shape": label, "M": M, "N": N, "K": K, "threads": n}
            for kernel in ("blas", "packed"):
                runs = [_core._gemm_probe(M, N, K, kernel, n, 0.2) for _ in range(3)]
                row[kernel] = max(r["gflops"] for r in runs)
                row[f"{kernel}_name"] = runs[0]["kernel"]
            rows.append(row)
            print(
                f"ceiling {label} {n} thread(s): OpenBLAS {row['blas']:.1f}, "
                f"{row['packed_name']} {row['packed']:.1f} GFLOP/s",
                file=sys.stderr,
                flush=True,
            )
    return rows


def ceiling_for(ceilings: list[dict[str, Any]], threads: int) -> float | None:
    """The sgemm ceiling at a thread count: the better kernel on the square shape."""
    for row in ceilings:
        if row["M"] == row["N"] == row["K"] == CEILING_SQUARE and row["threads"] == threads:
            return max(row["blas"], row["packed"])
    return None


def run_all(args: argparse.Namespace) -> tuple[list[Measurement], list[str]]:
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
            problem = common.make_problem(cell.name, cfg.name)
            for mode in modes:
                runners = {impl: common.make_runner(impl, problem, mode) for impl in impls}
                for n in args.threads:
                    m = Measurement(
                        cell.name,
                        cfg.name,
                        mode,
                        n,
                        common.flops(cell, cfg, mode),
                        common.set_threads(n),
                    )
                    start = time.perf_counter()
                    measure(m, runners, args)
                    times = ", ".join(f"{i} {m.median_ms(i):.3g} ms" for i in runners)
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


def _ratio(other: float | None, ours: float | None) -> str:
    """How many times faster rnncore is than other ('–' when either is missing)."""
    return "–" if other is None or ours is None else f"{other / ours:.2f}"


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
    reference_limited = all(m.threads_set["reference"] is not None for m in measurements)
    passes = " and ".join(
        common.MODE_LABELS[m] for m in (["fwdbwd", "fwd"] if args.fwd else ["fwdbwd"])
    )
    lines = [
        f"## rnncore benchmark: {passes}, float32",
        "",
        f"- command: `{command_line()}`",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpus']} CPUs available)",
        f"- rnncore {env['rnncore']}; OpenBLAS corename: **{env['corename']}**; "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}",
        f"- torch {env['torch'] or 'not installed'}; numpy {env['numpy']}; Python {env['python']}",
        f"- other processes used {env['cpu_during_run']['others']:.0%} of the CPUs during the run"
        f" (hypervisor steal {env['cpu_during_run']['steal']:.0%})",
        "- threads: rnncore.set_num_threads(n) and torch.set_num_threads(n); reference (NumPy): "
        + (
            "its BLAS limited to n with threadpoolctl"
            if reference_limited
            else "**not limited** (threadpoolctl not installed): numpy's BLAS uses its default "
            "thread count in every row"
        ),
        f"- time: median of {MIN_ROUNDS}-{args.repeats} interleaved rounds (budget "
        f"{args.budget:g} s, samples of ≥ {args.min_time:g} s, each after {args.settle:g} s of "
        "untimed calls); every implementation checked against the float64 reference first",
        "- GFLOP/s: matrix-product FLOPs (fwd 2·T·B·(D+H)·G·H per layer, fwd+bwd 3×) / rnncore "
        "time; × reference, × torch: their time / rnncore's (> 1: rnncore is faster)",
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
    head = ["cell", "config", "threads", "rnncore ms", "reference ms", "torch ms"]
    head += ["rnncore GFLOP/s", "% of ceiling", "× reference", "× torch"]
    if args.fwd:
        head.insert(2, "pass")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in measurements:
        ours, ref, torch = (m.median_ms(i) for i in common.IMPLS)
        gflops = f"{m.flops / (ours * 1e-3) / 1e9:.1f}" if ours else "–"
        threads = f"{m.threads} †" if m.disturbed else str(m.threads)
        row = [m.cell, m.config, threads, _ms(ours), _ms(ref), _ms(torch)]
        ceiling = ceiling_for(ceilings or [], m.threads)
        share = f"{m.flops / (ours * 1e-3) / 1e9 / ceiling:.0%}" if ours and ceiling else "–"
        row += [gflops, share, _ratio(ref, ours), _ratio(torch, ours)]
        if args.fwd:
            row.insert(2, common.MODE_LABELS[m.mode])
        lines.append("| " + " | ".join(row) + " |")

    if ceilings:
        kernel = ceilings[0]["packed_name"]
        lines += [
            "",
            f"GEMM ceilings, same run (float32 GFLOP/s, best of 3; `% of ceiling` above is "
            f"rnncore's GFLOP/s over the better kernel's sgemm {CEILING_SQUARE}³ figure at the "
            f"same thread count). Each thread owns a slice of the N columns in one parallel "
            f"region with a barrier after each product, as the kernels run; OpenBLAS as found "
            f"(corename {env['corename']}, one thread per slice) and rnncore's packed "
            f"micro-kernel ({kernel}):",
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

    Both are the same kernels on the same batch, timed in the same interleaved rounds; the
    full-length run (``rnncore-full``) passes lengths=None. Empty when there are none.
    """
    rows = [m for m in measurements if m.median_ms(common.FULL) and m.median_ms("rnncore")]
    if not rows:
        return []
    lines = [
        "",
        "Random lengths against full length, rnncore (the same kernels on the same batch with "
        f"lengths=None, timed in the same rounds; target ≤ {LENGTHS_TARGET:g}×):",
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
        ours, full = m.median_ms("rnncore"), m.median_ms(common.FULL)
        assert ours is not None and full is not None
        ratio = ours / full
        mark = "" if ratio <= LENGTHS_TARGET else " ✗"
        threads = f"{m.threads} †" if m.disturbed else str(m.threads)
        row = [m.cell, m.config, threads, f"{share:.2f}", _ms(ours), _ms(full)]
        row.append(f"{ratio:.2f}{mark}")
        if args.fwd:
            row.insert(2, common.MODE_LABELS[m.mode])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_plot(measurements: list[Measurement], env: dict[str, Any], path: Path) -> None:
    """A bar chart of rnncore's speed-up over the reference and torch, per config."""
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
                ours = m.median_ms("rnncore") if m else None
                other = m.median_ms(baseline) if m else None
                heights.append(other / ours if ours and other else 0.0)
            xs = [c + (k - (len(series) - 1) / 2) * width for c in range(len(configs))]
            ax.bar(xs, heights, width, label=f"vs {baseline}, {n} thread(s)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(configs)), configs)
        ax.set_ylabel("speed-up of rnncore (×)")
        ax.set_title(f"{cell} {common.MODE_LABELS[mode]}")
        ax.legend(fontsize="small")
    fig.suptitle(f"rnncore, corename {env['corename']}, {env['cpu']}", fontsize="medium")
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


def _threads(text: str) -> list[int]:
    """An argparse type: comma-separated positive thread counts."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2, got {text!r}")
    return counts


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
        "--threads", type=_threads, default=[1, 2], help="comma-separated thread counts (1,2)"
    )
    parser.add_argument("--fwd", action="store_true", help="also time the forward pass alone")
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
    """Run the benchmarks, print the table; 1 if an implementation gave a wrong answer."""
    args = parse_args(argv)
    env = common.environment()  # before any set_threads: the libraries' default thread counts
    watch = CpuWatch()
    ceilings = [] if args.no_ceiling else measure_ceilings(args)
    try:
        measurements, skipped = run_all(args)
    except common.CorrectnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    env["cpu_during_run"] = watch.others()
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
    print(f"done in {time.perf_counter() - watch.start[0]:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
