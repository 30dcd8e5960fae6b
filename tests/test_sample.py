"""rnncore.sample: seeded, streamed and greedy sampling, the native sampler against the model's
own logits, and Unicode and bytes vocabularies."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TEXT, UNICODE, small_config
from rnncore.data import Corpus
from rnncore.model import CharRNN
from rnncore.sample import generate, sample_stream
from rnncore.train import Trainer


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
