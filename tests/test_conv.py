"""Conv2d: PyTorch's size formula and reference numbers, init, gradients, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.shapes import live_taps, output_size as conv_output_size
from nn.gradcheck import check_module
from tests.conftest import assert_gradients_ok


@pytest.mark.parametrize("size,k,s,p,d,out", [
    (299, 3, 2, 0, 1, 149), (149, 3, 1, 0, 1, 147), (147, 3, 1, 1, 1, 147), (224, 7, 2, 3, 1, 112),
    (35, 3, 2, 0, 1, 17), (17, 3, 2, 0, 1, 8), (28, 3, 1, 2, 2, 28)])
def test_output_size_formula(size, k, s, p, d, out):
    assert conv_output_size(size, k, s, p, d) == out


@given(size=st.integers(1, 9), k=st.integers(1, 7), s=st.integers(1, 3), d=st.integers(1, 2), data=st.data())
def test_live_taps_hold_every_tap_that_meets_the_input(size, k, s, d, data):
    p = data.draw(st.integers(0, d * (k - 1)))
    out = conv_output_size(size, k, s, p, d)
    if out < 1:
        return
    live = [i for i in range(k) if any(0 <= o * s - p + i * d < size for o in range(out))]
    lo, hi = live_taps(size, k, s, p, d)
    assert lo * d <= p                                  # the cut kernel's padding stays >= 0
    if live:
        assert lo <= live[0] and live[-1] < hi
    if s == 1 and d == 1 and live:                      # and no more than those
        assert (lo, hi) == (min(live[0], p), live[-1] + 1)


@pytest.mark.parametrize("kernel,padding,stride,size,taps", [
    (3, 1, 1, (1, 1), ((1, 2), (1, 2))),         # Inception-V2's last blocks at 32x32: the centre
    ((7, 1), (3, 0), 1, (3, 3), ((1, 6), (0, 1))),   # Inception-V3's 7x1 at 75x75: five rows of seven
    ((1, 3), (0, 1), 1, (1, 1), ((0, 1), (1, 2))),
    (3, 1, 2, (1, 2), ((1, 2), (1, 3))),
    (3, 1, 1, (2, 2), None),                     # every tap meets the input somewhere
])
def test_taps_that_only_meet_the_padding_are_left_out(kernel, padding, stride, size, taps, rng):
    x = rng.standard_normal((2, 3) + size)
    results = []
    for algorithm in ("auto", "im2col"):   # a forced algorithm convolves with the whole kernel
        nn.manual_seed(0)
        conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, algorithm=algorithm).double()
        y = conv(x)
        g = np.random.default_rng(1).standard_normal(y.shape)
        results.append((y, conv.backward(g), conv.weight.grad.copy(), conv.bias.grad.copy()))
        if algorithm == "auto":
            assert conv.cache["taps"] == taps
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_asymmetric_kernels_keep_the_size():
    x = np.zeros((1, 4, 17, 17), np.float32)
    assert nn.Conv2d(4, 5, (1, 7), padding=(0, 3))(x).shape == (1, 5, 17, 17)
    assert nn.Conv2d(4, 5, (7, 1), padding=(3, 0))(x).shape == (1, 5, 17, 17)
    assert nn.Conv2d(4, 5, 3, padding="same")(x).shape == (1, 5, 17, 17)
    assert nn.Conv2d(4, 5, 3, padding="valid")(x).shape == (1, 5, 15, 15)


def reference_conv():
    """PyTorch 2.13's conv2d on arange input and weights, stride 2, padding 1 (its figures,
    hard-coded: no torch needed)."""
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    conv.weight.data[...] = np.arange(54).reshape(3, 2, 3, 3) / 100 - 0.15
    conv.bias.data[...] = [0.5, -1, 2]
    return conv, np.arange(50.0).reshape(1, 2, 5, 5) / 10


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_reference_values_forward_and_backward(backend, monkeypatch):
    if backend == "numba" and not nn.kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(nn.kernels, "_backend", backend)
    conv, x = reference_conv()
    y = conv(x)
    assert y.shape == (1, 3, 3, 3)
    np.testing.assert_allclose(y[0, :, 0, 0], [0.424, 1.156, 6.388], atol=1e-12)
    assert y.sum() == pytest.approx(112.872, abs=1e-9)
    dx = conv.backward(np.arange(27.0).reshape(1, 3, 3, 3) / 10)
    assert dx.sum() == pytest.approx(74.865, abs=1e-9)
    np.testing.assert_allclose(dx[0, 0, :2, :2], [[0.513, 1.044], [1.062, 2.16]], atol=1e-12)
    assert conv.weight.grad.sum() == pytest.approx(976.71, abs=1e-9)
    np.testing.assert_allclose(conv.weight.grad[0, 0],
                               [[3.2, 4.49, 2.72], [4.47, 6.24, 3.75], [1.76, 2.33, 1.28]], atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, [3.6, 11.7, 19.8], atol=1e-12)


def test_cross_correlation_not_convolution():
    """A delta input reproduces the kernel flipped in the output (no kernel flip in forward)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    conv.weight.data[0, 0] = np.arange(9.0).reshape(3, 3)
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1
    np.testing.assert_array_equal(conv(x)[0, 0, 1:4, 1:4], np.arange(9.0).reshape(3, 3)[::-1, ::-1])


