"""Optimizers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping.

Every update rule below is its paper's few equations in PyTorch's order of operations, so a
trajectory can be held against torch.optim step for step. An optimizer holds parameter groups
(lists of Parameters sharing hyper-parameters, e.g. no weight decay for BN and biases) and a
per-parameter state (moments, step counts) that state_dict() saves for an exact resume.
"""
import math

import numpy as np

from . import kernels
from .module import Parameter


def _check_nonnegative(owner, **values):
    for name, value in values.items():
        if not value >= 0.0:
            raise ValueError(f"{owner}: {name} must be >= 0, got {value}")


class Optimizer:
    """Parameter groups, per-parameter state, zero_grad, state_dict / load_state_dict."""

    defaults = {}

    def __init__(self, params, **hyper):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**self.defaults, **hyper, **group}
            group["params"] = list(group["params"])
            if not group["params"]:
                raise ValueError(f"{type(self).__name__}: a parameter group has no parameters")
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{type(self).__name__}: expected Parameters (model.parameters()), "
                                    f"got {type(p).__name__}")
            self._check_hyper(group)
            self.param_groups.append(group)
        seen = [id(p) for g in self.param_groups for p in g["params"]]
        if len(seen) != len(set(seen)):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
        self.state = {}  # id(param) -> dict of arrays and counters

    def _check_hyper(self, group):
        _check_nonnegative(type(self).__name__, lr=group["lr"], weight_decay=group["weight_decay"])

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self._params():
            p.grad[...] = 0

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.step: a parameter of shape {p.data.shape} "
                                     f"has a gradient of shape {p.grad.shape}")
                self._update(p, p.grad, group, self.state.setdefault(id(p), {}))

    def _update(self, p, g, group, state):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{hyper..., "params": [indices]}]}: copies."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[k]: {name: (v.copy() if isinstance(v, np.ndarray) else v) for name, v in s.items()}
                 for k, s in self.state.items() if k in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter groups have "
                             f"{[len(g['params']) for g in groups]} parameters, this optimizer {sizes}")
        params = self._params()
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            for name, v in s.items():
                if isinstance(v, np.ndarray) and v.shape not in ((), p.data.shape):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state '{name}' of parameter "
                                     f"{i} has shape {v.shape}, the parameter {p.data.shape}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {id(params[int(i)]): {name: (np.array(v, dtype=params[int(i)].data.dtype)
                                                  if isinstance(v, np.ndarray) and v.ndim else v)
                                           for name, v in s.items()}
                      for i, s in state_dict["state"].items()}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

        d = g + weight_decay * p
        buf = d (first step)   or   buf = momentum*buf + (1 - dampening)*d
        d = d + momentum*buf (Nesterov)   or   d = buf
        p = p - lr * d
    """

    defaults = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)

    def _check_hyper(self, group):
        super()._check_hyper(group)
        _check_nonnegative("SGD", momentum=group["momentum"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")

    def _update(self, p, g, group, state):
        d = g + group["weight_decay"] * p.data if group["weight_decay"] else g
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.array(d, copy=True)  # no dampening on the first step
            else:
                buf = state["momentum_buffer"]
                buf *= mu
                buf += (1 - group["dampening"]) * d
            buf = state["momentum_buffer"]
            d = d + mu * buf if group["nesterov"] else buf
        p.data -= group["lr"] * d


def adam_step_reference(p, g, m, v, vmax, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                        decay, l2, step_size, bias2):
    """p, m and v (and vmax, for amsgrad; else an empty array) take one Adam step in place:
        p = decay*p;  g = g + l2*p;  m = beta1*m + (1 - beta1)*g;  v = beta2*v + (1 - beta2)*g*g
        p = p - step_size*m / (sqrt(v)/bias2 + eps)     (v: max(vmax, v) for amsgrad)
    with the scalars already in p's dtype (so that NumPy and the Numba twin round alike)."""
    if decay != 1:
        p *= decay
    if l2:
        g = g + l2 * p
    m *= beta1
    m += one_minus_beta1 * g
    v *= beta2
    v += one_minus_beta2 * g * g
    if vmax.size:
        np.maximum(vmax, v, out=vmax)
        v = vmax
    p -= step_size * m / (np.sqrt(v) / bias2 + eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); weight_decay is L2 added to the gradient.

        g = g + weight_decay * p
        m = beta1*m + (1 - beta1)*g          v = beta2*v + (1 - beta2)*g**2
        m_hat = m / (1 - beta1**t)           v_hat = v / (1 - beta2**t)   (amsgrad: v_max = max(v_max, v))
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    """

    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    def _check_hyper(self, group):
        super()._check_hyper(group)
        _check_nonnegative(type(self).__name__, eps=group["eps"])
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{type(self).__name__}: betas[{i}] must be in [0, 1), got {beta}")

    def _update(self, p, g, group, state):
        """One step of the equations above, in one pass over memory where Numba runs
        (nn/kernels/optim.py; the NumPy reference takes a pass per operation)."""
        lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        f = p.data.dtype.type
        decay = 1 - lr * wd if self.decoupled else 1    # AdamW: decay the weights, not the gradient
        l2 = 0 if self.decoupled else wd                # Adam: L2, which then goes through the moments
        if not p.data.flags.c_contiguous:   # a view assigned by hand: the step writes into p.data
            p.data = np.ascontiguousarray(p.data)
        flat = lambda a: a.reshape(-1)   # every parameter as 1-D: one compiled kernel, not one per ndim
        kernels.twin(adam_step_reference)(
            flat(p.data), flat(g), flat(state["exp_avg"]), flat(state["exp_avg_sq"]),
            flat(state.get("max_exp_avg_sq", np.empty(0, p.data.dtype))),
            f(b1), f(1 - b1), f(b2), f(1 - b2), f(group["eps"]), f(decay), f(l2),
            f(lr / (1 - b1 ** t)), f(math.sqrt(1 - b2 ** t)))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr*weight_decay,
    then the Adam step on the raw gradient. Default weight_decay 0.01, as PyTorch."""

    defaults = {**Adam.defaults, "weight_decay": 1e-2}
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def split_weight_decay(named_parameters, weight_decay):
    """Two parameter groups: weights decayed, and BN scales/shifts and biases (1-D) not decayed."""
    decay, no_decay = [], []
    for _, p in named_parameters:
        (no_decay if p.data.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# -- learning-rate schedules -------------------------------------------------------------------

class LRScheduler:
    """Sets each group's lr to base_lr * factor(t, base_lr) at every step(); t counts step() calls.

    Step it once per epoch or once per iteration, and size step_size / T_max / warmup_steps in
    the same unit. The base rates are the groups' lr when the first scheduler was attached
    (kept as group["initial_lr"], as PyTorch), so schedules can be chained.
    state_dict() saves t and the base learning rates for an exact resume.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def factor(self, t, base_lr):
        raise NotImplementedError

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(self.last_epoch, base)

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        self._apply()


class ConstantLR(LRScheduler):
    """The learning rate as given, at every step."""

    def factor(self, t, base_lr):
        return 1.0


class StepLR(LRScheduler):
    """lr = base * gamma ** floor(t / step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, t, base_lr):
        return self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2, then flat at eta_min."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def factor(self, t, base_lr):
        cos = (1 + math.cos(math.pi * min(t, self.T_max) / self.T_max)) / 2
        return (self.eta_min + (base_lr - self.eta_min) * cos) / base_lr if base_lr else 0.0


class LinearWarmup(LRScheduler):
    """factor rises linearly from start_factor (t = 0) to 1 (t >= warmup_steps)."""

    def __init__(self, optimizer, warmup_steps, start_factor=0.1):
        if warmup_steps < 0 or not 0 < start_factor <= 1:
            raise ValueError("LinearWarmup: warmup_steps must be >= 0 and start_factor in (0, 1], "
                             f"got {warmup_steps}, {start_factor}")
        self.warmup_steps, self.start_factor = warmup_steps, start_factor
        super().__init__(optimizer)

    def factor(self, t, base_lr):
        if t >= self.warmup_steps:
            return 1.0
        return self.start_factor + (1 - self.start_factor) * t / self.warmup_steps


class ChainedScheduler(LRScheduler):
    """Schedules composed by multiplying their factors, e.g. warm-up then cosine annealing:
    ChainedScheduler([LinearWarmup(opt, 100), CosineAnnealingLR(opt, 1000)])."""

    def __init__(self, schedulers):
        if not schedulers:
            raise ValueError("ChainedScheduler: expected at least one scheduler")
        self.schedulers = list(schedulers)
        super().__init__(self.schedulers[0].optimizer)

    def factor(self, t, base_lr):
        return math.prod(s.factor(t, base_lr) for s in self.schedulers)


# -- gradient norms -----------------------------------------------------------------------------

def global_grad_norm(params):
    """sqrt of the sum of every squared gradient entry: the norm of the whole gradient vector."""
    return math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))


def clip_grad_norm_(params, max_norm):
    """Scale all gradients by max_norm / norm when the global norm exceeds max_norm (as PyTorch,
    with its 1e-6 guard). Returns the norm before clipping, for logging and divergence checks."""
    params = list(params)
    norm = global_grad_norm(params)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for p in params:
            p.grad *= scale
    return norm
