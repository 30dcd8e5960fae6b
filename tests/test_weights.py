"""rnncore.save_weights / load_weights: safetensors files under PyTorch's names, both ways."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from conftest import rel_err, torch_or_skip
from rnncore import GRU, LSTM, RNN, CharRNN

stn = pytest.importorskip(
    "safetensors.numpy", reason="safetensors weights need `pip install 'rnncore[safetensors]'`"
)

STACKS = [
    ("rnn", lambda **kw: RNN(3, 4, 2, nonlinearity="relu", **kw)),
    ("lstm", lambda **kw: LSTM(3, 4, 2, bidirectional=True, **kw)),
    ("gru", lambda **kw: GRU(3, 4, 1, **kw)),
    ("gru-reset-before", lambda **kw: GRU(3, 4, 2, reset_after=False, bias=False, **kw)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "make"), STACKS, ids=[s[0] for s in STACKS])
def test_round_trip_is_exact(tmp_path, name, make, dtype):
    """save then load into a differently seeded layer: every parameter bitwise, dtype kept,
    and the file holds exactly the state_dict's names (PyTorch's)."""
    a, b = make(dtype=dtype, seed=1), make(dtype=dtype, seed=2)
    path = tmp_path / "w.safetensors"
    rnncore.save_weights(a, path)
    raw = stn.load_file(str(path))
    assert sorted(raw) == sorted(a.state_dict())
    assert all(v.dtype == dtype for v in raw.values())
    rnncore.load_weights(b, path)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_char_rnn_round_trip_same_loss(tmp_path):
    """A CharRNN's weights (embedding, stack, decoder) come back bitwise: the same loss."""
    a = CharRNN(11, cell="gru", hidden_size=8, num_layers=2, embedding_size=5, seed=3)
    b = CharRNN(11, cell="gru", hidden_size=8, num_layers=2, embedding_size=5, seed=4)
    path = tmp_path / "m.safetensors"
    rnncore.save_weights(a, path)
    assert set(stn.load_file(str(path))) == set(a.state_dict())
    assert "embedding.weight" in a.state_dict() and "rnn.weight_hh_l1" in a.state_dict()
    rnncore.load_weights(b, path)
    x = np.arange(24).reshape(6, 4) % 11
    y = (x + 1) % 11
    assert a.loss(x, y, training=False)[0] == b.loss(x, y, training=False)[0]


def test_lower_precision_file_is_rounded(tmp_path):
    """A float16 file loads into a float32 layer, each value the float16 one exactly."""
    a = LSTM(3, 4, seed=0)
    half = {k: v.astype(np.float16) for k, v in a.state_dict().items()}
    stn.save_file(half, str(tmp_path / "h.safetensors"))
    rnncore.load_weights(a, tmp_path / "h.safetensors")
    for k, v in half.items():
        np.testing.assert_array_equal(a.state_dict()[k], v.astype(np.float32))


def test_bfloat16_file_loads_with_ml_dtypes(tmp_path):
    """A torch BF16 state_dict loads into a float32 layer once ml_dtypes is imported: each value
    the BF16 one exactly (BF16 is float32 with the low 16 bits cut)."""
    torch = torch_or_skip()
    pytest.importorskip("ml_dtypes", reason="NumPy holds BF16 only through ml_dtypes")
    import safetensors.torch as stt

    ref = torch.nn.LSTM(3, 4, dtype=torch.bfloat16)
    stt.save_file(ref.state_dict(), str(tmp_path / "bf16.safetensors"))
    layer = LSTM(3, 4, seed=0)
    rnncore.load_weights(layer, tmp_path / "bf16.safetensors")
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[k], v.float().numpy())


def test_torch_reads_and_writes_the_same_files(tmp_path):
    """rnncore -> safetensors.torch.load_file -> torch.nn.LSTM gives rnncore's outputs, and a
    torch module's safetensors.torch.save_file loads into rnncore.LSTM (float64, so that the
    two implementations' outputs agree to ~1e-14: any misplaced tensor would show as O(1))."""
    torch = torch_or_skip()
    import safetensors.torch as stt

    ours = LSTM(3, 5, 2, bidirectional=True, dtype=np.float64, seed=0)
    rnncore.save_weights(ours, tmp_path / "ours.safetensors")
    theirs = torch.nn.LSTM(3, 5, 2, bidirectional=True, dtype=torch.float64)
    theirs.load_state_dict(stt.load_file(str(tmp_path / "ours.safetensors")))
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    y, (h, c) = ours.forward(x, training=False)
    with torch.no_grad():
        ty, (th, tc) = theirs(torch.from_numpy(x))
    for a, b in ((y, ty), (h, th), (c, tc)):
        assert rel_err(a, b.numpy()) < 1e-13

    other = torch.nn.LSTM(3, 5, 2, bidirectional=True, dtype=torch.float64)
    stt.save_file(other.state_dict(), str(tmp_path / "theirs.safetensors"))
    rnncore.load_weights(ours, tmp_path / "theirs.safetensors")
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())


