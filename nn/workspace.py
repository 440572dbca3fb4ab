"""Reusable buffers for temporaries that never outlive one call of their owner.

A fresh large array page-faults on first touch (a 55 MB one costs several ms); reusing one
buffer per purpose keeps that cost to the first step. Each algorithm owns a Workspace of its own
(`_work = Workspace()` at the top of its module) and never returns a view of it to a caller: the
next call of that algorithm, on any layer, overwrites it. What a caller receives is always a
fresh array (`owned`).
"""
import numpy as np


class Workspace:
    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        """A buffer of this shape and dtype, reused from the last call that asked for `name`."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self._buffers[(name, dtype)] = buf
        return buf[:size].reshape(shape)


def owned(a):
    """A C-contiguous copy of `a`, always (np.ascontiguousarray would hand back `a` itself when it
    is already contiguous, as a workspace view transposed at batch size 1 is)."""
    return np.array(a, order="C")
