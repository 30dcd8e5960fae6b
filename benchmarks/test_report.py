"""report.py end to end on the smallest config and on tiny random-length stacks, the GEMM
ceiling probe it uses, and the sampler's matrix-vector probe (train_step.py's sampling
ceiling)."""

from __future__ import annotations

import numpy as np
import pytest

import common
import report
from rnncore import _core

# Tiny twins of charrnn-L2-len and charrnn-L2-len-bi, so that CI runs the whole path (every
# cell, the packed torch runner, the full-length rnncore runner, both tables) in seconds.
TINY = (
    common.Config("tiny-L2-len", 9, 6, 5, 7, 2, varlen=True),
    common.Config("tiny-L2-len-bi", 9, 6, 5, 7, 2, varlen=True, bidirectional=True),
)


@pytest.mark.parametrize("kernel", ["blas", "packed"])
def test_gemm_probe_measures_a_checked_product(kernel):
    # 37 columns over 2 threads: slices of 32 and 5, a partial panel
    r = _core._gemm_probe(5, 37, 19, kernel, 2, 0.01)
    assert r["gflops"] > 0 and r["calls"] >= 1 and r["seconds"] >= 0.01
    assert r["threads"] == 2 and r["kernel"] in {"openblas", "portable", "avx2", "avx512"}
    with pytest.raises(ValueError, match="kernel must be 'blas' or 'packed', got 'mkl'"):
        _core._gemm_probe(4, 4, 4, "mkl", 1)
    with pytest.raises(ValueError, match="M, N and K must be >= 1, got 0, 4, 4"):
        _core._gemm_probe(0, 4, 4, kernel, 1)


def test_gemv_probe_measures_a_checked_product():
    # 45 rows: a partial 32-row block of the sampler's kernel
    r = _core._gemv_probe(45, 19, 0.01)
    assert r["gb_per_s"] > 0 and r["calls"] >= 1
    assert r["seconds_per_call"] * r["calls"] >= 0.01
    with pytest.raises(ValueError, match="rows and cols must be >= 1, got 0, 4"):
        _core._gemv_probe(0, 4)
    with pytest.raises(ValueError, match=r"min_time must be in \(0, 60\] seconds, got 0"):
        _core._gemv_probe(4, 4, 0.0)


def test_report_prints_the_table_and_the_ceilings(capsys, monkeypatch):
    monkeypatch.setattr(report, "CEILING_SQUARE", 64)  # keep the square probe quick
    argv = ["--cells", "rnn", "--configs", "minchar", "--threads", "1", "--repeats", "3"]
    argv += ["--min-time", "0.005", "--settle", "0", "--budget", "1"]
    assert report.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| rnn | minchar | 1")]
    assert len(rows) == 1, out
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert float(cells[3]) > 0 and cells[7].endswith("%"), rows[0]  # ms, % of ceiling
    assert "| sgemm 64×64×64 | 1 |" in out
    assert "| LSTM step minchar (B=1, 4H=400, H=100) | 1 |" in out


@pytest.fixture
def tiny_configs(monkeypatch):
    for cfg in TINY:
        monkeypatch.setitem(common.CONFIGS, cfg.name, cfg)
    yield TINY
    common.make_problem.cache_clear()
    common.oracle.cache_clear()


@pytest.mark.parametrize("cell", common.CELLS.values(), ids=lambda c: c.name)
@pytest.mark.parametrize("mode", common.MODES)
def test_reference_and_packed_torch_match_the_oracle_with_random_lengths(tiny_configs, cell, mode):
    # Whatever the rnncore build: the reference (float32) and torch on a PackedSequence against
    # the float64 reference, including exact zeros past each length.
    for cfg in tiny_configs:
        problem = common.make_problem(cell.name, cfg.name)
        assert problem.lengths is not None and problem.lengths.min() < cfg.T
        assert problem.dy.shape == (cfg.T, cfg.B, cfg.directions * cfg.H)
        impls = ["reference"] + (["torch"] if common.torch_installed() else [])
        for impl in impls:
            out = common.make_runner(impl, problem, mode)()
            assert common.check(impl, out, cell, cfg, mode) < common.tolerance(cfg)
    names = set(common.make_problem(cell.name, "tiny-L2-len-bi").state_dict())
    assert {"weight_ih_l1_reverse", "bias_hh_l0_reverse", "weight_hh_l1"} <= names


def test_report_runs_the_random_length_configs(tiny_configs, capsys):
    argv = ["--configs", ",".join(c.name for c in tiny_configs), "--threads", "1"]
    argv += ["--repeats", "3", "--min-time", "0.002", "--settle", "0", "--budget", "0.5"]
    assert report.main([*argv, "--no-ceiling"]) == 0
    out = capsys.readouterr().out
    assert "- random lengths (`-len`, seed-fixed, U[1, T])" in out
    lines = out.splitlines()
    for cell in common.CELLS.values():
        for cfg in tiny_configs:
            reason = common.unavailable("rnncore", cell, cfg)
            if reason is not None:  # a build without lengths=: skipped with the reason
                assert f"{cell.name} {cfg.name}: {reason}" in out
                continue
            prefix = f"| {cell.name} | {cfg.name} | 1"
            rows = [line for line in lines if line.startswith(prefix)]
            assert len(rows) == 2, out  # the main table and the lengths table
            main, ratio = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
            assert float(main[3]) > 0 and float(main[4]) > 0, rows[0]  # rnncore, reference ms
            assert main[5] != "–" or not common.torch_installed(), rows[0]
            share = float(np.mean(common.lengths_of(cfg))) / cfg.T
            assert ratio[3] == f"{share:.2f}" and float(ratio[6].rstrip(" ✗")) > 0, rows[1]
