"""Text corpora: the sorted vocabulary, the tokenised corpus, and loading a file in chunks.

A corpus is read once into a compact integer array (one token per character, or per byte in
bytes mode) over a sorted vocabulary; nothing holds a Python object per character, and files
are read in chunks, so a file of hundreds of MB loads in memory bounded by the final array
(1 byte per token when the vocabulary has at most 256 entries) plus a few chunks. The names
are re-exported by rnncore.data, the module to import them from.

Shape legend
------------
    N           tokens in the corpus (characters; bytes in bytes mode)
    V           vocabulary size

    ids         (N,)     token ids, uint8 / uint16 / uint32 (the smallest that holds V - 1)
    codes       (V,)     the vocabulary: sorted Unicode code points (or byte values), uint32
"""

from __future__ import annotations

import codecs
import importlib.resources
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .checks import positive_int

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ENCODINGS",
    "Corpus",
    "DataError",
    "Vocabulary",
    "default_corpus_path",
    "load_corpus",
]

Array = np.ndarray
Encoding = Literal["utf-8", "bytes"]
ENCODINGS: tuple[str, ...] = ("utf-8", "bytes")
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB of the file per read; decoding needs up to ~20x that
_UNICODE_SIZE = 0x110000  # code points 0..0x10FFFF
_BOM = codecs.BOM_UTF8


class DataError(ValueError):
    """A corpus that cannot be used: empty, undecodable, or too short for the batch shape."""


def default_corpus_path() -> Path:
    """Path of the corpus shipped with the package: tiny-shakespeare (1.1 MB, public domain).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    resource = importlib.resources.files(__package__ or "rnncore") / "data" / "tinyshakespeare.txt"
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"the default corpus is missing from the rnncore package (expected {path}): "
            "reinstall rnncore, or pass the path of a text file"
        )
    return path


def _encoding(value: Any) -> Encoding:
    """`value` normalised to "utf-8" or "bytes", or a ValueError naming the accepted values."""
    if isinstance(value, str):
        v = value.strip().lower().replace("_", "-")
        if v in ("utf-8", "utf8"):
            return "utf-8"
        if v == "bytes":
            return "bytes"
    raise ValueError(f"encoding must be 'utf-8' or 'bytes', got {value!r}")


def _id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds the ids 0..vocab_size-1."""
    for dt in (np.uint8, np.uint16):
        if vocab_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint32)


