"""Training steps per second: rnncore's char-rnn against the same program in PyTorch.

    python benchmarks/train_step.py                      # LSTM 2x128, B=T=50, 1 and 2 threads
    python benchmarks/train_step.py --cell gru --threads 2 --steps 40

Both run the same model on batches of tiny-shakespeare: embedding 64 -> nn.LSTM (or GRU/RNN)
2 x 128 -> Linear -> cross-entropy, Adam (lr 2e-3), gradient clipping by value 5, the hidden
state carried between batches (truncated BPTT); rnncore's side is ``rnncore.train.Trainer``.

Each implementation runs in its own worker process (``workers.py``), started once per run and
driven by this one over pipes, rnncore and torch each twice: with the environment as found and
with glibc's allocator tuned (``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1073741824``, set before the worker's interpreter starts). At each
thread count every worker sets its own threads (rnncore.set_num_threads, torch.set_num_threads)
and takes 3 untimed steps, the workers side by side; then rounds: in round r the workers, in an
order rotated by r, are asked one at a time for one sample, --settle seconds of untimed steps
(another worker's idle threads spin for a while and would slow the first steps) then --steps
timed steps. Times are medians of the samples; the speed-up is the median of the per-round
ratios torch / rnncore, each at the faster of its two settings. A step whose loss is not
finite stops the run (exit status 1), as does a worker that fails or dies.

After each thread count's rounds the rnncore worker (as found) measures the machine's sgemm
ceiling at that thread count (1024^3, the better of OpenBLAS and the packed micro-kernel, best
of 3 probes), and the table puts every figure against it: each step's GEMM work (steps_flops:
the forward's products, and the backward's two per forward product, dx and dW) over its time,
and what a speed-up TARGET over torch would need, in GFLOP/s and as a share of the ceiling.

Then the sampler (characters per second, one thread, in the rnncore worker as found) against
its ceiling: the same run's speed of streaming the weights read per character through the
sampler's matrix-vector kernel.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import common
import workers
from workers import AS_FOUND, MALLOC_TUNED, CpuWatch

E, H, L, B, T = 64, 128, 2, 50, 50  # embedding, hidden, layers, batch, sequence length
IMPLS = ("rnncore", "torch")
SETTINGS = (AS_FOUND, MALLOC_TUNED)
WARMUP_STEPS = 3
REQUEST_TIMEOUT = 1800.0  # seconds a worker may take to answer one request before it is killed
BUSY_WARNING = 0.1  # share of the CPUs used by other processes that makes timings suspect
TARGET = 1.5  # the speed-up over torch the performance issue asks of the training step
CEILING_SQUARE = 1024  # M = N = K of the sgemm ceiling


def step_flops(cell: str, V: int) -> float:
    """The GEMM work of one training step, in FLOP: per layer the input and recurrent products
    of every step (2 T B G H (D + H)), the decoder (2 T B H V), all of it three times (forward,
    and the backward's dx and dW; layer 0's dx feeds the embedding's gradient). The pointwise
    passes, the softmax and Adam are left out: the figure is a lower bound on the work."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    layers = sum(2 * T * B * G * H * ((E if k == 0 else H) + H) for k in range(L))
    return 3.0 * (layers + 2 * T * B * H * V)


def torch_program(cell: str, V: int, E: int, H: int, L: int, seed: int) -> Callable[..., float]:
    """The PyTorch training step: step(x, y) on int64 (T, B) arrays returns the loss."""
    import torch

    torch.manual_seed(seed)
    rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(V, E)
            self.rnn = rnn_cls(E, H, L)
            self.decoder = torch.nn.Linear(H, V)

        def forward(self, x: Any, state: Any) -> tuple[Any, Any]:
            y, state = self.rnn(self.embedding(x), state)
            return self.decoder(y), state

    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    state = None

    def step(x: np.ndarray, y: np.ndarray) -> float:
        nonlocal state
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt.zero_grad()
        logits, new_state = model(xt, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), yt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in new_state) if cell == "lstm" else new_state.detach()
        return float(loss.detach())

    return step


# --------------------------------------------------------------------------------------------
# The workers' side
# --------------------------------------------------------------------------------------------


