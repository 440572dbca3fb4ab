"""Pooling: PyTorch's ceil-mode sizes, divisors, first-max routing, adaptive bins, gradients."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.gradcheck import check_module
from nn.pooling import adaptive_bins
from nn.shapes import output_size as pool_output_size
from tests.conftest import assert_gradients_ok


@pytest.mark.parametrize("size,k,s,p,ceil,out", [
    (112, 3, 2, 0, False, 55), (112, 3, 2, 0, True, 56), (5, 2, 2, 1, True, 3),
    (147, 3, 2, 0, False, 73), (6, 3, 2, 1, True, 4), (5, 3, 2, 0, True, 2)])
def test_output_size(size, k, s, p, ceil, out):
    assert pool_output_size(size, k, s, p, ceil_mode=ceil) == out


def test_padding_larger_than_half_the_kernel_is_refused():
    with pytest.raises(ValueError, match="padding should be at most half of the kernel size"):
        nn.MaxPool2d(3, padding=2)


def test_ceil_mode_max_and_avg_on_5x5():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, ceil_mode=True)(x)[0, 0], [[12, 14], [22, 24]])
    np.testing.assert_array_equal(nn.AvgPool2d(3, 2, ceil_mode=True)(x)[0, 0], [[6, 8], [16, 18]])


def test_max_pool_pads_with_minus_infinity_and_propagates_nan():
    x = -np.ones((1, 1, 2, 2))
    assert (nn.MaxPool2d(3, 1, 1)(x) == -1).all()
    x = np.array([[[[1.0, np.nan], [3.0, 4.0]]]])
    assert np.isnan(nn.MaxPool2d(2)(x)[0, 0, 0, 0])


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_max_pool_routes_ties_to_the_first_maximum_and_accumulates(backend, monkeypatch):
    if backend == "numba" and not nn.kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(nn.kernels, "_backend", backend)
    pool = nn.MaxPool2d(2)
    pool(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1)))[0, 0], [[1, 0], [0, 0]])
    pool(np.array([[[[1.0, 5], [5, 1]]]]))
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1)))[0, 0], [[0, 1], [0, 0]])
    pool = nn.MaxPool2d(2, 1)
    pool(np.array([[[[1.0, 2, 1], [2, 9, 2], [1, 2, 1]]]]))
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 2, 2)))[0, 0],
                                  [[0, 0, 0], [0, 4, 0], [0, 0, 0]])


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_windows_without_a_maximum_route_as_pytorch(backend, stride, monkeypatch):
    """A window of -inf (and padding) sends its gradient to its first input pixel, never to the
    padding; a window with NaN to its last NaN (PyTorch's CPU kernel; indices taken from it)."""
    if backend == "numba" and not nn.kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(nn.kernels, "_backend", backend)
    x = np.full((2, 1, 4, 4), -np.inf)
    x[:, 0, 3, 3] = 1.0
    pool = nn.MaxPool2d(3, stride, 1)
    pool(x)
    expected = {1: [0, 0, 1, 2, 0, 0, 1, 2, 4, 4, 15, 15, 8, 8, 15, 15], 2: [0, 1, 4, 15]}[stride]
    np.testing.assert_array_equal(pool.argmax()[1, 0].ravel(), expected)
    dx = pool.backward(np.ones(pool.cache["offset"].shape))
    np.testing.assert_array_equal(dx[1, 0].ravel(), np.bincount(expected, minlength=16))
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 1] = x[0, 0, 2, 2] = np.nan
    pool = nn.MaxPool2d(3, stride, 1)
    pool(x)
    expected = {1: [1, 1, 1, 1, 8, 8, 3, 8, 8], 2: [1, 1, 3, 8]}[stride]
    np.testing.assert_array_equal(pool.argmax().ravel(), expected)


