"""The float32 pointwise kernels on each ISA path (portable, AVX2, AVX-512) against the exact
answer: the activations element by element, and every cell through forward and backward.

A path this CPU cannot run skips with the reason (_set_pointwise_path names the best it has).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import rnncore
from conftest import rel_err
from rnncore import _core
from test_kernels import CELLS, float32_tolerance, make_args, make_upstream, run

PATHS = ["portable", "avx2", "avx512"]


@contextlib.contextmanager
def pointwise_path(name: str) -> Iterator[None]:
    """Run a block on one pointwise path; skip where the CPU cannot run it."""
    old = _core._pointwise_path()
    try:
        _core._set_pointwise_path(name)
    except ValueError as e:
        pytest.skip(str(e))
    try:
        yield
    finally:
        _core._set_pointwise_path(old)


def test_default_is_the_best_the_cpu_has():
    info = rnncore.blas_info()
    assert info["pointwise_kernel"] in PATHS
    assert info["pointwise_kernel"] == _core._pointwise_path()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(cpuinfo.read_text().split())
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            assert info["pointwise_kernel"] == "avx512"
        elif {"avx2", "fma"} <= flags:
            assert info["pointwise_kernel"] == "avx2"
    with pytest.raises(ValueError, match=r"name must be 'portable', 'avx2' or 'avx512', got 'sse'"):
        _core._set_pointwise_path("sse")


def exact(name: str, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.tanh(x64) if name == "tanh" else 0.5 * (1.0 + np.tanh(0.5 * x64))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_activation_within_4_ulp(path, name):
    """Within 4 ulp of the exact value wherever that is a normal float32.

    Measured maxima over this grid: tanh 1.5 (portable) / 2.0 ulp (avx2, avx512), sigmoid 2.4
    ulp: the polynomials and the range reduction are the same on every path; the SIMD paths
    replace the division by a Newton-refined reciprocal estimate (about 1 ulp). 4 ulp is the
    bound common/pointwise.h documents. The grid covers both tanh branches (|x| < 0.625 and
    above), every block position (odd length: the masked tail) and the flush to 0 below -87.
    """
    x = np.concatenate(
        [np.linspace(-20, 20, 200_001), np.linspace(-0.7, 0.7, 50_001), -np.logspace(-30, 1.93, 9)]
    ).astype(np.float32)
    with pointwise_path(path):
        y = _core._activation(name, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    ref = exact(name, x)
    normal = np.abs(ref) >= np.finfo(np.float32).tiny
    ulp = np.spacing(np.abs(ref[normal]).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(y[normal] - ref[normal]) / ulp) <= 4.0


@pytest.mark.parametrize("path", PATHS)
def test_activation_special_values(path):
    """The values the tests of the cells rely on (NaN kept, saturation exact, -inf shut)."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4, -88.0, 1e-30], np.float32)
    wide = np.linspace(-50, 50, 1001, dtype=np.float32)
    with pointwise_path(path):
        t, s = _core._activation("tanh", x), _core._activation("sigmoid", x)
        t_wide, s_wide = _core._activation("tanh", wide), _core._activation("sigmoid", wide)
    f32 = np.float32
    np.testing.assert_array_equal(t, np.array([np.nan, 1, -1, 0, 0, 1, -1, -1, 1e-30], f32))
    assert np.signbit(t[4])  # tanh(-0) = -0
    np.testing.assert_array_equal(s, np.array([np.nan, 1, 0, 0.5, 0.5, 1, 0, 0, 0.5], f32))
    assert np.all(np.abs(t_wide) <= 1) and np.all((s_wide >= 0) & (s_wide <= 1))


