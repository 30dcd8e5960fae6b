"""Many-to-one: the adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015).

Each sequence is T pairs (value in [0, 1], marker in {0, 1}); exactly two markers are 1, one
in the first half of the sequence and one in the second. The target is the sum of the two
marked values, read by a linear layer from the recurrent layer's final state; the loss is the
mean squared error. Always answering 1 scores Var(u1 + u2) = 2/12 ≈ 0.167.

The table compares a tanh RNN, an IRNN (relu RNN with W_hh = I and zero biases, Le et al.
2015), an LSTM and a GRU, at each T, and a "mixed" column where the lengths of a batch vary
(lengths=, the prediction read from each sequence's own final state). All train with Adam
and gradient-norm clipping at 1; the IRNN needs a smaller learning rate (at 1e-2 a relu RNN
with W_hh = I blows up and never recovers) and, at that rate, more steps: it gets its own
(--irnn-lr, --irnn-steps; each of its steps is ~5x cheaper than an LSTM's).

    python examples/adding_problem.py                  # T = 100 and mixed lengths in [50, 100]
    python examples/adding_problem.py --T 50,100,200   # the full table
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rnncore
from rnncore.optim import Adam, ParamGroup, clip_grad_norm

CELLS = ("rnn", "irnn", "lstm", "gru")


def make_batch(rng: np.random.Generator, T: int, B: int, mixed: bool):
    """x (T, B, 2) float32, target (B,), lengths (B,) int64 or None.

    Mixed: each length is drawn from [T // 2, T]; the markers lie in each sequence's own
    first and second half, and the padding after a length is zero.
    """
    lengths = rng.integers(T // 2, T + 1, size=B) if mixed else np.full(B, T)
    x = np.zeros((T, B, 2), np.float32)
    x[:, :, 0] = rng.random((T, B))
    half = lengths // 2
    first = (rng.random(B) * half).astype(np.int64)  # in [0, half)
    second = half + (rng.random(B) * (lengths - half)).astype(np.int64)  # in [half, length)
    cols = np.arange(B)
    x[first, cols, 1] = 1
    x[second, cols, 1] = 1
    x[np.arange(T)[:, None] >= lengths[None, :]] = 0
    target = x[first, cols, 0] + x[second, cols, 0]
    return x, target.astype(np.float32), (lengths if mixed else None)


def build(cell: str, hidden: int, seed: int):
    """The recurrent layer and the linear head (H -> 1) in one ParamGroup."""
    if cell in ("rnn", "irnn"):
        nonlin = "relu" if cell == "irnn" else "tanh"
        rnn = rnncore.RNN(2, hidden, nonlinearity=nonlin, seed=seed)
    else:
        rnn = {"lstm": rnncore.LSTM, "gru": rnncore.GRU}[cell](2, hidden, seed=seed)
    if cell == "irnn":  # Le et al.: W_hh = I, zero biases, small input weights
        p = rnn.parameters()
        p["weight_hh_l0"][...] = np.eye(hidden, dtype=np.float32)
        p["bias_ih_l0"][...] = 0
        p["bias_hh_l0"][...] = 0
        p["weight_ih_l0"][...] = np.random.default_rng(seed).normal(0, 0.001, (hidden, 2))
    head = rnncore.Linear(hidden, 1, seed=seed + 1)
    group = ParamGroup.of({"rnn": rnn, "head": head})
    return rnn, head, group


def final_h(state):
    """(B, H) last layer's final hidden state from a layer's returned state."""
    h = state[0] if isinstance(state, tuple) else state
    return h[-1]


def train(cell: str, T: int, mixed: bool, args) -> float:
    """Train one configuration; return the MSE on a fresh held-out set of args.eval sequences."""
    rng = np.random.default_rng(args.seed)
    rnn, head, group = build(cell, args.hidden, args.seed)
    irnn = cell == "irnn"
    opt = Adam(group, lr=args.irnn_lr if irnn else args.lr)
    for _ in range(args.irnn_steps if irnn else args.steps):
        x, y, lengths = make_batch(rng, T, args.batch, mixed)
        group.zero_grad()
        _, state = rnn.forward(x, lengths=lengths)
        h = final_h(state)  # (B, H)
        pred = head.forward(h)[:, 0]  # (B,)
        dpred = (2 / len(y)) * (pred - y)  # d mean((pred - y)^2)
        dh = head.backward(dpred[:, None].astype(np.float32))  # (B, H)
        dh = dh[None]  # (1, B, H)
        rnn.backward(None, (dh, None) if isinstance(state, tuple) else dh)
        if not np.isfinite(group.grad).all():
            continue
        clip_grad_norm(group, args.clip)
        opt.step()
    x, y, lengths = make_batch(np.random.default_rng(args.seed + 10_000), T, args.eval, mixed)
    _, state = rnn.forward(x, lengths=lengths, training=False)
    pred = head.forward(final_h(state))[:, 0]
    return float(np.mean((pred - y) ** 2))


def main(argv: list[str] | None = None) -> dict[tuple[str, str], float]:
    """Run the table; return {(cell, column): held-out MSE}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--T", default="100", help="comma-separated sequence lengths (default 100)")
    ap.add_argument("--cells", default=",".join(CELLS), help="subset of rnn,irnn,lstm,gru")
    ap.add_argument("--mixed", type=int, default=100, help="T of the mixed column (0: none)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--irnn-steps", type=int, default=6000, help="the IRNN's own (see docstring)")
    ap.add_argument("--irnn-lr", type=float, default=3e-4)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval", type=int, default=1000, help="held-out sequences")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rnncore.set_num_threads(args.threads)
    cells = [c for c in args.cells.split(",") if c]
    cols = [(f"T={t}", int(t), False) for t in args.T.split(",") if t]
    if args.mixed:
        cols.append((f"mixed {args.mixed // 2}-{args.mixed}", args.mixed, True))
    print(
        f"adding problem: held-out MSE after {args.steps} steps of batch {args.batch}, "
        f"H={args.hidden}, Adam lr {args.lr} (IRNN: {args.irnn_steps} steps, lr {args.irnn_lr}); "
        "always answering 1 scores 0.167"
    )
    print(f"{'cell':6}" + "".join(f"{name:>16}" for name, _, _ in cols) + f"{'seconds':>10}")
    results = {}
    for cell in cells:
        t0 = time.perf_counter()
        row = []
        for name, T, mixed in cols:
            results[cell, name] = mse = train(cell, T, mixed, args)
            row.append(f"{mse:16.4f}")
        print(f"{cell:6}" + "".join(row) + f"{time.perf_counter() - t0:10.1f}", flush=True)
    return results


if __name__ == "__main__":
    main()
