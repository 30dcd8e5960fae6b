"""rnncore.model.CharRNN: its gradients (with and without dropout) against central differences,
its state dict in the equivalent PyTorch program, and the seed notes' "hello" example."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from conftest import torch_or_skip
from gradcheck import central_difference
from rnncore.data import Corpus
from rnncore.model import CharRNN
from rnncore.sample import generate


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
    data = model.params.data
    picks = rng.choice(np.flatnonzero(grad != 0), 40, replace=False)
    nums = central_difference(lambda: model.loss(x, y, training=False)[0], data, picks)
    for i, num in zip(picks, nums, strict=True):
        assert abs(num - grad[i]) <= 1e-6 * max(1.0, abs(num)), (i, num, grad[i])


def test_model_gradients_with_dropout_match_central_differences(rng):
    """Dropout between the layers and on the top output (char-rnn's), masks fixed by the seed."""
    model = CharRNN(7, hidden_size=6, num_layers=2, embedding_size=5, dropout=0.4,
                    dtype=np.float64, seed=1)  # fmt: skip
    x, y = rng.integers(0, 7, (5, 3)), rng.integers(0, 7, (5, 3))
    gen = model.rnn.generator.bit_generator
    saved = gen.state
    model.zero_grad()
    model.train_step(x, y)
    grad = model.params.grad.copy()
    data = model.params.data
    gen.state = saved
    assert model.loss(x, y)[0] != model.loss(x, y, training=False)[0]  # dropout is on

    def loss():
        gen.state = saved  # the same masks as the gradient's forward
        return model.loss(x, y)[0]

    picks = rng.choice(np.flatnonzero(grad != 0), 30, replace=False)
    for i, num in zip(picks, central_difference(loss, data, picks), strict=True):
        assert abs(num - grad[i]) <= 1e-6 * max(1.0, abs(num)), (i, num, grad[i])


def test_model_state_dict_loads_into_the_equivalent_torch_program(rng):
    torch = torch_or_skip()
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
