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
- no fastmath: the results must equal the reference's to rounding;
- in hot loops, index with loop variables: Numba corrects every signed index that might be
  negative (Python's a[-1]) unless LLVM can prove it is not, and that check keeps a loop from
  vectorizing. A computed index such as V[xi, c, col + b] made the Winograd transforms 2x
  slower than V5[xi, c, n, a, b] on V reshaped to (16, C, N, th, tw), where every index is one.
  Where an offset is unavoidable, take a view that starts there (dst = rows[r, lo:hi]) and
  index the view from 0 (max pooling's scan over row views, with one int32 window offset
  instead of two int64 indices: 1.8x faster);
- a stride that is 1 should be known to be 1: `src[w * sw]` with sw a run-time value does not
  vectorize, so the pooling kernels keep a separate `sw == 1` loop (the average pooling
  kernel: 1.8x faster);
- copy a plane over the valid ranges computed once (`_inside`), not with a test per pixel
  (the max pooling kernel: 1.5x).
"""
import os

import numpy as np

try:
    from numba import njit, prange
    HAVE_NUMBA = True
except ImportError:  # the NumPy references are used everywhere
    HAVE_NUMBA = False

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

    @njit(parallel=True, cache=True)
    def winograd_input_numba(x, padding, th, tw, V):
        """V[(k, l), c, (n, a, b)] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4] (xp: x zero-padded)"""
        N, C, H, W = x.shape
        ph, pw = padding
        e_lo, e_hi = _inside(-pw, 2, W, tw + 1)      # xp's even columns 2s that hold x's column 2s - pw
        o_lo, o_hi = _inside(1 - pw, 2, W, tw + 1)   # and its odd ones
        V5 = V.reshape((16, C, N, th, tw))           # every index below is a loop variable: vectorizes
        for plane in prange(N * C):  # each (n, c) plane writes its own columns of V
            n = plane // C
            c = plane % C
            # the padded plane split into even and odd columns, so that the loops below have stride 1
            xe = np.zeros((2 * th + 2, tw + 1), x.dtype)
            xo = np.zeros((2 * th + 2, tw + 1), x.dtype)
            for h in range(H):
                for s in range(e_lo, e_hi):
                    xe[h + ph, s] = x[n, c, h, 2 * s - pw]
                for s in range(o_lo, o_hi):
                    xo[h + ph, s] = x[n, c, h, 2 * s + 1 - pw]
            te = np.empty((4, tw + 1), x.dtype)
            to = np.empty((4, tw + 1), x.dtype)
            for a in range(th):  # one row of tiles at a time; the inner loops run along it
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
                for k in range(4):  # (B^T d) B: tile b's columns 2b..2b+3 are te[b], to[b], te[b+1], to[b+1]
                    for b in range(tw):
                        V5[4 * k, c, n, a, b] = te[k, b] - te[k, b + 1]
                    for b in range(tw):
                        V5[4 * k + 1, c, n, a, b] = to[k, b] + te[k, b + 1]
                    for b in range(tw):
                        V5[4 * k + 2, c, n, a, b] = te[k, b + 1] - to[k, b]
                    for b in range(tw):
                        V5[4 * k + 3, c, n, a, b] = to[k, b] - to[k, b + 1]
        return V


    @njit(parallel=True, cache=True)
    def winograd_output_numba(M, th, tw, y):
        """y[n, o, 2a+u, 2b+v] = (A^T m A)[u, v], m = M[:, o, (n, a, b)] as a 4x4 tile (cut at H_out, W_out)"""
        N, C_out, H_out, W_out = y.shape
        M5 = M.reshape((16, C_out, N, th, tw))
        for plane in prange(N * C_out):  # each (n, o) plane of y is written by one thread
            n = plane // C_out
            o = plane % C_out
            yp = np.empty((th, 2, tw, 2), M.dtype)  # yp[a, u, b, v] = y[2a+u, 2b+v], whole tiles
            q = np.empty((2, 4, tw), M.dtype)
            for a in range(th):  # a row of tiles at a time: their 16 values are 16 runs of M
                for l in range(4):  # A^T m: combine the tiles' rows
                    for b in range(tw):
                        m1 = M5[4 + l, o, n, a, b]
                        m2 = M5[8 + l, o, n, a, b]
                        q[0, l, b] = M5[l, o, n, a, b] + m1 + m2
                        q[1, l, b] = m1 - m2 - M5[12 + l, o, n, a, b]
                for u in range(2):  # (A^T m) A: combine their columns
                    for b in range(tw):
                        yp[a, u, b, 0] = q[u, 0, b] + q[u, 1, b] + q[u, 2, b]
                        yp[a, u, b, 1] = q[u, 1, b] - q[u, 2, b] - q[u, 3, b]
            y[n, o] = yp.reshape((2 * th, 2 * tw))[:H_out, :W_out]
        return y


    @njit(parallel=True, cache=True)
    def winograd_output_backward_numba(dout, th, tw, dM):
        """dM[(k, l), o, (n, a, b)] = (A dY A^T)[k, l], dY = dout[n, o, 2a:2a+2, 2b:2b+2] (zero beyond the edge)"""
        N, C_out, H_out, W_out = dout.shape
        dM5 = dM.reshape((16, C_out, N, th, tw))
        for plane in prange(N * C_out):  # each (n, o) plane writes its own columns of dM
            n = plane // C_out
            o = plane % C_out
            dy = np.zeros((th, 2, tw, 2), dout.dtype)  # dy[a, u, b, v] = dY[2a+u, 2b+v], zero beyond the edge
            dy.reshape((2 * th, 2 * tw))[:H_out, :W_out] = dout[n, o]
            r = np.empty((4, tw, 2), dout.dtype)
            for a in range(th):
                for b in range(tw):  # A dY: spread the tiles' two rows over four
                    for v in range(2):
                        r[0, b, v] = dy[a, 0, b, v]
                        r[1, b, v] = dy[a, 0, b, v] + dy[a, 1, b, v]
                        r[2, b, v] = dy[a, 0, b, v] - dy[a, 1, b, v]
                        r[3, b, v] = -dy[a, 1, b, v]
                for k in range(4):  # (A dY) A^T: spread each tile's two columns over four
                    for b in range(tw):
                        dM5[4 * k, o, n, a, b] = r[k, b, 0]
                    for b in range(tw):
                        dM5[4 * k + 1, o, n, a, b] = r[k, b, 0] + r[k, b, 1]
                    for b in range(tw):
                        dM5[4 * k + 2, o, n, a, b] = r[k, b, 0] - r[k, b, 1]
                    for b in range(tw):
                        dM5[4 * k + 3, o, n, a, b] = -r[k, b, 1]
        return dM


    @njit(parallel=True, cache=True)
    def winograd_input_backward_numba(dV, padding, th, tw, dx):
        """dx[n, c] = sum over tiles of (B dV B^T) added back at xp[n, c, 2a:2a+4, 2b:2b+4], padding cut off"""
        N, C, H, W = dx.shape
        ph, pw = padding
        dV5 = dV.reshape((16, C, N, th, tw))
        for plane in prange(N * C):  # overlapping tiles of one plane are added by one thread
            n = plane // C
            c = plane % C
            # the padded plane's gradient, dxp[R, i, S, j] = at row 2R+i, column 2S+j: tile (a, b)
            # adds to R in (a, a+1) and S in (b, b+1)
            dxp = np.zeros((th + 1, 2, tw + 1, 2), dV.dtype)
            s = np.empty((4, 4, tw), dV.dtype)
            for a in range(th):
                for l in range(4):  # B dV: spread the tiles' rows
                    for b in range(tw):
                        v0 = dV5[l, c, n, a, b]
                        v1 = dV5[4 + l, c, n, a, b]
                        v2 = dV5[8 + l, c, n, a, b]
                        v3 = dV5[12 + l, c, n, a, b]
                        s[0, l, b] = v0
                        s[1, l, b] = v1 - v2 + v3
                        s[2, l, b] = v1 + v2 - v0
                        s[3, l, b] = -v3
                for i in range(4):  # (B dV) B^T: spread their columns, add where the tiles were read
                    R = a + i // 2
                    u = i % 2
                    for b in range(tw):
                        dxp[R, u, b, 0] += s[i, 0, b]
                        dxp[R, u, b, 1] += s[i, 1, b] - s[i, 2, b] + s[i, 3, b]
                    for b in range(tw):
                        dxp[R, u, b + 1, 0] += s[i, 1, b] + s[i, 2, b] - s[i, 0, b]
                        dxp[R, u, b + 1, 1] -= s[i, 3, b]
            dx[n, c] = dxp.reshape((2 * th + 2, 2 * tw + 2))[ph:ph + H, pw:pw + W]
        return dx
