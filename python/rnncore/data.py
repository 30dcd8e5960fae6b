"""Text corpora for character-level language models: loading, vocabulary and batching.

The public names live here; the code is in rnncore.corpus (vocabulary, corpus, loading) and
rnncore.batches (splitting and batching).

A corpus is read once into a compact integer array (one token per character, or per byte in
bytes mode) over a sorted vocabulary; nothing holds a Python object per character, and files
are read in chunks, so a file of hundreds of MB loads in memory bounded by the final array
(1 byte per token when the vocabulary has at most 256 entries) plus a few chunks.

Batching follows char-rnn: the token array is cut into B parallel streams and each batch is
the next T tokens of every stream, so batch i+1 continues each stream exactly where batch i
left it and a recurrent state can be carried from one batch to the next. The streams start
over (and the state must be reset) only where the data wraps, at the start of an epoch.

Shape legend
------------
    N           tokens in the corpus (characters; bytes in bytes mode)
    V           vocabulary size
    T           seq_length, time steps per batch
    B           batch_size, parallel streams
    K           batches per epoch: (N - 1) // (B*T)
    S           tokens per stream: K*T

    ids         (N,)     token ids, uint8 / uint16 / uint32 (the smallest that holds V - 1)
    codes       (V,)     the vocabulary: sorted Unicode code points (or byte values), uint32
    x, y        (T, B)   a batch: inputs and targets, y[t, b] the token after x[t, b] (int32)

Typical use::

    corpus = load_corpus(path)                     # or load_corpus() for tiny-shakespeare
    train, val = make_batch_iterators(corpus, batch_size=50, seq_length=50)
    for batch in train:                            # endless; batch.epoch counts the passes
        if batch.reset:                            # the streams start over: zero the state
            state = None
        ...
"""

from __future__ import annotations

from .batches import Batch, BatchIterator, make_batch_iterators, min_corpus_length, split_ids
from .corpus import (
    DEFAULT_CHUNK_SIZE,
    ENCODINGS,
    Corpus,
    DataError,
    Vocabulary,
    default_corpus_path,
    load_corpus,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ENCODINGS",
    "Batch",
    "BatchIterator",
    "Corpus",
    "DataError",
    "Vocabulary",
    "default_corpus_path",
    "load_corpus",
    "make_batch_iterators",
    "min_corpus_length",
    "split_ids",
]
