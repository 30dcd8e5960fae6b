"""Synchronous many-to-many, a label per step: tag the speaker-name lines of tiny-shakespeare.

The rule, exact: a line is a speaker-name line when it directly follows an empty line (or is
the file's first line) and ends with ':'; each of its characters and its newline is labelled
1, every other character 0 (in the shipped corpus this marks the 7222 lines such as
"First Citizen:"). The tagger reads the text with its empty lines removed (each "\\n\\n"
becomes "\\n"), so the position of a line no longer gives the answer: whether a line is a
name is read from the line itself, and its ':' comes at its end. A unidirectional LSTM must
decide at each character from what it has read so far; a bidirectional one also sees the
characters ahead. Per-character error on the last part of the text, held out.

    python examples/speaker_tagging.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rnncore
from rnncore.optim import Adam, ParamGroup, clip_grad_norm


def tag(text: str) -> tuple[str, np.ndarray]:
    """The tagger's input (text without its empty lines) and its (N,) int32 labels."""
    lines = text.split("\n")
    kept, labels = [], []
    for i, line in enumerate(lines):
        if line == "":
            continue  # empty lines are dropped from the input
        name = (i == 0 or lines[i - 1] == "") and line.endswith(":")
        kept.append(line + "\n")
        labels.append(np.full(len(line) + 1, int(name), np.int32))
    return "".join(kept), np.concatenate(labels)


def evaluate(rnn, head, ids: np.ndarray, labels: np.ndarray, window: int) -> float:
    """Per-character error over ids in consecutive windows (each read from its own start)."""
    n = len(ids) // window * window
    x = np.ascontiguousarray(ids[:n].reshape(-1, window).T)  # (window, B)
    y, _ = rnn.forward(x, training=False)
    pred = head.forward(y).argmax(-1)  # (window, B)
    return float(np.mean(pred.T.reshape(-1) != labels[:n]))


def run(bidirectional: bool, args, data) -> tuple[float, float, float]:
    """Train one tagger; return (train error, held-out error, seconds)."""
    ids, labels, split, vocab = data
    rng = np.random.default_rng(args.seed)
    rnn = rnncore.LSTM(vocab, args.hidden, bidirectional=bidirectional, seed=args.seed)
    head = rnncore.Linear(rnn.num_directions * args.hidden, 2, seed=args.seed + 1)
    group = ParamGroup.of({"rnn": rnn, "head": head})
    opt = Adam(group, lr=args.lr)
    T, B = args.seq_len, args.batch
    t0 = time.perf_counter()
    for _ in range(args.steps):
        starts = rng.integers(0, split - T, B)
        idx = starts[None, :] + np.arange(T)[:, None]  # (T, B)
        group.zero_grad()
        y, _ = rnn.forward(ids[idx])  # (T, B, dirs*H), token ids in
        _, dh, dw, db = rnncore.linear_cross_entropy(
            y.reshape(T * B, -1), head.weight, head.bias, labels[idx].reshape(-1)
        )
        head.grads["weight"][...] += dw
        head.grads["bias"][...] += db
        rnn.backward(dh.reshape(y.shape))
        clip_grad_norm(group, 5.0)
        opt.step()
    seconds = time.perf_counter() - t0
    n_eval = args.eval_chars
    train_err = evaluate(rnn, head, ids[:n_eval], labels[:n_eval], args.eval_window)
    held = slice(split, split + n_eval)
    test_err = evaluate(rnn, head, ids[held], labels[held], args.eval_window)
    return train_err, test_err, seconds


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """Train both taggers; return {"unidirectional"|"bidirectional": (train, held out, s)}
    and "majority": the error of always answering 0 on the held-out part."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--held-out", type=float, default=0.1, help="last fraction of the text")
    ap.add_argument("--eval-chars", type=int, default=100_000, help="characters scored")
    ap.add_argument("--eval-window", type=int, default=500)
    ap.add_argument("--taggers", default="uni,bi", help="uni, bi or uni,bi")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rnncore.set_num_threads(args.threads)
    corpus = rnncore.load_corpus()  # the shipped tiny-shakespeare
    text, labels = tag(corpus.decode())
    vocab = rnncore.Vocabulary.from_text(text)
    ids = vocab.encode(text).astype(np.int32)
    split = int(len(ids) * (1 - args.held_out))
    args.eval_chars = min(args.eval_chars, len(ids) - split)
    held = labels[split : split + args.eval_chars]
    majority = float(held.mean())  # always answering 0 (not a name)
    print(
        f"speaker-name tagging: per-character error after {args.steps} steps of "
        f"{args.batch}x{args.seq_len} chars, H={args.hidden}, {args.eval_chars} held-out chars"
    )
    print(f"{'tagger':16}{'train':>10}{'held out':>10}{'seconds':>10}")
    print(f"{'always 0':16}{labels[: args.eval_chars].mean():10.2%}{majority:10.2%}{'':>10}")
    results: dict = {"majority": majority}
    for kind in [k for k in args.taggers.split(",") if k]:
        name = {"uni": "unidirectional", "bi": "bidirectional"}[kind]
        results[name] = r = run(kind == "bi", args, (ids, labels, split, len(vocab)))
        print(f"{name:16}{r[0]:10.2%}{r[1]:10.2%}{r[2]:10.1f}", flush=True)
    return results


if __name__ == "__main__":
    main()
