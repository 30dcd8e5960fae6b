"""Data-parallel scaling: characters per second of `rnncore train` on ranks x threads.

    python benchmarks/scaling.py                              # 1x1, 1x2, 2x1 for 2x128, 2x512
    python benchmarks/scaling.py --configs 1x1,2x1,4x1,4x4 --models 2x512 --steps 8

Each configuration (ranks x threads per rank) runs in its own `mpiexec -n ranks` process
(the mpiexec beside this interpreter, from the mpi extra), the Trainer of `rnncore train` on
tiny-shakespeare with the same global batch (B = 64 streams, T = 50, float32, LSTM,
embedding 64, Adam): rank r trains streams r*B/N .. (r+1)*B/N - 1 and one allreduce per step
averages the gradients. After --warmup untimed steps, --steps steps are timed between two
barriers; chars/s = steps * B * T / seconds. The replicas are checked equal (bitwise) after
the timed steps, before a figure is printed. Efficiency = chars/s / (ranks * threads * the
1x1 chars/s of the same model), and speed-up = chars/s / 1x1 chars/s. With --rounds R the
configurations alternate R times and each figure is the median of its R runs; the load
average before and after is printed, as other work on the cores skews the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

B, T = 64, 50


def worker(model: str, threads: int, steps: int, warmup: int) -> None:
    """One configuration, run by every rank under mpiexec; rank 0 prints a JSON line."""
    import rnncore
    from rnncore import distributed
    from rnncore.data import load_corpus
    from rnncore.train import TrainConfig, Trainer

    dist = distributed.from_environment()
    comm = None if dist is None else dist.comm
    distributed.limit_blas_threads(threads)
    rnncore.set_num_threads(threads)
    layers, hidden = (int(v) for v in model.split("x"))
    config = TrainConfig(hidden_size=hidden, num_layers=layers, batch_size=B, seq_length=T, seed=0)
    trainer = Trainer(load_corpus(), config, comm=comm)
    trainer.run(max_steps=warmup)
    if comm is not None:
        comm.Barrier()
    t0 = time.perf_counter()
    trainer.run(max_steps=steps)
    if comm is not None:
        comm.Barrier()
    seconds = time.perf_counter() - t0
    if dist is not None:
        dist.check_replicas(trainer.model.params, step=trainer.step)  # raises if they differ
    if dist is None or dist.is_root:
        print(json.dumps({"chars_per_sec": steps * B * T / seconds, "seconds": seconds}))


def run_config(model: str, ranks: int, threads: int, steps: int, warmup: int) -> float:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    env |= {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, __file__, "--worker", model]
    cmd += ["--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return float(json.loads(lines[-1])["chars_per_sec"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="1x1,1x2,2x1", help="ranks x threads, comma-separated")
    p.add_argument("--models", default="2x128,2x512", help="layers x hidden, comma-separated")
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=1, help="runs of each config (median)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.steps, args.warmup)
        return
    import rnncore

    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    configs = [(1, 1)] + [c for c in configs if c != (1, 1)]  # 1x1: the baseline
    info = rnncore.blas_info()
    threads = sorted({t for _, t in configs})
    print(
        f"LSTM, B={B}, T={T}, float32; ranks x threads; threads per rank "
        f"{', '.join(map(str, threads))}; recurrent kernel {info['recurrent_kernel']}; "
        f"OpenBLAS {info['corename']}; {os.cpu_count()} cores; {args.steps} timed steps, "
        f"median of {args.rounds} round(s); load average before: {os.getloadavg()[0]:.2f}\n"
    )
    print("| model | ranks x threads | chars/s | speed-up | efficiency |")
    print("|---|---|---:|---:|---:|")
    for model in args.models.split(","):
        rates: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
        for _ in range(args.rounds):  # the configurations alternate: load drifts hit all alike
            for ranks, t in configs:
                rates[ranks, t].append(run_config(model, ranks, t, args.steps, args.warmup))
        base = statistics.median(rates[1, 1])
        for (ranks, t), values in rates.items():
            rate = statistics.median(values)
            speedup = rate / base
            print(
                f"| {model} | {ranks} x {t} | {rate:,.0f} | {speedup:.2f}x | "
                f"{speedup / (ranks * t):.0%} |",
                flush=True,
            )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
