"""Looking inside a trained CharRNN (Karpathy, Johnson & Fei-Fei 2015): per-character
activations of every hidden and cell unit, the units most correlated with simple features of
the text, each gate's saturation, and ``rnncore inspect``'s self-contained HTML page.

The states come from the C++ kernels, layer by layer (rnncore.lstm_forward and friends over
the text as one sequence, batch 1, from zero states); the gates and the LSTM's cell states are
recomputed in NumPy from the weights and those states (rnncore.diagnostics.gate_activations),
which is the same arithmetic in float64.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from . import _core
from .diagnostics import gate_activations
from .model import CharRNN

__all__ = [
    "FEATURES",
    "UnitActivations",
    "add_parser",
    "correlations",
    "gate_saturation",
    "render_html",
    "text_features",
    "top_units",
    "unit_activations",
]

Array = np.ndarray
FEATURES = ("position in line", "inside brackets", "after newline")
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}


@dataclass
class UnitActivations:
    """Every unit's activation after each character of a text.

    Attributes:
        names: U unit names, "h{layer}[{k}]" (hidden unit k of layer `layer`) then, for an
            LSTM, "c{layer}[{k}]" (cell unit), layer by layer.
        values: (T, U) float64, the unit values after reading characters 0..T-1.
        gates: per layer, gate name -> (T, H) gate activation of each step.
    """

    names: list[str]
    values: Array
    gates: list[dict[str, Array]]

    def unit(self, name: str) -> Array:
        """(T,) the activations of the unit called `name` (e.g. "c1[7]")."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise ValueError(f"unit: no unit {name!r} (e.g. {self.names[0]!r})") from None


def unit_activations(model: CharRNN, ids: npt.ArrayLike) -> UnitActivations:
    """Run `model` over token ids (T,) from zero states and collect every unit and gate.

    Raises:
        ValueError: ids not 1-D with T >= 1 or outside [0, vocab_size).
    """
    a = np.asarray(ids)
    if a.ndim != 1 or a.size < 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"unit_activations: ids must be a non-empty 1-D integer array, got {a.shape}"
        )
    if a.min() < 0 or a.max() >= model.vocab_size:
        raise ValueError(f"unit_activations: ids must be in [0, {model.vocab_size})")
    cell, H, opts = model.cell, model.hidden_size, model.rnn.options
    emb = model.params.params.get("embedding.weight")
    x: Array = emb[a][:, None, :] if emb is not None else a.astype(np.int32)[:, None]
    hs: list[Array] = []
    cs: list[Array] = []
    gates: list[dict[str, Array]] = []
    for k in range(model.num_layers):
        w = model.rnn.layer_weights(k)
        h0 = np.zeros((1, H), model.dtype)
        if cell == "lstm":
            y = _core.lstm_forward(x, h0, h0, *w, training=False)[0]
        else:
            y = getattr(_core, f"{cell}_forward")(x, h0, *w, training=False, **opts)[0]
        h_prev = np.concatenate([h0[None], y[:-1]]).astype(np.float64)
        g = gate_activations(cell, w, x, h_prev, reset_after=bool(opts.get("reset_after", True)))
        gates.append({n: v[:, 0] for n, v in g.items()})
        hs.append(y[:, 0].astype(np.float64))
        if cell == "lstm":
            c = np.zeros((a.size, H))
            prev = np.zeros(H)
            for t in range(a.size):  # c_t = f_t c_{t-1} + i_t g_t
                prev = c[t] = g["f"][t, 0] * prev + g["i"][t, 0] * g["g"][t, 0]
            cs.append(c)
        x = y
    names = [f"h{k}[{j}]" for k in range(model.num_layers) for j in range(H)]
    names += [f"c{k}[{j}]" for k in range(len(cs)) for j in range(H)]
    return UnitActivations(names, np.concatenate(hs + cs, axis=1), gates)


def text_features(chars: str) -> dict[str, Array]:
    """Simple features of each character of `chars`, (T,) float64 each:

    - "position in line": characters since the last newline (0 for the first of a line and
      for a newline itself);
    - "inside brackets": 1 while an opened ( [ { is not yet closed, counting the opening
      bracket itself and not the closing one (nesting counts once);
    - "after newline": 1 for a newline (the state right after reading it), else 0.
    """
    T = len(chars)
    pos, inside, nl = np.zeros(T), np.zeros(T), np.zeros(T)
    col = depth = 0
    for t, ch in enumerate(chars):
        if ch == "\n":
            col = 0
            nl[t] = 1
        else:
            pos[t] = col
            col += 1
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        inside[t] = depth > 0
    return dict(zip(FEATURES, (pos, inside, nl), strict=True))