def test_default_init_bounds_and_spread():
    nn.manual_seed(0)
    conv = nn.Conv2d(16, 256, 3)
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert conv.weight.data.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    assert conv.weight.data.dtype == np.float32
    assert nn.Conv2d(128, 8, (1, 7)).weight.data.max() <= 1 / np.sqrt(128 * 7)


@given(n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), extra=st.integers(0, 4),
       bias=st.booleans())
def test_gradients_match_finite_differences(n, c_in, c_out, kh, kw, sh, sw, ph, pw, dh, extra, bias):
    H = max(1, dh * (kh - 1) + 1 - 2 * ph) + extra
    W = max(1, kw - 2 * pw) + extra
    conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, 1),
                     bias=bias).double()
    x = np.random.default_rng(H * 7 + W).standard_normal((n, c_in, H, W))
    assert_gradients_ok(check_module(conv, x))


@given(n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3),
       kh=st.integers(1, 7), kw=st.integers(1, 7), extra=st.integers(0, 3), bias=st.booleans(),
       data=st.data())
def test_mec_gradients_match_finite_differences(n, c_in, c_out, kh, kw, extra, bias, data):
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    H, W = max(1, kh - 2 * ph) + extra, max(1, kw - 2 * pw) + data.draw(st.integers(0, 3))
    conv = nn.Conv2d(c_in, c_out, (kh, kw), padding=(ph, pw), bias=bias, algorithm="mec").double()
    x = np.random.default_rng(H * 7 + W).standard_normal((n, c_in, H, W))
    assert_gradients_ok(check_module(conv, x))


