"""Numba twins of nn/pooling.py: max pooling (over stride phases, a row of outputs at a time;
stride 1 as a row pass and a column pass), its backward, and average pooling in two separable
passes and its backward. These kernels take a plane (n, c) per thread.

Small planes (the last blocks of a network at 32x32 or 75x75: 1x1 to 16x16 maps of up to 1,700
channels) take another path (_small_planes): a block of planes at a time, copied pixel-major
into cache, so that each window offset is one loop across the block's planes, which vectorizes.
Per plane, the passes above would set up a padded copy and scratch rows (about 0.2 us) for a
few outputs: 10x slower on 1x1 to 8x8 maps, and still slower up to 16x16; from 17x17 on the
per-plane passes win (docs/performance.md: "Small maps"). The twins are Python functions that
choose the path, so that a run compiles only the kernels it calls.
"""
import numpy as np
from numba import njit, prange

from nn.pooling import (avgpool_backward_reference, avgpool_reference, maxpool_backward_reference,
                        maxpool_reference)

from . import twin_of
from .common import _first_inside, _inside

SMALL_PLANE = 256   # pixels (H*W) up to which planes are pooled a block at a time
BLOCK = 128         # planes per block: 256 pixels x 128 planes of float32 is 128 KB, in L2


def _small_planes(H, W):
    """Whether planes of H x W pixels are pooled a block at a time (else a plane at a time)."""
    return H * W <= SMALL_PLANE


