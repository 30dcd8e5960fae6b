"""rnncore.torch: torch.nn.RNN/LSTM/GRU modules on rnncore's kernels (autograd op, parity, input).

Tolerances: float64 parity with torch.nn is asserted to 1e-12 relative (both compute the same
sums in another order: observed <= 1e-14); float32 to 2e-5 relative (a few hundred ulps of
1.19e-7 after T = 7 steps of two layers: observed <= 2e-6). gradcheck compares the op's
analytic Jacobian with central differences at eps = 1e-6 in float64 (truncation ~1e-12,
rounding ~1e-10): atol 1e-7, rtol 1e-5 leave room for neither to pass a wrong gradient.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncore
from conftest import rel_err

torch = pytest.importorskip("torch", reason="rnncore.torch needs PyTorch (pip install torch)")
rt = pytest.importorskip("rnncore.torch", reason="rnncore.torch needs PyTorch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru", "gru-reset-before"]
TORCH_CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]  # torch.nn has no reset-before GRU


def make(cell, D, H, L=1, **kw):
    """rnncore.torch's module for a cell name of CELLS."""
    if cell.startswith("rnn-"):
        return rt.RNN(D, H, L, nonlinearity=cell[4:], **kw)
    if cell == "lstm":
        return rt.LSTM(D, H, L, **kw)
    return rt.GRU(D, H, L, reset_after=cell == "gru", **kw)


def make_torch(cell, D, H, L=1, **kw):
    if cell.startswith("rnn-"):
        return torch.nn.RNN(D, H, L, nonlinearity=cell[4:], **kw)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H, L, **kw)


