"""The character-level language model: the fused output kernels, the model, training, exact
resume, sampling, checkpoints and the command line."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

import rnncore
from conftest import num_threads, rel_err
from rnncore.checkpoint import CheckpointError, load_checkpoint
from rnncore.cli import main
from rnncore.data import Corpus, load_corpus
from rnncore.model import CharRNN
from rnncore.sample import generate, sample_stream
from rnncore.train import TrainConfig, Trainer, TrainingDiverged

TEXT = "the quick brown fox jumps over the lazy dog. " * 40  # 1800 characters, 28 distinct
UNICODE = "Привет, мир! 日本語 🙂 αβγ — naïve café.\n" * 60


def np_xent(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The NumPy oracle: mean cross-entropy and its gradient, in float64."""
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    p = np.exp(z - lse[:, None])
    p[np.arange(len(y)), y] -= 1
    return float(np.mean(lse - z[np.arange(len(y)), y])), p / len(y)


# --- the fused kernels ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("N", "V"), [(1, 1), (7, 5), (300, 65), (64, 257)])
def test_softmax_cross_entropy_matches_numpy(rng, dtype, N, V):
    z = (rng.standard_normal((N, V)) * 3).astype(dtype)
    y = rng.integers(0, V, N)
    loss, d = rnncore.softmax_cross_entropy(z, y)
    want_loss, want_d = np_xent(z, y)
    # float32: a handful of roundings in log-sum-exp over V terms; exp is accurate to a few ulp.
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert loss == pytest.approx(want_loss, rel=tol, abs=tol)
    assert d.dtype == dtype and d.shape == (N, V)
    assert rel_err(d, want_d) <= tol * 10


def test_softmax_cross_entropy_gradient_matches_central_differences(rng):
    z, y = rng.standard_normal((6, 9)), rng.integers(0, 9, 6)
    _, d = rnncore.softmax_cross_entropy(z, y)
    h, num = 1e-6, np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        num[idx] = (
            rnncore.softmax_cross_entropy(zp, y, grad=False)[0]
            - rnncore.softmax_cross_entropy(zm, y, grad=False)[0]
        ) / (2 * h)
    assert rel_err(d, num) <= 1e-6


def test_softmax_cross_entropy_is_stable_and_keeps_nan_in_its_row():
    z = np.array([[1e4, 0.0, -1e4], [1000.0, 1000.0, 1000.0], [0.0, np.nan, 1.0]], np.float32)
    loss, d = rnncore.softmax_cross_entropy(z[:2], np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx((1e4 + math.log(3)) / 2, rel=1e-6)
    loss, d = rnncore.softmax_cross_entropy(z, np.array([1, 2, 0]))
    assert math.isnan(loss)
    assert np.isfinite(d[:2]).all() and np.isnan(d[2]).all()
    assert rnncore.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, int))[0] == 0.0