class _Worker:
    """What a train_step worker process does for one implementation (see worker_handlers)."""

    def __init__(self, impl: str) -> None:
        if impl not in IMPLS:
            raise ValueError(f"unknown implementation {impl!r}, expected one of {IMPLS}")
        self.impl = impl
        self.cell: str | None = None
        self.step: Callable[[int], float] | None = None
        self.trainer: Any = None
        self.corpus: Any = None

    def hello(self) -> dict[str, Any]:
        """Where this worker runs (before any thread count is set)."""
        return workers.worker_environment(self.impl)

    def setup(self, cell: str, threads: int, steps: int) -> dict[str, Any]:
        """Build the program on first use, set threads, take WARMUP_STEPS untimed steps."""
        from rnncore.data import load_corpus, make_batch_iterators

        if self.step is None:
            self.cell, self.corpus = cell, load_corpus()
            if self.impl == "rnncore":
                from rnncore.train import TrainConfig, Trainer

                self.trainer = Trainer(self.corpus, TrainConfig(cell=cell, max_steps=10**9))
                self.step = self._rnncore_step
            else:
                train, _ = make_batch_iterators(self.corpus, B, T)
                batches = [train.batch(i) for i in range(steps)]
                data = [(b.x.astype(np.int64), b.y.astype(np.int64)) for b in batches]
                program = torch_program(cell, len(self.corpus.vocab), E, H, L, 0)
                self.step = lambda i: program(*data[i % len(data)])
        elif cell != self.cell:
            raise ValueError(f"this worker trains a {self.cell}, asked for a {cell}")
        threads_set = common.set_threads(threads, self.impl)[self.impl]
        for i in range(WARMUP_STEPS):
            self._checked(i)
        return {"threads_set": threads_set, "vocab": len(self.corpus.vocab)}

    def _rnncore_step(self, _i: int) -> float:
        info = self.trainer.train_step()  # the Trainer draws its own next batch
        return math.nan if info.skipped else info.loss

    def _checked(self, i: int) -> float:
        """Step i, raising if its loss is not finite."""
        assert self.step is not None
        loss = self.step(i)
        if not math.isfinite(loss):
            raise RuntimeError(f"{self.impl} training step: the loss is {loss}, not finite")
        return loss

    def sample(self, settle: float, steps: int) -> dict[str, float]:
        """settle seconds of untimed steps, then the mean seconds of steps timed ones."""
        if self.step is None:
            raise RuntimeError("'sample' before 'setup': there is nothing to time")
        end = time.perf_counter() + settle
        while time.perf_counter() < end:
            self._checked(0)
        losses = []
        start = time.perf_counter()
        for i in range(steps):
            losses.append(self.step(i))
        seconds = (time.perf_counter() - start) / steps
        if not all(math.isfinite(v) for v in losses):
            raise RuntimeError(f"{self.impl} training step: a loss was not finite: {losses}")
        return {"seconds": seconds, "loss": losses[-1]}

    def sampler(self, chars: int, seeds: int, min_time: float) -> dict[str, Any]:
        """Characters per second of rnncore.generate on one thread (median of seeds runs) and
        the matrix-vector ceiling for the weights read per character."""
        import rnncore

        if self.impl != "rnncore" or self.trainer is None:
            raise RuntimeError("the sampler runs in an rnncore worker after 'setup'")
        rnncore.set_num_threads(1)
        model, vocab = self.trainer.model, self.corpus.vocab
        rates = []
        for seed in range(seeds):
            t0 = time.perf_counter()
            rnncore.generate(model, vocab, length=chars, seed=seed)
            rates.append(chars / (time.perf_counter() - t0))
        # The ceiling: every token reads each weight matrix once (layer 0's input side is a
        # table lookup), so the sampler cannot beat its own matrix-vector kernel streaming
        # that many rows.
        G = {"lstm": 4, "gru": 3, "rnn": 1}[self.cell or "lstm"]
        rows = L * G * H + (L - 1) * G * H + len(vocab)  # w_hh of all, w_ih above 0, w_out
        probe = rnncore._core._gemv_probe(rows, H, min_time=min_time)
        return {
            "rate": statistics.median(rates),
            "rows": rows,
            "ceiling": 1.0 / probe["seconds_per_call"],
            "gb_per_s": probe["gb_per_s"],
        }

    def ceiling(self, threads: int, min_time: float, runs: int) -> dict[str, Any]:
        """The sgemm ceiling at a thread count: the best GFLOP/s of runs probes of each kernel
        on the square product, the better kernel's figure."""
        from rnncore import _core

        n = CEILING_SQUARE
        best: dict[str, Any] = {"gflops": 0.0}
        for kernel in ("blas", "packed"):
            for _ in range(runs):
                probe = _core._gemm_probe(n, n, n, kernel, threads, min_time)
                if probe["gflops"] > best["gflops"]:
                    best = {"gflops": probe["gflops"], "kernel": probe["kernel"]}
        return best


