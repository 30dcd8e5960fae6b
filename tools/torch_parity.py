"""Parity of rnncore.torch with torch.nn: max abs / rel error per case (docs/interop.md).

    python tools/torch_parity.py                 # T=50 B=16 D=32 H=64, 2 layers
    python tools/torch_parity.py --size 50,50,64,128

For every cell torch.nn has (RNN tanh and relu, LSTM, GRU), float32 and float64, three cases:
unidirectional, bidirectional + batch_first, and bidirectional over random lengths in [1, T]
(rnncore.torch's padded batch with lengths= against torch.nn on the PackedSequence; the
outputs compared where the sequences run). Both modules hold the same state_dict; the loss is
sum(y * dy) + sum(h_n * dh) (+ sum(c_n * dc)) for fixed random dy, dh, dc. "outputs" is the
worst of y, h_n, c_n; "gradients" the worst of dx, dh_0, dc_0 and every parameter's. rel is
max|a - b| / max|b| per tensor, the worst tensor's.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnncore.torch as rt

CELLS = ("rnn-tanh", "rnn-relu", "lstm", "gru")


def build(lib, cell, D, H, L, **kw):
    if cell.startswith("rnn-"):
        return lib.RNN(D, H, L, nonlinearity=cell[4:], **kw)
    return {"lstm": lib.LSTM, "gru": lib.GRU}[cell](D, H, L, **kw)


def errors(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """(max abs error, max rel error) over pairs of tensors."""
    ab = max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True))
    rel = max(float((u - v).abs().max() / v.abs().max()) for u, v in zip(a, b, strict=True))
    return ab, rel


def case(cell, dtype, size, bidirectional, batch_first, varlen):
    T, B, D, H, L = size
    theirs = build(torch.nn, cell, D, H, L, bidirectional=bidirectional, dtype=dtype,
                   batch_first=batch_first)  # fmt: skip
    ours = build(rt, cell, D, H, L, bidirectional=bidirectional, dtype=dtype,
                 batch_first=batch_first)  # fmt: skip
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(0)
    dirs = 2 if bidirectional else 1
    shape = (B, T, D) if batch_first else (T, B, D)
    x = torch.randn(shape, generator=g, dtype=dtype)
    n = 2 if cell == "lstm" else 1
    hx = [torch.randn(L * dirs, B, H, generator=g, dtype=dtype) for _ in range(n)]
    lengths = torch.randint(1, T + 1, (B,), generator=g) if varlen else None
    up_y = torch.randn(*shape[:2], dirs * H, generator=g, dtype=dtype)
    up_s = [torch.randn(L * dirs, B, H, generator=g, dtype=dtype) for _ in range(n)]
    results = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        hi = [h.clone().requires_grad_() for h in hx]
        state = tuple(hi) if n == 2 else hi[0]
        if varlen and m is theirs:
            y, s = m(pack_padded_sequence(xi, lengths, batch_first, enforce_sorted=False), state)
            y, _ = pad_packed_sequence(y, batch_first, total_length=T)
        else:
            y, s = m(xi, state, lengths=lengths) if varlen else m(xi, state)
        s = list(s) if n == 2 else [s]
        loss = (y * up_y).sum() + sum((a * u).sum() for a, u in zip(s, up_s, strict=True))
        grads = torch.autograd.grad(loss, [xi, *hi, *m.parameters()])
        results.append(([y.detach(), *(a.detach() for a in s)], list(grads)))
    (oa, ga), (ob, gb) = results
    return errors(oa, ob), errors(ga, gb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="50,16,32,64,2", help="T,B,D,H[,L]")
    args = ap.parse_args()
    size = [int(v) for v in args.size.split(",")]
    size += [2] * (5 - len(size))
    print(f"T, B, D, H, L = {tuple(size)}; torch {torch.__version__}\n")
    print("| cell | dtype | case | outputs abs | outputs rel | gradients abs | gradients rel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cases = [
        ("uni", False, False, False),
        ("bi, batch_first", True, True, False),
        ("bi, lengths / packed", True, False, True),
    ]
    for cell in CELLS:
        for dtype in (torch.float32, torch.float64):
            for name, bi, bf, varlen in cases:
                (oa, orl), (ga, grl) = case(cell, dtype, size, bi, bf, varlen)
                print(
                    f"| {cell} | {str(dtype)[6:]} | {name} | {oa:.1e} | {orl:.1e} | {ga:.1e} | "
                    f"{grl:.1e} |"
                )


if __name__ == "__main__":
    main()