def test_softmax_cross_entropy_rejects_bad_input():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"targets must hold ids in \[0, 4\), got 4 at flat position 1"
    ):
        rnncore.softmax_cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(
        TypeError,
        match=r"targets must be an integer array of token ids, got an array of dtype float64",
    ):
        rnncore.softmax_cross_entropy(z, np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"targets must have shape \(N,\) with N = 3 \(from logits\), got shape \(2,\)",
    ):
        rnncore.softmax_cross_entropy(z, np.array([0, 1]))
    with pytest.raises(
        ValueError, match=r"logits must be a 2-D array of shape \(N, V\), got a 1-D"
    ):
        rnncore.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(TypeError, match=r"logits must be a float32 or float64 array, got None"):
        rnncore.softmax_cross_entropy(None, np.array([0]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_numpy_at_any_thread_count(rng, dtype, bias):
    N, H, V = 203, 33, 29
    h = rng.standard_normal((N, H)).astype(dtype)
    w = (rng.standard_normal((V, H)) * 0.3).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    y = rng.integers(0, V, N)
    z = h.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    want_loss, dz = np_xent(z, y)
    results = []
    for n in (1, 2):
        with num_threads(n):
            results.append(rnncore.linear_cross_entropy(h, w, b, y))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for loss, dh, dw, db in results:
        assert loss == pytest.approx(want_loss, rel=tol)
        assert rel_err(dh, dz @ w.astype(np.float64)) <= tol
        assert rel_err(dw, dz.T @ h.astype(np.float64)) <= tol
        assert (db is None) == (b is None)
        if b is not None:
            assert rel_err(db, dz.sum(0)) <= tol
    (l1, *g1), (l2, *g2) = results
    # The loss is summed in row order; the logits of a row may round differently when OpenBLAS
    # gets it in another row block (float32: an ulp or two of each logit).
    assert l1 == pytest.approx(l2, rel=64 * float(np.finfo(dtype).eps))
    for a, c in zip(g1, g2, strict=True):
        if a is not None:
            assert rel_err(a, c) <= 4 * float(np.finfo(dtype).eps)
    loss_only = rnncore.linear_cross_entropy(h, w, b, y, grad=False)
    assert loss_only[0] == pytest.approx(results[0][0], rel=tol) and loss_only[1:] == (None,) * 3


def test_linear_cross_entropy_rejects_mismatched_shapes():
    h, w = np.zeros((4, 3)), np.zeros((5, 3))
    with pytest.raises(
        ValueError, match=r"h must have shape \(N, H\) with H = 3 \(from w\), got shape \(4, 2\)"
    ):
        rnncore.linear_cross_entropy(np.zeros((4, 2)), w, None, np.zeros(4, int))
    with pytest.raises(TypeError, match=r"h must have dtype float64"):
        rnncore.linear_cross_entropy(h.astype(np.float32), w, None, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"b must have shape \(V,\) with V = 5"):
        rnncore.linear_cross_entropy(h, w, np.zeros(4), np.zeros(4, int))


# --- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding_size", [5, 0])
def test_model_gradients_match_central_differences(rng, cell, embedding_size):
    model = CharRNN(7, cell=cell, hidden_size=6, num_layers=2, embedding_size=embedding_size,
                    dtype=np.float64, seed=1)  # fmt: skip
    x, y = rng.integers(0, 7, (5, 3)), rng.integers(0, 7, (5, 3))
    x[0, 0] = x[1, 2] = 3  # a repeated token: its embedding gradient sums two positions
    model.zero_grad()
    model.train_step(x, y)
    grad = model.params.grad.copy()
    data, h = model.params.data, 1e-6
    picks = rng.choice(np.flatnonzero(grad != 0), 40, replace=False)
    for i in picks:
        old = data[i]
        data[i] = old + h
        lp = model.loss(x, y, training=False)[0]
        data[i] = old - h
        lm = model.loss(x, y, training=False)[0]
        data[i] = old
        num = (lp - lm) / (2 * h)
        assert abs(num - grad[i]) <= 1e-6 * max(1.0, abs(num)), (i, num, grad[i])


def test_model_gradients_with_dropout_match_central_differences(rng):
    """Dropout between the layers and on the top output (char-rnn's), masks fixed by the seed."""
    model = CharRNN(7, hidden_size=6, num_layers=2, embedding_size=5, dropout=0.4,
                    dtype=np.float64, seed=1)  # fmt: skip
    x, y = rng.integers(0, 7, (5, 3)), rng.integers(0, 7, (5, 3))
    gen = model.rnn._rng.bit_generator
    saved = gen.state
    model.zero_grad()
    model.train_step(x, y)
    grad = model.params.grad.copy()
    data, h = model.params.data, 1e-6
    gen.state = saved
    assert model.loss(x, y)[0] != model.loss(x, y, training=False)[0]  # dropout is on
    for i in rng.choice(np.flatnonzero(grad != 0), 30, replace=False):
        old, losses = data[i], []
        for v in (old + h, old - h):
            data[i] = v
            gen.state = saved  # the same masks as the gradient's forward
            losses.append(model.loss(x, y)[0])
        data[i] = old
        num = (losses[0] - losses[1]) / (2 * h)
        assert abs(num - grad[i]) <= 1e-6 * max(1.0, abs(num)), (i, num, grad[i])


def test_model_state_dict_loads_into_the_equivalent_torch_program(rng):
    torch = pytest.importorskip("torch")
    model = CharRNN(11, hidden_size=8, num_layers=2, embedding_size=4, dtype=np.float64, seed=0)
    emb = torch.nn.Embedding(11, 4, dtype=torch.float64)
    lstm = torch.nn.LSTM(4, 8, 2, dtype=torch.float64)
    dec = torch.nn.Linear(8, 11, dtype=torch.float64)
    sd = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    emb.load_state_dict({"weight": sd["embedding.weight"]})
    lstm.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
    dec.load_state_dict({"weight": sd["decoder.weight"], "bias": sd["decoder.bias"]})
    x, y = rng.integers(0, 11, (6, 2)), rng.integers(0, 11, (6, 2))
    out, _ = lstm(emb(torch.from_numpy(x)))
    want = torch.nn.functional.cross_entropy(
        dec(out).reshape(-1, 11), torch.from_numpy(y).reshape(-1)
    )
    assert model.loss(x, y, training=False)[0] == pytest.approx(float(want.detach()), rel=1e-12)


def test_hello_example_learns_to_predict_e_l_l_o():
    """The seed notes' example: vocabulary {h, e, l, o}, "hell" -> "ello"."""
    corpus = Corpus.from_text("hello")
    vocab = corpus.vocab
    x, y = vocab.encode("hell").reshape(4, 1), vocab.encode("ello").reshape(4, 1)
    model = CharRNN(4, cell="rnn", hidden_size=8, num_layers=1, embedding_size=0,
                    dtype=np.float64, seed=0)  # fmt: skip  # one-hot input, as in the notes
    opt = rnncore.optim.Adam(model.params, lr=0.1)
    first = model.loss(x, y, training=False)[0]
    for _ in range(200):
        model.zero_grad()
        model.train_step(x.astype(np.intp), y.astype(np.intp))
        opt.step()
    last = model.loss(x, y, training=False)[0]
    assert first > 1.0 and last < 0.05
    assert generate(model, vocab, prime="h", length=4, greedy=True) == "hello"


# --- training, resume, sampling -------------------------------------------------------------------


def small_config(**kw) -> TrainConfig:
    base = dict(hidden_size=16, num_layers=2, embedding_size=8, seq_length=10, batch_size=4,
                val_fraction=0.1, max_steps=40, seed=3, dropout=0.1)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_lowers_the_loss(cell):
    trainer = Trainer(Corpus.from_text(TEXT), small_config(cell=cell, max_steps=150, lr=1e-2))
    before = trainer.evaluate()
    losses = []
    trainer.run(lambda t, info: losses.append(info.loss))
    after = trainer.evaluate()
    assert len(losses) == 150 and trainer.step == 150
    assert after < before - 1.0, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0


def test_validation_does_not_disturb_the_training_state():
    a = Trainer(Corpus.from_text(TEXT), small_config(max_steps=12))
    b = Trainer(Corpus.from_text(TEXT), small_config(max_steps=12))
    for i in range(12):
        a.train_step()
        b.train_step()
        if i % 3 == 0:
            b.evaluate()
    np.testing.assert_array_equal(a.model.params.data, b.model.params.data)


def test_resume_continues_exactly(tmp_path):
    corpus = Corpus.from_text(TEXT)  # 1620 training characters: the data wraps twice
    with num_threads(1):
        straight = Trainer(corpus, small_config(max_steps=100))
        straight.run()
        half = Trainer(corpus, small_config(max_steps=100))
        half.run(max_steps=50)
        half.save(tmp_path / "half.npz")
        resumed = Trainer.resume(tmp_path / "half.npz", corpus)
        assert resumed.step == 50
        resumed.run()
    assert resumed.step == straight.step == 100
    assert resumed.train.epoch == straight.train.epoch >= 2
    np.testing.assert_array_equal(resumed.model.params.data, straight.model.params.data)
    for k in straight.optimizer.state:
        np.testing.assert_array_equal(resumed.optimizer.state[k], straight.optimizer.state[k])


def test_resume_refuses_another_text(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=2))
    t.run()
    t.save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="vocabulary"):
        Trainer.resume(tmp_path / "c.npz", Corpus.from_text(UNICODE))
    with pytest.raises(ValueError, match="saved for other data"):
        Trainer.resume(tmp_path / "c.npz", Corpus.from_text(TEXT[::-1]))


