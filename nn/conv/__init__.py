"""Conv2d: one convolution, five ways to compute it; the layer only chooses and dispatches.

    y[n, o, h, w] = b[o] + sum over (c, i, j) of W[o, c, i, j] * xp[n, c, h*sh + i*dh, w*sw + j*dw]

(PyTorch's convolution: a cross-correlation, the kernel is not flipped; xp is x zero-padded.)
Each algorithm is a module of this package, one room each, read top to bottom:

    im2col.py          every window as a column, one GEMM for the whole batch   (any geometry)
    pointwise.py       a 1x1 convolution is a matrix product of the input        (1x1, stride 1)
    winograd.py        Winograd's F(2x2, 3x3): 2.25x fewer multiplications       (3x3, stride 1)
    winograd_fused.py  the same, a block of tiles at a time in cache             (3x3, stride 1)
    mec.py             the input copied KW times, one GEMM per kernel row        (stride 1)

and each has the same three functions:

    applies(kernel_size, stride, padding, dilation) -> bool     whether it computes this layer exactly
    forward(x, w, stride, padding, dilation) -> (y, cache)      y without the bias, a fresh array
    backward(dy, w, cache, need_dx) -> (dx, dW)                 dx None when not needed

Their hot loops have Numba twins in nn/kernels/ (the module of the same name). Conv2d adds the
bias and its gradient, and picks the algorithm for each input size (algorithm_for, the rules
below); Conv2d(..., algorithm="mec") forces one where it applies, so that the paths can be
compared on the same layer (the tests check that all give the same values and gradients).

On small maps some kernel taps only ever meet the zero padding: a 3x3 kernel with padding 1 on
a 1x1 map (the last blocks of Inception-V2 at 32x32), a 7x1 one with padding 3 on a 3x3 map
(Inception-V3 at 75x75). Conv2d then convolves with the live part of the kernel (live_taps) and
a smaller padding, which gives the same outputs without the products by zero; the dead taps'
gradient is zero. (Only a weight of inf or NaN on a dead tap would have made a difference:
0 * inf is NaN.)
"""
import numpy as np

from .. import init
from ..module import Module, Parameter
from ..shapes import check_input, live_taps, output_size, pair
from . import im2col, mec, pointwise, winograd, winograd_fused

ALGORITHMS = {"pointwise": pointwise, "winograd": winograd, "winograd_fused": winograd_fused,
              "mec": mec, "im2col": im2col}

# The rules of algorithm="auto", each measured at the shapes of both models (the figures, and the
# command that re-measures each, are in docs/performance.md):
# Winograd where at least this share of its 2x2 tiles' outputs lies inside the output map
# (winograd.fill): 6x6, 8x8, 17x17 (0.89) and larger maps win, 7x7 (0.77) and 3x3 lose;
# and where the layer's products are large enough, N*H_out*W_out*C_in*C_out multiply-adds per
# kernel tap, for its 2.25x fewer multiplications to outweigh its four transforms and 16 thin
# GEMMs: below 20M (the quick preset's 2x2 and 4x4 maps) it took 1.2-1.9x im2col's time, from
# 20M to 60M either may win by 10%, above it Winograd wins.
WINOGRAD_MIN_FILL = 0.8
WINOGRAD_MIN_WORK = 40_000_000
# Winograd fused where the batch-wide V and M, 16 * (C_in + C_out) floats per tile, would reach
# this many floats, on layers of at most WINOGRAD_FUSED_MAX_CHANNELS channels in and out together:
# there the batch-wide path waits on memory, while with more channels BLAS's products gain more
# than the fused kernel's own products save.
WINOGRAD_FUSED_MIN_FLOATS = 40_000_000
WINOGRAD_FUSED_MAX_CHANNELS = 256
# MEC for kernels with a side of at least MEC_MIN_KERNEL (1x7, 7x1, 5x5) whose GEMMs have at least
# MEC_MIN_COLUMNS columns (N * H_out * W_out): it takes KH products where im2col takes one.
MEC_MIN_KERNEL = 5
MEC_MIN_COLUMNS = 768


