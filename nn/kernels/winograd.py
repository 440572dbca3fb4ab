"""Numba twins of nn/conv/winograd.py: the four F(2x2, 3x3) transforms over the whole batch.

Each transform is written once, for a range of tile rows a0 <= a < a1 of one plane, reading or
writing its tiles at [:, channel, r0 + a - a0, b] of a (16, channels, rows, tw) array: the
batch-wide V or M reshaped, rows = N*th (the four kernels at the end), or a block of R rows
held in cache (the fused forward and backward of nn/kernels/winograd_fused.py). Every index
that varies in an inner loop is a loop variable (nn/kernels/__init__.py).
"""
import numpy as np
from numba import njit, prange

from nn.conv.winograd import (winograd_input_backward_reference, winograd_input_reference,
                              winograd_output_backward_reference, winograd_output_reference)

from . import twin_of
from .common import _inside


@njit(cache=True, fastmath={"reassoc"})
def _all_finite(rows, count):
    """Whether the first `count` rows of a C-contiguous 2-D array hold finite values only: the sum
    of every value times 0 is 0, or NaN if one of them is inf or NaN. ("reassoc" lets the sum run
    as a vector; in any order it is NaN or not alike.)"""
    flat = rows.reshape(rows.shape[0] * rows.shape[1])
    zero = rows.dtype.type(0)
    total = zero
    for i in range(count * rows.shape[1]):
        total += flat[i] * zero
    return total == zero


@njit(cache=True)
def _input_tiles(x, n, c, ph, pw, a0, a1, V4, vc, r0, xe, xo, te, to):
    """V4[(k, l), vc, r0 + a - a0, b] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4],
    for a0 <= a < a1. Scratch: xe, xo (2*(a1 - a0) + 2 rows or more, tw + 1), te, to (4, tw + 1).
    Returns whether every input value it read was finite (checked in cache, nearly free)."""
    H, W = x.shape[2], x.shape[3]
    tw = te.shape[1] - 1
    e_lo, e_hi = _inside(-pw, 2, W, tw + 1)      # xp's even columns 2s that hold x's column 2s - pw
    o_lo, o_hi = _inside(1 - pw, 2, W, tw + 1)   # and its odd ones
    lo, hi = max(e_lo, o_lo), min(e_hi, o_hi)     # where both are inside
    # the padded rows under the tiles, split into even and odd columns so that the loops below
    # have stride 1; one loop reads each (even, odd) pair, which vectorizes as two loads and a
    # shuffle (two loops, one per parity, took 2x as long)
    for r in range(2 * (a1 - a0) + 2):
        h = 2 * a0 + r - ph
        if h < 0 or h >= H:
            xe[r] = 0.0
            xo[r] = 0.0
            continue
        for s in range(tw + 1):  # the columns in the padding
            if s < e_lo or s >= e_hi:
                xe[r, s] = 0.0
            if s < o_lo or s >= o_hi:
                xo[r, s] = 0.0
        for s in range(e_lo, lo):
            xe[r, s] = x[n, c, h, 2 * s - pw]
        for s in range(o_lo, lo):
            xo[r, s] = x[n, c, h, 2 * s + 1 - pw]
        pairs = x[n, c, h, 2 * lo - pw:]
        even = xe[r, lo:hi]
        odd = xo[r, lo:hi]
        for s in range(hi - lo):
            even[s] = pairs[2 * s]
            odd[s] = pairs[2 * s + 1]
        for s in range(hi, e_hi):
            xe[r, s] = x[n, c, h, 2 * s - pw]
        for s in range(hi, o_hi):
            xo[r, s] = x[n, c, h, 2 * s + 1 - pw]
    for a in range(a1 - a0):  # one row of tiles at a time; the inner loops run along it
        r = 2 * a
        for s in range(tw + 1):  # B^T d: combine the four rows under the tiles
            te[0, s] = xe[r, s] - xe[r + 2, s]
            te[1, s] = xe[r + 1, s] + xe[r + 2, s]
            te[2, s] = xe[r + 2, s] - xe[r + 1, s]
            te[3, s] = xe[r + 1, s] - xe[r + 3, s]
            to[0, s] = xo[r, s] - xo[r + 2, s]
            to[1, s] = xo[r + 1, s] + xo[r + 2, s]
            to[2, s] = xo[r + 2, s] - xo[r + 1, s]
            to[3, s] = xo[r + 1, s] - xo[r + 3, s]
        ra = r0 + a
        for k in range(4):  # (B^T d) B: tile b's columns 2b..2b+3 are te[b], to[b], te[b+1], to[b+1]
            for b in range(tw):
                V4[4 * k, vc, ra, b] = te[k, b] - te[k, b + 1]
            for b in range(tw):
                V4[4 * k + 1, vc, ra, b] = to[k, b] + te[k, b + 1]
            for b in range(tw):
                V4[4 * k + 2, vc, ra, b] = te[k, b + 1] - to[k, b]
            for b in range(tw):
                V4[4 * k + 3, vc, ra, b] = to[k, b] - to[k, b + 1]
    rows = 2 * (a1 - a0) + 2
    return _all_finite(xe, rows) and _all_finite(xo, rows)


