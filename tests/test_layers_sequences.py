"""Variable lengths and bidirectional stacks in the layers (issue 12, points 3-5).

The layers' semantics are PyTorch's packed sequences padded back with zeros: checked against
torch.nn on pack_padded_sequence(..., enforce_sorted=False) input for every cell torch has,
against rnncore.reference run layer by layer (the GRU with the reset gate before the matmul,
and length 0, which torch rejects), and against float64 central differences through a
bidirectional 2-layer stack with lengths and dropout. Then exact properties (lengths all T is
lengths=None bitwise, padding is 0 and never read, token ids), the parameters (PyTorch's names
and order, torch's state_dict in both directions, the initialisation draws) and bad input.

Tests that run a forward with lengths or a reverse direction need the C++ kernels' lengths= and
reverse= arguments: they skip, with the reason "the C++ kernels do not take lengths yet", while
rnncore._core's forward of the cell does not document them.

Loss for the gradients: L = sum(y * dy) + sum over state parts of sum(s_n * ds) with fixed random
dy, ds, so that dL/dy = dy and dL/ds_n = ds.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from conftest import EPS32, rel_err, torch_or_skip
from gradcheck import central_difference
from rnncore import GRU, LSTM, RNN
from rnncore import reference as ref

CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru", "gru-reset-before"]
TORCH_CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]  # torch has no reset-before GRU
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
KERNELS_MISSING = "the C++ kernels do not take lengths yet"


def kind(cell: str) -> str:
    return cell.split("-")[0]


def kernels_take_lengths(cell: str) -> bool:
    """Whether rnncore._core's forward of this cell has the lengths= and reverse= arguments."""
    doc = getattr(rnncore._core, f"{kind(cell)}_forward").__doc__ or ""
    return "lengths" in doc and "reverse" in doc


def need_kernels(cell: str) -> None:
    if not kernels_take_lengths(cell):
        pytest.skip(KERNELS_MISSING)


def make(cell, D, H, L=1, **kwargs):
    """Our layer for a cell name of CELLS."""
    if cell.startswith("rnn-"):
        return RNN(D, H, L, nonlinearity=cell[4:], **kwargs)
    if cell == "lstm":
        return LSTM(D, H, L, **kwargs)
    return GRU(D, H, L, reset_after=cell == "gru", **kwargs)


def n_states(cell):
    return 2 if cell == "lstm" else 1


def parts(state):
    """A state (or its gradient) as a list of arrays: [h], or [h, c] for the LSTM."""
    return list(state) if isinstance(state, tuple) else [state]


def pack(cell, arrays):
    return tuple(arrays) if cell == "lstm" else arrays[0]


def loss_of(y, state, dy, dstate):
    total = float(np.sum(y * dy))
    for s, ds in zip(parts(state), parts(dstate), strict=True):
        total += float(np.sum(s * ds))
    return total


def fixture(rng, cell, T, B, D, H, rows, dtype=np.float64):
    """x (T, B, D), an initial state and a state gradient of `rows` = L*dirs rows each."""
    x = rng.standard_normal((T, B, D)).astype(dtype)
    s0 = pack(
        cell,
        [0.5 * rng.standard_normal((rows, B, H)).astype(dtype) for _ in "hc"[: n_states(cell)]],
    )
    ds = pack(
        cell, [rng.standard_normal((rows, B, H)).astype(dtype) for _ in "hc"[: n_states(cell)]]
    )
    return x, s0, ds


def random_lengths(rng, T, B, low=1):
    """(B,) lengths in [low, T] in random order, with low and T both present."""
    lengths = np.concatenate([[low, T], rng.integers(low, T + 1, B - 2)])
    return rng.permutation(lengths).astype(np.int64)


@pytest.fixture
def torch():
    """torch (or skip), at one thread for the test (tiny modules: threads only cost)."""
    torch = torch_or_skip()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def make_torch(torch, cell, D, H, L, bidirectional, **kwargs):
    if cell.startswith("rnn-"):
        cls, kwargs = torch.nn.RNN, {"nonlinearity": cell[4:], **kwargs}
    else:
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    return cls(D, H, L, bidirectional=bidirectional, dtype=torch.float64, **kwargs)


