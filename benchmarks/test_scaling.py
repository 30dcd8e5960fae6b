"""benchmarks/scaling.py runs: a tiny model on 1x1 and 2x1, its table well formed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not MPIEXEC.exists(),
    reason='mpi4py or mpiexec missing: pip install "rnncore[mpi]"',
)
def test_scaling_table():
    cmd = [sys.executable, str(HERE / "scaling.py"), "--models", "1x16", "--configs", "2x1"]
    out = subprocess.run(
        [*cmd, "--steps", "1", "--warmup", "1"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| 1x16 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1 x 1", "2 x 1"], out.stdout
    assert "| 1x16 | 1 x 1 |" in rows[0] and "| 1.00x | 100% |" in rows[0]
    assert "recurrent kernel" in out.stdout and "OpenBLAS" in out.stdout
