"""CrossEntropyLoss: PyTorch's reference numbers, eps/K smoothing, stability, gradient."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.gradcheck import numerical_gradient, rel_error

Z = np.array([[2, 1, 0.1], [0.5, 2.5, -1]])
Y = np.array([0, 2])


@pytest.mark.parametrize("eps,loss,grad", [
    (0.0, 2.0351041117, [[-0.17049943, 0.12121649, 0.04928295], [0.05805727, 0.42898841, -0.48704567]]),
    (0.1, 2.0001041117, [[-0.13716610, 0.10454982, 0.03261628], [0.04139060, 0.41232174, -0.45371234]]),
])
def test_reference_loss_and_gradient(eps, loss, grad):
    ce = nn.CrossEntropyLoss(label_smoothing=eps)
    assert ce(Z, Y) == pytest.approx(loss, abs=1e-9)
    np.testing.assert_allclose(ce.backward(), grad, atol=1e-8)


@pytest.mark.parametrize("eps,loss", [(0.0, 0.5744379396), (0.1, 0.7244379396)])
def test_reference_single_sample(eps, loss):
    z = np.array([[2, 1, 0, -1, 0.5]])
    assert nn.CrossEntropyLoss(label_smoothing=eps)(z, np.array([0])) == pytest.approx(loss, abs=1e-9)


def test_reference_float32():
    z = np.array([[1, 2, 3, 4], [-1, 0, 1, 0.5]], np.float32)
    y = np.array([3, 0])
    assert nn.CrossEntropyLoss()(z, y) == pytest.approx(1.5933784, abs=1e-6)
    assert nn.CrossEntropyLoss(label_smoothing=0.1)(z, y) == pytest.approx(1.6121284, abs=1e-6)


def test_smoothing_spreads_eps_over_all_k_classes():
    """K=2, eps=0.1: the minimiser is softmax [0.95, 0.05], not [0.9, 0.1]."""
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    z = np.array([[np.log(0.95), np.log(0.05)]])
    ce(z, np.array([0]))
    np.testing.assert_allclose(ce.backward(), 0, atol=1e-12)


def test_finite_at_extreme_logits():
    ce = nn.CrossEntropyLoss()
    assert ce(np.array([[1000, 0, -1000]], np.float32), np.array([2])) == pytest.approx(2000.0)
    assert np.isfinite(ce.backward()).all()


def test_ignore_index_and_sum_reduction():
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    full = nn.CrossEntropyLoss()(Z[:1], Y[:1])
    assert ce(Z, np.array([0, -100])) == pytest.approx(full)
    np.testing.assert_array_equal(ce.backward()[1], 0)
    assert nn.CrossEntropyLoss(reduction="sum")(Z, Y) == pytest.approx(2 * 2.0351041117, abs=1e-9)


@given(n=st.integers(1, 5), k=st.integers(2, 6), eps=st.floats(0, 0.5))
def test_gradient_matches_finite_differences(n, k, eps):
    rng = np.random.default_rng(n * 10 + k)
    z = rng.standard_normal((n, k)) * 3
    y = rng.integers(0, k, n)
    ce = nn.CrossEntropyLoss(label_smoothing=eps)
    ce(z, y)
    analytic = ce.backward()
    assert rel_error(analytic, numerical_gradient(lambda: ce(z, y), z)) < 1e-7


def test_bad_labels_and_shapes():
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\] for 3 classes, got \[3, 7\]"):
        ce(Z, np.array([3, 7]))
    with pytest.raises(ValueError, match=r"expected integer targets of shape \(2,\)"):
        ce(Z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected logits as a 2-D float array"):
        ce(Z.ravel(), Y)


def test_an_infinitely_unlikely_class_adds_nothing():
    """A logit of -inf in a class that is not the target is a probability of 0: the loss stays
    finite, as PyTorch's (0.3133 here), and so does its gradient; with smoothing that class gets
    target mass, so the loss is infinite, as PyTorch's."""
    z = np.array([[2.0, -np.inf, 1.0]], np.float32)
    ce = nn.CrossEntropyLoss()
    assert ce(z, np.array([0])) == pytest.approx(0.3132617, abs=1e-6)
    np.testing.assert_allclose(ce.backward(), [[-0.26894143, 0.0, 0.26894143]], atol=1e-7)
    assert nn.CrossEntropyLoss(label_smoothing=0.1)(z, np.array([0])) == np.inf


def test_logits_at_the_edge_of_float32():
    """+-3e38: their difference overflows to inf; the loss is 0 for the right class, inf for the
    wrong one, never NaN."""
    z = np.array([[3e38, -3e38], [-3e38, 3e38]], np.float32)
    ce = nn.CrossEntropyLoss(reduction="sum")
    assert ce(z, np.array([0, 1])) == 0.0
    np.testing.assert_array_equal(ce.backward(), np.zeros((2, 2)))
    assert ce(z, np.array([1, 1])) == np.inf


def test_a_batch_whose_targets_are_all_ignored():
    """PyTorch: a mean over no sample is NaN, and the gradient is zero everywhere."""
    ce = nn.CrossEntropyLoss(ignore_index=-1)
    assert np.isnan(ce(Z, np.array([-1, -1])))
    np.testing.assert_array_equal(ce.backward(), np.zeros_like(Z))
