"""Training steps per second: rnncore's char-rnn against the same program in PyTorch.

    python benchmarks/train_step.py                      # LSTM 2x128, B=T=50, 1 and 2 threads
    python benchmarks/train_step.py --cell gru --threads 2 --steps 40

Both run the same model on the same batches of tiny-shakespeare: embedding 64 -> nn.LSTM (or
GRU/RNN) 2 x 128 -> Linear -> cross-entropy, Adam (lr 2e-3), gradient clipping by value 5,
the hidden state carried between batches (truncated BPTT). Each implementation's steps are
timed in rounds that alternate between the two (median of the rounds), each round after
--settle seconds of untimed steps of the same implementation.
Also times the sampler (characters per second, one thread) against its ceiling: the same run's
speed of streaming the weights read per character through the sampler's matrix-vector kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rnncore
from rnncore.data import load_corpus, make_batch_iterators
from rnncore.train import TrainConfig, Trainer


def torch_program(cell: str, V: int, E: int, H: int, L: int, seed: int):
    import torch

    torch.manual_seed(seed)
    rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(V, E)
            self.rnn = rnn_cls(E, H, L)
            self.decoder = torch.nn.Linear(H, V)

        def forward(self, x, state):
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

    return step, torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=20, help="steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="untimed seconds of steps before each round (the other library's idle threads "
        "keep spinning for a while and slow whatever runs next)",
    )
    args = ap.parse_args()
    corpus = load_corpus()
    V, E, H, L, B, T = len(corpus.vocab), 64, 128, 2, 50, 50
    train, _ = make_batch_iterators(corpus, B, T)
    batches = [train.batch(i) for i in range(args.steps)]
    ours = Trainer(corpus, TrainConfig(cell=args.cell, max_steps=10**9))
    print(
        f"rnncore {rnncore.__version__}, corename {rnncore.blas_info()['corename']}, "
        f"recurrent kernel {rnncore.blas_info()['recurrent_kernel']}"
    )
    try:
        tstep, torch = torch_program(args.cell, V, E, H, L, 0)
        print(f"torch {torch.__version__}")
    except ImportError:
        tstep, torch = None, None
        print("torch not installed: rnncore only")
    print(f"\n{args.cell} {L}x{H}, embedding {E}, B={B}, T={T}; ms per training step (median)")
    print("| threads | rnncore ms | torch ms | rnncore steps/s | torch steps/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in [int(t) for t in args.threads.split(",")]:
        rnncore.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        for _ in range(3):  # warm-up
            ours.train_step()
            if tstep:
                tstep(batches[0].x.astype(np.int64), batches[0].y.astype(np.int64))
        runs = {"rnncore": lambda _b: ours.train_step()}
        if tstep:
            runs["torch"] = lambda b: tstep(b.x.astype(np.int64), b.y.astype(np.int64))
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for name in list(runs)[r % 2 :] + list(runs)[: r % 2]:  # alternate who goes first
                run = runs[name]
                t_end = time.perf_counter() + args.settle
                while time.perf_counter() < t_end:
                    run(batches[0])
                t0 = time.perf_counter()
                for b in batches:
                    run(b)
                times[name].append((time.perf_counter() - t0) / args.steps)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items() if v}
        tm, rm = ms.get("torch"), ms["rnncore"]
        print(
            f"| {n} | {rm:.1f} | {f'{tm:.1f}' if tm else '-'} | "
            f"{1e3 / rm:.1f} | {f'{1e3 / tm:.1f}' if tm else '-'} | "
            f"{f'{tm / rm:.2f}x' if tm else '-'} |"
        )
    rnncore.set_num_threads(1)
    n = 100_000
    rates = []
    for seed in range(5):
        t0 = time.perf_counter()
        rnncore.generate(ours.model, corpus.vocab, length=n, seed=seed)
        rates.append(n / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    # The ceiling: every token reads each weight matrix once (layer 0's input side is a table
    # lookup), so the sampler cannot beat its own matrix-vector kernel streaming that many rows.
    G = {"lstm": 4, "gru": 3, "rnn": 1}[args.cell]
    rows = L * G * H + (L - 1) * G * H + V  # w_hh of every layer, w_ih of layers >= 1, w_out
    probe = rnncore._core._gemv_probe(rows, H, min_time=0.5)
    ceiling = 1.0 / probe["seconds_per_call"]
    print(
        f"\nsampling, 1 thread: {rate:,.0f} characters/s (median of 5); ceiling "
        f"{ceiling:,.0f}: the {rows} x {H} float32 weights read per character "
        f"({rows * H * 4 / 1024:.0f} KB) stream at {probe['gb_per_s']:.1f} GB/s through the "
        f"sampler's matrix-vector kernel; {100 * rate / ceiling:.0f}% of it"
    )


if __name__ == "__main__":
    main()
