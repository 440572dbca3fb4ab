"""Winograd's minimal filtering F(2x2, 3x3): a 3x3 stride-1 convolution with 2.25x fewer products.

im2col computes each output pixel with 9 multiply-adds per input channel. Winograd (Lavin & Gray
2015, "Fast Algorithms for Convolutional Neural Networks") computes a 2x2 block of outputs from
the 4x4 input tile d under it with 16 multiplications instead of 36:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* is element-wise; g is the 3x3 kernel)

        B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
              [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
              [0 -1  1  0]         [1/2 -1/2  1/2]
              [0  1  0 -1]         [ 0    0    1 ]

Summed over input channels, the element-wise product becomes, for each of the 16 tile positions
xi = (k, l), one matrix product over the whole batch:

    U[xi] = (G W G^T)[xi]          (C_out, C_in)     the kernels, transformed once per step
    V[xi] = (B^T d B)[xi]          (C_in, T)         every input tile, T = N * tiles per image
    M[xi] = U[xi] @ V[xi]          (C_out, T)        16 GEMMs of 1/2.25 the im2col GEMM's work
    y tile = A^T M A               (2x2 outputs per tile; tiles beyond H_out, W_out are cut off)

Tiles step by 2 and overlap by 2: tile (a, b) reads padded rows 2a..2a+3, columns 2b..2b+3.

Backward is the same chain read backwards; every step is linear, so its gradient is its
transpose (no approximation: this is the exact gradient of the exact convolution):
    dM = A dY A^T                  (per tile, dY zero beyond H_out, W_out)
    dU = dM @ V^T   ->  dW = G^T dU G          dV = U^T @ dM  ->  dd = B dV B^T, added back
                                                                   where each tile was read
Backward needs V again for dU, 4x the input: the layer keeps it when it is small, and transforms
the input again when it is large (nn/workspace.py: for_backward). On large maps with few channels,
where V and M outgrow every cache, nn/conv/winograd_fused.py runs the same chain a block of
tiles at a time instead.

Winograd computes whole 2x2 tiles, so on small odd maps part of its work falls outside the
output (fill below: a 3x3 map is 4 tiles, 16 outputs for 9); nn/conv/__init__.py picks it only
where its tiles fill the map well.

Infinite inputs: the transforms subtract input values from each other, so an inf becomes
inf - inf = NaN where the direct convolution gives inf. The input transform tells whether every
value it read was finite (nearly free: it checks them in cache), and forward returns None for an
input that is not, so that the layer computes that batch with im2col instead.

Rounding: the transforms only add, subtract and halve, so float32 results differ from im2col's
by a few units in the last place of the largest terms (tests/test_winograd.py pins it).

The functions below are the readable references, written with the matrices above;
nn/kernels/winograd.py has their Numba twins (same signatures).
"""
import numpy as np

from .. import kernels
from ..workspace import Workspace

_work = Workspace()

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
GG = np.kron(G, G)


def tiles(H_out, W_out):
    """Number of 2x2 output tiles along each axis."""
    return (H_out + 1) // 2, (W_out + 1) // 2


def fill(H_out, W_out):
    """The share of the tiles' outputs that lie inside the H_out x W_out map (1 when both are even)."""
    th, tw = tiles(H_out, W_out)
    return H_out * W_out / (4 * th * tw)


def transform_weight(w):
    """U[(k, l), o, c] = (G w[o, c] G^T)[k, l]: (C_out, C_in, 3, 3) -> (16, C_out, C_in)

    Each of the 16 values is a fixed combination of the kernel's 9, so all kernels go through
    one matrix product with GG = kron(G, G), GG[(k, l), (i, j)] = G[k, i] * G[l, j]."""
    return (GG.astype(w.dtype) @ w.reshape(-1, 9).T).reshape(16, w.shape[0], w.shape[1])


def transform_weight_backward(dU):
    """dw[o, c] = G^T dU[:, o, c] G: (16, C_out, C_in) -> (C_out, C_in, 3, 3)"""
    return (dU.reshape(16, -1).T @ GG.astype(dU.dtype)).reshape(dU.shape[1], dU.shape[2], 3, 3)


def winograd_input_reference(x, padding, th, tw, V):
    """V[(k, l), c, (n, a, b)] = (B^T d B)[k, l], d = xp[n, c, 2a:2a+4, 2b:2b+4] (xp: x zero-padded);
    and whether every value of x is finite"""
    N, C, H, W = x.shape
    ph, pw = padding
    xp = np.zeros((N, C, 2 * th + 2, 2 * tw + 2), x.dtype)  # the tiles may reach one row past the padding
    xp[:, :, ph:ph + H, pw:pw + W] = x
    d = np.stack([np.stack([xp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)])
                  for i in range(4)])                                       # (4, 4, N, C, th, tw)
    bt = BT.astype(x.dtype)
    V.reshape(4, 4, C, N, th, tw)[...] = np.einsum("ki,ijncab,lj->klcnab", bt, d, bt)
    return V, bool(np.isfinite(x).all())