@njit(cache=True)
def _output_tiles(M4, mo, r0, a0, a1, y, n, o, q, yp):
    """y[n, o, 2a+u, 2b+v] = (A^T m A)[u, v], m = M4[:, mo, r0 + a - a0, b] as a 4x4 tile,
    for a0 <= a < a1 (cut at H_out, W_out). Scratch: q (2, 4, tw), yp (a1 - a0 or more, 2, tw, 2)."""
    H_out, W_out = y.shape[2], y.shape[3]
    tw = q.shape[2]
    for a in range(a1 - a0):  # a row of tiles at a time: their 16 values are 16 runs of M
        ra = r0 + a
        for l in range(4):  # A^T m: combine the tiles' rows
            for b in range(tw):
                m1 = M4[4 + l, mo, ra, b]
                m2 = M4[8 + l, mo, ra, b]
                q[0, l, b] = M4[l, mo, ra, b] + m1 + m2
                q[1, l, b] = m1 - m2 - M4[12 + l, mo, ra, b]
        for u in range(2):  # (A^T m) A: combine their columns; yp[a, u, b, v] = y[2a+u, 2b+v]
            for b in range(tw):
                yp[a, u, b, 0] = q[u, 0, b] + q[u, 1, b] + q[u, 2, b]
                yp[a, u, b, 1] = q[u, 1, b] - q[u, 2, b] - q[u, 3, b]
    rows = yp.reshape((-1, 2 * tw))
    plane = y[n, o]
    for r in range(min(2 * a1, H_out) - 2 * a0):
        for w in range(W_out):
            plane[2 * a0 + r, w] = rows[r, w]


@njit(cache=True)
def _output_backward_tiles(dout, n, o, a0, a1, dM4, mo, r0, dy):
    """dM4[(k, l), mo, r0 + a - a0, b] = (A dY A^T)[k, l], dY = dout[n, o, 2a:2a+2, 2b:2b+2]
    (zero beyond the edge), for a0 <= a < a1. Scratch: dy (2, 2, tw)."""
    H_out, W_out = dout.shape[2], dout.shape[3]
    tw = dy.shape[2]
    half = W_out // 2
    for a in range(a1 - a0):
        for u in range(2):  # dy[u, v, b] = dY[2a+u, 2b+v]: the tiles' two rows, split by column parity
            h = 2 * (a0 + a) + u
            if h >= H_out:
                dy[u] = 0.0
                continue
            src = dout[n, o, h]
            for b in range(half):
                dy[u, 0, b] = src[2 * b]
                dy[u, 1, b] = src[2 * b + 1]
            if W_out % 2:
                dy[u, 0, half] = src[W_out - 1]
                dy[u, 1, half] = 0.0
        ra = r0 + a
        for k in range(4):  # row k of A dY is a pair (p, q), and (A dY) A^T spreads it over four
            for b in range(tw):
                if k == 0:
                    p, q = dy[0, 0, b], dy[0, 1, b]
                elif k == 1:
                    p, q = dy[0, 0, b] + dy[1, 0, b], dy[0, 1, b] + dy[1, 1, b]
                elif k == 2:
                    p, q = dy[0, 0, b] - dy[1, 0, b], dy[0, 1, b] - dy[1, 1, b]
                else:
                    p, q = -dy[1, 0, b], -dy[1, 1, b]
                dM4[4 * k, mo, ra, b] = p
                dM4[4 * k + 1, mo, ra, b] = p + q
                dM4[4 * k + 2, mo, ra, b] = p - q
                dM4[4 * k + 3, mo, ra, b] = -q


