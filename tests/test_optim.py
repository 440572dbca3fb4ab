"""Optimizers and schedules: PyTorch's 3-step trajectories, decoupled decay, convergence, resume."""
import copy

import numpy as np
import pytest

import nn
from nn import optim

GRADS = ([0.5, -1, 2], [0.1, 0.3, -0.4], [-0.7, 0.2, 0.05])


def three_steps(cls, **kw):
    p = nn.Parameter(np.array([1.0, -2.0, 0.5]))
    opt = cls([p], **kw)
    for g in GRADS:
        p.grad[...] = g
        opt.step()
    return p.data


@pytest.mark.parametrize("cls,kw,expected", [
    (optim.SGD, dict(lr=0.1), [1.01, -1.95, 0.335]),
    (optim.SGD, dict(lr=0.1, momentum=0.9), [0.9155, -1.806, 0.029]),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1), [0.9104, -1.7983, 0.0219]),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), [0.92646556, -1.76025062, -0.09100372]),
    (optim.Adam, dict(lr=0.01), [0.98348226, -1.98367641, 0.48078397]),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1), [0.98083379, -1.97927737, 0.48022034]),
    (optim.Adam, dict(lr=0.01, amsgrad=True), [0.98348226, -1.98367641, 0.48078479]),
    (optim.AdamW, dict(lr=0.01), [0.9831851, -1.9830789, 0.4806365]),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.5), [0.96869704, -1.9539473, 0.47344671]),
])
def test_three_step_trajectories_match_pytorch(cls, kw, expected):
    np.testing.assert_allclose(three_steps(cls, **kw), expected, atol=5e-8)


def test_sgd_momentum_constant_gradient_and_adam_first_step():
    p = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(3):
        p.grad[...] = 1
        opt.step()
    assert p.data[0] == pytest.approx(0.439)
    p = nn.Parameter(np.array([1.0, 1.0], np.float32))
    p.grad[...] = [1e-3, 5]
    optim.Adam([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.9000009894, 0.8999999762], rtol=1e-7)
    assert p.data.dtype == np.float32


def test_adamw_decay_is_decoupled_from_the_gradient():
    """Zero loss gradient: AdamW shrinks p geometrically, (1 - lr*wd)**t; Adam's L2 term goes
    through the moments and is normalised away, so Adam+L2 moves every weight by about lr."""
    lr, wd = 0.01, 0.1
    p0 = np.array([3.0, -0.5, 0.2])
    a, b = nn.Parameter(p0.copy()), nn.Parameter(p0.copy())
    adamw, adam = optim.AdamW([a], lr=lr, weight_decay=wd), optim.Adam([b], lr=lr, weight_decay=wd)
    for _ in range(3):
        adamw.step()  # gradients stay zero
        adam.step()
    np.testing.assert_allclose(a.data, p0 * (1 - lr * wd) ** 3, rtol=1e-15)
    np.testing.assert_allclose(b.data, p0 - 3 * lr * np.sign(p0), atol=1e-4)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.05), lambda ps: optim.SGD(ps, lr=0.02, momentum=0.9),
    lambda ps: optim.SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.05), lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.0),
    lambda ps: optim.Adam(ps, lr=0.05, amsgrad=True)])
def test_minimises_a_convex_quadratic(make):
    """0.5*|A p - b|^2 has its minimum at the least-squares solution."""
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((8, 3)), rng.standard_normal(8)
    target = np.linalg.lstsq(A, b, rcond=None)[0]
    p = nn.Parameter(np.zeros(3))
    opt = make([p])
    sched = optim.CosineAnnealingLR(opt, T_max=3000)
    for _ in range(3000):
        opt.zero_grad()
        p.grad += A.T @ (A @ p.data - b)
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.data, target, atol=1e-3)


