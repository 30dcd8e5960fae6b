"""Optimizers, gradient clipping and learning-rate schedules over one flat parameter buffer.

The parameters of a model live in one contiguous buffer (a ParamGroup), the named arrays the
model computes with being views into it; their gradients likewise. An optimizer step is then
a handful of NumPy operations on a few big arrays, whatever the number of parameters, and
never allocates: every temporary is a buffer kept from the first step.

Shape legend
------------
    P           padded size of the flat buffer: the parameters' sizes summed, each rounded up
                so that every view starts on a 64-byte boundary (the padding stays zero)
    data, grad  (P,)   ParamGroup.data and ParamGroup.grad
    state       (P,)   each optimizer buffer (momentum, squared averages, ...)

Typical use::

    group = ParamGroup(model_params)              # copies them into one buffer
    ...rebind the model's arrays to group.params[name] and its gradients to group.grads[name]
    opt = Adam(group, lr=2e-3)
    schedule = LRSchedule(2e-3, decay="step", factor=0.5, every=5000)
    for step in range(n):
        group.zero_grad()
        ...forward/backward: adds into group.grad (through the views)...
        if not grads_finite(group):
            continue                               # or stop: the trainer's policy
        norm = clip_grad_norm(group, 5.0)          # or clip_grad_value(group, 5.0)
        opt.lr = schedule(step)
        opt.step()

The update rules are those of torch.optim (PyTorch 2.x), without weight decay; see each class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .checks import flag, number
from .params import ParamGroup, check_keys
from .schedule import LRSchedule

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "LRSchedule",
    "Optimizer",
    "ParamGroup",
    "RMSprop",
    "clip_grad_norm",
    "clip_grad_value",
    "grad_norm",
    "grads_finite",
    "make_optimizer",
]

Array = np.ndarray


def _beta(where: str, name: str, value: Any) -> float:
    v = number(where, name, value, low=0.0)
    if v >= 1:
        raise ValueError(f"{where}: {name} must be in [0, 1), got {value!r}")
    return v


def _flat_grad(where: str, grad: ParamGroup | Array) -> Array:
    """The flat gradient of a group, or a floating array given directly."""
    if isinstance(grad, ParamGroup):
        return grad.grad
    if isinstance(grad, np.ndarray) and np.issubdtype(grad.dtype, np.floating):
        return grad
    raise TypeError(f"{where}: expected a ParamGroup or a floating-point array, got {grad!r:.80}")


# --- gradient checks and clipping -------------------------------------------------------------


def grads_finite(grad: ParamGroup | Array) -> bool:
    """Whether every gradient is finite (no NaN, no ±inf): two reductions, no temporary."""
    g = _flat_grad("grads_finite", grad)
    if g.size == 0:
        return True
    # min/max propagate NaN and reach ±inf exactly: both are finite iff every element is.
    return bool(np.isfinite(g.min()) and np.isfinite(g.max()))


def grad_norm(grad: ParamGroup | Array) -> float:
    """The global L2 norm of all gradients, sqrt(Σ g²), as a Python float (nan/inf when a
    gradient is). Accumulated in the gradients' dtype, redone in float64 if that overflows."""
    g = _flat_grad("grad_norm", grad).reshape(-1)
    with np.errstate(over="ignore"):  # an overflow is caught below and redone in float64
        sq = float(np.dot(g, g))
    if not math.isfinite(sq) and g.dtype != np.float64:
        g64 = g.astype(np.float64)
        sq = float(np.dot(g64, g64))
    return math.sqrt(sq)


