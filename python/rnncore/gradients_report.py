"""``rnncore gradients``: the vanishing-gradient demonstration as a table (and a plot).

For a loss at the last step of T, ‖∂L/∂h_t‖ at every t (and ‖∂L/∂c_t‖ for the LSTM) through
real layers (rnncore.diagnostics.state_gradients, the C++ kernels): a vanilla tanh RNN whose
W_hh is rescaled to each spectral radius ρ, and an LSTM and a GRU at their default
initialisation. Each row gives the measured mean decay per step over the `window` steps
farthest from the loss beside its prediction: ρ·mean(tanh') for the RNN (the Jacobian
∂h_t/∂h_{t-1} = diag(tanh'_t) W_hh), mean(f) for the LSTM's cell path (∂c_t/∂c_{t-1} = f_t
on the additive path), mean(z) for the GRU's direct path (∂h_t/∂h_{t-1} ⊇ diag(z_t)).
"""

from __future__ import annotations

import argparse
from typing import IO, Any

import numpy as np

from .diagnostics import decay_per_step, gate_activations, scale_spectral_radius, state_gradients
from .layers import GRU, LSTM, RNN

__all__ = ["add_parser", "gradient_rows", "run"]

DEFAULT_RADII = (0.5, 0.9, 1.0, 1.1, 1.5)


def gradient_rows(
    cells: tuple[str, ...] = ("rnn", "lstm", "gru"),
    radii: tuple[float, ...] = DEFAULT_RADII,
    *,
    steps: int = 100,
    hidden_size: int = 32,
    input_scale: float = 0.1,
    window: int = 50,
    seed: int = 0,
    zero_bias: bool = False,
    forget_bias: float = 0.0,
) -> list[dict[str, Any]]:
    """One row per (cell, radius, path): the data of ``rnncore gradients``' table.

    Inputs x (steps, 1, hidden_size) are input_scale·N(0, 1) (seeded); layers are float64,
    input_size = hidden_size, default initialisation of `seed` (the RNN's W_hh then rescaled),
    every bias then set to 0 with zero_bias, and forget_bias added to the LSTM's forget-gate
    bias (bias_ih's second block).

    Returns:
        dicts with cell, radius (the RNN's ρ(W_hh); None for LSTM/GRU), path ("h" or "c"),
        max_h (max |h_t|), decay (decay_per_step over `window`), predicted, predictor (its
        name), ratio (‖g_0‖ / ‖g_last‖) and norms ((T+1,) the per-step norms; the c path's
        last entry, 0, dropped).
    """
    x = input_scale * np.random.default_rng(seed).standard_normal((steps, 1, hidden_size))
    rows: list[dict[str, Any]] = []
    for cell in cells:
        for radius in radii if cell == "rnn" else (None,):
            layer = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell](
                hidden_size, hidden_size, dtype=np.float64, seed=seed
            )
            if radius is not None:
                w_hh = layer.parameters()["weight_hh_l0"]
                w_hh[...] = scale_spectral_radius(w_hh, radius)
            params = layer.parameters()
            if zero_bias:
                params["bias_ih_l0"][...] = 0
                params["bias_hh_l0"][...] = 0
            if cell == "lstm":
                params["bias_ih_l0"][hidden_size : 2 * hidden_size] += forget_bias
            g = state_gradients(layer, x)
            k = min(window, steps)
            gates = gate_activations(cell, layer.layer_weights(0), x, g.h[:-1], **_gru(layer))
            base = {"cell": cell, "radius": radius, "max_h": float(np.abs(g.h).max())}
            if cell == "rnn":
                tanh_prime = float(np.mean(1 - g.h[1 : k + 1] ** 2))
                pred, name = radius * tanh_prime, "rho*mean(tanh')"
            elif cell == "gru":
                pred, name = float(np.mean(gates["z"][:k])), "mean(z)"
            else:
                pred, name = None, ""
            hn = g.h_norms
            rows.append(base | _row("h", hn, k, pred, name))
            if g.c_norms is not None:
                cn = g.c_norms[:-1]
                rows.append(
                    base
                    | _row("c", cn, min(k, steps - 1), float(np.mean(gates["f"][:k])), "mean(f)")
                )
    return rows


def _gru(layer: Any) -> dict[str, Any]:
    return {"reset_after": layer.reset_after} if isinstance(layer, GRU) else {}


