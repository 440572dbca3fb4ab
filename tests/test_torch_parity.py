"""Optional: the same numbers as PyTorch, on random inputs (skipped when torch is not installed)."""
import numpy as np
import pytest

import models
import nn

torch = pytest.importorskip("torch")
from benchmarks.torch_reference import convert  # noqa: E402

rng = np.random.default_rng(0)


def run_both(ours, x, upstream, train=True):
    """Forward and backward in both; returns (our outputs, dx), (torch outputs, dx), the torch module."""
    theirs = convert(ours)
    ours.train(train)
    theirs.train(train)
    outs = ours(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    ours.zero_grad()
    dx = ours.backward(*upstream(outs))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    touts = theirs(tx)
    touts = touts if isinstance(touts, tuple) else (touts,)
    sum((t * torch.from_numpy(g)).sum() for t, g in zip(touts, upstream(outs))).backward()
    return (outs, dx), ([t.detach().numpy() for t in touts], tx.grad.numpy()), theirs


@pytest.mark.parametrize("layer,shape", [
    (nn.Conv2d(3, 5, (1, 7), stride=(2, 1), padding=(0, 3)), (2, 3, 9, 11)),
    (nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2), (2, 3, 10, 9)),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 8, 9)),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 3, 8, 9)),
    (nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 10)),
    (nn.BatchNorm2d(3), (4, 3, 5, 5)),
    (nn.Linear(6, 4), (5, 6)),
])
def test_layers_match_torch(layer, shape):
    layer.double()
    x = rng.standard_normal(shape)
    g = lambda outs: [rng.standard_normal(o.shape) for o in outs]
    fixed = g([np.zeros(layer(x).shape)])
    (outs, dx), (touts, tdx), theirs = run_both(layer, x, lambda outs: fixed)
    np.testing.assert_allclose(outs[0], touts[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-10, atol=1e-12)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, dict(theirs.named_parameters())[name].grad.numpy(), rtol=1e-9, atol=1e-12)
    if isinstance(layer, nn.BatchNorm2d):
        np.testing.assert_allclose(layer.running_var.data, theirs.running_var.numpy(), rtol=1e-12)


def test_cross_entropy_with_smoothing_matches_torch():
    z, y = rng.standard_normal((6, 10)) * 3, rng.integers(0, 10, 6)
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    tz = torch.from_numpy(z).requires_grad_(True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.from_numpy(y), label_smoothing=0.1)
    tloss.backward()
    assert ce(z, y) == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), tz.grad.numpy(), atol=1e-14)


# Sizes where the last feature maps keep a few values per BN channel: at 1x1 maps and batch 3,
# BN's gradient is ill-conditioned (|dx| ~ 500) and float64 round-off differs at 1e-7.
@pytest.mark.parametrize("name,size", [("inception_v2", 64), ("inception_v3", 107)])
def test_whole_models_match_torch(name, size):
    """Training mode, aux heads included: outputs, input gradient, every parameter gradient."""
    nn.manual_seed(0)
    kwargs = {"aux_dropout": 0.0} if name == "inception_v2" else {}  # dropout masks cannot match
    ours = models.build(name, width=0.1, **kwargs).double()
    x = rng.standard_normal((4, 3, size, size))
    ups = None

    def upstream(outs):
        nonlocal ups
        ups = ups or [rng.standard_normal(o.shape) for o in outs]
        return ups
    (outs, dx), (touts, tdx), theirs = run_both(ours, x, upstream)
    for a, b in zip(outs, touts):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dx, tdx, rtol=1e-7, atol=1e-10 * np.abs(tdx).max())
    tgrads = dict(theirs.named_parameters())
    assert len(tgrads) == len(ours.parameters())
    for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-6, atol=1e-9, err_msg=n)
