"""im2col: every window of the input laid out as a column, so that the whole batch is one GEMM.

A convolution (PyTorch's: a cross-correlation, the kernel is not flipped) slides a KH x KW
window over the zero-padded input xp. im2col lays every window out as a column:

    cols[(c, i, j), (n, h, w)] = xp[n, c, h*sh + i*dh, w*sw + j*dw]        (C*KH*KW, N*H_out*W_out)
    Y = W.reshape(C_out, C*KH*KW) @ cols                                   (C_out, N*H_out*W_out)

Backward is the same three matrices read the other way:
    dW    = dY @ cols.T
    dcols = W.T @ dY               dx = col2im(dcols): each column added back where it was read

This applies to every geometry (any kernel, stride, padding, dilation); the other algorithms
in nn/conv/ are faster where they apply. Backward needs cols again, KH*KW/(sh*sw) times the
input: the layer keeps them when they are small, and rebuilds them from the input when they are
large (nn/workspace.py: for_backward).

im2col_reference and col2im_reference are the versions a reader studies; their Numba twins are
in nn/kernels/im2col.py.
"""
import numpy as np

from .. import kernels
from ..shapes import output_size
from ..workspace import Workspace, owned

_work = Workspace()


def im2col_reference(x, KH, KW, stride, padding, dilation, H_out, W_out, cols):
    """cols[(c, i, j), (n, h, w)] = xp[n, c, h*sh + i*dh, w*sw + j*dw] (xp: x zero-padded)"""
    N, C = x.shape[:2]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    view = cols.reshape(C, KH, KW, N, H_out, W_out)
    for i in range(KH):
        for j in range(KW):  # one strided slice per kernel offset: all windows' (i, j) pixel
            window = xp[:, :, i * dh: i * dh + sh * (H_out - 1) + 1: sh,
                        j * dw: j * dw + sw * (W_out - 1) + 1: sw]          # (N, C, H_out, W_out)
            view[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols


def col2im_reference(cols, KH, KW, stride, padding, dilation, H_out, W_out, dx):
    """dx[n, c] = sum over (i, j, h, w) of cols[(c, i, j), (n, h, w)] placed back where im2col read it"""
    N, C, H, W = dx.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dx.dtype)
    view = cols.reshape(C, KH, KW, N, H_out, W_out)
    for i in range(KH):
        for j in range(KW):  # windows overlap, so the slices of different offsets add up
            dxp[:, :, i * dh: i * dh + sh * (H_out - 1) + 1: sh,
                j * dw: j * dw + sw * (W_out - 1) + 1: sw] += view[:, i, j].transpose(1, 0, 2, 3)
    dx[...] = dxp[:, :, ph: ph + H, pw: pw + W]
    return dx


def applies(kernel_size, stride, padding, dilation):
    return True


def _lower(x, KH, KW, stride, padding, dilation, H_out, W_out):
    """cols of x, and whether they are kept for backward (else they are the workspace's)."""
    N, C = x.shape[:2]
    cols, kept = _work.for_backward("cols", (C * KH * KW, N * H_out * W_out), x.dtype)
    return kernels.twin(im2col_reference)(x, KH, KW, stride, padding, dilation, H_out, W_out, cols), kept


def forward(x, w, stride, padding, dilation):
    """y (N, C_out, H_out, W_out) = x convolved with w; and the cache backward needs."""
    N = x.shape[0]
    O, _, KH, KW = w.shape
    H_out, W_out = (output_size(s, k, st, p, d) for s, k, st, p, d in
                    zip(x.shape[2:], (KH, KW), stride, padding, dilation))
    cols, kept = _lower(x, KH, KW, stride, padding, dilation, H_out, W_out)
    y2 = np.matmul(w.reshape(O, -1), cols, out=_work.get("gemm", (O, cols.shape[1]), x.dtype))
    y = owned(y2.reshape(O, N, -1).transpose(1, 0, 2))     # (C_out, N, H_out*W_out) -> (N, C_out, ...)
    cache = {"x": x, "geometry": (stride, padding, dilation), "cols": cols if kept else None}
    return y.reshape(N, O, H_out, W_out), cache


def backward(dy, w, cache, need_dx=True):
    """(dx, dW) from dY (N, C_out, H_out, W_out); dx None unless need_dx."""
    x, (stride, padding, dilation) = cache["x"], cache["geometry"]
    N, O, H_out, W_out = dy.shape
    KH, KW = w.shape[2:]
    dy2 = _work.get("dy", (O, N * H_out * W_out), x.dtype)
    dy2.reshape(O, N, -1)[...] = dy.reshape(N, O, -1).transpose(1, 0, 2)
    cols = cache["cols"]
    if cols is None:                                                    # not kept: see the top
        cols, _ = _lower(x, KH, KW, stride, padding, dilation, H_out, W_out)
    dw = (dy2 @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw
    dcols = np.matmul(w.reshape(O, -1).T, dy2, out=_work.get("dcols", cols.shape, x.dtype))
    dx = kernels.twin(col2im_reference)(dcols, KH, KW, stride, padding, dilation, H_out, W_out,
                                        np.empty_like(x))
    return dx, dw
