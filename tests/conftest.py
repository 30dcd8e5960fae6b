"""Shared fixtures and helpers for the rnncore tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

import rnncore
from rnncore.train import TrainConfig

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7: one ulp at 1.0


def rel_err(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """max|a - b| / max(max|a|, max|b|): an error relative to the array's scale."""
    assert (a is None) == (b is None), "one result is None and the other is not"
    if a is None or a.size == 0:
        return 0.0
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a64).max(), np.abs(b64).max(), np.finfo(np.float64).tiny)
    return float(np.abs(a64 - b64).max() / scale)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run a block with rnncore at `n` threads, restoring the previous count after."""
    old = rnncore.get_num_threads()
    rnncore.set_num_threads(n)
    try:
        yield
    finally:
        rnncore.set_num_threads(old)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


def torch_or_skip():
    """Import torch (CPU) or skip the test: PyTorch parity is checked only where it is installed."""
    return pytest.importorskip("torch", reason="PyTorch parity needs `pip install torch==2.13.0`")


# --- the language model's small corpora and training config (test_train, test_sample, test_cli,
# test_checkpoint_faults) ---------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 40  # 1800 characters, 28 distinct
UNICODE = "Привет, мир! 日本語 🙂 αβγ — naïve café.\n" * 60


def small_config(**kw) -> TrainConfig:
    base = dict(hidden_size=16, num_layers=2, embedding_size=8, seq_length=10, batch_size=4,
                val_fraction=0.1, max_steps=40, seed=3, dropout=0.1)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)
