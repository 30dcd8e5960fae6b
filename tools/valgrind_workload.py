"""A short program that touches every native code path, for tools/valgrind_check.sh.

Every kernel's forward and backward (RNN tanh/relu, LSTM, GRU reset-after and reset-before;
float32 and float64; dense and one-hot input; with and without initial states, biases and
output gradients), the fused cross-entropy kernels, a two-layer LSTM with dropout, a few
training steps of the character model, a checkpoint round trip and the native sampler.
Results are compared with the NumPy reference: memcheck reports uninitialised memory only when
a value is used (a branch, an address), and the comparison uses every output element.

Shapes are tiny (valgrind runs it 20-50x slower). Exits non-zero if any result is wrong.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import rnncore
from rnncore import reference

T, B, D, H = 5, 3, 4, 7
checked = 0


def close(name: str, got: np.ndarray | None, want: np.ndarray | None, dtype) -> None:
    global checked
    if got is None or want is None:
        if (got is None) != (want is None):
            sys.exit(f"{name}: one of the results is None, the other is not")
        return
    tol = 1e-4 if dtype == np.float32 else 1e-10
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        sys.exit(f"{name}: shape {got.shape}, expected {want.shape}")
    err = float(np.max(np.abs(got - want), initial=0.0))
    if not err <= tol * max(1.0, float(np.max(np.abs(want), initial=0.0))):
        sys.exit(f"{name}: max abs error {err} > tolerance {tol}")
    checked += 1


def kernels(dtype, rng: np.random.Generator) -> None:
    k = 1 / np.sqrt(H)
    for cell, gates in (("rnn_tanh", 1), ("rnn_relu", 1), ("lstm", 4), ("gru", 3), ("gru0", 3)):
        w_ih = rng.uniform(-k, k, (gates * H, D)).astype(dtype)
        w_hh = rng.uniform(-k, k, (gates * H, H)).astype(dtype)
        b_ih = rng.uniform(-k, k, gates * H).astype(dtype)
        b_hh = rng.uniform(-k, k, gates * H).astype(dtype)
        ids = rng.integers(0, D, (T, B))
        for variant in ("dense", "onehot", "bare"):
            x = (
                np.eye(D, dtype=dtype)[ids]
                if variant == "onehot"
                else rng.standard_normal((T, B, D)).astype(dtype)
            )
            inp = ids if variant == "onehot" else x
            bare = variant == "bare"  # no states, biases or output gradients
            h0 = None if bare else rng.standard_normal((B, H)).astype(dtype)
            c0 = None if bare else rng.standard_normal((B, H)).astype(dtype)
            bi, bh = (None, None) if bare else (b_ih, b_hh)
            dy = rng.standard_normal((T, B, H)).astype(dtype)
            dh = None if bare else rng.standard_normal((B, H)).astype(dtype)
            dc = None if bare else rng.standard_normal((B, H)).astype(dtype)
            name = f"{cell}/{np.dtype(dtype).name}/{variant}"
            if cell.startswith("rnn"):
                nl = cell.split("_")[1]
                out = rnncore.rnn_forward(inp, h0, w_ih, w_hh, bi, bh, nonlinearity=nl)
                ref = reference.rnn_forward(x, h0, w_ih, w_hh, bi, bh, nonlinearity=nl)
                grads = rnncore.rnn_backward(dy, dh, out[-1])
                ref_grads = reference.rnn_backward(dy, dh, ref[-1])
            elif cell == "lstm":
                out = rnncore.lstm_forward(inp, h0, c0, w_ih, w_hh, bi, bh)
                ref = reference.lstm_forward(x, h0, c0, w_ih, w_hh, bi, bh)
                grads = rnncore.lstm_backward(dy, dh, dc, out[-1])
                ref_grads = reference.lstm_backward(dy, dh, dc, ref[-1])
            else:
                ra = cell == "gru"
                out = rnncore.gru_forward(inp, h0, w_ih, w_hh, bi, bh, reset_after=ra)
                ref = reference.gru_forward(x, h0, w_ih, w_hh, bi, bh, reset_after=ra)
                grads = rnncore.gru_backward(dy, dh, out[-1])
                ref_grads = reference.gru_backward(dy, dh, ref[-1])
            for i, (a, b) in enumerate(zip(out[:-1], ref[:-1], strict=True)):
                close(f"{name} forward[{i}]", a, b, dtype)
            if variant == "onehot":  # backward returns dx = None for ids
                if grads[0] is not None:
                    sys.exit(f"{name}: dx must be None for one-hot input")
                grads, ref_grads = grads[1:], ref_grads[1:]
            for i, (a, b) in enumerate(zip(grads, ref_grads, strict=True)):
                close(f"{name} backward[{i}]", a, b, dtype)
            # Inference: no cache.
            y = rnncore.rnn_forward(inp, h0, w_ih[:H], w_hh[:H, :H], training=False)[0]
            close(f"{name} inference", y, reference.rnn_forward(x, h0, w_ih[:H], w_hh[:H, :H])[0],
                  dtype)  # fmt: skip


def cross_entropy(dtype, rng: np.random.Generator) -> None:
    N, V = 11, 6
    z = rng.standard_normal((N, V)).astype(dtype)
    y = rng.integers(0, V, N)
    loss, dz = rnncore.softmax_cross_entropy(z, y)
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64).sum(1))
    p = np.exp(z64 - lse[:, None])
    want = float(np.mean(lse - z64[np.arange(N), y]))
    p[np.arange(N), y] -= 1
    close("softmax_cross_entropy loss", np.array(loss), np.array(want), dtype)
    close("softmax_cross_entropy grad", dz, p / N, dtype)
    h = rng.standard_normal((N, H)).astype(dtype)
    w = rng.standard_normal((V, H)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    loss, dh, dw, db = rnncore.linear_cross_entropy(h, w, b, y)
    loss2, dz2 = rnncore.softmax_cross_entropy((h @ w.T + b).astype(dtype), y)
    close("linear_cross_entropy loss", np.array(loss), np.array(loss2), dtype)
    close("linear_cross_entropy dh", dh, dz2 @ w, dtype)
    close("linear_cross_entropy dw", dw, dz2.T @ h, dtype)
    close("linear_cross_entropy db", db, dz2.sum(0), dtype)


def layer_and_training() -> None:
    lstm = rnncore.LSTM(D, H, num_layers=2, dropout=0.3, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, D))
    lstm.zero_grad()
    y, (h, c) = lstm.forward(x)
    dx, _ = lstm.backward(np.ones_like(y))
    if not (np.isfinite(dx).all() and all(np.isfinite(g).all() for g in lstm.grads.values())):
        sys.exit("LSTM layer: non-finite gradients")
    y2, _ = lstm.forward(x, (h, c), training=False)
    if not np.isfinite(y2).all():
        sys.exit("LSTM layer: non-finite inference output")

    text = "the quick brown fox jumps over the lazy dog. " * 8
    corpus = rnncore.Corpus.from_text(text)
    for cell in ("lstm", "gru", "rnn"):
        cfg = rnncore.TrainConfig(cell=cell, hidden_size=8, num_layers=2, embedding_size=4,
                                  seq_length=6, batch_size=2, max_steps=3, seed=1,
                                  dropout=0.1)  # fmt: skip
        trainer = rnncore.Trainer(corpus, cfg)
        trainer.run()
        if trainer.step != 3:
            sys.exit(f"training {cell}: {trainer.step} steps, expected 3")
        val = trainer.evaluate()
        if not np.isfinite(val):
            sys.exit(f"training {cell}: validation loss {val}")
        with tempfile.TemporaryDirectory() as tmp:
            path = trainer.save(Path(tmp) / "c.npz")
            resumed = rnncore.Trainer.resume(path, corpus, max_steps=4)
            resumed.run()
        sample = rnncore.generate(trainer.model, corpus.vocab, prime="the ", length=20, seed=0)
        if len(sample) != 24:
            sys.exit(f"sampling {cell}: {len(sample)} characters, expected 24")


def main() -> None:
    rnncore.set_num_threads(2)  # the OpenMP regions with more than one thread
    rng = np.random.default_rng(20261201)
    for dtype in (np.float32, np.float64):
        kernels(dtype, rng)
        cross_entropy(dtype, rng)
    layer_and_training()
    print(f"valgrind_workload: {checked} results match the reference; layer, training, "
          f"checkpoint and sampling ran")  # fmt: skip


if __name__ == "__main__":
    main()
