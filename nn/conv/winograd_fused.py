"""Winograd fused: the chain of nn/conv/winograd.py a block of tile rows at a time, in cache.

Where V and M get large (the V3 stem: 32 channels on 147x147 maps, 179M floats at batch 32),
the 16 products are too thin (K = C_in = 32) to be anything but a wait on memory: each reads
V[xi] and writes M[xi] once for 64 flops per element. There the layer runs the whole chain
fused: the Numba twins (nn/kernels/winograd_fused.py) take a block of tile rows at a time,
transform it, multiply and transform back while it is in cache, and never hold V or M for the
batch; backward transforms the input again, which is cheap in cache, so the layer keeps only
its input. nn/conv/__init__.py says from which size it pays.

The references below are the same computation on the whole batch at once: the three steps of
nn/conv/winograd.py in a row.
"""
import numpy as np

from .. import kernels
from . import winograd
from .winograd import (tiles, transform_weight, transform_weight_backward, winograd_input_reference,
                       winograd_input_backward_reference, winograd_output_backward_reference,
                       winograd_output_reference)

applies = winograd.applies   # the same geometry: 3x3, stride 1


def winograd_forward_reference(x, U, padding, th, tw, y):
    """y = the F(2x2, 3x3) convolution of x with the transformed kernels U (16, C_out, C_in);
    and whether every value of x is finite

    The three steps of nn/conv/winograd.py in a row, on every tile of the batch at once. The
    Numba twin does the same a block of tile rows at a time, so that V and M stay in cache
    instead of going through memory (nn/kernels/winograd_fused.py)."""
    N, C = x.shape[:2]
    V, finite = winograd_input_reference(x, padding, th, tw, np.empty((16, C, N * th * tw), x.dtype))
    return winograd_output_reference(U @ V, th, tw, y), finite


def winograd_backward_reference(x, dout, U, padding, th, tw, dx):
    """dx (written) and dU = dM @ V^T (returned, (16, C_out, C_in)) of the F(2x2, 3x3) convolution"""
    N, C = x.shape[:2]
    V, _ = winograd_input_reference(x, padding, th, tw, np.empty((16, C, N * th * tw), x.dtype))
    dM = winograd_output_backward_reference(dout, th, tw, np.empty((16, U.shape[1], V.shape[2]), x.dtype))
    winograd_input_backward_reference(U.transpose(0, 2, 1) @ dM, padding, th, tw, dx)
    return dM @ V.transpose(0, 2, 1)


def forward(x, w, stride, padding, dilation):
    """y = x convolved with w, a block of tiles at a time; the cache holds x and U only.
    (None, None) for an input that holds inf or NaN (nn/conv/winograd.py says why)."""
    N, C, H, W = x.shape
    H_out, W_out = H + 2 * padding[0] - 2, W + 2 * padding[1] - 2
    th, tw = tiles(H_out, W_out)
    U = transform_weight(w)
    y, finite = kernels.twin(winograd_forward_reference)(x, U, padding, th, tw,
                                                         np.empty((N, w.shape[0], H_out, W_out), x.dtype))
    if not finite:
        return None, None
    return y, {"x": x, "U": U, "padding": padding}


def backward(dy, w, cache, need_dx=True):
    """(dx, dW): the fused kernels compute both together, so dx is computed even when not needed."""
    x, U, padding = cache["x"], cache["U"], cache["padding"]
    th, tw = tiles(*dy.shape[2:])
    dx = np.empty_like(x)
    dU = kernels.twin(winograd_backward_reference)(x, dy, U, padding, th, tw, dx)
    return dx, transform_weight_backward(dU)
