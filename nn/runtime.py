"""Process settings that decide how fast the same code runs on a small CPU, made at run time.

They are made once, when the first layer runs (Module.__call__ calls prepare()), whatever was
imported before nn and in whatever order: a script or notebook that imports NumPy first trains
as fast as `python -m models.train`. Importing nn changes nothing by itself.

Thread pools. Two pools of worker threads take turns on the same cores: OpenBLAS's, which run
NumPy's matrix products, and OpenMP's (libgomp), which run the Numba kernels. After its work,
an idle thread of either pool spins for a while, waiting for more, before it sleeps:
- OpenBLAS's threads spin for about 0.1 s after every matrix product (2**28 clock cycles), on
  the cores the Numba kernel that follows needs;
- libgomp's threads spin for 300,000 rounds after every Numba kernel (about 10 ms of CPU here),
  on the cores the product that follows needs: it ran at half speed;
- but a thread that sleeps at once costs the next kernel a wake-up (30-40 us a parallel region
  here): a small layer's forward and backward took 4-6 times as long, and a training step of
  Inception-V2 at 32x32 lost 20%.
prepare() sets both in between, at run time:
- OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when NumPy loads it, and again when asked to
  (openblas_read_env); its threads are then stopped, and the next product starts them again with
  the new timeout (4: they sleep after 16 cycles);
- libgomp reads GOMP_SPINCOUNT once, when it loads, which is when Numba starts its thread pool:
  prepare() starts that pool (3-4 ms), with GOMP_SPINCOUNT=1000 set for that moment (a few
  microseconds: enough for the next kernel of a layer, too short to slow the product after it).
  PyTorch's copy of libgomp has the same name, so one process holds only one: imported before
  nn, torch keeps its own settings and nn leaves them alone; imported after, torch's OpenMP
  threads spin this briefly too.
Neither variable stays in os.environ: child processes (a PyTorch benchmark, the user's own
subprocesses) get the environment the user started with. A value the user set is left alone.

Memory. Every large temporary (above glibc's mmap threshold, 128 KB rising to 32 MB) gets fresh
pages from the kernel, and the first touch of each page faults: a step of Inception-V3 at
299x299 allocates gigabytes that way. keep_freed_memory() has glibc serve arrays up to 1 GB from
its heap and keep what is freed for the next step. The process's memory then stays at its peak
instead of shrinking between steps (the peak itself does not move). docs/performance.md has the
figures and the command that measures them.

status() says what was done; tests/test_runtime.py measures the idle threads' CPU time.
"""
import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

# The settings prepare() makes, where the user has not; docs/performance.md has the figures and the
# command that re-measures them (GOMP_SPINCOUNT from 100 to 10,000, OMP_WAIT_POLICY=PASSIVE).
QUIET = {"OPENBLAS_THREAD_TIMEOUT": "4", "GOMP_SPINCOUNT": "1000"}
SET_BY_USER = frozenset(k for k in QUIET if k in os.environ)   # as the process found them
_LIBRARY_PATTERNS = ("numpy.libs/*openblas*", "numpy/.dylibs/*openblas*")
_status = {}


def numpy_openblas():
    """The OpenBLAS library NumPy's wheel carries (already loaded by NumPy), or None: another
    BLAS, or a NumPy built from source."""
    site = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in _LIBRARY_PATTERNS:
        for path in sorted(glob.glob(os.path.join(site, pattern))):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


@contextlib.contextmanager
def _environment(values):
    """os.environ with `values` added where the user has not set them, for the block only."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _quiet_openblas():
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return "left as the environment sets it"
    lib = numpy_openblas()
    if lib is None or not all(hasattr(lib, f) for f in ("openblas_read_env", "blas_thread_shutdown_")):
        return "not NumPy's own OpenBLAS: left alone"
    with _environment(QUIET):
        lib.openblas_read_env()
    lib.blas_thread_shutdown_()   # restarted by the next product, with the new timeout
    return "idle threads sleep at once"


def _quiet_openmp():
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return "left as the environment sets it"
    try:
        from numba.np.ufunc import parallel
    except ImportError:
        return "no Numba"
    if parallel._is_initialized:
        return "Numba's threads had started before nn was imported: left as they are"
    if _loaded("libgomp"):   # e.g. by PyTorch, whose copy has the same name: Numba will share it
        return "libgomp was loaded before nn was imported (by PyTorch?): left as it is"
    with _environment(QUIET):
        parallel._launch_threads()
    return f"idle threads spin briefly, then sleep ({parallel._threading_layer} threading layer)"


def _loaded(name):
    """Whether a shared library whose file name starts with `name` is loaded (Linux; else False)."""
    try:
        with open("/proc/self/maps") as maps:
            return any(os.path.basename(line.split()[-1]).startswith(name)
                       for line in maps if "/" in line)
    except OSError:
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Let glibc serve large arrays from its heap and keep freed memory for reuse (no fresh,
    page-faulting pages for every step's temporaries). Returns what was done."""
    if not sys.platform.startswith("linux"):
        return "not glibc: left alone"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1      # arrays up to 1 GB from the heap
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1   # never shrink it
    except (OSError, AttributeError):
        ok = False
    return "freed memory kept for reuse" if ok else "not glibc: left alone"


def prepare():
    """Make the settings above, once per process (Module.__call__ calls this before every layer's
    first forward; it is a no-op afterwards). Returns status()."""
    if not _status:
        _status.update(openblas=_quiet_openblas(), openmp=_quiet_openmp(),
                       memory=keep_freed_memory())
    return status()


def set_threads(n):
    """Use n threads in Numba's kernels and in NumPy's OpenBLAS (data-parallel ranks that share
    a machine's cores: models/distributed.py)."""
    try:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    lib = numpy_openblas()
    for symbol in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
        if lib is not None and hasattr(lib, symbol):
            getattr(lib, symbol)(ctypes.c_int(n))
            break


def status():
    """What prepare() did, per thread pool and for memory ({} before it ran)."""
    return dict(_status)