def test_nonfinite_gradients_are_skipped_or_stop_and_never_saved(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=5))
    t.run(max_steps=2)
    good = t.model.params.data.copy()
    t.model.params.params["decoder.bias"][0] = np.nan
    nan_bias = t.model.params.data.copy()
    info = t.train_step()
    assert info.skipped and t.step == 2  # not applied: the optimizer never saw NaN gradients
    np.testing.assert_array_equal(t.model.params.data, nan_bias)
    with pytest.raises(TrainingDiverged, match="refusing to save non-finite weights"):
        t.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    stop = Trainer(Corpus.from_text(TEXT), small_config(max_steps=5, nonfinite="stop"))
    stop.model.params.params["decoder.bias"][0] = np.inf
    with pytest.raises(TrainingDiverged, match="not finite"):
        stop.train_step()
    assert np.isfinite(good).all()


def test_seeded_sampling_is_reproducible_and_streams():
    model = CharRNN(len(Corpus.from_text(TEXT).vocab), hidden_size=16, seed=0)
    vocab = Corpus.from_text(TEXT).vocab
    a = generate(model, vocab, prime="the ", length=300, seed=7, temperature=0.9, top_k=5)
    b = "".join(sample_stream(model, vocab, prime="the ", length=300, seed=7, temperature=0.9,
                              top_k=5, chunk_size=17))  # fmt: skip
    assert a == b and len(a) == 304 and a.startswith("the ")
    assert generate(model, vocab, prime="the ", length=300, seed=8) != a
    pieces = list(sample_stream(model, vocab, prime="t", length=50, seed=1, chunk_size=10))
    assert pieces[0] == "t" and [len(p) for p in pieces[1:]] == [10] * 5
    # top_k=1 is greedy
    assert generate(model, vocab, prime="t", length=40, top_k=1, seed=1) == generate(
        model, vocab, prime="t", length=40, greedy=True
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_native_sampler_follows_the_model(cell, dtype, rng):
    """The C++ loop's greedy choices are argmax of the model's own logits, step by step.

    float32 runs the sampler's packed matrix-vector products (blocks of 32 rows: G*H = 36, 48
    or 12 rows here, so partial blocks), float64 OpenBLAS's gemv; both against the layers'
    forward pass. float32 sums in another order than the layers, so a pick may differ from
    the argmax only on a near tie: its logit must be within 1e-4 of the maximum.
    """
    vocab = Corpus.from_text(TEXT).vocab
    model = CharRNN(len(vocab), cell=cell, hidden_size=12, embedding_size=6, dtype=dtype,
                    seed=2)  # fmt: skip
    text = generate(model, vocab, prime="fox", length=40, greedy=True)
    ids = vocab.encode(text).astype(np.intp)
    p, state = model.params.params, None
    emb = p["embedding.weight"]
    tol = 0.0 if dtype == np.float64 else 1e-4
    for t in range(len(ids) - 1):
        out, state = model.rnn.forward(emb[ids[t : t + 1]][:, None, :], state, training=False)
        logits = (out[0, 0] @ p["decoder.weight"].T + p["decoder.bias"]).astype(np.float64)
        if t >= 2:  # after the prime
            if tol == 0.0:
                assert int(np.argmax(logits)) == ids[t + 1]
            else:
                assert logits[ids[t + 1]] >= logits.max() - tol, (
                    t,
                    logits.max(),
                    logits[ids[t + 1]],
                )
            # follow the sampler's own choice (the state feeds on the chosen token)


def test_unicode_corpus_and_prime():
    corpus = Corpus.from_text(UNICODE)
    trainer = Trainer(corpus, small_config(max_steps=5))
    trainer.run()
    text = generate(trainer.model, corpus.vocab, prime="日本🙂", length=50, seed=0)
    assert text.startswith("日本🙂") and len(text) == 53
    assert set(text) <= set(UNICODE)
    with pytest.raises(
        ValueError, match=r"4 characters not in the vocabulary of \d+ tokens: 'Z' \(U\+005A\), '§'"
    ):
        generate(trainer.model, corpus.vocab, prime="Zебра§", length=5)


def test_bytes_vocabulary_samples_bytes():
    corpus = Corpus.from_text(UNICODE.encode("utf-8"))
    trainer = Trainer(corpus, small_config(max_steps=3))
    trainer.run()
    out = generate(trainer.model, corpus.vocab, prime="П", length=10, seed=0)
    assert isinstance(out, bytes) and out.startswith("П".encode()) and len(out) == 12


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=2))
    t.run()
    path = t.save(tmp_path / "c.npz")
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.npz: corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.npz")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x40
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flip\.npz"):
        load_checkpoint(tmp_path / "flip.npz")
    (tmp_path / "foreign.npz").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"foreign\.npz: not an rnncore checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")


