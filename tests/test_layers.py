"""The RNN / LSTM / GRU stacks: PyTorch parity, gradients, dropout, states, parameters, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from conftest import EPS32, rel_err, torch_or_skip
from gradcheck import central_difference
from rnncore import GRU, LSTM, RNN

EPS64 = float(np.finfo(np.float64).eps)

# Every cell configuration; torch has all but the GRU with the reset gate before the matmul.
CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru", "gru-reset-before"]
TORCH_CELLS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def make(cell, D, H, L=1, **kwargs):
    """Our layer for a cell name of CELLS."""
    if cell.startswith("rnn-"):
        return RNN(D, H, L, nonlinearity=cell[4:], **kwargs)
    if cell == "lstm":
        return LSTM(D, H, L, **kwargs)
    return GRU(D, H, L, reset_after=cell == "gru", **kwargs)


def make_torch(torch, cell, D, H, L, dtype, **kwargs):
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    if cell.startswith("rnn-"):
        return torch.nn.RNN(D, H, L, nonlinearity=cell[4:], dtype=tdt, **kwargs)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H, L, dtype=tdt, **kwargs)


def n_states(cell):
    return 2 if cell == "lstm" else 1


def parts(state):
    """A state (or its gradient) as a list of (L, B, H) arrays: [h], or [h, c] for the LSTM."""
    return list(state) if isinstance(state, tuple) else [state]


def pack(cell, arrays):
    return tuple(arrays) if cell == "lstm" else arrays[0]


def random_state(rng, cell, L, B, H, dtype, scale=0.5):
    return pack(cell, [rng.standard_normal((L, B, H)).astype(dtype) * scale] * n_states(cell))


def loss_of(y, state, dy, dstate):
    """The scalar whose gradient is (dy, dstate): sum(y·dy) + sum over state parts of s·ds."""
    total = float(np.sum(y * dy))
    for s, ds in zip(parts(state), parts(dstate), strict=True):
        total += float(np.sum(s * ds))
    return total


def fixture(rng, cell, T, B, D, H, L, dtype=np.float64):
    """x, an initial state, and upstream gradients dy, dstate for a (T, B, D) -> (L, B, H) stack."""
    x = rng.standard_normal((T, B, D)).astype(dtype)
    s0 = pack(cell, [rng.standard_normal((L, B, H)).astype(dtype) * 0.5 for _ in parts_n(cell)])
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    ds = pack(cell, [rng.standard_normal((L, B, H)).astype(dtype) for _ in parts_n(cell)])
    return x, s0, dy, ds


def parts_n(cell):
    return range(n_states(cell))


# --- PyTorch parity ------------------------------------------------------------------------


@pytest.fixture
def torch():
    """torch (or skip), at one thread for the test: on the 2-core CI machine torch's default of
    2 threads took 0.2-0.4 s per call of these tiny LSTMs (1 ms at one thread)."""
    torch = torch_or_skip()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def torch_run(torch, net, cell, x, s0, dy, ds):
    """torch's y, final state, dx, dstate0 and parameter gradients for the loss of loss_of."""
    tx = torch.tensor(x, requires_grad=True)
    ts0 = [torch.tensor(s, requires_grad=True) for s in parts(s0)]
    ty, tsn = net(tx, pack(cell, ts0))
    loss = (ty * torch.from_numpy(dy)).sum()
    for s, d in zip(parts(tsn), parts(ds), strict=True):
        loss = loss + (s * torch.from_numpy(d)).sum()
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    return (
        ty.detach().numpy(),
        [s.detach().numpy() for s in parts(tsn)],
        tx.grad.numpy(),
        [s.grad.numpy() for s in ts0],
        grads,
    )


