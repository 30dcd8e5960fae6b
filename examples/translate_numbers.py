"""Many-to-many, encoder-decoder: English number words -> French number words.

"ninety-seven" -> "quatre-vingt-dix-sept". The encoder (an Embedding, then a GRU) reads the
English characters; its final state starts the decoder (a GRU over the previous French
character, a linear layer and the softmax predict the next one, up to the end token). Training
uses teacher forcing; both sides are padded batches of mixed lengths run through lengths=
(the encoder's final state is each sentence's own, the loss covers the kept steps only).
The bidirectional encoder has H/2 units per direction; its two final states (forward after
the last character, reverse after the first) are concatenated into the decoder's H.
Exact match on numbers held out from training, greedy decoding.

    python examples/translate_numbers.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from number_words import english, french

import rnncore
from rnncore.optim import Adam, ParamGroup, clip_grad_norm

BOS, EOS = "^", "$"  # start and end tokens (characters no name contains)


def pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(T, B) int32 ids, zero-padded, and the (B,) lengths."""
    lengths = np.array([len(s) for s in seqs])
    out = np.zeros((int(lengths.max()), len(seqs)), np.int32)
    for b, s in enumerate(seqs):
        out[: len(s), b] = s
    return out, lengths


class Translator:
    """Embedding + GRU encoder (one or two directions) -> GRU decoder -> Linear + softmax."""

    def __init__(self, v_src: int, v_tgt: int, hidden: int, bidirectional: bool, seed: int):
        self.bidirectional = bidirectional
        self.emb = rnncore.Embedding(v_src, 32, seed=seed)
        # Bidirectional: H/2 units per direction, so that the two final states concatenated
        # are the decoder's H.
        h_enc = hidden // 2 if bidirectional else hidden
        self.enc = rnncore.GRU(32, h_enc, bidirectional=bidirectional, seed=seed + 1)
        self.dec = rnncore.GRU(v_tgt, hidden, seed=seed + 2)
        self.out = rnncore.Linear(hidden, v_tgt, seed=seed + 3)
        modules = {"emb": self.emb, "enc": self.enc, "dec": self.dec, "out": self.out}
        self.group = ParamGroup.of(modules)

    def encode(self, src, src_len, training: bool = True) -> np.ndarray:
        """The decoder's initial state (1, B, H) from the encoder's final state(s)."""
        _, h = self.enc.forward(self.emb.forward(src), lengths=src_len, training=training)
        if not self.bidirectional:
            return h  # (1, B, H)
        return np.concatenate([h[0], h[1]], axis=1)[None]  # (1, B, H): forward, reverse

    def backward_encoder(self, dh0: np.ndarray) -> None:
        """Backpropagate dL/dh0 (1, B, H) through the encoder and the embedding."""
        if self.bidirectional:
            half = dh0.shape[-1] // 2
            dh0 = np.stack([dh0[0, :, :half], dh0[0, :, half:]])  # (2, B, H/2)
        dx, _ = self.enc.backward(None, np.ascontiguousarray(dh0))
        self.emb.backward(dx)

    def train_step(self, src, src_len, inp, tgt, tgt_len) -> float:
        """Teacher-forced forward/backward; adds into self.group.grad; returns the loss."""
        h0 = self.encode(src, src_len)
        y, _ = self.dec.forward(inp, h0, lengths=tgt_len)  # (T, B, H)
        mask = np.arange(len(inp))[:, None] < tgt_len[None, :]  # (T, B)
        loss, dh, dw, db = rnncore.linear_cross_entropy(
            y.reshape(-1, y.shape[-1]),
            self.out.weight,
            self.out.bias,
            tgt.reshape(-1),
            mask=mask.reshape(-1),
        )
        self.out.grads["weight"][...] += dw
        self.out.grads["bias"][...] += db
        _, dh0 = self.dec.backward(dh.reshape(y.shape))
        self.backward_encoder(dh0)
        return loss

    def translate(self, src, src_len, bos: int, eos: int, max_len: int) -> np.ndarray:
        """Greedy decoding: (steps, B) ids, each column EOS-padded after its EOS."""
        h = self.encode(src, src_len, training=False)
        prev = np.full((1, src.shape[1]), bos, np.int32)
        done = np.zeros(src.shape[1], bool)
        out = []
        for _ in range(max_len):
            y, h = self.dec.forward(prev, h, training=False)
            nxt = self.out.forward(y[0]).argmax(-1).astype(np.int32)
            nxt[done] = eos
            out.append(nxt)
            done |= nxt == eos
            if done.all():
                break
            prev = nxt[None]
        return np.stack(out)


def run(bidirectional: bool, args, data) -> tuple[float, float, float]:
    """Train one encoder kind; return (train exact match, held-out exact match, seconds)."""
    train, test, en, fr, src_index, tgt_chars, tgt_index = data
    rng = np.random.default_rng(args.seed)
    model = Translator(len(src_index), len(tgt_chars), args.hidden, bidirectional, args.seed)
    opt = Adam(model.group, lr=args.lr)
    t0 = time.perf_counter()

    def batch_src(nums):
        return pad([[src_index[c] for c in en[n]] for n in nums])

    for _ in range(args.steps):
        nums = rng.choice(train, args.batch)
        src, src_len = batch_src(nums)
        ids = [[tgt_index[c] for c in fr[n]] for n in nums]
        inp, tgt_len = pad([[tgt_index[BOS], *s] for s in ids])
        tgt, _ = pad([[*s, tgt_index[EOS]] for s in ids])
        model.group.zero_grad()
        model.train_step(src, src_len, inp, tgt, tgt_len)
        clip_grad_norm(model.group, 5.0)
        opt.step()
    seconds = time.perf_counter() - t0

    def exact(nums):
        src, src_len = batch_src(nums)
        ids = model.translate(src, src_len, tgt_index[BOS], tgt_index[EOS], 40)
        got = ["".join(tgt_chars[i] for i in col).split(EOS)[0] for col in ids.T]
        return float(np.mean([g == fr[n] for g, n in zip(got, nums, strict=True)]))

    return exact(train), exact(test), seconds


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """Train both encoders; return {"unidirectional"|"bidirectional": (train, held out, s)}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128, help="the decoder's H (even)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--held-out", type=int, default=100, help="numbers kept out of training")
    ap.add_argument("--encoders", default="uni,bi", help="uni, bi or uni,bi")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rnncore.set_num_threads(args.threads)
    numbers = np.random.default_rng(args.seed).permutation(1000)
    test, train = numbers[: args.held_out], numbers[args.held_out :]
    en = {n: english(n) for n in range(1000)}
    fr = {n: french(n) for n in range(1000)}
    src_index = {c: i for i, c in enumerate(sorted({c for s in en.values() for c in s}))}
    tgt_chars = [BOS, EOS, *sorted({c for s in fr.values() for c in s})]
    tgt_index = {c: i for i, c in enumerate(tgt_chars)}
    data = (train, test, en, fr, src_index, tgt_chars, tgt_index)
    print(
        f"English -> French number words: exact match after {args.steps} steps of batch "
        f"{args.batch}, H={args.hidden}, {len(test)} numbers held out"
    )
    print(f"{'encoder':16}{'train':>10}{'held out':>10}{'seconds':>10}")
    results = {}
    for kind in [k for k in args.encoders.split(",") if k]:
        name = {"uni": "unidirectional", "bi": "bidirectional"}[kind]
        results[name] = r = run(kind == "bi", args, data)
        print(f"{name:16}{r[0]:10.1%}{r[1]:10.1%}{r[2]:10.1f}", flush=True)
    return results


if __name__ == "__main__":
    main()