@njit(cache=True)
def _input_backward_tiles(dV4, vc, r0, a0, a1, dx, n, c, ph, pw, s, dxp, add_first, add_last):
    """dx[n, c] = (B dV B^T) of the tiles a0 <= a < a1 (dV4[:, vc, r0 + a - a0, b]), added
    where they were read, padding cut off; added to what dx holds in the first two and last two
    rows the tiles reach where add_first, add_last (rows shared with tiles a0 - 1 and a1).
    Scratch: s (4, 4, tw), dxp (2*(a1 - a0) + 2 or more, tw + 1, 2)."""
    H, W = dx.shape[2], dx.shape[3]
    tw = s.shape[2]
    zero = dx.dtype.type(0)  # (a + zero, not a + 0.0, which would be float64: see the top)
    # dxp[r, S, v]: the gradient of padded row 2*a0 + r, column 2S + v
    for a in range(a1 - a0):
        ra = r0 + a
        for l in range(4):  # B dV: spread the tiles' rows
            for b in range(tw):
                v0 = dV4[l, vc, ra, b]
                v1 = dV4[4 + l, vc, ra, b]
                v2 = dV4[8 + l, vc, ra, b]
                v3 = dV4[12 + l, vc, ra, b]
                s[0, l, b] = v0
                s[1, l, b] = v1 - v2 + v3
                s[2, l, b] = v1 + v2 - v0
                s[3, l, b] = -v3
        for i in range(4):  # (B dV) B^T, row i, lands on padded row 2a + i: rows 2a and 2a + 1
            # were reached by tile row a - 1 too (add to them), 2a + 2 and 2a + 3 not yet (set them)
            r = 2 * a + i
            # column pair S takes columns 0, 1 of tile S and columns 2, 3 of tile S - 1
            first_e, first_o = s[i, 0, 0], s[i, 1, 0] - s[i, 2, 0] + s[i, 3, 0]
            last_e = s[i, 1, tw - 1] + s[i, 2, tw - 1] - s[i, 0, tw - 1]
            last_o = -s[i, 3, tw - 1]
            add = i < 2 and a > 0
            dxp[r, 0, 0] = first_e + (dxp[r, 0, 0] if add else zero)
            dxp[r, 0, 1] = first_o + (dxp[r, 0, 1] if add else zero)
            dxp[r, tw, 0] = last_e + (dxp[r, tw, 0] if add else zero)
            dxp[r, tw, 1] = last_o + (dxp[r, tw, 1] if add else zero)
            for S in range(tw - 1):
                e = s[i, 0, S + 1] + s[i, 1, S] + s[i, 2, S] - s[i, 0, S]
                o = s[i, 1, S + 1] - s[i, 2, S + 1] + s[i, 3, S + 1] - s[i, 3, S]
                dxp[r, S + 1, 0] = e + (dxp[r, S + 1, 0] if add else zero)
                dxp[r, S + 1, 1] = o + (dxp[r, S + 1, 1] if add else zero)
    rows = dxp.reshape((dxp.shape[0], 2 * tw + 2))
    last = 2 * (a1 - a0) + 2
    for r in range(max(0, ph - 2 * a0), min(last, H + ph - 2 * a0)):  # the rows inside x
        dst = dx[n, c, 2 * a0 + r - ph]
        src = rows[r, pw:pw + W]
        add = (r < 2 and add_first) or (r >= last - 2 and add_last)
        for w in range(W):
            dst[w] = src[w] + (dst[w] if add else zero)


