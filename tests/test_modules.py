"""rnncore.Linear and rnncore.Embedding (rnncore.modules), and ParamGroup.of with save_params /
load_params: against NumPy in float64, against torch.nn.Linear / nn.Embedding when torch is
importable, central differences, the parameter protocol, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from conftest import rel_err
from gradcheck import central_difference
from rnncore.optim import Adam, clip_grad_norm, grad_norm


def test_linear_matches_numpy_and_keeps_leading_dims(rng):
    lin = rnncore.Linear(5, 3, dtype=np.float64, seed=1)
    x = rng.standard_normal((4, 2, 5))
    y = lin.forward(x)
    assert y.shape == (4, 2, 3) and y.dtype == np.float64
    # Both sides are dot products of 5 terms in float64: a few ulp.
    assert rel_err(y, x @ lin.weight.T + lin.bias) <= 1e-14
    dy = rng.standard_normal((4, 2, 3))
    dx = lin.backward(dy)
    assert rel_err(dx, dy @ lin.weight) <= 1e-14
    assert rel_err(lin.grads["weight"], np.einsum("tbo,tbi->oi", dy, x)) <= 1e-14
    assert rel_err(lin.grads["bias"], dy.sum((0, 1))) <= 1e-14
    lin.backward(dy)  # accumulates
    assert rel_err(lin.grads["bias"], 2 * dy.sum((0, 1))) <= 1e-14
    lin.zero_grad()
    assert not lin.grads["weight"].any() and not lin.grads["bias"].any()
    # A 1-D input (no leading dims) and no bias.
    nb = rnncore.Linear(5, 3, bias=False, dtype=np.float64, seed=1)
    assert list(nb.parameters()) == ["weight"] and nb.bias is None
    assert rel_err(nb.forward(x[0, 0]), lin.weight @ x[0, 0]) <= 1e-14


def test_linear_init_is_seeded_and_in_torchs_range():
    a, b = rnncore.Linear(16, 8, seed=3), rnncore.Linear(16, 8, seed=3)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert a.weight.shape == (8, 16) and a.bias.shape == (8,) and a.weight.dtype == np.float32
    assert np.abs(a.weight).max() <= 0.25 and np.abs(a.bias).max() <= 0.25
    assert not np.array_equal(a.weight, rnncore.Linear(16, 8, seed=4).weight)


def test_linear_gradients_match_central_differences(rng):
    lin = rnncore.Linear(4, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 3, 4))
    c = rng.standard_normal((2, 3, 3))  # loss = sum(c * y)

    def loss() -> float:
        return float((c * lin.forward(x)).sum())

    lin.forward(x)
    dx = lin.backward(c)
    assert rel_err(dx, central_difference(loss, x)) <= 1e-6
    for name, p in lin.parameters().items():
        assert rel_err(lin.grads[name], central_difference(loss, p)) <= 1e-6


def test_embedding_gathers_and_scatter_adds_repeated_ids(rng):
    emb = rnncore.Embedding(6, 3, dtype=np.float64, seed=2)
    ids = np.array([[1, 4], [1, 5], [0, 1]])
    y = emb.forward(ids)
    assert y.shape == (3, 2, 3) and np.array_equal(y, emb.weight[ids])
    dy = rng.standard_normal((3, 2, 3))
    assert emb.backward(dy) is None
    want = np.zeros((6, 3))
    for (t, b), i in np.ndenumerate(ids):
        want[i] += dy[t, b]
    assert rel_err(emb.grads["weight"], want) <= 1e-15
    assert not emb.grads["weight"][[2, 3]].any()
    # Central differences of sum(c * y) with respect to the table.
    c = dy

    def loss() -> float:
        return float((c * emb.forward(ids)).sum())

    assert rel_err(emb.grads["weight"], central_difference(loss, emb.weight)) <= 1e-6


def test_embedding_init_and_scalar_ids():
    emb = rnncore.Embedding(1000, 8, seed=0)
    w = emb.weight.astype(np.float64)
    # N(0, 1) over 8000 draws: the sample mean is within 4 sigma (4 / sqrt(8000) = 0.045) and
    # the sample std within 0.05 of 1.
    assert abs(w.mean()) < 0.045 and abs(w.std() - 1) < 0.05
    assert emb.forward(np.int64(7)).shape == (8,)


def test_state_dict_round_trip_and_bad_dicts():
    lin = rnncore.Linear(3, 2, seed=0)
    other = rnncore.Linear(3, 2, seed=1)
    other.load_state_dict(lin.state_dict())
    assert all(np.array_equal(v, lin.state_dict()[k]) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match=r"Linear.load_state_dict: missing key\(s\) 'bias'"):
        other.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"'weight' must have shape \(2, 3\), got \(3, 2\)"):
        other.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    emb = rnncore.Embedding(4, 2, seed=0)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) 'bias'"):
        emb.load_state_dict({"weight": np.zeros((4, 2)), "bias": np.zeros(2)})


def test_bad_input_messages():
    lin = rnncore.Linear(3, 2)
    with pytest.raises(TypeError, match=r"Linear.forward: x must have dtype float32 .*got float64"):
        lin.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(2, 4\)"):
        lin.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="call forward first"):
        rnncore.Linear(3, 2).backward(np.zeros((1, 2), np.float32))
    lin.forward(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 2\) \(y's\), got \(5, 3\)"):
        lin.backward(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="Linear: in_features must be >= 1, got 0"):
        rnncore.Linear(0, 2)
    with pytest.raises(TypeError, match="Linear: dtype must be float32 or float64, got 'int32'"):
        rnncore.Linear(2, 2, dtype="int32")
    with pytest.raises(TypeError, match="Linear: bias must be a bool, got int"):
        rnncore.Linear(2, 2, bias=1)
    emb = rnncore.Embedding(4, 2)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\), got -1 at flat position 2"):
        emb.forward(np.array([0, 3, -1]))
    with pytest.raises(TypeError, match="ids must be an integer array, got dtype float64"):
        emb.forward(np.zeros(3))
    with pytest.raises(ValueError, match=r"use_buffers: params\['weight'\] must be C-contiguous"):
        emb.use_buffers({"weight": np.zeros((2, 4), np.float32)}, emb.grads)


def test_matches_torch_modules(rng):
    torch = pytest.importorskip("torch")
    lin, emb = rnncore.Linear(6, 4, dtype=np.float64, seed=0), rnncore.Embedding(9, 6, seed=0)
    tlin = torch.nn.Linear(6, 4, dtype=torch.float64)
    temb = torch.nn.Embedding(9, 6)
    tlin.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    temb.load_state_dict({k: torch.from_numpy(v) for k, v in emb.state_dict().items()})
    ids = rng.integers(0, 9, (5, 3))
    e = emb.forward(ids)
    te = temb(torch.from_numpy(ids))
    assert np.array_equal(e, te.detach().numpy())
    x = rng.standard_normal((5, 3, 6))
    tx = torch.from_numpy(x).requires_grad_()
    dy = rng.standard_normal((5, 3, 4))
    ty = tlin(tx)
    ty.backward(torch.from_numpy(dy))
    # float64 products of 6 terms, summed in different orders: a few ulp.
    assert rel_err(lin.forward(x), ty.detach().numpy()) <= 1e-14
    assert rel_err(lin.backward(dy), tx.grad.numpy()) <= 1e-14
    for name, p in tlin.named_parameters():
        assert rel_err(lin.grads[name], p.grad.numpy()) <= 1e-14
    de = rng.standard_normal((5, 3, 6)).astype(np.float32)
    te.backward(torch.from_numpy(de))
    emb.backward(de)
    # float32 sums of at most 15 rows: the order of the adds may differ (a few ulp).
    assert rel_err(emb.grads["weight"], temb.weight.grad.numpy()) <= 1e-6


def _model(dtype=np.float64):
    return {
        "emb": rnncore.Embedding(7, 4, dtype=dtype, seed=0),
        "enc": rnncore.GRU(4, 5, dtype=dtype, seed=1),
        "head": rnncore.Linear(5, 7, dtype=dtype, seed=2),
    }


def _loss_and_backward(m, ids, targets, grad=True):
    y, _ = m["enc"].forward(m["emb"].forward(ids))
    logits = m["head"].forward(y)
    T, B = ids.shape
    loss, dz = rnncore.softmax_cross_entropy(logits.reshape(T * B, -1), targets, grad=grad)
    if grad:
        dy = m["head"].backward(dz.reshape(T, B, -1))
        dx, _ = m["enc"].backward(dy)
        m["emb"].backward(dx)
    return loss


def test_param_group_of_trains_several_modules_with_one_optimizer(rng, tmp_path):
    m = _model()
    before = {k: v.copy() for k, v in m["enc"].parameters().items()}
    group = rnncore.ParamGroup.of(m)
    assert group.names[0] == "emb.weight" and "enc.weight_ih_l0" in group.names
    assert group.names[-2:] == ("head.weight", "head.bias")
    assert all(np.array_equal(group.params[f"enc.{k}"], v) for k, v in before.items())
    # The modules compute with the group's views: a change to the flat buffer reaches them.
    assert np.shares_memory(m["head"].weight, group.data)
    assert np.shares_memory(m["enc"].grads["weight_hh_l0"], group.grad)
    ids, targets = rng.integers(0, 7, (6, 3)), rng.integers(0, 7, 18)
    opt = Adam(group, lr=0.05)
    first = None
    for _ in range(30):
        group.zero_grad()
        loss = _loss_and_backward(m, ids, targets)
        first = loss if first is None else first
        norm = clip_grad_norm(group, 1.0)  # through the group: every module's gradient
        assert grad_norm(group) <= min(norm, 1.0) * (1 + 1e-9)
        opt.step()
    # 30 Adam steps on 18 fixed targets over 7 classes: memorisation, far below the start.
    assert _loss_and_backward(m, ids, targets, grad=False) < 0.5 * first
    path = tmp_path / "model.npz"
    assert rnncore.save_params(path, group) == path
    fresh = _model()
    g2 = rnncore.ParamGroup.of(fresh)
    rnncore.load_params(path, g2)
    assert np.array_equal(g2.data, group.data)
    got = _loss_and_backward(fresh, ids, targets, grad=False)
    assert got == _loss_and_backward(m, ids, targets, grad=False)
    with np.load(path) as z:
        assert sorted(z.files) == sorted(group.names)


def test_param_group_gradients_are_the_modules_own(rng):
    m = _model()
    ids, targets = rng.integers(0, 7, (4, 2)), rng.integers(0, 7, 8)
    group = rnncore.ParamGroup.of(m)
    group.zero_grad()
    _loss_and_backward(m, ids, targets)
    p = group.params["emb.weight"]
    num = central_difference(lambda: _loss_and_backward(m, ids, targets, grad=False), p)
    assert rel_err(group.grads["emb.weight"], num) <= 1e-6
    idx = [(0, 1), (3, 4), (6, 0)]
    w = group.params["head.weight"]
    num = central_difference(lambda: _loss_and_backward(m, ids, targets, grad=False), w, idx)
    assert rel_err(np.array([group.grads["head.weight"][i] for i in idx]), num) <= 1e-6


def test_save_load_params_errors(tmp_path):
    group = rnncore.ParamGroup.of(_model())
    path = tmp_path / "p.npz"
    rnncore.save_params(path, group)
    small = rnncore.ParamGroup.of({"head": rnncore.Linear(5, 7, dtype=np.float64)})
    with pytest.raises(ValueError, match=r"unexpected key\(s\) 'emb.weight'"):
        rnncore.load_params(path, small)
    other = rnncore.ParamGroup.of({"head": rnncore.Linear(5, 8, dtype=np.float64)})
    np.savez(tmp_path / "h.npz", **{"head.weight": np.zeros((7, 5)), "head.bias": np.zeros(7)})
    before = other.data.copy()
    with pytest.raises(ValueError, match=r"'head.weight' must have shape \(8, 5\), got \(7, 5\)"):
        rnncore.load_params(tmp_path / "h.npz", other)
    assert np.array_equal(other.data, before)  # nothing changed
    np.savez(tmp_path / "m.npz", **{"head.weight": np.zeros((8, 5))})
    with pytest.raises(ValueError, match=r"missing key\(s\) 'head.bias'"):
        rnncore.load_params(tmp_path / "m.npz", other)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"holds one array \(.npy\)"):
        rnncore.load_params(tmp_path / "one.npy", other)
    with pytest.raises(FileNotFoundError):
        rnncore.load_params(tmp_path / "absent.npz", other)
    with pytest.raises(TypeError, match="save_params: group must be a ParamGroup, got dict"):
        rnncore.save_params(path, {})
    with pytest.raises(OSError):
        rnncore.save_params(tmp_path / "no" / "dir.npz", group)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.npz", "m.npz", "one.npy", "p.npz"]


def test_param_group_of_rejects_bad_modules():
    lin = rnncore.Linear(2, 2)
    with pytest.raises(ValueError, match=r"ParamGroup.of: modules\['b'\] is the same object"):
        rnncore.ParamGroup.of({"a": lin, "b": lin})
    with pytest.raises(ValueError, match=r"without '\.', got 'a\.b'"):
        rnncore.ParamGroup.of({"a.b": lin})
    with pytest.raises(TypeError, match=r"modules\['a'\] must have parameters\(\)"):
        rnncore.ParamGroup.of({"a": np.zeros(3)})
    with pytest.raises(TypeError, match="one dtype"):
        rnncore.ParamGroup.of({"a": lin, "b": rnncore.Linear(2, 2, dtype=np.float64)})
    with pytest.raises(ValueError, match="must not be empty"):
        rnncore.ParamGroup.of({})