def correlations(values: npt.ArrayLike, features: dict[str, Array]) -> Array:
    """(F, U) Pearson correlation of each unit (column of values (T, U)) with each feature
    (T,); 0 where a unit or a feature is constant over the text."""
    v = np.asarray(values, np.float64)
    vc = v - v.mean(axis=0)
    vn = np.sqrt((vc**2).sum(axis=0))
    out = np.zeros((len(features), v.shape[1]))
    for i, f in enumerate(features.values()):
        fc = np.asarray(f, np.float64) - np.mean(f)
        fn = np.sqrt((fc**2).sum())
        ok = (vn > 0) & (fn > 0)
        out[i, ok] = (fc @ vc[:, ok]) / (fn * vn[ok])
    return out


def top_units(corr: Array, names: list[str], n: int = 5) -> list[tuple[str, int, str, float]]:
    """The n units of largest |r| per feature: (feature, rank from 1, unit name, r) rows;
    none for a feature whose correlations are all 0 (constant over the text, e.g. a text
    without brackets)."""
    rows = []
    for i, feat in enumerate(FEATURES[: corr.shape[0]]):
        if not np.any(corr[i]):
            continue
        order = np.argsort(-np.abs(corr[i]), kind="stable")[:n]
        rows += [(feat, r + 1, names[j], float(corr[i, j])) for r, j in enumerate(order)]
    return rows


def gate_saturation(acts: UnitActivations, cell: str) -> list[dict[str, tuple[Array, Array]]]:
    """Per layer, sigmoid gate -> ((H,) fraction of steps below 0.1, (H,) fraction above 0.9)."""
    return [
        {
            g: ((layer[g] < 0.1).mean(axis=0), (layer[g] > 0.9).mean(axis=0))
            for g in SIGMOID_GATES[cell]
        }
        for layer in acts.gates
    ]


def _colour(v: float) -> str:
    """White at 0, red towards +1, blue towards -1 (v clipped to [-1, 1])."""
    t = min(max(v, -1.0), 1.0)
    fade = round(255 * (1 - abs(t)))
    r, g, b = (255, fade, fade) if t >= 0 else (fade, fade, 255)
    return f"#{r:02x}{g:02x}{b:02x}"


def render_html(
    chars: str,
    values: Array,
    unit: str,
    top: list[tuple[str, int, str, float]],
    saturation: str = "",
    png: bytes | None = None,
) -> str:
    """A self-contained page (inline CSS, no external resource): each character of `chars`
    in a span coloured by values (T,) scaled by max |value| (its title the value), the unit
    table `top`, a saturation table (HTML) and an optional PNG inlined as a data: URI."""
    scale = float(np.max(np.abs(values))) or 1.0
    spans = "".join(
        f'<span style="background:{_colour(v / scale)}" title="{v:.4f}">{html.escape(ch)}</span>'
        for ch, v in zip(chars, values.tolist(), strict=True)
    )
    rows = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{k}</td><td>{html.escape(u)}</td><td>{r:+.4f}</td></tr>"
        for f, k, u, r in top
    )
    img = ""
    if png:
        data = base64.b64encode(png).decode("ascii")
        img = f'<img alt="gate saturation" src="data:image/png;base64,{data}">'

    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>rnncore inspect</title>'
        "<style>body{font-family:sans-serif;margin:2em}"
        ".text{font-family:monospace;white-space:pre-wrap;line-height:1.5}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style>"
        f"</head><body><h1>Unit {html.escape(unit)}</h1>"
        f"<p>Red: positive, blue: negative, white: 0; full colour at |value| = {scale:.4f}.</p>"
        f'<div class="text">{spans}</div>'
        "<h2>Units most correlated with simple features</h2>"
        '<table class="units"><tr><th>feature</th><th>rank</th><th>unit</th><th>r</th></tr>'
        f"{rows}</table>{saturation}{img}</body></html>\n"
    )


def _saturation_html(sat: list[dict[str, tuple[Array, Array]]]) -> str:
    if not any(sat):
        return "<p>The vanilla RNN has no gates.</p>"
    rows = "".join(
        f"<tr><td>{k}</td><td>{g}</td><td>{lo.mean():.3f}</td><td>{hi.mean():.3f}</td></tr>"
        for k, layer in enumerate(sat)
        for g, (lo, hi) in layer.items()
    )
    return (
        "<h2>Gate saturation (mean over units)</h2><table><tr><th>layer</th><th>gate</th>"
        f"<th>steps &lt; 0.1</th><th>steps &gt; 0.9</th></tr>{rows}</table>"
    )


