"""Sizes and layouts every layer shares: the one output-size rule of convolutions and pooling,
kernel/stride/padding pairs, and the layout check of an input.

Output size along one axis (PyTorch's formula):
    floor mode:  o = floor((size + 2p - d*(k-1) - 1) / s) + 1
    ceil mode:   o = ceil((size + 2p - d*(k-1) - 1) / s) + 1, then o -= 1 if (o-1)*s >= size + p
                 (pooling only: the last window must start inside the input or the left padding)
"""
import math

import numpy as np


def output_size(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False):
    """The number of windows along one axis (PyTorch's rule, floor or ceil mode)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def live_taps(size, kernel, stride=1, padding=0, dilation=1):
    """The kernel offsets [lo, hi) along one axis that meet the input at some output: offsets
    outside them only ever multiply the zero padding. A 3x3 kernel with padding 1 on a 1x1 map
    has one live offset per axis (1, the centre), a 7-long one with padding 3 on a 3-long map five.

    Offset i meets the input at output o when 0 <= o*stride - padding + i*dilation < size, for
    some o < output_size. lo is kept at most padding // dilation, so that the kernel cut to
    [lo, hi) is a convolution with the padding padding - lo*dilation >= 0 on the left.
    """
    last = (output_size(size, kernel, stride, padding, dilation) - 1) * stride - padding
    lo = min(max(0, -(last // dilation)), padding // dilation)   # the last window's first pixel inside
    hi = min(kernel, (size - 1 + padding) // dilation + 1)       # the first window's last pixel inside
    return lo, hi


def pair(value, what, layer_name):
    """An int or a pair of ints as a pair (kernel sizes, strides, paddings)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{layer_name}: {what} must be an int or a pair of ints, got {value!r}")


def check_input(layer, x, layout, channels=None, dtype=None):
    """Refuse anything but an array of the layout's rank (and channel count, and dtype), naming
    the layer. (Module.check_inputs has already refused what is not a floating NumPy array.)

    layout is a string like "NCHW" or "NC" naming the axes the layer expects; channels, if
    given, is the required size of axis 1; dtype, if given, the dtype of the layer's parameters.
    """
    name = layer._describe()
    if x.ndim != len(layout):
        raise ValueError(f"{name}: expected a {len(layout)}-D input ({', '.join(layout)}), "
                         f"got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels on axis 1, got shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: input is {x.dtype} but the parameters are {dtype}; "
                         f"cast the model with .to(np.{x.dtype}) or the input with .astype")