def clip_grad_norm(grad: ParamGroup | Array, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm.

    As torch.nn.utils.clip_grad_norm_: with norm = grad_norm(grad), the gradients are
    multiplied by max_norm / (norm + 1e-6) when that is < 1. Non-finite gradients are left
    as they are (check grads_finite, or the returned norm, before stepping).

    Returns:
        the norm before clipping.
    """
    max_norm = number("clip_grad_norm", "max_norm", max_norm, low=0.0, low_ok=False)
    g = _flat_grad("clip_grad_norm", grad)
    norm = grad_norm(g)
    if math.isfinite(norm) and norm + 1e-6 > max_norm:
        g *= max_norm / (norm + 1e-6)
    return norm


def clip_grad_value(grad: ParamGroup | Array, clip: float) -> None:
    """Clamp every gradient element to [-clip, clip] in place (char-rnn's and torch-rnn's
    ``grad_clip``). NaN stays NaN."""
    clip = number("clip_grad_value", "clip", clip, low=0.0, low_ok=False)
    g = _flat_grad("clip_grad_value", grad)
    np.clip(g, -clip, clip, out=g)


# --- optimizers -------------------------------------------------------------------------------


class Optimizer:
    """Base class: an update rule over a ParamGroup's flat data and grad buffers.

    Attributes:
        group: the ParamGroup updated in place.
        lr: the learning rate of the next step (set it from an LRSchedule between steps).
        steps: steps taken so far (Adam's t; SGD's first step differs from later ones).
        state: buffer name -> (P,) array, the optimizer's running state.

    state_dict() / load_state_dict() save and restore ``steps`` and the state buffers (per
    parameter, so they do not depend on the buffer's padding); hyperparameters are the
    caller's configuration and are not in them.
    """

    name: ClassVar[str]

    def __init__(self, group: ParamGroup, lr: float) -> None:
        if not isinstance(group, ParamGroup):
            raise TypeError(
                f"{type(self).__name__}: group must be a ParamGroup (wrap the parameters with "
                f"ParamGroup(params)), got {type(group).__name__}"
            )
        self.group = group
        self.lr = lr
        self.steps = 0
        self.state: dict[str, Array] = {}
        self._tmp = np.zeros_like(group.data)  # (P,) scratch, reused by every step

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = number(type(self).__name__, "lr", value, low=0.0)

    def _add_state(self, name: str, fill: float = 0.0) -> Array:
        buf = np.full_like(self.group.data, fill)  # (P,)
        self.state[name] = buf
        return buf

    def zero_grad(self) -> None:
        """Zero the group's gradients."""
        self.group.zero_grad()

    def step(self) -> None:
        """Apply one update to ``group.data`` from ``group.grad`` (which is not changed)."""
        self.steps += 1
        self._update(self.group.data, self.group.grad, self._tmp)

    def _update(self, p: Array, g: Array, tmp: Array) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Array]:
        """The optimizer's state as plain arrays (for an .npz checkpoint, no pickle).

        Keys: "type" (0-d str, e.g. "adam"), "steps" (0-d int64) and "<buffer>/<param name>"
        (the shape of the parameter) for every state buffer.
        """
        out: dict[str, Array] = {
            "type": np.array(self.name),
            "steps": np.array(self.steps, np.int64),
        }
        for buf_name, buf in self.state.items():
            for name, off, shape in zip(
                self.group.names, self.group.offsets, self.group.shapes, strict=True
            ):
                size = math.prod(shape)
                out[f"{buf_name}/{name}"] = buf[off : off + size].reshape(shape).copy()
        return out

    def load_state_dict(self, state_dict: Mapping[str, npt.ArrayLike]) -> None:
        """Restore what state_dict() returned (for the same optimizer type and parameters).

        Raises:
            ValueError: another optimizer type, missing or unexpected keys, wrong shapes.
        """
        where = f"{type(self).__name__}.load_state_dict"
        kind = str(np.asarray(state_dict.get("type", "")))
        if kind != self.name:
            raise ValueError(
                f"{where}: the state is of optimizer {kind!r}, not {self.name!r}: resume with "
                "the optimizer it was saved with (or start its state afresh)"
            )
        buffers = [f"{b}/{n}" for b in self.state for n in self.group.names]
        expected = ("type", "steps", *buffers)
        check_keys(where, expected, state_dict)
        steps = np.asarray(state_dict["steps"])
        if steps.shape != () or not np.issubdtype(steps.dtype, np.integer) or steps < 0:
            raise ValueError(f"{where}: 'steps' must be an int >= 0, got {steps!r}")
        new = {}
        for key in expected[2:]:
            buf_name, name = key.split("/", 1)
            v = np.asarray(state_dict[key])
            shape = self.group.shapes[self.group.names.index(name)]
            if v.shape != shape or not np.issubdtype(v.dtype, np.floating):
                raise ValueError(
                    f"{where}: {key!r} must be a floating-point array of shape {shape}, "
                    f"got {v.dtype} {v.shape}"
                )
            new[key] = v
        for key, v in new.items():
            buf_name, name = key.split("/", 1)
            i = self.group.names.index(name)
            off, size = self.group.offsets[i], math.prod(self.group.shapes[i])
            self.state[buf_name][off : off + size] = v.reshape(-1)
        self.steps = int(steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g}, steps={self.steps}, {self.group!r})"


