"""Every Numba twin agrees with its NumPy reference (float64 ~1e-12, float32 ~1e-5)."""
import numpy as np
import pytest
from hypothesis import assume, example, given, strategies as st

import nn
from nn import kernels
from nn.conv.im2col import col2im_reference, im2col_reference
from nn.conv.mec import mec_lower_reference
from nn.conv.winograd import (tiles, transform_weight, winograd_input_backward_reference,
                              winograd_input_reference, winograd_output_backward_reference,
                              winograd_output_reference)
from nn.conv.winograd_fused import winograd_backward_reference, winograd_forward_reference
from nn.optim import adam_step_reference
from nn.pooling import maxpool_backward_reference, maxpool_reference
from nn.shapes import output_size

pytest.importorskip("numba", reason="numba not installed")
from nn.kernels import batchnorm as k_bn, im2col as k_im2col, mec as k_mec, pooling as k_pool  # noqa: E402
from nn.kernels import optim as k_optim, winograd as k_wino, winograd_fused as k_fused  # noqa: E402

conv_output_size = output_size
TOL = {np.float64: 1e-12, np.float32: 1e-5}

geometry = dict(n=st.integers(1, 3), c=st.integers(1, 4), kh=st.integers(1, 4), kw=st.integers(1, 4),
                sh=st.integers(1, 3), sw=st.integers(1, 3), extra=st.integers(0, 6),
                dtype=st.sampled_from([np.float64, np.float32]), data=st.data())


def _case(n, c, kh, kw, sh, sw, extra, data, dilated=True):
    ph, pw = data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))
    dh = data.draw(st.integers(1, 2)) if dilated else 1
    H, W = dh * (kh - 1) + 1 + extra, kw + data.draw(st.integers(0, 6))
    x = np.random.default_rng(H * 17 + W).standard_normal((n, c, H, W))
    return (ph, pw), (dh, 1), x


@given(**geometry)
def test_im2col_and_col2im_twins_agree(n, c, kh, kw, sh, sw, extra, dtype, data):
    padding, dilation, x = _case(n, c, kh, kw, sh, sw, extra, data)
    x = x.astype(dtype)
    Ho = conv_output_size(x.shape[2], kh, sh, padding[0], dilation[0])
    Wo = conv_output_size(x.shape[3], kw, sw, padding[1], dilation[1])
    args = (kh, kw, (sh, sw), padding, dilation, Ho, Wo)
    shape = (c * kh * kw, n * Ho * Wo)
    ref = im2col_reference(x, *args, np.full(shape, np.nan, dtype))
    fast = k_im2col.im2col_numba(x, *args, np.full(shape, np.nan, dtype))
    np.testing.assert_array_equal(ref, fast)  # a pure copy: bit for bit
    cols = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    ref = col2im_reference(cols, *args, np.full(x.shape, np.nan, dtype))
    fast = k_im2col.col2im_numba(cols, *args, np.full(x.shape, np.nan, dtype))
    np.testing.assert_allclose(fast, ref, rtol=TOL[dtype], atol=TOL[dtype])


@given(n=st.integers(1, 3), c=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9),
       kw=st.integers(1, 7), ph=st.integers(0, 3), pw=st.integers(0, 6), transposed=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_mec_lowering_twins_agree(n, c, H, W, kw, ph, pw, transposed, dtype):
    x = np.random.default_rng(H * 10 + W).standard_normal((n, c, H, W)).astype(dtype)
    if transposed:  # a 1xK layer lowers its maps transposed: a strided view, not a copy
        x = x.transpose(0, 1, 3, 2)
    W_out = x.shape[3] + 2 * pw - kw + 1
    assume(W_out >= 1)  # the kernel must fit the padded width
    shape = (kw * c, x.shape[2] + 2 * ph, n * W_out)
    ref = mec_lower_reference(x, kw, (ph, pw), W_out, np.full(shape, np.nan, dtype))
    fast = k_mec.mec_lower_numba(x, kw, (ph, pw), W_out, np.full(shape, np.nan, dtype))
    np.testing.assert_array_equal(ref, fast)  # a pure copy: bit for bit


