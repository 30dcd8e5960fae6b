"""rnncore.inspection and `rnncore inspect`: a tiny model trained for a few steps, run over a
text; the HTML page's characters, colours and unit list, and the correlation table against
NumPy's own computation from the stack's public forward."""

from __future__ import annotations

import html
import importlib.util
import re

import numpy as np
import pytest

from rnncore.checkpoint import load_checkpoint
from rnncore.cli import main
from rnncore.inspection import (
    FEATURES,
    correlations,
    text_features,
    top_units,
    unit_activations,
)
from rnncore.train import model_from_checkpoint

TEXT = "the fox (jumps) over [the] dog.\n<a & b> 'quoted' (x)\n" * 12  # 648 characters
SPAN = re.compile(r'<span style="background:(#[0-9a-f]{6})" title="(-?[0-9.]+)">(.*?)</span>', re.S)


@pytest.fixture(scope="module", params=["lstm", "gru"])
def trained(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    text, train, ckpt = tmp / "t.txt", tmp / "train.txt", tmp / "m.npz"
    text.write_text(TEXT, encoding="utf-8")
    train.write_text(TEXT * 3, encoding="utf-8")
    argv = [
        "train", str(train), "--cell", request.param, "--hidden-size", "8", "--num-layers", "2",
        "--embedding-size", "4", "--seq-length", "10", "--batch-size", "4", "--max-steps", "5",
        "--eval-every", "0", "--sample-every", "0", "--checkpoint", str(ckpt), "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    return request.param, text, ckpt


def _numpy_features(chars: str) -> np.ndarray:
    """The three features, written out from their definitions (no shared code)."""
    pos = [0 if c == "\n" else t - (chars.rfind("\n", 0, t) + 1) for t, c in enumerate(chars)]
    inside, depth = [], 0
    for c in chars:  # TEXT's brackets do not nest
        depth += (c in "([{") - (c in ")]}")
        inside.append(depth > 0)
    newline = [c == "\n" for c in chars]
    return np.array([pos, inside, newline], np.float64)


def test_inspect_writes_the_page_and_the_table(trained, tmp_path, capsys):
    cell, text, ckpt = trained
    page, png = tmp_path / "page.html", tmp_path / "page-gates.png"
    assert main(["inspect", str(ckpt), "--text", str(text), "--top", "3", "--out", str(page)]) == 0
    out = capsys.readouterr().out
    doc = page.read_text(encoding="utf-8")

    # Self-contained: no link, script or remote resource; every character, escaped, in order.
    assert not re.search(r"<link|<script|https?://|src=\"(?!data:)", doc)
    spans = SPAN.findall(doc)
    assert len(spans) == len(TEXT)
    assert "".join(html.unescape(s[2]) for s in spans) == TEXT
    assert all(s[2] == html.escape(ch) for s, ch in zip(spans, TEXT, strict=True))
    assert ">&lt;</span>" in doc and ">&amp;</span>" in doc and "<a" not in doc
    values = np.array([float(s[1]) for s in spans])
    assert len({s[0] for s in spans}) > 5  # the colours follow the values
    white = [s[0] for s, v in zip(spans, values, strict=True) if v == 0]
    assert all(c == "#ffffff" for c in white)

    # The unit coloured: by default the top layer's cell state (LSTM) or hidden state (GRU),
    # the unit most correlated with any feature; its values are the page's titles.
    model = model_from_checkpoint(load_checkpoint(ckpt))
    ids = load_checkpoint(ckpt).vocab.encode(TEXT)
    acts = unit_activations(model, ids)
    unit = re.search(r"<h1>Unit (\w\d\[\d+\])</h1>", doc).group(1)
    assert unit.startswith("c1[" if cell == "lstm" else "h1[")
    assert np.allclose(values, acts.unit(unit), rtol=0, atol=5.1e-5)  # 4 decimals printed

    # The top layer's hidden states equal the stack's own forward (public API).
    x = model.params.params["embedding.weight"][ids][:, None, :]
    y, _ = model.rnn.forward(x, training=False)
    assert np.allclose(acts.values[:, 8:16], y[:, 0], rtol=0, atol=1e-6)
    if cell == "lstm":  # the recomputed cell states give the kernels' h = o tanh(c)
        o = acts.gates[1]["o"]
        assert np.allclose(o * np.tanh(acts.values[:, 24:32]), y[:, 0], rtol=0, atol=1e-5)

    # The correlation table: 3 features x top 3, each r as NumPy's corrcoef gives it.
    feats = _numpy_features(TEXT)
    rows = re.findall(r"^(.+?)\s+(\d)\s+(\w\d\[\d+\])\s+([+-][0-9.]+)$", out, re.M)
    assert len(rows) == 9 and [r[0].strip() for r in rows[::3]] == list(FEATURES)
    table = re.findall(r"<tr><td>(.+?)</td><td>(\d)</td><td>(.+?)</td><td>(.+?)</td></tr>", doc)
    assert [(html.unescape(f), k, u, r) for f, k, u, r in table[:9]] == [
        (f.strip(), k, u, r) for f, k, u, r in rows
    ]
    for f, k, u, r in rows:
        i = FEATURES.index(f.strip())
        expected = np.corrcoef(acts.unit(u), feats[i])[0, 1]
        assert float(r) == pytest.approx(expected, abs=5.1e-5)
        # and it is among the largest |r| of that feature over all units
        all_r = [
            abs(np.corrcoef(acts.values[:, j], feats[i])[0, 1]) for j in range(len(acts.names))
        ]
        assert abs(expected) >= sorted(all_r)[-int(k)] - 1e-12

    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "data:image/png;base64," in doc
    assert "Gate saturation" in doc


def test_features_and_correlations_by_definition():
    chars = "ab\n(cd)e\n"
    f = text_features(chars)
    assert f["position in line"].tolist() == [0, 1, 0, 0, 1, 2, 3, 4, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert f["after newline"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 1]
    v = np.random.default_rng(0).standard_normal((9, 3))
    v[:, 2] = 1.0  # a constant unit: r = 0, not NaN
    r = correlations(v, f)
    for i, feat in enumerate(f.values()):
        for j in range(2):
            assert r[i, j] == pytest.approx(np.corrcoef(v[:, j], feat)[0, 1], abs=1e-12)
    assert np.all(r[:, 2] == 0)
    assert top_units(r, ["u0", "u1", "u2"], 2)[0][:3] == (
        "position in line",
        1,
        "u0" if abs(r[0, 0]) >= abs(r[0, 1]) else "u1",
    )
    r[1] = 0  # a feature constant over the text: no rows
    assert [row[0] for row in top_units(r, ["u0", "u1", "u2"], 2)].count("inside brackets") == 0


def test_inspect_bad_input_exits_2(trained, tmp_path, capsys):
    _, text, ckpt = trained
    other = tmp_path / "o.txt"
    other.write_text("ZZZ unknown characters ~", encoding="utf-8")
    assert main(["inspect", str(ckpt), "--text", str(other)]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err
    assert main(["inspect", str(ckpt), "--text", str(text), "--unit", "99"]) == 2
    assert "--unit must be in [0, 8), got 99" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "none.npz"), "--text", str(text)]) == 2
