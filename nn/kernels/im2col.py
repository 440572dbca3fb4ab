"""Numba twins of nn/conv/im2col.py: im2col (a row of cols per thread) and col2im (a plane of
dx per thread, so that no two threads add to one element)."""
from numba import njit, prange

from nn.conv.im2col import col2im_reference, im2col_reference

from . import twin_of
from .common import _inside


@twin_of(im2col_reference)
@njit(parallel=True, cache=True)
def im2col_numba(x, KH, KW, stride, padding, dilation, H_out, W_out, cols):
    """cols[(c, i, j), (n, h, w)] = xp[n, c, h*sh + i*dh, w*sw + j*dw] (xp: x zero-padded)"""
    N, C, H, W = x.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    cols4 = cols.reshape((C * KH * KW, N, H_out, W_out))  # index with loop variables (nn/kernels/__init__.py)
    for row in prange(C * KH * KW):  # every row of cols is written by one thread
        c = row // (KH * KW)
        i = (row // KW) % KH
        j = row % KW
        offset = j * dw - pw
        w_lo, w_hi = _inside(offset, sw, W, W_out)
        h_lo, h_hi = _inside(i * dh - ph, sh, H, H_out)
        m = w_hi - w_lo
        for n in range(N):
            dst = cols4[row, n]
            src = x[n, c, :, w_lo * sw + offset:]  # column w_lo of the window's inside, row by row
            inside = dst[:, w_lo:w_hi]
            for h in range(H_out):
                if h < h_lo or h >= h_hi:  # the window row lies in the padding
                    for w in range(W_out):
                        dst[h, w] = 0.0
                    continue
                hi = h * sh + i * dh - ph
                for w in range(w_lo):
                    dst[h, w] = 0.0
                if sw == 1:
                    for w in range(m):
                        inside[h, w] = src[hi, w]
                else:
                    for w in range(m):
                        inside[h, w] = src[hi, w * sw]
                for w in range(w_hi, W_out):
                    dst[h, w] = 0.0
    return cols


@twin_of(col2im_reference)
@njit(parallel=True, cache=True)
def col2im_numba(cols, KH, KW, stride, padding, dilation, H_out, W_out, dx):
    """dx[n, c] = sum over (i, j, h, w) of cols[(c, i, j), (n, h, w)] placed back where im2col read it"""
    N, C, H, W = dx.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    cols4 = cols.reshape((C * KH * KW, N, H_out, W_out))
    for plane in prange(N * C):  # one (n, c) plane per thread: no two threads add to one element
        n = plane // C
        c = plane % C
        dx[n, c] = 0.0
        for i in range(KH):
            h_lo, h_hi = _inside(i * dh - ph, sh, H, H_out)
            for j in range(KW):
                row = (c * KH + i) * KW + j
                offset = j * dw - pw
                w_lo, w_hi = _inside(offset, sw, W, W_out)
                src = cols4[row, n, :, w_lo:w_hi]            # the columns that came from inside x
                dst = dx[n, c, :, w_lo * sw + offset:]       # where they came from, row by row
                for h in range(h_lo, h_hi):
                    hi = h * sh + i * dh - ph
                    if sw == 1:
                        for w in range(w_hi - w_lo):
                            dst[hi, w] += src[h, w]
                    else:
                        for w in range(w_hi - w_lo):
                            dst[hi, w * sw] += src[h, w]
    return dx