def compare_with_torch(torch, net, layer, cell, x, s0, dy, ds, tol):
    ty, tsn, tdx, tds0, tgrads = torch_run(torch, net, cell, x, s0, dy, ds)
    y, sn = layer.forward(x, s0)
    dx, ds0 = layer.backward(dy, ds)
    assert rel_err(y, ty) <= tol, f"y: {rel_err(y, ty):.3g}"
    for i, (a, b) in enumerate(zip(parts(sn), tsn, strict=True)):
        assert rel_err(a, b) <= tol, f"state[{i}]: {rel_err(a, b):.3g}"
    assert rel_err(dx, tdx) <= tol, f"dx: {rel_err(dx, tdx):.3g}"
    for i, (a, b) in enumerate(zip(parts(ds0), tds0, strict=True)):
        assert rel_err(a, b) <= tol, f"dstate[{i}]: {rel_err(a, b):.3g}"
    assert set(layer.grads) == set(tgrads)
    for name, g in tgrads.items():
        assert rel_err(layer.grads[name], g) <= tol, f"{name}: {rel_err(layer.grads[name], g):.3g}"
        assert layer.grads[name].dtype == x.dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_pytorch_parity(torch, rng, cell, num_layers, dtype):
    """Outputs, final states, dx, dstate and every parameter gradient against torch.nn.

    The weights are torch's own initialisation, loaded through load_state_dict. float64:
    both sides compute the same sums in different orders, a few ulps apart (1e-10 leaves
    room). float32: the per-layer bound of test_rnn (4·u·(D + H + T), u = 2^-24, for one side
    against the exact answer) times 2 sides times L layers (a layer's error reaches the next
    through its input, and the contractive weights do not amplify it). Observed: <= 6 ulps.
    """
    T, B, D, H, L = 7, 3, 5, 6, num_layers
    torch.manual_seed(1234)
    net = make_torch(torch, cell, D, H, L, dtype)
    layer = make(cell, D, H, L, dtype=dtype)
    layer.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L, dtype)
    tol = 1e-10 if dtype == np.float64 else 2 * L * 4 * (D + H + T) * EPS32 / 2
    compare_with_torch(torch, net, layer, cell, x, s0, dy, ds, tol)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_pytorch_parity_without_bias_and_batch_one(torch, rng, cell):
    T, B, D, H, L = 5, 1, 4, 3, 2
    torch.manual_seed(99)
    net = make_torch(torch, cell, D, H, L, np.float64, bias=False)
    layer = make(cell, D, H, L, bias=False, dtype=np.float64)
    assert set(layer.parameters()) == {f"weight_{k}_l{i}" for k in ("ih", "hh") for i in (0, 1)}
    layer.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L)
    compare_with_torch(torch, net, layer, cell, x, s0, dy, ds, 1e-10)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_our_state_dict_loads_into_torch(torch, rng, cell):
    T, B, D, H, L = 6, 2, 4, 5, 2
    layer = make(cell, D, H, L, dtype=np.float64, seed=7)
    net = make_torch(torch, cell, D, H, L, np.float64)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), layer.parameters()[k])
    x, s0, _, _ = fixture(rng, cell, T, B, D, H, L)
    y, sn = layer.forward(x, s0, training=False)
    ty, tsn = net(torch.from_numpy(x), pack(cell, [torch.from_numpy(s) for s in parts(s0)]))
    assert rel_err(y, ty.detach().numpy()) <= 1e-12
    for a, b in zip(parts(sn), parts(tsn), strict=True):
        assert rel_err(a, b.detach().numpy()) <= 1e-12


# --- gradients by central differences ------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences(rng, cell):
    """float64, 2 layers, dropout off: every entry of x and of the initial state, and all of
    weight_hh_l0, weight_ih_l1 and bias_hh_l1 (paths through the recurrence, the layer boundary
    and a bias). With h = 1e-6 the truncation error is O(h²) ~ 1e-12 and the rounding error
    ~ eps·|loss|/h ~ 1e-9, both far below 1e-6. (For relu, a pre-activation within h of the
    kink would break this; with this seed none is.)
    """
    T, B, D, H, L = 4, 2, 3, 4, 2
    layer = make(cell, D, H, L, dtype=np.float64, seed=3)
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L)
    layer.zero_grad()
    layer.forward(x, s0)
    dx, ds0 = layer.backward(dy, ds)

    def loss():
        y, sn = layer.forward(x, s0, training=False)
        return loss_of(y, sn, dy, ds)

    idx = list(np.ndindex(x.shape))
    assert rel_err(central_difference(loss, x, idx), dx[tuple(np.array(idx).T)]) <= 1e-6
    for s, g in zip(parts(s0), parts(ds0), strict=True):
        idx = list(np.ndindex(s.shape))
        assert rel_err(central_difference(loss, s, idx), g[tuple(np.array(idx).T)]) <= 1e-6
    params = layer.parameters()
    for name in ("weight_hh_l0", "weight_ih_l1", "bias_hh_l1"):
        idx = list(np.ndindex(params[name].shape))
        numeric = central_difference(loss, params[name], idx)
        analytic = layer.grads[name][tuple(np.array(idx).T)]
        assert rel_err(numeric, analytic) <= 1e-6, name


