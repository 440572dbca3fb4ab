"""Numba twin of nn/conv/mec.py's lowering: a row (j, c) of R per thread."""
from numba import njit, prange

from nn.conv.mec import mec_lower_reference

from . import twin_of
from .common import _inside


@twin_of(mec_lower_reference)
@njit(parallel=True, cache=True)
def mec_lower_numba(x, KW, padding, W_out, R):
    """R[(j, c), r, (n, w)] = xp[n, c, r, w + j] (xp: x zero-padded)"""
    N, C, H, W = x.shape
    ph, pw = padding
    R4 = R.reshape((KW * C, H + 2 * ph, N, W_out))  # index with loop variables (nn/kernels/__init__.py)
    for row in prange(KW * C):  # every row (j, c) of R is written by one thread
        j = row // C
        c = row % C
        w_lo, w_hi = _inside(j - pw, 1, W, W_out)
        for r in range(H + 2 * ph):
            hi = r - ph
            for n in range(N):
                if hi < 0 or hi >= H:
                    for w in range(W_out):
                        R4[row, r, n, w] = 0.0
                    continue
                src = x[n, c, hi, w_lo + j - pw:]
                dst = R4[row, r, n]
                for w in range(w_lo):
                    dst[w] = 0.0
                inside = dst[w_lo:w_hi]
                for w in range(w_hi - w_lo):
                    inside[w] = src[w]
                for w in range(w_hi, W_out):
                    dst[w] = 0.0
    return R
