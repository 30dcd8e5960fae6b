"""Generating text from a character-level model, one token at a time.

The per-token loop (every layer's step, the output logits, the draw) is C++: Python calls it
once per chunk of ``chunk_size`` tokens and decodes and yields each chunk, so text streams out
as it is generated while the loop runs at native speed.

Typical use::

    for piece in sample_stream(model, vocab, prime="ROMEO:", length=500, seed=0):
        print(piece, end="", flush=True)
    text = generate(model, vocab, prime="ROMEO:", length=500, temperature=0.8, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _core, checks
from .data import Vocabulary
from .model import CharRNN

__all__ = ["generate", "sample_stream"]


def _cell_kind(model: CharRNN) -> str:
    if model.cell == "lstm":
        return "lstm"
    if model.cell == "gru":
        return "gru" if model.rnn.options.get("reset_after", True) else "gru_reset_before"
    return f"rnn_{model.rnn.options.get('nonlinearity', 'tanh')}"


def _rng_state(seed: int | None) -> np.ndarray:
    """A xoshiro256** state (4 uint64) from a seed (None: fresh entropy)."""
    seed = checks.seed("sample", "seed", seed)
    return np.random.SeedSequence(seed).generate_state(4, np.uint64)


def sample_stream(
    model: CharRNN,
    vocab: Vocabulary,
    *,
    prime: str | bytes | None = None,
    length: int = 2000,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int | None = None,
    chunk_size: int = 256,
) -> Iterator[Any]:
    """Generate text, yielding it in pieces as it is produced.

    Args:
        model: the trained model (its vocabulary size must be len(vocab)).
        vocab: the vocabulary the model was trained with.
        prime: text to start from (every character must be in the vocabulary); it is yielded
            first, then the continuation. None: start from a newline if the vocabulary has
            one, else from a token drawn uniformly (seeded).
        length: tokens to generate after the prime (>= 0).
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        top_k: draw only among the k most likely tokens (None or 0: all).
        greedy: always take the most likely token (temperature and top_k then do not matter).
        seed: makes the output reproducible (None: fresh entropy).
        chunk_size: tokens generated per native call between two yields.

    Yields:
        str pieces (bytes for a bytes vocabulary): the prime, then the generated text.

    Raises:
        ValueError: characters of the prime not in the vocabulary (named), a bad argument.
    """
    if len(vocab) != model.vocab_size:
        raise ValueError(
            f"sample: the vocabulary has {len(vocab)} tokens but the model predicts "
            f"{model.vocab_size}: use the vocabulary saved with the model"
        )
    length = checks.int_at_least("sample", "length", length, 0)
    chunk_size = checks.int_at_least("sample", "chunk_size", chunk_size, 1)
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"sample: temperature must be a number, got {temperature!r}") from None
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"sample: temperature must be a finite number > 0, got {temperature}")
    k = 0 if top_k is None else top_k
    if not checks.is_int(k) or k < 0:
        raise ValueError(f"sample: top_k must be an int >= 1 or None, got {top_k!r}")
    rng_state = _rng_state(seed)
    if prime is None or len(prime) == 0:
        newline = "\n" if vocab.encoding == "utf-8" else b"\n"
        try:
            ids = vocab.encode(newline)
            shown = ""
        except ValueError:
            ids = np.array([rng_state[0] % len(vocab)])
            shown = vocab.decode(ids)
    else:
        ids = vocab.encode(prime)  # names any character not in the vocabulary
        shown = vocab.decode(ids)  # bytes for a bytes vocabulary, like what follows
    if len(shown):
        yield shown

    p = model.params.params
    layers = [model.rnn.layer_weights(k) for k in range(model.num_layers)]
    # The weights are packed once for the whole stream (a copy: the stream samples the model as
    # it was when it started).
    sampler = _core._Sampler(
        _cell_kind(model), layers, p.get("embedding.weight"), p["decoder.weight"],
        p["decoder.bias"],
    )  # fmt: skip
    h = np.zeros((model.num_layers, model.hidden_size), model.dtype)
    c = np.zeros_like(h) if model.cell == "lstm" else None
    feed = np.asarray(ids, np.int64)
    left = int(length)
    while left > 0:
        n = min(chunk_size, left)
        out = sampler.run(h, c, feed, n, temperature, int(k), bool(greedy), rng_state)
        feed = out[-1:].astype(np.int64)  # the last token drawn is fed by the next call
        left -= n
        yield vocab.decode(out)


def generate(model: CharRNN, vocab: Vocabulary, **kwargs: Any) -> Any:
    """The whole text sample_stream yields, joined: a str (bytes for a bytes vocabulary)."""
    pieces = list(sample_stream(model, vocab, **kwargs))
    empty: Any = b"" if vocab.encoding == "bytes" else ""
    return empty.join(pieces)
