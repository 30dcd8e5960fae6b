"""Training checkpoints: one .npz file, no pickle, written atomically.

A checkpoint holds everything a run needs to continue exactly, or a sampler to generate:
the weights, the optimizer's state, the vocabulary, the configuration, the step, the data
position, the RNG states and the hidden state carried between batches. It is an ordinary
NumPy archive that ``np.load(path, allow_pickle=False)`` opens; its entries are

    rnncore_checkpoint      0-d int64, the format version (also what marks the file as ours)
    meta                    0-d str, JSON: step, config, data_position, rng, metrics, the
                            vocabulary's encoding and the hidden state's form
    weights/<name>          each weight array (its dtype and shape kept exactly)
    optimizer/<key>         each entry of the optimizer's state_dict()
    vocab/codes             (V,) uint32, the vocabulary's sorted code points (or byte values)
    hidden/<i>              the carried hidden state: one array, or the parts of a tuple
                            (the LSTM's (h, c)), each (L, B, H)

Integrity (format 2): the archive's zip comment -- the last 79 bytes of the file -- is
``rnncore-sha256:`` followed by the SHA-256, in hex, of every byte of the file before the
digest itself. Loading verifies it before trusting anything in the file, so any truncation and
any changed byte, in the data or in the zip structure around it, is an error. Format 1 files
(rnncore 0.1.0, without the digest) still load; their entries are checked by the zip CRC-32s
only.

Saving writes a temporary file in the destination's folder, flushes and fsyncs it, renames it
over the destination (atomic on POSIX) and fsyncs the folder: a crash or a full disk leaves
either the old checkpoint or the new one, never a mix (a process killed in the middle leaves
its temporary ``.<name>.*.tmp`` file behind, never a damaged checkpoint). Loading reads and
checks every entry, so a truncated, corrupted or foreign file raises CheckpointError naming
the path and the problem, never returns garbage. Non-finite values (NaN, ±inf) in the weights,
the optimizer state or the hidden state are refused by save_checkpoint and by
load_checkpoint.

Typical use::

    save_checkpoint("run.npz", Checkpoint(
        weights=model.state_dict(), config=config, vocab=corpus.vocab, step=step,
        optimizer=opt.state_dict(), data_position=train.state_dict(),
        rng={"dropout": rng.bit_generator.state}, hidden=(h, c)))
    ckpt = load_checkpoint("run.npz")
    model.load_state_dict(ckpt.weights); opt.load_state_dict(ckpt.optimizer); ...
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import int_at_least, is_int
from .data import Vocabulary

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "generator_from_state",
    "load_checkpoint",
    "save_checkpoint",
]

Array = np.ndarray
Hidden = Array | tuple[Array, ...]
FORMAT_VERSION = 2  # 2: the SHA-256 trailer; 1: rnncore 0.1.0 (still read)
_MAGIC = "rnncore_checkpoint"  # the entry holding the format version
# The zip comment ending every format-2 file: this prefix, then 64 hex digits of SHA-256 over
# every byte of the file before them (the comment's length field and this prefix included).
_DIGEST_PREFIX = b"rnncore-sha256:"
_DIGEST_HEX = 64
_TRAILER = len(_DIGEST_PREFIX) + _DIGEST_HEX  # 79 bytes
_EOCD = b"PK\x05\x06"  # the zip end-of-central-directory record: 22 bytes and the comment
_GROUPS = ("weights", "optimizer", "vocab", "hidden")


class CheckpointError(ValueError):
    """A file that is not a usable rnncore checkpoint: corrupt, truncated, foreign, or of a
    newer format. The message names the path and what is wrong."""


@dataclass
class Checkpoint:
    """The parts of a checkpoint (all but ``weights`` optional).

    Attributes:
        weights: name -> array (float32/float64, any shape), e.g. a model's state_dict().
        config: the run's configuration, JSON-serialisable (model sizes, optimizer, ...).
        vocab: the vocabulary the model's ids index.
        step: optimizer steps taken (>= 0).
        optimizer: an Optimizer.state_dict(): name -> array (0-d for scalars).
        data_position: a BatchIterator.state_dict() (JSON-serialisable).
        rng: RNG states, JSON-serialisable, typically {name: generator.bit_generator.state}
            (see generator_from_state); NumPy arrays in them are stored as lists.
        hidden: the hidden state carried to the next batch: an (L, B, H) array, or a tuple of
            them (the LSTM's (h, c)); loaded in the same form.
        metrics: anything else JSON-serialisable worth keeping (best val loss, elapsed time).
        format_version: the format the file was written in (set by load_checkpoint; saving
            always writes FORMAT_VERSION).
    """

    weights: dict[str, Array]
    config: dict[str, Any] = field(default_factory=dict)
    vocab: Vocabulary | None = None
    step: int = 0
    optimizer: dict[str, Array] = field(default_factory=dict)
    data_position: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    hidden: Hidden | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def _json_default(obj: Any) -> Any:
    """JSON for the NumPy values found in RNG states and configs."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _arrays(where: str, group: str, value: Any) -> dict[str, Array]:
    """A dict of name -> array without Python objects (so it saves without pickle)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: {group} must be a dict of name -> array, got {type(value)}")
    out = {}
    for name, v in value.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: {group} keys must be non-empty strings, got {name!r}")
        a = np.asarray(v)
        if a.dtype.hasobject or a.dtype.kind not in "biufcUS":
            raise TypeError(
                f"{where}: {group}[{name!r}] must be a numeric or string array "
                f"(saved without pickle), got dtype {a.dtype}"
            )
        out[name] = a
    return out


def _nonfinite(key: str, a: Array) -> str | None:
    """What is not finite in entry `key` (a "weights/..", "optimizer/.." or "hidden/.." array),
    or None when every value is finite (or the array is not floating-point)."""
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    ok = np.isfinite(a)
    if ok.all():
        return None
    bad = np.flatnonzero(~ok.reshape(-1))
    first = np.unravel_index(int(bad[0]), a.shape) if a.ndim else ()
    return (
        f"{key} holds {bad.size} non-finite value(s) of {a.size} "
        f"(the first, {a.reshape(-1)[bad[0]]}, at index {tuple(int(i) for i in first)}); "
        f"expected finite values only"
    )


def _entries(where: str, ckpt: Checkpoint) -> dict[str, Array]:
    """The archive's entries for a checkpoint, validated."""
    if not isinstance(ckpt, Checkpoint):
        raise TypeError(f"{where}: expected a Checkpoint, got {type(ckpt).__name__}")
    step = ckpt.step
    int_at_least(where, "step", step, 0)
    if ckpt.vocab is not None and not isinstance(ckpt.vocab, Vocabulary):
        raise TypeError(f"{where}: vocab must be a Vocabulary, got {type(ckpt.vocab).__name__}")
    hidden_form = None
    hidden: tuple[Any, ...] = ()
    if ckpt.hidden is not None:
        if isinstance(ckpt.hidden, (tuple, list)):
            hidden_form, hidden = "tuple", tuple(ckpt.hidden)
        else:
            hidden_form, hidden = "array", (ckpt.hidden,)
    meta = {
        "step": int(step),
        "config": ckpt.config,
        "data_position": ckpt.data_position,
        "rng": ckpt.rng,
        "metrics": ckpt.metrics,
        "vocab_encoding": None if ckpt.vocab is None else ckpt.vocab.encoding,
        "hidden": hidden_form,
    }
    try:
        meta_json = json.dumps(meta, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{where}: config, data_position, rng and metrics must be JSON-serialisable: {e}"
        ) from None
    entries: dict[str, Array] = {
        _MAGIC: np.array(FORMAT_VERSION, np.int64),
        "meta": np.array(meta_json),
    }
    for name, a in _arrays(where, "weights", ckpt.weights).items():
        entries[f"weights/{name}"] = a
    for name, a in _arrays(where, "optimizer", ckpt.optimizer).items():
        entries[f"optimizer/{name}"] = a
    if ckpt.vocab is not None:
        entries["vocab/codes"] = ckpt.vocab.codes
    for i, h in enumerate(hidden):
        a = np.asarray(h)
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{where}: hidden[{i}] must be a floating-point array, got {a.dtype}")
        entries[f"hidden/{i}"] = a
    return entries


def _encode(entries: Mapping[str, Array]) -> bytes:
    """The bytes of a format-2 file: the .npz archive of `entries`, its zip comment the digest."""
    buf = io.BytesIO()
    np.savez(buf, **entries)  # _entries() admitted no object arrays: no pickle
    data = bytearray(buf.getbuffer())
    if data[-22:-18] != _EOCD or data[-2:] != b"\0\0":  # zipfile ends every archive so
        raise RuntimeError("save_checkpoint: np.savez did not end the archive with a bare EOCD")
    data[-2:] = _TRAILER.to_bytes(2, "little")  # the comment's length
    data += _DIGEST_PREFIX
    data += hashlib.sha256(data).hexdigest().encode("ascii")
    return bytes(data)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Write a checkpoint atomically to `path` (exactly that name: no suffix is added).

    The data goes to a temporary file beside `path`, which is flushed, fsynced and renamed
    over `path`; the folder is then fsynced so the rename itself is durable. If anything fails
    the temporary file is removed and an existing checkpoint at `path` is left untouched.

    Returns:
        the path written.

    Raises:
        TypeError / ValueError: a part of the checkpoint cannot be stored (the message names
            it): non-JSON config, object arrays, a negative step, a NaN or ±inf in the weights,
            the optimizer state or the hidden state (nothing is written then).
        OSError: the folder does not exist or cannot be written, the disk is full, ...
    """
    where = "save_checkpoint"
    dest = Path(os.fspath(path))
    entries = _entries(where, checkpoint)  # validate everything before touching the disk
    for key, a in entries.items():
        problem = _nonfinite(key, a)
        if problem is not None:
            raise ValueError(f"{where}: refusing to write {dest}: {problem}")
    data = _encode(entries)
    folder = dest.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(folder)
    return dest


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening folders)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _digest_status(data: bytes) -> tuple[str, str]:
    """("ok" | "absent" | "mismatch", detail) for the SHA-256 trailer of a file's bytes."""
    if len(data) < _TRAILER or data[-_TRAILER:-_DIGEST_HEX] != _DIGEST_PREFIX:
        return "absent", ""
    stored = data[-_DIGEST_HEX:].decode("ascii", "replace")
    actual = hashlib.sha256(data[:-_DIGEST_HEX]).hexdigest()
    if stored == actual:
        return "ok", ""
    return "mismatch", f"stored {stored[:16]}..., computed {actual[:16]}..."


def _read_entries(path: Path) -> dict[str, Array]:
    """Every entry of the archive, read in full, after the file's SHA-256 is verified (format
    2) or, for format 1, with the zip CRC of each entry checked."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}")

    data = path.read_bytes()
    if not data:
        raise bad("not an rnncore checkpoint (the file is empty)")
    head = data[:4]
    if head != b"PK\x03\x04":
        kind = "a NumPy .npy array" if head == b"\x93NUM" else "not an .npz archive"
        raise bad(f"not an rnncore checkpoint ({kind}; it starts with {head!r})")
    status, detail = _digest_status(data)

    def damaged() -> CheckpointError:
        return bad(
            f"corrupt or truncated checkpoint (its SHA-256 does not match the one stored in it: "
            f"{detail}; the file was changed or cut after it was written)"
        )

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = list(npz.files)
            if _MAGIC not in names:
                if status == "mismatch":
                    raise damaged()
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise bad(
                    f"not an rnncore checkpoint (an .npz archive without the "
                    f"{_MAGIC!r} entry; its entries: {shown or 'none'})"
                )
            version = _version(path, npz[_MAGIC])
            if version > FORMAT_VERSION:  # a newer format may protect itself differently
                raise bad(
                    f"written by a newer rnncore (format {version} > {FORMAT_VERSION}); "
                    f"upgrade rnncore to load it"
                )
            if status == "mismatch":
                raise damaged()
            if status == "absent" and version >= 2:
                raise bad(
                    f"corrupt or truncated checkpoint (format {version} files end with "
                    f"{_TRAILER} bytes {_DIGEST_PREFIX.decode()}<SHA-256>, this one does not: "
                    f"its end was cut off or damaged)"
                )
            return {name: npz[name] for name in names}
    except CheckpointError:
        raise
    except Exception as e:  # any parse failure of a damaged file (zip, .npy header, CRC)
        if status == "mismatch":
            raise damaged() from e
        kind = (
            "corrupt or truncated"
            if isinstance(e, (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError))
            else "corrupt"
        )
        raise bad(f"{kind} checkpoint ({type(e).__name__}: {e})") from e


def _version(path: Path, value: Array) -> int:
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 1:
        raise CheckpointError(f"{path}: corrupt checkpoint (bad format version {value!r})")
    return int(value)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint.

    Returns:
        a Checkpoint with every part as saved: the weights' and hidden state's dtypes and
        shapes exactly, ``hidden`` an array or a tuple as it was given, the JSON parts as
        dicts (tuples in them come back as lists).

    Raises:
        FileNotFoundError: there is no file at `path`.
        CheckpointError: the file is not an rnncore checkpoint (another format, or an .npz
            archive without our marker), is truncated or corrupted (a SHA-256 that does not
            match, a failed CRC, an unreadable entry, missing or malformed parts), holds NaN or
            ±inf weights, optimizer or hidden state, or has a newer format version than this
            rnncore reads. The message names the path and the problem.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file, got a directory: {p}")
    entries = _read_entries(p)
    version = _version(p, entries.pop(_MAGIC))

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{p}: corrupt checkpoint ({what})")

    for key, a in entries.items():
        problem = _nonfinite(key, a)
        if problem is not None and key.partition("/")[0] in ("weights", "optimizer", "hidden"):
            raise CheckpointError(f"{p}: unusable checkpoint ({problem})")

    meta_arr = entries.pop("meta", None)
    if meta_arr is None or meta_arr.shape != () or meta_arr.dtype.kind != "U":
        raise bad("the 'meta' entry is missing or not a string")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError as e:
        raise bad(f"the 'meta' entry is not valid JSON: {e}") from None
    keys = ("step", "config", "data_position", "rng", "metrics", "vocab_encoding", "hidden")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise bad(f"the 'meta' entry must be a JSON object with keys {list(keys)}")
    step = meta["step"]
    if not is_int(step) or step < 0:  # JSON: a Python int
        raise bad(f"step must be an int >= 0, got {step!r}")
    if not isinstance(meta["config"], dict) or not isinstance(meta["metrics"], dict):
        raise bad("config and metrics must be JSON objects")

    groups: dict[str, dict[str, Array]] = {g: {} for g in _GROUPS}
    for key, a in entries.items():
        group, sep, name = key.partition("/")
        if not sep or group not in groups or not name:
            raise bad(f"unexpected entry {key!r}")
        groups[group][name] = a

    vocab = None
    if meta["vocab_encoding"] is not None:
        codes = groups["vocab"].get("codes")
        if codes is None:
            raise bad("the vocabulary's 'vocab/codes' entry is missing")
        try:
            vocab = Vocabulary(codes, meta["vocab_encoding"])
        except (TypeError, ValueError) as e:
            raise bad(f"bad vocabulary: {e}") from None

    hidden: Hidden | None = None
    parts = groups["hidden"]
    if meta["hidden"] is not None:
        if meta["hidden"] not in ("array", "tuple"):
            raise bad(f"hidden must be 'array' or 'tuple', got {meta['hidden']!r}")
        expected = [str(i) for i in range(len(parts))]
        if sorted(parts, key=lambda s: (len(s), s)) != expected or not parts:
            raise bad(f"hidden state entries {sorted(parts)} are not 0..n-1")
        seq = tuple(parts[str(i)] for i in range(len(parts)))
        if meta["hidden"] == "array":
            if len(seq) != 1:
                raise bad(f"hidden state stored as one array has {len(seq)} parts")
            hidden = seq[0]
        else:
            hidden = seq
    elif parts:
        raise bad("hidden state entries without a hidden state")

    return Checkpoint(
        weights=groups["weights"],
        config=meta["config"],
        vocab=vocab,
        step=step,
        optimizer=groups["optimizer"],
        data_position=meta["data_position"],
        rng=meta["rng"],
        hidden=hidden,
        metrics=meta["metrics"],
        format_version=version,
    )


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A np.random.Generator continuing from a saved ``generator.bit_generator.state``.

    ``generator.bit_generator.state = saved`` restores one in place as well; this builds a
    new one (of the bit generator the state names), e.g. for a layer's RNG.

    Raises:
        ValueError: the state names an unknown bit generator or is malformed.
    """
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(
            f"generator_from_state: state must be a bit_generator.state dict naming one of "
            f"{', '.join(_BIT_GENERATORS)}, got {name!r}"
        )
    bit_gen = getattr(np.random, name)()
    restored = dict(state)
    if name == "MT19937":  # its key is an array; JSON gave a list
        inner = dict(restored["state"])
        inner["key"] = np.asarray(inner["key"], np.uint32)
        restored["state"] = inner
    try:
        bit_gen.state = restored
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"generator_from_state: malformed {name} state: {e}") from None
    return np.random.Generator(bit_gen)