def test_state_none_is_the_zero_state_and_still_gets_a_gradient(rng):
    for cell in CELLS:
        layer = make(cell, 3, 4, 2, dtype=np.float64, seed=0)
        x, _, dy, ds = fixture(rng, cell, 5, 2, 3, 4, 2)
        zeros = pack(cell, [np.zeros((2, 2, 4))] * n_states(cell))
        y, _ = layer.forward(x, None)
        _, d_none = layer.backward(dy, ds)
        y0, _ = layer.forward(x, zeros)
        _, d_zero = layer.backward(dy, ds)
        np.testing.assert_array_equal(y, y0)
        for a, b in zip(parts(d_none), parts(d_zero), strict=True):
            assert a.shape == (2, 2, 4)
            np.testing.assert_array_equal(a, b)
        assert np.abs(parts(d_none)[0]).max() > 0


# --- dropout -------------------------------------------------------------------------------


def dropout_probe(p, T=50, B=8, H=32, seed=0):
    """A 2-layer relu RNN whose second layer is the identity, so that its output shows the
    dropout applied to the first layer's output exactly.

    Layer 0 has non-negative weights and x > 0, so its outputs y0 are > 0. Layer 1 has
    W_ih = I and W_hh = 0, biases 0: relu(I·(m⊙y0)) = m⊙y0, computed exactly (products by 1
    and 0, sums with +0). So a training forward returns m⊙y0 and an inference one y0.
    """
    r = np.random.default_rng(seed)
    layer = RNN(H, H, 2, nonlinearity="relu", dropout=p, dtype=np.float64, seed=seed)
    k = 1 / np.sqrt(H)
    layer.load_state_dict(
        {
            "weight_ih_l0": r.uniform(0, k, (H, H)),
            "weight_hh_l0": r.uniform(0, k / 2, (H, H)),
            "bias_ih_l0": r.uniform(0, k, H),
            "bias_hh_l0": r.uniform(0, k, H),
            "weight_ih_l1": np.eye(H),
            "weight_hh_l1": np.zeros((H, H)),
            "bias_ih_l1": np.zeros(H),
            "bias_hh_l1": np.zeros(H),
        }
    )
    x = r.uniform(0.5, 1.5, (T, B, H))
    return layer, x


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p):
    """The zeroed count of n = 12800 units is Binomial(n, p): its fraction has standard
    deviation sqrt(p(1-p)/n) <= 0.0045; a bound of 5 standard deviations fails a correct
    implementation with probability < 1e-6 (the seed is fixed, so the test is deterministic)
    and catches keeping with probability p instead of 1-p, or dropping the last layer too
    (fraction 1-(1-p)^2)."""
    layer, x = dropout_probe(p)
    y0, _ = layer.forward(x, training=False)
    assert (y0 > 0).all()
    y, _ = layer.forward(x)
    dropped = y == 0
    sd = np.sqrt(p * (1 - p) / y.size)
    assert abs(dropped.mean() - p) <= 5 * sd, (dropped.mean(), p)
    # Kept units are scaled by 1/(1-p) (the mask holds 1/(1-p) rounded once: 1 ulp each).
    np.testing.assert_allclose(y[~dropped] / y0[~dropped], 1 / (1 - p), rtol=4 * EPS64, atol=0)