def winograd_output_reference(M, th, tw, y):
    """y[n, o, 2a+u, 2b+v] = (A^T m A)[u, v], m = M[:, o, (n, a, b)] as a 4x4 tile (cut at H_out, W_out)"""
    N, C_out, H_out, W_out = y.shape
    at = AT.astype(M.dtype)
    m = M.reshape(4, 4, C_out, N, th, tw)
    full = np.einsum("uk,klonab,vl->noaubv", at, m, at).reshape(N, C_out, 2 * th, 2 * tw)
    y[...] = full[:, :, :H_out, :W_out]
    return y


def winograd_output_backward_reference(dout, th, tw, dM):
    """dM[(k, l), o, (n, a, b)] = (A dY A^T)[k, l], dY = dout[n, o, 2a:2a+2, 2b:2b+2] (zero beyond the edge)"""
    N, C_out, H_out, W_out = dout.shape
    dfull = np.zeros((N, C_out, 2 * th, 2 * tw), dout.dtype)
    dfull[:, :, :H_out, :W_out] = dout
    at = AT.astype(dout.dtype)
    dtiles = dfull.reshape(N, C_out, th, 2, tw, 2)
    dM.reshape(4, 4, C_out, N, th, tw)[...] = np.einsum("uk,noaubv,vl->klonab", at, dtiles, at)
    return dM


def winograd_input_backward_reference(dV, padding, th, tw, dx):
    """dx[n, c] = sum over tiles of (B dV B^T) added back at xp[n, c, 2a:2a+4, 2b:2b+4], padding cut off"""
    N, C, H, W = dx.shape
    ph, pw = padding
    bt = BT.astype(dV.dtype)
    dd = np.einsum("ki,klcnab,lj->ijncab", bt, dV.reshape(4, 4, C, N, th, tw), bt)
    dxp = np.zeros((N, C, 2 * th + 2, 2 * tw + 2), dV.dtype)
    for i in range(4):
        for j in range(4):  # neighbouring tiles overlap by 2, so their contributions add up
            dxp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] += dd[i, j]
    dx[...] = dxp[:, :, ph:ph + H, pw:pw + W]
    return dx


def applies(kernel_size, stride, padding, dilation):
    return kernel_size == (3, 3) and stride == (1, 1) and dilation == (1, 1)


def _input_tiles(x, padding, th, tw):
    """V of x, whether x is finite, and whether V is kept for backward (else it is the workspace's)."""
    N, C = x.shape[:2]
    V, kept = _work.for_backward("V", (16, C, N * th * tw), x.dtype)
    return (*kernels.twin(winograd_input_reference)(x, padding, th, tw, V), kept)


def forward(x, w, stride, padding, dilation):
    """y = x convolved with w through the batch-wide transforms and 16 GEMMs; the cache holds the
    input, the transformed kernels U and, when small, the input tiles V. (None, None) for an
    input that holds inf or NaN."""
    N, C, H, W = x.shape
    O = w.shape[0]
    H_out, W_out = H + 2 * padding[0] - 2, W + 2 * padding[1] - 2
    th, tw = tiles(H_out, W_out)
    U = transform_weight(w)                                                     # (16, C_out, C_in)
    V, finite, kept = _input_tiles(x, padding, th, tw)                          # (16, C_in, T)
    if not finite:
        return None, None
    M = np.matmul(U, V, out=_work.get("M", (16, O, V.shape[2]), x.dtype))      # (16, C_out, T)
    y = kernels.twin(winograd_output_reference)(M, th, tw, np.empty((N, O, H_out, W_out), x.dtype))
    return y, {"x": x, "U": U, "padding": padding, "V": V if kept else None}


def backward(dy, w, cache, need_dx=True):
    """(dx, dW): dM = A dY A^T, dU = dM @ V^T (V again, from x), dV = U^T @ dM, dx = B dV B^T
    added back (dx None unless need_dx)."""
    x, U, padding, V = cache["x"], cache["U"], cache["padding"], cache["V"]
    th, tw = tiles(*dy.shape[2:])
    if V is None:                                                               # not kept
        V, _, _ = _input_tiles(x, padding, th, tw)
    dM = _work.get("M", (16, U.shape[1], V.shape[2]), dy.dtype)
    dM = kernels.twin(winograd_output_backward_reference)(dy, th, tw, dM)       # (16, C_out, T)
    dw = transform_weight_backward(np.matmul(dM, V.transpose(0, 2, 1)))
    if not need_dx:
        return None, dw
    dV = np.matmul(U.transpose(0, 2, 1), dM, out=_work.get("dV", V.shape, dy.dtype))
    dx = kernels.twin(winograd_input_backward_reference)(dV, padding, th, tw, np.empty_like(x))
    return dx, dw
