"""pytest-benchmark suite: cell × config × implementation × pass, each checked, then timed.

    pytest benchmarks/                              # time everything (minutes)
    pytest benchmarks/ --benchmark-disable -q       # run each once and check it (seconds)
    pytest benchmarks/ -k "rnn and charrnn" --benchmark-group-by=group

Benchmarks of one cell, config and pass form one pytest-benchmark group, so rnncore, the NumPy
reference and torch come out side by side. All run at RNNCORE_BENCH_THREADS threads (default:
every available CPU). Unavailable combinations are skipped with the reason: a cell whose
kernels or layer class the imported rnncore lacks (an older build; the whole cell then, as
there is nothing to compare), torch when it is not installed, and the configs marked large
(large, medium-L2-len, medium-L2-len-bi: seconds per call of the reference and torch) under
--benchmark-disable (conftest.py). Configs with random lengths need kernels with lengths=.
For one table with ratios and several thread counts, use report.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import common
import rnncore

THREADS = int(os.environ.get("RNNCORE_BENCH_THREADS", "0")) or common.available_cpus()
# Seconds per call of the reference or torch (and of the float64 oracle): marked `large`.
LARGE = ("large", "medium-L2-len", "medium-L2-len-bi")


def _cases() -> Iterator[Any]:
    """Every cell × config × impl × mode, marked (large, skip) as it needs."""
    for cell in common.CELLS.values():
        for cfg in common.CONFIGS.values():
            for impl in common.IMPLS:
                for mode in common.MODES:
                    marks: list[pytest.MarkDecorator] = []
                    reason = common.unavailable("rnncore", cell, cfg) or common.unavailable(
                        impl, cell, cfg
                    )
                    if reason is not None:
                        marks.append(pytest.mark.skip(reason=reason))
                    if cfg.name in LARGE:
                        marks.append(pytest.mark.large)
                    yield pytest.param(
                        cell,
                        cfg,
                        impl,
                        mode,
                        marks=marks,
                        id=f"{cell.name}-{cfg.name}-{impl}-{mode}",
                    )


@pytest.mark.parametrize(("cell", "cfg", "impl", "mode"), list(_cases()))
def test_kernel(
    benchmark: Any, cell: common.Cell, cfg: common.Config, impl: str, mode: str
) -> None:
    """One implementation on one problem: correct against float64 first, then timed."""
    threads = common.set_threads(THREADS)
    run = common.make_runner(impl, common.make_problem(cell.name, cfg.name), mode)
    benchmark.group = f"{cell.name}-{cfg.name}-{mode}"
    benchmark.extra_info.update(
        cell=cell.name,
        config=cfg.name,
        impl=impl,
        mode=mode,
        threads=threads,
        corename=rnncore.blas_info()["corename"],
        flops=common.flops(cell, cfg, mode),
    )
    if benchmark.disabled:
        # pytest-benchmark calls run once and returns its outputs: check those (half the time).
        outputs = benchmark(run)
    else:
        outputs = run()
    want = common.oracle(cell.name, cfg.name)
    keys, tol = common.output_keys(cell, cfg, mode), common.tolerance(cfg)
    problems = common.compare(outputs, want, keys, tol, common.lengths_of(cfg))
    assert not problems, f"{impl} differs from the float64 reference: {'; '.join(problems)}"
    if benchmark.disabled:
        return
    if cfg.name in LARGE:
        benchmark.pedantic(run, rounds=3)  # seconds per call: pytest-benchmark's default wants 5+
    else:
        benchmark(run)


# --------------------------------------------------------------------------------------------
# The check itself must be able to fail: feed it wrong answers.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", common.CELLS.values(), ids=lambda c: c.name)
def test_check_rejects_wrong_results(cell: common.Cell) -> None:
    """compare accepts the float32 reference and rejects small, realistic mistakes."""
    cfg = common.CONFIGS["minchar"]
    keys, tol = common.output_keys(cell, cfg, "fwdbwd"), common.tolerance(cfg)
    want = common.oracle(cell.name, cfg.name)
    problem = common.make_problem(cell.name, cfg.name)
    good = common.make_runner("reference", problem, "fwdbwd")()
    assert common.compare(good, want, keys, tol) == []

    # A forgotten bias: rebuild the problem without b_hh.
    layers = tuple(dict(w, b_hh=np.zeros_like(w["b_hh"])) for w in problem.layers)
    no_bias = dataclasses.replace(problem, layers=layers)
    bad = common.make_runner("reference", no_bias, "fwdbwd")()
    assert any(p.startswith("y:") for p in common.compare(bad, want, keys, tol))

    def spoiled(key: str, change: Any) -> dict[str, np.ndarray]:
        out = {k: v.copy() for k, v in good.items()}
        out[key] = change(out[key])
        return out

    for key, change, message in [
        ("dw_hh", lambda a: a * (1 + 20 * tol), "relative error"),  # slightly off
        ("dx", lambda a: np.where(a == a.max(), np.nan, a), "not finite"),
        ("dw_ih", lambda a: a.T, "shape"),
        ("db_hh", lambda a: None, "missing"),
    ]:
        problems = common.compare(spoiled(key, change), want, keys, tol)
        assert len(problems) == 1 and problems[0].startswith(key) and message in problems[0], (
            key,
            problems,
        )
    with pytest.raises(common.CorrectnessError, match="dw_hh"):
        common.check("reference", spoiled("dw_hh", lambda a: -a), cell, cfg, "fwdbwd")


def test_check_rejects_output_past_a_length() -> None:
    """With random lengths, y and dx must be exactly 0 past each length (here: the reference,
    the same values with one padded y entry spoiled, and a dx tucked in by torch's closure)."""
    cfg = common.CONFIGS["charrnn-L2-len"]
    lengths = common.lengths_of(cfg)
    assert lengths is not None and lengths.min() >= 1 and lengths.max() <= cfg.T
    assert lengths.min() < cfg.T  # some padding to check
    assert np.array_equal(lengths, common.lengths_of(cfg))  # fixed by seed
    keys, tol = common.output_keys(common.CELLS["rnn"], cfg, "fwdbwd"), common.tolerance(cfg)
    want = common.oracle("rnn", cfg.name)
    assert common.compare(want, want, keys, tol, lengths) == []
    b = int(np.argmin(lengths))
    y = want["y"].copy()
    y[lengths[b], b, 0] = 1e-30  # far below the tolerance, but not 0
    got = {"y": y, "dx": lambda: want["dx"]}  # a callable value is called by compare
    assert common.compare(got, want, keys, tol, lengths) == ["y: not 0 past a sequence's length"]
    assert common.compare(got, want, keys, tol) == []  # without lengths: within tolerance