@twin_of(winograd_input_reference)
@njit(parallel=True, cache=True)
def winograd_input_numba(x, padding, th, tw, V):
    """V[(k, l), c, (n, a, b)] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4] (xp: x zero-padded);
    and whether every value of x is finite"""
    N, C = x.shape[0], x.shape[1]
    ph, pw = padding
    V4 = V.reshape((16, C, N * th, tw))
    finite = np.empty(N * C, np.bool_)
    for plane in prange(N * C):  # each (n, c) plane writes its own columns of V
        n = plane // C
        c = plane % C
        xe = np.empty((2 * th + 2, tw + 1), x.dtype)
        xo = np.empty((2 * th + 2, tw + 1), x.dtype)
        te = np.empty((4, tw + 1), x.dtype)
        to = np.empty((4, tw + 1), x.dtype)
        finite[plane] = _input_tiles(x, n, c, ph, pw, 0, th, V4, c, n * th, xe, xo, te, to)
    return V, finite.all()


@twin_of(winograd_output_reference)
@njit(parallel=True, cache=True)
def winograd_output_numba(M, th, tw, y):
    """y[n, o, 2a+u, 2b+v] = (A^T m A)[u, v], m = M[:, o, (n, a, b)] as a 4x4 tile (cut at H_out, W_out)"""
    N, C_out = y.shape[0], y.shape[1]
    M4 = M.reshape((16, C_out, N * th, tw))
    for plane in prange(N * C_out):  # each (n, o) plane of y is written by one thread
        n = plane // C_out
        o = plane % C_out
        q = np.empty((2, 4, tw), M.dtype)
        yp = np.empty((th, 2, tw, 2), M.dtype)
        _output_tiles(M4, o, n * th, 0, th, y, n, o, q, yp)
    return y


@twin_of(winograd_output_backward_reference)
@njit(parallel=True, cache=True)
def winograd_output_backward_numba(dout, th, tw, dM):
    """dM[(k, l), o, (n, a, b)] = (A dY A^T)[k, l], dY = dout[n, o, 2a:2a+2, 2b:2b+2] (zero beyond the edge)"""
    N, C_out = dout.shape[0], dout.shape[1]
    dM4 = dM.reshape((16, C_out, N * th, tw))
    for plane in prange(N * C_out):  # each (n, o) plane writes its own columns of dM
        n = plane // C_out
        o = plane % C_out
        dy = np.empty((2, 2, tw), dout.dtype)
        _output_backward_tiles(dout, n, o, 0, th, dM4, o, n * th, dy)
    return dM


@twin_of(winograd_input_backward_reference)
@njit(parallel=True, cache=True)
def winograd_input_backward_numba(dV, padding, th, tw, dx):
    """dx[n, c] = sum over tiles of (B dV B^T) added back at xp[n, c, 2a:2a+4, 2b:2b+4], padding cut off"""
    N, C = dx.shape[0], dx.shape[1]
    ph, pw = padding
    dV4 = dV.reshape((16, C, N * th, tw))
    for plane in prange(N * C):  # overlapping tiles of one plane are added by one thread
        n = plane // C
        c = plane % C
        s = np.empty((4, 4, tw), dV.dtype)
        dxp = np.empty((2 * th + 2, tw + 1, 2), dV.dtype)
        _input_backward_tiles(dV4, c, n * th, 0, th, dx, n, c, ph, pw, s, dxp, False, False)
    return dx