def _row(path: str, norms: np.ndarray, k: int, pred: float | None, name: str) -> dict[str, Any]:
    ok = norms[0] > 0 and norms[k] > 0
    return {
        "path": path,
        "decay": decay_per_step(norms, k) if ok else 0.0,
        "predicted": pred,
        "predictor": name,
        "ratio": float(norms[0] / norms[-1]),
        "norms": norms,
    }


def format_table(rows: list[dict[str, Any]], steps: int, window: int) -> str:
    """The table ``rnncore gradients`` prints (Markdown, so docs can paste it)."""
    g = "‖g_0‖/‖g_T‖"
    lines = [
        f"| cell | ρ(W_hh) | path | max abs(h) | decay/step (first {min(window, steps)} steps)"
        f" | predicted | predictor | {g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rad = "-" if r["radius"] is None else f"{r['radius']:.2f}"
        pred = "-" if r["predicted"] is None else f"{r['predicted']:.4f}"
        lines.append(
            f"| {r['cell']} | {rad} | {r['path']} | {r['max_h']:.3f} | {r['decay']:.4f} | {pred}"
            f" | {r['predictor'] or '-'} | {r['ratio']:.3g} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """log10 ‖∂L/∂state_t‖ against t, one line per row, written as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        n = np.asarray(r["norms"])
        label = r["cell"] + (f" ρ={r['radius']:g}" if r["radius"] is not None else "")
        label += f" ({r['path']})"
        with np.errstate(divide="ignore"):
            ax.plot(np.arange(n.size), np.log10(n), label=label)
    ax.set_xlabel("t (the loss is at the last step)")
    ax.set_ylabel("log10 ‖∂L/∂state_t‖")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _radii(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected radii > 0, got {text!r}")
    return values


def _positive(kind: type):
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
        if not v > 0 or not np.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return v

    return parse


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def add_parser(sub: Any) -> None:
    """Add the ``gradients`` subcommand to an argparse subparsers object."""
    p = sub.add_parser(
        "gradients",
        help="measure how the gradient vanishes or explodes through time",
        description="Back-propagate a loss at the last step through real layers and print "
        "the mean per-step decay of the state gradient beside its prediction.",
    )
    p.add_argument(
        "--cell",
        choices=("rnn", "lstm", "gru", "all"),
        default="all",
        help="the layers to measure (default: all)",
    )
    p.add_argument("--steps", type=_positive(int), default=100, help="T (default: 100)")
    p.add_argument(
        "--radius",
        type=_radii,
        default=DEFAULT_RADII,
        help="the tanh RNN's spectral radii (default: 0.5,0.9,1.0,1.1,1.5)",
    )
    p.add_argument("--hidden-size", type=_positive(int), default=32, help="H (default: 32)")
    p.add_argument(
        "--input-scale",
        type=_positive(float),
        default=0.1,
        help="inputs are this times N(0, 1) (default: 0.1)",
    )
    p.add_argument(
        "--window",
        type=_positive(int),
        default=50,
        help="steps the decay is averaged over (default: 50)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="weights and inputs (default: 0)")
    p.add_argument(
        "--zero-bias", action="store_true", help="set every bias to 0 (default: the init's)"
    )
    p.add_argument(
        "--forget-bias",
        type=float,
        default=0.0,
        help="added to the LSTM's forget-gate bias (default: 0)",
    )
    p.add_argument(
        "--plot", metavar="PNG", help="log-norm against t, needs matplotlib (default: no plot)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """The body of ``rnncore gradients``; returns the exit status."""
    import importlib.util

    from .cli import UsageError

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'rnncore[plot]')"
        )
    cells = ("rnn", "lstm", "gru") if args.cell == "all" else (args.cell,)
    rows = gradient_rows(
        cells,
        args.radius,
        steps=args.steps,
        hidden_size=args.hidden_size,
        input_scale=args.input_scale,
        window=args.window,
        seed=args.seed,
        zero_bias=args.zero_bias,
        forget_bias=args.forget_bias,
    )
    print(
        f"loss at step T={args.steps}, H={args.hidden_size}, inputs {args.input_scale:g}·N(0,1),"
        f" seed {args.seed}{', biases 0' if args.zero_bias else ''}"
        f"{f', LSTM forget bias +{args.forget_bias:g}' if args.forget_bias else ''}; g = ∂L/∂h_t"
        " (path h) or ∂L/∂c_t (path c, up to t = T-1: ∂L/∂c_T = 0)",
        file=out,
    )
    print(format_table(rows, args.steps, args.window), file=out)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}", file=out)
    return 0
