"""The Numba twins of the hot loops, and the one switch that picks them.

Each function here has a readable NumPy reference beside the layer that uses it (same
signature, same docstring line), and tests/test_kernels.py checks that the two agree.
The switch: the twins run when Numba is importable, unless the environment variable
NN_KERNELS=reference is set (or `set_backend("reference")` is called), in which case every
layer uses the NumPy reference.

Rules kept in every kernel:
- `prange` over an axis whose iterations write disjoint memory (rows of cols, planes of dx),
  never `+=` into an element two threads can reach;
- no BLAS inside a `prange` loop (the GEMMs are called from NumPy, outside);
- no fastmath, but for two flags in the fused Winograd kernels' products ("contract": fused
  multiply-adds; "reassoc": sums in any order, which a vectorized sum needs), as BLAS takes
  the same freedoms; never the flags that assume away NaN or inf (a test pins that NaN gets
  through). The results must equal the reference's to rounding;
- a float accumulator starts from a value of the array's dtype, not from the literal 0.0,
  which is a float64: the fused kernels' sums of float32 products ran 2.3x slower in float64;
- in hot loops, index with loop variables: Numba corrects every signed index that might be
  negative (Python's a[-1]) unless LLVM can prove it is not, and that check keeps a loop from
  vectorizing. A computed index such as V[xi, c, col + b] once made the Winograd transforms 2x
  slower than V5[xi, c, n, a, b] on V reshaped to (16, C, N, th, tw), where every index is one.
  Where an offset is unavoidable, take a view that starts there (dst = rows[r, lo:hi]) and
  index the view from 0 (max pooling's scan over row views, with one int32 window offset
  instead of two int64 indices: 1.8x faster). An offset that stays fixed in the inner loop
  costs nothing (V4[xi, c, r0 + a, b], with b the loop variable);
- only one-axis views: M[o, t:t + tw] is typed 'C' (contiguous), M[:, o, t:t + tw] is typed
  'A', its last stride read at run time, and a loop over it does not vectorize (the Winograd
  output transform at 64->96 on 28x28, batch 32: 4.4 -> 7.0 ms through such views);
- a stride that is 1 should be known to be 1: `src[w * sw]` with sw a run-time value does not
  vectorize, so the pooling kernels keep a separate `sw == 1` loop (the average pooling
  kernel: 1.8x faster);
- copy a plane over the valid ranges computed once (`_inside`), not with a test per pixel
  (the max pooling kernel: 1.5x).
"""
import math
import os

import numpy as np

try:
    from numba import get_num_threads, njit, prange
    HAVE_NUMBA = True
except ImportError:  # the NumPy references are used everywhere
    HAVE_NUMBA = False

# The fused Winograd kernels work on blocks of about this many tiles, with the block's tiles for
# every channel (16 * (C_in + C_out) floats per tile) held in at most this many floats: 4 MB a
# worker, more than a core's L2 (1 MB here), well within the shared L3 (32 MB). Measured,
# forward+backward at batch 32, 3x3 32->32 at 149 / 32->64 at 147 / 64->192 at 56, in ms: blocks
# of up to 304 tiles in 1 MB 219 / 461 / 334; 608 in 2 MB 193 / 322 / 298; these 184 / 264 / 241;
# 2432 in 8 MB 214 / 441 / 297.
WINOGRAD_BLOCK_TILES = 1216
WINOGRAD_BLOCK_FLOATS = 1 << 20


