"""Numerical gradients by central differences, to confirm every hand-written backward.

For a module f and a fixed random upstream gradient g, take the scalar L = sum(f(x) * g); then
backward(g) must return dL/dx and add dL/dp into each p.grad. Central differences estimate the
same numbers without any calculus:
    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h)          error O(h^2)
Use float64 (float32's 1e-7 resolution drowns a 1e-5 step), a random g (all-ones hides BN's
input gradient, which is then about zero), and inputs away from kinks (ReLU at 0, max-pool ties).
The relative error compares the largest difference with the size of the gradients:
    rel_error(a, b) = max|a - b| / max(1e-8, max(|a| + |b|))
"""
import numpy as np

from .dropout import Dropout


def rel_error(a, b):
    """max|a - b| relative to the gradients' magnitude (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


def numerical_gradient(f, x, h=1e-5):
    """dL/dx of the scalar function f() with respect to the array x, perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _reseed_dropout(module, seed):
    """Same dropout masks in every forward, so that L is one fixed function of x."""
    for m in module.modules():
        if isinstance(m, Dropout):
            m.reseed(seed)


# The checker's own random streams: a user who draws x from default_rng(seed) must not get
# g == x (with g proportional to BN's x_hat, BN's true dx is ~0 and the check says nothing).
_STREAM = 0x6A09E667


def _loss_and_upstream(module, x, seed):
    """L(x) = sum_k sum(out_k * g_k) for fixed random g_k, and the g_k."""
    rng = np.random.default_rng([_STREAM, seed])
    _reseed_dropout(module, seed)
    outs = _as_tuple(module(x))
    gs = tuple(rng.standard_normal(o.shape) for o in outs)

    def loss():
        _reseed_dropout(module, seed)
        return sum(float(np.sum(o * g)) for o, g in zip(_as_tuple(module(x)), gs))
    return loss, gs


def _require_float64(module, x):
    if x.dtype != np.float64 or any(p.data.dtype != np.float64 for p in module.parameters()):
        raise ValueError("gradcheck: use float64 for the input and the module (module.double()); "
                         "float32 cannot resolve a finite-difference step")


def check_module(module, x, h=1e-5, seed=0, check_params=True):
    """backward() against central differences of L = sum(module(x) * g) for a fixed random g.

    Returns {"input": rel_error, "<param name>": rel_error, ...}. Works for modules returning
    a tuple of outputs (then backward takes one gradient per output).
    """
    _require_float64(module, x)
    x = x.copy()
    loss, gs = _loss_and_upstream(module, x, seed)
    module.zero_grad()
    _reseed_dropout(module, seed)
    module(x)
    dx = module.backward(*gs)
    errors = {"input": rel_error(dx, numerical_gradient(loss, x, h))}
    if check_params:
        for name, p in module.named_parameters():
            errors[name] = rel_error(p.grad, numerical_gradient(loss, p.data, h))
    return errors


def check_directional(module, x, h=1e-5, seed=0):
    """The gradient along one random direction v over every parameter and the input at once.

    Compares sum(grad * v) with (L(theta + h v) - L(theta - h v)) / 2h: one check for a whole
    model, where element-by-element differences would take millions of forward passes.
    Returns (analytic, numerical, rel_error).
    """
    _require_float64(module, x)
    x = x.copy()
    rng = np.random.default_rng([_STREAM, seed, 1])
    loss, gs = _loss_and_upstream(module, x, seed)
    params = module.parameters()
    module.zero_grad()
    _reseed_dropout(module, seed)
    module(x)
    dx = module.backward(*gs)
    arrays = [x] + [p.data for p in params]
    directions = [rng.standard_normal(a.shape) for a in arrays]
    analytic = float(np.sum(dx * directions[0]) +
                     sum(np.sum(p.grad * v) for p, v in zip(params, directions[1:])))

    def shifted(step):
        for a, v in zip(arrays, directions):
            a += step * v
        value = loss()
        for a, v in zip(arrays, directions):
            a -= step * v
        return value
    numerical = (shifted(h) - shifted(-h)) / (2 * h)
    err = abs(analytic - numerical) / max(1e-8, abs(analytic) + abs(numerical))
    return analytic, numerical, err