def _code_points(text: str) -> Array:
    """(n,) code points of `text`: uint8 for ASCII text, else uint32 (a view, no Python ints)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    # surrogatepass: a str may hold lone surrogates (e.g. from surrogateescape); keep them.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), "<u4")


def _describe(code: int, encoding: Encoding) -> str:
    """One token for an error message: 'é' (U+00E9), or 0xff in bytes mode."""
    if encoding == "bytes":
        return f"0x{code:02x}"
    return f"{chr(code)!r} (U+{code:04X})"


class Vocabulary:
    """A sorted vocabulary of characters (Unicode code points) or of byte values.

    Token id i stands for ``codes[i]``: ids follow the sort order of code points (or byte
    values), so the same set of characters always gives the same ids. For a checkpoint the
    vocabulary is two plain values: ``codes`` (a uint32 array) and ``encoding`` (a string);
    ``Vocabulary(codes, encoding)`` rebuilds it. (The characters as one string would not do:
    NumPy string arrays drop trailing NUL characters.)

    Args:
        codes: (V,) strictly increasing code points in 0..0x10FFFF ("utf-8"), or byte values in
            0..255 ("bytes"); V >= 1.
        encoding: "utf-8" (a vocabulary of characters) or "bytes" (of byte values).

    Raises:
        TypeError: codes is not a 1-D array of integers.
        ValueError: codes is empty, not strictly increasing, or out of range; bad encoding.
    """

    __slots__ = ("_codes", "_encoding")

    def __init__(self, codes: npt.ArrayLike, encoding: str = "utf-8") -> None:
        enc = _encoding(encoding)
        a = np.asarray(codes)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise TypeError(
                f"Vocabulary: codes must be a 1-D array of integers, got {a.ndim}-D {a.dtype}"
            )
        if a.size == 0:
            raise ValueError("Vocabulary: codes must not be empty")
        limit = 256 if enc == "bytes" else _UNICODE_SIZE
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= limit:
            raise ValueError(
                f"Vocabulary: codes must be in 0..{limit - 1} for encoding {enc!r}, "
                f"got values in {lo}..{hi}"
            )
        if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
            raise ValueError("Vocabulary: codes must be strictly increasing (sorted, unique)")
        self._codes = a.astype(np.uint32)
        self._codes.flags.writeable = False
        self._encoding: Encoding = enc

    @classmethod
    def from_text(cls, text: str | bytes) -> Vocabulary:
        """The vocabulary of the characters of a str, or of the byte values of a bytes object."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = np.frombuffer(text, np.uint8)
            return cls(np.flatnonzero(np.bincount(raw, minlength=256)), "bytes")
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.from_text: text must be str or bytes, got {type(text)}")
        return cls(np.unique(_code_points(text)), "utf-8")

    @property
    def codes(self) -> Array:
        """(V,) uint32 sorted code points (or byte values), read-only."""
        return self._codes

    @property
    def encoding(self) -> Encoding:
        """The vocabulary's kind: "utf-8" (characters) or "bytes" (byte values)."""
        return self._encoding

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned integer dtype that holds every id (uint8 for V <= 256)."""
        return _id_dtype(len(self))

    @property
    def tokens(self) -> str | bytes:
        """All tokens in id order: a str of V characters, or V bytes in bytes mode."""
        return self.decode(np.arange(len(self)))

    def __len__(self) -> int:
        return int(self._codes.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._encoding == other._encoding and np.array_equal(self._codes, other._codes)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics

    def __repr__(self) -> str:
        shown = self.tokens if len(self) <= 80 else self.decode(np.arange(80))
        more = "" if len(self) <= 80 else f" + {len(self) - 80} more"
        return f"Vocabulary({len(self)} tokens, encoding={self._encoding!r}: {shown!r}{more})"

    def encode(self, text: str | bytes) -> Array:
        """Token ids of `text`.

        Args:
            text: a str (utf-8 vocabulary); a bytes object, or a str taken as its UTF-8 bytes
                (bytes vocabulary).

        Returns:
            (n,) ids of dtype ``id_dtype``.

        Raises:
            TypeError: bytes given to a character vocabulary.
            ValueError: tokens that are not in the vocabulary (the message names them).
        """
        if self._encoding == "bytes":
            if isinstance(text, str):
                text = text.encode("utf-8")
            if not isinstance(text, (bytes, bytearray, memoryview)):
                raise TypeError(f"encode: text must be bytes or str, got {type(text).__name__}")
            cp = np.frombuffer(text, np.uint8)
        else:
            if not isinstance(text, str):
                raise TypeError(
                    f"encode: text must be a str for a character (utf-8) vocabulary, "
                    f"got {type(text).__name__}"
                )
            cp = _code_points(text)
        idx = np.searchsorted(self._codes, cp)  # (n,) position of each code in the vocabulary
        found = self._codes[np.minimum(idx, len(self) - 1)] == cp
        if not bool(found.all()):
            missing = np.unique(cp[~found])
            shown = ", ".join(_describe(int(c), self._encoding) for c in missing[:20])
            more = f" and {missing.size - 20} more" if missing.size > 20 else ""
            what = "bytes" if self._encoding == "bytes" else "characters"
            raise ValueError(
                f"{missing.size} {what} not in the vocabulary of {len(self)} tokens: {shown}{more}"
            )
        return idx.astype(self.id_dtype)

    def decode(self, ids: npt.ArrayLike) -> Any:
        """The text of token ids: a str (utf-8 vocabulary) or bytes (bytes vocabulary).

        Args:
            ids: (n,) integer ids in 0..V-1 (any integer dtype; a list or a scalar is fine).

        Raises:
            ValueError: an id is out of range.
        """
        a = np.asarray(ids).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"decode: ids must be integers, got dtype {a.dtype}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(self)):
            raise ValueError(
                f"decode: ids must be in 0..{len(self) - 1} (the vocabulary size - 1), "
                f"got values in {int(a.min())}..{int(a.max())}"
            )
        codes = self._codes[a.astype(np.intp, copy=False)]
        if self._encoding == "bytes":
            return codes.astype(np.uint8).tobytes()
        return codes.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised text: the ids of every token and the vocabulary they index.

    Attributes:
        ids: (N,) token ids (uint8 / uint16 / uint32: the vocabulary's ``id_dtype``).
        vocab: the sorted vocabulary.
        source: where the text came from (a file path), or None.
    """

    ids: Array
    vocab: Vocabulary
    source: str | None = None

    @classmethod
    def from_text(cls, text: str | bytes, *, source: str | None = None) -> Corpus:
        """A corpus of an in-memory text: a str (characters) or bytes (byte values).

        Raises:
            DataError: the text is empty.
        """
        if len(text) == 0:
            raise DataError(f"{source or 'text'}: the text is empty")
        vocab = Vocabulary.from_text(text)
        return cls(vocab.encode(text), vocab, source)

    @property
    def unit(self) -> str:
        """What one token is, for messages: "characters" or "bytes"."""
        return "bytes" if self.vocab.encoding == "bytes" else "characters"

    def __len__(self) -> int:
        return int(self.ids.size)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return (
            f"Corpus({len(self)} {self.unit}, {len(self.vocab)} distinct, "
            f"ids {self.ids.dtype}{src})"
        )

    def decode(self, start: int = 0, stop: int | None = None) -> str | bytes:
        """The text of tokens start..stop-1 (for inspection; decodes the slice only)."""
        return self.vocab.decode(self.ids[start:stop])