def winograd_block_rows(tw, channels):
    """Tile rows per block of the fused Winograd kernels: about WINOGRAD_BLOCK_TILES tiles, fewer
    where the block's tiles for all channels (16 * channels floats each) would outgrow
    WINOGRAD_BLOCK_FLOATS, and a multiple of the rows that make whole vectors of 16 tiles (the
    products' loops run 1.4x faster on 304 columns than on 296)."""
    step = 16 // math.gcd(tw, 16)
    tiles = min(WINOGRAD_BLOCK_TILES, WINOGRAD_BLOCK_FLOATS // (16 * channels))
    return max(step, tiles // tw // step * step)


_BACKENDS = ("numba", "reference")
_backend = "reference"


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


def twin(reference):
    """The one switch: the function a layer calls for `reference` (named <op>_reference) is its
    Numba twin <op>_numba when the Numba backend is on, else the reference itself."""
    if _backend == "numba":
        return globals()[reference.__name__.replace("_reference", "_numba")]
    return reference


set_backend("reference" if not HAVE_NUMBA or os.environ.get("NN_KERNELS") == "reference"
            else "numba")


if HAVE_NUMBA:

    @njit(cache=True)
    def _inside(offset, stride, size, size_out):
        """The outputs w (a range) whose input w*stride + offset lies in [0, size): no test per pixel."""
        lo = max(0, -(offset // stride))
        hi = min(size_out, (size - 1 - offset) // stride + 1)
        return lo, max(lo, hi)

    @njit(cache=True)
    def _first_inside(start, dilation):
        """The first kernel offset i of a window starting at `start` whose pixel start + i*dilation
        is inside the input (not in the padding): where a window without a maximum points."""
        return max(0, -(start // dilation))

    @njit(parallel=True, cache=True)
    def im2col_numba(x, KH, KW, stride, padding, dilation, H_out, W_out, cols):
        """cols[(c, i, j), (n, h, w)] = xp[n, c, h*sh + i*dh, w*sw + j*dw] (xp: x zero-padded)"""
        N, C, H, W = x.shape
        sh, sw = stride
        ph, pw = padding
        dh, dw = dilation
        cols4 = cols.reshape((C * KH * KW, N, H_out, W_out))  # index with loop variables (see the top)
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

    @njit(parallel=True, cache=True)
    def mec_lower_numba(x, KW, padding, W_out, R):
        """R[(j, c), r, (n, w)] = xp[n, c, r, w + j] (xp: x zero-padded)"""
        N, C, H, W = x.shape
        ph, pw = padding
        R4 = R.reshape((KW * C, H + 2 * ph, N, W_out))  # index with loop variables (see the top)
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

    @njit(cache=True)
    def _maxpool_stride1(xp, KH, KW, dilation, padding, W, y, argmax):
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
                argmax[h, w] = (h + i * dh - ph) * W + w + j * dw - pw

    @njit(parallel=True, cache=True)
    def maxpool_numba(x, KH, KW, stride, padding, dilation, H_out, W_out, y, argmax):
        """y[n, c, h, w] = max of the window; argmax = flat index h_in*W + w_in of its first maximum"""
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
                _maxpool_stride1(xs[0], KH, KW, dilation, padding, W, y[n, c], argmax[n, c])
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
                    argmax[n, c, h, w] = ((h * sh + (bk[w] // KW) * dh - ph) * W
                                          + w * sw + (bk[w] % KW) * dw - pw)
        return y, argmax

    @njit(parallel=True, cache=True)
    def maxpool_backward_numba(dout, argmax, dx):
        """dx[n, c].flat[argmax[n, c, h, w]] += dout[n, c, h, w] (overlapping windows accumulate)"""
        N, C, H, W = dx.shape
        H_out, W_out = dout.shape[2], dout.shape[3]
        for plane in prange(N * C):  # each plane's windows only reach that plane of dx
            n = plane // C
            c = plane % C
            flat = dx[n, c].reshape(H * W)  # argmax is a flat index into the plane
            flat[:] = 0.0
            for h in range(H_out):
                for w in range(W_out):
                    flat[argmax[n, c, h, w]] += dout[n, c, h, w]
        return dx

    @njit(parallel=True, cache=True)
    def batchnorm_stats_numba(x3):
        """mean[c] = mean of x3[:, c, :];  var[c] = mean of (x3[:, c, :] - mean[c])**2 (biased)"""
        N, C, L = x3.shape
        mean = np.empty(C, x3.dtype)
        var = np.empty(C, x3.dtype)
        m = N * L
        for c in prange(C):  # one channel per thread; sums in float64 for accuracy
            # one pass over memory (the kernel is bound by it): sums of d = x - K and d**2, with K
            # the channel's first value, so that E[d**2] - E[d]**2 cancels no more digits than
            # the data's spread around K costs (the plain E[x**2] - E[x]**2 would lose them all
            # to a large mean)
            K = float(x3[0, c, 0])
            total = 0.0
            sq = 0.0
            for n in range(N):
                row = x3[n, c]
                for i in range(L):
                    d = row[i] - K
                    total += d
                    sq += d * d
            shift = total / m
            mean[c] = K + shift
            var[c] = max(sq / m - shift * shift, 0.0)
        return mean, var

    @njit(parallel=True, cache=True)
    def batchnorm_normalize_numba(x3, mean, inv_std, gamma, beta, x_hat, y):
        """x_hat = (x - mean[c]) * inv_std[c];  y = gamma[c] * x_hat + beta[c]"""
        N, C, L = x3.shape
        for nc in prange(N * C):
            n = nc // C
            c = nc % C
            for i in range(L):
                h = (x3[n, c, i] - mean[c]) * inv_std[c]
                x_hat[n, c, i] = h
                y[n, c, i] = gamma[c] * h + beta[c]
        return x_hat, y

    @njit(parallel=True, cache=True)
    def batchnorm_backward_numba(dout3, x_hat, gamma, inv_std, batch_stats, dx):
        """dbeta = sum(dout); dgamma = sum(dout*x_hat); dx = gamma*inv_std/m * (m*dout - dbeta - x_hat*dgamma)"""
        N, C, L = dout3.shape
        m = N * L
        dgamma = np.empty(C, dout3.dtype)
        dbeta = np.empty(C, dout3.dtype)
        for c in prange(C):
            sg = 0.0
            sgx = 0.0
            for n in range(N):
                for i in range(L):
                    sg += dout3[n, c, i]
                    sgx += dout3[n, c, i] * x_hat[n, c, i]
            dbeta[c] = sg
            dgamma[c] = sgx
            scale = gamma[c] * inv_std[c]
            if batch_stats:
                for n in range(N):
                    for i in range(L):
                        dx[n, c, i] = scale / m * (m * dout3[n, c, i] - sg - x_hat[n, c, i] * sgx)
            else:
                for n in range(N):
                    for i in range(L):
                        dx[n, c, i] = scale * dout3[n, c, i]
        return dgamma, dbeta

    @njit(parallel=True, cache=True)
    def avgpool_numba(x, KH, KW, stride, padding, divisor, y):
        """y[n, c, h, w] = sum of the zero-padded window starting at (h*sh - ph, w*sw - pw) / divisor[h, w]"""
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

    @njit(parallel=True, cache=True)
    def avgpool_backward_numba(dout, KH, KW, stride, padding, divisor, dx):
        """dx[n, c, window of (h, w)] += dout[n, c, h, w] / divisor[h, w] (overlapping windows add up)"""
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

    # Winograd F(2x2, 3x3) (nn/winograd.py). Each transform is written once, for a range of tile
    # rows a0 <= a < a1 of one plane, reading or writing its tiles at [:, channel, r0 + a - a0, b]
    # of a (16, channels, rows, tw) array: the batch-wide V or M reshaped, rows = N*th (the four
    # kernels below), or a block of R rows held in cache (the fused forward and backward after
    # them). Every index that varies in an inner loop is a loop variable (see the top).

    @njit(cache=True)
    def _input_tiles(x, n, c, ph, pw, a0, a1, V4, vc, r0, xe, xo, te, to):
        """V4[(k, l), vc, r0 + a - a0, b] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4],
        for a0 <= a < a1. Scratch: xe, xo (2*(a1 - a0) + 2 rows or more, tw + 1), te, to (4, tw + 1)."""
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

    @njit(parallel=True, cache=True)
    def winograd_input_numba(x, padding, th, tw, V):
        """V[(k, l), c, (n, a, b)] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4] (xp: x zero-padded)"""
        N, C = x.shape[0], x.shape[1]
        ph, pw = padding
        V4 = V.reshape((16, C, N * th, tw))
        for plane in prange(N * C):  # each (n, c) plane writes its own columns of V
            n = plane // C
            c = plane % C
            xe = np.empty((2 * th + 2, tw + 1), x.dtype)
            xo = np.empty((2 * th + 2, tw + 1), x.dtype)
            te = np.empty((4, tw + 1), x.dtype)
            to = np.empty((4, tw + 1), x.dtype)
            _input_tiles(x, n, c, ph, pw, 0, th, V4, c, n * th, xe, xo, te, to)
        return V

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

    @njit(cache=True, fastmath={"contract"})
    def _tile_products(U, V, M):
        """M[xi] = U[xi] @ V[xi] for the 16 tile positions xi of one block. Four rows of M take four
        rows of V at a time: each pass over a row of M does 16 multiply-adds per element read and
        written, where a row-by-row loop does one (measured on 32x32 @ 32x304 blocks: 280 against
        110 GFLOP/s on two cores; on 32x296 blocks, not whole vectors of 16, 200)."""
        O, C = U.shape[1], U.shape[2]
        T = V.shape[2]
        O4, C4 = O - O % 4, C - C % 4
        for xi in range(16):
            for o in range(0, O4, 4):
                for t in range(T):
                    M[xi, o, t] = 0.0
                    M[xi, o + 1, t] = 0.0
                    M[xi, o + 2, t] = 0.0
                    M[xi, o + 3, t] = 0.0
                for c in range(0, C4, 4):
                    a0, a1, a2, a3 = U[xi, o, c], U[xi, o + 1, c], U[xi, o + 2, c], U[xi, o + 3, c]
                    b0, b1, b2, b3 = U[xi, o, c + 1], U[xi, o + 1, c + 1], U[xi, o + 2, c + 1], U[xi, o + 3, c + 1]
                    d0, d1, d2, d3 = U[xi, o, c + 2], U[xi, o + 1, c + 2], U[xi, o + 2, c + 2], U[xi, o + 3, c + 2]
                    e0, e1, e2, e3 = U[xi, o, c + 3], U[xi, o + 1, c + 3], U[xi, o + 2, c + 3], U[xi, o + 3, c + 3]
                    for t in range(T):
                        v, z, p, s = V[xi, c, t], V[xi, c + 1, t], V[xi, c + 2, t], V[xi, c + 3, t]
                        M[xi, o, t] += a0 * v + b0 * z + d0 * p + e0 * s
                        M[xi, o + 1, t] += a1 * v + b1 * z + d1 * p + e1 * s
                        M[xi, o + 2, t] += a2 * v + b2 * z + d2 * p + e2 * s
                        M[xi, o + 3, t] += a3 * v + b3 * z + d3 * p + e3 * s
                for c in range(C4, C):
                    a0, a1, a2, a3 = U[xi, o, c], U[xi, o + 1, c], U[xi, o + 2, c], U[xi, o + 3, c]
                    for t in range(T):
                        v = V[xi, c, t]
                        M[xi, o, t] += a0 * v
                        M[xi, o + 1, t] += a1 * v
                        M[xi, o + 2, t] += a2 * v
                        M[xi, o + 3, t] += a3 * v
            for o in range(O4, O):
                for t in range(T):
                    M[xi, o, t] = 0.0
                for c in range(C):
                    a0 = U[xi, o, c]
                    for t in range(T):
                        M[xi, o, t] += a0 * V[xi, c, t]

    @njit(cache=True, fastmath={"contract", "reassoc"})
    def _tile_weight_grads(dM, V, dU):
        """dU[xi] += dM[xi] @ V[xi].T for the 16 tile positions of one block: sums along the
        columns, four rows of dM against two of V at a time (8 sums for 6 loads per column)."""
        O, C = dM.shape[1], V.shape[1]
        T = V.shape[2]
        O4, C2 = O - O % 4, C - C % 2
        for xi in range(16):
            for o in range(0, O4, 4):
                for c in range(0, C2, 2):
                    # the sums start from dU itself, which types them as its dtype (a literal 0.0
                    # would make them float64, and the loop 4x slower in float32)
                    s00, s01, s10, s11 = dU[xi, o, c], dU[xi, o, c + 1], dU[xi, o + 1, c], dU[xi, o + 1, c + 1]
                    s20, s21, s30, s31 = dU[xi, o + 2, c], dU[xi, o + 2, c + 1], dU[xi, o + 3, c], dU[xi, o + 3, c + 1]
                    for t in range(T):
                        v0, v1 = V[xi, c, t], V[xi, c + 1, t]
                        g0, g1, g2, g3 = dM[xi, o, t], dM[xi, o + 1, t], dM[xi, o + 2, t], dM[xi, o + 3, t]
                        s00 += g0 * v0
                        s01 += g0 * v1
                        s10 += g1 * v0
                        s11 += g1 * v1
                        s20 += g2 * v0
                        s21 += g2 * v1
                        s30 += g3 * v0
                        s31 += g3 * v1
                    dU[xi, o, c], dU[xi, o, c + 1], dU[xi, o + 1, c], dU[xi, o + 1, c + 1] = s00, s01, s10, s11
                    dU[xi, o + 2, c], dU[xi, o + 2, c + 1], dU[xi, o + 3, c], dU[xi, o + 3, c + 1] = s20, s21, s30, s31
            for o in range(O):  # the rows and columns left over from the blocks
                for c in range(C2 if o < O4 else 0, C):
                    s00 = dU[xi, o, c]
                    for t in range(T):
                        s00 += dM[xi, o, t] * V[xi, c, t]
                    dU[xi, o, c] = s00

    @njit(cache=True)
    def _block_part(g0, g1, n, th):
        """The tile rows a0 <= a < a1 of image n inside the block of global tile rows g0 <= g < g1
        (global row g = n*th + a; a block may span images), and the block's row r0 for a0."""
        a0 = max(g0 - n * th, 0)
        a1 = min(g1 - n * th, th)
        return a0, a1, n * th + a0 - g0

    def winograd_forward_numba(x, U, padding, th, tw, y):
        """y = the F(2x2, 3x3) convolution of x with the transformed kernels U (16, C_out, C_in)"""
        R = winograd_block_rows(tw, x.shape[1] + U.shape[1])
        return _winograd_forward(x, U, padding, th, tw, y, R, get_num_threads())

    def winograd_backward_numba(x, dout, U, padding, th, tw, dx):
        """dx (written) and dU = dM @ V^T (returned, (16, C_out, C_in)) of the F(2x2, 3x3) convolution"""
        R = winograd_block_rows(tw, x.shape[1] + U.shape[1])
        return _winograd_backward(x, dout, U, padding, th, tw, dx, R, get_num_threads())

    # (The thread count is read here and passed in: read inside, it would keep Numba from caching
    # the compiled kernels.)

    @njit(parallel=True, cache=True)
    def _winograd_forward(x, U, padding, th, tw, y, R, threads):
        """winograd_forward_numba in blocks of R tile rows, with `threads` workers, each with its
        own buffers and every threads-th block: a block's V and M never leave the cache."""
        N, C = x.shape[0], x.shape[1]
        O = U.shape[1]
        ph, pw = padding
        rows = N * th
        blocks = (rows + R - 1) // R
        workers = min(threads, blocks)
        for w in prange(workers):
            V4 = np.zeros((16, C, R, tw), x.dtype)   # a block's tiles, row by row
            M4 = np.empty((16, O, R, tw), x.dtype)
            V, M = V4.reshape((16, C, R * tw)), M4.reshape((16, O, R * tw))   # the same, for the products
            xe = np.empty((2 * R + 2, tw + 1), x.dtype)
            xo = np.empty((2 * R + 2, tw + 1), x.dtype)
            te = np.empty((4, tw + 1), x.dtype)
            to = np.empty((4, tw + 1), x.dtype)
            q = np.empty((2, 4, tw), x.dtype)
            yp = np.empty((R, 2, tw, 2), x.dtype)
            for block in range(w, blocks, workers):
                g0 = block * R
                g1 = min(g0 + R, rows)
                for n in range(g0 // th, (g1 - 1) // th + 1):
                    a0, a1, r0 = _block_part(g0, g1, n, th)
                    for c in range(C):
                        _input_tiles(x, n, c, ph, pw, a0, a1, V4, c, r0, xe, xo, te, to)
                _tile_products(U, V, M)
                for n in range(g0 // th, (g1 - 1) // th + 1):
                    a0, a1, r0 = _block_part(g0, g1, n, th)
                    for o in range(O):
                        _output_tiles(M4, o, r0, a0, a1, y, n, o, q, yp)
        return y

    @njit(parallel=True, cache=True)
    def _winograd_backward(x, dout, U, padding, th, tw, dx, R, threads):
        """winograd_backward_numba, in blocks as _winograd_forward, each worker with its own dU"""
        N, C = x.shape[0], x.shape[1]
        O = U.shape[1]
        ph, pw = padding
        UT = np.ascontiguousarray(np.transpose(U, (0, 2, 1)))
        rows = N * th
        blocks = (rows + R - 1) // R
        workers = min(threads, (blocks + 1) // 2)
        dU_parts = np.zeros((workers, 16, O, C), x.dtype)  # one per worker, summed at the end
        # Neighbouring blocks reach the same two rows of dx, so blocks two apart run together: the
        # even ones, which set their rows of dx, then the odd ones, which add to the rows they
        # share with an even one (in the same image) and set the rest.
        for phase in range(2):
            for w in prange(workers):
                V4 = np.zeros((16, C, R, tw), x.dtype)    # the input tiles, then dV in the same buffer
                dM4 = np.zeros((16, O, R, tw), x.dtype)
                V, dM = V4.reshape((16, C, R * tw)), dM4.reshape((16, O, R * tw))
                xe = np.empty((2 * R + 2, tw + 1), x.dtype)
                xo = np.empty((2 * R + 2, tw + 1), x.dtype)
                te = np.empty((4, tw + 1), x.dtype)
                to = np.empty((4, tw + 1), x.dtype)
                dy = np.empty((2, 2, tw), x.dtype)
                s = np.empty((4, 4, tw), x.dtype)
                dxp = np.empty((2 * R + 2, tw + 1, 2), x.dtype)
                for block in range(2 * w + phase, blocks, 2 * workers):
                    g0 = block * R
                    g1 = min(g0 + R, rows)
                    if g1 - g0 < R:  # a short last block: its unused rows must not add to dU
                        V4[:, :, g1 - g0:] = 0.0
                        dM4[:, :, g1 - g0:] = 0.0
                    for n in range(g0 // th, (g1 - 1) // th + 1):
                        a0, a1, r0 = _block_part(g0, g1, n, th)
                        for c in range(C):
                            _input_tiles(x, n, c, ph, pw, a0, a1, V4, c, r0, xe, xo, te, to)
                        for o in range(O):
                            _output_backward_tiles(dout, n, o, a0, a1, dM4, o, r0, dy)
                    _tile_weight_grads(dM, V, dU_parts[w])
                    _tile_products(UT, dM, V)                 # dV = U^T @ dM
                    for n in range(g0 // th, (g1 - 1) // th + 1):
                        a0, a1, r0 = _block_part(g0, g1, n, th)
                        for c in range(C):
                            _input_backward_tiles(V4, c, r0, a0, a1, dx, n, c, ph, pw, s, dxp,
                                                  phase == 1 and a0 > 0, phase == 1 and a1 < th)
        dU = dU_parts[0]
        for w in range(1, workers):
            dU += dU_parts[w]
        return dU
