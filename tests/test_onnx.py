"""rnncore.export_onnx / import_onnx: ONNX Runtime and onnx.reference against rnncore's forward
(every cell, both GRUs, uni/bidirectional, 1-2 layers, with and without sequence_lens),
onnx.checker on every file, greedy text of an exported CharRNN against `rnncore sample
--greedy`, import of torch.onnx.export'ed LSTM/GRU against torch, round trips, bad input.

Tolerance (float32): rnncore and ONNX Runtime sum the same products in different orders (BLAS
blocking, the bias added before or after the matmul), so they differ by a few ulps per step;
over T = 7 steps and 2 layers of H = 5 the measured worst case is 2.4e-7 absolute on values
of magnitude <= 1 (tanh/sigmoid outputs; relu outputs stay below ~3 here). 1e-5 absolute and
relative is 40x that and still far below any gate-order or bias mistake, which changes the
outputs by O(0.1).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import rnncore
from conftest import TEXT
from rnncore.cli import main

onnx = pytest.importorskip("onnx", reason="ONNX tests need pip install 'rnncore[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX tests need pip install 'rnncore[onnx]'")
from onnx.reference import ReferenceEvaluator  # noqa: E402

TOL = 1e-5
CELLS = [
    ("rnn_tanh", rnncore.RNN, {}),
    ("rnn_relu", rnncore.RNN, {"nonlinearity": "relu"}),
    ("lstm", rnncore.LSTM, {}),
    ("gru", rnncore.GRU, {}),
    ("gru_reset_before", rnncore.GRU, {"reset_after": False}),
]


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(m, x, state, lengths=None):
    feeds = {"x": x}
    if isinstance(m, rnncore.LSTM):
        feeds |= {"h0": state[0], "c0": state[1]}
    else:
        feeds["h0"] = state
    if lengths is not None:
        feeds["sequence_lens"] = lengths.astype(np.int32)
    return feeds


def _flat(y, state):
    return [y, *state] if isinstance(state, tuple) else [y, state]


def test_import_rnncore_does_not_import_onnx():
    code = (
        "import sys, rnncore; assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(("name", "cls", "kw"), CELLS, ids=[c[0] for c in CELLS])
def test_export_matches_rnncore(tmp_path, rng, name, cls, kw, num_layers, bidirectional, lengths):
    D, H = 3, 5
    m = cls(D, H, num_layers, bidirectional=bidirectional, seed=7, **kw)
    path = rnncore.export_onnx(m, tmp_path / "m.onnx", sequence_lens=lengths)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    rec = [n for n in proto.graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    assert len(rec) == num_layers  # one node per layer, both directions in it
    sess = _session(path)
    dirs = 2 if bidirectional else 1
    for T, B in ((7, 4), (2, 1)):  # T and B are symbolic: one file, two shapes
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        n_states = 2 if cls is rnncore.LSTM else 1
        s = [
            rng.standard_normal((num_layers * dirs, B, H)).astype(np.float32)
            for _ in range(n_states)
        ]
        state = tuple(s) if n_states == 2 else s[0]
        lens = rng.integers(1, T + 1, B) if lengths else None  # lengths >= 1 (docs/interop.md)
        if lens is not None:
            lens[0] = T
        y, final = m.forward(x, state, lengths=lens, training=False)
        expected = _flat(y, final)
        got = sess.run(None, _feeds(m, x, state, lens))
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=TOL, atol=TOL)
        # onnx.reference ignores sequence_lens and has no Relu activation.
        if not lengths and name != "rnn_relu":
            ref = ReferenceEvaluator(proto).run(None, _feeds(m, x, state))
            for g, e in zip(ref, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=TOL, atol=TOL)
    back = rnncore.import_onnx(path)  # the round trip is exact: a permutation of the gates
    assert type(back) is cls and repr(back) == repr(m)
    sd, sd_back = m.state_dict(), back.state_dict()
    assert list(sd_back) == list(sd)
    assert all(np.array_equal(sd[k], sd_back[k]) for k in sd)


@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_float64_and_no_bias(tmp_path, rng, cls):
    # ONNX Runtime's CPU RNN and LSTM kernels are float32 only: float64 files are checked with
    # onnx.reference (float64 arithmetic throughout, so to 1e-12).
    m = cls(4, 3, 2, bias=False, dtype=np.float64, seed=1)
    path = rnncore.export_onnx(m, tmp_path / "m.onnx", opset=17)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    x = rng.standard_normal((5, 2, 4))
    state = (np.full((2, 2, 3), 0.3), np.full((2, 2, 3), -0.2))
    state = state if cls is rnncore.LSTM else state[0]
    y, final = m.forward(x, state, training=False)
    got = ReferenceEvaluator(str(path)).run(None, _feeds(m, x, state))
    for g, e in zip(got, _flat(y, final), strict=True):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    back = rnncore.import_onnx(path)
    assert not back.bias and back.dtype == np.float64 and repr(back) == repr(m)


@pytest.mark.parametrize(
    ("cell", "embedding"), [("lstm", 8), ("gru", 0), ("rnn", 8)], ids=["lstm", "gru-onehot", "rnn"]
)
def test_exported_char_model_greedy_text_equals_rnncore_sample(tmp_path, capsys, cell, embedding):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    ckpt, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    train = [
        "train", str(text), "--cell", cell, "--hidden-size", "16", "--embedding-size",
        str(embedding), "--seq-length", "10", "--batch-size", "4", "--max-steps", "25",
        "--eval-every", "0", "--sample-every", "0", "--checkpoint", str(ckpt), "--lr", "0.02",
    ]  # fmt: skip
    assert main(train) == 0
    assert main(["export", str(ckpt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(out), full_check=True)
    n, prime = 60, "the "
    assert main(["sample", str(ckpt), "--greedy", "--prime", prime, "--length", str(n)]) == 0
    expected = capsys.readouterr().out.rstrip("\n")

    vocab = rnncore.load_checkpoint(ckpt).vocab
    sess = _session(out)
    names = [i.name for i in sess.get_inputs()]
    state = {k: np.zeros((2, 1, 16), np.float32) for k in names if k != "tokens"}
    tokens = vocab.encode(prime).astype(np.int64).reshape(-1, 1)  # (T, 1)
    ids = list(tokens[:, 0])
    for _ in range(n):  # step by step, the state carried between calls
        logits, *final = sess.run(None, {"tokens": tokens, **state})
        state = dict(zip([k for k in names if k != "tokens"], final, strict=True))
        nxt = int(np.argmax(logits[-1, 0]))
        ids.append(nxt)
        tokens = np.array([[nxt]], np.int64)
    assert vocab.decode(np.array(ids)) == expected
    assert len(set(expected[len(prime) :])) > 1  # a trained model, not one repeated character


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_import_of_a_pytorch_export_matches_torch(tmp_path, rng, kind, num_layers):
    torch = pytest.importorskip("torch", reason="needs pip install torch==2.13.0")
    torch.manual_seed(0)
    bi = num_layers == 2
    module = getattr(torch.nn, kind)(3, 6, num_layers, bidirectional=bi).eval()
    dirs = 2 if bi else 1
    x = torch.from_numpy(rng.standard_normal((5, 2, 3)).astype(np.float32))
    h0 = torch.from_numpy(rng.standard_normal((num_layers * dirs, 2, 6)).astype(np.float32))
    state = (h0, h0 * 0.5) if kind == "LSTM" else h0
    path = tmp_path / "torch.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(module, (x, state), str(path), dynamo=False, opset_version=14)
    m = rnncore.import_onnx(path)
    assert type(m).__name__ == kind and m.num_layers == num_layers and m.bidirectional == bi
    with torch.no_grad():
        y_t, s_t = module(x, state)
    s_np = tuple(s.numpy() for s in state) if kind == "LSTM" else state.numpy()
    y, s = m.forward(x.numpy(), s_np, training=False)
    expected = _flat(y_t.numpy(), tuple(t.numpy() for t in s_t) if kind == "LSTM" else s_t.numpy())
    for a, b in zip(_flat(y, s), expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


# --- bad input ----------------------------------------------------------------------------------


def _exported(tmp_path, cls=rnncore.LSTM, **kw):
    return onnx.load(rnncore.export_onnx(cls(3, 4, **kw, seed=0), tmp_path / "m.onnx"))


def _node(proto):
    return next(n for n in proto.graph.node if n.op_type in ("RNN", "LSTM", "GRU"))


def test_import_rejects_other_ops(tmp_path):
    h = onnx.helper
    g = h.make_graph(
        [h.make_node("MatMul", ["a", "b"], ["c"], name="mm")],
        "g",
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 2]) for n in "ab"],
        [h.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [2, 2])],
    )
    with pytest.raises(ValueError, match=r"unsupported op 'MatMul' \(node 'mm'\)"):
        rnncore.import_onnx(h.make_model(g))
    g = h.make_graph(
        [h.make_node("Identity", ["a"], ["c"])],
        "g",
        [h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ValueError, match="no RNN, LSTM or GRU node"):
        rnncore.import_onnx(h.make_model(g))
    # A character model's Gather and MatMul are not part of a layer stack.
    model = rnncore.CharRNN(5, hidden_size=4, num_layers=1, embedding_size=3, seed=0)
    with pytest.raises(ValueError, match="unsupported op 'Gather'"):
        rnncore.import_onnx(rnncore.export_onnx(model, tmp_path / "c.onnx"))


@pytest.mark.parametrize(
    ("cls", "attr", "value", "message"),
    [
        (rnncore.LSTM, "clip", 3.0, "attribute 'clip' is not supported"),
        (rnncore.LSTM, "input_forget", 1, "input_forget=1 is not supported"),
        (rnncore.LSTM, "activations", ["Sigmoid", "Tanh", "Relu"], "custom activations"),
        (rnncore.GRU, "activations", ["HardSigmoid", "Tanh"], "custom activations"),
        (rnncore.RNN, "activations", ["Sigmoid"], "activations \\['Sigmoid'\\] are not supported"),
        (rnncore.RNN, "activation_alpha", [0.5], "attribute 'activation_alpha' is not supported"),
        (rnncore.GRU, "direction", "reverse", "direction='reverse' is not supported"),
        (rnncore.GRU, "layout", 1, "layout=1 \\(batch-major\\) is not supported"),
        (rnncore.LSTM, "hidden_size", 5, "hidden_size=5 but R has shape \\(1, 16, 4\\)"),
    ],
)
def test_import_names_unsupported_attributes(tmp_path, cls, attr, value, message):
    proto = _exported(tmp_path, cls)
    node = _node(proto)
    for a in list(node.attribute):
        if a.name == attr:
            node.attribute.remove(a)
    node.attribute.append(onnx.helper.make_attribute(attr, value))
    with pytest.raises(ValueError, match=message):
        rnncore.import_onnx(proto)


def test_import_rejects_peepholes_bad_shapes_and_inputs(tmp_path):
    proto = _exported(tmp_path)
    node = _node(proto)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((1, 12), np.float32), "P"))
    while len(node.input) < 7:
        node.input.append("")
    node.input.append("P")
    with pytest.raises(ValueError, match="peephole weights \\(input P 'P'\\) are not supported"):
        rnncore.import_onnx(proto)

    proto = _exported(tmp_path)  # W of the wrong shape
    node = _node(proto)
    w = next(t for t in proto.graph.initializer if t.name == node.input[1])
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 12, 3), np.float32), w.name))
    with pytest.raises(
        ValueError, match=r"W must have shape \(1, 16, 'input_size'\), got \(1, 12, 3\)"
    ):
        rnncore.import_onnx(proto)

    proto = _exported(tmp_path)  # B of the wrong shape
    node = _node(proto)
    b = next(t for t in proto.graph.initializer if t.name == node.input[3])
    b.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 16), np.float32), b.name))
    with pytest.raises(ValueError, match=r"B must have shape \(1, 32\), got \(1, 16\)"):
        rnncore.import_onnx(proto)

    proto = _exported(tmp_path)  # W a graph input rather than a constant
    node = _node(proto)
    node.input[1] = "x"
    with pytest.raises(ValueError, match="input W \\('x'\\) must be a constant"):
        rnncore.import_onnx(proto)

    proto = _exported(tmp_path, num_layers=2)  # layer 1 fed from the graph input, not layer 0
    _, second = (n for n in proto.graph.node if n.op_type == "LSTM")
    second.input[0] = "x"
    with pytest.raises(ValueError, match="not computed from the previous recurrent node"):
        rnncore.import_onnx(proto)


def test_export_rejects_bad_arguments(tmp_path):
    m = rnncore.GRU(2, 3)
    with pytest.raises(
        TypeError, match=r"model must be an rnncore\.RNN, LSTM, GRU or CharRNN, got dict"
    ):
        rnncore.export_onnx({}, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"opset must be in \[14, \d+\], got 13"):
        rnncore.export_onnx(m, tmp_path / "m.onnx", opset=13)
    with pytest.raises(TypeError, match="opset must be an int or None, got '14'"):
        rnncore.export_onnx(m, tmp_path / "m.onnx", opset="14")
    # Wrong shapes at run time: ONNX Runtime names the input and the expected dimension.
    path = rnncore.export_onnx(m, tmp_path / "m.onnx")
    with pytest.raises(
        ort.capi.onnxruntime_pybind11_state.InvalidArgument,
        match=r"input: x .*\n index: 2 Got: 5 Expected: 2",
    ):
        _session(path).run(
            None, {"x": np.zeros((3, 1, 5), np.float32), "h0": np.zeros((1, 1, 3), np.float32)}
        )


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "m.onnx")]) == 2
    assert "rnncore export: error:" in capsys.readouterr().err
