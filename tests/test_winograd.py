"""Winograd F(2x2, 3x3): the transforms, their transposes, the layer's gradients and float32 rounding."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.conv import winograd
from nn.gradcheck import check_module
from nn.conv.winograd import (AT, BT, G, winograd_input_backward_reference, winograd_input_reference,
                         winograd_output_backward_reference, winograd_output_reference)
from tests.conftest import assert_gradients_ok


def test_one_dimensional_f23_is_a_correlation(rng):
    """A^T [(G g) * (B^T d)] gives the two outputs of correlating 4 inputs with 3 taps, with 4
    multiplications instead of 6: the identity the 2-D version applies along both axes."""
    for _ in range(5):
        d, g = rng.standard_normal(4), rng.standard_normal(3)
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), [d[0:3] @ g, d[1:4] @ g], atol=1e-14)


def test_two_dimensional_tile(rng):
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    direct = [[(d[u:u + 3, v:v + 3] * g).sum() for v in range(2)] for u in range(2)]
    np.testing.assert_allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, direct, atol=1e-13)


@pytest.mark.parametrize("H_out,W_out,tiles,fill", [(28, 28, (14, 14), 1), (147, 35, (74, 18), 5145 / 5328),
                                                     (1, 2, (1, 1), 0.5), (3, 3, (2, 2), 9 / 16)])
def test_tile_counts_and_fill(H_out, W_out, tiles, fill):
    assert winograd.tiles(H_out, W_out) == tiles
    assert winograd.fill(H_out, W_out) == pytest.approx(fill)


def test_each_backward_transform_is_the_transpose_of_its_forward(rng):
    """<f(a), b> == <a, f^T(b)> for random a, b: the backward kernels are exact transposes."""
    N, C, H, W, padding = 2, 3, 5, 6, (1, 0)
    th, tw = winograd.tiles(H + 2 - 2, W - 2)
    T = N * th * tw
    x, dV = rng.standard_normal((N, C, H, W)), rng.standard_normal((16, C, T))
    V, _ = winograd_input_reference(x, padding, th, tw, np.empty((16, C, T)))
    dx = winograd_input_backward_reference(dV, padding, th, tw, np.empty_like(x))
    assert np.vdot(V, dV) == pytest.approx(np.vdot(x, dx), rel=1e-12)

    M, dy = rng.standard_normal((16, 4, T)), rng.standard_normal((N, 4, H, W - 2))
    y = winograd_output_reference(M, th, tw, np.empty_like(dy))
    dM = winograd_output_backward_reference(dy, th, tw, np.empty_like(M))
    assert np.vdot(y, dy) == pytest.approx(np.vdot(M, dM), rel=1e-12)

    w, dU = rng.standard_normal((4, C, 3, 3)), rng.standard_normal((16, 4, C))
    assert np.vdot(winograd.transform_weight(w), dU) == pytest.approx(
        np.vdot(w, winograd.transform_weight_backward(dU)), rel=1e-12)


@given(n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3), ph=st.integers(0, 3),
       pw=st.integers(0, 3), extra_h=st.integers(0, 5), extra_w=st.integers(0, 5), bias=st.booleans(),
       fused=st.booleans())
def test_gradients_match_finite_differences(n, c_in, c_out, ph, pw, extra_h, extra_w, bias, fused):
    """Odd and even output sizes (half-filled edge tiles), paddings from 0 to 3, on the batch-wide
    path and the fused one."""
    H, W = max(1, 3 - 2 * ph) + extra_h, max(1, 3 - 2 * pw) + extra_w
    conv = nn.Conv2d(c_in, c_out, 3, padding=(ph, pw), bias=bias, algorithm="winograd").double()
    x = np.random.default_rng(H * 11 + W).standard_normal((n, c_in, H, W))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.conv, "WINOGRAD_FUSED_MIN_FLOATS", 0 if fused else 10 ** 12)
        assert_gradients_ok(check_module(conv, x))


def test_fused_path_is_picked_by_the_size_of_V_and_M(monkeypatch, rng):
    """At WINOGRAD_FUSED_MIN_FLOATS floats of V and M (16 * (C_in + C_out) * tiles) the layer
    runs fused and keeps no V; one float fewer and it runs batch-wide, keeping V (4x its input)
    for backward when it is small. Both give the same y, dx, dW and db."""
    conv = nn.Conv2d(3, 5, 3, padding=1, algorithm="winograd").double()
    x, g = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((2, 5, 9, 8))
    floats = 16 * (3 + 5) * 2 * 5 * 4                         # 5 x 4 tiles per image
    results = {}
    for threshold, fused in [(floats, True), (floats + 1, False)]:
        monkeypatch.setattr(nn.conv, "WINOGRAD_FUSED_MIN_FLOATS", threshold)
        conv.zero_grad()
        y = conv(x)
        assert conv.cache["path"] == ("winograd_fused" if fused else "winograd")
        assert (conv.cache.get("V") is not None) != fused
        results[fused] = (y, conv.backward(g), conv.weight.grad.copy(), conv.bias.grad.copy())
    for fused, batch_wide in zip(results[True], results[False]):
        np.testing.assert_allclose(fused, batch_wide, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_in,c_out,size", [(64, 96, 28), (192, 192, 17), (32, 32, 35)])
def test_float32_rounding_is_like_im2col(c_in, c_out, size, rng, monkeypatch):
    """Measured: every path lands within 1e-6 of the float64 result (relative to its largest
    value); the fused one reorders its sums and fuses multiply-adds, and stays as close."""
    x = rng.standard_normal((2, c_in, size, size)).astype(np.float32)
    g = rng.standard_normal((2, c_out, size, size)).astype(np.float32)
    nn.manual_seed(0)
    exact = nn.Conv2d(c_in, c_out, 3, padding=1).double()
    wanted = (exact(x.astype(np.float64)), exact.backward(g.astype(np.float64)))
    for algorithm, fused_from in (("winograd", 10 ** 12), ("winograd", 0), ("im2col", 0)):
        monkeypatch.setattr(nn.conv, "WINOGRAD_FUSED_MIN_FLOATS", fused_from)
        nn.manual_seed(0)
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, algorithm=algorithm)
        got = (conv(x), conv.backward(g))
        for ours, ref, grad in [(got[0], wanted[0], "y"), (got[1], wanted[1], "dx"),
                                (conv.weight.grad, exact.weight.grad, "dW")]:
            error = np.abs(ours - ref).max() / np.abs(ref).max()
            assert error < 2e-6, f"{algorithm} (fused from {fused_from} floats) {grad}: {error:.1e}"


@pytest.mark.parametrize("fused_from", [10 ** 12, 0])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_an_infinite_input_gives_what_im2col_gives(fused_from, value, rng, monkeypatch):
    """Winograd's transforms subtract inputs from each other (inf - inf = NaN); the layer finds
    an input that is not finite and computes that batch with im2col, forward and backward."""
    monkeypatch.setattr(nn.conv, "WINOGRAD_FUSED_MIN_FLOATS", fused_from)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x[1, 2, 3, 4] = value
    g = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    results = []
    for algorithm in ("winograd", "im2col"):
        nn.manual_seed(0)
        conv = nn.Conv2d(3, 4, 3, padding=1, algorithm=algorithm)
        results.append((conv(x), conv.backward(g), conv.weight.grad))
    assert conv.cache["path"] == "im2col"
    for got, wanted in zip(*results):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(wanted))
        np.testing.assert_allclose(got, wanted, rtol=1e-5, atol=1e-5)
    assert np.isinf(results[0][0]).any() == (not np.isnan(value))
