"""The packed recurrent-product kernels (portable, AVX2, AVX-512) against the BLAS path."""

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
def gemm_path(name: str) -> Iterator[None]:
    """Run a block on one recurrent-product kernel; skip where the CPU cannot run it."""
    old = _core._gemm_path()
    try:
        _core._set_gemm_path(name)
    except ValueError as e:
        pytest.skip(str(e))
    try:
        yield
    finally:
        _core._set_gemm_path(old)


def test_default_is_the_best_the_cpu_has():
    info = rnncore.blas_info()
    assert info["recurrent_kernel"] in PATHS
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " avx512f" in cpuinfo.read_text():
        assert info["recurrent_kernel"] == "avx512"
    with pytest.raises(
        ValueError, match=r"name must be 'blas', 'portable', 'avx2' or 'avx512', got 'sse'"
    ):
        _core._set_gemm_path("sse")


# H around the panel widths (16, 32) and the row blocks (4, 6, 12): every edge of the kernels.
# The last: T*B = 240 rows, past one row chunk of gemm_packed (16 row blocks: 192 rows on avx512,
# 96 on avx2) in the input projection and dx.
SHAPES = [
    (3, 1, 5, 1),
    (4, 5, 7, 15),
    (3, 13, 9, 17),
    (5, 12, 16, 33),
    (2, 25, 30, 100),
    (20, 12, 16, 40),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-D{}-H{}".format(*s))
def test_packed_path_matches_blas(rng, path, cell, shape):
    T, B, D, H = shape
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    with gemm_path("blas"):
        expected = run(cell, args, upstream)
    with gemm_path(path):
        got = run(cell, args, upstream)
    # Both are within float32_tolerance of the exact result, so within twice it of each other.
    tol = 2 * float32_tolerance(T, D, H)
    for name, a, b in zip(cell.outputs + cell.grads, got, expected, strict=True):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g} > {tol:.3g}"


@pytest.mark.parametrize("path", PATHS)
def test_float64_ignores_the_packed_path(rng, path):
    """float64 always runs on BLAS: the kernel choice cannot change its results."""
    cell = CELLS[2]
    args = make_args(cell, rng, 4, 6, 5, 20, np.float64)
    upstream = make_upstream(cell, rng, 4, 6, 20, np.float64)
    with gemm_path("blas"):
        expected = run(cell, args, upstream)
    with gemm_path(path):
        got = run(cell, args, upstream)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
