"""rnncore.diagnostics and `rnncore gradients`: per-step state gradients against central
differences, the decay rate of a small-state RNN against ρ, growth above ρ = 1, the LSTM's
cell path against the RNN at T = 100, and the command's table and plot."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

import rnncore
from conftest import rel_err
from gradcheck import central_difference
from rnncore import _core
from rnncore.cli import main
from rnncore.diagnostics import (
    decay_per_step,
    gate_activations,
    scale_spectral_radius,
    spectral_radius,
    state_gradients,
)
from rnncore.gradients_report import gradient_rows

CELLS = [
    ("rnn", {}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
]


def _layer(cell, opts, D, H, seed=0):
    cls = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}[cell]
    return cls(D, H, dtype=np.float64, seed=seed, **opts)


@pytest.mark.parametrize("method", ["delta", "suffix"])
@pytest.mark.parametrize(("cell", "opts"), CELLS)
def test_state_gradients_equal_central_differences(cell, opts, method):
    # Oracle: the kernels' forward only, run to step t, the state perturbed there, then run
    # on to T; L = <u, h_T>. Independent of the batched backward state_gradients uses.
    T, B, D, H = 7, 2, 3, 4
    rng = np.random.default_rng(1)
    layer = _layer(cell, opts, D, H)
    x = rng.standard_normal((T, B, D))
    h0 = 0.5 * rng.standard_normal((1, B, H))
    c0 = 0.5 * rng.standard_normal((1, B, H))
    u = rng.standard_normal((B, H))
    state = (h0, c0) if cell == "lstm" else h0
    g = state_gradients(layer, x, state, grad_output=u, method=method, chunk=3)  # 3 chunks
    w, kernel = layer.layer_weights(0), getattr(_core, f"{cell}_forward")

    def run(xs, h, c):
        if xs.shape[0] == 0:
            return h, c
        if cell == "lstm":
            _, hn, cn, _ = kernel(xs, h, c, *w, training=False)
            return hn, cn
        return kernel(xs, h, *w, training=False, **opts)[1], None

    for t in range(T + 1):
        h_t, c_t = run(x[:t], h0[0].copy(), c0[0].copy())

        def loss(h_t=h_t, c_t=c_t, t=t):
            return float(np.sum(u * run(x[t:], h_t, c_t)[0]))

        assert rel_err(central_difference(loss, h_t), g.dh[t]) <= 1e-6, t
        assert np.allclose(g.h[t], h_t, rtol=0, atol=1e-13)
        if cell == "lstm":
            assert rel_err(central_difference(loss, c_t), g.dc[t]) <= 1e-6
            assert np.allclose(g.c[t], c_t, rtol=0, atol=1e-13)
    assert np.array_equal(g.dh[T], u)
    if cell == "lstm":
        assert np.array_equal(g.dc[T], np.zeros((B, H)))  # L reads h_T only
    norms = np.sqrt((g.dh**2).sum(axis=(1, 2)))
    assert np.allclose(g.h_norms, norms, rtol=1e-15, atol=0)


@pytest.mark.parametrize(("cell", "opts"), CELLS)
def test_the_two_methods_agree_over_many_steps(cell, opts):
    # The O(T) delta method (kernel δ + NumPy chain rule) against the O(T²) kernel-only
    # suffix method over 80 steps, where the norms span many orders of magnitude: each
    # step's gradient to 1e-10 of its own size (float64 rounding accumulated over 80 steps).
    T, B, D, H = 80, 2, 5, 6
    layer = _layer(cell, opts, D, H, seed=3)
    x = np.random.default_rng(6).standard_normal((T, B, D))
    a = state_gradients(layer, x, method="delta")
    b = state_gradients(layer, x, method="suffix", chunk=32)
    assert np.allclose(a.h, b.h, rtol=0, atol=1e-13)
    for t in range(T + 1):
        assert rel_err(a.dh[t], b.dh[t]) <= 1e-10, t
        if cell == "lstm":
            assert rel_err(a.dc[t], b.dc[t]) <= 1e-10, t
            assert np.allclose(a.c[t], b.c[t], rtol=0, atol=1e-13)


def _small_state_rnn(radius, H=32, seed=0):
    """A tanh RNN (H inputs, H units) with W_hh at spectral radius `radius` and no biases, so
    that small inputs keep |h| small (tanh' ≈ 1)."""
    rnn = _layer("rnn", {}, H, H, seed)
    p = rnn.parameters()
    p["weight_hh_l0"][...] = scale_spectral_radius(p["weight_hh_l0"], radius)
    p["bias_ih_l0"][...] = 0
    p["bias_hh_l0"][...] = 0
    return rnn


@pytest.mark.parametrize("radius", [0.5, 0.9])
def test_small_state_rnn_decays_at_the_spectral_radius(radius):
    # |h| < 0.05 gives tanh' = 1 - h² > 0.9975, so each backward step multiplies by
    # diag(tanh') W_hhᵀ ≈ W_hhᵀ; 50 steps after the loss the gradient has turned towards
    # W_hh's dominant eigenvectors and each step scales its norm by about ρ (DESIGN.md:
    # the mean decay over the last 50 steps is within 5% of ρ).
    T, H = 100, 32
    rnn = _small_state_rnn(radius, H)
    assert spectral_radius(rnn.parameters()["weight_hh_l0"]) == pytest.approx(radius, rel=1e-12)
    x = 1e-3 * np.random.default_rng(2).standard_normal((T, 1, H))
    g = state_gradients(rnn, x)
    assert np.abs(g.h).max() < 0.05
    decay = decay_per_step(g.h_norms, 50)
    assert abs(decay - radius) <= 0.05 * radius, decay
    tanh_prime = np.mean(1 - g.h[1:51] ** 2)
    assert abs(decay - radius * tanh_prime) <= 0.05 * radius * tanh_prime
    assert g.h_norms[0] < g.h_norms[T]


@pytest.mark.parametrize(("radius", "T"), [(1.1, 40), (1.5, 20)])
def test_radius_above_one_with_small_inputs_grows(radius, T):
    # Inputs of 1e-7 amplified by ρ^T (45 and 3.3e3) keep |h| < 0.05: the linear regime, where
    # each backward step multiplies the norm by about ρ once the transient has passed; the
    # bound asks for at least half of ρ's excess over 1 per step, on average over all T.
    H = 32
    rnn = _small_state_rnn(radius, H)
    x = 1e-7 * np.random.default_rng(3).standard_normal((T, 1, H))
    g = state_gradients(rnn, x)
    assert np.abs(g.h).max() < 0.05
    n = g.h_norms
    assert decay_per_step(n, T) > 1 + (radius - 1) / 2
    assert n[0] > n[T]


def test_lstm_cell_path_keeps_the_gradient_the_rnn_loses():
    # Forget bias 5: f ≈ σ(5) ≈ 0.993, so ∂L/∂c_0 keeps ~0.993^100 ≈ 0.5 of its size along
    # the additive cell path, while the RNN at its default init (ρ ≈ 0.6) keeps ~ρ^100.
    T, H = 100, 32
    x = np.random.default_rng(4).standard_normal((T, 1, H))
    lstm = _layer("lstm", {}, H, H)
    lstm.parameters()["bias_ih_l0"][H : 2 * H] = 5.0
    rnn = _layer("rnn", {}, H, H)
    lg, rg = state_gradients(lstm, x), state_gradients(rnn, x)
    gates = gate_activations("lstm", lstm.layer_weights(0), x, lg.h[:-1])
    assert gates["f"].min() > 0.9
    assert lg.c_norms[0] >= 1e3 * rg.h_norms[0]
    assert lg.c_norms[0] > 1e-3 * lg.c_norms[T - 1]


def test_gate_activations_reproduce_the_kernels_states():
    T, B, D, H = 6, 2, 3, 5
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, D))
    for cell, opts in CELLS:
        layer = _layer(cell, opts, D, H)
        g = state_gradients(layer, x, method="suffix")  # c_t as the kernels return it
        gates = gate_activations(cell, layer.layer_weights(0), x, g.h[:-1], **opts)
        if cell == "lstm":
            c = gates["f"] * g.c[:-1] + gates["i"] * gates["g"]
            assert np.allclose(c, g.c[1:], rtol=0, atol=1e-13)
            assert np.allclose(gates["o"] * np.tanh(c), g.h[1:], rtol=0, atol=1e-13)
        elif cell == "gru":
            h = (1 - gates["z"]) * gates["n"] + gates["z"] * g.h[:-1]
            assert np.allclose(h, g.h[1:], rtol=0, atol=1e-13)
        else:
            assert gates == {}


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_layers=1"):
        state_gradients(rnncore.RNN(2, 3, 2, dtype=np.float64), np.zeros((4, 1, 2)))
    with pytest.raises(TypeError, match="float64"):
        state_gradients(rnncore.RNN(2, 3, dtype=np.float64), np.zeros((4, 1, 2), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must be \(1, 3\)"):
        state_gradients(rnncore.RNN(2, 3, dtype=np.float64), np.zeros((4, 1, 2)), grad_output=[1])
    with pytest.raises(ValueError, match="method must be 'delta' or 'suffix', got 'x'"):
        state_gradients(rnncore.RNN(2, 3, dtype=np.float64), np.zeros((4, 1, 2)), method="x")
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        scale_spectral_radius(np.eye(3), 0.0)
    with pytest.raises(ValueError, match="square"):
        spectral_radius(np.zeros((2, 3)))


def test_cli_gradients_prints_the_table_and_plots(tmp_path, capsys):
    png = tmp_path / "g.png"
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    argv = ["gradients", "--steps", "60", "--radius", "0.5,1.5", "--hidden-size", "16"]
    assert main([*argv, *(["--plot", str(png)] if have_mpl else [])]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if re.match(r"\| (rnn|lstm|gru) \|", line)]
    rows = gradient_rows(("rnn", "lstm", "gru"), (0.5, 1.5), steps=60, hidden_size=16)
    assert len(table) == len(rows) == 5  # two radii, the LSTM's h and c, the GRU
    for line, row in zip(table, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["cell"] and cells[2] == row["path"]
        assert float(cells[4]) == pytest.approx(row["decay"], abs=6e-5)
        norms = row["norms"]
        assert row["decay"] == pytest.approx((norms[0] / norms[50]) ** (1 / 50), rel=1e-12)
    if have_mpl:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_gradients_plot_without_matplotlib_exits_2(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main(["gradients", "--plot", str(tmp_path / "g.png")]) == 2
    assert "--plot needs matplotlib, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_cli_gradients_bias_options(capsys):
    # --zero-bias with tiny inputs: the small-state regime, tanh' ≈ 1 so the prediction is ρ;
    # --forget-bias 5: the LSTM's forget gates σ(5 + small) ≈ 0.993.
    argv = ["gradients", "--steps", "60", "--radius", "0.9", "--hidden-size", "16"]
    assert main([*argv, "--zero-bias", "--input-scale", "1e-4", "--forget-bias", "5"]) == 0
    out = capsys.readouterr().out
    assert "biases 0, LSTM forget bias +5" in out
    rnn = next(line for line in out.splitlines() if line.startswith("| rnn "))
    assert rnn.split("|")[6].strip() == "0.9000"  # ρ·mean(tanh') with |h| < 1e-3
    lstm_c = next(line for line in out.splitlines() if line.startswith("| lstm | - | c "))
    assert 0.99 < float(lstm_c.split("|")[6]) < 0.995  # mean(f) ≈ σ(5) = 0.9933


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--radius", "0.5,x"], "expected comma-separated numbers, got '0.5,x'"),
        (["--radius", "0"], "expected radii > 0, got '0'"),
        (["--steps", "0"], "expected a number > 0, got '0'"),
        (["--seed", "-1"], "expected an integer >= 0, got '-1'"),
        (["--cell", "transformer"], "invalid choice: 'transformer'"),
    ],
)
def test_cli_gradients_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["gradients", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
