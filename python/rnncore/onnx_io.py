"""ONNX export and import of rnncore's recurrent stacks and character models.

``onnx`` is imported inside the functions, never by ``import rnncore`` (pip install
'rnncore[onnx]' installs onnx, onnxruntime and onnxscript). docs/interop.md has the examples.

Export writes one ONNX ``RNN``/``LSTM``/``GRU`` node per layer (both directions of a
bidirectional layer in one node, ``direction="bidirectional"``), ``layout`` 0, with T and B
symbolic. The weights are PyTorch's (rnncore's) with the gate blocks reordered::

    rnncore / torch.nn           ONNX
    LSTM  i, f, g, o       ->    i, o, f, c       W (dirs, 4H, D), R (dirs, 4H, H)
    GRU   r, z, n          ->    z, r, h          W (dirs, 3H, D), R (dirs, 3H, H)
    RNN   one block        ->    one block        W (dirs, H, D),  R (dirs, H, H)
    bias_ih, bias_hh       ->    B (dirs, 2GH) = [Wb; Rb]
    GRU reset_after=True   ->    linear_before_reset=1 (False -> 0)
    RNN nonlinearity       ->    activations ["Tanh"] or ["Relu"] (one per direction)

Graph of a stack (L layers, dirs directions)::

    inputs   x (T, B, D) float; h0 (L*dirs, B, H) [and c0 for the LSTM];
             sequence_lens (B,) int32 when exported with sequence_lens=True
    outputs  y (T, B, dirs*H); h_n (L*dirs, B, H) [and c_n]: the stack's forward() outputs

A CharRNN takes ``tokens`` (T, B) int64 instead of x (a Gather of the embedding rows, or of the
identity with one-hot input) and returns ``logits`` (T, B, V), h_n [and c_n]. Dropout is not
exported (inference).

Import reads a graph of RNN/LSTM/GRU nodes joined by plumbing (Transpose, Reshape, Squeeze,
Unsqueeze, Slice, Concat, Constant, Identity: what this exporter and PyTorch's write) into an
rnncore.RNN/LSTM/GRU with the weights; anything else raises a ValueError naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .layers import GRU, LSTM, RNN
from .model import CharRNN

__all__ = ["DEFAULT_OPSET", "export_onnx", "import_onnx"]

Array = np.ndarray
DEFAULT_OPSET = 14  # the first opset whose RNN/LSTM/GRU have `layout`
_MIN_OPSET = 14
# torch.nn block order -> ONNX block order: ONNX block j is torch block _ORDER[cell][j].
_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_CELL = {v: k for k, v in _OP.items()}
_PLUMBING = (
    "Transpose",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Concat",
    "Constant",
    "Identity",
)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "rnncore's ONNX export/import needs the onnx package: pip install 'rnncore[onnx]' "
            "(or pip install onnx onnxruntime)"
        ) from None
    return onnx


def _reorder(w: Array, cell: str, to_onnx: bool) -> Array:
    """Gate blocks of a (G*H, ...) weight or (G*H,) bias in the other framework's order."""
    order = _ORDER[cell]
    blocks = np.split(w, len(order), axis=0)
    if to_onnx:
        return np.concatenate([blocks[j] for j in order], axis=0)
    out: list[Array] = [blocks[0]] * len(order)
    for j, t in enumerate(order):
        out[t] = blocks[j]
    return np.concatenate(out, axis=0)


