"""MEC, memory-efficient convolution: lower the input along one axis only, then GEMMs on windows.

im2col copies every input pixel KH*KW times. MEC (Cho & Brand 2017, "MEC: Memory-efficient
Convolution for Deep Neural Network") copies it only KW times, along the width, into rows:

    R[r, (j, c), (n, w)] = xp[n, c, r, w + j]          (H + 2*ph, KW*C, N*W_out)   (xp: x zero-padded)

Output row h needs input rows h .. h+KH-1, and in R those rows are KH consecutive blocks of
(KW*C, N*W_out) values, so they already *are* a matrix: the (KH*KW*C, N*W_out) window starting
at R[h], read in place (a strided view, no copy). One GEMM per output row:

    Y[h] = W2 @ R[h : h + KH].reshape(KH*KW*C, N*W_out)          W2[o, (i, j, c)] = W[o, c, i, j]

For a 7x1 kernel (KW = 1) R is just the padded input, transposed; a 1x7 kernel is lowered
along the other axis (the layer swaps H and W, which changes nothing else). Against im2col it
saves the 7x copy and the col2im (about a third of such a layer's time at batch 32), at the
price of one thinner GEMM per output row: it wins only where those are wide enough
(MEC_MIN_COLUMNS in nn/conv.py).

Backward, for stride 1:
    dW2 = sum over h of dY[h] @ window[h].T                 (the windows kept from forward)
    dx  = the same convolution of dY, padded by (KH-1-ph, KW-1-pw), with the kernel flipped in
          both axes and its in/out channels swapped: Wf[c, o, i, j] = W[o, c, KH-1-i, KW-1-j].
          Each input pixel collects, from every output it fed, the weight it was multiplied by:
          that is a full correlation with the flipped kernel, so the forward code computes it too.

So the layer's three products are forward GEMMs on windows, and nothing is ever scattered back.

The lowering below is the readable reference; nn/kernels.py has its Numba twin (same signature).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided


def mec_lower_reference(x, KW, padding, W_out, R):
    """R[r, (j, c), (n, w)] = xp[n, c, r, w + j] (xp: x zero-padded)"""
    N, C, H, W = x.shape
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    view = R.reshape(H + 2 * ph, KW, C, N, W_out)
    for j in range(KW):  # one slice per kernel column: every row's pixels shifted by j
        view[:, j] = xp[:, :, :, j:j + W_out].transpose(2, 1, 0, 3)
    return R


def windows(R, KH, H_out):
    """The (KH*KW*C, N*W_out) matrices R[h : h + KH], h < H_out, as one read-only strided view."""
    _, K, P = R.shape
    return as_strided(R, (H_out, KH * K, P), R.strides, writeable=False)


def flipped(w):
    """Wf[c, o, i, j] = w[o, c, KH-1-i, KW-1-j]: the kernel whose convolution of dY gives dx."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
