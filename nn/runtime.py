"""Process settings that decide how fast the same code runs on a small CPU.

Costs that no profile of our own code shows, all measured on 2 cores:
- OpenBLAS worker threads spin for ~0.1 s after every GEMM, on the cores the next Numba kernel
  needs: training steps ran 3.5x slower. OPENBLAS_THREAD_TIMEOUT=4 makes them sleep at once; it
  is read when NumPy loads OpenBLAS, so `import nn` sets it (if NumPy is not loaded yet).
- The other way round: Numba runs its parallel loops on OpenMP (libgomp), whose threads spin
  after every kernel on the cores the next GEMM needs: a GEMM right after a Numba kernel took
  12-13 ms instead of 6. OMP_WAIT_POLICY=PASSIVE makes them sleep at once; libgomp reads it when
  it loads (Numba's first parallel kernel), so `import nn` sets it too, unless the user did.
- Every large temporary (above glibc's mmap threshold, 128 KB to 32 MB) gets fresh pages from
  the kernel, and the first touch of each page faults: a 44 MB BN output cost 17 ms fresh against
  4 ms reused. keep_freed_memory() asks glibc to reuse freed memory instead (training steps of
  Inception-V3 at 299x299: +13-21%, same peak RSS). It changes the whole process's allocator, so
  the training command and the benchmarks call it, and a library user may.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def quiet_idle_threads():
    """Idle worker threads sleep instead of spinning: OPENBLAS_THREAD_TIMEOUT=4 (only effective
    before NumPy loads) and OMP_WAIT_POLICY=PASSIVE (before OpenMP loads), unless already set."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory():
    """Let glibc serve large arrays from its heap and keep freed memory for reuse (no fresh,
    page-faulting pages for every step's temporaries). Returns False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1      # arrays up to 1 GB from the heap
        return ok and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1   # never shrink it
    except (OSError, AttributeError):
        return False
