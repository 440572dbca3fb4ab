"""The gradient checker itself: it must catch a wrong backward, and refuse float32."""
import numpy as np
import pytest

import nn
from nn.gradcheck import check_directional, check_module, numerical_gradient, rel_error


class WrongBN(nn.BatchNorm2d):
    """Batch norm whose backward forgets the mean terms: the classic mistake."""

    def backward(self, dout):
        super().backward(dout)
        return dout * (self.weight.data * self.cache["inv_std"]).reshape(1, -1, 1, 1)


def test_check_module_catches_a_wrong_backward(rng):
    x = rng.standard_normal((4, 2, 3, 3))
    assert check_module(nn.BatchNorm2d(2).double(), x)["input"] < 1e-6
    assert check_module(WrongBN(2).double(), x)["input"] > 1e-2


def test_check_directional_catches_a_wrong_backward(rng):
    x = rng.standard_normal((4, 2, 3, 3))
    assert check_directional(nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).double(), x)[2] < 1e-7
    assert check_directional(nn.Sequential(nn.Conv2d(2, 2, 1), WrongBN(2)).double(), x)[2] > 1e-3


def test_numerical_gradient_of_a_known_function():
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(numerical_gradient(lambda: float(np.sum(x ** 3)), x), 3 * x ** 2, rtol=1e-9)


def test_rel_error():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2)


def test_float32_is_refused(rng):
    with pytest.raises(ValueError, match="use float64"):
        check_module(nn.Linear(2, 2), rng.standard_normal((2, 2)).astype(np.float32))
