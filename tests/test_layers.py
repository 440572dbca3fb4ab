"""Linear, ReLU, Flatten, Identity, Dropout: values, gradients, modes."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.gradcheck import check_module
from tests.conftest import assert_gradients_ok


@given(n=st.integers(1, 4), i=st.integers(1, 6), o=st.integers(1, 5), bias=st.booleans())
def test_linear_gradients(n, i, o, bias):
    x = np.random.default_rng(n + 10 * i).standard_normal((n, i))
    assert_gradients_ok(check_module(nn.Linear(i, o, bias=bias).double(), x))


def test_linear_values_and_layout():
    lin = nn.Linear(3, 2).double()
    lin.weight.data[...] = [[1, 2, 3], [0, -1, 0]]
    lin.bias.data[...] = [0.5, 1]
    np.testing.assert_allclose(lin(np.array([[1.0, 1, 1]])), [[6.5, 0]])
    assert np.abs(nn.Linear(100, 10).weight.data).max() <= 0.1
    with pytest.raises(ValueError, match=r"Linear\(3, 2\): expected 3 channels on axis 1, got shape \(1, 4\)"):
        lin(np.zeros((1, 4)))


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_relu_gradients_away_from_the_kink(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.uniform(0.1, 1, shape) * rng.choice([-1, 1], shape)
    assert_gradients_ok(check_module(nn.ReLU(), x))


def test_relu_values_and_inplace():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(nn.ReLU()(x), [0, 0, 2])
    relu = nn.ReLU(inplace=True)
    y = relu(x)
    assert y is x and x[0] == 0
    np.testing.assert_array_equal(relu.backward(np.ones(3)), [0, 0, 1])


def test_flatten_and_identity(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    flat = nn.Flatten()
    assert flat(x).shape == (2, 60)
    assert flat.backward(np.ones((2, 60))).shape == (2, 3, 4, 5)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    ident = nn.Identity()
    assert ident(x) is x and ident.backward(x) is x


def test_dropout_values_scale_and_eval_identity():
    drop = nn.Dropout(0.2, seed=0)
    x = np.ones((200, 500), np.float32)
    y = drop(x)
    assert set(np.unique(y)) == {0.0, np.float32(1.25)}
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    assert (y == 0).mean() == pytest.approx(0.2, abs=0.01)
    np.testing.assert_array_equal(drop.backward(x), y)  # dx = dout * mask / (1-p)
    drop.eval()
    assert drop(x) is x
    assert drop.backward(x) is x
    drop.train()
    assert not nn.Dropout(1.0)(x).any()
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)


def test_dropout_is_reproducible_by_seed(rng):
    x = rng.standard_normal((4, 8))
    a, b = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    first = a(x)
    np.testing.assert_array_equal(first, b(x))
    second = a(x)   # the stream advances: a new mask on the next call ...
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, b(x))  # ... the same one for the same seed
    a.reseed(3)
    np.testing.assert_array_equal(a(x), first)


def test_dropout_gradients(rng):
    assert_gradients_ok(check_module(nn.Dropout(0.3), rng.standard_normal((3, 7))))