class SGD(Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum, as torch.optim.SGD::

        b_1 = g_1,  b_t = μ b_{t-1} + (1 - τ) g_t      (momentum buffer; μ = 0: no buffer)
        d_t = g_t + μ b_t  (nesterov)   or   d_t = b_t
        p  -= lr · d_t

    Args:
        group: the parameters.
        lr: learning rate.
        momentum: μ in [0, 1) (0.9 by default; 0 for plain SGD).
        dampening: τ in [0, 1).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
    """

    name = "sgd"

    def __init__(
        self,
        group: ParamGroup,
        lr: float = 0.1,
        *,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(group, lr)
        self.momentum = _beta("SGD", "momentum", momentum)
        self.dampening = _beta("SGD", "dampening", dampening)
        nesterov = flag("SGD", "nesterov", nesterov)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        self.nesterov = nesterov
        if self.momentum:
            self._add_state("momentum_buffer")

    def _update(self, p: Array, g: Array, tmp: Array) -> None:
        d = g
        if self.momentum:
            buf = self.state["momentum_buffer"]
            if self.steps == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                if self.dampening:
                    np.multiply(g, 1 - self.dampening, out=tmp)
                    buf += tmp
                else:
                    buf += g
            d = buf
            if self.nesterov:
                np.multiply(buf, self.momentum, out=tmp)
                tmp += g
                d = tmp
        np.multiply(d, self.lr, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad (min-char-rnn's optimizer)::

        s_t = s_{t-1} + g_t²
        p  -= lr · g_t / (√s_t + ε)

    min-char-rnn adds its ε (1e-8) inside the square root; PyTorch's (and this) ε is outside.

    Args:
        group: the parameters.
        lr: learning rate (min-char-rnn: 0.1).
        eps: ε > 0.
        initial_accumulator_value: s_0 >= 0.
    """

    name = "adagrad"

    def __init__(
        self,
        group: ParamGroup,
        lr: float = 0.1,
        *,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        super().__init__(group, lr)
        self.eps = number("Adagrad", "eps", eps, low=0.0, low_ok=False)
        init = number("Adagrad", "initial_accumulator_value", initial_accumulator_value, low=0)
        self._add_state("sum", init)

    def _update(self, p: Array, g: Array, tmp: Array) -> None:
        s = self.state["sum"]
        np.multiply(g, g, out=tmp)
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop (char-rnn's optimizer; not centered)::

        v_t = α v_{t-1} + (1 - α) g_t²
        u_t = g_t / (√v_t + ε)
        b_t = μ b_{t-1} + u_t,  p -= lr · b_t     (momentum μ > 0)
        p  -= lr · u_t                            (μ = 0)

    Args:
        group: the parameters.
        lr: learning rate (char-rnn: 2e-3).
        alpha: α in [0, 1), the decay of the squared average (char-rnn: 0.95; PyTorch's
            default is 0.99).
        eps: ε > 0.
        momentum: μ in [0, 1).
    """

    name = "rmsprop"

    def __init__(
        self,
        group: ParamGroup,
        lr: float = 2e-3,
        *,
        alpha: float = 0.95,
        eps: float = 1e-8,
        momentum: float = 0.0,
    ) -> None:
        super().__init__(group, lr)
        self.alpha = _beta("RMSprop", "alpha", alpha)
        self.eps = number("RMSprop", "eps", eps, low=0.0, low_ok=False)
        self.momentum = _beta("RMSprop", "momentum", momentum)
        self._add_state("square_avg")
        if self.momentum:
            self._add_state("momentum_buffer")

    def _update(self, p: Array, g: Array, tmp: Array) -> None:
        v = self.state["square_avg"]
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.alpha
        v *= self.alpha
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)  # u_t
        if self.momentum:
            buf = self.state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp
            np.multiply(buf, self.lr, out=tmp)
        else:
            tmp *= self.lr
        p -= tmp


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (torch-rnn's optimizer; no weight decay, no AMSGrad)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        p  -= lr / (1 - β1^t) · m_t / (√v_t / √(1 - β2^t) + ε)

    Args:
        group: the parameters.
        lr: learning rate (torch-rnn: 2e-3).
        betas: (β1, β2), each in [0, 1).
        eps: ε > 0.
    """

    name = "adam"

    def __init__(
        self,
        group: ParamGroup,
        lr: float = 2e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(group, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair (β1, β2), got {betas!r}")
        self.betas = (_beta("Adam", "betas[0]", betas[0]), _beta("Adam", "betas[1]", betas[1]))
        self.eps = number("Adam", "eps", eps, low=0.0, low_ok=False)
        self._add_state("exp_avg")
        self._add_state("exp_avg_sq")

    def _update(self, p: Array, g: Array, tmp: Array) -> None:
        b1, b2 = self.betas
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        np.subtract(g, m, out=tmp)  # m += (1 - β1)(g - m), as torch's lerp
        tmp *= 1 - b1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2
        v += tmp
        t = self.steps
        np.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(1 - b2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1 - b1**t)
        p -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, group: ParamGroup, **kwargs: Any) -> Optimizer:
    """The optimizer called `name` ("sgd", "adagrad", "rmsprop", "adam") over `group`;
    kwargs go to its constructor (lr=..., betas=..., ...)."""
    cls = OPTIMIZERS.get(str(name).lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return cls(group, **kwargs)