def test_char_rnn_file_fills_the_equivalent_torch_program(tmp_path):
    """docs/interop.md's torch program (embedding, rnn, decoder attributes) loads the file with
    strict=True and computes the CharRNN's loss (float64, to 1e-12 relative)."""
    torch = torch_or_skip()
    import safetensors.torch as stt

    V, E, H = 13, 6, 8
    model = CharRNN(
        V, cell="lstm", hidden_size=H, num_layers=2, embedding_size=E, seed=5, dtype=np.float64
    )
    rnncore.save_weights(model, tmp_path / "m.safetensors")

    class TorchCharRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(V, E)
            self.rnn = torch.nn.LSTM(E, H, 2)
            self.decoder = torch.nn.Linear(H, V)

        def forward(self, x):
            out, _ = self.rnn(self.embedding(x))
            return self.decoder(out)

    net = TorchCharRNN().double()
    net.load_state_dict(stt.load_file(str(tmp_path / "m.safetensors")))
    x = np.arange(20).reshape(5, 4) * 7 % V
    y = (x + 3) % V
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).ravel())
    loss, _ = model.loss(x, y, training=False)
    assert abs(loss - float(ref)) < 1e-12 * float(ref)


def write_raw(path, dtype, shape, payload):
    """A minimal safetensors file by hand: 8-byte header length, JSON header, data."""
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, len(payload)]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + payload)


def test_bad_input(tmp_path):
    """Every mistake is a clear error naming the function and what was wrong; a failed load
    changes nothing."""
    layer = GRU(3, 4, seed=0)
    before = layer.state_dict()
    with pytest.raises(
        TypeError,
        match=r"save_weights: model must be an rnncore.RNN, LSTM, GRU or CharRNN, got dict",
    ):
        rnncore.save_weights({"w": np.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match=r"load_weights: model must be .* got str"):
        rnncore.load_weights("model", tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match=r"load_weights: no such file: .*missing"):
        rnncore.load_weights(layer, tmp_path / "missing.safetensors")

    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(
        ValueError, match=r"load_weights: .*junk.safetensors' is not a safetensors file"
    ):
        rnncore.load_weights(layer, tmp_path / "junk.safetensors")
    write_raw(tmp_path / "bf16.safetensors", "BF16", [2], b"\0" * 4)
    # In a fresh process: once ml_dtypes is imported (onnx imports it: tests/test_onnx.py runs
    # earlier in the suite), NumPy itself reads BF16 and the file loads.
    code = (
        "import sys, rnncore\n"
        "try:\n"
        f"    rnncore.load_weights(rnncore.GRU(3, 4), {str(tmp_path / 'bf16.safetensors')!r})\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "not a safetensors file of NumPy-readable tensors" in out.stdout, out.stdout + out.stderr

    rnncore.save_weights(GRU(3, 5, seed=0), tmp_path / "h5.safetensors")
    with pytest.raises(
        ValueError,
        match=r"load_weights: .* does not fit this GRU: GRU.load_state_dict: 'weight_ih_l0' must have shape \(12, 3\), got \(15, 3\)",
    ):
        rnncore.load_weights(layer, tmp_path / "h5.safetensors")
    rnncore.save_weights(GRU(3, 4, 2, seed=0), tmp_path / "l2.safetensors")
    with pytest.raises(
        ValueError, match=r"does not fit this GRU: .*unexpected key\(s\) .*'weight_ih_l1'"
    ):
        rnncore.load_weights(layer, tmp_path / "l2.safetensors")
    ints = {k: np.zeros(v.shape, np.int32) for k, v in before.items()}
    stn.save_file(ints, str(tmp_path / "int.safetensors"))
    with pytest.raises(
        TypeError, match=r"'weight_ih_l0' must be a floating-point array, got dtype int32"
    ):
        rnncore.load_weights(layer, tmp_path / "int.safetensors")
    for k, v in before.items():
        np.testing.assert_array_equal(layer.state_dict()[k], v)
