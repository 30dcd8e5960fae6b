"""report.py end to end on the smallest config, the GEMM ceiling probe it uses, and the sampler's
matrix-vector probe (train_step.py's sampling ceiling)."""

from __future__ import annotations

import pytest

import report
from rnncore import _core


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