def test_mec_reads_overlapping_slices_in_place_and_dx_is_the_flipped_convolution(rng):
    from nn.conv.mec import flipped, mec_lower_reference, row_slices
    conv = nn.Conv2d(3, 5, (3, 2), padding=(1, 1), bias=False, algorithm="mec").double()
    x = rng.standard_normal((2, 3, 6, 4))
    y = conv(x)
    R = mec_lower_reference(x, 2, (1, 1), 5, np.empty((2 * 3, 6 + 2, 2 * 5)))
    assert R.shape == (2 * 3, 6 + 2, 2 * 5)                   # KW copies: (KW*C, H + 2*ph, N*W_out)
    slices = row_slices(R, 3, 6)
    for i, S in enumerate(slices):                             # kernel row i: input rows i .. i+5
        assert S.shape == (6, 6 * 2 * 5) and np.shares_memory(S, R)
        np.testing.assert_array_equal(S.reshape(6, 6, 2 * 5), R[:, i:i + 6])
    # one GEMM per kernel row, summed: W_i[o, (j, c)] = W[o, c, i, j]
    Y = sum(conv.weight.data[:, :, i].transpose(0, 2, 1).reshape(5, 6) @ S for i, S in enumerate(slices))
    np.testing.assert_allclose(Y.reshape(5, 6, 2, 5).transpose(2, 0, 1, 3), y, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = conv.backward(g)
    # dx is the correlation of dY, padded by K-1-p, with the kernel flipped and transposed
    transposed = nn.Conv2d(5, 3, (3, 2), padding=(1, 0), bias=False, algorithm="im2col").double()
    transposed.weight.data[...] = flipped(conv.weight.data)
    np.testing.assert_allclose(dx, transposed(g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm,kernel,stride", [
    ("im2col", 3, 2), ("pointwise", 1, 1), ("winograd", 3, 1), ("mec", (1, 7), 1), ("mec", 5, 1)])
def test_outputs_are_never_overwritten_by_the_next_call(algorithm, kernel, stride, rng):
    # at batch size 1 a transposed scratch result is already contiguous: it must still be copied
    conv = nn.Conv2d(2, 3, kernel, stride=stride, algorithm=algorithm).double()
    x = rng.standard_normal((1, 2, 9, 9))
    y = conv(x)
    dx = conv.backward(np.ones_like(y))
    y_before, dx_before = y.copy(), dx.copy()
    conv.backward(2 * np.ones_like(conv(2 * x)))
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(dx, dx_before)


@pytest.mark.parametrize("keep_bytes,kept", [(2 ** 20, True), (0, False)])
def test_columns_are_kept_when_small_and_rebuilt_when_large(keep_bytes, kept, rng, monkeypatch):
    """cols are KH*KW/(sh*sw) times the input: kept for backward up to KEEP_BYTES, rebuilt from
    the input above; either way dW = dY @ cols.T and dx = col2im(W.T @ dY)."""
    from nn import workspace
    from nn.conv.im2col import col2im_reference, im2col_reference
    monkeypatch.setattr(workspace, "KEEP_BYTES", keep_bytes)
    for stride in (2, 1):
        conv = nn.Conv2d(3, 4, 3, stride=stride, bias=False, algorithm="im2col").double()
        x = rng.standard_normal((2, 3, 9, 9))
        g = rng.standard_normal(conv(x).shape)
        assert (conv.cache["cols"] is not None) == kept and conv.cache["x"] is x
        dx = conv.backward(g)
        Ho = g.shape[2]
        args = (3, 3, (stride, stride), (0, 0), (1, 1), Ho, Ho)
        cols = im2col_reference(x, *args, np.empty((27, 2 * Ho * Ho)))
        dY = g.transpose(1, 0, 2, 3).reshape(4, -1)
        np.testing.assert_allclose(conv.weight.grad, (dY @ cols.T).reshape(4, 3, 3, 3), rtol=1e-12, atol=1e-12)
        w2 = conv.weight.data.reshape(4, -1)
        np.testing.assert_allclose(dx, col2im_reference(w2.T @ dY, *args, np.empty_like(x)), rtol=1e-12, atol=1e-12)


def test_backward_twice_doubles_parameter_gradients(rng):
    conv = nn.Conv2d(2, 3, 3).double()
    x, g = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    conv(x)
    dx1 = conv.backward(g)
    w1 = conv.weight.grad.copy()
    dx2 = conv.backward(g)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_allclose(conv.weight.grad, 2 * w1)


@pytest.mark.parametrize("x,match", [
    (np.zeros((3, 8, 8), np.float32), r"expected a 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (np.zeros((1, 4, 8, 8), np.float32), r"expected 3 channels on axis 1, got shape \(1, 4, 8, 8\)"),
    (np.zeros((1, 3, 8, 8), np.int64), r"expected a floating-point input .* got dtype int64"),
    (np.zeros((1, 3, 4, 4), np.float32), r"kernel \(dilated\) is larger than the padded input 4x4"),
])
def test_bad_input_names_the_layer_and_the_problem(x, match):
    conv = nn.Conv2d(3, 8, 7, stride=2)
    with pytest.raises(ValueError, match=match) as err:
        conv(x)
    assert str(err.value).startswith("Conv2d(3, 8, kernel_size=(7, 7)")


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups=1"):
        nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        nn.Conv2d(4, 4, (3, 3, 3))
    conv = nn.Conv2d(1, 2, 3)
    conv(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"dout has shape \(1, 2, 4, 4\), but forward returned shape \(1, 2, 3, 3\)"):
        conv.backward(np.zeros((1, 2, 4, 4), np.float32))


def test_auto_picks_the_fastest_exact_algorithm():
    def chosen(*args, size=(12, 12), batch=8, channels=(6, 4), **kwargs):
        return nn.Conv2d(*channels, *args, **kwargs).algorithm_for(batch, *size)
    large = dict(channels=(96, 128), batch=32)               # 57M multiply-adds per tap at 12x12
    assert chosen(1) == "pointwise"
    assert chosen(1, stride=2) == chosen(1, padding=1) == "im2col"
    assert chosen(3, **large) == chosen(3, padding=2, **large) == "winograd"
    assert chosen(3, size=(17, 17), **large) == "winograd"   # 89% of the 2x2 tiles' outputs used
    assert chosen(3, size=(7, 7), **large) == chosen(3, size=(3, 3), **large) == "im2col"   # 77%, 56%
    assert chosen(3) == chosen(3, size=(6, 6), **large) == "im2col"   # 14M: too small for its overheads
    assert chosen(3, stride=2) == chosen(3, dilation=2) == chosen((1, 3)) == "im2col"
    # MEC: long kernels, and at least 768 columns (N * H_out * W_out) in each GEMM
    assert chosen((7, 1), padding=(3, 0), size=(17, 17), batch=3) == "mec"         # 867 columns
    assert chosen((7, 1), padding=(3, 0), size=(17, 17), batch=2) == "im2col"      # 578
    assert chosen((1, 7), padding=(0, 3), size=(16, 12), batch=4) == "mec"         # 768
    assert chosen((1, 7), padding=(0, 3), size=(16, 12), batch=3) == "im2col"      # 576
    assert chosen(5, padding=2, size=(35, 35)) == "mec"
    assert chosen(5, padding=5, size=(35, 35)) == chosen(5, stride=2, size=(35, 35)) == "im2col"
    assert chosen((3, 1), size=(64, 64), batch=64) == "im2col"                     # kernel too short
    assert chosen(3, algorithm="im2col") == "im2col"
    assert chosen(3, size=(3, 3), algorithm="winograd") == "winograd"   # forced: no size rule
    conv = nn.Conv2d(64, 96, 3, padding=1)
    conv(np.zeros((16, 64, 7, 7), np.float32))
    assert conv.cache["algorithm"] == "im2col"                # what backward will use
    conv(np.zeros((16, 64, 28, 28), np.float32))
    assert conv.cache["algorithm"] == "winograd"


def test_an_algorithm_that_does_not_apply_is_refused():
    with pytest.raises(ValueError, match=r"algorithm='winograd' needs a 3x3 kernel, stride 1 and no "
                                         r"dilation, got kernel_size=\(5, 5\), stride=\(1, 1\)"):
        nn.Conv2d(2, 2, 5, algorithm="winograd")
    with pytest.raises(ValueError, match=r"algorithm='pointwise' needs a 1x1 kernel, stride 1 and no "
                                         r"padding, got .* stride=\(2, 2\)"):
        nn.Conv2d(2, 2, 1, stride=2, algorithm="pointwise")
    with pytest.raises(ValueError, match=r"algorithm='mec' needs stride 1, no dilation and padding "
                                         r"smaller than the kernel, got kernel_size=\(1, 7\), stride=\(1, 1\), "
                                         r"padding=\(0, 7\)"):
        nn.Conv2d(2, 2, (1, 7), padding=(0, 7), algorithm="mec")
    with pytest.raises(ValueError, match=r"algorithm must be one of .*'im2col'\), got 'fft'"):
        nn.Conv2d(2, 2, 3, algorithm="fft")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("algorithm,kernel,padding,size", [
    ("pointwise", 1, 0, (5, 4)), ("pointwise", 1, 0, (16, 15)),  # folded and per-image products
    ("winograd", 3, 1, (5, 4)), ("winograd", 3, 0, (8, 7)), ("winograd", 3, 2, (1, 2)),
    ("winograd", 3, (0, 1), (3, 6)),
    ("mec", (7, 1), (3, 0), (9, 5)), ("mec", (1, 7), (0, 3), (5, 9)), ("mec", 3, 1, (5, 4)),
    ("mec", (2, 5), (1, 4), (3, 6)), ("mec", 5, 0, (5, 7)),
])
@pytest.mark.parametrize("keep_bytes", [2 ** 20, 0])   # what backward needs: kept, or rebuilt
def test_fast_paths_equal_the_im2col_path(algorithm, kernel, padding, size, bias, keep_bytes, rng, monkeypatch):
    from nn import workspace
    monkeypatch.setattr(workspace, "KEEP_BYTES", keep_bytes)
    x = rng.standard_normal((3, 6) + size)
    results = []
    for name in (algorithm, "im2col"):
        nn.manual_seed(0)
        conv = nn.Conv2d(6, 4, kernel, padding=padding, bias=bias, algorithm=name).double()
        y = conv(x)
        g = np.random.default_rng(1).standard_normal(y.shape)
        results.append((y, conv.backward(g), conv.weight.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
