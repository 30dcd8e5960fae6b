"""benchmarks/torch_op.py runs: both implementations' steps agree, a worker answers a round."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="benchmarks/torch_op.py needs PyTorch")

import torch_op  # benchmarks/ is on the path (conftest.py)

SIZE = (6, 3, 5, 4, 2)  # T, B, D, H, L: small, the benchmark's code path


@pytest.mark.parametrize("cell", torch_op.CELLS)
def test_both_implementations_take_the_same_steps(cell):
    """Three training steps from the same seed: the same losses (float32, 1e-5 relative: a
    few hundred ulps after three Adam steps; a wrong gradient would differ at the 2nd step)."""
    steps = [torch_op.make_step(impl, cell, 1, SIZE)[0] for impl in torch_op.IMPLS]
    for _ in range(3):
        a, b = (step() for step in steps)
        assert abs(a - b) <= 1e-5 * abs(b)


def test_workers_answer_a_round():
    (tn, rc, ratio, lo, hi) = torch_op.run(["gru"], 1, 1, 2, 0.0, ",".join(map(str, SIZE)))["gru"]
    assert tn > 0 and rc > 0 and lo == ratio == hi == pytest.approx(tn / rc)