def expected_names(L, bidirectional, bias=True):
    names = PARAM_NAMES if bias else PARAM_NAMES[:2]
    suffixes = ("", "_reverse") if bidirectional else ("",)
    return [f"{n}_l{k}{s}" for k in range(L) for s in suffixes for n in names]


# --- PyTorch parity on packed sequences -------------------------------------------------------


def torch_packed(torch, net, cell, x, lengths, s0, dy, ds):
    """torch's y (padded with zeros to T), final state, dx, dstate0 and parameter gradients."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    tx = torch.tensor(x, requires_grad=True)
    ts0 = [torch.tensor(s, requires_grad=True) for s in parts(s0)]
    packed = pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False)
    out, tsn = net(packed, pack(cell, ts0))
    ty, _ = pad_packed_sequence(out, total_length=x.shape[0])
    loss = (ty * torch.from_numpy(dy)).sum()
    for s, d in zip(parts(tsn), parts(ds), strict=True):
        loss = loss + (s * torch.from_numpy(d)).sum()
    loss.backward()
    return (
        ty.detach().numpy(),
        [s.detach().numpy() for s in parts(tsn)],
        tx.grad.numpy(),
        [s.grad.numpy() for s in ts0],
        {k: p.grad.numpy() for k, p in net.named_parameters()},
    )


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_pytorch_packed_parity(torch, cell, num_layers, bidirectional):
    """y (pad_packed_sequence, total_length=T), final states, dx, dstate0 and every parameter
    gradient against torch.nn on pack_padded_sequence(..., enforce_sorted=False), float64.

    Lengths in random order with 1 and T present. Both sides compute the same sums in other
    orders (torch sorts the batch and shrinks it per step): a few ulps per operation, ~1e-15
    relative after L layers and T steps; 1e-10 leaves room and is still 1e5 below what a
    padded step read, a wrong final state or a misplaced reverse output would give (>= 1e-2).
    """
    need_kernels(cell)
    T, B, D, H, L = 7, 6, 3, 4, num_layers
    rows = L * (2 if bidirectional else 1)
    rng = np.random.default_rng(100 + 10 * L + bidirectional)
    torch.manual_seed(5)
    net = make_torch(torch, cell, D, H, L, bidirectional)
    layer = make(cell, D, H, L, bidirectional=bidirectional, dtype=np.float64)
    layer.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    lengths = random_lengths(rng, T, B)
    x, s0, ds = fixture(rng, cell, T, B, D, H, rows)
    dy = rng.standard_normal((T, B, H * layer.num_directions))
    ty, tsn, tdx, tds0, tgrads = torch_packed(torch, net, cell, x, lengths, s0, dy, ds)

    y, sn = layer.forward(x, s0, lengths=lengths)
    dx, ds0 = layer.backward(dy, ds)
    tol = 1e-10
    assert y.shape == (T, B, H * layer.num_directions)
    assert rel_err(y, ty) <= tol, f"y: {rel_err(y, ty):.3g}"
    for i, (a, b) in enumerate(zip(parts(sn), tsn, strict=True)):
        assert a.shape == (rows, B, H)
        assert rel_err(a, b) <= tol, f"state[{i}]: {rel_err(a, b):.3g}"
    assert rel_err(dx, tdx) <= tol, f"dx: {rel_err(dx, tdx):.3g}"
    for i, (a, b) in enumerate(zip(parts(ds0), tds0, strict=True)):
        assert rel_err(a, b) <= tol, f"dstate[{i}]: {rel_err(a, b):.3g}"
    assert list(layer.grads) == list(tgrads)
    for name, g in tgrads.items():
        assert rel_err(layer.grads[name], g) <= tol, f"{name}: {rel_err(layer.grads[name], g):.3g}"


# --- the reference, run layer by layer ----------------------------------------------------------


def reference_stack(layer, x, lengths, s0, dy, ds):
    """rnncore.reference run layer by layer and direction by direction on the layer's weights:
    y, final state parts, dx, dstate0 parts, and the parameter gradients by name."""
    fwd = getattr(ref, f"{layer.cell}_forward")
    bwd = getattr(ref, f"{layer.cell}_backward")
    L, H, dirs, n = layer.num_layers, layer.hidden_size, layer.num_directions, len(parts(s0))
    s0p, dsp = parts(s0), parts(ds)
    finals = [np.empty_like(s) for s in s0p]
    caches, inp = [], x
    for k in range(L):
        outs = []
        for d in range(dirs):
            i = k * dirs + d
            w = layer.layer_weights(k, reverse=bool(d))
            y, *rest = fwd(
                inp, *(s[i] for s in s0p), *w, lengths=lengths, reverse=bool(d), **layer.options
            )
            for f, s in zip(finals, rest[:n], strict=True):
                f[i] = s
            caches.append(rest[n])
            outs.append(y)
        inp = np.concatenate(outs, axis=2)
    y_top = inp
    d0 = [np.empty_like(s) for s in s0p]
    grads, grad = {}, dy
    for k in reversed(range(L)):
        dx_sum = 0
        for d in range(dirs):
            i = k * dirs + d
            dx, *rest = bwd(grad[..., d * H : (d + 1) * H], *(s[i] for s in dsp), caches[i])
            for out, g in zip(d0, rest[:n], strict=True):
                out[i] = g
            for name, g in zip(PARAM_NAMES, rest[n:], strict=True):
                if g is not None:
                    grads[f"{name}_l{k}{'_reverse' if d else ''}"] = g
            dx_sum = dx_sum + dx
        grad = dx_sum
    return y_top, finals, grad, d0, grads


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_reference_layer_by_layer_with_length_zero(cell, bidirectional):
    """Every cell (the reset-before GRU has no torch counterpart) against the reference run
    layer by layer, 2 layers, float64, lengths with 0, 1 and T: a length-0 row keeps its
    initial state as its final state in every layer and direction (torch rejects length 0).
    Same tolerance argument as the torch parity (both sides differ by summation order only)."""
    need_kernels(cell)
    T, B, D, H, L = 6, 5, 3, 4, 2
    rng = np.random.default_rng(7 + bidirectional)
    layer = make(cell, D, H, L, bidirectional=bidirectional, dtype=np.float64, seed=1)
    rows = L * layer.num_directions
    lengths = rng.permutation(np.array([0, 1, T, 3, T])).astype(np.int64)
    x, s0, ds = fixture(rng, cell, T, B, D, H, rows)
    dy = rng.standard_normal((T, B, H * layer.num_directions))
    ry, rsn, rdx, rds0, rgrads = reference_stack(layer, x, lengths, s0, dy, ds)
    y, sn = layer.forward(x, s0, lengths=lengths)
    dx, ds0 = layer.backward(dy, ds)
    tol = 1e-10
    assert rel_err(y, ry) <= tol
    for a, b in zip(parts(sn), rsn, strict=True):
        assert rel_err(a, b) <= tol
    zero = lengths == 0
    for a, b in zip(parts(sn), parts(s0), strict=True):
        np.testing.assert_array_equal(a[:, zero], b[:, zero])  # length 0: final state = h0
    assert rel_err(dx, rdx) <= tol
    for a, b in zip(parts(ds0), rds0, strict=True):
        assert rel_err(a, b) <= tol
    assert set(layer.grads) == set(rgrads)
    for name, g in rgrads.items():
        assert rel_err(layer.grads[name], g) <= tol, name


# --- central differences ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences_bidirectional(cell):
    """float64, bidirectional, 2 layers, dropout 0.3 between them (the generator is reset
    before every forward, so both points of a quotient see the same mask), lengths 4, 1, 0, 2:
    every entry of x, of the initial state and of every parameter. h = 1e-6: truncation
    O(h²) ~ 1e-12, rounding ~ eps·|loss|/h ~ 1e-9, both far below the 1e-6 allowed
    (DESIGN.md, tier 1). (relu: no pre-activation within h of the kink with this seed.)"""
    need_kernels(cell)
    T, B, D, H, L = 4, 4, 2, 3, 2
    rng = np.random.default_rng(31)
    layer = make(cell, D, H, L, bidirectional=True, dropout=0.3, dtype=np.float64, seed=3)
    lengths = np.array([4, 1, 0, 2])
    x, s0, ds = fixture(rng, cell, T, B, D, H, 2 * L)
    dy = rng.standard_normal((T, B, 2 * H))
    start = layer.generator.bit_generator.state

    def run(training):
        layer.generator.bit_generator.state = start
        return layer.forward(x, s0, lengths=lengths, training=training)

    layer.zero_grad()
    y, _ = run(True)
    dx, ds0 = layer.backward(dy, ds)
    assert not y[1:, 1].any() and not y[:, 2].any()  # the padding is 0
    assert rel_err(y, run(False)[0]) > 1e-3  # the mask between the layers did change y

    def loss():
        return loss_of(*run(True), dy, ds)

    assert rel_err(central_difference(loss, x), dx) <= 1e-6
    assert not dx[2:, 1].any() and not dx[:, 2].any()  # nothing flows into the padding
    for i, (s, g) in enumerate(zip(parts(s0), parts(ds0), strict=True)):
        assert rel_err(central_difference(loss, s), g) <= 1e-6, f"state[{i}]"
    for name, p in layer.parameters().items():
        assert rel_err(central_difference(loss, p), layer.grads[name]) <= 1e-6, name


# --- exact properties ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_all_T_is_bitwise_lengths_none(cell, bidirectional, dtype):
    need_kernels(cell)
    T, B, D, H, L = 5, 3, 4, 3, 2
    rng = np.random.default_rng(3)
    rows = L * (2 if bidirectional else 1)
    x, s0, ds = fixture(rng, cell, T, B, D, H, rows, dtype)
    dy = rng.standard_normal((T, B, H * rows // L)).astype(dtype)
    results = []
    for lengths in (None, np.full(B, T)):
        layer = make(cell, D, H, L, bidirectional=bidirectional, dropout=0.2, dtype=dtype, seed=4)
        y, sn = layer.forward(x, s0, lengths=lengths)
        dx, ds0 = layer.backward(dy, ds)
        results.append([y, *parts(sn), dx, *parts(ds0), *layer.grads.values()])
    for a, b in zip(*results, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("cell", CELLS)
def test_padding_is_zero_and_never_read(cell):
    """y is exactly 0 past each length in both halves, dx exactly 0 there, and NaN in the
    padding of x changes nothing (it is never read); 2 bidirectional layers with dropout."""
    need_kernels(cell)
    T, B, D, H, L = 6, 4, 3, 4, 2
    rng = np.random.default_rng(11)
    lengths = np.array([2, 6, 0, 5])
    pad = np.arange(T)[:, None] >= lengths[None, :]  # (T, B)
    x, s0, ds = fixture(rng, cell, T, B, D, H, 2 * L)
    dy = rng.standard_normal((T, B, 2 * H))
    runs = []
    for fill in (0.0, np.nan):
        layer = make(cell, D, H, L, bidirectional=True, dropout=0.25, dtype=np.float64, seed=2)
        xp = x.copy()
        xp[pad] = fill
        y, sn = layer.forward(xp, s0, lengths=lengths)
        dx, ds0 = layer.backward(dy, ds)
        assert not y[pad].any() and not dx[pad].any()
        runs.append([y, *parts(sn), dx, *parts(ds0), *layer.grads.values()])
    for a, b in zip(*runs, strict=True):
        assert np.isfinite(a).all() and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("cell", CELLS)
def test_row_permutation_permutes_results(cell):
    """Permuting the batch rows (with their lengths and initial states) permutes y, the final
    states, dx and dstate0 bitwise (DESIGN.md: the kernels' promise, kept by the layer without
    dropout); the weight gradients change only by summation order (1e-12, float64)."""
    need_kernels(cell)
    T, B, D, H, L = 5, 6, 3, 4, 2
    rng = np.random.default_rng(8)
    lengths = np.array([5, 1, 0, 3, 5, 2])
    perm = rng.permutation(B)
    x, s0, ds = fixture(rng, cell, T, B, D, H, 2 * L)
    dy = rng.standard_normal((T, B, 2 * H))
    runs = []
    for rows in (np.arange(B), perm):
        layer = make(cell, D, H, L, bidirectional=True, dtype=np.float64, seed=6)
        s0p = pack(cell, [s[:, rows] for s in parts(s0)])
        dsp = pack(cell, [s[:, rows] for s in parts(ds)])
        y, sn = layer.forward(x[:, rows], s0p, lengths=lengths[rows])
        dx, ds0 = layer.backward(dy[:, rows], dsp)
        runs.append(([y, dx], [*parts(sn), *parts(ds0)], layer.grads))
    (seq, st, grads), (seq_p, st_p, grads_p) = runs
    for a, b in zip(seq, seq_p, strict=True):
        assert a[:, perm].tobytes() == b.tobytes()
    for a, b in zip(st, st_p, strict=True):
        assert a[:, perm].tobytes() == b.tobytes()
    for name, g in grads.items():
        assert rel_err(g, grads_p[name]) <= 1e-12, name


@pytest.mark.parametrize("cell", CELLS)
def test_token_ids_with_lengths_equal_one_hot_rows(cell):
    """(T, B) token ids with lengths, bidirectional: the same as their one-hot rows (float64,
    to the rounding of a product with zeros: exact, or ulps), and backward returns dx = None."""
    need_kernels(cell)
    T, B, V, H, L = 5, 3, 6, 4, 2
    rng = np.random.default_rng(4)
    ids = rng.integers(0, V, (T, B))
    lengths = np.array([5, 1, 3])
    a = make(cell, V, H, L, bidirectional=True, dtype=np.float64, seed=0)
    b = make(cell, V, H, L, bidirectional=True, dtype=np.float64, seed=0)
    ya, sa = a.forward(ids, lengths=lengths)
    yb, sb = b.forward(np.eye(V)[ids], lengths=lengths)
    assert rel_err(ya, yb) <= 1e-13
    for p, q in zip(parts(sa), parts(sb), strict=True):
        assert rel_err(p, q) <= 1e-13
    dy = rng.standard_normal(ya.shape)
    dx, _ = a.backward(dy)
    b.backward(dy)
    assert dx is None
    for name, g in a.grads.items():
        assert rel_err(g, b.grads[name]) <= 1e-12, name


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_input_weight_with_lengths(cls):
    """forward(ids, input_weight=W, lengths=...) of a unidirectional stack equals the layer
    whose weight_ih_l0 is W (CharRNN's folded embedding on variable-length batches)."""
    need_kernels(cls.cell)
    rng = np.random.default_rng(2)
    folded, plain = cls(3, 4, 2, seed=0, dtype=np.float64), cls(5, 4, 2, seed=0, dtype=np.float64)
    sd = plain.state_dict()
    w = sd.pop("weight_ih_l0")
    for name, v in sd.items():
        folded.parameters()[name][...] = v
    ids, lengths = rng.integers(0, 5, (6, 2)), np.array([6, 2])
    y1, _ = folded.forward(ids, input_weight=w, lengths=lengths)
    y2, _ = plain.forward(ids, lengths=lengths)
    assert np.array_equal(y1, y2) and not y1[2:, 1].any()
    folded.backward(np.ones_like(y1))
    plain.backward(np.ones_like(y2))
    assert np.array_equal(folded.input_weight_grad, plain.grads["weight_ih_l0"])


# --- parameters, initialisation, state_dict (no kernel call) ----------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_parameters_are_pytorchs(cell):
    """PyTorch's names, order (per layer the forward direction's four, then the reverse's) and
    shapes: layer k >= 1 takes 2H inputs; y has 2H features and the state 2L rows."""
    D, H, L, G = 3, 5, 3, GATES[kind(cell)]
    layer = make(cell, D, H, L, bidirectional=True)
    assert layer.bidirectional is True and layer.num_directions == 2
    assert list(layer.state_dict()) == expected_names(L, True)
    assert list(make(cell, D, H, L, bidirectional=True, bias=False).parameters()) == (
        expected_names(L, True, bias=False)
    )
    for name, p in layer.parameters().items():
        if name.startswith("weight_ih"):
            assert p.shape == (G * H, D if "_l0" in name else 2 * H), name
        elif name.startswith("weight_hh"):
            assert p.shape == (G * H, H), name
        else:
            assert p.shape == (G * H,), name
    assert list(make(cell, D, H, L).parameters()) == expected_names(L, False)
    assert make(cell, D, H, L, bidirectional=False).num_directions == 1
    w = layer.layer_weights(1, reverse=True)
    assert w[0] is layer.parameters()["weight_ih_l1_reverse"]
    assert w[3] is layer.parameters()["bias_hh_l1_reverse"]
    assert layer.layer_weights(1)[1] is layer.parameters()["weight_hh_l1"]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_draws(cell, bidirectional):
    """Every parameter is drawn from U(-1/√H, 1/√H) by default_rng(seed), in float64, in
    state_dict order. For bidirectional=False this is the order rnncore always used (one
    layer's four, then the next layer's), so a seed gives the same weights as before
    bidirectional stacks existed; the first drawn values are pinned too."""
    D, H, L = 3, 4, 2
    layer = make(cell, D, H, L, bidirectional=bidirectional, seed=123, dtype=np.float64)
    k = 1 / np.sqrt(H)
    rng = np.random.default_rng(123)
    for name, p in layer.state_dict().items():
        np.testing.assert_array_equal(p, rng.uniform(-k, k, p.shape), err_msg=name)
    np.testing.assert_array_equal(
        layer.parameters()["weight_ih_l0"][0, :2], [0.18235186324814345, -0.4461789811977773]
    )
    f32 = make(cell, D, H, L, bidirectional=bidirectional, seed=123)
    for name, p in f32.parameters().items():
        assert p.dtype == np.float32
        assert rel_err(p, layer.parameters()[name]) <= EPS32
    if not bidirectional:
        default = make(cell, D, H, L, seed=123, dtype=np.float64)
        for name, p in default.parameters().items():
            np.testing.assert_array_equal(p, layer.parameters()[name])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_torch_bidirectional_state_dict_round_trip(torch, cell, bias):
    """A torch bidirectional module's state_dict loads as is (same keys in the same order),
    and ours loads into torch (strict) and comes back bit for bit."""
    D, H, L = 3, 4, 2
    torch.manual_seed(3)
    net = make_torch(torch, cell, D, H, L, True, bias=bias)
    layer = make(cell, D, H, L, bidirectional=True, bias=bias, dtype=np.float64, seed=9)
    theirs = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    assert list(layer.state_dict()) == list(theirs)
    ours = layer.state_dict()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in ours.items()})  # strict
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ours[k])
    layer.load_state_dict(theirs)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, theirs[k])