def test_backward_applies_the_forward_mask():
    """With the probe, dL/dy0 = dy ⊙ m, where m = y / y0 is the mask the forward used; so the
    stack's dx and layer-0 gradients are those of layer 0 alone given dy ⊙ m."""
    p, H = 0.4, 8
    layer, x = dropout_probe(p, T=6, B=3, H=H)
    y0, _ = layer.forward(x, training=False)
    y, _ = layer.forward(x)
    mask = y / y0  # (T, B, H): 0 or 1/(1-p)
    assert set(np.unique(mask.round(12))) == {0.0, round(1 / (1 - p), 12)}
    dy = np.random.default_rng(5).standard_normal(y.shape)
    dx, _ = layer.backward(dy)

    first = RNN(H, H, 1, nonlinearity="relu", dtype=np.float64)
    first.load_state_dict({k: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
    first.forward(x)
    dx_expected, _ = first.backward(dy * mask)
    assert rel_err(dx, dx_expected) <= 1e-13
    for name, g in first.grads.items():
        assert rel_err(layer.grads[name], g) <= 1e-13, name


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_gradient_with_the_mask_fixed_by_the_seed(rng, cell):
    """A new layer of the same seed draws the same weights and then the same first mask, so
    f(x) = "new layer, load the weights, training forward" has a fixed mask and its central
    differences are the gradient that backward must give with that mask."""
    T, B, D, H, L, seed = 3, 2, 3, 4, 3, 11
    weights = make(cell, D, H, L, dtype=np.float64, seed=0).state_dict()
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L)

    def fresh():
        layer = make(cell, D, H, L, dropout=0.5, dtype=np.float64, seed=seed)
        layer.load_state_dict(weights)
        return layer

    def loss():
        y, sn = fresh().forward(x, s0)
        return loss_of(y, sn, dy, ds)

    layer = fresh()
    y, _ = layer.forward(x, s0)
    dx, _ = layer.backward(dy, ds)
    y_eval, _ = layer.forward(x, s0, training=False)
    assert rel_err(y, y_eval) > 1e-3  # dropout did change the result
    idx = list(np.ndindex(x.shape))
    assert rel_err(central_difference(loss, x, idx), dx[tuple(np.array(idx).T)]) <= 1e-6
    idx = list(np.ndindex(weights["weight_ih_l0"].shape))
    numeric = central_difference(loss, weights["weight_ih_l0"], idx)
    assert rel_err(numeric, layer.grads["weight_ih_l0"][tuple(np.array(idx).T)]) <= 1e-6


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_off_in_inference_and_after_the_last_layer(rng, cell):
    T, B, D, H, L = 5, 3, 4, 6, 3
    layer = make(cell, D, H, L, dropout=0.5, dtype=np.float64, seed=1)
    plain = make(cell, D, H, L, dtype=np.float64)
    plain.load_state_dict(layer.state_dict())
    x, s0, _, _ = fixture(rng, cell, T, B, D, H, L)
    y_eval, s_eval = layer.forward(x, s0, training=False)
    y_plain, s_plain = plain.forward(x, s0)
    np.testing.assert_array_equal(y_eval, y_plain)
    for a, b in zip(parts(s_eval), parts(s_plain), strict=True):
        np.testing.assert_array_equal(a, b)
    # Training: the last layer's outputs are its states, not dropped ones.
    y, sn = layer.forward(x, s0)
    np.testing.assert_array_equal(y[-1], parts(sn)[0][-1])
    if cell != "rnn-relu":  # relu outputs are exactly 0 in places anyway
        assert (y != 0).all()
    # One layer: dropout has nothing to act on.
    single = make(cell, D, H, 1, dropout=0.5, dtype=np.float64, seed=1)
    np.testing.assert_array_equal(single.forward(x)[0], single.forward(x, training=False)[0])


def test_dropout_is_reproducible_with_the_seed(rng):
    T, B, D, H, L = 6, 4, 5, 8, 2
    a = LSTM(D, H, L, dropout=0.3, seed=42)
    b = LSTM(D, H, L, dropout=0.3, seed=42)
    c = LSTM(D, H, L, dropout=0.3, seed=43)
    c.load_state_dict(a.state_dict())  # same weights, other masks
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    ya, yb, yc = a.forward(x)[0], b.forward(x)[0], c.forward(x)[0]
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, yc)
    # A later forward draws new masks, the same ones in both layers of one seed.
    ya2, yb2 = a.forward(x)[0], b.forward(x)[0]
    np.testing.assert_array_equal(ya2, yb2)
    assert not np.array_equal(ya, ya2)


# --- states across chunks (truncated BPTT) -------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_two_chunks_carrying_the_state_equal_one_call(rng, cell):
    """Chunks compute the same steps; the only difference is how the input GEMM over T·B rows
    is split, so results agree to rounding (float64: ~1e-15). Backward through both chunks,
    passing the first chunk the dstate the second returns, is full BPTT over the sequence."""
    T, B, D, H, L, t1 = 9, 3, 4, 5, 2, 4
    whole = make(cell, D, H, L, dtype=np.float64, seed=2)
    first = make(cell, D, H, L, dtype=np.float64)
    second = make(cell, D, H, L, dtype=np.float64)
    first.load_state_dict(whole.state_dict())
    second.load_state_dict(whole.state_dict())
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L)

    y, sn = whole.forward(x, s0)
    dx, ds0 = whole.backward(dy, ds)
    y1, s1 = first.forward(x[:t1], s0)
    y2, s2 = second.forward(x[t1:], s1)
    dx2, ds1 = second.backward(dy[t1:], ds)
    dx1, ds0_chunks = first.backward(dy[:t1], ds1)

    assert rel_err(np.concatenate([y1, y2]), y) <= 1e-13
    for a, b in zip(parts(s2), parts(sn), strict=True):
        assert rel_err(a, b) <= 1e-13
    assert rel_err(np.concatenate([dx1, dx2]), dx) <= 1e-13
    for a, b in zip(parts(ds0_chunks), parts(ds0), strict=True):
        assert rel_err(a, b) <= 1e-13
    for name, g in whole.grads.items():
        assert rel_err(first.grads[name] + second.grads[name], g) <= 1e-13, name


