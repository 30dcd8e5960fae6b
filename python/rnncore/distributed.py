"""Data-parallel training over MPI: a thin layer over an mpi4py communicator.

Each process (rank) holds a replica of the model and trains on its share of the streams of
the char-rnn batch; one allreduce of the flat gradient buffer per step (sum, then divide by
N) makes every replica take the same update. N ranks with batch B therefore train the same
global batch as one process with batch B: rank r takes streams r*B/N .. (r+1)*B/N - 1.

mpi4py is imported lazily, by `import_mpi` (``import rnncore`` never initialises MPI), and is
an optional extra: ``pip install "rnncore[mpi]"`` (mpi4py and MPICH's wheels).

What travels, per step and otherwise::

    every step          one Allreduce of (P + 3,): the flat gradients, the loss, two flags
    start               one Bcast of the parameters (P,) from rank 0
    evaluation          one Allreduce of (2,): the validation loss sum and token count
    evaluation, save    one allgather of the parameter checksums (crc32 of the bytes)
    save                gathers to rank 0: each rank's generator state and (L, B/N, H) state;
                        one bcast of rank 0's outcome once it has written the file

Shape legend
------------
    N           ranks (communicator size), r the rank of this process
    B, Bl       global batch (streams) and the local one, Bl = B / N
    P           padded size of the flat parameter buffer (params.ParamGroup)
    L, H        layers and hidden size of the recurrent stack
    state       (L, Bl, H) per rank, (L, B, H) gathered (LSTM: a tuple (h, c) of two)
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Protocol

import numpy as np

__all__ = [
    "INSTALL_HINT",
    "Distributed",
    "ReplicaDivergence",
    "ShardedBatches",
    "from_environment",
    "import_mpi",
    "launched_size",
    "limit_blas_threads",
    "rank_generator",
]

Array = np.ndarray
INSTALL_HINT = 'pip install "rnncore[mpi]"'
# Set by the launchers for every rank: MPICH/Hydra and Slurm's PMI (PMI_SIZE), Open MPI,
# MVAPICH. A size of 1, or none of them, is a plain single-process run.
SIZE_VARIABLES: tuple[str, ...] = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Decisions the ranks must take at the same step boundary, carried by the gradient allreduce.
FLAGS: tuple[str, ...] = ("interrupt", "time_limit")


class ReplicaDivergence(RuntimeError):
    """The model replicas of the ranks no longer hold the same parameters."""


class FlatParams(Protocol):
    """What the distributed layer needs of a parameter group (params.ParamGroup has it)."""

    data: Array  # (P,) every parameter, one flat buffer
    grad: Array  # (P,) every gradient
    params: dict[str, Array]  # name -> view of data


def import_mpi() -> ModuleType:
    """mpi4py's MPI module (this initialises MPI).

    Raises:
        ImportError: mpi4py (or the MPI library it needs) is missing; the message says how to
            install the extra.
    """
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            f"rnncore: data-parallel training needs mpi4py and an MPI library: {INSTALL_HINT} "
            f"(import failed: {e})"
        ) from None
    return MPI


def launched_size(environ: Mapping[str, str] | None = None) -> int:
    """The number of ranks the launcher (mpiexec, srun) started, from its environment
    variables (SIZE_VARIABLES); 1 outside a launcher. MPI is not initialised."""
    env = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def from_environment(environ: Mapping[str, str] | None = None) -> Distributed | None:
    """A Distributed over MPI.COMM_WORLD when launched with more than one rank, else None.

    Raises:
        ImportError: launched with N > 1 ranks but mpi4py is missing (the install hint).
        RuntimeError: the launcher started N ranks but MPI sees one: the ``mpiexec`` is not
            the one of the MPI library mpi4py uses.
    """
    n = launched_size(environ)
    if n <= 1:
        return None
    MPI = import_mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_size() != n:
        raise RuntimeError(
            f"rnncore: the launcher started {n} ranks but MPI sees {comm.Get_size()}: this "
            f"mpiexec belongs to another MPI than mpi4py's ({MPI.Get_library_version().strip()!r}"
            f"); use the mpiexec installed with it ({INSTALL_HINT} puts one in the venv's bin)"
        )
    return Distributed(comm)


def limit_blas_threads(n: int) -> bool:
    """Limit every BLAS loaded in the process to `n` threads (threadpoolctl, part of the mpi
    extra); returns False where threadpoolctl is missing.

    NumPy brings an OpenBLAS of its own (besides rnncore's), used by the optimizer's norms
    and dot products; by default it starts a thread per core, and N ranks' idle threads
    spinning on the same cores made a 2-rank run on 2 cores 15x slower than it should be.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=n, user_api="blas")
    return True


