"""Max, average and adaptive average pooling over NCHW batches, with PyTorch's size rules.

Output size per axis: nn/shapes.py (floor mode as a convolution; ceil mode, PyTorch's rule:
the last window must start inside the input or the left padding).

The references below work one kernel offset (i, j) at a time: each offset is one strided slice
of the padded input covering all windows at once, so there are KH*KW NumPy operations per call,
never a Python loop over pixels. Their Numba twins (max and average pooling) are in
nn/kernels/pooling.py.
"""
import numpy as np

from . import kernels
from .module import Module
from .shapes import check_input, output_size, pair


def _window_slice(offset, stride, count):
    """The slice of the padded input holding pixel `offset` of each of `count` windows."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _padded(x, padding, H_out, W_out, kernel, stride, dilation, fill):
    """x padded with `fill`: `padding` on the left/top, as far as the last window on the right/bottom."""
    N, C, H, W = x.shape
    H_need = (H_out - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    W_need = (W_out - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    xp = np.full((N, C, max(H_need, H + padding[0]), max(W_need, W + padding[1])), fill, x.dtype)
    xp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W] = x
    return xp


def _first_inside(count, stride, padding, dilation):
    """For each of `count` windows along an axis, its first kernel offset that lies in the input
    rather than in the padding: the smallest i >= 0 with window*stride + i*dilation >= padding."""
    return np.maximum(0, -((np.arange(count) * stride - padding) // dilation))


def maxpool_reference(x, KH, KW, stride, padding, dilation, H_out, W_out, y, offset):
    """y[n, c, h, w] = max of the window; offset = i*KW + j of its first maximum in the window"""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = _padded(x, padding, H_out, W_out, (KH, KW), stride, dilation, -np.inf)
    y[...] = -np.inf
    # before the scan, the window's first input pixel: a window of -inf keeps it (as PyTorch)
    best_i = np.broadcast_to(_first_inside(H_out, sh, ph, dh)[:, None], y.shape).copy()
    best_j = np.broadcast_to(_first_inside(W_out, sw, pw, dw), y.shape).copy()
    for i in range(KH):
        for j in range(KW):  # row-major scan; a strict > keeps the first maximum; every NaN is taken
            v = xp[:, :, _window_slice(i * dh, sh, H_out), _window_slice(j * dw, sw, W_out)]
            take = (v > y) | np.isnan(v)
            np.copyto(y, v, where=take)
            np.copyto(best_i, i, where=take)
            np.copyto(best_j, j, where=take)
    offset[...] = best_i * KW + best_j
    return y, offset


def window_argmax(offset, KW, stride, padding, dilation, W):
    """The flat input index h_in*W + w_in that each window's offset i*KW + j points at."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    H_out, W_out = offset.shape[-2:]
    i, j = np.divmod(offset.astype(np.int64), KW)
    rows = np.arange(H_out)[:, None] * sh + i * dh - ph
    return rows * W + np.arange(W_out)[None, :] * sw + j * dw - pw


def maxpool_backward_reference(dout, offset, KW, stride, padding, dilation, dx):
    """dx[n, c, h_in, w_in] += dout[n, c, h, w] where window (h, w)'s offset points (overlapping
    windows accumulate)"""
    N, C, H, W = dx.shape
    plane = np.arange(N * C).reshape(N, C, 1, 1) * (H * W)
    index = plane + window_argmax(offset, KW, stride, padding, dilation, W)
    dx[...] = np.bincount(index.ravel(), weights=dout.ravel(), minlength=dx.size).reshape(dx.shape)
    return dx


def avgpool_reference(x, KH, KW, stride, padding, divisor, y):
    """y[n, c, h, w] = sum of the zero-padded window starting at (h*sh - ph, w*sw - pw) / divisor[h, w]"""
    H_out, W_out = divisor.shape
    xp = _padded(x, padding, H_out, W_out, (KH, KW), stride, (1, 1), 0)
    y[...] = 0
    for i in range(KH):
        for j in range(KW):
            y += xp[:, :, _window_slice(i, stride[0], H_out), _window_slice(j, stride[1], W_out)]
    y /= divisor
    return y


