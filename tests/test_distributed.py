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

import numpy as np
import pytest

import rnncore.distributed as distributed
from rnncore import load_checkpoint

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


# --- `mpiexec -n 2 rnncore train` against one process --------------------------------------

FLAGS = ["--hidden-size", "32", "--embedding-size", "16", "--batch-size", "8"]
FLAGS += ["--seq-length", "16", "--sample-every", "0", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """60,000 characters of the shipped tiny-shakespeare."""
    from rnncore.data import default_corpus_path

    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(default_corpus_path().read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


def train_two_ranks(*flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    out = mpirun("-m", "rnncore.cli", "train", *flags, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rnncore train: 2 MPI ranks x 1 threads (rank 0: pid" in out.stdout
    return out


def train_one_process(*flags: str) -> None:
    from rnncore.cli import main

    assert main(list(flags)) == 0


def relative_differences(a: dict, b: dict) -> dict[str, float]:
    """max|a - b| / max|b| per tensor."""
    assert a.keys() == b.keys()
    return {k: float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b}


@needs_mpi
@pytest.mark.parametrize(("dtype", "tol"), [("float64", 1e-10), ("float32", 1e-4)])
def test_two_ranks_train_as_one_process_with_the_same_global_batch(text, tmp_path, dtype, tol):
    """2 ranks × 4 streams against 1 process × 8 streams, dropout 0, 20 Adam steps: the same
    parameters, hidden state (gathered from both ranks) and validation losses."""
    run = ["train", str(text), *FLAGS, "--dtype", dtype, "--max-steps", "20"]
    run += ["--eval-every", "10", "--dropout", "0"]
    train_two_ranks(*run[1:], "--checkpoint", str(tmp_path / "two.npz"))
    train_one_process(*run, "--checkpoint", str(tmp_path / "one.npz"))
    two, one = load_checkpoint(tmp_path / "two.npz"), load_checkpoint(tmp_path / "one.npz")
    assert two.step == one.step == 20
    diffs = relative_differences(two.weights, one.weights)
    print(f"{dtype}: max relative difference per tensor after 20 steps", diffs)
    assert max(diffs.values()) <= tol, diffs
    assert two.hidden[0].shape == (2, 8, 32)  # the full (L, B, H) state, both ranks' streams
    hidden = {"h": two.hidden[0], "c": two.hidden[1]}
    ref = {"h": one.hidden[0], "c": one.hidden[1]}
    assert max(relative_differences(hidden, ref).values()) <= 100 * tol
    val2 = [h["val_loss"] for h in two.metrics["history"]]
    val1 = [h["val_loss"] for h in one.metrics["history"]]
    np.testing.assert_allclose(val2, val1, rtol=tol)
    assert len(two.rng["ranks"]) == 2 and two.rng["model"] == two.rng["ranks"][0]
    assert two.data_position == one.data_position