def rank_generator(seed: int | None, rank: int, step: int | None = None) -> np.random.Generator:
    """The generator of rank `rank` for dropout masks: independent streams from one seed
    (NumPy's SeedSequence spawn key (rank,), or (rank, step) for a run resumed with another
    number of ranks at `step`); fresh entropy with seed None."""
    if seed is None:
        return np.random.default_rng()
    key = (rank,) if step is None else (rank, step)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class ShardedBatches:
    """One rank's view of a batch iterator (rnncore.data.BatchIterator): the same positions,
    epochs and state_dict() as the global iterator, the batches cut to this rank's streams.

    Args:
        batches: the global iterator (B streams).
        rows: this rank's streams (Distributed.shard).
    """

    def __init__(self, batches: Any, rows: slice) -> None:
        self.batches, self.rows = batches, rows

    def __getattr__(self, name: str) -> Any:  # position, progress, state_dict(), ...
        if name == "batches":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.batches, name)

    def cut(self, batch: Any) -> Any:
        """The batch's x and y, (T, B/N) C-contiguous, this rank's streams."""
        x = np.ascontiguousarray(batch.x[:, self.rows])
        y = np.ascontiguousarray(batch.y[:, self.rows])
        return type(batch)(x, y, batch.epoch, batch.index)

    def __iter__(self) -> ShardedBatches:
        return self

    def __next__(self) -> Any:
        return self.cut(next(self.batches))

    def batch(self, index: int, epoch: int = 0) -> Any:
        return self.cut(self.batches.batch(index, epoch))

    def one_pass(self) -> Iterator[Any]:
        for batch in self.batches.one_pass():
            yield self.cut(batch)


def _states_shard(state: Any, rows: slice) -> Any:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.ascontiguousarray(s[:, rows]) for s in state)
    return np.ascontiguousarray(np.asarray(state)[:, rows])


