"""out += A @ B as one BLAS call: the GEMM that adds into its output (beta = 1).

BLAS's GEMM computes C = alpha*A@B + beta*C; NumPy only ever asks it for beta = 0. A sum of
products (MEC's Y = sum over kernel rows of W_i @ S_i, nn/conv/mec.py) written in NumPy therefore
takes a product into a temporary and then a second pass over memory to add it:

    out += A @ B                        # reference: a product into a temporary, then an add

With beta = 1 the GEMM kernel adds each block of its result into `out` while that block is
still in cache: MEC's seven products of a 7x1 layer ran about 25% faster (docs/performance.md).

The GEMM called is the one NumPy itself uses: the OpenBLAS shipped inside NumPy's wheels, whose
CBLAS symbols carry the `64_` suffix of its 64-bit integers. Where it is not found (NumPy built
against another BLAS), where a self-check on first use fails, for arrays BLAS cannot take in
place, or when the switch in nn/kernels/__init__.py says "reference", the reference line above runs.
tests/test_blas.py checks that both give the same sums.
"""
import ctypes

import numpy as np

from . import kernels, runtime

_ROW_MAJOR, _NO_TRANS = 101, 111
_SYMBOLS = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")   # NumPy >= 2 wheels, NumPy 1.x wheels
_gemm = None   # dtype -> the CBLAS function, once looked up


def matmul_add_reference(A, B, out):
    """out += A @ B, for A (M, K), B (K, N), out (M, N)."""
    out += A @ B
    return out


def matmul_add(A, B, out):
    """out += A @ B, for A (M, K), B (K, N), out (M, N): one GEMM with beta = 1 where it can."""
    gemm = _functions().get(out.dtype) if kernels.backend() == "numba" else None
    if gemm is None or not _blas_can_take(A, B, out):
        return matmul_add_reference(A, B, out)
    _call(gemm, A, B, out)
    return out


def available(dtype):
    """Whether matmul_add runs as one BLAS call for arrays of this dtype (when the layout allows)."""
    return kernels.backend() == "numba" and np.dtype(dtype) in _functions()


def _blas_can_take(A, B, out):
    """The three are row-major matrices of one dtype, each row contiguous, none of them empty."""
    (M, K), (K2, N) = A.shape, B.shape
    if K != K2 or out.shape != (M, N) or not M * N * K or not A.dtype == B.dtype == out.dtype:
        return False
    return all(a.strides[1] == a.itemsize and a.strides[0] >= a.shape[1] * a.itemsize
               and a.strides[0] % a.itemsize == 0 for a in (A, B, out))


def _call(gemm, A, B, out):
    M, K = A.shape
    N = B.shape[1]
    lda, ldb, ldc = (a.strides[0] // a.itemsize for a in (A, B, out))
    gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, M, N, K, 1.0, A.ctypes.data, lda,
         B.ctypes.data, ldb, 1.0, out.ctypes.data, ldc)


def _functions():
    global _gemm
    if _gemm is None:
        _gemm = _look_up()
    return _gemm


def _look_up():
    """{float32: sgemm, float64: dgemm} from NumPy's own OpenBLAS, each checked once; or {}."""
    lib = runtime.numpy_openblas()
    for symbol in _SYMBOLS if lib is not None else ():
        found = _bind(lib, symbol)
        if found:
            return found
    return {}


def _bind(lib, symbol):
    """The library's s- and d- variants of `symbol` that exist and pass the check, by dtype."""
    i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    found = {}
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float),
                                  (np.float64, "d", ctypes.c_double)):
        gemm = getattr(lib, symbol.format(letter), None)
        if gemm is None:
            continue
        gemm.argtypes = [i32, i32, i32, i64, i64, i64, scalar, ptr, i64, ptr, i64, scalar, ptr, i64]
        gemm.restype = None
        if _agrees(gemm, np.dtype(dtype)):
            found[np.dtype(dtype)] = gemm
    return found


def _agrees(gemm, dtype):
    """A small sum of products through the library, on row-strided views, equals NumPy's."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 9)).astype(dtype)[:, 1:8]            # lda 9, K 7
    B = rng.standard_normal((7, 6)).astype(dtype)[:, :4]             # ldb 6, N 4
    out = rng.standard_normal((5, 4)).astype(dtype)
    expected = out + A @ B
    _call(gemm, A, B, out)
    return np.allclose(out, expected, rtol=1e-5, atol=1e-5)
