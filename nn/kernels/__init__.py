"""The fast twins of the hot loops, and the one switch that picks them.

Every hot loop has a readable NumPy reference in the module that uses it (nn/conv/im2col.py:
im2col_reference) and a Numba twin in the kernel module of the same name here
(nn/kernels/im2col.py: im2col_numba), registered against its reference with
@twin_of(im2col_reference): same signature, same docstring line. A layer calls
kernels.twin(im2col_reference): the twin when the Numba backend is on, else the reference
itself. tests/test_kernels.py checks every registered pair on hypothesis-generated shapes.

The switch: the twins run when Numba is importable, unless the environment variable
NN_KERNELS=reference is set (or set_backend("reference") is called), in which case every layer
runs the plain NumPy references.

The rules every kernel keeps, and why (docs/design.md has the measurements behind them):
- prange over an axis whose iterations write disjoint memory (rows of cols, planes of dx),
  never `+=` into an element two threads can reach; no BLAS inside a prange loop;
- no fastmath, but for "contract" (fused multiply-adds) and "reassoc" (sums in any order, which
  a vectorized sum needs) where a test pins the result; never the flags that assume away NaN or
  inf: the results must equal the reference's to rounding;
- a float accumulator starts from a value of the array's dtype, not from the literal 0.0
  (a float64, which makes a float32 loop run in float64);
- in hot loops, index with loop variables only: Numba corrects every signed index that might be
  negative (Python's a[-1]), and that check keeps the loop from vectorizing. Where an offset is
  needed, take a view that starts there and index the view from 0;
- take views along one axis only: a view sliced along two is typed "any layout" and its loops
  do not vectorize;
- a stride that is 1 should be known to be 1 (a separate loop), or a loop over `src[w * sw]`
  does not vectorize;
- copy a plane over the valid ranges computed once (common._inside), not with a test per pixel;
- before a prange loop, make each view of an argument in a statement of its own: four views
  unpacked from one tuple (`pf, gf, mf, vf = p.reshape(n), ...`) lost every write of the loop.
Numba caches each compiled kernel in nn/kernels/__pycache__ and tracks only the kernel's own
file: after editing a helper of common.py or winograd.py, delete that folder.
"""
import importlib
import os

try:
    import numba  # noqa: F401
    HAVE_NUMBA = True
except ImportError:  # the NumPy references are used everywhere
    HAVE_NUMBA = False

KERNEL_MODULES = ("im2col", "mec", "winograd", "winograd_fused", "pooling", "batchnorm", "optim")
_BACKENDS = ("numba", "reference")
_backend = "reference"
_TWINS = {}          # reference function -> its Numba twin, filled when the kernel modules load
_loaded = False


def twin_of(reference):
    """Register the decorated function as the Numba twin of `reference`."""
    def register(fast):
        _TWINS[reference] = fast
        return fast
    return register


def _load():
    """Import every kernel module, which registers its twins (once, at the first twin() call:
    the kernel modules import the references, so they cannot load while nn itself is loading)."""
    global _loaded
    for name in KERNEL_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True


def twin(reference):
    """The one switch: the function a layer calls for `reference` is its Numba twin when the Numba
    backend is on, else the reference itself."""
    if _backend != "numba":
        return reference
    if not _loaded:
        _load()
    return _TWINS[reference]


def twins():
    """Every registered (reference, twin) pair."""
    if HAVE_NUMBA and not _loaded:
        _load()
    return dict(_TWINS)


def set_backend(name):
    """Pick "numba" (the fast twins) or "reference" (the readable NumPy code) for every layer."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"set_backend: expected one of {_BACKENDS}, got {name!r}")
    if name == "numba" and not HAVE_NUMBA:
        raise RuntimeError("set_backend: Numba is not installed (pip install numba)")
    _backend = name


def backend():
    return _backend


def use_numba():
    return _backend == "numba"


set_backend("reference" if not HAVE_NUMBA or os.environ.get("NN_KERNELS") == "reference"
            else "numba")
