"""Helpers the kernels share: the valid ranges of a window, and where a window starts inside."""
from numba import njit


@njit(cache=True)
def _inside(offset, stride, size, size_out):
    """The outputs w (a range) whose input w*stride + offset lies in [0, size): no test per pixel."""
    lo = max(0, -(offset // stride))
    hi = min(size_out, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _first_inside(start, dilation):
    """The first kernel offset i of a window starting at `start` whose pixel start + i*dilation
    is inside the input (not in the padding): where a window without a maximum points."""
    return max(0, -(start // dilation))
