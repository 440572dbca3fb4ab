"""MEC, memory-efficient convolution: lower the input along one axis only, then one GEMM per kernel row.

im2col copies every input pixel KH*KW times. MEC (Cho & Brand 2017, "MEC: Memory-efficient
Convolution for Deep Neural Network") copies it only KW times, along the width:

    R[(j, c), r, (n, w)] = xp[n, c, r, w + j]          (KW*C, H + 2*ph, N*W_out)   (xp: x zero-padded)

Read R as a matrix of KW*C rows and (H + 2*ph)*N*W_out columns. Kernel row i meets input row
h + i at output row h, and in R the input rows are consecutive blocks of N*W_out columns, so
what kernel row i reads for every output at once is one plain slice, no copy:

    S_i = R[:, i*N*W_out : (i + H_out)*N*W_out]        (KW*C, H_out*N*W_out)
    Y   = sum over i of W_i @ S_i                       W_i[o, (j, c)] = W[o, c, i, j]

The S_i overlap (the same input row is read by every kernel row), which is MEC's point: the
overlap is in the addressing, not in memory. Y comes out as (C_out, H_out, N, W_out).

Cho & Brand take one GEMM per *output* row instead (H_out products of N*W_out columns); on
Inception's 17x17 maps those are 136 columns wide at batch 8, too thin for BLAS, and that
version lost to im2col there. Grouping the same sums by kernel row (the shift-and-accumulate
order of kn2row, Vasudevan et al. 2017) gives KH products that are each as wide as im2col's
single one. For a 7x1 kernel (KW = 1) R is just the padded input in (C, H, N, W) order, so the
layer copies nothing but that; a 1x7 kernel is lowered along the other axis (the layer swaps H
and W, which changes nothing else).

Backward, for stride 1:
    dW_i = dY @ S_i.T                                   (the slices of the R kept from forward)
    dx   = the same convolution of dY, padded by (KH-1-ph, KW-1-pw), with the kernel flipped in
           both axes and its in/out channels swapped: Wf[c, o, i, j] = W[o, c, KH-1-i, KW-1-j].
           Each input pixel collects, from every output it fed, the weight it was multiplied by:
           that is a full correlation with the flipped kernel, so the forward code computes it too.

So the layer's three products are GEMMs on slices, and nothing is ever scattered back. The sum
over kernel rows is added by each GEMM into its output as it goes (BLAS's beta = 1, nn/blas.py)
rather than by a second pass over memory.

MEC lowers along the width; a kernel wider than tall (1x7) runs on the transposed maps, kernel
and padding (_frame), so that its long side is the windowed one.

The lowering below is the readable reference; nn/kernels/mec.py has its Numba twin.
"""
import numpy as np

from .. import blas, kernels
from ..workspace import Workspace, owned

_work = Workspace()


def mec_lower_reference(x, KW, padding, W_out, R):
    """R[(j, c), r, (n, w)] = xp[n, c, r, w + j] (xp: x zero-padded)"""
    N, C, H, W = x.shape
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    view = R.reshape(KW, C, H + 2 * ph, N, W_out)
    for j in range(KW):  # one slice per kernel column: every row's pixels shifted by j
        view[j] = xp[:, :, :, j:j + W_out].transpose(1, 2, 0, 3)
    return R


def row_slices(R, KH, H_out):
    """S_i, what kernel row i reads: columns i*N*W_out .. (i + H_out)*N*W_out of R, as views."""
    K, _, P = R.shape
    R2 = R.reshape(K, -1)
    return [R2[:, i * P:(i + H_out) * P] for i in range(KH)]


def kernel_rows(w):
    """W_i[o, (j, c)] = w[o, c, i, j], for every kernel row i: (KH, C_out, KW*C_in)."""
    O, C, KH, KW = w.shape
    return np.ascontiguousarray(w.transpose(2, 0, 3, 1)).reshape(KH, O, KW * C)


def convolve(R, w, H_out, out):
    """Y = sum over i of W_i @ S_i into out (C_out, H_out*N*W_out)."""
    rows, slices = kernel_rows(w), row_slices(R, w.shape[2], H_out)
    np.matmul(rows[0], slices[0], out=out)
    for W_i, S_i in zip(rows[1:], slices[1:]):
        blas.matmul_add(W_i, S_i, out)    # each product added in by the GEMM itself (nn/blas.py)
    return out


