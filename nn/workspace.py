"""Reusable buffers for temporaries that never outlive one call of their owner.

A fresh large array page-faults on first touch (a 55 MB one costs several ms); reusing one
buffer per purpose keeps that cost to the first step. Each algorithm owns a Workspace of its own
(`_work = Workspace()` at the top of its module) and never returns a view of it to a caller: the
next call of that algorithm, on any layer, overwrites it. What a caller receives is always a
fresh array (`owned`).

What forward computes from the input and backward needs again (im2col's columns, Winograd's
input tiles, MEC's lowered input) is kept from forward when it is small, and rebuilt from the
input when it is large (for_backward): keeping saves a pass over memory in backward, rebuilding
saves its memory for the whole step, and a step holds one of these per layer. KEEP_BYTES
decides: kept whatever their size, they were 1.3 GB of Inception-V3's caches at 299x299, batch
32, while rebuilding all of them took 2-4% of a step at 75x75 and 96x96 (docs/performance.md).
Re-measure: python -m benchmarks.train_step --compare-torch
"""
import numpy as np

KEEP_BYTES = 32 * 2 ** 20


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

    def for_backward(self, name, shape, dtype):
        """(buffer, kept) for what backward needs again: a new array to keep in the cache when
        it is at most KEEP_BYTES, else this workspace's buffer `name` (backward rebuilds it)."""
        if int(np.prod(shape)) * np.dtype(dtype).itemsize <= KEEP_BYTES:
            return np.empty(shape, dtype), True
        return self.get(name, shape, dtype), False


def owned(a):
    """A C-contiguous copy of `a`, always (np.ascontiguousarray would hand back `a` itself when it
    is already contiguous, as a workspace view transposed at batch size 1 is)."""
    return np.array(a, order="C")