@given(**geometry, ceil=st.booleans())
def test_maxpool_twins_agree(n, c, kh, kw, sh, sw, extra, dtype, data, ceil):
    padding, dilation, x = _case(n, c, kh, kw, sh, sw, extra, data)
    _check_maxpool_twins(x.astype(dtype), (kh, kw), (sh, sw), padding, dilation, ceil)


@given(n=st.integers(1, 2), c=st.integers(1, 3), kh=st.integers(1, 4), kw=st.integers(1, 4),
       dh=st.integers(1, 2), dw=st.integers(1, 2), extra=st.integers(0, 8), ceil=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), data=st.data())
def test_maxpool_stride_1_twins_agree(n, c, kh, kw, dh, dw, extra, ceil, dtype, data):
    # stride 1 has a path of its own in the kernel (a row pass, then a column pass)
    padding = data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))
    H, W = dh * (kh - 1) + 1 + extra, dw * (kw - 1) + 1 + data.draw(st.integers(0, 8))
    x = np.random.default_rng(H * 17 + W).standard_normal((n, c, H, W)).astype(dtype)
    x.flat[x.size // 3] = -np.inf
    _check_maxpool_twins(x, (kh, kw), (1, 1), padding, (dh, dw), ceil)


def _check_maxpool_twins(x, kernel, stride, padding, dilation, ceil):
    n, c = x.shape[:2]
    dtype = x.dtype.type
    x = np.round(x, 1)                # many ties: both must pick the same first maximum
    x[0, 0, :x.shape[2] // 2] = -np.inf   # windows of -inf and padding: their first input pixel
    x.flat[x.size // 2] = np.nan      # and two NaNs, the last of which wins every window it is in
    x.flat[min(x.size // 2 + 1, x.size - 1)] = np.nan
    Ho, Wo = (output_size(x.shape[a + 2], kernel[a], stride[a], padding[a], dilation[a], ceil)
              for a in (0, 1))
    args = (x, *kernel, stride, padding, dilation, Ho, Wo)
    out = lambda: (np.empty((n, c, Ho, Wo), dtype), np.empty((n, c, Ho, Wo), np.uint8))
    y_ref, i_ref = maxpool_reference(*args, *out())
    y_fast, i_fast = k_pool.maxpool_numba(*args, *out())
    np.testing.assert_array_equal(y_ref, y_fast)
    np.testing.assert_array_equal(i_ref, i_fast)
    dout = np.random.default_rng(2).standard_normal((n, c, Ho, Wo)).astype(dtype)
    back = (i_ref, kernel[1], stride, padding, dilation)
    np.testing.assert_allclose(k_pool.maxpool_backward_numba(dout, *back, np.empty_like(x)),
                               maxpool_backward_reference(dout, *back, np.empty_like(x)),
                               rtol=TOL[dtype], atol=TOL[dtype])


@given(n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 4), H=st.integers(1, 9),
       W=st.integers(1, 9), ph=st.integers(0, 3), pw=st.integers(0, 3),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_winograd_twins_agree(n, c, o, H, W, ph, pw, dtype):
    H, W = max(H, 3 - 2 * ph), max(W, 3 - 2 * pw)  # the 3x3 kernel must fit the padded input
    H_out, W_out = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = tiles(H_out, W_out)
    rng = np.random.default_rng(H * 10 + W)
    x, padding = rng.standard_normal((n, c, H, W)).astype(dtype), (ph, pw)
    M = rng.standard_normal((16, o, n * th * tw)).astype(dtype)
    dy = rng.standard_normal((n, o, H_out, W_out)).astype(dtype)
    pairs = [
        ((winograd_input_reference, k_wino.winograd_input_numba), (x, padding, th, tw), (16, c, M.shape[2])),
        ((winograd_output_reference, k_wino.winograd_output_numba), (M, th, tw), dy.shape),
        ((winograd_output_backward_reference, k_wino.winograd_output_backward_numba), (dy, th, tw), M.shape),
        ((winograd_input_backward_reference, k_wino.winograd_input_backward_numba),
         (rng.standard_normal((16, c, M.shape[2])).astype(dtype), padding, th, tw), x.shape),
    ]
    for (reference, twin), args, shape in pairs:
        ref = reference(*args, np.full(shape, np.nan, dtype))
        fast = twin(*args, np.full(shape, np.nan, dtype))
        if reference is winograd_input_reference:   # (V, whether x is finite)
            assert ref[1] is True and fast[1]
            ref, fast = ref[0], fast[0]
        np.testing.assert_allclose(fast, ref, rtol=TOL[dtype], atol=TOL[dtype], err_msg=twin.__name__)


@given(n=st.integers(1, 3), c=st.integers(1, 6), o=st.integers(1, 6), H=st.integers(1, 12),
       W=st.integers(1, 12), ph=st.integers(0, 2), pw=st.integers(0, 2), rows=st.integers(1, 4),
       threads=st.integers(1, 3), dtype=st.sampled_from([np.float64, np.float32]))
@example(n=1, c=2, o=3, H=10, W=6, ph=1, pw=1, rows=2, threads=1, dtype=np.float64)  # a short last
# block after a full one in the same buffers: its unused columns must not add to dU
def test_fused_winograd_agrees_with_the_three_steps(n, c, o, H, W, ph, pw, rows, threads, dtype):
    """The fused kernels against the batch-wide references, in blocks of 1 to 4 tile rows (blocks
    that span images, short last blocks, neighbouring blocks adding to the same rows of dx), with
    1 to 3 workers, and channel counts off the kernels' blocks of 4 and 2."""
    H, W = max(H, 3 - 2 * ph), max(W, 3 - 2 * pw)
    H_out, W_out = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = tiles(H_out, W_out)
    rng = np.random.default_rng(H * 13 + W)
    x = rng.standard_normal((n, c, H, W)).astype(dtype)
    U = transform_weight(rng.standard_normal((o, c, 3, 3)).astype(dtype))
    dy = rng.standard_normal((n, o, H_out, W_out)).astype(dtype)
    args = (x, U, (ph, pw), th, tw)
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype])
    y, finite = winograd_forward_reference(*args, np.empty(dy.shape, dtype))
    for fast in (k_fused._winograd_forward(*args, np.full(dy.shape, np.nan, dtype), rows, threads),
                 k_fused.winograd_forward_numba(*args, np.full(dy.shape, np.nan, dtype))):
        np.testing.assert_allclose(fast[0], y, **tol)
        assert finite and fast[1]
    dx = np.empty_like(x)
    dU = winograd_backward_reference(x, dy, U, (ph, pw), th, tw, dx)
    fast_dx = np.full_like(x, np.nan)
    np.testing.assert_allclose(k_fused._winograd_backward(x, dy, U, (ph, pw), th, tw, fast_dx, rows, threads), dU, **tol)
    np.testing.assert_allclose(fast_dx, dx, **tol)


def test_fused_winograd_propagates_nan():
    """The tile products may reorder sums and fuse multiply-adds (fastmath "contract" and
    "reassoc"), never assume away NaN: a NaN pixel reaches y, and a NaN in dY reaches dU and dx."""
    x = np.ones((1, 4, 6, 6), np.float32)
    x[0, 1, 2, 3] = np.nan
    U = transform_weight(np.ones((4, 4, 3, 3), np.float32))
    y, finite = k_fused.winograd_forward_numba(x, U, (1, 1), 3, 3, np.empty((1, 4, 6, 6), np.float32))
    assert np.isnan(y[:, :, 1:4, 2:5]).all() and np.isfinite(y[:, :, :, 0]).all() and not finite
    dy = np.zeros((1, 4, 6, 6), np.float32)
    dy[0, 2, 0, 0] = np.nan
    dx = np.empty_like(x)
    dU = k_fused.winograd_backward_numba(np.ones_like(x), dy, U, (1, 1), 3, 3, dx)
    assert np.isnan(dU[:, 2]).any() and np.isnan(dx[0, :, 0, 0]).all()


def test_switch_selects_the_backend(monkeypatch):
    monkeypatch.setattr(kernels, "_backend", "numba")
    assert kernels.use_numba()
    kernels.set_backend("reference")
    assert not kernels.use_numba() and kernels.backend() == "reference"
    with pytest.raises(ValueError, match="expected one of"):
        kernels.set_backend("cuda")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,out", [((3, 5), 2, (1, 2), 9), (3, 1, 1, 17)])
def test_whole_conv_layer_same_on_both_backends(dtype, kernel, stride, padding, out, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 17, 17)).astype(dtype)
    g = rng.standard_normal((4, 16, out, out)).astype(dtype)
    results = []
    for backend in ("reference", "numba"):
        monkeypatch.setattr(kernels, "_backend", backend)
        nn.manual_seed(0)
        conv = nn.Conv2d(8, 16, kernel, stride=stride, padding=padding).to(dtype)
        results.append((conv(x), conv.backward(g), conv.weight.grad))
    for ref, fast in zip(*results):
        np.testing.assert_allclose(fast, ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)


def test_batchnorm_stats_keep_a_small_variance_under_a_large_mean():
    # one pass, E[d**2] - E[d]**2 with d = x - (first value): no catastrophic cancellation
    from nn.batchnorm import batchnorm_stats_reference
    x = (1000 + 0.01 * np.random.default_rng(0).standard_normal((4, 3, 500))).astype(np.float32)
    mean, var = batchnorm_stats_reference(x.astype(np.float64))
    fast_mean, fast_var = k_bn.batchnorm_stats_numba(x)
    np.testing.assert_allclose(fast_mean, mean, rtol=1e-7)
    np.testing.assert_allclose(fast_var, var, rtol=1e-5)


@given(n=st.integers(1, 4), c=st.integers(1, 5), length=st.integers(1, 40),
       dtype=st.sampled_from([np.float64, np.float32]), batch_stats=st.booleans())
def test_batchnorm_twins_agree(n, c, length, dtype, batch_stats):
    from nn.batchnorm import (batchnorm_backward_reference, batchnorm_normalize_reference,
                              batchnorm_stats_reference)
    rng = np.random.default_rng(n * 100 + c * 10 + length)
    x = (rng.standard_normal((n, c, length)) * 3 + 5).astype(dtype)
    tol = dict(rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    for a, b in zip(batchnorm_stats_reference(x), k_bn.batchnorm_stats_numba(x)):
        np.testing.assert_allclose(b, a, **tol)
    mean, var = batchnorm_stats_reference(x)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    out = lambda: (np.empty_like(x), np.empty_like(x))
    for a, b in zip(batchnorm_normalize_reference(x, mean, inv_std, gamma, beta, *out()),
                    k_bn.batchnorm_normalize_numba(x, mean, inv_std, gamma, beta, *out())):
        np.testing.assert_allclose(b, a, **tol)
    dout = rng.standard_normal(x.shape).astype(dtype)
    x_hat = batchnorm_normalize_reference(x, mean, inv_std, gamma, beta, *out())[0]
    dx_ref, dx_fast = np.empty_like(x), np.empty_like(x)
    ref = batchnorm_backward_reference(dout, x_hat, gamma, inv_std, batch_stats, dx_ref)
    fast = k_bn.batchnorm_backward_numba(dout, x_hat, gamma, inv_std, batch_stats, dx_fast)
    for a, b in zip(ref + (dx_ref,), fast + (dx_fast,)):
        np.testing.assert_allclose(b, a, **tol)


@given(**geometry, ceil=st.booleans(), include=st.booleans())
def test_avgpool_twins_agree(n, c, kh, kw, sh, sw, extra, dtype, data, ceil, include):
    padding, _, x = _case(n, c, kh, kw, sh, sw, extra, data, dilated=False)
    _check_avgpool_twins(x.astype(dtype), (kh, kw), (sh, sw), padding, ceil, include)


def _check_avgpool_twins(x, kernel, stride, padding, ceil, include):
    from nn.pooling import avgpool_backward_reference, avgpool_reference
    n, c = x.shape[:2]
    dtype = x.dtype.type
    pool = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include)
    Ho, Wo = pool.output_size(*x.shape[2:])
    divisor = pool._divisor(*x.shape[2:], Ho, Wo).astype(dtype)
    args = (*kernel, stride, padding, divisor)
    out = lambda: np.full((n, c, Ho, Wo), np.nan, dtype)
    np.testing.assert_allclose(k_pool.avgpool_numba(x, *args, out()), avgpool_reference(x, *args, out()),
                               rtol=TOL[dtype], atol=TOL[dtype])
    dout = np.random.default_rng(3).standard_normal((n, c, Ho, Wo)).astype(dtype)
    np.testing.assert_allclose(k_pool.avgpool_backward_numba(dout, *args, np.full_like(x, np.nan)),
                               avgpool_backward_reference(dout, *args, np.full_like(x, np.nan)),
                               rtol=TOL[dtype], atol=TOL[dtype])


# (H, W, kernel, stride, padding): the pooling layers of both models on their small maps, which
# the kernels pool a block of planes at a time, and larger ones, which take the per-plane passes
SMALL_AND_LARGE_POOLS = [(1, 1, 3, 1, 1), (2, 2, 3, 1, 1), (2, 2, 3, 2, 1), (4, 4, 3, 2, 1),
                         (8, 8, 3, 2, 1), (7, 7, 3, 2, 0), (3, 3, 3, 1, 1), (4, 4, 3, 1, 1),
                         (16, 16, 3, 2, 1), (6, 9, 2, 1, 1), (17, 17, 3, 1, 1), (20, 15, 3, 2, 0)]


def test_the_pooling_cases_take_both_paths():
    paths = {k_pool._small_planes(H, W) for H, W, k, s, p in SMALL_AND_LARGE_POOLS}
    assert paths == {True, False}


@pytest.mark.parametrize("H,W,k,s,p", SMALL_AND_LARGE_POOLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pooling_twins_agree_on_small_and_large_maps(H, W, k, s, p, dtype):
    x = np.random.default_rng(H * 17 + W).standard_normal((3, 100, H, W)).astype(dtype)  # 3 blocks
    _check_maxpool_twins(x, (k, k), (s, s), (p, p), (1, 1), False)
    for include in (True, False):
        _check_avgpool_twins(x, (k, k), (s, s), (p, p), False, include)


def test_a_model_step_is_the_same_on_the_reference_backend(monkeypatch):
    """Every layer's reference path (what runs without Numba) against the Numba path, end to end."""
    import models
    x = np.random.default_rng(0).standard_normal((4, 3, 40, 40))
    results = []
    for backend in ("reference", "numba"):
        monkeypatch.setattr(kernels, "_backend", backend)
        nn.manual_seed(0)
        model = models.build("inception_v2", width=0.1, aux_dropout=0.0).double()
        outs = model(x)
        dx = model.backward(*[np.ones_like(o) for o in outs])
        results.append([*outs, dx] + [p.grad for p in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10)


def test_every_registered_twin_is_checked_here():
    """A twin registered with @twin_of but missing from the tests above would go unchecked."""
    checked = {im2col_reference, col2im_reference, mec_lower_reference, maxpool_reference,
               maxpool_backward_reference, winograd_input_reference, winograd_output_reference,
               winograd_output_backward_reference, winograd_input_backward_reference,
               winograd_forward_reference, winograd_backward_reference}
    from nn.batchnorm import (batchnorm_backward_reference, batchnorm_normalize_reference,
                              batchnorm_stats_reference)
    from nn.pooling import avgpool_backward_reference, avgpool_reference
    checked |= {batchnorm_backward_reference, batchnorm_normalize_reference, batchnorm_stats_reference,
                avgpool_backward_reference, avgpool_reference, adam_step_reference}
    assert set(kernels.twins()) == checked


@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 2, 4, 5), (0, 1, 6, 6)])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_winograd_input_transforms_tell_a_non_finite_input(where, value):
    """Both the batch-wide transform and the fused forward report an inf or NaN anywhere in x
    (corners, the middle, the last row), so that the layer can switch to im2col."""
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    th, tw = tiles(7, 7)
    V = np.empty((16, 3, 2 * th * tw), np.float32)
    U = transform_weight(np.ones((2, 3, 3, 3), np.float32))
    y = np.empty((2, 2, 7, 7), np.float32)
    for reference in (winograd_input_reference, winograd_forward_reference):
        args = (x, (1, 1), th, tw, V) if reference is winograd_input_reference else (x, U, (1, 1), th, tw, y)
        assert reference(*args)[1] and kernels.twins()[reference](*args)[1]
    x[where] = value
    for reference in (winograd_input_reference, winograd_forward_reference):
        args = (x, (1, 1), th, tw, V) if reference is winograd_input_reference else (x, U, (1, 1), th, tw, y)
        assert not reference(*args)[1] and not kernels.twins()[reference](*args)[1]


@given(size=st.integers(1, 3000), dtype=st.sampled_from([np.float64, np.float32]), amsgrad=st.booleans(),
       decoupled=st.booleans(), step=st.integers(1, 50))
def test_adam_step_twins_agree_bit_for_bit(size, dtype, amsgrad, decoupled, step):
    """One pass instead of one per operation, with the same operations in the same order and
    dtype: the same bits (a NaN gradient included)."""
    rng = np.random.default_rng(size)
    p, g, m = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(size)).astype(dtype)
    vmax = np.abs(rng.standard_normal(size)).astype(dtype) if amsgrad else np.empty(0, dtype)
    g[size // 2] = np.nan
    f = np.dtype(dtype).type
    lr, wd = 1e-3, 0.01
    scalars = (f(0.9), f(0.1), f(0.999), f(1 - 0.999), f(1e-8), f(1 - lr * wd) if decoupled else f(1),
               f(0) if decoupled else f(wd), f(lr / (1 - 0.9 ** step)), f(np.sqrt(1 - 0.999 ** step)))
    ref = [a.copy() for a in (p, g, m, v, vmax)]
    fast = [a.copy() for a in (p, g, m, v, vmax)]
    adam_step_reference(*ref, *scalars)
    k_optim.adam_step_numba(*fast, *scalars)
    for a, b in zip(ref, fast):
        np.testing.assert_array_equal(a, b)


def test_a_fresh_cache_is_warmed_on_two_cores_before_the_first_batch(tmp_path):
    """With an empty Numba cache the base kernels are missing; warm() compiles them (half in a
    child process) into the cache, after which a new process finds them all there."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path))
    script = "from nn.kernels import warm; print(warm.needed()); warm.warm() if warm.needed() else None"
    runs = [subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert runs == ["True", "False"]
    cached = {p.name.split("-")[0] for p in tmp_path.rglob("*.nbi")}
    assert {"im2col.im2col_numba", "pooling._maxpool_small_planes", "batchnorm.batchnorm_stats_numba",
            "optim.adam_step_numba"} <= cached