# --- the command line -----------------------------------------------------------------------------


def test_cli_train_then_sample(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    ckpt, metrics, plot = tmp_path / "m.npz", tmp_path / "m.jsonl", tmp_path / "loss.png"
    args = [
        "train", str(text), "--hidden-size", "16", "--embedding-size", "8", "--seq-length",
        "10", "--batch-size", "4", "--max-steps", "30", "--eval-every", "10", "--sample-every",
        "15", "--sample-length", "20", "--checkpoint", str(ckpt), "--metrics", str(metrics),
        "--val-fraction", "0.1", "--log-every", "5", "--lr", "0.01",
    ]  # fmt: skip
    have_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert main([*args, *(["--plot", str(plot)] if have_matplotlib else [])]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "--- sample at step 15 ---" in out and "done: step 30" in out
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert {"step", "epoch", "train_loss", "lr", "chars_per_sec", "elapsed_s"} <= set(rows[0])
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) == 3 and all(math.isfinite(v) for v in vals)
    if have_matplotlib:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_checkpoint(ckpt).step == 30

    assert main(["sample", str(ckpt), "--prime", "the", "--length", "40", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the") and len(first.rstrip("\n")) == 43
    assert main(["sample", str(ckpt), "--prime", "the", "--length", "40", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first

    # Resume for 10 more steps.
    assert main([*args[:-2], "--resume", str(ckpt), "--max-steps", "40"]) == 0
    assert "resumed at step 30" in capsys.readouterr().out
    assert load_checkpoint(ckpt).step == 40


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--hidden-size", "0"], "expected a positive integer, got 0"),
        (["train", "--cell", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--lr", "-1"], "expected a number in (0.0, inf), got -1"),
        (["train", "--max-steps", "5", "--max-epochs", "1"], "not allowed with argument"),
        (["sample"], "the following arguments are required: CHECKPOINT"),
    ],
)
def test_cli_bad_flags_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main(["train", "--plot", str(tmp_path / "p.png"), "--max-steps", "1"]) == 2
    assert "--plot needs matplotlib, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_cli_bad_files_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.txt")]) == 2
    assert "text file not found" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("abc")
    assert main(["train", str(short)]) == 2
    assert "needs at least 2501 (batch_size × seq_length + 1)" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world" * 500)
    assert main(["train", str(bad)]) == 2
    assert "bytes" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "none.npz")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_default_corpus_trains_from_the_command_line_defaults(tmp_path, capsys):
    """`rnncore train` with no file uses the shipped tiny-shakespeare (a few steps here)."""
    ckpt = tmp_path / "c.npz"
    assert main(["train", "--max-steps", "2", "--checkpoint", str(ckpt), "--eval-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "1115394 characters, 65 distinct" in out
    assert load_checkpoint(ckpt).config["model"]["vocab_size"] == 65
    assert len(load_corpus().vocab) == 65


def test_cli_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    text = tmp_path / "t.txt"
    text.write_text(TEXT * 5, encoding="utf-8")
    ckpt = tmp_path / "c.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnncore.cli", "train", str(text), "--hidden-size", "16",
         "--embedding-size", "8", "--seq-length", "10", "--batch-size", "4", "--eval-every",
         "0", "--sample-every", "0", "--log-every", "1", "--max-steps", "1000000",
         "--checkpoint", str(ckpt), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is training
        if line.startswith("step 20/"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted at step" in out and "checkpoint saved" in out
    assert load_checkpoint(ckpt).step >= 20
