"""rnncore.data: corpus loading (UTF-8 and bytes), vocabulary, char-rnn batching and its errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnncore.data import (
    Batch,
    BatchIterator,
    Corpus,
    DataError,
    Vocabulary,
    default_corpus_path,
    load_corpus,
    make_batch_iterators,
    min_corpus_length,
    split_ids,
)

# Cyrillic, CJK, an astral emoji, a combining accent, Greek, a NUL and CRLF line endings.
UNICODE_TEXT = "Привет, мир!\r\n日本語のテキスト 🙂👍\ne\u0301 αβγ\x00 end\n" * 7


def write(tmp_path, data: bytes | str, name: str = "corpus.txt"):
    p = tmp_path / name
    if isinstance(data, str):
        p.write_bytes(data.encode("utf-8"))
    else:
        p.write_bytes(data)
    return p


# --- the shipped corpus ---------------------------------------------------------------------------


def test_default_corpus_is_shipped_tiny_shakespeare():
    path = default_corpus_path()
    assert path.is_file() and path.name == "tinyshakespeare.txt"
    corpus = load_corpus()  # None -> the default corpus
    assert corpus.source == str(path)
    text = path.read_text(encoding="utf-8")
    assert len(corpus) == len(text) == 1115394
    assert len(corpus.vocab) == 65 and corpus.ids.dtype == np.uint8
    assert corpus.vocab.tokens == "".join(sorted(set(text)))
    assert corpus.decode() == text  # the encoding is lossless


# --- UTF-8 loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1 << 20])
def test_unicode_corpus_round_trips_at_any_chunk_size(tmp_path, chunk_size):
    # Chunk sizes of 1..7 bytes split the 2-, 3- and 4-byte characters across reads.
    corpus = load_corpus(write(tmp_path, UNICODE_TEXT), chunk_size=chunk_size)
    assert corpus.vocab.encoding == "utf-8" and corpus.unit == "characters"
    assert corpus.vocab.tokens == "".join(sorted(set(UNICODE_TEXT)))  # sorted by code point
    assert np.array_equal(corpus.vocab.codes, sorted(ord(c) for c in set(UNICODE_TEXT)))
    assert len(corpus) == len(UNICODE_TEXT)  # one token per character, CRLF kept as two
    assert corpus.ids.dtype == np.uint8
    assert corpus.decode() == UNICODE_TEXT
    assert np.array_equal(corpus.ids, corpus.vocab.encode(UNICODE_TEXT))


def test_utf8_byte_order_mark_is_skipped(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfhello")
    corpus = load_corpus(path, chunk_size=2)
    assert corpus.decode() == "hello" and corpus.vocab.tokens == "ehlo"


@pytest.mark.parametrize(
    ("n_distinct", "dtype"),
    [(256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_ids_use_the_smallest_dtype_for_the_vocabulary(tmp_path, n_distinct, dtype):
    # Astral code points from U+10000 (4 bytes each in UTF-8).
    text = "".join(map(chr, range(0x10000, 0x10000 + n_distinct)))
    corpus = load_corpus(write(tmp_path, text), chunk_size=1 << 16)
    assert len(corpus.vocab) == n_distinct and corpus.ids.dtype == dtype
    assert np.array_equal(corpus.ids, np.arange(n_distinct))
    assert corpus.decode() == text


@pytest.mark.parametrize("encoding", ["utf-8", "bytes"])
def test_loading_a_large_file_stays_in_bounded_memory(tmp_path, encoding):
    # 8 MB of text in 64 KiB chunks: the tokens take 8 MB; decoding the file as one str and its
    # code points as one array would take 8 + 32 MB more (and an intp index array 64 MB).
    # Allow the tokens plus 8 MB (the constant lookup tables and a few chunks).
    line = "The quick brown fox jumps over the lazy dog; ça va? 🙂\n"
    text = line * (8_000_000 // len(line.encode()))
    path = write(tmp_path, text)
    tracemalloc.start()
    try:
        corpus = load_corpus(path, encoding=encoding, chunk_size=1 << 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - corpus.ids.nbytes < 8_000_000, f"peak {peak / 1e6:.1f} MB"
    if encoding == "bytes":
        assert corpus.decode() == text.encode()
    else:
        assert len(corpus) == len(text)
        assert corpus.vocab.decode(corpus.ids[-len(line) :]) == line


# --- bytes mode -----------------------------------------------------------------------------------


def test_bytes_mode_reads_any_file(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, 5000, dtype=np.uint8)
    raw[raw == 7] = 8  # byte 7 never occurs: not in the vocabulary
    data = raw.tobytes() + b"\xff\xfe invalid UTF-8"
    corpus = load_corpus(write(tmp_path, data, "blob.bin"), encoding="bytes", chunk_size=999)
    assert corpus.vocab.encoding == "bytes" and corpus.unit == "bytes"
    assert np.array_equal(corpus.vocab.codes, np.unique(np.frombuffer(data, np.uint8)))
    assert 7 not in corpus.vocab.codes
    assert corpus.ids.dtype == np.uint8
    assert corpus.decode() == data
    with pytest.raises(ValueError, match=r"1 bytes not in the vocabulary of \d+ tokens: 0x07"):
        corpus.vocab.encode(b"\x07")


def test_bytes_mode_of_a_utf8_file_counts_bytes(tmp_path):
    corpus = load_corpus(write(tmp_path, "é€"), encoding="BYTES")
    assert corpus.decode() == "é€".encode() and len(corpus) == 5
    assert np.array_equal(corpus.vocab.encode("é"), corpus.ids[:2])  # a str is taken as UTF-8


# --- loading errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"text file not found: .*nope\.txt"):
        load_corpus(tmp_path / "nope.txt")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="expected a text file, got a directory"):
        load_corpus(tmp_path)


@pytest.mark.parametrize("encoding", ["utf-8", "bytes"])
def test_empty_file(tmp_path, encoding):
    path = write(tmp_path, b"")
    with pytest.raises(DataError, match=r"corpus.txt: the file is empty"):
        load_corpus(path, encoding=encoding)


def test_file_with_only_a_byte_order_mark(tmp_path):
    with pytest.raises(DataError, match="contains no characters"):
        load_corpus(write(tmp_path, b"\xef\xbb\xbf"))


@pytest.mark.parametrize("chunk_size", [1, 5, 1 << 20])
def test_undecodable_byte_reports_its_offset_and_suggests_bytes_mode(tmp_path, chunk_size):
    good = "héllo wörld 🙂 ".encode() * 3  # multi-byte characters before the bad byte
    path = write(tmp_path, good + b"\xff" + b"more text")
    msg = (
        rf"corpus.txt: not valid UTF-8 at byte offset {len(good)} \(byte 0xff: invalid start "
        r"byte\); to train on the raw bytes of any file use --encoding bytes \(encoding='bytes'\)"
    )
    with pytest.raises(DataError, match=msg):
        load_corpus(path, chunk_size=chunk_size)
    assert len(load_corpus(path, encoding="bytes")) == len(good) + 10


@pytest.mark.parametrize("chunk_size", [1, 3, 1 << 20])
def test_truncated_character_at_the_end_reports_where_it_starts(tmp_path, chunk_size):
    path = write(tmp_path, b"abc" + "🙂".encode()[:3])
    with pytest.raises(DataError, match=r"byte offset 3 \(byte 0xf0: unexpected end of data\)"):
        load_corpus(path, chunk_size=chunk_size)


def test_bad_continuation_byte_inside_a_character(tmp_path):
    path = write(tmp_path, b"ab\xc3(z")  # 0xc3 starts a 2-byte character; '(' cannot continue it
    with pytest.raises(DataError, match=r"byte offset 2 \(byte 0xc3: invalid continuation byte\)"):
        load_corpus(path, chunk_size=3)


def test_bad_encoding_and_chunk_size_arguments(tmp_path):
    path = write(tmp_path, "abc")
    with pytest.raises(ValueError, match="encoding must be 'utf-8' or 'bytes', got 'latin-1'"):
        load_corpus(path, encoding="latin-1")
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        load_corpus(path, chunk_size=0)


# --- vocabulary -----------------------------------------------------------------------------------


def test_vocabulary_encode_decode_and_unknown_characters():
    vocab = Vocabulary.from_text("hello, wörld\n")
    assert vocab.tokens == "\n ,dehlorwö" and len(vocab) == 11
    ids = vocab.encode("hello")
    assert ids.dtype == np.uint8 and ids.tolist() == [5, 4, 6, 6, 7]
    assert vocab.decode(ids) == "hello" and vocab.decode([10]) == "ö" and vocab.decode(3) == "d"
    with pytest.raises(
        ValueError,
        match=r"2 characters not in the vocabulary of 11 tokens: 'Z' \(U\+005A\), '🙂' \(U\+1F642\)",
    ):
        vocab.encode("heZ🙂Z")
    with pytest.raises(ValueError, match=r"ids must be in 0..10 .*got values in 0..11"):
        vocab.decode([0, 11])
    with pytest.raises(TypeError, match="text must be a str"):
        vocab.encode(b"hello")


def test_vocabulary_rebuilds_from_plain_values_including_nul():
    vocab = Vocabulary.from_text("a\x00b\x00")
    again = Vocabulary(np.array(vocab.codes), vocab.encoding)  # what a checkpoint stores
    assert again == vocab and again.tokens == "\x00ab"
    assert again != Vocabulary(vocab.codes, "bytes")


@pytest.mark.parametrize(
    ("codes", "encoding", "error", "match"),
    [
        ([], "utf-8", ValueError, "codes must not be empty"),
        ([3, 1], "utf-8", ValueError, "strictly increasing"),
        ([1, 1], "utf-8", ValueError, "strictly increasing"),
        (
            [0, 256],
            "bytes",
            ValueError,
            r"codes must be in 0..255 for encoding 'bytes', got values in 0..256",
        ),
        ([-1, 5], "utf-8", ValueError, r"codes must be in 0..1114111"),
        ([0x110000], "utf-8", ValueError, r"codes must be in 0..1114111"),
        ([[1, 2]], "utf-8", TypeError, "codes must be a 1-D array of integers, got 2-D"),
        ([1.5], "utf-8", TypeError, "codes must be a 1-D array of integers"),
        ([1], "ascii", ValueError, "encoding must be 'utf-8' or 'bytes', got 'ascii'"),
    ],
)
def test_vocabulary_validation(codes, encoding, error, match):
    with pytest.raises(error, match=match):
        Vocabulary(codes, encoding)


def test_corpus_from_text():
    c = Corpus.from_text("abcab")
    assert c.ids.tolist() == [0, 1, 2, 0, 1] and c.vocab.tokens == "abc"
    b = Corpus.from_text(b"\x00\xff\x00")
    assert b.vocab.encoding == "bytes" and b.ids.tolist() == [0, 1, 0]
    with pytest.raises(DataError, match="empty"):
        Corpus.from_text("")


# --- splitting ------------------------------------------------------------------------------------


def test_split_puts_validation_at_the_tail():
    ids = np.arange(1000)
    train, val = split_ids(ids, 0.05)
    assert train.tolist() == list(range(950)) and val.tolist() == list(range(950, 1000))
    assert np.shares_memory(train, ids)  # views, no copy
    train, val = split_ids(ids, 0.0)
    assert train.size == 1000 and val.size == 0
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
            split_ids(ids, bad)


def test_make_batch_iterators_defaults_and_no_validation():
    corpus = Corpus.from_text("abcdefghij" * 1000)
    train, val = make_batch_iterators(corpus, 4, 5)
    assert train.num_tokens == 9500 and val is not None and val.num_tokens == 500
    assert train.batches_per_epoch == 9499 // 20 and val.batches_per_epoch == 499 // 20
    train, val = make_batch_iterators(corpus, 4, 5, val_fraction=0)
    assert val is None and train.num_tokens == 10000


def test_too_short_for_the_batch_shape_says_how_much_is_needed():
    corpus = Corpus.from_text("x" * 10000, source="small.txt")
    msg = (
        r"small.txt: too short for batch_size 50 and seq_length 50: the validation split \(5%\) "
        r"has 500 characters, and each split needs at least 2501 \(batch_size × seq_length \+ 1\), "
        r"so the text needs at least 50011 characters \(it has 10000\)"
    )
    with pytest.raises(DataError, match=msg):
        make_batch_iterators(corpus, 50, 50)
    with pytest.raises(
        DataError,
        match=r"the training split \(95%\) has 1900 characters and the validation split \(5%\) has 100 characters",
    ):
        make_batch_iterators(Corpus.from_text("x" * 2000), 50, 50)
    with pytest.raises(DataError, match=r"the training split \(100%\) has 2500 characters"):
        make_batch_iterators(Corpus.from_text("x" * 2500), 50, 50, val_fraction=0)


@pytest.mark.parametrize(
    ("B", "T", "f"), [(50, 50, 0.05), (3, 7, 0.1), (1, 1, 0.5), (5, 5, 0.0), (2, 9, 0.93)]
)
def test_min_corpus_length_is_exact(B, T, f):
    n = min_corpus_length(B, T, f)
    make_batch_iterators(np.zeros(n, np.uint8), B, T, val_fraction=f)  # enough
    with pytest.raises(DataError, match=f"needs at least {n} tokens"):
        make_batch_iterators(np.zeros(n - 1, np.uint8), B, T, val_fraction=f)


# --- batching ---------------------------------------------------------------------------------------


def test_batch_layout_and_state_carry():
    N, B, T = 1000, 4, 7
    ids = np.arange(N)  # token value = its position: the layout is readable from the values
    it = BatchIterator(ids, B, T)
    K = (N - 1) // (B * T)
    S = K * T
    assert it.batches_per_epoch == K and it.tokens_per_batch == B * T
    batches = [next(it) for _ in range(K)]
    for i, batch in enumerate(batches):
        assert isinstance(batch, Batch) and (batch.epoch, batch.index) == (0, i)
        assert batch.x.shape == batch.y.shape == (T, B) and batch.x.dtype == np.int32
        assert batch.x.flags.c_contiguous and batch.y.flags.c_contiguous
        t, b = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
        assert np.array_equal(batch.x, b * S + i * T + t)  # x[t, b] = ids[b*S + i*T + t]
        assert np.array_equal(batch.y, batch.x + 1)  # the next token
        assert batch.reset == (i == 0)
    for i in range(K - 1):
        # Stream b at batch i+1 starts right where it stopped at batch i: the carried state fits.
        assert np.array_equal(batches[i + 1].x[0], batches[i].x[-1] + 1)
        assert np.array_equal(batches[i + 1].x[0], batches[i].y[-1])
    streams = np.concatenate([bt.x for bt in batches])  # (K*T, B)
    for b in range(B):
        assert np.array_equal(streams[:, b], ids[b * S : (b + 1) * S])
    # The data wraps: epoch 1 starts over with the same first batch, and only there is reset set.
    nxt = next(it)
    assert (nxt.epoch, nxt.index, nxt.reset) == (1, 0, True)
    assert np.array_equal(nxt.x, batches[0].x) and it.progress == pytest.approx(1 + 1 / K)


def test_batches_of_real_text_continue_each_stream():
    text = "".join(f"line {i:04d}.\n" for i in range(400))
    corpus = Corpus.from_text(text)
    it = BatchIterator(corpus.ids, batch_size=3, seq_length=11, dtype=np.int32)
    K = it.batches_per_epoch
    got = ["", "", ""]
    for batch in it.one_pass():
        assert batch.x.dtype == np.int32
        for b in range(3):
            got[b] += corpus.vocab.decode(batch.x[:, b])
            assert corpus.vocab.decode(batch.y[:, b])[:-1] == corpus.vocab.decode(batch.x[1:, b])
    S = K * 11
    assert got == [text[b * S : (b + 1) * S] for b in range(3)]
    assert (it.epoch, it.position) == (0, 0)  # one_pass() does not move the iterator


def test_iterator_resumes_exactly_from_its_state():
    ids = np.random.default_rng(1).integers(0, 50, 3000).astype(np.uint8)
    a = BatchIterator(ids, 5, 9)  # 66 batches per epoch
    for _ in range(70):  # past a wrap
        next(a)
    state = a.state_dict()
    assert state["epoch"] == 1 and state["position"] == 70 - a.batches_per_epoch
    assert all(isinstance(v, int) for v in state.values())  # JSON-able
    b = BatchIterator(ids, 5, 9)
    b.load_state_dict(dict(state))
    for _ in range(100):
        x, y = next(a), next(b)
        assert np.array_equal(x.x, y.x) and np.array_equal(x.y, y.y)
        assert (x.epoch, x.index) == (y.epoch, y.index)


def test_iterator_refuses_a_state_of_other_data_or_shape():
    ids = np.arange(500) % 7
    state = BatchIterator(ids, 4, 5).state_dict()
    with pytest.raises(ValueError, match="saved with batch_size 4, this iterator has batch_size 5"):
        BatchIterator(ids, 5, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with seq_length 5, this iterator has seq_length 6"):
        BatchIterator(ids, 4, 6).load_state_dict(state)
    other = ids.copy()
    other[3] += 1
    with pytest.raises(ValueError, match=r"saved for other data .*same text file"):
        BatchIterator(other, 4, 5).load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['crc32'\]"):
        BatchIterator(ids, 4, 5).load_state_dict({k: v for k, v in state.items() if k != "crc32"})
    with pytest.raises(ValueError, match="position out of range: epoch 0, position 99"):
        BatchIterator(ids, 4, 5).load_state_dict(state | {"position": 99})


def test_iterator_argument_errors():
    with pytest.raises(
        DataError,
        match=r"the corpus has 20 characters: too short for batch_size 4 × seq_length 5, which needs at least 21",
    ):
        BatchIterator(np.zeros(20, np.uint8), 4, 5)
    with pytest.raises(TypeError, match="batch_size must be an int, got float"):
        BatchIterator(np.zeros(99, np.uint8), 4.0, 5)
    with pytest.raises(ValueError, match="seq_length must be >= 1, got 0"):
        BatchIterator(np.zeros(99, np.uint8), 4, 0)
    with pytest.raises(TypeError, match="ids must be a 1-D integer array, got 1-D float64"):
        BatchIterator(np.zeros(99), 4, 5)
    with pytest.raises(IndexError, match=r"batch index must be in 0..3, got 4"):
        BatchIterator(np.zeros(99, np.uint8), 4, 5).batch(4)