# --- loading ----------------------------------------------------------------------------------


def load_corpus(
    path: str | os.PathLike[str] | None = None,
    *,
    encoding: str = "utf-8",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Corpus:
    """Read a text file into a Corpus: its sorted vocabulary and its tokens as a compact array.

    Args:
        path: the file; None for the corpus shipped with the package (tiny-shakespeare).
        encoding: "utf-8" (the text as Unicode characters; a leading byte-order mark is
            skipped; line endings are kept as they are) or "bytes" (every byte of any file is
            a token; the vocabulary is the byte values that occur).
        chunk_size: bytes read at a time. UTF-8 files are read twice, once for the vocabulary
            and once to encode, so that memory stays bounded by the result plus a few chunks.

    Returns:
        the Corpus; ``corpus.ids`` is (N,) of the smallest unsigned dtype for the vocabulary.

    Raises:
        FileNotFoundError: there is no such file. IsADirectoryError: path is a directory.
        DataError: the file is empty, or (utf-8) not valid UTF-8: the message gives the byte
            offset of the first bad byte and suggests bytes mode.
    """
    enc = _encoding(encoding)
    chunk_size = positive_int("load_corpus", "chunk_size", chunk_size)
    p = default_corpus_path() if path is None else Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"text file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a text file, got a directory: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty")
    if enc == "bytes":
        return _load_bytes(p, chunk_size)
    return _load_utf8(p, chunk_size)


def _load_bytes(path: Path, chunk_size: int) -> Corpus:
    raw = np.fromfile(path, dtype=np.uint8)  # (N,) becomes the ids in place: the only big array
    if raw.size == 0:  # a file that shrank since stat(), or a device
        raise DataError(f"{path}: the file is empty")
    seen = np.zeros(256, bool)  # chunked: bincount of the whole file would cast it to intp
    for i in range(0, raw.size, chunk_size):
        seen[np.bincount(raw[i : i + chunk_size], minlength=256) > 0] = True
    codes = np.flatnonzero(seen)  # (V,) byte values that occur
    lut = np.zeros(256, np.uint8)  # byte value -> id
    lut[codes] = np.arange(codes.size, dtype=np.uint8)
    for i in range(0, raw.size, chunk_size):  # chunked so the temporary stays one chunk
        raw[i : i + chunk_size] = lut[raw[i : i + chunk_size]]
    return Corpus(raw, Vocabulary(codes, "bytes"), str(path))


def _utf8_chunks(path: Path, chunk_size: int) -> Iterator[Array]:
    """The code points of a UTF-8 file, chunk by chunk: (n,) uint8 (ASCII) or uint32 arrays."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with open(path, "rb") as f:
        offset = 3 if f.read(3) == _BOM else 0  # file offset of the next chunk
        f.seek(offset)
        while True:
            raw = f.read(chunk_size)
            final = not raw
            pending = decoder.getstate()[0]  # bytes of a character split across chunks
            if raw and not pending and raw.isascii():
                yield np.frombuffer(raw, np.uint8)  # the common case: no decoding at all
            else:
                try:
                    text = decoder.decode(raw, final=final)
                except UnicodeDecodeError as e:
                    # e.start indexes pending + raw, which begins len(pending) before `offset`.
                    where = offset - len(pending) + e.start
                    bad = (pending + raw)[e.start]
                    raise DataError(
                        f"{path}: not valid UTF-8 at byte offset {where} (byte 0x{bad:02x}: "
                        f"{e.reason}); to train on the raw bytes of any file use "
                        "--encoding bytes (encoding='bytes')"
                    ) from None
                if text:
                    yield _code_points(text)
            if final:
                return
            offset += len(raw)


def _load_utf8(path: Path, chunk_size: int) -> Corpus:
    # Pass 1: which code points occur, and how many characters there are.
    seen = np.zeros(_UNICODE_SIZE, bool)  # (0x110000,) 1.1 MB
    n = 0
    for cp in _utf8_chunks(path, chunk_size):
        seen[cp] = True
        n += cp.size
    if n == 0:
        raise DataError(f"{path}: the file contains no characters (only a byte-order mark)")
    vocab = Vocabulary(np.flatnonzero(seen), "utf-8")
    del seen
    # Pass 2: encode through a lookup table code point -> id (O(1) per character).
    dtype = vocab.id_dtype
    lut = np.zeros(_UNICODE_SIZE, dtype)  # (0x110000,) at most 4.4 MB
    lut[vocab.codes] = np.arange(len(vocab), dtype=dtype)
    ids = np.empty(n, dtype)  # (N,)
    pos = 0
    for cp in _utf8_chunks(path, chunk_size):
        if pos + cp.size > n:
            break
        np.take(lut, cp, out=ids[pos : pos + cp.size])
        pos += cp.size
    if pos != n:
        raise DataError(f"{path}: the file changed while it was being read")
    return Corpus(ids, vocab, str(path))
