"""Compile a training run's Numba kernels before its first batch, on two cores at once.

Numba compiles each kernel the first time it is called with a new signature (dtypes, ranks,
layouts), one after the other on one core, and caches it (nn/kernels/__init__.py): on a fresh
machine the first batch of the quick preset waited for about 12 s of compilation. Every
float32 training run of these models calls the same base kernels (im2col and col2im, batch
norm, max and average pooling, the Adam step), so warm() calls them on tiny inputs, through the
layers themselves (so that the signatures are exactly the run's), in two groups: one in this
process and one in a child process at the same time, which writes its kernels to the same
cache; the run's first batch then loads them all from there. Kernels the base set does not
hold (Winograd, MEC) compile at their first call, as before: only where a run needs them.
Where the cache already holds the base kernels, warm() does nothing.

    python -m nn.kernels.warm GROUP        (what the child process runs)
"""
import subprocess
import sys

import numpy as np

from . import HAVE_NUMBA, use_numba


def _pooling():
    import nn
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for pool in (nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)):
        pool.backward(np.ones_like(pool(x)))


def _layers():
    import nn
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, algorithm="im2col"), nn.BatchNorm2d(4))
    net.backward(np.ones_like(net(x)))
    net.eval()
    net(x)
    nn.optim.AdamW(net.parameters()).step()


GROUPS = {"pooling": _pooling, "layers": _layers}
BASE = ("nn.kernels.im2col", "nn.kernels.pooling", "nn.kernels.batchnorm", "nn.kernels.optim")


def _cached(dispatcher):
    """Whether Numba's cache holds a compiled version of this kernel (any signature); False
    where this Numba keeps its cache otherwise (warm() then runs: it does no harm)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except (AttributeError, OSError, EOFError, ValueError):
        return False


def needed():
    """Whether the base kernels are missing from the cache (a fresh machine, or edited kernels)."""
    from numba.core.registry import CPUDispatcher

    from . import twins
    # a twin that is a Python function choosing between kernels (pooling) is skipped: the other
    # twins of its file go stale with it (Numba's cache entries carry the file's time stamp)
    return HAVE_NUMBA and use_numba() and not all(
        _cached(k) for k in twins().values() if k.__module__ in BASE and isinstance(k, CPUDispatcher))


def warm():
    """Compile the base kernels, in two processes at once."""
    child = subprocess.Popen([sys.executable, "-m", __name__, "layers"])
    try:
        GROUPS["pooling"]()
    finally:
        child.wait()


if __name__ == "__main__":
    GROUPS[sys.argv[1]]()