# H around the unit block (16: full blocks and a masked partial one), T = 1 and longer.
SHAPES = [(1, 1, 3, 1), (4, 5, 7, 15), (3, 13, 9, 17), (5, 12, 16, 33), (9, 4, 30, 64)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))
def test_path_matches_float64_reference(rng, path, cell, shape):
    """Each path alone is within the float32 tolerance of the exact answer (test_kernels)."""
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    with pointwise_path(path):
        got = run(cell, args, upstream)
    expected = run(cell, args, upstream, impl="reference", dtype=np.float64)
    tol = float32_tolerance(T, D, H)
    for name, a, b in zip(cell.outputs + cell.grads, got, expected, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_path_matches_portable(rng, path, cell):
    """The SIMD paths differ from the portable one by rounding only: both are within the
    float32 tolerance of the exact answer, so within twice it of each other."""
    T, B, D, H = 6, 7, 11, 40
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    with pointwise_path("portable"):
        expected = run(cell, args, upstream)
    with pointwise_path(path):
        got = run(cell, args, upstream)
    tol = 2 * float32_tolerance(T, D, H)
    for name, a, b in zip(cell.outputs + cell.grads, got, expected, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@pytest.mark.parametrize("path", PATHS)
def test_float64_ignores_the_pointwise_path(rng, path):
    """float64 always runs the portable loops: the path cannot change its results."""
    cell = CELLS[2]
    args = make_args(cell, rng, 4, 6, 5, 20, np.float64)
    upstream = make_upstream(cell, rng, 4, 6, 20, np.float64)
    with pointwise_path("portable"):
        expected = run(cell, args, upstream)
    with pointwise_path(path):
        got = run(cell, args, upstream)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", PATHS)
def test_sampler_lstm_step_follows_the_model(path):
    """The sampler's LSTM step (batch 1, PyTorch's gate order) on each path: its greedy picks
    are the argmax of the model's own logits up to a near tie (1e-4, as tests/test_sample.py
    argues for float32). H = 40: two full vectors of 16 and a masked tail of 8."""
    from conftest import TEXT
    from rnncore.data import Corpus
    from rnncore.model import CharRNN
    from rnncore.sample import generate

    vocab = Corpus.from_text(TEXT).vocab
    model = CharRNN(len(vocab), cell="lstm", hidden_size=40, embedding_size=6, seed=3)
    with pointwise_path(path):
        ids = vocab.encode(generate(model, vocab, prime="fox", length=30, greedy=True))
        p, state = model.params.params, None
        for t in range(len(ids) - 1):
            x = p["embedding.weight"][ids[t : t + 1]][:, None, :]
            out, state = model.rnn.forward(x, state, training=False)
            logits = (out[0, 0] @ p["decoder.weight"].T + p["decoder.bias"]).astype(np.float64)
            if t >= 2:  # after the prime
                assert logits[ids[t + 1]] >= logits.max() - 1e-4, (t, logits.max())


def test_sampler_matrix_vector_products_are_the_same_on_every_path():
    """The sampler's matrix-vector kernel (lm/sample.cpp, column_sums on the pointwise path)
    sums every row in the same order on each path, two row blocks at a time on the SIMD paths:
    a tanh RNN (whose sampler step takes its activation from common/activations.h on every path)
    samples bitwise the same text on every path the CPU runs. H = 72: three blocks of 32 rows,
    the last one padded, so both the paired and the single-block loop run."""
    from conftest import TEXT
    from rnncore.data import Corpus
    from rnncore.model import CharRNN
    from rnncore.sample import generate

    vocab = Corpus.from_text(TEXT).vocab
    model = CharRNN(len(vocab), cell="rnn", hidden_size=72, num_layers=2, seed=5)
    texts, old = {}, _core._pointwise_path()
    for path in PATHS:
        try:
            _core._set_pointwise_path(path)
        except ValueError:
            continue  # a path this CPU lacks (the per-path tests above skip with the reason)
        try:
            texts[path] = generate(model, vocab, prime="the ", length=400, temperature=0.9, seed=1)
        finally:
            _core._set_pointwise_path(old)
    assert "portable" in texts and len(texts) >= 2, texts.keys()
    assert len(set(texts.values())) == 1, {p: t[:60] for p, t in texts.items()}