def pair(cell, D, H, L, dtype, **kw):
    """(ours, torch.nn's) with the same weights (torch's initialisation, loaded into ours)."""
    theirs = make_torch(cell, D, H, L, dtype=dtype, **kw)
    ours = make(cell, D, H, L, dtype=dtype, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def states(cell, out):
    """The state part of a forward's output as a list: [h_n] or [h_n, c_n]."""
    s = out[1]
    return list(s) if cell == "lstm" else [s]


def data(y):
    return y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y


def run_and_grad(cell, module, x, hx, upstream):
    """Forward, the loss sum(y·dy) + sum(s·ds), and the gradients of x, hx and every parameter."""
    out = module(x, hx)
    ss = states(cell, out)
    loss = (data(out[0]) * upstream[0]).sum() + sum(
        (s * u).sum() for s, u in zip(ss, upstream[1:], strict=True)
    )
    leaves = [x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x]
    leaves += list(hx) if isinstance(hx, tuple) else [hx]
    leaves += list(module.parameters())
    return [data(out[0]), *ss], torch.autograd.grad(loss, leaves)


def inputs(cell, T, B, D, H, L, dirs, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g, dtype=dtype, requires_grad=True)
    hx = [
        torch.randn(L * dirs, B, H, generator=g, dtype=dtype, requires_grad=True)
        for _ in range(2 if cell == "lstm" else 1)
    ]
    return x, (tuple(hx) if cell == "lstm" else hx[0])


# --- the op's gradient ------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, [4, 0, 2]], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, bidirectional, lengths):
    """torch.autograd.gradcheck of the whole module in float64: d(output, h_n, c_n) with
    respect to x, the initial states and every parameter, 2 layers, with and without lengths
    (a length 0 included: its final state is its h0, its gradient dh_n)."""
    torch.manual_seed(3)
    m = make(cell, 3, 2, 2, bidirectional=bidirectional, dtype=torch.float64)
    dirs = 2 if bidirectional else 1
    x, hx = inputs(cell, 4, 3, 3, 2, 2, dirs, torch.float64, seed=4)
    params = list(m.parameters())
    names = [n for n, _ in m.named_parameters()]
    hs = list(hx) if cell == "lstm" else [hx]

    def f(x, *rest):
        h = rest[: len(hs)]
        sd = dict(zip(names, rest[len(hs) :], strict=True))
        out = torch.func.functional_call(
            m, sd, (x, tuple(h) if cell == "lstm" else h[0]), {"lengths": lengths}
        )
        return (out[0], *states(cell, out))

    assert torch.autograd.gradcheck(f, (x, *hs, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_second_order_gradient_is_refused():
    """The op is once differentiable (its backward is a kernel): a gradient of a gradient is
    an error, not a silent zero."""
    m = rt.GRU(3, 2, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        g.sum().backward()


# --- parity with torch.nn ---------------------------------------------------------------------

PARITY = [  # (L, bidirectional, batch_first)
    (2, False, False),
    (2, True, True),
    (1, True, False),
]


@pytest.mark.parametrize(("L", "bidirectional", "batch_first"), PARITY)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_parity_with_torch_nn(cell, dtype, L, bidirectional, batch_first):
    """Outputs, final states and the gradients of x, hx and every parameter agree with
    torch.nn's module holding the same state_dict."""
    T, B, D, H = 7, 3, 5, 4
    ours, theirs = pair(cell, D, H, L, dtype, bidirectional=bidirectional, batch_first=batch_first)
    dirs = 2 if bidirectional else 1
    x, hx = inputs(cell, T, B, D, H, L, dirs, dtype)
    if batch_first:
        x = x.detach().transpose(0, 1).contiguous().requires_grad_()
    g = torch.Generator().manual_seed(9)
    y_shape = (B, T, dirs * H) if batch_first else (T, B, dirs * H)
    upstream = [torch.randn(y_shape, generator=g, dtype=dtype)]
    upstream += [
        torch.randn(L * dirs, B, H, generator=g, dtype=dtype) for _ in states(cell, (0, hx))
    ]
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    outs_a, grads_a = run_and_grad(cell, ours, x, hx, upstream)
    outs_b, grads_b = run_and_grad(cell, theirs, x, hx, upstream)
    assert outs_a[0].shape == y_shape
    for a, b in zip([*outs_a, *grads_a], [*outs_b, *grads_b], strict=True):
        assert a.dtype == dtype
        assert rel_err(a.detach().numpy(), b.detach().numpy()) < tol


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_packed_sequence_and_lengths_match_torch(cell):
    """A PackedSequence (unsorted, enforce_sorted=False) gives torch.nn's packed output (same
    batch_sizes and indices), states and gradients; the padded batch with lengths= gives the
    same numbers, 0 in the padding (float64, 1e-12)."""
    T, B, D, H, L = 6, 4, 3, 5, 2
    lengths = torch.tensor([3, 6, 1, 4])
    ours, theirs = pair(cell, D, H, L, torch.float64, bidirectional=True)
    x, hx = inputs(cell, T, B, D, H, L, 2, torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    g = torch.Generator().manual_seed(2)
    up = [torch.randn(packed.data.shape[0], 2 * H, generator=g, dtype=torch.float64)]
    up += [
        torch.randn(2 * L, B, H, generator=g, dtype=torch.float64) for _ in states(cell, (0, hx))
    ]
    outs_a, grads_a = run_and_grad(cell, ours, packed, hx, up)
    outs_b, grads_b = run_and_grad(cell, theirs, packed, hx, up)
    for a, b in zip([*outs_a, *grads_a], [*outs_b, *grads_b], strict=True):
        assert rel_err(a.detach().numpy(), b.detach().numpy()) < 1e-12
    y_packed, _ = ours(packed, hx)
    ref_packed, _ = theirs(packed, hx)
    assert torch.equal(y_packed.batch_sizes, ref_packed.batch_sizes)
    assert torch.equal(y_packed.sorted_indices, ref_packed.sorted_indices)

    y, s = ours(x, hx, lengths=lengths)
    ref, _ = pad_packed_sequence(ref_packed, total_length=T)
    assert rel_err(y.detach().numpy(), ref.detach().numpy()) < 1e-12
    for a, b in zip(states(cell, (y, s)), states(cell, theirs(packed, hx)), strict=True):
        assert rel_err(a.detach().numpy(), b.detach().numpy()) < 1e-12
    pad = torch.arange(T).unsqueeze(1) >= lengths.unsqueeze(0)  # (T, B)
    assert torch.all(y[pad] == 0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unbatched_input_matches_torch(cell):
    ours, theirs = pair(cell, 3, 4, 2, torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, dtype=torch.float64)
    hx = (h0, h0.flip(1)) if cell == "lstm" else h0
    a, b = ours(x, hx), theirs(x, hx)
    assert a[0].shape == (5, 4)
    for u, v in zip([a[0], *states(cell, a)], [b[0], *states(cell, b)], strict=True):
        assert u.shape == v.shape and rel_err(u.detach().numpy(), v.detach().numpy()) < 1e-12


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_dropout_masks_are_torchs(cell):
    """In training mode the inter-layer dropout is torch's (F.dropout): after the same
    torch.manual_seed the outputs equal torch.nn's; in eval mode there is none."""
    ours, theirs = pair(cell, 3, 4, 3, torch.float64, dropout=0.5)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.manual_seed(11)
    a = ours(x)[0]
    torch.manual_seed(11)
    b = theirs(x)[0]
    assert rel_err(a.detach().numpy(), b.detach().numpy()) < 1e-12
    ours.eval()
    theirs.eval()
    assert rel_err(ours(x)[0].detach().numpy(), theirs(x)[0].detach().numpy()) < 1e-12
    ours.train()
    assert not torch.equal(ours(x)[0], ours(x)[0])  # fresh masks each call


def test_initialisation_and_state_dict_are_torchs():
    """After the same torch.manual_seed the parameters equal torch.nn's (names, order, shapes,
    values), and state_dicts load both ways with strict=True."""
    for ours_cls, theirs_cls, kw in [
        (rt.LSTM, torch.nn.LSTM, {}),
        (rt.GRU, torch.nn.GRU, {"bias": False}),
        (rt.RNN, torch.nn.RNN, {"nonlinearity": "relu", "bidirectional": True}),
    ]:
        torch.manual_seed(5)
        ours = ours_cls(3, 4, 2, **kw)
        torch.manual_seed(5)
        theirs = theirs_cls(3, 4, 2, **kw)
        sa, sb = ours.state_dict(), theirs.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sb)
        theirs.load_state_dict(ours_cls(3, 4, 2, **kw).state_dict())
        ours.load_state_dict(theirs.state_dict())
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())
        assert [len(w) for w in ours.all_weights] == [len(w) for w in theirs.all_weights]


def test_training_steps_follow_torch():
    """Five Adam steps on a bidirectional 2-layer LSTM with batch_first and lengths: the same
    parameters as torch.nn's on the equivalent PackedSequence (float64, 1e-10)."""
    ours, theirs = pair("lstm", 3, 4, 2, torch.float64, bidirectional=True, batch_first=True)
    opt_a = torch.optim.Adam(ours.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(theirs.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 4])
    for _ in range(5):
        x = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
        y, (h, _) = ours(x, lengths=lengths)
        (y.square().sum() + h.sum()).backward()
        opt_a.step()
        opt_a.zero_grad()
        yp, (h, _) = theirs(
            pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        )
        (yp.data.square().sum() + h.sum()).backward()
        opt_b.step()
        opt_b.zero_grad()
    for k, v in theirs.state_dict().items():
        assert rel_err(ours.state_dict()[k].numpy(), v.numpy()) < 1e-10, k


# --- the boundary -----------------------------------------------------------------------------


def test_no_copy_at_the_numpy_boundary(monkeypatch):
    """The kernel receives NumPy views of the tensors' memory (x, h0, the weights) and the
    module returns tensors over the kernel's arrays (y, without batch_first or two directions)."""
    seen = {}
    real = rnncore._core.gru_forward

    def spy(x, h0, w_ih, w_hh, b_ih, b_hh, **kw):
        out = real(x, h0, w_ih, w_hh, b_ih, b_hh, **kw)
        seen["in"] = [a.__array_interface__["data"][0] for a in (x, h0, w_ih, w_hh, b_ih, b_hh)]
        seen["y"] = out[0].__array_interface__["data"][0]
        return out

    monkeypatch.setattr(rnncore._core, "gru_forward", spy)
    m = rt.GRU(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    h0 = torch.randn(1, 2, 4)
    y, _ = m(x, h0)
    expected = [x.data_ptr(), h0.data_ptr()] + [p.data_ptr() for p in m.parameters()]
    assert seen["in"] == expected
    assert y.data_ptr() == seen["y"]


def test_inference_path_matches_training_path():
    """Under torch.no_grad the kernels run without a cache: the same outputs, no graph."""
    m = rt.LSTM(3, 4, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y, (h, c) = m(x, lengths=[5, 3])
    with torch.no_grad():
        y2, (h2, c2) = m(x, lengths=[5, 3])
    assert y2.grad_fn is None and y.grad_fn is not None
    assert torch.equal(y, y2) and torch.equal(h, h2) and torch.equal(c, c2)


def test_import_rnncore_does_not_import_torch():
    code = "import sys, rnncore; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_safetensors_between_the_torch_module_and_the_numpy_layer(tmp_path):
    """rnncore.torch.GRU's state_dict saved by safetensors.torch loads into rnncore.GRU (the
    NumPy layer) and both compute the same y; rnncore.save_weights loads back (float64)."""
    stt = pytest.importorskip("safetensors.torch", reason="needs safetensors")
    m = rt.GRU(3, 4, 2, bidirectional=True, dtype=torch.float64)
    stt.save_file(m.state_dict(), str(tmp_path / "g.safetensors"))
    layer = rnncore.GRU(3, 4, 2, bidirectional=True, dtype=np.float64)
    rnncore.load_weights(layer, tmp_path / "g.safetensors")
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y, _ = layer.forward(x, training=False)
    assert rel_err(y, m(torch.from_numpy(x))[0].detach().numpy()) < 1e-13
    rnncore.save_weights(layer, tmp_path / "back.safetensors")
    m2 = rt.GRU(3, 4, 2, bidirectional=True, dtype=torch.float64)
    m2.load_state_dict(stt.load_file(str(tmp_path / "back.safetensors")))
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in m.state_dict().items())


# --- bad input --------------------------------------------------------------------------------


def test_bad_construction():
    with pytest.raises(
        ValueError, match=r"RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"
    ):
        rt.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(
        TypeError, match=r"LSTM: dtype must be torch.float32 or torch.float64, got torch.float16"
    ):
        rt.LSTM(3, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"LSTM: proj_size must be 0 \(no projection\), got 2"):
        rt.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"GRU: hidden_size must be >= 1, got 0"):
        rt.GRU(3, 0)
    with pytest.raises(ValueError, match=r"GRU: dropout must be in \[0, 1\), got 1.5"):
        rt.GRU(3, 4, 2, dropout=1.5)
    with pytest.raises(TypeError, match=r"GRU: reset_after must be a bool, got int"):
        rt.GRU(3, 4, reset_after=1)
    with pytest.raises(ValueError, match=r"GRU: device must be the CPU"):
        rt.GRU(3, 4, device="meta")
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rt.GRU(3, 4, 1, dropout=0.2)


def test_bad_forward_input():
    m = rt.LSTM(3, 4, 2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(
        TypeError,
        match=r"LSTM.forward: input must be a torch.Tensor or a PackedSequence, got ndarray",
    ):
        m(x.numpy())
    with pytest.raises(
        TypeError,
        match=r"LSTM.forward: input must have dtype torch.float32 \(the module's dtype\), got torch.float64",
    ):
        m(x.double())
    with pytest.raises(
        ValueError,
        match=r"LSTM.forward: input must have 3 features \(input_size\) in its last dimension, got shape \(5, 2, 4\)",
    ):
        m(torch.randn(5, 2, 4))
    with pytest.raises(
        ValueError,
        match=r"LSTM.forward: input must be 3-D \(T, B, D\) or 2-D \(T, D\) unbatched, got shape \(5,\)",
    ):
        m(torch.randn(5))
    with pytest.raises(
        TypeError,
        match=r"LSTM.forward: hx must be a tuple \(h_0, c_0\) of tensors for the LSTM, or None, got Tensor",
    ):
        m(x, torch.zeros(2, 2, 4))
    with pytest.raises(
        ValueError,
        match=r"LSTM.forward: hx\[1\] \(c_0\) must have shape \(2, 2, 4\) \(num_layers \* num_directions, batch, hidden_size\), got \(1, 2, 4\)",
    ):
        m(x, (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(
        ValueError, match=r"LSTM.forward: lengths must have shape \(B,\) = \(2,\), got shape \(3,\)"
    ):
        m(x, lengths=[1, 2, 3])
    with pytest.raises(
        ValueError,
        match=r"LSTM.forward: lengths must have values in \[0, T\] = \[0, 5\], got lengths\[1\] = 6",
    ):
        m(x, lengths=[1, 6])
    with pytest.raises(TypeError, match=r"LSTM.forward: lengths must .*integer.*float"):
        m(x, lengths=torch.tensor([1.0, 2.0]))
    packed = pack_padded_sequence(x, torch.tensor([5, 3]))
    with pytest.raises(
        ValueError, match=r"LSTM.forward: lengths must be None with a PackedSequence input"
    ):
        m(packed, lengths=[5, 3])
    with pytest.raises(ValueError, match=r"LSTM.forward: lengths needs a batched input"):
        m(x[:, 0], lengths=[5])
    with pytest.raises(TypeError, match=r"LSTM.forward: the module's parameters are torch.float16"):
        m.half()(x.half())


# --- docs/interop.md --------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "interop.md"


def test_docs_examples_run(tmp_path):
    """The Python examples of docs/interop.md's PyTorch and safetensors sections run (one
    script, one torch import) and print what their comments say."""
    sections = ["PyTorch"]
    if importlib.util.find_spec("safetensors") is not None:
        sections.append("safetensors")
    text = DOCS.read_text()
    blocks = []
    for section in sections:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        found = re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)
        assert found, f"docs/interop.md's {section} section has no python example"
        blocks += found
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    expected = [
        m.group(1).strip() for b in blocks for m in re.finditer(r"print\(.*\)\s+# (.+)$", b, re.M)
    ]
    assert len(expected) >= len(blocks), "each example states what it prints"
    lines = out.stdout.splitlines()
    assert len(lines) == len(expected) and all(
        e in line for e, line in zip(expected, lines, strict=True)
    )
