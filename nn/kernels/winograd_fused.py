"""Numba twins of nn/conv/winograd_fused.py: Winograd's transforms and products a block of tile
rows at a time, in cache.

Each worker takes every workers-th block of R tile rows (a block may span images), transforms
its input tiles, runs the 16 products in Numba (_tile_products: four rows of M against four of
V per pass, with fused multiply-adds) and transforms back, all while the block's V and M are in
its cache; nothing of the batch-wide V or M is ever held. Backward transforms the input again
rather than keep it, sums dU per worker, and runs the even blocks, then the odd ones, so that no
two threads write the same rows of dx (neighbouring blocks share two rows).
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from nn.conv.winograd_fused import winograd_backward_reference, winograd_forward_reference

from . import twin_of
from .winograd import _input_backward_tiles, _input_tiles, _output_backward_tiles, _output_tiles

# Blocks of about this many tiles, with the block's tiles for every channel (16 * (C_in + C_out)
# floats per tile) held in at most this many floats: 4 MB a worker, more than a core's L2 (1 MB
# here) but well within the shared L3. Re-measure: python -m benchmarks.layers --only "3x3/1 32->"
# (docs/performance.md has the figures for 304 to 2432 tiles).
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


@twin_of(winograd_forward_reference)
def winograd_forward_numba(x, U, padding, th, tw, y):
    """y = the F(2x2, 3x3) convolution of x with the transformed kernels U (16, C_out, C_in);
    and whether every value of x is finite"""
    R = winograd_block_rows(tw, x.shape[1] + U.shape[1])
    return _winograd_forward(x, U, padding, th, tw, y, R, get_num_threads())


@twin_of(winograd_backward_reference)
def winograd_backward_numba(x, dout, U, padding, th, tw, dx):
    """dx (written) and dU = dM @ V^T (returned, (16, C_out, C_in)) of the F(2x2, 3x3) convolution"""
    R = winograd_block_rows(tw, x.shape[1] + U.shape[1])
    return _winograd_backward(x, dout, U, padding, th, tw, dx, R, get_num_threads())


# (The thread count is read here and passed in: read inside, it would keep Numba from caching
# the compiled kernels.)

@njit(parallel=True, cache=True)
def _winograd_forward(x, U, padding, th, tw, y, R, threads):
    """winograd_forward_numba in blocks of R tile rows, with `threads` workers, each with its
    own buffers and every threads-th block: a block's V and M never leave the cache. Returns y
    and whether every input value was finite."""
    N, C = x.shape[0], x.shape[1]
    O = U.shape[1]
    ph, pw = padding
    rows = N * th
    blocks = (rows + R - 1) // R
    workers = min(threads, blocks)
    # set in the loop: np.ones would be a parallel loop of its own, which Numba fuses with this
    # one (the V3 stem's forward ran 20% slower)
    finite = np.empty(workers, np.bool_)
    for w in prange(workers):
        finite[w] = True
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
                    if not _input_tiles(x, n, c, ph, pw, a0, a1, V4, c, r0, xe, xo, te, to):
                        finite[w] = False
            _tile_products(U, V, M)
            for n in range(g0 // th, (g1 - 1) // th + 1):
                a0, a1, r0 = _block_part(g0, g1, n, th)
                for o in range(O):
                    _output_tiles(M4, o, r0, a0, a1, y, n, o, q, yp)
    return y, finite.all()


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
