"""Saliency and Grad-CAM (models/explain.py) against finite differences, in float64."""
import numpy as np
import pytest

import models
import nn
from models import explain
from nn.gradcheck import numerical_gradient


@pytest.fixture(scope="module")
def model():
    """A small Inception-V2 in float64 with trained-looking batch-norm statistics."""
    nn.manual_seed(0)
    net = models.build("inception_v2", width=0.05).double()
    rng = np.random.default_rng(0)
    for _ in range(3):   # a few training-mode passes, so that eval mode is not the identity BN
        net(rng.standard_normal((4, 3, 24, 24)))
    return net.eval()


def test_saliency_is_the_finite_difference_gradient_of_the_class_score(model):
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12))
    target = 3
    numeric = numerical_gradient(lambda: float(explain.class_scores(model, x, target)[0]), x, h=1e-6)
    sal = explain.saliency(model, x, target)
    assert sal.shape == (1, 12, 12)
    np.testing.assert_allclose(sal[0], np.abs(numeric[0]).max(axis=0), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("stage", [None, "inception_4a"])
def test_grad_cam_weights_are_the_spatial_mean_of_the_score_gradient(model, stage):
    x = np.random.default_rng(2).standard_normal((2, 3, 48, 48))
    target = np.array([1, 7])
    cam, alpha, A = explain.grad_cam(model, x, target, stage)
    stage = stage or explain.last_block(model)
    np.testing.assert_array_equal(A, explain.stage_output(model, x, stage))
    for n in range(2):
        a = A[n:n + 1].copy()
        dA = numerical_gradient(lambda: float(explain.logits_from(model, stage, a)[0, target[n]]), a, h=1e-6)[0]
        np.testing.assert_allclose(alpha[n], dA.mean(axis=(1, 2)), rtol=1e-5, atol=1e-9)
    assert cam.shape == (2, 48, 48) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)


def test_maps_follow_the_input_size_and_an_unknown_stage_is_named(model):
    x = np.random.default_rng(3).standard_normal((1, 3, 40, 32))
    assert explain.saliency(model, x, 0).shape == (1, 40, 32)
    assert explain.grad_cam(model, x, 0)[0].shape == (1, 40, 32)
    with pytest.raises(ValueError, match="has no stage 'conv9'"):
        explain.stage_output(model, x, "conv9")