class Distributed:
    """Data parallelism over an mpi4py communicator (``MPI.COMM_WORLD`` or a sub-communicator).

    Every method is collective (all ranks call it, in the same order) except shard,
    local_batch_size, shard_state and rank_generator.

    Args:
        comm: an mpi4py intracommunicator.

    Attributes:
        comm, rank (r), size (N).
    """

    def __init__(self, comm: Any) -> None:
        for method in ("Get_rank", "Get_size", "Allreduce", "Bcast", "allgather", "gather"):
            if not callable(getattr(comm, method, None)):
                raise TypeError(
                    f"Distributed: comm must be an mpi4py communicator (with {method}), got "
                    f"{type(comm).__name__}"
                )
        self.MPI = import_mpi()
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self._wish = dict.fromkeys(FLAGS, False)  # this rank's, sent with the next allreduce
        self._agreed = dict.fromkeys(FLAGS, False)  # any rank's, as of the last allreduce
        self._buf: Array | None = None  # (P + 1 + flags,) the reduction buffer, reused

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0: the one that prints, samples and writes files."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Distributed(rank {self.rank} of {self.size})"

    # --- the batch --------------------------------------------------------------------------

    def local_batch_size(self, batch_size: int) -> int:
        """B / N, the streams of this rank.

        Raises:
            ValueError: batch_size is not divisible by the number of ranks.
        """
        if batch_size % self.size:
            raise ValueError(
                f"batch_size must be divisible by the number of MPI ranks N = {self.size} (each "
                f"rank trains batch_size / N streams), got batch_size {batch_size}; use e.g. "
                f"{max(self.size, batch_size // self.size * self.size)}"
            )
        return batch_size // self.size

    def shard(self, batch_size: int) -> slice:
        """The streams of this rank: r*B/N .. (r+1)*B/N - 1 (a slice of the batch axis)."""
        n = self.local_batch_size(batch_size)
        return slice(self.rank * n, (self.rank + 1) * n)

    def shard_state(self, state: Any, batch_size: int) -> Any:
        """This rank's streams of a full (L, B, H) state (or (h, c) pair; None stays None)."""
        return _states_shard(state, self.shard(batch_size))

    # --- parameters and gradients ------------------------------------------------------------

    def broadcast_parameters(self, group: FlatParams) -> None:
        """Make every replica start from rank 0's parameters (one Bcast of the flat buffer)."""
        self.comm.Bcast(group.data, root=0)

    def allreduce_gradients(self, group: FlatParams, loss: float) -> float:
        """Average the gradients (and the loss) over the ranks, in place: one Allreduce.

        The buffer carries the flat gradients, this rank's loss and its wishes (agree()), so
        that the ranks also agree on the loss (hence on skipping a non-finite step) and on
        stopping at this step boundary, without a second collective.

        Returns:
            the mean loss over the ranks.
        """
        g = group.grad
        n, k = g.size, len(FLAGS)
        if self._buf is None or self._buf.size != n + 1 + k or self._buf.dtype != g.dtype:
            self._buf = np.empty(n + 1 + k, g.dtype)
        buf = self._buf
        buf[:n] = g
        buf[n] = loss
        buf[n + 1 :] = [self._wish[f] for f in FLAGS]
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        np.divide(buf[:n], self.size, out=g)  # sum, then divide by N
        self._agreed = {f: bool(buf[n + 1 + i] > 0) for i, f in enumerate(FLAGS)}
        return float(buf[n]) / self.size

    def agree(self, name: str, wish: bool = False) -> bool:
        """A decision taken by all ranks at one step boundary (name: one of FLAGS).

        Records this rank's wish (sticky: once True it stays), sent with the next
        allreduce_gradients, and returns whether any rank had wished it by the last one, so
        every rank gets the same answer after the same step.
        """
        if name not in FLAGS:
            raise ValueError(f"Distributed.agree: name must be one of {FLAGS}, got {name!r}")
        self._wish[name] = self._wish[name] or bool(wish)
        return self._agreed[name]

    def check_replicas(self, group: FlatParams, *, step: int) -> None:
        """Check that every rank holds the same parameters, bitwise (crc32 of the bytes).

        Raises:
            ReplicaDivergence: on every rank, naming the first tensor that differs and each
                rank's checksum.
        """
        crc = zlib.crc32(np.ascontiguousarray(group.data))
        crcs = self.comm.allgather(crc)
        if len(set(crcs)) == 1:
            return
        per_name = {k: zlib.crc32(np.ascontiguousarray(v)) for k, v in group.params.items()}
        tables = self.comm.allgather(per_name)
        differ = [k for k in per_name if len({t[k] for t in tables}) > 1]
        by_rank = ", ".join(f"rank {r}: {c:#010x}" for r, c in enumerate(crcs))
        raise ReplicaDivergence(
            f"step {step}: the model replicas differ across the {self.size} MPI ranks "
            f"(parameter checksums {by_rank}; expected one value); first differing tensor "
            f"{differ[0] if differ else '(padding)'!r} of {len(differ)}. The allreduce did "
            f"not give every rank the same gradients, or a rank's parameters were changed"
        )

    def sum(self, *values: float) -> tuple[float, ...]:
        """Element-wise sums over the ranks of a few floats, in float64 (one Allreduce)."""
        buf = np.array(values, np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return tuple(float(v) for v in buf)

    def any(self, flag: bool) -> bool:
        """Whether any rank passed True (one Allreduce)."""
        return self.sum(1.0 if flag else 0.0)[0] > 0

    def on_root(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on rank 0 only; every rank returns its result once it has returned (one
        bcast), or raises if it failed (rank 0 its own exception, the others a RuntimeError
        quoting it), so that e.g. a checkpoint just saved is there for every rank to read."""
        result: Any = None
        error: BaseException | None = None
        if self.is_root:
            try:
                result = fn(*args)
            except Exception as e:
                error = e
        outcome = self.comm.bcast(
            (result, None if error is None else f"{type(error).__name__}: {error}"), root=0
        )
        if error is not None:
            raise error
        if outcome[1] is not None:
            raise RuntimeError(f"rank {self.rank}: rank 0 failed: {outcome[1]}")
        return outcome[0]

    # --- checkpoints ------------------------------------------------------------------------

    def gather_generators(self, generator: np.random.Generator) -> list[dict[str, Any]] | None:
        """Every rank's generator state (bit_generator.state), in rank order, on rank 0; None
        on the others."""
        return self.comm.gather(generator.bit_generator.state, root=0)

    def gather_state(self, state: Any) -> Any:
        """The full (L, B, H) state on rank 0, the ranks' (L, Bl, H) states joined along the
        batch axis in rank order (a pair for the LSTM; None where the ranks hold None); None
        on the others."""
        parts = self.comm.gather(state, root=0)
        if parts is None or parts[0] is None:
            return None
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(p, axis=1) for p in zip(*parts, strict=True))
        return np.concatenate(parts, axis=1)

    # --- what the Trainer asks ---------------------------------------------------------------

    def shard_batches(self, train: Any, val: Any, batch_size: int) -> tuple[Any, Any]:
        """This rank's views (ShardedBatches) of the training and validation iterators."""
        rows = self.shard(batch_size)
        return ShardedBatches(train, rows), None if val is None else ShardedBatches(val, rows)

    def start(self, model: Any, seed: int | None) -> None:
        """Rank 0's parameters on every replica; this rank's dropout generator."""
        self.broadcast_parameters(model.params)
        model.rnn.generator.bit_generator.state = rank_generator(
            seed, self.rank
        ).bit_generator.state

    def checkpoint_parts(
        self, model: Any, state: Any, *, step: int
    ) -> tuple[Any, dict[str, Any] | None]:
        """(hidden, rng) of a checkpoint, on rank 0 (None, None elsewhere), after checking the
        replicas: the full (L, B, H) state and every rank's generator ("model": rank 0's, as
        a one-process checkpoint has it; "ranks": all, in rank order)."""
        self.check_replicas(model.params, step=step)
        generators = self.gather_generators(model.rnn.generator)
        hidden = self.gather_state(state)
        if generators is None:
            return None, None
        return hidden, {"model": generators[0], "ranks": generators}

    def resume(
        self, model: Any, rng: dict[str, Any] | None, hidden: Any, *, seed: int | None, step: int
    ) -> Any:
        """Continue a checkpoint's run on this rank; returns this rank's part of `hidden`.

        With the number of ranks that saved it, each rank continues its own generator (an
        exact resume); with another number, each rank starts rank_generator(seed, rank,
        step): the same data position and state, other dropout masks.
        """
        rng = rng or {}
        ranks = rng.get("ranks", [rng["model"]] if "model" in rng else [])
        if len(ranks) == self.size:
            model.rnn.generator.bit_generator.state = ranks[self.rank]
        else:
            fresh = rank_generator(seed, self.rank, step)
            model.rnn.generator.bit_generator.state = fresh.bit_generator.state
        if hidden is None:
            return None
        batch = (hidden[0] if isinstance(hidden, tuple) else hidden).shape[1]
        return self.shard_state(hidden, batch)

    def reduce_validation(
        self, group: FlatParams, total: float, count: float, *, step: int
    ) -> tuple[float, float]:
        """(loss sum, token count) over every rank's streams, after checking the replicas."""
        self.check_replicas(group, step=step)
        total, count = self.sum(total, count)
        return total, count

    # --- threads, interrupts, faults ---------------------------------------------------------

    def local_size(self) -> int:
        """The ranks on this machine (an MPI.COMM_TYPE_SHARED split)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            return int(local.Get_size())
        finally:
            local.Free()

    def default_threads(self, cores: int | None = None) -> int:
        """Threads per rank: the cores this process may use / the ranks on this machine."""
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            cores = cores or os.cpu_count() or 1
        return max(1, cores // self.local_size())

    def rank_map(self) -> str:
        """One line naming each rank's process: "rank 0: pid 812 on node1, rank 1: ...", so
        that the PID in the launcher's report of a dead process names its rank."""
        entries = self.comm.allgather((os.getpid(), socket.gethostname()))
        return ", ".join(f"rank {r}: pid {p} on {h}" for r, (p, h) in enumerate(entries))

    def abort(self, message: str, code: int = 1) -> None:
        """Print "rank r: message" to stderr and end every rank of the job (MPI Abort), so no
        rank waits forever in a collective for this one."""
        sys.stdout.flush()
        sys.stderr.write(f"rank {self.rank}: {message}\n")
        sys.stderr.flush()
        # MPICH's mpiexec tears the job down at once and can drop output it has not forwarded
        # yet: a moment for the message to reach it.
        time.sleep(0.5)
        self.comm.Abort(code)

    @contextmanager
    def abort_on_error(self, expected: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Turn an exception (or a non-zero exit) in this rank into abort(): "rank r: Error:
        message" on stderr (after the traceback, except for the `expected` types), then MPI
        Abort of the whole job (exit status 2 for an expected error, else 1)."""
        try:
            yield
        except SystemExit as e:
            if isinstance(e.code, int) and e.code != 0:
                self.abort(f"exiting with status {e.code}", e.code)
            elif e.code is not None and not isinstance(e.code, int):
                self.abort(str(e.code))
            raise
        except BaseException as e:
            if not isinstance(e, expected):
                traceback.print_exc(file=sys.stderr)
            self.abort(f"{type(e).__name__}: {e}", 2 if isinstance(e, expected) else 1)
            raise