def avgpool_backward_reference(dout, KH, KW, stride, padding, divisor, dx):
    """dx[n, c, window of (h, w)] += dout[n, c, h, w] / divisor[h, w] (overlapping windows add up)"""
    N, C, H, W = dx.shape
    H_out, W_out = divisor.shape
    share = dout / divisor
    dxp = np.zeros((N, C, max(H + padding[0], (H_out - 1) * stride[0] + KH),
                    max(W + padding[1], (W_out - 1) * stride[1] + KW)), dout.dtype)
    for i in range(KH):
        for j in range(KW):
            dxp[:, :, _window_slice(i, stride[0], H_out), _window_slice(j, stride[1], W_out)] += share
    dx[...] = dxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
    return dx


class _Pool2d(Module):
    """What max and average pooling share: arguments, size rules, checks."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride if stride is not None else kernel_size, "stride", name)
        self.padding = pair(padding, "padding", name)
        self.dilation = pair(dilation, "dilation", name)
        self.ceil_mode = ceil_mode
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding should be at most half of the kernel size, got "
                             f"padding={self.padding}, kernel_size={self.kernel_size}")

    def _describe(self):
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else ""))

    def output_size(self, H, W):
        out = tuple(output_size(s, k, st, p, d, self.ceil_mode) for s, k, st, p, d in
                    zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out) < 1:
            raise ValueError(f"{self._describe()}: the window is larger than the padded input "
                             f"{H}x{W}")
        return out


class MaxPool2d(_Pool2d):
    """The maximum of each window (padding counts as -inf; NaN propagates).

    Backward: each window's gradient goes to ONE input, the first maximum in a row-major scan
    of the window (as PyTorch); overlapping windows that pick the same input add up there.
    PyTorch's CPU kernel also fixes the two cases without a maximum: a window holding NaN picks
    its last NaN, and a window holding only -inf (and padding) its first input pixel, never the
    padding.
    Shapes: x (N, C, H, W) -> y (N, C, H_out, W_out).   Cache: each window's maximum as its
    offset i*KW + j in the window, one byte per output where the window has at most 256 pixels
    (a flat index into the plane took 4 or 8; argmax() gives it, as PyTorch's indices).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported; after a forward, "
                             "argmax() gives the indices")
        self.offset_dtype = np.uint8 if self.kernel_size[0] * self.kernel_size[1] <= 256 else np.int32

    def forward(self, x):
        check_input(self, x, "NCHW")
        x = np.ascontiguousarray(x)
        N, C, H, W = x.shape
        H_out, W_out = self.output_size(H, W)
        y = np.empty((N, C, H_out, W_out), x.dtype)
        offset = np.empty((N, C, H_out, W_out), self.offset_dtype)
        kernels.twin(maxpool_reference)(x, *self.kernel_size, self.stride, self.padding, self.dilation,
                                        H_out, W_out, y, offset)
        self.cache = {"offset": offset, "x_shape": x.shape, "dtype": x.dtype}
        return y

    def argmax(self):
        """The flat input index h_in*W + w_in of each window's maximum in the last forward (the
        indices PyTorch's max_pool2d(return_indices=True) gives)."""
        cache = self.saved()
        return window_argmax(cache["offset"], self.kernel_size[1], self.stride, self.padding,
                             self.dilation, cache["x_shape"][3])

    def backward(self, dout):
        cache = self.saved()
        dx = np.empty(cache["x_shape"], cache["dtype"])
        return kernels.twin(maxpool_backward_reference)(np.ascontiguousarray(dout), cache["offset"],
                                                        self.kernel_size[1], self.stride, self.padding,
                                                        self.dilation, dx)