def _saturation_png(sat: list[dict[str, tuple[Array, Array]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = list(sat[0])
    fig, axes = plt.subplots(1, len(gates), figsize=(3.2 * len(gates), 3.2), squeeze=False)
    for ax, g in zip(axes[0], gates, strict=True):
        for k, layer in enumerate(sat):
            ax.scatter(*layer[g], s=8, label=f"layer {k}")
        ax.plot([0, 1], [1, 0], color="#999", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"gate {g}", xlabel="fraction < 0.1")
        ax.set_ylabel("fraction > 0.9")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def add_parser(sub: Any) -> None:
    """Add the ``inspect`` subcommand to an argparse subparsers object."""
    p = sub.add_parser(
        "inspect",
        help="colour a text by one unit's activation (HTML)",
        description="Run a trained model over a text and write an HTML page "
        "colouring each character by one hidden or cell unit.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a file saved by rnncore train")
    p.add_argument("--text", required=True, metavar="FILE", help="the text to run over")
    p.add_argument(
        "--unit",
        type=int,
        help="unit index in --layer/--state (default: the unit most correlated with any feature)",
    )
    p.add_argument("--layer", type=int, help="default: the last layer")
    p.add_argument("--state", choices=("h", "c"), help="default: c for an LSTM, else h")
    p.add_argument("--top", type=int, default=5, help="units listed per feature (default: 5)")
    p.add_argument(
        "--max-chars",
        type=int,
        default=3000,
        help="characters of the text used, from its start (default: 3000)",
    )
    p.add_argument("--out", default="inspect.html", help="the page (default: inspect.html)")
    p.add_argument(
        "--png",
        help="the gate-saturation PNG, needs matplotlib "
        "(default: the page's name + -gates.png, when matplotlib is installed)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """The body of ``rnncore inspect``; returns the exit status."""
    import importlib.util
    from pathlib import Path

    from .checkpoint import load_checkpoint
    from .cli import UsageError
    from .train import model_from_checkpoint

    have_mpl = importlib.util.find_spec("matplotlib") is not None
    if args.png and not have_mpl:
        raise UsageError("--png needs matplotlib, which is not installed: pip install matplotlib")
    if args.top < 1 or args.max_chars < 1:
        raise UsageError(f"--top and --max-chars must be >= 1, got {args.top}, {args.max_chars}")
    try:
        ckpt = load_checkpoint(args.checkpoint)
        if ckpt.vocab is None:
            raise UsageError(f"{args.checkpoint}: the checkpoint has no vocabulary")
        model = model_from_checkpoint(ckpt)
        raw = Path(args.text).read_bytes()
        if ckpt.vocab.encoding == "bytes":
            chars = raw[: args.max_chars].decode("latin-1")  # one character per byte shown
            ids = ckpt.vocab.encode(raw[: args.max_chars])
        else:
            chars = raw.decode("utf-8")[: args.max_chars]
            ids = ckpt.vocab.encode(chars)
    except (ValueError, OSError) as e:  # CheckpointError and UnicodeDecodeError included
        raise UsageError(str(e)) from None
    acts = unit_activations(model, ids)
    corr = correlations(acts.values, text_features(chars))
    layer = model.num_layers - 1 if args.layer is None else args.layer
    state = args.state or ("c" if model.cell == "lstm" else "h")
    if not 0 <= layer < model.num_layers or (state == "c" and model.cell != "lstm"):
        raise UsageError(f"--layer must be in [0, {model.num_layers}) and --state c needs an LSTM")
    cols = [i for i, n in enumerate(acts.names) if n.startswith(f"{state}{layer}[")]
    if args.unit is None:
        unit = int(np.argmax(np.abs(corr[:, cols]).max(axis=0)))
    elif 0 <= args.unit < model.hidden_size:
        unit = args.unit
    else:
        raise UsageError(f"--unit must be in [0, {model.hidden_size}), got {args.unit}")
    name = acts.names[cols[unit]]
    top = top_units(corr, acts.names, args.top)
    for f in sorted(set(FEATURES) - {row[0] for row in top}, key=FEATURES.index):
        print(f"{f}: constant over this text, no correlation", file=out)
    print(f"{'feature':<18} {'rank':>4}  {'unit':<8} {'r':>8}", file=out)
    for f, k, u, r in top:
        print(f"{f:<18} {k:>4}  {u:<8} {r:+8.4f}", file=out)
    sat = gate_saturation(acts, model.cell)
    png = _saturation_png(sat) if have_mpl and any(sat) else None
    page = render_html(chars, acts.unit(name), name, top, _saturation_html(sat), png)
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"unit {name}: {args.out} written", file=out)
    if png is not None:
        png_path = args.png or str(Path(args.out).with_suffix("")) + "-gates.png"
        Path(png_path).write_bytes(png)
        print(f"gate saturation: {png_path} written", file=out)
    elif not have_mpl:
        print(
            "gate saturation PNG skipped: matplotlib is not installed (pip install matplotlib)",
            file=out,
        )
    return 0
