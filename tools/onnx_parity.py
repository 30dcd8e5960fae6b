"""Max abs / rel error of exported ONNX models against rnncore's float32 forward, per case.

    python tools/onnx_parity.py [--T 50] [--B 16] [--D 32] [--H 64]

For every cell (RNN tanh/relu, LSTM, GRU reset_after True/False), 1 and 2 layers, uni- and
bidirectional, with and without sequence_lens (random lengths in [1, T]): ONNX Runtime's and
onnx.reference's outputs (y and the final states) against rnncore's. rel = max|a-b| / max|b|
over each output, the worst output reported. onnx.reference ignores sequence_lens and has no
Relu, so those cases show "-". Needs pip install '.[onnx]'.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

import rnncore

CELLS = [
    ("rnn_tanh", rnncore.RNN, {}),
    ("rnn_relu", rnncore.RNN, {"nonlinearity": "relu"}),
    ("lstm", rnncore.LSTM, {}),
    ("gru", rnncore.GRU, {}),
    ("gru_reset_before", rnncore.GRU, {"reset_after": False}),
]


def errors(got: list[np.ndarray], expected: list[np.ndarray]) -> tuple[float, float]:
    """(max abs, max rel) over the outputs."""
    a = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    r = max(
        float(np.abs(g - e).max() / max(np.abs(e).max(), 1e-30))
        for g, e in zip(got, expected, strict=True)
    )
    return a, r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("T", 50), ("B", 16), ("D", 32), ("H", 64)):
        p.add_argument(f"--{name}", type=int, default=default)
    args = p.parse_args()
    T, B, D, H = args.T, args.B, args.D, args.H
    rng = np.random.default_rng(0)
    print(f"T={T} B={B} D={D} H={H}, float32, onnxruntime {ort.__version__}")
    print(f"{'case':42} {'ORT abs':>9} {'ORT rel':>9} {'ref abs':>9} {'ref rel':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        for name, cls, kw in CELLS:
            for L in (1, 2):
                for bi in (False, True):
                    for lens in (False, True):
                        m = cls(D, H, L, bidirectional=bi, seed=1, **kw)
                        dirs = 2 if bi else 1
                        x = rng.standard_normal((T, B, D)).astype(np.float32)
                        s = [
                            rng.standard_normal((L * dirs, B, H)).astype(np.float32)
                            for _ in range(2 if cls is rnncore.LSTM else 1)
                        ]
                        state = tuple(s) if len(s) == 2 else s[0]
                        lengths = rng.integers(1, T + 1, B) if lens else None
                        y, final = m.forward(x, state, lengths=lengths, training=False)
                        expected = [y, *final] if isinstance(final, tuple) else [y, final]
                        rnncore.export_onnx(m, path, sequence_lens=lens)
                        feeds = {"x": x, "h0": s[0]} | ({"c0": s[1]} if len(s) == 2 else {})
                        ref = "        -         -"
                        if not lens and name != "rnn_relu":
                            got = ReferenceEvaluator(str(path)).run(None, feeds)
                            ref = "{:9.1e} {:9.1e}".format(*errors(got, expected))
                        if lens:
                            feeds["sequence_lens"] = lengths.astype(np.int32)
                        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                        a, r = errors(sess.run(None, feeds), expected)
                        kind = ("bi " if bi else "uni") + (" lengths" if lens else " full")
                        case = f"{name} L={L} {kind}"
                        print(f"{case:42} {a:9.1e} {r:9.1e} {ref}")


if __name__ == "__main__":
    main()
