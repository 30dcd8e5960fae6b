"""The lower bound of a layer wavefront on 2 cores, measured: each layer of a 2-layer LSTM alone
on one thread (fwd+bwd), against the stack with both threads on every product; and the wavefront
schedule itself (rnncore.LSTM with ``wavefront = True``, rnncore/wavefront.py) against the
default schedule, both at 2 threads.

    python benchmarks/wavefront_bound.py 50 50 64 128      # T B D H: charrnn-L2
    python benchmarks/wavefront_bound.py 100 64 256 512    # medium-L2

A wavefront (layer l at step t while layer l-1 is at step t+1, each core one layer) cannot take
less than the slower layer alone on one core, plus a step of pipeline fill; if that bound is
above the stack's time at 2 threads, no wavefront can win. float32, zero initial states, dy
given, both layers' weight gradients and layer 1's dx computed (as the stack does), all calls
inside one WorkspacePool, medians of 9 samples of 5 calls, two rounds. The two schedules run as
rnncore.LSTM layer objects (each its own pool), forward then backward, one sample of each in
turn; the ratio is the median of the per-sample ratios.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

import rnncore
import workers


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    T, B, D, H = (int(a) for a in argv)
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)

    def layer(d: int) -> list[np.ndarray]:
        shapes = ((4 * H, d), (4 * H, H), (4 * H,), (4 * H,))
        return [rng.uniform(-k, k, s).astype(np.float32) for s in shapes]

    w0, w1 = layer(D), layer(H)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    pool = rnncore.WorkspacePool()

    def one(w: list[np.ndarray], inp: np.ndarray) -> None:
        cache = rnncore.lstm_forward(inp, None, None, *w)[3]
        rnncore.lstm_backward(dy, None, None, cache)

    def stack() -> None:
        y0, _, _, c0 = rnncore.lstm_forward(x, None, None, *w0)
        c1 = rnncore.lstm_forward(y0, None, None, *w1)[3]
        g = rnncore.lstm_backward(dy, None, None, c1)[0]
        rnncore.lstm_backward(g, None, None, c0)

    with pool:
        y0 = rnncore.lstm_forward(x, None, None, *w0)[0]

    def ms(f: Callable[[], None], threads: int) -> float:
        rnncore.set_num_threads(threads)
        with pool:
            for _ in range(5):
                f()
            samples = []
            for _ in range(9):
                t0 = time.perf_counter()
                for _ in range(5):
                    f()
                samples.append((time.perf_counter() - t0) / 5 * 1e3)
        return statistics.median(samples)

    layers = {}
    for on in (False, True):
        lstm = rnncore.LSTM(D, H, 2, seed=0)
        lstm.load_state_dict(
            {
                f"{name}_l{i}": w[j]
                for i, w in enumerate((w0, w1))
                for j, name in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            }
        )
        lstm.wavefront = on
        layers[on] = lstm

    def schedule(on: bool) -> Callable[[], None]:
        def run() -> None:
            layers[on].forward(x)
            layers[on].backward(dy)

        return run

    def paired(f: Callable[[], None], g: Callable[[], None], threads: int) -> tuple[float, ...]:
        """Medians of f's and g's samples taken alternately, and the median of the per-sample
        ratios f / g (the machine's drift cancels out of them)."""
        rnncore.set_num_threads(threads)
        fs, gs = [], []
        for _ in range(3):
            f(), g()
        for _ in range(9):
            for fn, out in ((f, fs), (g, gs)):
                t0 = time.perf_counter()
                for _ in range(5):
                    fn()
                out.append((time.perf_counter() - t0) / 5 * 1e3)
        ratio = workers.paired_ratio(fs, gs)
        return statistics.median(fs), statistics.median(gs), ratio

    print(f"{rnncore.blas_info()['recurrent_kernel']} kernel, T={T} B={B} D={D} H={H}")
    for _ in range(2):
        l0, l1 = ms(lambda: one(w0, x), 1), ms(lambda: one(w1, y0), 1)
        s2 = ms(stack, 2)
        print(
            f"layer 0 alone 1 thread {l0:.2f} ms, layer 1 alone 1 thread {l1:.2f} ms -> a "
            f"wavefront on 2 cores >= {max(l0, l1):.2f} ms (+ a step of fill); the stack at 2 "
            f"threads {s2:.2f} ms"
        )
        by_layer, wave, ratio = paired(schedule(False), schedule(True), 2)
        print(
            f"rnncore.LSTM at 2 threads: layer after layer {by_layer:.2f} ms, wavefront "
            f"{wave:.2f} ms ({ratio:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
