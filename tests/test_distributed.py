"""rnncore.distributed: data-parallel training over MPI (2 ranks over loopback).

The multi-rank tests start `mpiexec -n 2` (the one installed with the mpich wheel, next to
this interpreter) on tests/mpi_worker.py or `rnncore train`; they are skipped, with the
reason, where mpi4py or mpiexec is missing (`pip install "rnncore[mpi]"` installs both).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rnncore.distributed as distributed

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in this venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason='mpi4py or mpiexec missing: pip install "rnncore[mpi]"',
)


def mpirun(*args: str, n: int = 2, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """`mpiexec -n n python args...` with one thread per rank; output captured as text."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.SIZE_VARIABLES}
    env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"} | kw.pop("env", {})
    assert MPIEXEC is not None
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def test_import_rnncore_does_not_import_mpi4py():
    code = "import sys, rnncore, rnncore.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_launched_size_reads_the_launchers_variables():
    assert distributed.launched_size({}) == 1
    assert distributed.launched_size({"PMI_SIZE": "4"}) == 4
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert distributed.launched_size({"PMI_SIZE": ""}) == 1
    assert distributed.from_environment({"PMI_SIZE": "1"}) is None


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `from mpi4py import MPI` fail
    with pytest.raises(ImportError, match=r'pip install "rnncore\[mpi\]"'):
        distributed.import_mpi()
    with pytest.raises(ImportError, match=r'pip install "rnncore\[mpi\]"'):
        distributed.from_environment({"PMI_SIZE": "2"})


def test_comm_must_be_a_communicator():
    with pytest.raises(TypeError, match="Distributed: comm must be an mpi4py communicator"):
        distributed.Distributed(object())


def test_rank_generators_are_independent_and_reproducible():
    a = distributed.rank_generator(3, 0).random(4)
    b = distributed.rank_generator(3, 1).random(4)
    assert not (a == b).any()
    assert (distributed.rank_generator(3, 1).random(4) == b).all()


@needs_mpi
def test_collectives_on_two_ranks():
    out = mpirun(str(WORKER), "primitives")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rank 0: OK" in out.stdout and "rank 1: OK" in out.stdout
