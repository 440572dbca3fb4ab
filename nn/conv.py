"""Conv2d as im2col + one matrix product over the whole batch, with the readable NumPy im2col.

A convolution (PyTorch's: a cross-correlation, the kernel is not flipped) slides a KH x KW
window over the zero-padded input. im2col lays every window out as a column, so that the whole
batch becomes one GEMM:

    cols[(c, i, j), (n, h, w)] = xp[n, c, h*sh + i*dh, w*sw + j*dw]        (C*KH*KW, N*H_out*W_out)
    Y = W.reshape(C_out, C*KH*KW) @ cols  (+ b)                            (C_out, N*H_out*W_out)

Backward is the same three matrices read the other way:
    dW    = dY @ cols.T            db = sum of dY over (n, h, w)
    dcols = W.T @ dY               dx = col2im(dcols): each column added back where it was read

Output size per axis (PyTorch's formula): H_out = floor((H + 2*ph - dh*(KH-1) - 1) / sh) + 1.

The im2col/col2im here are the references a reader studies; nn/kernels.py has their Numba
twins (same signatures), and the switch in nn/kernels.py picks which one the layer calls.
Backward needs cols again. A strided layer keeps them from forward: they are KH*KW/(sh*sw)
times its input (2.25x for 3x3 stride 2, less than Winograd's 4x), and rebuilding them was
10-15% of such a layer's time. A stride-1 layer rebuilds them (one more copy) rather than hold
KH*KW times its input for the whole step.

A 1x1 convolution with stride 1 and no padding needs no im2col at all: each image's (C, H*W)
block already is its column matrix, so y[n] = W @ x[n]. On large maps that is a batch of matrix
products straight from and to NCHW; on small maps (where per-image products are too thin) the
batch is folded into one product, (C, N*H*W), with two transposes. Measured at Inception's 1x1
shapes: 2.7x faster than im2col at 14x14, 2.5x at 3x3.

A 3x3 convolution with stride 1 (any padding) goes through Winograd's F(2x2, 3x3) instead
(nn/winograd.py): 2.25x fewer multiplications in all three products and a 4x rather than 9x
expansion of the input. Measured at 3x3 64->96 @28, batch 32, forward+backward, same run:
im2col 61.8 ms, Winograd 42.3 ms (notebook 02, section 5).

Winograd computes whole 2x2 tiles, so on small odd maps part of its work falls outside the
output (a 3x3 map is 4 tiles, 16 outputs for 9): there im2col is faster, and "auto" picks it.
On large maps with few channels (the V3 stem) the batch-wide V and M outgrow every cache and
the 16 thin products wait on memory; there the layer runs Winograd fused, a block of tile rows
at a time in cache (WINOGRAD_FUSED_MIN_FLOATS and WINOGRAD_FUSED_MAX_CHANNELS below): 3x3
32->32 at 149x149, batch 32, forward+backward 416-488 -> 207-223 ms.

A stride-1 convolution with a long kernel (1x7 and 7x1, 5x5) goes through MEC (nn/mec.py): the
input is copied KW times instead of KH*KW (a 7x1 kernel: once, just reordered), each kernel row
is one GEMM on a slice of that copy read in place, and dx is the same kind of convolution of dY
with the kernel flipped, so nothing is scattered back. Measured at 7x1 160->160 @17, batch 8,
forward+backward: im2col 14.3 ms, MEC 11.3 ms. It takes KH GEMMs where im2col takes one, so on
small batches and maps (under MEC_MIN_COLUMNS output pixels) im2col wins, and "auto" keeps it.

Conv2d(..., algorithm="auto") picks one of the four ("pointwise", "winograd", "mec", "im2col")
by the rules above, for each input size (algorithm_for); naming one forces it where it applies
(im2col applies everywhere), so the paths can be compared on the same layer.
"""
import numpy as np

from . import init, kernels, mec, winograd
from ._checks import check_input, pair
from .module import Module, Parameter
from .winograd import (winograd_backward_reference, winograd_forward_reference,
                       winograd_input_backward_reference, winograd_input_reference,
                       winograd_output_backward_reference, winograd_output_reference)


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