def test_empty_sequence_passes_the_state_through(rng):
    for cell in CELLS:
        layer = make(cell, 3, 4, 2, dtype=np.float64)
        x, s0, _, ds = fixture(rng, cell, 0, 2, 3, 4, 2)
        y, sn = layer.forward(x, s0)
        assert y.shape == (0, 2, 4)
        for a, b in zip(parts(sn), parts(s0), strict=True):
            np.testing.assert_array_equal(a, b)
        dx, ds0 = layer.backward(None, ds)
        assert dx.shape == (0, 2, 3)
        for a, b in zip(parts(ds0), parts(ds), strict=True):
            np.testing.assert_array_equal(a, b)


# --- gradients accumulate ------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate_and_zero_grad_clears_them(rng, cell):
    T, B, D, H, L = 4, 2, 3, 5, 2
    layer = make(cell, D, H, L, dtype=np.float64, seed=4)
    arrays = layer.grads
    assert all(not g.any() for g in arrays.values())  # allocated, zero, at construction
    x, s0, dy, ds = fixture(rng, cell, T, B, D, H, L)
    x2, s02, dy2, ds2 = fixture(rng, cell, T, B, D, H, L)

    layer.forward(x, s0)
    layer.backward(dy, ds)
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.backward(dy, ds)  # the caches stay: the same gradients are added again
    for k, g in layer.grads.items():
        assert rel_err(g, 2 * once[k]) <= 1e-15, k

    layer.zero_grad()
    layer.forward(x2, s02)
    layer.backward(dy2, ds2)
    other = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    layer.forward(x, s0)
    layer.backward(dy, ds)
    layer.forward(x2, s02)
    layer.backward(dy2, ds2)
    for k, g in layer.grads.items():
        assert rel_err(g, once[k] + other[k]) <= 1e-15, k
        assert g is arrays[k]  # updated in place

    layer.zero_grad()
    for k, g in layer.grads.items():
        assert g is arrays[k] and not g.any(), k


# --- parameters, initialisation, state_dict ------------------------------------------------


def test_initialisation_is_pytorchs_and_reproducible():
    D, H, L = 5, 16, 2
    layer = LSTM(D, H, L, seed=123)
    k = 1 / np.sqrt(H)
    shapes = {"weight_ih_l0": (4 * H, D), "weight_ih_l1": (4 * H, H)}  # the others don't vary
    shapes |= {f"weight_hh_l{i}": (4 * H, H) for i in range(L)}
    rng = np.random.default_rng(123)  # the documented order: state_dict order, float64 draws
    for name, p in layer.parameters().items():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, rng.uniform(-k, k, p.shape).astype(np.float32))
        assert np.abs(p).max() <= k
        assert p.shape == shapes.get(name, (4 * H,)), name
    per_layer = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # PyTorch's order
    assert list(layer.parameters()) == [f"{n}_l{i}" for i in range(L) for n in per_layer]
    same = LSTM(D, H, L, seed=123, dtype=np.float64)
    other = LSTM(D, H, L, seed=124)
    for name, p in layer.parameters().items():
        assert rel_err(same.parameters()[name], p) <= EPS32
        assert not np.array_equal(other.parameters()[name], p)


def test_state_dict_round_trip_and_live_parameters(rng):
    a = GRU(3, 4, 2, seed=0, dtype=np.float64)
    b = GRU(3, 4, 2, seed=1, dtype=np.float64)
    x = rng.standard_normal((5, 2, 3))
    live = b.parameters()
    sd = a.state_dict()
    b.load_state_dict(sd)
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    for name, p in b.parameters().items():
        assert p is live[name]  # loaded in place: an optimizer's references stay valid
    # state_dict returns copies; parameters() the live arrays.
    y = a.forward(x)[0]
    for v in sd.values():
        v += 1
    np.testing.assert_array_equal(a.forward(x)[0], y)
    a.parameters()["bias_ih_l1"] += 1
    assert not np.array_equal(a.forward(x)[0], y)
    # Another float dtype is rounded to the layer's; lists are fine too.
    c = GRU(3, 4, 2, dtype=np.float32)
    c.load_state_dict(
        {k: v.tolist() if k.startswith("bias") else v for k, v in b.state_dict().items()}
    )
    for name, p in c.parameters().items():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, b.parameters()[name].astype(np.float32))


