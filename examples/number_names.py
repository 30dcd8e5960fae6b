"""One-to-many (the captioning shape): from the digits of n in 0-999, generate its French name.

The feature vector f (30,) is one one-hot block per digit (hundreds, tens, units). It sets the
decoder's initial state, h0 = tanh(W f + b); a GRU then reads the previous character (the
start token first) and a linear layer with the softmax predicts the next one, up to the end
token. Training uses teacher forcing over padded batches (lengths=, loss on the kept steps);
evaluation decodes greedily, stopping at the end token, on numbers held out from training.
French spelling: traditional (see number_words.py).

    python examples/number_names.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from number_words import french

import rnncore
from rnncore.optim import Adam, ParamGroup, clip_grad_norm

BOS, EOS = "^", "$"  # start and end tokens (characters no name contains)


def features(numbers: np.ndarray) -> np.ndarray:
    """(B, 30) float32: one-hot hundreds, tens and units digits of each number."""
    f = np.zeros((len(numbers), 30), np.float32)
    for k, d in enumerate((numbers // 100, numbers // 10 % 10, numbers % 10)):
        f[np.arange(len(numbers)), 10 * k + d] = 1
    return f


def encode(names: list[str], index: dict[str, int]):
    """Teacher-forcing batch: inputs (T, B) = BOS + name, targets (T, B) = name + EOS, lengths."""
    lengths = np.array([len(s) + 1 for s in names])
    T = int(lengths.max())
    inp = np.zeros((T, len(names)), np.int32)
    tgt = np.zeros((T, len(names)), np.int32)
    for b, s in enumerate(names):
        ids = [index[c] for c in s]
        inp[: len(s) + 1, b] = [index[BOS], *ids]
        tgt[: len(s) + 1, b] = [*ids, index[EOS]]
    return inp, tgt, lengths


class Captioner:
    """h0 = tanh(init(f)); GRU over the previous characters; out: logits of the next one."""

    def __init__(self, vocab: int, hidden: int, seed: int) -> None:
        self.init = rnncore.Linear(30, hidden, seed=seed)
        self.gru = rnncore.GRU(vocab, hidden, seed=seed + 1)
        self.out = rnncore.Linear(hidden, vocab, seed=seed + 2)
        self.group = ParamGroup.of({"init": self.init, "gru": self.gru, "out": self.out})

    def h0(self, f: np.ndarray) -> np.ndarray:
        return np.tanh(self.init.forward(f))[None]  # (1, B, H)

    def train_step(self, f, inp, tgt, lengths) -> float:
        """One forward/backward; adds into self.group.grad; returns the mean loss per char."""
        h0 = self.h0(f)
        y, _ = self.gru.forward(inp, h0, lengths=lengths)  # (T, B, H), token ids in
        mask = np.arange(len(inp))[:, None] < lengths[None, :]  # (T, B) kept steps
        H = y.shape[-1]
        loss, dh, dw, db = rnncore.linear_cross_entropy(
            y.reshape(-1, H), self.out.weight, self.out.bias, tgt.reshape(-1), mask=mask.reshape(-1)
        )
        self.out.grads["weight"][...] += dw
        self.out.grads["bias"][...] += db
        _, dh0 = self.gru.backward(dh.reshape(y.shape))
        self.init.backward((dh0[0] * (1 - h0[0] ** 2)).astype(np.float32))
        return loss

    def generate(self, f: np.ndarray, bos: int, eos: int, max_len: int) -> np.ndarray:
        """Greedy decoding: (steps, B) ids, each row stopped (then EOS-padded) at its EOS."""
        h = self.h0(f)
        prev = np.full((1, len(f)), bos, np.int32)
        done = np.zeros(len(f), bool)
        out = []
        for _ in range(max_len):
            y, h = self.gru.forward(prev, h, training=False)
            nxt = self.out.forward(y[0]).argmax(-1).astype(np.int32)  # (B,)
            nxt[done] = eos
            out.append(nxt)
            done |= nxt == eos
            if done.all():
                break
            prev = nxt[None]
        return np.stack(out)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and evaluate; return {"train": exact match, "held_out": exact match}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--held-out", type=int, default=100, help="numbers kept out of training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rnncore.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    numbers = rng.permutation(1000)
    test, train = numbers[: args.held_out], numbers[args.held_out :]
    names = {n: french(int(n)) for n in range(1000)}
    chars = [BOS, EOS, *sorted({c for s in names.values() for c in s})]
    index = {c: i for i, c in enumerate(chars)}
    model = Captioner(len(chars), args.hidden, args.seed)
    opt = Adam(model.group, lr=args.lr)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = rng.choice(train, args.batch)
        inp, tgt, lengths = encode([names[n] for n in batch], index)
        model.group.zero_grad()
        loss = model.train_step(features(batch), inp, tgt, lengths)
        clip_grad_norm(model.group, 5.0)
        opt.step()
        if step % max(1, args.steps // 5) == 0:
            print(f"step {step:5d}  loss {loss:.4f}  {time.perf_counter() - t0:6.1f} s", flush=True)

    def exact(nums: np.ndarray) -> tuple[float, list[str]]:
        ids = model.generate(features(nums), index[BOS], index[EOS], 40)
        got = ["".join(chars[i] for i in col).split(EOS)[0] for col in ids.T]
        return float(np.mean([g == names[n] for g, n in zip(got, nums, strict=True)])), got

    res = {"train": exact(train)[0], "held_out": exact(test)[0]}
    _, got = exact(test[:5])
    print(f"\n{'numbers':12}{'count':>8}{'exact match':>14}")
    print(f"{'train':12}{len(train):8d}{res['train']:14.1%}")
    print(f"{'held out':12}{len(test):8d}{res['held_out']:14.1%}")
    for n, g in zip(test[:5], got, strict=True):
        print(f"  {n:3d} -> {g!r}" + ("" if g == names[n] else f"  (expected {names[n]!r})"))
    return res


if __name__ == "__main__":
    main()