def test_avg_pool_divisors_with_and_without_padding():
    x = np.arange(1.0, 17).reshape(1, 1, 4, 4)
    assert nn.AvgPool2d(3, 1, 1)(x)[0, 0, 0, 0] == pytest.approx(1.5556, abs=1e-4)
    assert nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x)[0, 0, 0, 0] == pytest.approx(3.5)
    y = nn.AvgPool2d(3, 2, 1, ceil_mode=True)(np.ones((1, 1, 6, 6)))
    np.testing.assert_allclose(y[0, 0, :, -1], [1 / 3, 0.5, 0.5, 0.25], atol=1e-12)
    assert nn.AvgPool2d(2, divisor_override=1)(np.ones((1, 1, 2, 2)))[0, 0, 0, 0] == 4


def test_avg_pool_backward_reference_values():
    pool = nn.AvgPool2d(3, 1, 1)
    pool(np.ones((1, 1, 4, 4)))
    dx = pool.backward(np.ones((1, 1, 4, 4)))[0, 0]
    assert dx[0, 0] == pytest.approx(4 / 9) and dx[0, 1] == pytest.approx(6 / 9) and dx[1, 1] == pytest.approx(1.0)
    pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    pool(np.ones((1, 1, 4, 4)))
    dx = pool.backward(np.ones((1, 1, 4, 4)))[0, 0]
    assert dx[0, 0] == pytest.approx(0.69444, abs=1e-5) and dx[1, 1] == pytest.approx(1.36111, abs=1e-5)


def test_adaptive_bins_and_backward():
    assert adaptive_bins(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert adaptive_bins(10, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]
    pool = nn.AdaptiveAvgPool2d((1, 3))
    pool(np.ones((1, 1, 1, 7)))
    np.testing.assert_allclose(pool.backward(np.ones((1, 1, 1, 3)))[0, 0, 0],
                               [1 / 3, 1 / 3, 2 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3])
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(x)[:, :, 0, 0], x.mean(axis=(2, 3)))
    assert nn.AdaptiveAvgPool2d((None, 2))(x).shape == (2, 3, 5, 2)


pool_args = dict(k=st.tuples(st.integers(1, 4), st.integers(1, 4)), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
                 ceil=st.booleans(), extra=st.integers(0, 5), data=st.data())


def _padding_and_input(k, s, extra, data):
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    H, W = k[0] + extra, k[1] + data.draw(st.integers(0, 5))
    # distinct values: no ties, so the max is differentiable
    x = np.random.default_rng(H * 31 + W).permutation(2 * 2 * H * W).reshape(2, 2, H, W) / 10.0
    return p, x


@given(**pool_args)
def test_max_pool_gradients(k, s, ceil, extra, data):
    p, x = _padding_and_input(k, s, extra, data)
    assert_gradients_ok(check_module(nn.MaxPool2d(k, s, p, ceil_mode=ceil), x))


@given(**pool_args, include=st.booleans())
def test_avg_pool_gradients(k, s, ceil, extra, data, include):
    p, x = _padding_and_input(k, s, extra, data)
    assert_gradients_ok(check_module(nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=include), x))


@given(h=st.integers(1, 9), w=st.integers(1, 9), oh=st.integers(1, 4), ow=st.integers(1, 4))
def test_adaptive_avg_pool_gradients(h, w, oh, ow):
    x = np.random.default_rng(h * 10 + w).standard_normal((2, 2, h, w))
    assert_gradients_ok(check_module(nn.AdaptiveAvgPool2d((oh, ow)), x))


def test_window_larger_than_input_is_an_error():
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=\(3, 3\).*larger than the padded input 2x2"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"AvgPool2d.*expected a 4-D input"):
        nn.AvgPool2d(2)(np.zeros((2, 2), np.float32))


def test_max_pool_keeps_one_byte_per_output():
    """The window offset of each maximum, not a flat index: a quarter of int32's memory."""
    pool = nn.MaxPool2d(3, 2, 1)
    y = pool(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    assert pool.cache["offset"].dtype == np.uint8 and pool.cache["offset"].shape == y.shape
    assert nn.MaxPool2d(17).offset_dtype == np.int32   # 289 pixels: more than a byte counts