class Conv2d(Module):
    """2-D convolution (cross-correlation) over an NCHW batch.

    Math:      y[n, o, h, w] = b[o] + sum over (c, i, j) of W[o, c, i, j] * xp[n, c, h*sh + i*dh, w*sw + j*dw]
    Backward:  dW and dx from the chosen algorithm (im2col: dW = dY @ cols.T, dx = col2im(W.T @ dY)),
               db = sum of dY over (n, h, w)
    Shapes:    x (N, C_in, H, W) -> y (N, C_out, H_out, W_out); weight (C_out, C_in, KH, KW); bias (C_out,)
    Cache:     the algorithm used and what it keeps (see nn/conv/<algorithm>.py).
    Arguments follow torch.nn.Conv2d; groups must be 1 and padding_mode "zeros". `algorithm`
    ("auto" or one of ALGORITHMS; "winograd" picks the batch-wide or fused path by size) picks
    how it is computed, not what. `input_grad = False` makes backward skip dx and return None:
    the first layer of a network in training, whose input (the images) needs no gradient (as
    PyTorch skips it for an input that does not require grad).
    """

    input_grad = True

    CHOICES = ("auto", "pointwise", "winograd", "mec", "im2col")
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

    def _applies(self, algorithm, kernel_size=None, padding=None):
        return ALGORITHMS[algorithm].applies(kernel_size or self.kernel_size, self.stride,
                                             padding or self.padding, self.dilation)

    def _check_algorithm(self, algorithm, name):
        if algorithm not in self.CHOICES:
            raise ValueError(f"{name}: algorithm must be one of {self.CHOICES}, got {algorithm!r}")
        if algorithm != "auto" and not self._applies(algorithm):
            raise ValueError(f"{name}: algorithm={algorithm!r} needs {self.NEEDS[algorithm]}"
                             f", got kernel_size={self.kernel_size}, stride={self.stride}, "
                             f"padding={self.padding}, dilation={self.dilation}")
        return algorithm

    def algorithm_for(self, N, H_out, W_out, kernel_size=None, padding=None):
        """The path forward takes for a batch of N H_out x W_out outputs: the one asked for, or
        with "auto" the fastest exact one (Winograd only where its 2x2 tiles fill the map well
        enough and the layer is large enough, MEC only for long kernels and wide enough GEMMs).
        "winograd" stands for both of its paths (winograd_fused tells which). kernel_size and
        padding: those of the live taps (live_geometry), if not the layer's own."""
        if self.algorithm != "auto":
            return self.algorithm
        kernel_size = kernel_size or self.kernel_size
        geometry = (kernel_size, padding or self.padding)
        if self._applies("pointwise", *geometry):
            return "pointwise"
        if (self._applies("winograd", *geometry) and winograd.fill(H_out, W_out) >= WINOGRAD_MIN_FILL
                and N * H_out * W_out * self.in_channels * self.out_channels >= WINOGRAD_MIN_WORK):
            return "winograd"
        if (self._applies("mec", *geometry) and max(kernel_size) >= MEC_MIN_KERNEL
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
        out = tuple(output_size(s, k, st, p, d) for s, k, st, p, d in
                    zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out) < 1:
            raise ValueError(f"{self._describe()}: the kernel (dilated) is larger than the padded "
                             f"input {H}x{W} (padded {H + 2 * self.padding[0]}x{W + 2 * self.padding[1]})")
        return out

    def live_geometry(self, H, W):
        """(kernel_size, padding, taps) of the convolution an H x W input needs: the layer's own,
        taps None, unless some kernel rows or columns only ever meet the padding; then the live
        ones, taps ((i0, i1), (j0, j1)), and the padding that keeps the outputs where they were."""
        taps, kernel, padding = [], [], []
        for size, k, s, p, d in zip((H, W), self.kernel_size, self.stride, self.padding, self.dilation):
            lo, hi = live_taps(size, k, s, p, d)
            if output_size(size, hi - lo, s, p - lo * d, d) != output_size(size, k, s, p, d):
                lo, hi = 0, k   # a cut that would move the windows: keep this axis whole
            taps.append((lo, hi))
            kernel.append(hi - lo)
            padding.append(p - lo * d)
        if tuple(kernel) == self.kernel_size or self.algorithm != "auto":
            return self.kernel_size, self.padding, None
        return tuple(kernel), tuple(padding), tuple(taps)

    def forward(self, x):
        check_input(self, x, "NCHW", self.in_channels, self.weight.data.dtype)
        x = np.ascontiguousarray(x)
        H_out, W_out = self.output_size(*x.shape[2:])
        kernel, padding, taps = self.live_geometry(*x.shape[2:])
        weight = self.weight.data
        if taps is not None:
            (i0, i1), (j0, j1) = taps
            weight = np.ascontiguousarray(weight[:, :, i0:i1, j0:j1])
        name = self.algorithm_for(x.shape[0], H_out, W_out, kernel, padding)
        if name == "winograd" and self.winograd_fused(x.shape[0], H_out, W_out):
            name = "winograd_fused"
        geometry = (self.stride, padding, self.dilation)
        y, cache = ALGORITHMS[name].forward(x, weight, *geometry)
        if y is None:   # Winograd on an input holding inf or NaN: im2col gives the exact result
            name = "im2col"
            y, cache = im2col.forward(x, weight, *geometry)
        if self.bias is not None:
            y += self.bias.data[:, None, None]
        self.cache = {"algorithm": name.replace("winograd_fused", "winograd"), "path": name,
                      "taps": taps, "weight": weight, **cache}
        return y

    def backward(self, dout):
        cache = self.saved()
        dout = np.ascontiguousarray(dout)
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=(0, 2, 3))
        dx, dw = ALGORITHMS[cache["path"]].backward(dout, cache["weight"], cache, self.input_grad)
        if cache["taps"] is None:
            self.weight.grad += dw
        else:   # the dead taps' gradient is zero
            (i0, i1), (j0, j1) = cache["taps"]
            self.weight.grad[:, :, i0:i1, j0:j1] += dw
        return dx if self.input_grad else None
