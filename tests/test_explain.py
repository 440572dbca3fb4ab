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
    stage = stage or explain.last_block(model, x)
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


def test_grad_cam_looks_at_the_last_block_with_a_map_to_point_at(model):
    """V2 at 32x32 (the quick preset) ends in 1x1 maps from inception_4e on: Grad-CAM takes
    inception_4d (2x2), and its map is not flat; at 64x64 the last block is 2x2 itself."""
    small = np.random.default_rng(3).standard_normal((1, 3, 32, 32))
    assert explain.stage_output(model, small, "inception_4e").shape[2:] == (1, 1)
    assert explain.last_block(model, small) == "inception_4d"
    cam, _, A = explain.grad_cam(model, small, 5)
    assert A.shape[2:] == (2, 2) and cam.max() == 1.0 and cam.min() < 1.0
    assert explain.last_block(model, np.zeros((1, 3, 64, 64))) == explain.last_block(model) == "inception_5b"