class AvgPool2d(_Pool2d):
    """The mean of each window.

    Divisor, count_include_pad=True (default): the window's area clipped to the padded input,
        (min(h0+KH, H+ph) - h0) * (min(w0+KW, W+pw) - w0)  with (h0, w0) the window's start,
    so a ceil-mode window running past the padding divides by less; count_include_pad=False
    counts only real pixels. divisor_override replaces both.
    Backward: dx gets dout/divisor at every pixel of the window; overlapping windows add up.
    Shapes: x (N, C, H, W) -> y (N, C, H_out, W_out).   Cache: divisor (H_out, W_out).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def _divisor(self, H, W, H_out, W_out):
        if self.divisor_override:
            return np.full((H_out, W_out), float(self.divisor_override))
        (KH, KW), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        extent = []
        for n_out, k, s, p, size in ((H_out, KH, sh, ph, H), (W_out, KW, sw, pw, W)):
            start = np.arange(n_out) * s - p                    # in input coordinates
            if self.count_include_pad:
                extent.append(np.minimum(start + k, size + p) - start)
            else:
                extent.append(np.minimum(start + k, size) - np.maximum(start, 0))
        return np.outer(extent[0], extent[1]).astype(np.float64)

    def forward(self, x):
        check_input(self, x, "NCHW")
        x = np.ascontiguousarray(x)
        N, C, H, W = x.shape
        H_out, W_out = self.output_size(H, W)
        divisor = self._divisor(H, W, H_out, W_out).astype(x.dtype)
        self.cache = {"divisor": divisor, "x_shape": x.shape}
        y = np.empty((N, C, H_out, W_out), x.dtype)
        return kernels.twin(avgpool_reference)(x, *self.kernel_size, self.stride, self.padding, divisor, y)

    def backward(self, dout):
        cache = self.saved()
        N, C, H, W = cache["x_shape"]
        divisor = cache["divisor"]
        dx = np.empty((N, C, H, W), dout.dtype)
        return kernels.twin(avgpool_backward_reference)(np.ascontiguousarray(dout), *self.kernel_size,
                                                        self.stride, self.padding, divisor, dx)


def adaptive_bins(in_size, out_size):
    """PyTorch's adaptive pooling bins: bin i covers [floor(i*I/O), ceil((i+1)*I/O))."""
    return [(i * in_size // out_size, -(-(i + 1) * in_size // out_size)) for i in range(out_size)]


def bin_matrix(bins, size, dtype):
    """P[a, i] = 1/len(bin a) for i in bin a, else 0: P @ v averages v over every bin."""
    P = np.zeros((len(bins), size), dtype)
    for a, (lo, hi) in enumerate(bins):
        P[a, lo:hi] = 1 / (hi - lo)
    return P


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input size (bins may overlap).

    output_size (1, 1) is global average pooling. None in output_size keeps that input size.
    A bin's mean is separable (rows, then columns): with P_h, P_w averaging each row and column
    bin (bin_matrix), y[n, c] = P_h @ x[n, c] @ P_w^T. On flattened planes that is one fixed
    matrix, K = kron(P_h, P_w) of shape (H_out*W_out, H*W), so the layer is one GEMM each way:
        y = x (N*C, H*W) @ K^T          dx = dout (N*C, H_out*W_out) @ K
    (each bin spreads dout/area over its pixels; overlapping bins add up).
    Shapes: x (N, C, H, W) -> y (N, C, *output_size).   Cache: the input shape.
    """

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, (int, np.integer)) or output_size is None:
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    def _describe(self):
        return f"AdaptiveAvgPool2d(output_size={self.output_size})"

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def _matrix(self, H, W, dtype):
        """K = kron(P_h, P_w): row (a, b) averages bin (a, b) of a flattened H x W plane."""
        P_h = bin_matrix(adaptive_bins(H, self.output_size[0] or H), H, dtype)
        P_w = bin_matrix(adaptive_bins(W, self.output_size[1] or W), W, dtype)
        return np.kron(P_h, P_w), (len(P_h), len(P_w))

    def forward(self, x):
        check_input(self, x, "NCHW")
        N, C, H, W = x.shape
        K, out = self._matrix(H, W, x.dtype)
        self.cache = {"x_shape": x.shape}
        return (x.reshape(N * C, H * W) @ K.T).reshape(N, C, *out)

    def backward(self, dout):
        N, C, H, W = self.saved()["x_shape"]
        K, _ = self._matrix(H, W, dout.dtype)
        return (dout.reshape(N * C, -1) @ K).reshape(N, C, H, W)