def test_load_state_dict_errors_name_the_key():
    layer = LSTM(3, 4, 2)
    good = layer.state_dict()
    before = layer.state_dict()
    missing = {k: v for k, v in good.items() if k != "bias_hh_l1"}
    with pytest.raises(
        ValueError,
        match=r"LSTM.load_state_dict: missing key\(s\) 'bias_hh_l1' \(expected \['weight_ih_l0'",
    ):
        layer.load_state_dict(missing)
    with pytest.raises(
        ValueError, match=r"LSTM.load_state_dict: unexpected key\(s\) 'weight_ih_l2'"
    ):
        layer.load_state_dict({**good, "weight_ih_l2": good["weight_ih_l1"]})
    with pytest.raises(
        ValueError, match=r"missing key\(s\) 'bias_ih_l0'; unexpected key\(s\) 'bias_ih_0'"
    ):
        layer.load_state_dict(
            {("bias_ih_0" if k == "bias_ih_l0" else k): v for k, v in good.items()}
        )
    with pytest.raises(
        ValueError,
        match=r"LSTM.load_state_dict: 'weight_hh_l1' must have shape \(16, 4\), got \(4, 16\)",
    ):
        layer.load_state_dict({**good, "weight_hh_l1": good["weight_hh_l1"].T})
    with pytest.raises(
        TypeError,
        match=r"LSTM.load_state_dict: 'bias_ih_l0' must be a floating-point array, got dtype int64",
    ):
        layer.load_state_dict({**good, "bias_ih_l0": np.zeros(16, np.int64)})
    # A failed load changes nothing, even where the entries before the bad one were valid.
    with pytest.raises(ValueError, match="weight_hh_l1"):
        layer.load_state_dict({**{k: v + 1 for k, v in good.items()}, "weight_hh_l1": np.zeros(3)})
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_repr_is_like_pytorchs():
    assert (
        repr(LSTM(64, 128, num_layers=2, dropout=0.2)) == "LSTM(64, 128, num_layers=2, dropout=0.2)"
    )
    assert repr(RNN(3, 4)) == "RNN(3, 4)"
    assert (
        repr(RNN(3, 4, nonlinearity="relu", bias=False))
        == "RNN(3, 4, nonlinearity='relu', bias=False)"
    )
    assert (
        repr(GRU(3, 4, 3, reset_after=False, dtype=np.float64))
        == "GRU(3, 4, num_layers=3, reset_after=False, dtype=float64)"
    )


# --- bad input -----------------------------------------------------------------------------

BAD_CONSTRUCTOR = [
    # (class, args, kwargs, exception, pattern)
    (LSTM, (0, 4), {}, ValueError, r"LSTM: input_size must be >= 1, got 0"),
    (GRU, (3, -1), {}, ValueError, r"GRU: hidden_size must be >= 1, got -1"),
    (RNN, (3, 4, 0), {}, ValueError, r"RNN: num_layers must be >= 1, got 0"),
    (RNN, (3.0, 4), {}, TypeError, r"RNN: input_size must be an int, got float"),
    (LSTM, (3, True), {}, TypeError, r"LSTM: hidden_size must be an int, got bool"),
    (LSTM, (3, 4), {"dropout": 1.0}, ValueError, r"LSTM: dropout must be in \[0, 1\), got 1.0"),
    (LSTM, (3, 4), {"dropout": -0.1}, ValueError, r"LSTM: dropout must be in \[0, 1\), got -0.1"),
    (LSTM, (3, 4), {"dropout": float("nan")}, ValueError, r"dropout must be in \[0, 1\), got nan"),
    (LSTM, (3, 4), {"dropout": "0.5"}, TypeError, r"LSTM: dropout must be a float, got str"),
    (
        RNN,
        (3, 4),
        {"nonlinearity": "sigmoid"},
        ValueError,
        r"RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'",
    ),
    (GRU, (3, 4), {"reset_after": "no"}, TypeError, r"GRU: reset_after must be a bool, got str"),
    (GRU, (3, 4), {"bias": 1}, TypeError, r"GRU: bias must be a bool, got int"),
    (
        RNN,
        (3, 4),
        {"dtype": np.int32},
        TypeError,
        r"RNN: dtype must be float32 or float64, got int32",
    ),
    (
        RNN,
        (3, 4),
        {"dtype": np.float16},
        TypeError,
        r"RNN: dtype must be float32 or float64, got float16",
    ),
    (
        RNN,
        (3, 4),
        {"dtype": "nonsense"},
        TypeError,
        r"RNN: dtype must be float32 or float64, got 'nonsense'",
    ),
]