def worker_handlers(impl: str) -> dict[str, Callable[..., Any]]:
    """The requests a train_step worker of impl serves (workers.serve calls this)."""
    w = _Worker(impl)
    handlers = {"hello": w.hello, "setup": w.setup, "sample": w.sample}
    extra = {"sampler": w.sampler, "ceiling": w.ceiling} if impl == "rnncore" else {}
    return handlers | extra


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------


def labels_of(impl: str) -> list[str]:
    """The worker labels (table columns) of an implementation: one per allocator setting."""
    return [workers.label(impl, s) for s in SETTINGS]


def _ms(samples: list[float] | None) -> str:
    return "–" if not samples else f"{statistics.median(samples) * 1e3:.1f}"


def _rate(flops: float, seconds: float | None, ceiling: float | None) -> str:
    """GFLOP/s of flops in seconds, with its share of the ceiling in parentheses."""
    if seconds is None:
        return "–"
    gflops = flops / seconds / 1e9
    return f"{gflops:.1f}" + ("" if ceiling is None else f" ({gflops / ceiling:.0%})")


def table(rows: list[dict[str, Any]], flops: float) -> list[str]:
    """The markdown table: per thread count, every worker's median ms (the faster setting of
    each implementation in bold), steps/s at the faster setting, the speed-up, and against the
    same run's sgemm ceiling: each implementation's GFLOP/s and what TARGET x torch needs."""
    columns = [lb for impl in IMPLS for lb in labels_of(impl)]
    head = ["threads", *(f"{c} ms" for c in columns), "rnncore steps/s", "torch steps/s"]
    head += ["speed-up", "sgemm ceiling GFLOP/s", "rnncore GFLOP/s", "torch GFLOP/s"]
    head += [f"{TARGET:g}x torch needs GFLOP/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        samples: dict[str, list[float]] = row["samples_s"]
        best = {impl: workers.fastest(samples, labels_of(impl)) for impl in IMPLS}
        threads = f"{row['threads']} †" if sum(row["cpu_others"].values()) > BUSY_WARNING else ""
        cells = [threads or str(row["threads"])]
        for c in columns:
            text = _ms(samples.get(c))
            cells.append(f"**{text}**" if c in best.values() and text != "–" else text)
        for impl in IMPLS:
            name = best[impl]
            cells.append("–" if name is None else f"{1 / statistics.median(samples[name]):.1f}")
        if best["torch"] is None or best["rnncore"] is None:
            cells.append("–")
        else:
            ratio = workers.paired_ratio(samples[best["torch"]], samples[best["rnncore"]])
            cells.append(f"{ratio:.2f}x")
        ceiling = row.get("ceiling")
        cells.append("–" if ceiling is None else f"{ceiling:.1f}")
        for impl in IMPLS:
            name = best[impl]
            seconds = None if name is None else statistics.median(samples[name])
            cells.append(_rate(flops, seconds, ceiling))
        name = best["torch"]
        seconds = None if name is None else statistics.median(samples[name]) / TARGET
        cells.append(_rate(flops, seconds, ceiling))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    ap.add_argument(
        "--threads", type=workers.thread_counts, default=[1, 2], help="comma-separated (1,2)"
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per sample (20)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per thread count (5)")
    ap.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="untimed seconds of steps before each sample (another worker's idle threads keep "
        "spinning for a while and slow whatever runs next) (0.5)",
    )
    ap.add_argument(
        "--sample-chars",
        type=int,
        default=100_000,
        help="characters per sampler run, 5 runs (100000; 0: skip the sampler)",
    )
    args = ap.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.settle < 0 or args.sample_chars < 0:
        ap.error("--steps and --rounds must be ≥ 1, --settle and --sample-chars ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Time the training steps, print the table; 1 if a worker failed or died."""
    args = parse_args(argv)
    impls = [i for i in IMPLS if i != "torch" or common.torch_installed()]
    specs = [(impl, s) for impl in impls for s in SETTINGS]
    env = common.machine()
    rows: list[dict[str, Any]] = []
    sampler, V = None, 0
    try:
        with workers.Pool("train_step", specs) as pool:
            hellos = {name: w.hello for name, w in pool.workers.items()}
            team = list(pool.workers.values())
            run_watch = CpuWatch(pool.pids())
            for n in args.threads:
                for w in team:  # side by side: the warm-up steps are not timed
                    w.send("setup", cell=args.cell, threads=n, steps=args.steps)
                for w in team:
                    V = w.receive("setup", REQUEST_TIMEOUT)["vocab"]
                watch = CpuWatch(pool.pids())
                request = {"settle": args.settle, "steps": args.steps}
                requests = dict.fromkeys(pool.workers, request)
                samples = workers.run_rounds(team, args.rounds, requests)
                others_n = watch.others()
                ceiling = pool["rnncore"].request(
                    "ceiling", REQUEST_TIMEOUT, threads=n, min_time=0.2, runs=3
                )
                row = {"threads": n, "samples_s": samples, "cpu_others": others_n}
                rows.append(row | {"ceiling": ceiling["gflops"]})
                times = ", ".join(f"{k} {_ms(v)} ms" for k, v in samples.items())
                print(
                    f"{n} thread(s): {times}; sgemm ceiling {ceiling['gflops']:.1f} GFLOP/s "
                    f"({ceiling['kernel']})",
                    file=sys.stderr,
                    flush=True,
                )
            if args.sample_chars:
                sampler = pool["rnncore"].request(
                    "sampler", REQUEST_TIMEOUT, chars=args.sample_chars, seeds=5, min_time=0.5
                )
            others = run_watch.others()
    except workers.WorkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    argv_used = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    lines = [
        f"## Training step: {args.cell} {L}x{H}, embedding {E}, B={B}, T={T}, float32",
        "",
        f"- command: `{shlex.join([Path(argv_used[0]).name, *argv_used[1:]])}`",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpus']} CPUs available); "
        f"threads: {', '.join(map(str, args.threads))}",
        *workers.header_lines(hellos),
    ]
    if "torch" not in impls:
        lines.append("- torch not installed: its columns are empty")
    lines += [
        "- processes: each column in its own worker process (benchmarks/workers.py), started "
        "once for the run; (malloc tuned): started with "
        + " ".join(f"`{k}={v}`" for k, v in workers.MALLOC_TUNING.items()),
        f"- time: ms per training step, median of {args.rounds} rounds; in each round every "
        f"worker, in rotating order, takes {args.settle:g} s of untimed steps then "
        f"{args.steps} timed steps; the faster setting of each implementation in **bold**; "
        "speed-up: the median over rounds of (torch's sample / rnncore's sample of the same "
        "round), each at its faster setting",
        f"- other processes used {others['others']:.0%} of the CPUs during the run "
        f"(hypervisor steal {others['steal']:.0%})",
        f"- GEMM work per step: {step_flops(args.cell, V) / 1e9:.3f} GFLOP (`step_flops`: the "
        "products of the forward and the backward's dx and dW; GFLOP/s columns divide it by "
        "the median step; in parentheses the share of the sgemm ceiling that the rnncore "
        "worker measured right after that thread count's rounds)",
        "",
        *table(rows, step_flops(args.cell, V)),
    ]
    if any(sum(r["cpu_others"].values()) > BUSY_WARNING for r in rows):
        lines += [
            "",
            f"† **Not trustworthy**: other processes took more than {BUSY_WARNING:.0%} of the "
            "CPUs while these rows were measured. Run again on an idle machine.",
        ]
    if sampler is not None:
        rate, ceiling = sampler["rate"], sampler["ceiling"]
        lines += [
            "",
            f"sampling, 1 thread: {rate:,.0f} characters/s (median of 5); ceiling "
            f"{ceiling:,.0f}: the {sampler['rows']} x {H} float32 weights read per character "
            f"({sampler['rows'] * H * 4 / 1024:.0f} KB) stream at {sampler['gb_per_s']:.1f} "
            f"GB/s through the sampler's matrix-vector kernel; {100 * rate / ceiling:.0f}% of it",
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