POINTWISE_FOLD_BELOW = 196  # H*W under which one folded GEMM beats per-image GEMMs (measured)
# Winograd's share of useful tile outputs (nn/winograd.py fill) from which it beats im2col;
# measured at Inception's shapes: 6x6, 8x8, 17x17 (fill 0.89) and up win, 7x7 (0.77) and 3x3 lose.
WINOGRAD_MIN_FILL = 0.8
# Winograd runs fused (nn/kernels.py: transforms and products a block of tiles at a time, in
# cache, keeping neither V nor M) where the batch-wide V and M, 16 * (C_in + C_out) * tiles
# floats, would be at least this large, and the layer has at most WINOGRAD_FUSED_MAX_CHANNELS
# channels in and out together: there the batch-wide path waits on memory, while with more
# channels BLAS's products gain more than the fused kernel's own products save. Measured,
# forward+backward, fused against batch-wide: at batch 32, 3x3 32->32 at 149 2.0-2.3x as fast,
# 32->64 at 147 1.5-1.9x, 64->80 at 73 1.1-1.3x, 64->192 at 56 1.0-1.6x (V and M: 96-269M
# floats), but 80->192 at 73 0.96x and 384->384 at 35 0.87x (272 and 768 channels); at batch 8,
# the first two 1.4x and 1.2x (45-67M floats), the next two 0.8-0.9x (24-26M); 3x3 layers on
# 28x28 and 14x14 maps at batch 32 0.7-0.9x (7-19M).
WINOGRAD_FUSED_MIN_FLOATS = 40_000_000
WINOGRAD_FUSED_MAX_CHANNELS = 256
# MEC beats im2col where its saving (KW instead of KH*KW copies, no col2im) is large and its
# GEMMs (one per kernel row, N*H_out*W_out columns each) are wide: measured at 7x1 160->160,
# forward+backward, against im2col: 17x17 at batch 1, 2, 4, 16: 1.31, 1.14, 0.95, 0.75x its
# time; the same 7x1 on 5x5 maps at batch 8 and 32: 1.30, 0.88x; every 1x7/7x1 @17 of
# Inception-V3 at batch 8: 0.77-0.93x (again after im2col's own rewrite: 0.80-0.98x for 12 of
# the 14, 1.04-1.22x for two, in a noisy run). 3x3, 1x3 and 3x1 kernels on 7x7 and 8x8 maps
# tie (0.81-1.19x).
MEC_MIN_KERNEL = 5      # the longer kernel side
MEC_MIN_COLUMNS = 768   # N * H_out * W_out: the columns of each GEMM


def pointwise_forward(w2, x3):
    """y[n] = W @ x[n] for x3 (N, C, P): per image on large maps, one folded GEMM on small ones."""
    N, C, P = x3.shape
    if P >= POINTWISE_FOLD_BELOW:
        return np.matmul(w2, x3)
    folded = w2 @ np.ascontiguousarray(x3.transpose(1, 0, 2)).reshape(C, N * P)
    return np.ascontiguousarray(folded.reshape(-1, N, P).transpose(1, 0, 2))


def pointwise_weight_grad(dy3, x3):
    """dW = sum over n of dy[n] @ x[n].T, per image on large maps, folded on small ones."""
    if x3.shape[2] >= POINTWISE_FOLD_BELOW:
        return np.matmul(dy3, x3.transpose(0, 2, 1)).sum(axis=0)
    return np.tensordot(dy3, x3, axes=([0, 2], [0, 2]))


_workspace = {}