@pytest.mark.parametrize("cls,args,kwargs,exc,pattern", BAD_CONSTRUCTOR)
def test_constructor_rejects_bad_arguments(cls, args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(*args, **kwargs)


BAD_FORWARD = [
    # (cell, x, state, exception, pattern) for a layer (D=3, H=4, L=2), B = 2
    (
        "gru",
        np.zeros((5, 3)),
        None,
        ValueError,
        r"GRU.forward: x must have shape \(T, B, D\) with D = input_size = 3, got shape \(5, 3\)",
    ),
    (
        "lstm",
        np.zeros((5, 2, 4)),
        None,
        ValueError,
        r"LSTM.forward: x must have shape \(T, B, D\) with D = input_size = 3, got shape \(5, 2, 4\)",
    ),
    (
        "lstm",
        np.zeros((5, 2, 3), np.float32),
        None,
        TypeError,
        r"LSTM.forward: x must have dtype float64 \(the layer's dtype\), got float32",
    ),
    (
        "rnn-tanh",
        np.zeros((5, 2, 3), np.int64),
        None,
        TypeError,
        r"RNN.forward: x must have dtype float64 \(the layer's dtype\), or be a \(T, B\) "
        r"integer array of token ids; got int64 of shape \(5, 2, 3\)",
    ),
    (
        "rnn-tanh",
        None,
        None,
        TypeError,
        r"RNN.forward: x must be a float64 array of shape \(T, B, D\), got NoneType",
    ),
    (
        "gru",
        "abc",
        None,
        TypeError,
        r"GRU.forward: x must be a float64 array of shape \(T, B, D\), got str",
    ),
    (
        "rnn-relu",
        np.zeros((5, 2, 3)),
        np.zeros((1, 2, 4)),
        ValueError,
        r"RNN.forward: state must have shape \(L, B, H\) = \(2, 2, 4\) \(num_layers, batch, hidden_size\), got shape \(1, 2, 4\)",
    ),
    (
        "gru",
        np.zeros((5, 2, 3)),
        np.zeros((2, 3, 4)),
        ValueError,
        r"GRU.forward: state must have shape \(L, B, H\) = \(2, 2, 4\)",
    ),
    (
        "gru",
        np.zeros((5, 2, 3)),
        np.zeros((2, 2, 4), np.float32),
        TypeError,
        r"GRU.forward: state must have dtype float64 \(the layer's dtype\), got float32",
    ),
    (
        "lstm",
        np.zeros((5, 2, 3)),
        np.zeros((2, 2, 4)),
        TypeError,
        r"LSTM.forward: state must be a tuple \(h, c\) of arrays of shape \(L, B, H\), or None, got ndarray",
    ),
    (
        "lstm",
        np.zeros((5, 2, 3)),
        (np.zeros((2, 2, 4)),),
        TypeError,
        r"LSTM.forward: state must be a tuple \(h, c\) .*got tuple of length 1",
    ),
    (
        "lstm",
        np.zeros((5, 2, 3)),
        (np.zeros((2, 2, 4)), np.zeros((2, 2, 5))),
        ValueError,
        r"LSTM.forward: state\[1\] \(c\) must have shape \(L, B, H\) = \(2, 2, 4\)",
    ),
]


@pytest.mark.parametrize("cell,x,state,exc,pattern", BAD_FORWARD)
def test_forward_rejects_bad_input(cell, x, state, exc, pattern):
    layer = make(cell, 3, 4, 2, dtype=np.float64)
    with pytest.raises(exc, match=pattern):
        layer.forward(x, state)


def test_forward_accepts_lists_and_partial_lstm_state(rng):
    layer = LSTM(2, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 2))
    h = rng.standard_normal((1, 2, 3))
    y, (_, c_n) = layer.forward(x.tolist(), (h, None))
    assert c_n.shape == (1, 2, 3)
    y2, _ = layer.forward(x, (h, np.zeros_like(h)))
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(TypeError, match=r"LSTM.forward: training must be a bool, got str"):
        layer.forward(x, training="yes")


def test_backward_rejects_bad_use():
    layer = LSTM(3, 4, 2, dtype=np.float64)
    x = np.zeros((5, 2, 3))
    msg = r"LSTM.backward: nothing to backpropagate through: call forward\(x, training=True\) first"
    with pytest.raises(RuntimeError, match=msg):
        layer.backward(np.zeros((5, 2, 4)))
    layer.forward(x)
    layer.forward(x, training=False)  # drops the caches of the training forward
    with pytest.raises(RuntimeError, match=msg):
        layer.backward(np.zeros((5, 2, 4)))
    layer.forward(x)
    with pytest.raises(
        ValueError,
        match=r"LSTM.backward: dy must have shape \(T, B, H\) = \(5, 2, 4\) \(from the forward\), got shape \(5, 2, 3\)",
    ):
        layer.backward(np.zeros((5, 2, 3)))
    with pytest.raises(
        TypeError,
        match=r"LSTM.backward: dy must have dtype float64 \(the layer's dtype\), got float32",
    ):
        layer.backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(
        ValueError,
        match=r"LSTM.backward: dstate\[0\] \(h\) must have shape \(L, B, H\) = \(2, 2, 4\)",
    ):
        layer.backward(None, (np.zeros((1, 2, 4)), None))
    assert all(not g.any() for g in layer.grads.values())  # no half-done backward added anything