class _Graph:
    """Collects nodes and initializers with unique names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.h = onnx, onnx.helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: Array) -> str:
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | int, **attrs: Any) -> list[str]:
        if isinstance(outputs, int):
            outputs = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=self.name(op), **attrs))
        return outputs


def _stack_nodes(g: _Graph, stack: RNN | LSTM | GRU, x: str, lens: str, y_out: str) -> None:
    """Nodes computing y_out (T, B, dirs*H), h_n and c_n from x, h0 and c0."""
    cell, L, H = stack.cell, stack.num_layers, stack.hidden_size
    dirs = stack.num_directions
    n_states = 2 if cell == "lstm" else 1
    state_in, state_out = ["h0", "c0"][:n_states], ["h_n", "c_n"][:n_states]
    attrs: dict[str, Any] = {"hidden_size": H, "layout": 0}
    attrs["direction"] = "bidirectional" if dirs == 2 else "forward"
    if cell == "rnn":
        attrs["activations"] = [stack.options["nonlinearity"].capitalize()] * dirs
    if cell == "gru":
        attrs["linear_before_reset"] = int(stack.options["reset_after"])
    finals: list[list[str]] = [[] for _ in range(n_states)]
    inp = x
    for layer in range(L):
        ws = [stack.layer_weights(layer, reverse=r) for r in (False, True)[:dirs]]
        W = np.stack([_reorder(w[0], cell, True) for w in ws])  # (dirs, G*H, D)
        R = np.stack([_reorder(w[1], cell, True) for w in ws])  # (dirs, G*H, H)
        ins = [inp, g.const(f"W_l{layer}", W), g.const(f"R_l{layer}", R)]
        if stack.bias:
            Bv = np.stack(
                [
                    np.concatenate([_reorder(w[2], cell, True), _reorder(w[3], cell, True)])
                    for w in ws
                ]
            )
            ins.append(g.const(f"B_l{layer}", Bv))  # (dirs, 2*G*H)
        else:
            ins.append("")
        ins.append(lens)
        for s in state_in:
            if L == 1:
                ins.append(s)
            else:  # rows [layer*dirs, (layer+1)*dirs) of the stack's state
                rows = [
                    g.const("start", np.array([layer * dirs])),
                    g.const("end", np.array([(layer + 1) * dirs])),
                ]
                ins.append(g.node("Slice", [s, *rows, g.const("axes", np.array([0]))], 1)[0])
        outs = [g.name("Y")] + [
            state_out[i] if L == 1 else g.name(state_out[i]) for i in range(n_states)
        ]
        g.node(_OP[cell], ins, outs, **attrs)
        for f, o in zip(finals, outs[1:], strict=True):
            f.append(o)
        last = layer == L - 1
        y = y_out if last else g.name("y")
        if dirs == 1:  # Y (T, 1, B, H) -> (T, B, H)
            g.node("Squeeze", [outs[0], g.const("axes", np.array([1]))], [y])
        else:  # Y (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H), forward first
            t = g.node("Transpose", [outs[0]], 1, perm=[0, 2, 1, 3])[0]
            g.node("Reshape", [t, g.const("shape", np.array([0, 0, -1]))], [y])
        inp = y
    if L > 1:
        for f, name in zip(finals, state_out, strict=True):
            g.node("Concat", f, [name], axis=0)


def export_onnx(
    model: RNN | LSTM | GRU | CharRNN,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    sequence_lens: bool = False,
) -> Path:
    """Write `model` as an ONNX file (see the module docstring for the graph's signature).

    Args:
        model: an rnncore.RNN, LSTM or GRU stack (uni- or bidirectional, any num_layers), or a
            CharRNN (token ids in, logits and the final state out).
        path: the .onnx file to write.
        opset: the ai.onnx opset, >= 14 (None: 14).
        sequence_lens: add a ``sequence_lens`` (B,) int32 graph input, fed to every layer
            (steps each sequence runs, as forward's lengths; ONNX Runtime's handling of a
            length 0 differs from rnncore's: docs/interop.md).

    Returns:
        The path written.

    Raises:
        TypeError: model is none of those classes, opset is not an int or None, or
            sequence_lens is not a bool.
        ValueError: opset below 14 or above what the installed onnx knows.
        ImportError: onnx is not installed.
    """
    onnx = _onnx()
    h = onnx.helper
    where = "export_onnx"
    if not isinstance(model, RNN | LSTM | GRU | CharRNN):
        raise TypeError(
            f"{where}: model must be an rnncore.RNN, LSTM, GRU or CharRNN, got "
            f"{type(model).__name__}"
        )
    top = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = DEFAULT_OPSET
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise TypeError(f"{where}: opset must be an int or None, got {opset!r}")
    if not _MIN_OPSET <= opset <= top:
        raise ValueError(f"{where}: opset must be in [{_MIN_OPSET}, {top}], got {opset}")
    if not isinstance(sequence_lens, bool):
        raise TypeError(f"{where}: sequence_lens must be a bool, got {sequence_lens!r}")
    stack = model.rnn if isinstance(model, CharRNN) else model
    elem = onnx.helper.np_dtype_to_tensor_dtype(stack.dtype)
    L, H, dirs = stack.num_layers, stack.hidden_size, stack.num_directions
    g = _Graph(onnx)
    inputs, outputs = [], []
    if isinstance(model, CharRNN):
        inputs.append(h.make_tensor_value_info("tokens", onnx.TensorProto.INT64, ["T", "B"]))
        p = model.params.params
        table = (
            p["embedding.weight"]
            if model.embedding_size
            else np.eye(model.vocab_size, dtype=model.dtype)
        )
        x = g.node("Gather", [g.const("embedding", table), "tokens"], 1, axis=0)[0]  # (T, B, E)
        y = g.name("y")
    else:
        inputs.append(h.make_tensor_value_info("x", elem, ["T", "B", stack.input_size]))
        x, y = "x", "y"
    states = ["h0", "c0"] if stack.cell == "lstm" else ["h0"]
    for s in states:
        inputs.append(h.make_tensor_value_info(s, elem, [L * dirs, "B", H]))
    lens = ""
    if sequence_lens:
        lens = "sequence_lens"
        inputs.append(h.make_tensor_value_info(lens, onnx.TensorProto.INT32, ["B"]))
    _stack_nodes(g, stack, x, lens, y)
    if isinstance(model, CharRNN):
        V = model.vocab_size
        mm = g.node("MatMul", [y, g.const("decoder_weight_t", p["decoder.weight"].T)], 1)[0]
        g.node("Add", [mm, g.const("decoder_bias", p["decoder.bias"])], ["logits"])
        outputs.append(h.make_tensor_value_info("logits", elem, ["T", "B", V]))
    else:
        outputs.append(h.make_tensor_value_info("y", elem, ["T", "B", dirs * H]))
    for s in ("h_n", "c_n")[: len(states)]:
        outputs.append(h.make_tensor_value_info(s, elem, [L * dirs, "B", H]))
    graph = h.make_graph(g.nodes, f"rnncore_{type(model).__name__}", inputs, outputs, g.inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="rnncore")
    # The lowest IR version the opset allows: older ONNX Runtime releases read the file too.
    proto.ir_version = h.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    onnx.save(proto, path)
    return path


# --- import -------------------------------------------------------------------------------------

_DEFAULT_ACTS = {"lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh")}


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_rnn_node(
    where: str, node: Any, attrs: dict[str, Any], cell: str
) -> tuple[int, dict[str, Any]]:
    """(directions, cell options) of an RNN/LSTM/GRU node; ValueError naming what is unsupported."""
    what = f"{where}: node {node.name!r} ({node.op_type})"
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional"):
        raise ValueError(
            f"{what}: direction={direction!r} is not supported (forward or bidirectional)"
        )
    dirs = 2 if direction == "bidirectional" else 1
    for key in ("clip", "activation_alpha", "activation_beta"):
        if key in attrs:
            raise ValueError(f"{what}: attribute {key!r} is not supported, got {attrs[key]!r}")
    if attrs.get("layout", 0) != 0:
        raise ValueError(
            f"{what}: layout={attrs['layout']} (batch-major) is not supported, only layout=0"
        )
    if cell == "lstm" and attrs.get("input_forget", 0) != 0:
        raise ValueError(f"{what}: input_forget={attrs['input_forget']} is not supported, only 0")
    if cell == "lstm" and len(node.input) > 7 and node.input[7]:
        raise ValueError(f"{what}: peephole weights (input P {node.input[7]!r}) are not supported")
    acts = tuple(a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", ()))
    options: dict[str, Any] = {}
    if cell == "rnn":
        acts = acts or ("Tanh",) * dirs
        if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu") or len(acts) != dirs:
            raise ValueError(
                f"{what}: activations {list(acts)} are not supported (Tanh or Relu, one per "
                "direction)"
            )
        options["nonlinearity"] = acts[0].lower()
    elif acts and acts != _DEFAULT_ACTS[cell] * dirs:
        raise ValueError(
            f"{what}: custom activations {list(acts)} are not supported, only "
            f"{list(_DEFAULT_ACTS[cell] * dirs)}"
        )
    if cell == "gru":
        lbr = attrs.get("linear_before_reset", 0)
        if lbr not in (0, 1):
            raise ValueError(f"{what}: linear_before_reset must be 0 or 1, got {lbr}")
        options["reset_after"] = bool(lbr)
    return dirs, options


def import_onnx(path: str | os.PathLike[str] | Any) -> RNN | LSTM | GRU:
    """An rnncore layer stack with the weights of an ONNX graph of RNN/LSTM/GRU nodes.

    The graph holds one node per layer, all of one op type (RNN, LSTM or GRU), each layer's X
    coming from the previous layer's Y through plumbing ops (Transpose, Reshape, Squeeze,
    Unsqueeze, Slice, Concat, Constant, Identity), W, R and B constant (initializers or
    Constant nodes): what rnncore.export_onnx and torch.onnx.export of torch.nn.RNN/LSTM/GRU
    write. The stack computes what the graph's last node computes (time-major).

    Args:
        path: an .onnx file, or an onnx.ModelProto.

    Returns:
        rnncore.RNN, LSTM or GRU (dtype of the weights, float32 or float64) with
        num_layers = the number of nodes, bidirectional when the nodes are, bias unless no node
        has a B input, nonlinearity/reset_after from activations/linear_before_reset.

    Raises:
        ValueError: an op other than those (named), no recurrent node, nodes of different
            types or options, unsupported attributes or inputs (named: direction="reverse",
            clip, activation_alpha/beta, custom activations, input_forget=1, peepholes P,
            layout=1), weights that are not constants, or of inconsistent shapes (named, with
            the expected and the received shape), or layers that are not chained.
        ImportError: onnx is not installed.
    """
    onnx = _onnx()
    where = "import_onnx"
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(os.fspath(path))
    graph = proto.graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    producer: dict[str, Any] = {}
    rnn_nodes = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or (
            node.op_type not in _CELL and node.op_type not in _PLUMBING
        ):
            raise ValueError(
                f"{where}: unsupported op {node.op_type!r} (node {node.name!r}): only RNN, LSTM "
                f"and GRU nodes joined by {', '.join(_PLUMBING)} can be imported"
            )
        if node.op_type == "Constant":
            a = _attrs(onnx, node)
            if "value" not in a:
                raise ValueError(
                    f"{where}: Constant node {node.name!r} without a tensor 'value' is not "
                    "supported"
                )
            consts[node.output[0]] = onnx.numpy_helper.to_array(a["value"])
        for o in node.output:
            producer[o] = node
        if node.op_type in _CELL:
            rnn_nodes.append(node)
    if not rnn_nodes:
        raise ValueError(f"{where}: the graph has no RNN, LSTM or GRU node")
    kinds = sorted({n.op_type for n in rnn_nodes})
    if len(kinds) > 1:
        raise ValueError(f"{where}: the recurrent nodes must be of one type, got {kinds}")
    cell = _CELL[kinds[0]]
    G = len(_ORDER[cell])

    def constant(node: Any, i: int, what: str) -> Array | None:
        if len(node.input) <= i or not node.input[i]:
            return None
        name = node.input[i]
        if name not in consts:
            raise ValueError(
                f"{where}: node {node.name!r}: input {what} ({name!r}) must be a constant (an "
                "initializer or a Constant node)"
            )
        return consts[name]

    def source(name: str) -> Any:
        """The recurrent node whose output `name` comes from through plumbing, or None."""
        seen = 0
        while name in producer and seen < len(graph.node):
            n = producer[name]
            if n.op_type in _CELL:
                return n if name == n.output[0] else None
            if n.op_type == "Constant" or not n.input:
                return None
            name, seen = n.input[0], seen + 1
        return None

    dirs = H = None
    options: dict[str, Any] = {}
    state: dict[str, Array] = {}
    has_bias = any(len(n.input) > 3 and n.input[3] for n in rnn_nodes)
    input_size = 0
    for layer, node in enumerate(rnn_nodes):
        what = f"{where}: node {node.name!r} ({node.op_type}, layer {layer})"
        attrs = _attrs(onnx, node)
        d, opts = _check_rnn_node(where, node, attrs, cell)
        if layer == 0:
            dirs, options = d, opts
        elif (d, opts) != (dirs, options):
            raise ValueError(
                f"{what}: directions {d} and options {opts} differ from layer 0's "
                f"({dirs}, {options})"
            )
        if layer > 0 and source(node.input[0]) is not rnn_nodes[layer - 1]:
            raise ValueError(
                f"{what}: its input X ({node.input[0]!r}) is not computed from the previous "
                "recurrent node's output Y"
            )
        W, R, Bv = (constant(node, i, n) for i, n in ((1, "W"), (2, "R"), (3, "B")))
        if W is None or R is None:
            raise ValueError(f"{what}: inputs W and R are required")
        if R.ndim != 3 or R.shape[0] != d or R.shape[1] != G * R.shape[2]:
            raise ValueError(
                f"{what}: R must have shape (directions, {G}*hidden_size, hidden_size) with "
                f"directions={d}, got {R.shape}"
            )
        h = R.shape[2]
        if "hidden_size" in attrs and attrs["hidden_size"] != h:
            raise ValueError(
                f"{what}: hidden_size={attrs['hidden_size']} but R has shape {R.shape} (hidden "
                f"size {h})"
            )
        if H is None:
            H = h
        elif h != H:
            raise ValueError(f"{what}: hidden size {h} differs from layer 0's {H}")
        d_in = W.shape[2] if W.ndim == 3 else -1
        expected_in = d_in if layer == 0 else d * H
        if W.shape != (d, G * H, expected_in) or d_in < 1:
            raise ValueError(
                f"{what}: W must have shape "
                f"{(d, G * H, 'input_size' if layer == 0 else expected_in)}, got {W.shape}"
            )
        if layer == 0:
            input_size = d_in
        if Bv is not None and Bv.shape != (d, 2 * G * H):
            raise ValueError(f"{what}: B must have shape {(d, 2 * G * H)}, got {Bv.shape}")
        for k in range(d):
            sfx = f"_l{layer}" + ("_reverse" if k else "")
            state["weight_ih" + sfx] = _reorder(W[k], cell, False)
            state["weight_hh" + sfx] = _reorder(R[k], cell, False)
            if has_bias:
                b = np.zeros(2 * G * H, W.dtype) if Bv is None else Bv[k]
                state["bias_ih" + sfx] = _reorder(b[: G * H], cell, False)
                state["bias_hh" + sfx] = _reorder(b[G * H :], cell, False)
    dtype = np.dtype(state["weight_ih_l0"].dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{where}: the weights must be float32 or float64, got {dtype}")
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell]
    stack = cls(
        input_size,
        H,
        len(rnn_nodes),
        bias=has_bias,
        bidirectional=dirs == 2,
        dtype=dtype,
        **options,
    )
    stack.load_state_dict(state)
    return stack


def export_checkpoint(
    checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *, opset: int | None = None
) -> Path:
    """export_onnx of the CharRNN a checkpoint of ``rnncore train`` holds (``rnncore export``).

    Raises:
        ValueError: the checkpoint cannot be read (CheckpointError) or describes no model.
        FileNotFoundError: no such checkpoint.
    """
    from .checkpoint import load_checkpoint
    from .train import model_from_checkpoint

    return export_onnx(model_from_checkpoint(load_checkpoint(checkpoint)), path, opset=opset)