def scratch(name, shape, dtype):
    """A reusable buffer for temporaries that never outlive one forward or backward call.

    Fresh large arrays page-fault on first touch (a 55 MB one costs several ms); reusing one
    buffer per purpose keeps that cost to the first step. Never return a scratch view to a caller.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = _workspace.get((name, dtype))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        _workspace[(name, dtype)] = buf
    return buf[:size].reshape(shape)


def owned_copy(a):
    """A C-contiguous copy of `a`, always: np.ascontiguousarray hands back `a` itself when it is
    already contiguous (a scratch result transposed at batch size 1 is), and a scratch buffer
    must never reach the caller, whose array the next layer would overwrite."""
    return np.array(a, order="C")


def conv_output_size(size, kernel, stride, padding, dilation):
    """PyTorch's output length of a convolution or pooling (floor mode) along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Conv2d(Module):
    """2-D convolution (cross-correlation) over an NCHW batch, as im2col + one GEMM.

    Math:      y[n, o, h, w] = b[o] + sum over (c, i, j) of W[o, c, i, j] * xp[n, c, h*sh + i*dh, w*sw + j*dw]
    Backward:  dW = dY @ cols.T,  db = sum(dY),  dx = col2im(W.T @ dY)
    Shapes:    x (N, C_in, H, W) -> y (N, C_out, H_out, W_out); weight (C_out, C_in, KH, KW); bias (C_out,)
    Cache:     x and the algorithm used; im2col's cols only for strided layers (KH*KW/(sh*sw)
               times the input), Winograd's kernels U and, on its batch-wide path, input tiles
               V (4x), MEC's lowered input (KW times).
    Arguments follow torch.nn.Conv2d; groups must be 1 and padding_mode "zeros". `algorithm`
    ("auto", "pointwise", "winograd", "mec", "im2col") picks how it is computed, not what.
    """

    ALGORITHMS = ("auto", "pointwise", "winograd", "mec", "im2col")
    NEEDS = {"pointwise": "a 1x1 kernel, stride 1 and no padding",
             "winograd": "a 3x3 kernel, stride 1 and no dilation",
             "mec": "stride 1, no dilation and padding smaller than the kernel"}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=None, *, algorithm="auto"):
        super().__init__()
        name = f"Conv2d({in_channels}, {out_channels})"
        if groups != 1:
            raise ValueError(f"{name}: only groups=1 is implemented, got groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is implemented, got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.dilation = pair(dilation, "dilation", name)
        self.padding = self._resolve_padding(padding, name)
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be >= 1 and padding "
                             f">= 0, got {self.kernel_size}, {self.stride}, {self.dilation}, {self.padding}")
        KH, KW = self.kernel_size
        fan_in = in_channels * KH * KW
        dtype = dtype or init.DEFAULT_DTYPE
        self.weight = Parameter(init.uniform_fan_in((out_channels, in_channels, KH, KW), fan_in, dtype))
        self.bias = Parameter(init.uniform_fan_in((out_channels,), fan_in, dtype)) if bias else None
        self.algorithm = self._check_algorithm(algorithm, name)

    def _resolve_padding(self, padding, name):
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            reach = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(r % 2 for r in reach):
                raise ValueError(f"{name}: padding='same' needs an odd (dilated) kernel here, "
                                 f"got kernel_size={self.kernel_size}")
            return (reach[0] // 2, reach[1] // 2)
        return pair(padding, "padding", name)

    def _applicable(self):
        """Which algorithms compute this layer exactly (im2col: every geometry)."""
        return {
            "pointwise": self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0),
            "winograd": self.kernel_size == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1),
            "mec": (self.stride == (1, 1) and self.dilation == (1, 1)
                    and all(p < k for p, k in zip(self.padding, self.kernel_size))),
            "im2col": True,
        }

    def _check_algorithm(self, algorithm, name):
        if algorithm not in self.ALGORITHMS:
            raise ValueError(f"{name}: algorithm must be one of {self.ALGORITHMS}, got {algorithm!r}")
        if algorithm != "auto" and not self._applicable()[algorithm]:
            raise ValueError(f"{name}: algorithm={algorithm!r} needs {self.NEEDS[algorithm]}"
                             f", got kernel_size={self.kernel_size}, stride={self.stride}, "
                             f"padding={self.padding}, dilation={self.dilation}")
        return algorithm

    def algorithm_for(self, N, H_out, W_out):
        """The path forward takes for a batch of N H_out x W_out outputs: the one asked for, or
        with "auto" the fastest exact one (Winograd only where its 2x2 tiles fill the map well
        enough, MEC only for long kernels and wide enough GEMMs)."""
        if self.algorithm != "auto":
            return self.algorithm
        applicable = self._applicable()
        if applicable["pointwise"]:
            return "pointwise"
        if applicable["winograd"] and winograd.fill(H_out, W_out) >= WINOGRAD_MIN_FILL:
            return "winograd"
        if (applicable["mec"] and max(self.kernel_size) >= MEC_MIN_KERNEL
                and N * H_out * W_out >= MEC_MIN_COLUMNS):
            return "mec"
        return "im2col"

    def winograd_fused(self, N, H_out, W_out):
        """Whether Winograd runs fused for a batch of N H_out x W_out outputs: where its batch-wide
        V and M, 16 * (C_in + C_out) floats per tile, would reach WINOGRAD_FUSED_MIN_FLOATS, and
        C_in + C_out is at most WINOGRAD_FUSED_MAX_CHANNELS."""
        channels = self.in_channels + self.out_channels
        th, tw = winograd.tiles(H_out, W_out)
        return (channels <= WINOGRAD_FUSED_MAX_CHANNELS
                and 16 * channels * N * th * tw >= WINOGRAD_FUSED_MIN_FLOATS)

    def _describe(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding})")

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}"
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (", bias=False" if self.bias is None else ""))

    def output_size(self, H, W):
        """(H_out, W_out) for an H x W input; a clear error if the kernel does not fit."""
        out = tuple(conv_output_size(s, k, st, p, d) for s, k, st, p, d in
                    zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out) < 1:
            raise ValueError(f"{self._describe()}: the kernel (dilated) is larger than the padded "
                             f"input {H}x{W} (padded {H + 2 * self.padding[0]}x{W + 2 * self.padding[1]})")
        return out

    def _im2col(self, x, H_out, W_out, keep=False):
        N, C = x.shape[:2]
        KH, KW = self.kernel_size
        shape = (C * KH * KW, N * H_out * W_out)
        cols = np.empty(shape, x.dtype) if keep else scratch("cols", shape, x.dtype)
        return kernels.twin(im2col_reference)(x, KH, KW, self.stride, self.padding, self.dilation,
                                              H_out, W_out, cols)

    def forward(self, x):
        check_input(self, x, "NCHW", self.in_channels, self.weight.data.dtype)
        x = np.ascontiguousarray(x)
        N = x.shape[0]
        H_out, W_out = self.output_size(*x.shape[2:])
        algorithm = self.algorithm_for(N, H_out, W_out)
        self.cache = {"x": x, "H_out": H_out, "W_out": W_out, "algorithm": algorithm}
        w2 = self.weight.data.reshape(self.out_channels, -1)            # (C_out, C*KH*KW)
        if algorithm == "pointwise":
            y = pointwise_forward(w2, x.reshape(N, self.in_channels, -1))  # (N, C_out, H*W)
        elif algorithm == "winograd":
            y = self._winograd_forward(x, H_out, W_out).reshape(N, self.out_channels, -1)
        elif algorithm == "mec":
            y = self._mec_forward(x).reshape(N, self.out_channels, -1)
        else:
            keep = self.stride != (1, 1)                                  # see the module docstring
            cols = self._im2col(x, H_out, W_out, keep)                  # (C*KH*KW, N*H_out*W_out)
            if keep:
                self.cache["cols"] = cols
            y2 = np.matmul(w2, cols, out=scratch("gemm", (self.out_channels, cols.shape[1]), x.dtype))
            # (C_out, N, H_out*W_out) -> (N, C_out, H_out*W_out)
            y = owned_copy(y2.reshape(self.out_channels, N, -1).transpose(1, 0, 2))
        if self.bias is not None:
            y += self.bias.data[:, None]
        return y.reshape(N, self.out_channels, H_out, W_out)

    def backward(self, dout):
        cache = self.saved()
        x, H_out, W_out = cache["x"], cache["H_out"], cache["W_out"]
        N = x.shape[0]
        w2 = self.weight.data.reshape(self.out_channels, -1)
        dy3 = np.ascontiguousarray(dout).reshape(N, self.out_channels, -1)   # (N, C_out, H_out*W_out)
        if self.bias is not None:
            self.bias.grad += dy3.sum(axis=(0, 2))
        if cache["algorithm"] == "pointwise":
            x3 = x.reshape(N, self.in_channels, -1)
            self.weight.grad += pointwise_weight_grad(dy3, x3).reshape(self.weight.data.shape)
            return pointwise_forward(w2.T, dy3).reshape(x.shape)         # dx[n] = W.T @ dy[n]
        if cache["algorithm"] == "winograd":
            return self._winograd_backward(x, np.ascontiguousarray(dout))
        if cache["algorithm"] == "mec":
            return self._mec_backward(dout)
        dy2 = scratch("dout", (self.out_channels, N * H_out * W_out), x.dtype)
        dy2.reshape(self.out_channels, N, -1)[...] = dy3.transpose(1, 0, 2)
        cols = cache["cols"] if "cols" in cache else self._im2col(x, H_out, W_out)
        self.weight.grad += (dy2 @ cols.T).reshape(self.weight.data.shape)
        dcols = np.matmul(w2.T, dy2, out=scratch("dcols", cols.shape, x.dtype))
        KH, KW = self.kernel_size
        return kernels.twin(col2im_reference)(dcols, KH, KW, self.stride, self.padding, self.dilation,
                                              H_out, W_out, np.empty_like(x))

    def _winograd_forward(self, x, H_out, W_out):
        th, tw = winograd.tiles(H_out, W_out)
        U = self.cache["U"] = winograd.transform_weight(self.weight.data)   # (16, C_out, C_in)
        y = np.empty((x.shape[0], self.out_channels, H_out, W_out), x.dtype)
        if self.winograd_fused(x.shape[0], H_out, W_out):
            return kernels.twin(winograd_forward_reference)(x, U, self.padding, th, tw, y)
        V = np.empty((16, self.in_channels, x.shape[0] * th * tw), x.dtype)
        V = self.cache["V"] = kernels.twin(winograd_input_reference)(x, self.padding, th, tw, V)  # (16, C_in, T)
        M = np.matmul(U, V, out=scratch("winograd_M", (16, self.out_channels, V.shape[2]), x.dtype))
        return kernels.twin(winograd_output_reference)(M, th, tw, y)

    def _winograd_backward(self, x, dout):
        U = self.cache["U"]
        th, tw = winograd.tiles(*dout.shape[2:])
        if "V" not in self.cache:                                          # forward ran fused
            dx = np.empty_like(x)
            dU = kernels.twin(winograd_backward_reference)(x, dout, U, self.padding, th, tw, dx)
            self.weight.grad += winograd.transform_weight_backward(dU)
            return dx
        V = self.cache["V"]
        dM = scratch("winograd_M", (16, self.out_channels, V.shape[2]), x.dtype)
        dM = kernels.twin(winograd_output_backward_reference)(dout, th, tw, dM)   # (16, C_out, T)
        self.weight.grad += winograd.transform_weight_backward(np.matmul(dM, V.transpose(0, 2, 1)))
        dV = np.matmul(U.transpose(0, 2, 1), dM, out=scratch("winograd_dV", V.shape, x.dtype))
        return kernels.twin(winograd_input_backward_reference)(dV, self.padding, th, tw, np.empty_like(x))

    def _mec_swapped(self):
        """MEC lowers along the width; a kernel wider than tall (1x7) runs on the transposed maps,
        kernel and padding, so that its long side is the windowed one."""
        return self.kernel_size[1] > self.kernel_size[0]

    def _mec_frame(self, a):
        """An NCHW array (or OIHW kernel) as MEC sees it; the same swap undoes itself."""
        return a.transpose(0, 1, 3, 2) if self._mec_swapped() else a

    def _mec_padding(self):
        return self.padding[::-1] if self._mec_swapped() else self.padding

    def _mec(self, x, weight, padding, keep):
        """Y (C_out, H_out, N, W_out) of x (N, C, H, W) in MEC's frame, and the lowered input R
        (a new array when `keep`, for dW; else a reusable buffer)."""
        N, C, H, W = x.shape
        O, _, KH, KW = weight.shape
        ph, pw = padding
        H_out, W_out = H + 2 * ph - KH + 1, W + 2 * pw - KW + 1
        shape = (KW * C, H + 2 * ph, N * W_out)
        R = np.empty(shape, x.dtype) if keep else scratch("mec_R", shape, x.dtype)
        R = kernels.twin(mec.mec_lower_reference)(x, KW, padding, W_out, R)
        Y = scratch("mec_Y", (O, H_out * N * W_out), x.dtype)
        return mec.convolve(R, weight, H_out, Y).reshape(O, H_out, N, W_out), R

    def _mec_forward(self, x):
        frame = self._mec_frame
        Y, self.cache["R"] = self._mec(frame(x), frame(self.weight.data), self._mec_padding(),
                                       keep=True)
        return owned_copy(frame(Y.transpose(2, 0, 1, 3)))                # (N, C_out, H_out, W_out)

    def _mec_backward(self, dout):
        frame = self._mec_frame
        w = frame(self.weight.data)
        O, C, KH, KW = w.shape
        ph, pw = self._mec_padding()
        dy = frame(dout)
        N, _, H_out, W_out = dy.shape
        dYT = scratch("mec_dYT", (H_out, N, W_out, O), dout.dtype)       # dY.T, rows (h, n, w)
        dYT[...] = dy.transpose(2, 0, 3, 1)
        dW = mec.weight_grad(dYT.reshape(-1, O), self.cache["R"], w.shape)
        self.weight.grad += frame(dW)
        # dx: the convolution of dY, padded by K-1-p, with the flipped kernel (nn/mec.py)
        Yx, _ = self._mec(dy, mec.flipped(w), (KH - 1 - ph, KW - 1 - pw), keep=False)
        return owned_copy(frame(Yx.transpose(2, 0, 1, 3)))               # (N, C_in, H, W)
