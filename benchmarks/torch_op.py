"""rnncore.torch against torch.nn inside a torch training step (docs/interop.md, PyTorch).

    python benchmarks/torch_op.py                        # charrnn-L2, every cell, 2 threads
    python benchmarks/torch_op.py --cells gru --rounds 9 --threads 1

The step, the same for both implementations: a 2-layer stack (charrnn-L2: T=50, B=50,
D=64, H=128, float32) over a fixed random batch, the mean squared error of its output
against a fixed random target (plus the final h, so that dh_n flows too), backward, an
Adam step on the stack's parameters (lr 1e-3). Only the recurrent module differs:
``rnncore.torch.X`` or ``torch.nn.X``, built after the same ``torch.manual_seed``, so they
start from the same weights; the first step's losses are compared before anything is timed.

Each implementation runs in its own worker process (torch.set_num_threads and
rnncore.set_num_threads both set to --threads, and OMP_NUM_THREADS), kept for the whole run.
Rounds alternate between the two workers, the first of each round rotating; a round is
--settle seconds of untimed steps (the other worker's idle OpenMP threads stop spinning)
then --steps timed steps, and its figure is the median step. The table reports the median
step time over rounds, the median of the per-round ratios torch.nn / rnncore.torch (and their
range), and the 1-minute load average when the cell's rounds ended.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("torch.nn", "rnncore.torch")
T, B, D, H, L = 50, 50, 64, 128, 2  # charrnn-L2 (benchmarks/common.py CONFIGS)
TARGETS = {"rnn": 1.5, "gru": 1.5, "lstm": 1.0}  # issue 15: >= 1.5x (GRU, RNN), LSTM even


def make_step(impl: str, cell: str, threads: int, size: tuple[int, int, int, int, int]):
    """(step, torch): step() runs one training step and returns its loss (a float)."""
    import torch

    import rnncore
    import rnncore.torch

    torch.set_num_threads(threads)
    rnncore.set_num_threads(threads)
    t, b, d, h, layers = size
    lib = torch.nn if impl == "torch.nn" else rnncore.torch
    cls = {"rnn": lib.RNN, "lstm": lib.LSTM, "gru": lib.GRU}[cell]
    torch.manual_seed(0)
    module = cls(d, h, layers)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(t, b, d, generator=g)
    target = torch.randn(t, b, h, generator=g) * 0.5
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step() -> float:
        opt.zero_grad()
        y, state = module(x)
        h_n = state[0] if cell == "lstm" else state
        loss = torch.nn.functional.mse_loss(y, target) + h_n.mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, torch


def worker(impl: str, cell: str, threads: int, size: tuple[int, int, int, int, int]) -> None:
    """Serve rounds on stdin/stdout: 'first' -> the first step's loss; 'round S N' -> S
    seconds of untimed steps then the N timed steps' seconds."""
    step, _ = make_step(impl, cell, threads, size)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "first":
            out: dict = {"loss": step()}
        else:
            settle, n = float(cmd[1]), int(cmd[2])
            end = time.perf_counter() + settle
            while time.perf_counter() < end:
                step()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            out = {"times": times}
        print(json.dumps(out), flush=True)


class Worker:
    """A worker process of one implementation and cell."""

    def __init__(self, impl: str, cell: str, threads: int, size: str) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--worker", impl, "--cells", cell]
        cmd += ["--threads", str(threads), "--size", size]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def ask(self, line: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"worker {self.proc.args} exited with {self.proc.wait()}")
        return json.loads(reply)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(cells: list[str], threads: int, rounds: int, steps: int, settle: float, size: str):
    """{cell: (torch.nn median s, rnncore.torch median s, median of per-round ratios)}."""
    results = {}
    for cell in cells:
        workers = {impl: Worker(impl, cell, threads, size) for impl in IMPLS}
        try:
            first = {impl: w.ask("first")["loss"] for impl, w in workers.items()}
            a, b = first.values()
            if abs(a - b) > 1e-4 * abs(b):
                raise RuntimeError(f"{cell}: the first losses differ: {first}")
            per_round: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            for r in range(rounds):
                order = IMPLS[r % 2 :] + IMPLS[: r % 2]
                for impl in order:
                    times = workers[impl].ask(f"round {settle} {steps}")["times"]
                    per_round[impl].append(statistics.median(times))
        finally:
            for w in workers.values():
                w.close()
        ratios = [t / o for t, o in zip(*per_round.values(), strict=True)]
        results[cell] = (
            statistics.median(per_round["torch.nn"]),
            statistics.median(per_round["rnncore.torch"]),
            statistics.median(ratios),
            min(ratios),
            max(ratios),
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--settle", type=float, default=0.5, help="untimed seconds per round")
    ap.add_argument("--size", default=",".join(map(str, (T, B, D, H, L))), help="T,B,D,H,L")
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    cells = args.cells.split(",")
    if args.worker:
        worker(args.worker, cells[0], args.threads, size)  # type: ignore[arg-type]
        return

    import torch

    import rnncore

    info = rnncore.blas_info()
    t, b, d, h, layers = size
    load = os.getloadavg()
    print(
        f"rnncore {rnncore.__version__} (corename {info['corename']}, recurrent kernel "
        f"{info['recurrent_kernel']}), torch {torch.__version__}; {cpu_model()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {load[0]:.2f} at the start"
    )
    print(
        f"training step (forward, MSE loss, backward, Adam), T={t} B={b} D={d} H={h} L={layers} "
        f"float32, {args.threads} threads (torch.set_num_threads, rnncore.set_num_threads); "
        f"{args.rounds} rounds x {args.steps} steps, each implementation in its own process\n"
    )
    print(
        "| cell | torch.nn ms | rnncore.torch ms | × torch.nn (median; min-max) | target | load |"
    )
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for cell in cells:  # each row as soon as it is measured
        tn, rc, ratio, lo, hi = run([cell], args.threads, args.rounds, args.steps, args.settle,
                                    args.size)[cell]  # fmt: skip
        print(
            f"| {cell} | {tn * 1e3:.2f} | {rc * 1e3:.2f} | **{ratio:.2f}** ({lo:.2f}-{hi:.2f}) | "
            f"≥ {TARGETS[cell]:.1f} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
