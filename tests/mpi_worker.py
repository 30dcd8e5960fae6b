"""Programs the 2-rank tests run under mpiexec (tests/test_distributed.py): not a test module.

mpiexec -n 2 python tests/mpi_worker.py primitives
"""

from __future__ import annotations

import sys

import numpy as np

from rnncore.distributed import Distributed, ReplicaDivergence, import_mpi
from rnncore.params import ParamGroup


def primitives() -> None:
    """Every collective of rnncore.distributed on 2 ranks, with its expected result."""
    dist = Distributed(import_mpi().COMM_WORLD)
    r, n = dist.rank, dist.size
    assert n == 2, n
    assert dist.shard(6) == slice(3 * r, 3 * r + 3)
    try:
        dist.shard(5)
    except ValueError as e:
        assert "batch_size must be divisible by the number of MPI ranks N = 2" in str(e), e
        assert "got batch_size 5" in str(e), e
    else:
        raise AssertionError("batch_size 5 on 2 ranks was accepted")
    rng = np.random.default_rng(r)  # different on each rank until the broadcast
    group = ParamGroup({"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)})
    dist.broadcast_parameters(group)
    rank0 = np.random.default_rng(0)
    np.testing.assert_array_equal(group.params["a"], rank0.standard_normal((3, 4)))
    dist.check_replicas(group, step=0)  # equal: no error
    # gradients: rank r holds r + 1 everywhere, loss 10 r; the mean is 1.5 and the loss 5
    group.grad[:] = r + 1
    loss = dist.allreduce_gradients(group, 10.0 * r)
    assert loss == 5.0, loss
    np.testing.assert_array_equal(group.grad, np.full(group.grad.shape, 1.5))
    # a decision one rank wishes reaches every rank with the next allreduce, not before
    assert dist.agree("interrupt", r == 1) is False
    dist.allreduce_gradients(group, 0.0)
    assert dist.agree("interrupt") is True and dist.agree("time_limit") is False
    assert dist.sum(1.0, 2.0 * r) == (2.0, 2.0)
    assert dist.any(r == 0) and not dist.any(False)
    # the full (L, B, H) state from (L, B/2, H) shards, and back
    full = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    mine = dist.shard_state(full, 4)
    np.testing.assert_array_equal(mine, full[:, 2 * r : 2 * r + 2])
    got = dist.gather_state((mine, mine + 1))
    if r == 0:
        np.testing.assert_array_equal(got[0], full)
        np.testing.assert_array_equal(got[1], full + 1)
    else:
        assert got is None
    assert dist.gather_state(None) is None
    gens = dist.gather_generators(np.random.default_rng([7, r]))
    if r == 0:
        assert [g["state"] for g in gens] == [
            np.random.default_rng([7, k]).bit_generator.state["state"] for k in range(2)
        ]
    assert dist.on_root(lambda a: a + r, 40) == 40  # rank 0's result, on every rank

    def fails() -> None:
        raise OSError("disk full")

    try:
        dist.on_root(fails)
    except (OSError, RuntimeError) as e:  # rank 0 its own error, rank 1 a RuntimeError
        assert "disk full" in str(e) and (r == 0) == isinstance(e, OSError), e
    else:
        raise AssertionError("rank 0's failure was not raised")
    assert dist.local_size() == 2
    assert dist.default_threads(cores=8) == 4 and dist.default_threads(cores=1) == 1
    assert "rank 1: pid" in dist.rank_map()
    # a replica that drifts is named
    if r == 1:
        group.params["b"][2] += 1e-12
    try:
        dist.check_replicas(group, step=7)
    except ReplicaDivergence as e:
        assert "step 7: the model replicas differ across the 2 MPI ranks" in str(e), e
        assert "first differing tensor 'b'" in str(e), e
    else:
        raise AssertionError("diverged replicas were not detected")
    print(f"rank {r}: OK", flush=True)


if __name__ == "__main__":
    {"primitives": primitives}[sys.argv[1]]()