@njit(cache=True)
def _window_range(start, K, dilation, size):
    """The kernel offsets [lo, hi) of a window starting at `start` whose pixels lie in [0, size)."""
    return _first_inside(start, dilation), min(K, (size - 1 - start) // dilation + 1)


# inline="always": called, these copies took the 16x16 max pooling from 0.38 to 0.78 ms
@njit(cache=True, inline="always")
def _to_block(planes, p0, nb, block):
    """block[q, p] = planes[p0 + p, q]: nb planes (P, pixels), pixel-major."""
    for p in range(nb):
        for q in range(planes.shape[1]):
            block[q, p] = planes[p0 + p, q]


@njit(cache=True, inline="always")
def _from_block(block, p0, nb, planes):
    """planes[p0 + p, q] = block[q, p], the other way."""
    for p in range(nb):
        for q in range(planes.shape[1]):
            planes[p0 + p, q] = block[q, p]


@njit(parallel=True, cache=True)
def _maxpool_small_planes(x, KH, KW, stride, padding, dilation, y, offset):
    """maxpool_numba on planes of at most SMALL_PLANE pixels, BLOCK planes at a time: for each
    window, a row-major scan of its pixels inside the plane (the padding is -inf, never a
    maximum), each step across the block's planes."""
    N, C, H, W = x.shape
    H_out, W_out = y.shape[2], y.shape[3]
    P = N * C
    xs = x.reshape(P, H * W)   # each view in a statement of its own (nn/kernels/__init__.py)
    ys = y.reshape(P, H_out * W_out)
    os = offset.reshape(P, H_out * W_out)
    for b in prange((P + BLOCK - 1) // BLOCK):
        p0 = b * BLOCK
        nb = min(P, p0 + BLOCK) - p0
        block = np.empty((H * W, BLOCK), x.dtype)
        _to_block(xs, p0, nb, block)
        best = np.empty(BLOCK, x.dtype)
        at = np.empty(BLOCK, offset.dtype)
        for h in range(H_out):
            r0 = h * stride[0] - padding[0]
            i0, i1 = _window_range(r0, KH, dilation[0], H)
            for w in range(W_out):
                c0 = w * stride[1] - padding[1]
                j0, j1 = _window_range(c0, KW, dilation[1], W)
                best[:] = -np.inf
                at[:] = i0 * KW + j0   # a window of -inf keeps its first input pixel
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        pixel = block[(r0 + i * dilation[0]) * W + c0 + j * dilation[1]]
                        for p in range(nb):  # a strict > keeps the first maximum; the last NaN
                            v = pixel[p]
                            if v > best[p] or v != v:
                                best[p] = v
                                at[p] = i * KW + j
                for p in range(nb):
                    ys[p0 + p, h * W_out + w] = best[p]
                    os[p0 + p, h * W_out + w] = at[p]
    return y, offset


@njit(cache=True)
def _maxpool_stride1(xp, KH, KW, dilation, padding, y, offset):
    """maxpool_numba for one padded plane xp (Hp, S) at stride 1: a pass along the rows, then
    one down the columns, each a single long loop over the flattened plane (positions whose
    window runs past the end of a row are computed too, and never read). The row pass keeps
    the first j holding each row's maximum (the last NaN), the column pass the first i (the
    last row with a NaN): together, the first maximum in row-major order (its last NaN), as
    the general scan finds it. A window of -inf points at its first input pixel."""
    Hp, S = xp.shape
    H_out, W_out = y.shape
    dh, dw = dilation
    ph, pw = padding
    flat = xp.reshape(Hp * S)
    L1 = Hp * S - (KW - 1) * dw
    rm = flat[:L1].copy()                # rm[r*S + w]: max over row r's window at column w
    rj = np.zeros(L1, np.int32)          # its first column offset j
    for j in range(1, KW):
        src = flat[j * dw:]
        for k in range(L1):
            v = src[k]
            if v > rm[k] or v != v:
                rm[k] = v
                rj[k] = j
    L2 = (H_out - 1) * S + W_out         # the last output's position, plus one
    cm = rm[:L2].copy()                  # cm[h*S + w]: the window's max
    ci = np.zeros(L2, np.int32)          # its first row offset i
    for i in range(1, KH):
        src = rm[i * dh * S:]
        for k in range(L2):
            v = src[k]
            if v > cm[k] or v != v:
                cm[k] = v
                ci[k] = i
    for h in range(H_out):
        for w in range(W_out):
            k = h * S + w
            i = ci[k]
            j = rj[k + i * dh * S]
            y[h, w] = cm[k]
            if cm[k] == -np.inf:  # no maximum: the first input pixel, not the padding
                i = _first_inside(h - ph, dh)
                j = _first_inside(w - pw, dw)
            offset[h, w] = i * KW + j


@twin_of(maxpool_reference)
def maxpool_numba(x, KH, KW, stride, padding, dilation, H_out, W_out, y, offset):
    """y[n, c, h, w] = max of the window; offset = i*KW + j of its first maximum in the window"""
    if _small_planes(*x.shape[2:]):
        return _maxpool_small_planes(x, KH, KW, stride, padding, dilation, y, offset)
    return _maxpool_planes(x, KH, KW, stride, padding, dilation, H_out, W_out, y, offset)


@njit(parallel=True, cache=True)
def _maxpool_planes(x, KH, KW, stride, padding, dilation, H_out, W_out, y, offset):
    """maxpool_numba a plane at a time, on planes larger than SMALL_PLANE pixels"""
    N, C, H, W = x.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    Hp = (H_out - 1) * sh + (KH - 1) * dh + 1        # rows and columns the windows reach
    S = W_out + ((KW - 1) * dw) // sw                 # columns per stride phase they reach
    for plane in prange(N * C):
        n = plane // C
        c = plane % C
        # the plane padded with -inf and split into sw column phases: xs[p, r, s] = xp[r, s*sw + p],
        # so that window column j of output w is xs[(j*dw) % sw, r, w + (j*dw) // sw]: stride 1
        xs = np.full((sw, Hp, S), -np.inf, x.dtype)
        for p in range(sw):
            lo, hi = _inside(p - pw, sw, W, S)  # the phase's columns that hold a column of x
            for r in range(max(0, ph), min(Hp, H + ph)):
                src = x[n, c, r - ph, lo * sw + p - pw:]
                dst = xs[p, r, lo:hi]
                for s in range(hi - lo):
                    dst[s] = src[s * sw]
        if sh == 1 and sw == 1:
            _maxpool_stride1(xs[0], KH, KW, dilation, padding, y[n, c], offset[n, c])
            continue
        best = np.empty(W_out, x.dtype)
        bk = np.empty(W_out, np.int32)  # the window offset i*KW + j of the maximum so far
        j0 = np.empty(W_out, np.int32)  # each window's first column inside the input
        for w in range(W_out):
            j0[w] = _first_inside(w * sw - pw, dw)
        for h in range(H_out):  # a row of outputs at a time, scanning the window row-major
            best[:] = -np.inf
            i0 = _first_inside(h * sh - ph, dh)
            # a window of -inf keeps its first input pixel, set before the scan (a test
            # after it, per output, made this kernel 8-10% slower)
            for w in range(W_out):
                bk[w] = i0 * KW + j0[w]
            for i in range(KH):
                r = h * sh + i * dh
                for j in range(KW):
                    row = xs[(j * dw) % sw, r, (j * dw) // sw:]
                    k = i * KW + j
                    for w in range(W_out):  # a strict > keeps the first maximum; the last NaN
                        v = row[w]
                        if v > best[w] or v != v:
                            best[w] = v
                            bk[w] = k
            for w in range(W_out):
                y[n, c, h, w] = best[w]
                offset[n, c, h, w] = bk[w]
    return y, offset


@twin_of(maxpool_backward_reference)
@njit(parallel=True, cache=True)
def maxpool_backward_numba(dout, offset, KW, stride, padding, dilation, dx):
    """dx[n, c, h_in, w_in] += dout[n, c, h, w] where window (h, w)'s offset points (overlapping
    windows accumulate)"""
    N, C, H, W = dx.shape
    H_out, W_out = dout.shape[2], dout.shape[3]
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for plane in prange(N * C):  # each plane's windows only reach that plane of dx
        n = plane // C
        c = plane % C
        dx[n, c] = 0.0
        for h in range(H_out):
            for w in range(W_out):
                k = np.int64(offset[n, c, h, w])
                dx[n, c, h * sh + (k // KW) * dh - ph, w * sw + (k % KW) * dw - pw] += dout[n, c, h, w]
    return dx


@njit(parallel=True, cache=True)
def _avgpool_small_planes(x, KH, KW, stride, padding, divisor, y):
    """avgpool_numba on planes of at most SMALL_PLANE pixels, BLOCK planes at a time: each
    window's pixels inside the plane (the padding adds nothing) summed across the block."""
    N, C, H, W = x.shape
    H_out, W_out = y.shape[2], y.shape[3]
    P = N * C
    xs = x.reshape(P, H * W)
    ys = y.reshape(P, H_out * W_out)
    for b in prange((P + BLOCK - 1) // BLOCK):
        p0 = b * BLOCK
        nb = min(P, p0 + BLOCK) - p0
        block = np.empty((H * W, BLOCK), x.dtype)
        _to_block(xs, p0, nb, block)
        out = np.zeros((H_out * W_out, BLOCK), x.dtype)
        for h in range(H_out):
            r0 = h * stride[0] - padding[0]
            i0, i1 = _window_range(r0, KH, 1, H)
            for w in range(W_out):
                c0 = w * stride[1] - padding[1]
                j0, j1 = _window_range(c0, KW, 1, W)
                total = out[h * W_out + w]
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        pixel = block[(r0 + i) * W + c0 + j]
                        for p in range(nb):
                            total[p] += pixel[p]
                d = divisor[h, w]
                for p in range(nb):
                    total[p] /= d
        _from_block(out, p0, nb, ys)
    return y


@njit(parallel=True, cache=True)
def _avgpool_backward_small_planes(dout, KH, KW, stride, padding, divisor, dx):
    """avgpool_backward_numba on planes of at most SMALL_PLANE pixels, BLOCK planes at a time:
    each output's share added to the pixels of its window inside the plane."""
    N, C, H, W = dx.shape
    H_out, W_out = dout.shape[2], dout.shape[3]
    P = N * C
    gs = dout.reshape(P, H_out * W_out)
    dxs = dx.reshape(P, H * W)
    for b in prange((P + BLOCK - 1) // BLOCK):
        p0 = b * BLOCK
        nb = min(P, p0 + BLOCK) - p0
        g = np.empty((H_out * W_out, BLOCK), dout.dtype)
        _to_block(gs, p0, nb, g)
        block = np.zeros((H * W, BLOCK), dx.dtype)
        for h in range(H_out):
            r0 = h * stride[0] - padding[0]
            i0, i1 = _window_range(r0, KH, 1, H)
            for w in range(W_out):
                c0 = w * stride[1] - padding[1]
                j0, j1 = _window_range(c0, KW, 1, W)
                share = g[h * W_out + w]
                d = divisor[h, w]
                for p in range(nb):
                    share[p] /= d
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        pixel = block[(r0 + i) * W + c0 + j]
                        for p in range(nb):
                            pixel[p] += share[p]
        _from_block(block, p0, nb, dxs)
    return dx


@twin_of(avgpool_reference)
def avgpool_numba(x, KH, KW, stride, padding, divisor, y):
    """y[n, c, h, w] = sum of the zero-padded window starting at (h*sh - ph, w*sw - pw) / divisor[h, w]"""
    if _small_planes(*x.shape[2:]):
        return _avgpool_small_planes(x, KH, KW, stride, padding, divisor, y)
    return _avgpool_planes(x, KH, KW, stride, padding, divisor, y)


@njit(parallel=True, cache=True)
def _avgpool_planes(x, KH, KW, stride, padding, divisor, y):
    """avgpool_numba a plane at a time, on planes larger than SMALL_PLANE pixels"""
    N, C, H, W = x.shape
    H_out, W_out = divisor.shape
    sh, sw = stride
    ph, pw = padding
    for plane in prange(N * C):  # separable: sum along each row first, then down the columns
        n = plane // C
        c = plane % C
        rows = np.zeros((H, W_out), x.dtype)  # rows[r, w]: row r of x summed over window w's columns
        for j in range(KW):
            lo, hi = _inside(j - pw, sw, W, W_out)  # the windows whose column j lies inside x
            for r in range(H):
                src = x[n, c, r, lo * sw + j - pw:]
                dst = rows[r, lo:hi]
                if sw == 1:  # a stride known to be 1 lets the loop vectorize
                    for w in range(hi - lo):
                        dst[w] += src[w]
                else:
                    for w in range(hi - lo):
                        dst[w] += src[w * sw]
        out = y[n, c]
        out[:, :] = 0.0
        for i in range(KH):
            lo, hi = _inside(i - ph, sh, H, H_out)  # the windows whose row i lies inside x
            for h in range(hi - lo):
                src = rows[(lo + h) * sh + i - ph]
                dst = out[lo + h]
                for w in range(W_out):
                    dst[w] += src[w]
        for h in range(H_out):
            dst = out[h]
            d = divisor[h]
            for w in range(W_out):
                dst[w] /= d[w]
    return y


@twin_of(avgpool_backward_reference)
def avgpool_backward_numba(dout, KH, KW, stride, padding, divisor, dx):
    """dx[n, c, window of (h, w)] += dout[n, c, h, w] / divisor[h, w] (overlapping windows add up)"""
    if _small_planes(*dx.shape[2:]):
        return _avgpool_backward_small_planes(dout, KH, KW, stride, padding, divisor, dx)
    return _avgpool_backward_planes(dout, KH, KW, stride, padding, divisor, dx)


@njit(parallel=True, cache=True)
def _avgpool_backward_planes(dout, KH, KW, stride, padding, divisor, dx):
    """avgpool_backward_numba a plane at a time, on planes larger than SMALL_PLANE pixels"""
    N, C, H, W = dx.shape
    H_out, W_out = divisor.shape
    sh, sw = stride
    ph, pw = padding
    for plane in prange(N * C):  # forward's two passes, transposed, in the reverse order
        n = plane // C
        c = plane % C
        rows = np.zeros((H, W_out), dx.dtype)  # rows[r, w]: what row r gets from window column w
        for i in range(KH):
            lo, hi = _inside(i - ph, sh, H, H_out)
            for h in range(hi - lo):
                g = dout[n, c, lo + h]
                d = divisor[lo + h]
                dst = rows[(lo + h) * sh + i - ph]
                for w in range(W_out):
                    dst[w] += g[w] / d[w]
        out = dx[n, c]
        out[:, :] = 0.0
        for j in range(KW):
            lo, hi = _inside(j - pw, sw, W, W_out)
            for r in range(H):
                src = rows[r, lo:hi]
                dst = out[r, lo * sw + j - pw:]
                if sw == 1:
                    for w in range(hi - lo):
                        dst[w] += src[w]
                else:
                    for w in range(hi - lo):
                        dst[w * sw] += src[w]
    return dx