def train_toy(opt_name, steps=150, resume_at=None):
    """A 2-layer network on a fixed toy problem; returns the loss history and final parameters."""
    nn.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    make = {"sgd": lambda: optim.SGD(net.parameters(), lr=0.2, momentum=0.9),
            "adam": lambda: optim.Adam(net.parameters(), lr=0.01),
            "adamw": lambda: optim.AdamW(optim.split_weight_decay(net.named_parameters(), 0.05), lr=0.01)}
    opt = make[opt_name]()
    sched = optim.ChainedScheduler([optim.LinearWarmup(opt, 10), optim.CosineAnnealingLR(opt, steps)])
    losses = []
    for step in range(steps):
        if step == resume_at:  # rebuild everything from saved state, as a resumed run does
            saved = copy.deepcopy((net.state_dict(), opt.state_dict(), sched.state_dict()))
            nn.manual_seed(99)
            net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
            net.load_state_dict(saved[0])
            opt = make[opt_name]()
            sched = optim.ChainedScheduler([optim.LinearWarmup(opt, 10), optim.CosineAnnealingLR(opt, steps)])
            opt.load_state_dict(saved[1])
            sched.load_state_dict(saved[2])
        opt.zero_grad()
        losses.append(loss_fn(net(x), y))
        net.backward(loss_fn.backward())
        opt.step()
        sched.step()
    return losses, net.state_dict()


@pytest.mark.parametrize("name,pinned", [("sgd", 0.231836), ("adam", 0.315308), ("adamw", 0.318658)])
def test_two_layer_network_reaches_pinned_loss(name, pinned):
    """Pinned to the values this implementation gives (a regression pin), after learning."""
    losses, _ = train_toy(name)
    assert losses[0] > 1.0 and losses[-1] < 0.35 * losses[0]
    assert losses[-1] == pytest.approx(pinned, abs=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_resume_from_state_dict_is_bit_for_bit(name):
    straight, final_a = train_toy(name, steps=40)
    resumed, final_b = train_toy(name, steps=40, resume_at=17)
    assert straight == resumed
    for k in final_a:
        np.testing.assert_array_equal(final_a[k], final_b[k])


def test_parameter_groups_get_their_own_hyper_parameters():
    w, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0, "lr": 0.5}], lr=0.1, weight_decay=0.5)
    opt.step()  # zero gradients: only the decay acts
    np.testing.assert_allclose(w.data, 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(b.data, 1.0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 2))
    decay, no_decay = optim.split_weight_decay(net.named_parameters(), 0.01)
    assert [p.data.ndim for p in decay["params"]] == [4, 2]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_schedules():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        lrs.append(step.get_last_lr()[0])
        step.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = optim.SGD([p], lr=1.0)
    cos = optim.CosineAnnealingLR(opt, T_max=10, eta_min=0.1)
    values = [cos.get_last_lr()[0]] + [(cos.step(), cos.get_last_lr()[0])[1] for _ in range(12)]
    assert values[0] == 1.0 and values[5] == pytest.approx(0.55) and values[10] == pytest.approx(0.1)
    assert values[12] == pytest.approx(0.1)
    opt = optim.SGD([p], lr=1.0)
    chain = optim.ChainedScheduler([optim.LinearWarmup(opt, 4, start_factor=0.2), optim.StepLR(opt, 3, 0.1)])
    values = [chain.get_last_lr()[0]] + [(chain.step(), chain.get_last_lr()[0])[1] for _ in range(4)]
    np.testing.assert_allclose(values, [0.2, 0.4, 0.6, 0.08, 0.1])


def test_gradient_norm_and_clipping():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad[...] = [3.0, 0.0]
    b.grad[...] = [4.0]
    assert optim.global_grad_norm([a, b]) == 5.0
    assert optim.clip_grad_norm_([a, b], 1.0) == 5.0
    assert optim.global_grad_norm([a, b]) == pytest.approx(1.0, abs=1e-6)
    assert optim.clip_grad_norm_([a, b], 10.0) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD([p], lr=-1), "lr must be >= 0, got -1"),
    (lambda p: optim.AdamW([p], weight_decay=-0.1), "weight_decay must be >= 0"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
    (lambda p: optim.Adam([], lr=0.1), "empty parameter list"),
    (lambda p: optim.SGD([p], lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.SGD([p, p], lr=0.1), "more than one group"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make(nn.Parameter(np.zeros(2)))


def test_gradient_of_the_wrong_shape_is_refused():
    p = nn.Parameter(np.zeros(3))
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"a parameter of shape \(3,\) has a gradient of shape \(4,\)"):
        optim.SGD([p], lr=0.1).step()