def test_repr_shows_bidirectional():
    assert repr(LSTM(3, 4, 2, bidirectional=True)) == "LSTM(3, 4, num_layers=2, bidirectional=True)"
    assert repr(GRU(3, 4, bidirectional=False)) == "GRU(3, 4)"


# --- bad input (checked before any kernel runs) ------------------------------------------------

BAD_LENGTHS = [
    # (lengths for T = 5, B = 6, exception, message)
    (np.full(7, 5), ValueError, r"lengths must have shape \(B,\) = \(6,\), got shape \(7,\)"),
    (
        np.full((6, 1), 5),
        ValueError,
        r"lengths must have shape \(B,\) = \(6,\), got shape \(6, 1\)",
    ),
    (np.int64(5), ValueError, r"lengths must have shape \(B,\) = \(6,\), got shape \(\)"),
    (
        np.full(6, 5.0),
        TypeError,
        r"lengths must be an integer array of shape \(6,\), got dtype float64",
    ),
    ([5, 5, 5, 5, 5, 5.0], TypeError, r"lengths must be an integer array .* got dtype float64"),
    (
        np.ones(6, bool),
        TypeError,
        r"lengths must be an integer array of shape \(6,\), got dtype bool",
    ),
    (
        np.array([5, 5, -1, 5, 5, 5]),
        ValueError,
        r"lengths must have values in \[0, T\] = \[0, 5\], got lengths\[2\] = -1",
    ),
    (
        [5, 5, 5, 5, 5, 6],
        ValueError,
        r"lengths must have values in \[0, T\] = \[0, 5\], got lengths\[5\] = 6",
    ),
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths,exc,pattern", BAD_LENGTHS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bad_lengths_rejected(cell, lengths, exc, pattern, bidirectional):
    layer = make(cell, 3, 4, 2, bidirectional=bidirectional, dtype=np.float64)
    where = type(layer).__name__
    with pytest.raises(exc, match=rf"^{where}\.forward: {pattern}"):
        layer.forward(np.zeros((5, 6, 3)), lengths=lengths)
    with pytest.raises(exc, match=rf"^{where}\.forward: {pattern}"):  # token ids too
        layer.forward(np.zeros((5, 6), np.int64), lengths=lengths)


def test_bad_bidirectional_and_layer_options_rejected():
    for value, got in ((1, "int"), ("yes", "str"), (None, "NoneType")):
        with pytest.raises(TypeError, match=rf"^LSTM: bidirectional must be a bool, got {got}$"):
            LSTM(3, 4, bidirectional=value)
    assert RNN(3, 4, bidirectional=np.bool_(True)).bidirectional is True
    bi = GRU(3, 4, 2, bidirectional=True, dtype=np.float64)
    with pytest.raises(
        ValueError, match=r"^GRU.forward: input_weight is supported by unidirectional stacks only"
    ):
        bi.forward(np.zeros((5, 2), np.int64), input_weight=np.zeros((12, 7)))
    with pytest.raises(
        ValueError,
        match=r"^GRU.forward: state must have shape \(2L, B, H\) = \(4, 2, 4\) "
        r"\(num_layers \* 2 directions, batch, hidden_size\), got shape \(2, 2, 4\)$",
    ):
        bi.forward(np.zeros((5, 2, 3)), np.zeros((2, 2, 4)))
    lstm = LSTM(3, 4, 2, bidirectional=True, dtype=np.float64)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\) of arrays of shape \(2L"):
        lstm.forward(np.zeros((5, 2, 3)), np.zeros((4, 2, 4)))
    with pytest.raises(
        ValueError, match=r"^GRU.layer_weights: reverse=True needs a bidirectional stack$"
    ):
        GRU(3, 4).layer_weights(0, reverse=True)
    with pytest.raises(TypeError, match=r"^GRU.layer_weights: reverse must be a bool, got int$"):
        bi.layer_weights(0, reverse=1)


def test_backward_checks_dy_of_a_bidirectional_stack():
    need_kernels("lstm")
    layer = LSTM(3, 4, 2, bidirectional=True, dtype=np.float64)
    layer.forward(np.zeros((5, 2, 3)), lengths=np.array([5, 3]))
    with pytest.raises(
        ValueError,
        match=r"^LSTM.backward: dy must have shape \(T, B, 2H\) = \(5, 2, 8\) \(from the "
        r"forward\), got shape \(5, 2, 4\)$",
    ):
        layer.backward(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match=r"dstate\[1\] \(c\) must have shape \(2L, B, H\)"):
        layer.backward(None, (None, np.zeros((2, 2, 4))))
