"""rnncore.optim: the flat parameter buffer, the four optimizers (against hand-written formulas
and torch.optim), clipping, the finite check and the learning-rate schedule."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from conftest import torch_or_skip
from rnncore.optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    LRSchedule,
    ParamGroup,
    RMSprop,
    clip_grad_norm,
    clip_grad_value,
    grad_norm,
    grads_finite,
    make_optimizer,
)

SHAPES = {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,), "odd": (5, 1, 3)}

# (optimizer name, our keyword arguments, torch.optim class name, torch keyword arguments)
CASES = [
    ("sgd", {"lr": 0.1, "momentum": 0.0}, "SGD", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, "SGD", {"lr": 0.1, "momentum": 0.9}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
        "SGD",
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    ),
    (
        "sgd",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
    ("adagrad", {"lr": 0.1}, "Adagrad", {"lr": 0.1}),
    (
        "adagrad",
        {"lr": 0.2, "eps": 1e-6, "initial_accumulator_value": 0.1},
        "Adagrad",
        {"lr": 0.2, "eps": 1e-6, "initial_accumulator_value": 0.1},
    ),
    ("rmsprop", {"lr": 2e-3}, "RMSprop", {"lr": 2e-3, "alpha": 0.95}),
    (
        "rmsprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5},
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5},
    ),
    ("adam", {"lr": 2e-3}, "Adam", {"lr": 2e-3}),
    (
        "adam",
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
        "Adam",
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    ),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def make_problem(rng, dtype, steps=6):
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    grads = [
        {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)
    ]
    return params, grads


def run_ours(name, kwargs, params, grads, dtype=None):
    group = ParamGroup(params, dtype=dtype)
    opt = make_optimizer(name, group, **kwargs)
    for g in grads:
        for k, v in g.items():
            group.grads[k][...] = v  # through the views, as a model's backward would
        opt.step()
    return group, opt


def reference_step(name, kw, p, g, state, t):
    """One update of one parameter, written out from the textbook / PyTorch formulas."""
    if name == "sgd":
        mu, tau, nesterov = (
            kw.get("momentum", 0.9),
            kw.get("dampening", 0.0),
            kw.get("nesterov", False),
        )
        d = g
        if mu:
            state["b"] = g.copy() if t == 1 else mu * state["b"] + (1 - tau) * g
            d = g + mu * state["b"] if nesterov else state["b"]
        return p - kw["lr"] * d
    if name == "adagrad":
        state.setdefault("s", np.full_like(p, kw.get("initial_accumulator_value", 0.0)))
        state["s"] = state["s"] + g * g
        return p - kw["lr"] * g / (np.sqrt(state["s"]) + kw.get("eps", 1e-10))
    if name == "rmsprop":
        alpha, eps, mu = kw.get("alpha", 0.95), kw.get("eps", 1e-8), kw.get("momentum", 0.0)
        state["v"] = alpha * state.get("v", 0) + (1 - alpha) * g * g
        u = g / (np.sqrt(state["v"]) + eps)
        if mu:
            state["b"] = mu * state.get("b", 0) + u
            return p - kw["lr"] * state["b"]
        return p - kw["lr"] * u
    if name == "adam":
        b1, b2 = kw.get("betas", (0.9, 0.999))
        eps = kw.get("eps", 1e-8)
        state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1**t)
        v_hat = state["v"] / (1 - b2**t)
        return p - kw["lr"] * m_hat / (np.sqrt(v_hat) + eps)
    raise AssertionError(name)


# --- ParamGroup -----------------------------------------------------------------------------------


def test_param_group_packs_views_into_one_aligned_buffer(rng):
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    group = ParamGroup(params)
    assert group.dtype == np.float64 and group.names == tuple(SHAPES)
    assert group.size == sum(math.prod(s) for s in SHAPES.values())
    assert group.data.shape == group.grad.shape and group.data.size >= group.size
    for name, shape in SHAPES.items():
        p, g = group.params[name], group.grads[name]
        assert p.shape == g.shape == shape and p.flags.c_contiguous and g.flags.c_contiguous
        assert np.shares_memory(p, group.data) and np.shares_memory(g, group.grad)
        assert not np.shares_memory(p, params[name])  # the values were copied in
        assert np.array_equal(p, params[name]) and not g.any()
        assert p.ctypes.data % 64 == 0 and g.ctypes.data % 64 == 0  # cache-line aligned
    # Writes through a view reach the flat buffer, and flat operations reach every view.
    group.grads["odd"][...] = 2.0
    assert group.grad.sum() == 2.0 * 15
    group.zero_grad()
    assert not group.grad.any()
    group.data *= 0.5
    assert np.array_equal(group.params["bias_ih_l0"], params["bias_ih_l0"] * 0.5)
    mask = np.ones(group.data.size, bool)  # the padding between views is zero
    for off, shape in zip(group.offsets, group.shapes, strict=True):
        mask[off : off + math.prod(shape)] = False
    assert mask.any() and not group.data[mask].any()


def test_param_group_dtype_and_errors(rng):
    group = ParamGroup({"a": np.ones(3, np.float32), "b": np.ones((2, 2), np.float32)})
    assert group.dtype == np.float32 and group.data.dtype == np.float32
    assert (
        ParamGroup({"a": np.ones(3, np.float32)}, dtype=np.float64).params["a"].dtype == np.float64
    )
    with pytest.raises(
        TypeError,
        match=r"all params must have one dtype \(or pass dtype=\), got \['float32', 'float64'\]",
    ):
        ParamGroup({"a": np.ones(3, np.float32), "b": np.ones(3)})
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int64"):
        ParamGroup({"a": np.ones(3, np.int64)})
    with pytest.raises(ValueError, match="params must not be empty"):
        ParamGroup({})
    with pytest.raises(TypeError, match="params must be a dict of name -> array, got list"):
        ParamGroup([np.ones(3)])


def test_param_group_views_by_prefix_and_state_dict(rng):
    group = ParamGroup({"rnn.w": np.ones((2, 3)), "rnn.b": np.zeros(2), "proj.w": np.ones(4)})
    params, grads = group.views("rnn.")
    assert list(params) == ["w", "b"] and list(grads) == ["w", "b"]
    assert np.shares_memory(params["w"], group.data)
    sd = group.state_dict()
    assert not np.shares_memory(sd["rnn.w"], group.data)
    group.load_state_dict(
        {"rnn.w": np.full((2, 3), 7.0), "rnn.b": np.ones(2), "proj.w": np.arange(4.0)}
    )
    assert params["w"][0, 0] == 7.0 and group.params["proj.w"][3] == 3.0  # in place
    with pytest.raises(ValueError, match=r"missing key\(s\) 'proj.w'; unexpected key\(s\) 'x'"):
        group.load_state_dict({"rnn.w": np.ones((2, 3)), "rnn.b": np.ones(2), "x": np.ones(1)})
    with pytest.raises(ValueError, match=r"'rnn.b' must have shape \(2,\), got \(3,\)"):
        group.load_state_dict(sd | {"rnn.b": np.ones(3)})
    assert params["w"][0, 0] == 7.0  # nothing changed by the failed loads


# --- optimizers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs", "tname", "tkwargs"), CASES, ids=IDS)
def test_optimizer_matches_reference_formulas(rng, name, kwargs, tname, tkwargs):
    params, grads = make_problem(rng, np.float64)
    group, opt = run_ours(name, kwargs, params, grads)
    assert opt.steps == len(grads)
    for k in SHAPES:
        p, state = params[k].copy(), {}
        for t, g in enumerate(grads, start=1):
            p = reference_step(name, kwargs, p, g[k], state, t)
        np.testing.assert_allclose(group.params[k], p, rtol=1e-12, atol=1e-14)
    mask = np.ones(group.data.size, bool)  # the padding stays zero through updates
    for off, shape in zip(group.offsets, group.shapes, strict=True):
        mask[off : off + math.prod(shape)] = False
    assert not group.data[mask].any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "kwargs", "tname", "tkwargs"), CASES, ids=IDS)
def test_optimizer_matches_torch(rng, dtype, name, kwargs, tname, tkwargs):
    torch = torch_or_skip()
    params, grads = make_problem(rng, dtype)
    group, _ = run_ours(name, kwargs, params, grads)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), **tkwargs)
    for g in grads:
        for k, v in g.items():
            tparams[k].grad = torch.tensor(v)
        topt.step()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for k in SHAPES:
        ours, theirs = group.params[k], tparams[k].detach().numpy()
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize(("name", "kwargs"), [(c[0], c[1]) for c in CASES], ids=IDS)
def test_state_dict_resumes_bitwise(rng, name, kwargs):
    params, grads = make_problem(rng, np.float32, steps=8)
    straight, _ = run_ours(name, kwargs, params, grads)
    first, opt = run_ours(name, kwargs, params, grads[:3])
    sd = opt.state_dict()
    assert sd["type"] == name and sd["steps"] == 3
    assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in sd.values())
    group = ParamGroup(first.state_dict())
    resumed = make_optimizer(name, group, **kwargs)
    resumed.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert resumed.steps == 3
    for g in grads[3:]:
        for k, v in g.items():
            group.grads[k][...] = v
        resumed.step()
    assert np.array_equal(group.data, straight.data)


def test_state_dict_errors(rng):
    params, grads = make_problem(rng, np.float64, steps=2)
    _, adam = run_ours("adam", {}, params, grads)
    sd = adam.state_dict()
    with pytest.raises(ValueError, match="the state is of optimizer 'adam', not 'rmsprop'"):
        RMSprop(ParamGroup(params)).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"missing key\(s\) 'exp_avg_sq/odd'"):
        Adam(ParamGroup(params)).load_state_dict(
            {k: v for k, v in sd.items() if k != "exp_avg_sq/odd"}
        )
    with pytest.raises(
        ValueError,
        match=r"'exp_avg/odd' must be a floating-point array of shape \(5, 1, 3\), got float64 \(15,\)",
    ):
        Adam(ParamGroup(params)).load_state_dict(sd | {"exp_avg/odd": np.zeros(15)})
    with pytest.raises(ValueError, match="'steps' must be an int >= 0"):
        Adam(ParamGroup(params)).load_state_dict(sd | {"steps": np.array(-1)})


def test_step_does_not_allocate_per_step(rng):
    # Every temporary is kept from construction: a step on a 4 MB group allocates nothing big.
    group = ParamGroup({"w": rng.standard_normal((1000, 1000)).astype(np.float32)})
    group.grad[...] = rng.standard_normal(group.grad.size)
    for name in OPTIMIZERS:
        opt = make_optimizer(name, group)
        opt.step()
        tracemalloc.start()
        try:
            opt.step()
            opt.step()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 100_000, f"{name}: {peak} bytes"


def test_optimizer_argument_errors(rng):
    group = ParamGroup({"w": np.ones(3)})
    with pytest.raises(
        ValueError, match="optimizer must be one of sgd, adagrad, rmsprop, adam, got 'lbfgs'"
    ):
        make_optimizer("lbfgs", group)
    assert isinstance(make_optimizer("ADAM", group), Adam)
    with pytest.raises(
        TypeError,
        match=r"Adam: group must be a ParamGroup \(wrap the parameters with ParamGroup\(params\)\), got dict",
    ):
        Adam({"w": np.ones(3)})
    with pytest.raises(ValueError, match=r"Adam: lr must be a finite number >= 0, got -1"):
        Adam(group, lr=-1)
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0, got nan"):
        Adam(group).lr = float("nan")
    with pytest.raises(ValueError, match=r"Adam: betas\[1\] must be in \[0, 1\), got 1.0"):
        Adam(group, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="SGD: nesterov needs momentum > 0 and dampening = 0"):
        SGD(group, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match=r"Adagrad: eps must be a finite number > 0, got 0"):
        Adagrad(group, eps=0)
    with pytest.raises(TypeError, match="RMSprop: alpha must be a number, got str"):
        RMSprop(group, alpha="0.9")


def test_lr_can_change_between_steps():
    group = ParamGroup({"w": np.zeros(2)})
    group.grad[...] = 1.0
    opt = SGD(group, lr=0.1, momentum=0.0)
    opt.step()
    opt.lr = 0.01
    opt.step()
    np.testing.assert_allclose(group.params["w"], [-0.11, -0.11])


# --- clipping and the finite check ----------------------------------------------------------------


def test_clip_grad_norm_matches_torch_and_returns_the_norm_before(rng):
    group = ParamGroup({"a": rng.standard_normal((4, 5)), "b": rng.standard_normal(7)})
    group.grad[...] = rng.standard_normal(group.grad.size) * 3
    # Only the real elements count: zero the padding as a backward pass leaves it.
    before = {k: g.copy() for k, g in group.grads.items()}
    group.grad[...] = 0
    for k, g in before.items():
        group.grads[k][...] = g
    expected = math.sqrt(sum(float((g**2).sum()) for g in before.values()))
    norm = clip_grad_norm(group, 1.0)
    assert norm == pytest.approx(expected, rel=1e-12)
    assert grad_norm(group) == pytest.approx(1.0, rel=1e-5)
    for k, g in before.items():
        np.testing.assert_allclose(group.grads[k], g * (1.0 / (expected + 1e-6)), rtol=1e-12)
    # Below the limit nothing changes.
    same = group.grad.copy()
    assert clip_grad_norm(group, 100.0) == pytest.approx(1.0, rel=1e-5)
    assert np.array_equal(group.grad, same)
    torch = torch_or_skip()  # the NumPy checks above have passed; torch parity needs torch
    tgrads = [torch.tensor(g) for g in before.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads, strict=True):
        p.grad = g.clone()
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    assert norm == pytest.approx(float(tnorm), rel=1e-12)
    for p, k in zip(tparams, before, strict=True):
        np.testing.assert_allclose(group.grads[k], p.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_in_float32_does_not_overflow():
    g = np.full(1000, 1e30, np.float32)  # Σg² = 1e63 overflows float32
    norm = clip_grad_norm(g, 5.0)
    assert norm == pytest.approx(math.sqrt(1000) * 1e30, rel=1e-6)
    assert math.sqrt(float((g.astype(np.float64) ** 2).sum())) == pytest.approx(5.0, rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradients_are_reported_and_left_alone(bad):
    g = np.array([1.0, 2.0, bad, 3.0], np.float32)
    assert grads_finite(np.array([1.0, -2.0, 3e38], np.float32))
    assert not grads_finite(g)
    assert not math.isfinite(clip_grad_norm(g, 1.0))
    assert np.array_equal(g[[0, 1, 3]], [1, 2, 3])  # not scaled
    group = ParamGroup({"w": np.zeros(3)})
    assert grads_finite(group)
    group.grads["w"][1] = bad
    assert not grads_finite(group)


def test_clip_grad_value():
    g = np.array([-10.0, -5.0, 0.5, 5.0, 7.0, np.nan])
    clip_grad_value(g, 5.0)
    assert np.array_equal(g[:5], [-5, -5, 0.5, 5, 5]) and np.isnan(g[5])
    group = ParamGroup({"w": np.zeros(3)})
    group.grads["w"][...] = [-3, 0, 3]
    clip_grad_value(group, 1)
    assert group.grads["w"].tolist() == [-1, 0, 1]
    with pytest.raises(ValueError, match=r"clip must be a finite number > 0, got 0"):
        clip_grad_value(group, 0)
    with pytest.raises(TypeError, match="expected a ParamGroup or a floating-point array"):
        clip_grad_norm([1.0, 2.0], 1.0)


# --- learning-rate schedule -----------------------------------------------------------------------


def test_lr_schedule_constant_and_step_decay():
    assert [LRSchedule(0.1)(s) for s in (0, 10, 10**6)] == [0.1, 0.1, 0.1]
    sched = LRSchedule(1.0, decay="step", factor=0.5, every=10, after=20)
    assert [sched(s) for s in (0, 20, 29, 30, 39, 40, 50)] == [1, 1, 1, 0.5, 0.5, 0.25, 0.125]


def test_lr_schedule_cosine_with_warmup():
    sched = LRSchedule(1.0, decay="cosine", total_steps=110, min_lr=0.1, warmup_steps=10)
    assert [sched(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert sched(10) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert sched(110) == pytest.approx(0.1) and sched(500) == pytest.approx(0.1)
    assert all(sched(s) >= sched(s + 1) for s in range(10, 120))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0}, r"lr must be a finite number > 0, got 0"),
        ({"lr": 1, "decay": "linear"}, r"decay must be 'none', 'step' or 'cosine', got 'linear'"),
        ({"lr": 1, "factor": 1.5}, r"factor must be in \(0, 1\], got 1.5"),
        ({"lr": 1, "every": 0}, r"every must be an int >= 1, got 0"),
        (
            {"lr": 1, "decay": "cosine"},
            r"decay='cosine' needs total_steps, an int > warmup_steps \(0\), got None",
        ),
        ({"lr": 1, "min_lr": 2}, r"min_lr must be in \[0, lr = 1\], got 2"),
    ],
)
def test_lr_schedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(**kwargs)