def test_exports():
    assert rnncore.RNN is RNN and rnncore.LSTM is LSTM and rnncore.GRU is GRU
    assert {"RNN", "LSTM", "GRU"} <= set(rnncore.__all__)


# --- the public seams a model and the sampler use ----------------------------------------------


def test_generator_options_cell_and_layer_weights():
    a, b = LSTM(3, 4, 2, seed=7), LSTM(3, 4, 2, seed=7)
    assert isinstance(a.generator, np.random.Generator)
    assert np.array_equal(a.generator.random(3), b.generator.random(3))  # one seed, one stream
    with pytest.raises(AttributeError):
        a.generator = np.random.default_rng()  # read-only
    assert (RNN.cell, LSTM.cell, GRU.cell) == ("rnn", "lstm", "gru")
    assert RNN(3, 4, nonlinearity="relu").options == {"nonlinearity": "relu"}
    assert GRU(3, 4, reset_after=False).options == {"reset_after": False}
    assert LSTM(3, 4).options == {}
    w_ih, w_hh, b_ih, b_hh = a.layer_weights(1)
    p = a.parameters()
    assert w_ih is p["weight_ih_l1"] and w_hh is p["weight_hh_l1"] and b_hh is p["bias_hh_l1"]
    assert b_ih is p["bias_ih_l1"] and w_ih.shape == (16, 4)
    assert RNN(3, 4, bias=False).layer_weights(0)[2:] == (None, None)
    with pytest.raises(IndexError, match=r"LSTM.layer_weights: layer must be in \[0, 2\), got 2"):
        a.layer_weights(2)


def test_use_buffers_computes_with_the_owner_arrays():
    layer = GRU(3, 4, seed=0)
    params = {k: v.copy() for k, v in layer.parameters().items()}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    layer.use_buffers(params, grads)
    assert layer.parameters()["weight_hh_l0"] is params["weight_hh_l0"]
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer.forward(x)
    layer.backward(np.ones_like(y))
    assert grads["weight_hh_l0"].any() and layer.grads["weight_hh_l0"] is grads["weight_hh_l0"]
    with pytest.raises(ValueError, match=r"GRU.use_buffers: grads must have keys"):
        layer.use_buffers(params, {})


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_input_weight_replaces_weight_ih_l0_and_returns_its_gradient(cls):
    """forward(input_weight=W) equals a layer whose weight_ih_l0 is W; backward leaves W's
    gradient in input_weight_grad and adds nothing into grads['weight_ih_l0']."""
    rng = np.random.default_rng(2)
    folded, plain = cls(3, 4, 2, seed=0, dtype=np.float64), cls(5, 4, 2, seed=0, dtype=np.float64)
    sd = plain.state_dict()
    w = sd["weight_ih_l0"]  # (G*H, 5): the input weight over 5 one-hot inputs
    sd["weight_ih_l0"] = folded.state_dict()["weight_ih_l0"]
    folded.load_state_dict(sd)
    for name, v in sd.items():
        if name != "weight_ih_l0":
            plain.parameters()[name][...] = v
    ids = rng.integers(0, 5, (6, 2))
    y1, s1 = folded.forward(ids, input_weight=w)
    y2, s2 = plain.forward(ids)
    assert np.array_equal(y1, y2)
    for a, b in zip(s1 if cls is LSTM else [s1], s2 if cls is LSTM else [s2], strict=True):
        assert np.array_equal(a, b)
    assert folded.input_weight_grad is None
    dy = rng.standard_normal(y1.shape)
    folded.backward(dy)
    plain.backward(dy)
    assert np.array_equal(folded.input_weight_grad, plain.grads["weight_ih_l0"])
    assert not folded.grads["weight_ih_l0"].any()
    for name in sd:
        if name != "weight_ih_l0":
            assert np.array_equal(folded.grads[name], plain.grads[name]), name
    folded.forward(ids % 3)  # a forward without input_weight drops the old gradient
    assert folded.input_weight_grad is None