def weight_grad(dYT, R, shape):
    """dW (C_out, C_in, KH, KW) = `shape` from dW_i.T = S_i @ dY.T, for dYT = dY.T (H_out*N*W_out, C_out).

    (dY.T contiguous rather than a transposed view: BLAS runs these long products ~20% faster.)"""
    O, C, KH, KW = shape
    H_out = dYT.shape[0] // R.shape[2]
    dWT = np.stack([S @ dYT for S in row_slices(R, KH, H_out)])       # (KH, KW*C_in, C_out)
    return dWT.reshape(KH, KW, C, O).transpose(3, 2, 0, 1)


def flipped(w):
    """Wf[c, o, i, j] = w[o, c, KH-1-i, KW-1-j]: the kernel whose convolution of dY gives dx."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def applies(kernel_size, stride, padding, dilation):
    return (stride == (1, 1) and dilation == (1, 1)
            and all(p < k for p, k in zip(padding, kernel_size)))


def _frame(a, swapped):
    """An NCHW array (or OIHW kernel) as MEC sees it: H and W swapped for a kernel wider than
    tall. The same swap undoes itself."""
    return a.transpose(0, 1, 3, 2) if swapped else a


def _lowered(x, KH, KW, padding):
    """(H_out, W_out) of x (N, C, H, W) in MEC's frame, and the shape of its R."""
    N, C, H, W = x.shape
    H_out, W_out = H + 2 * padding[0] - KH + 1, W + 2 * padding[1] - KW + 1
    return (H_out, W_out), (KW * C, H + 2 * padding[0], N * W_out)


def _convolve(x, w, padding, R):
    """Y (C_out, H_out, N, W_out) of x (N, C, H, W) in MEC's frame, lowering x into R."""
    O, _, KH, KW = w.shape
    (H_out, W_out), _ = _lowered(x, KH, KW, padding)
    kernels.twin(mec_lower_reference)(x, KW, padding, W_out, R)
    Y = convolve(R, w, H_out, _work.get("Y", (O, H_out * x.shape[0] * W_out), x.dtype))
    return Y.reshape(O, H_out, x.shape[0], W_out)


def forward(x, w, stride, padding, dilation):
    """y, and the cache: x, and R when it is small (nn/workspace.py: for_backward)."""
    swapped = w.shape[3] > w.shape[2]
    framed, x, w = (padding[::-1] if swapped else padding), _frame(x, swapped), _frame(w, swapped)
    R, kept = _work.for_backward("R", _lowered(x, *w.shape[2:], framed)[1], x.dtype)
    Y = _convolve(x, w, framed, R)
    y = owned(_frame(Y.transpose(2, 0, 1, 3), swapped))                # (N, C_out, H_out, W_out)
    return y, {"x": _frame(x, swapped), "R": R if kept else None, "padding": framed, "swapped": swapped}


def backward(dy, w, cache, need_dx=True):
    """dW from R (kept, or the input lowered again); dx as the flipped-kernel convolution of dY
    (see the top), None unless need_dx."""
    swapped, (ph, pw), R = cache["swapped"], cache["padding"], cache["R"]
    w = _frame(w, swapped)
    O, C, KH, KW = w.shape
    dy = _frame(dy, swapped)
    N, _, H_out, W_out = dy.shape
    dYT = _work.get("dYT", (H_out, N, W_out, O), dy.dtype)            # dY.T, rows (h, n, w)
    dYT[...] = dy.transpose(2, 0, 3, 1)
    if R is None:
        x = _frame(cache["x"], swapped)
        R = _work.get("R", _lowered(x, KH, KW, (ph, pw))[1], x.dtype)
        kernels.twin(mec_lower_reference)(x, KW, (ph, pw), W_out, R)
    dw = _frame(weight_grad(dYT.reshape(-1, O), R, w.shape), swapped)
    if not need_dx:
        return None, dw
    padding = (KH - 1 - ph, KW - 1 - pw)
    Yx = _convolve(dy, flipped(w), padding, _work.get("R_dy", _lowered(dy, KH, KW, padding)[1], dy.dtype))
    return owned(_frame(Yx.transpose(2, 0, 1, 3), swapped)), dw
