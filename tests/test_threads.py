"""Python threads: the kernels release the GIL, concurrent calls on different data give what
serial calls give, and the thread-safety rules of docs/reliability.md hold."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnncore
from conftest import num_threads
from test_kernels import CELLS as KERNEL_CELLS

CELLS = {
    "rnn": (rnncore.rnn_forward, rnncore.rnn_backward, 1, False),
    "lstm": (rnncore.lstm_forward, rnncore.lstm_backward, 4, True),
    "gru": (rnncore.gru_forward, rnncore.gru_backward, 3, False),
}


def problem(cell: str, seed: int, dtype=np.float32, T=20, B=4, D=6, H=16):
    """Inputs of one forward + backward, different for every seed."""
    _, _, G, has_c = CELLS[cell]
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    args = [rng.standard_normal((T, B, D)), rng.standard_normal((B, H))]
    if has_c:
        args.append(rng.standard_normal((B, H)))
    args += [rng.uniform(-k, k, (G * H, D)), rng.uniform(-k, k, (G * H, H))]
    args += [rng.uniform(-k, k, G * H), rng.uniform(-k, k, G * H)]
    upstream = [rng.standard_normal((T, B, H))] + [rng.standard_normal((B, H))] * (1 + has_c)
    return [a.astype(dtype) for a in args], [u.astype(dtype) for u in upstream]


def forward_backward(cell: str, args, upstream):
    fwd, bwd, _, _ = CELLS[cell]
    *outs, cache = fwd(*args)
    return [*outs, *bwd(*upstream, cache)]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_concurrent_calls_equal_serial_calls(n_threads):
    """8 Python threads, each running forward + backward of every cell on its own data,
    several times over, interleaved: every result is bitwise the serial one (the kernels
    keep no state between calls: each buffer is the calling thread's own)."""
    jobs = [(cell, seed, dtype) for cell in CELLS for seed in range(4)
            for dtype in (np.float32, np.float64)]  # fmt: skip
    with num_threads(n_threads):
        serial = {job: forward_backward(job[0], *problem(*job)) for job in jobs}
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {job: [pool.submit(forward_backward, job[0], *problem(*job)) for _ in
                             range(3)] for job in jobs}  # fmt: skip
            results = {job: [f.result() for f in fs] for job, fs in futures.items()}
    for job, runs in results.items():
        for run in runs:
            for i, (a, b) in enumerate(zip(run, serial[job], strict=True)):
                if b is None:
                    assert a is None
                else:
                    np.testing.assert_array_equal(a, b, err_msg=f"{job} result {i}")


def test_one_cache_backpropagated_from_several_threads_at_once():
    """A cache is read-only: concurrent backward passes through the same cache agree."""
    args, upstream = problem("lstm", 7, np.float64, T=50, H=32)
    *_, cache = rnncore.lstm_forward(*args)
    want = rnncore.lstm_backward(*upstream, cache)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: rnncore.lstm_backward(*upstream, cache), range(8)))
    for g in got:
        for a, b in zip(g, want, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_threads_with_their_own_layers_equal_serial(kind):
    """The documented rule: a layer holds its caches between forward and backward, so each
    thread uses its own layer object. Layers of one seed in 4 threads, each training on its
    own data for a few steps, end with the parameters of the same steps run serially."""

    def train(seed: int):
        layer = getattr(rnncore, kind)(5, 8, 2, dtype=np.float64, seed=0)
        rng = np.random.default_rng(seed)
        for _ in range(3):
            x, dy = rng.standard_normal((12, 3, 5)), rng.standard_normal((12, 3, 8))
            layer.zero_grad()
            layer.forward(x)
            layer.backward(dy)
            for name, p in layer.parameters().items():
                p -= 0.1 * layer.grads[name]
        return layer.state_dict()

    serial = [train(seed) for seed in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(train, range(4)))
    assert serial[0]["weight_hh_l1"].tolist() != serial[1]["weight_hh_l1"].tolist()
    for a, b in zip(threaded, serial, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_gil_is_released_while_a_kernel_runs():
    """A Python thread makes progress while a long kernel runs in another.

    The kernel thread records when the call started and ended; the main thread records the
    time of every iteration of a pure-Python loop. If the call held the GIL, no Python code
    could run in the main thread between the call's entry and its return, so no iteration
    would fall inside that window (less 50 ms at each end for the switch interval around
    the call, 5 ms by default). The kernel is sized to run >= 0.4 s at one thread; on a busy
    2-core machine the main thread still gets the other core for part of that time.
    """
    rng = np.random.default_rng(0)
    H, B = 1024, 1  # one (H, H) matrix-vector product per step: long, and y is only T*4 KiB
    w_ih = rng.uniform(-0.05, 0.05, (H, 8)).astype(np.float32)
    w_hh = rng.uniform(-0.03, 0.03, (H, H)).astype(np.float32)

    def kernel(T):
        x = np.broadcast_to(np.float32(0.5), (T, B, 8))  # no memory for x
        rnncore.rnn_forward(x, None, w_ih, w_hh, training=False)

    with num_threads(1):  # leave the second core to the main thread
        T = 250
        while True:  # calibrate: at least 0.4 s, without the main thread competing
            t = time.perf_counter()
            kernel(T)
            if time.perf_counter() - t >= 0.4 or T >= 250 * 2**8:  # y <= 256 MiB
                break
            T *= 2
        window: list[float] = []
        done = threading.Event()

        def run():
            window.append(time.perf_counter())
            kernel(T)
            window.append(time.perf_counter())
            done.set()

        ticks: list[float] = []
        worker = threading.Thread(target=run)
        worker.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
        worker.join()
    start, end = window[0] + 0.05, window[1] - 0.05
    assert end - start > 0.2, f"the kernel ran only {window[1] - window[0]:.3f} s"
    inside = sum(start < t < end for t in ticks)
    assert inside > 0, (
        f"no Python progress during a {window[1] - window[0]:.2f} s kernel: the GIL was held"
    )


@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=str)
@pytest.mark.parametrize("B", [1, 5, 16, 23, 50])
def test_recurrence_is_bitwise_independent_of_thread_count(cell, B):
    """Threads split each step's recurrent product and pointwise update by hidden units, and
    each element of the product is one float32 dot product over k in order, whatever the
    split (common/packed_gemm.h). So with token ids (the input side is a gather, not a GEMM
    whose rounding depends on its shape) the outputs, final states and the gradients that flow
    back through time are bitwise the 1-thread ones.

    H = 150 (nine blocks of 16 units and a partial one of 6) gives even the vanilla RNN enough
    work per step for 2 threads from B = 5 (threads_for: 1e5 FLOPs per thread) and for 3 from
    B = 16; B = 1 stays on one thread."""
    if rnncore.blas_info()["recurrent_kernel"] == "blas":
        pytest.skip("float32 products go to OpenBLAS, whose rounding depends on the call's shape")
    T, V, H, G, has_c = 9, 11, 150, cell.gates, cell.has_c
    rng = np.random.default_rng(B)
    k = 1 / np.sqrt(H)
    args = {"x": rng.integers(0, V, (T, B)), "h0": rng.standard_normal((B, H)).astype(np.float32)}
    if has_c:
        args["c0"] = rng.standard_normal((B, H)).astype(np.float32)
    for name, shape in (
        ("w_ih", (G * H, V)),
        ("w_hh", (G * H, H)),
        ("b_ih", G * H),
        ("b_hh", G * H),
    ):
        args[name] = rng.uniform(-k, k, shape).astype(np.float32)
    upstream = [
        rng.standard_normal(s).astype(np.float32) for s in ((T, B, H), *[(B, H)] * (1 + has_c))
    ]
    results = []
    for n in (1, 2, 3):
        with num_threads(n):
            outs, cache = cell.forward(args)
            grads = cell.backward(upstream, cache)
        # Outputs and states, then dh0 (and dc0): what the time loop computes.
        results.append([*outs, *grads[1 : 2 + has_c]])
    names = [*cell.outputs, *cell.grads[1 : 2 + has_c]]
    for n, got in zip((2, 3), results[1:], strict=True):
        for name, a, b in zip(names, results[0], got, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, {n} threads")


@pytest.mark.parametrize("path", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=str)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("B", [16, 40, 50])
def test_row_groups_change_no_bit(cell, B, lengths, path):
    """From B = 16 on 2 threads the time loop splits the batch rows instead of the hidden units
    (common/sequence.h row_groups: each thread runs all G*H gate columns of its own rows, with
    no barrier per step; 3 threads: three groups of rows from B = 24). Every element of a
    product is still one dot product in k order, the bias gradients are each row's sums over its
    steps added in row order (one order for any split), and the dense input side (W_ih, G*H x D:
    at most 80 KB here) stays on the packed kernel: y, the states, dx, dh0 (dc0) and the bias
    gradients are bitwise the 1-thread ones, with lengths too (the groups then split the
    row-steps, not the rows, evenly). dW_ih and dW_hh are summed per row group over the group's
    own rows and the groups' sums then added (on the portable path: OpenBLAS on column slices
    whose shape follows the thread count): to the rounding of a reordered float32 sum of T*B
    terms (T*B*eps of its largest magnitude). On every packed kernel path (a path this CPU
    lacks skips, with the reason)."""
    from test_kernels import make_args, make_upstream
    from test_packed import gemm_path

    rng = np.random.default_rng(B)
    T, D, H = 13, 20, 72
    args = make_args(cell, rng, T, B, D, H, np.float32)
    upstream = make_upstream(cell, rng, T, B, H, np.float32)
    kw = {}
    if lengths:
        kw["lengths"] = rng.integers(0, T + 1, B)
        kw["lengths"][:3] = [T, 0, 1]
    results = []
    with gemm_path(path):
        for n in (1, 2, 3):
            with num_threads(n):
                outs, cache = cell.forward(args, **kw)
                results.append([*outs, *cell.backward(upstream, cache)])
    names = cell.outputs + cell.grads
    for n, got in zip((2, 3), results[1:], strict=True):
        for name, a, b in zip(names, results[0], got, strict=True):
            if name in ("dw_ih", "dw_hh"):
                tol = T * B * np.finfo(np.float32).eps * np.abs(a).max()
                np.testing.assert_allclose(b, a, rtol=0, atol=tol, err_msg=f"{name}, {n} threads")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{name}, {n} threads")
