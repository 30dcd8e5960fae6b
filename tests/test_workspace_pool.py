"""WorkspacePool: the buffers of kernel calls are reused through the pool of the caller's object.

What is pinned: inside ``with pool`` a repeated call of the same shapes allocates nothing new
(every buffer comes back from the pool), results are bitwise those of a call without a pool,
arrays returned from a pool outlive it, the pool is per thread and per object (layers each hold
their own; nothing is kept process-wide), and misuse of ``with`` is a clear error.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import rnncore
from rnncore import _core

T, B, D, H = 12, 5, 7, 16


def lstm_args(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    k = 1 / np.sqrt(H)
    return (
        rng.standard_normal((T, B, D)).astype(np.float32),
        None,
        None,
        rng.uniform(-k, k, (4 * H, D)).astype(np.float32),
        rng.uniform(-k, k, (4 * H, H)).astype(np.float32),
        rng.uniform(-k, k, 4 * H).astype(np.float32),
        rng.uniform(-k, k, 4 * H).astype(np.float32),
    )


def step(args: tuple[np.ndarray, ...], dy: np.ndarray) -> list[np.ndarray]:
    y, h_n, c_n, cache = rnncore.lstm_forward(*args)
    grads = rnncore.lstm_backward(dy, None, None, cache)
    return [y, h_n, c_n, *grads]


def test_repeated_calls_reuse_every_buffer_and_match_unpooled_results() -> None:
    rng = np.random.default_rng(0)
    args = lstm_args(rng)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    plain = step(args, dy)
    pool = rnncore.WorkspacePool()
    with pool:
        first = step(args, dy)
    del first
    gc.collect()
    after_first = pool.allocated
    assert after_first > 0, "the first call inside the pool allocated its buffers from it"
    assert pool.blocks > 0 and pool.nbytes > 0, "freed buffers went back to the pool"
    with pool:
        for _ in range(3):
            again = step(args, dy)
            del again
    assert pool.allocated == after_first, "repeated calls of the same shapes allocate nothing"
    assert pool.reused >= 3 * after_first
    with pool:
        pooled = step(args, dy)
    for a, b in zip(plain, pooled, strict=True):
        np.testing.assert_array_equal(a, b)  # reused memory changes no result


def test_arrays_outlive_their_pool() -> None:
    rng = np.random.default_rng(1)
    args = lstm_args(rng)
    pool = rnncore.WorkspacePool()
    with pool:
        y, h_n, _, cache = rnncore.lstm_forward(*args)
    expected = rnncore.lstm_forward(*args)[0]
    del pool
    gc.collect()
    np.testing.assert_array_equal(y, expected)
    assert rnncore.lstm_backward(None, h_n, None, cache)[0].shape == (T, B, D)


def test_no_pool_outside_with_and_none_process_wide() -> None:
    pool = rnncore.WorkspacePool()
    rng = np.random.default_rng(2)
    args = lstm_args(rng)
    for _ in range(3):
        rnncore.lstm_forward(*args)  # outside any with: plain allocations
    assert (pool.allocated, pool.reused, pool.blocks) == (0, 0, 0)
    assert not hasattr(_core, "_pool_bytes") and not hasattr(_core, "_empty_pool")


def test_layers_each_hold_their_own_pool() -> None:
    a = rnncore.LSTM(D, H, 2, dtype=np.float32, seed=0)
    b = rnncore.LSTM(D, H, 2, dtype=np.float32, seed=0)
    x = np.random.default_rng(3).standard_normal((T, B, D)).astype(np.float32)
    for _ in range(2):
        a.forward(x)
        a.backward(np.ones((T, B, H), np.float32))
    pa, pb = a._pool, b._pool
    assert pa is not pb
    assert pb.allocated == 0 and pb.reused == 0, "b never ran: its pool is untouched"
    settled = pa.allocated
    for _ in range(3):
        a.forward(x)
        a.backward(np.ones((T, B, H), np.float32))
    assert pa.allocated == settled, "a training loop on one layer stops allocating"


def test_nesting_and_threads() -> None:
    outer, inner = rnncore.WorkspacePool(), rnncore.WorkspacePool()
    args = lstm_args(np.random.default_rng(4))
    with outer:
        with inner:
            rnncore.lstm_forward(*args)
        assert inner.allocated > 0 and outer.allocated == 0, "the innermost pool is current"
        seen: list[int] = []
        other = rnncore.WorkspacePool()

        def work() -> None:  # another thread: outer is not current there
            rnncore.lstm_forward(*args)
            with other:
                rnncore.lstm_forward(*args)
            seen.append(outer.allocated)

        th = threading.Thread(target=work)
        th.start()
        th.join()
        assert seen == [0] and other.allocated > 0


def test_with_misuse_and_arguments_are_clear_errors() -> None:
    a, b = rnncore.WorkspacePool(), rnncore.WorkspacePool()
    a.__enter__()
    b.__enter__()
    with pytest.raises(ValueError, match="not the calling thread's innermost"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)
    with pytest.raises(ValueError, match="not the calling thread's innermost"):
        a.__exit__(None, None, None)
    with pytest.raises(TypeError, match="max_blocks must be an int, got float"):
        rnncore.WorkspacePool(max_blocks=2.5)
    with pytest.raises(ValueError, match="max_bytes must be >= 0, got -1"):
        rnncore.WorkspacePool(max_bytes=-1)


def test_limits_bound_what_is_kept() -> None:
    pool = rnncore.WorkspacePool(max_blocks=2)
    args = lstm_args(np.random.default_rng(5))
    with pool:
        outs = [rnncore.lstm_forward(*args) for _ in range(3)]
    del outs
    gc.collect()
    assert pool.blocks <= 2
    assert pool.clear() > 0 and pool.blocks == 0 and pool.nbytes == 0
    keep_none = rnncore.WorkspacePool(max_blocks=0)
    with keep_none:
        rnncore.lstm_forward(*args)
    assert keep_none.blocks == 0
    assert "WorkspacePool" in repr(pool)


def test_copies_are_new_empty_pools() -> None:
    import copy
    import pickle

    pool = rnncore.WorkspacePool(max_blocks=7, max_bytes=1 << 20)
    with pool:
        rnncore.lstm_forward(*lstm_args(np.random.default_rng(6)))
    assert pool.allocated > 0
    for other in (copy.copy(pool), copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert other is not pool
        assert (other.allocated, other.reused, other.blocks) == (0, 0, 0)
    layer = rnncore.GRU(D, H, 1, seed=0)
    twin = copy.deepcopy(layer)  # a layer holding a pool still copies
    assert twin._pool is not layer._pool
    x = np.ones((T, B, D), np.float32)
    np.testing.assert_array_equal(twin.forward(x)[0], layer.forward(x)[0])


def test_the_torch_modules_hold_their_own_pool() -> None:
    torch = pytest.importorskip("torch")
    import copy

    import rnncore.torch as rt

    lstm = rt.LSTM(D, H, num_layers=2)
    x = torch.randn(T, B, D)
    for _ in range(2):
        lstm(x)[0].sum().backward()
    settled = lstm._pool.allocated
    assert settled > 0, "forward and backward drew their buffers from the module's pool"
    for _ in range(3):
        lstm(x)[0].sum().backward()
    assert lstm._pool.allocated == settled, "a training loop stops allocating"
    twin = copy.deepcopy(lstm)
    assert twin._pool is not lstm._pool
    torch.testing.assert_close(twin(x)[0], lstm(x)[0], rtol=0, atol=0)
