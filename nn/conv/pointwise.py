"""A 1x1 convolution with stride 1 and no padding: a matrix product, no im2col at all.

Each image's (C, H*W) block already is its column matrix, so

    y[n] = W @ x[n]            dW = sum over n of dy[n] @ x[n].T            dx[n] = W.T @ dy[n]

On large maps that is a batch of matrix products straight from and to NCHW; on small maps
(where the per-image products are too thin for BLAS) the batch is folded into one product,
(C, N*H*W), with two transposes.
"""
import numpy as np

# H*W under which one folded GEMM beats per-image GEMMs (the 14x14 and smaller maps of both
# models). Re-measure: python -m benchmarks.layers --all --only "1x1/"
POINTWISE_FOLD_BELOW = 196


def applies(kernel_size, stride, padding, dilation):
    return kernel_size == (1, 1) and stride == (1, 1) and padding == (0, 0)


def matmul_images(w2, x3):
    """y[n] = W @ x[n] for x3 (N, C, P): per image on large maps, one folded GEMM on small ones."""
    N, C, P = x3.shape
    if P >= POINTWISE_FOLD_BELOW:
        return np.matmul(w2, x3)
    folded = w2 @ np.ascontiguousarray(x3.transpose(1, 0, 2)).reshape(C, N * P)
    return np.ascontiguousarray(folded.reshape(-1, N, P).transpose(1, 0, 2))


def forward(x, w, stride, padding, dilation):
    N, C, H, W = x.shape
    y = matmul_images(w.reshape(w.shape[0], C), x.reshape(N, C, H * W))
    return y.reshape(N, w.shape[0], H, W), {"x": x}


def backward(dy, w, cache, need_dx=True):
    x = cache["x"]
    N, C, H, W = x.shape
    x3, dy3 = x.reshape(N, C, -1), dy.reshape(N, w.shape[0], -1)
    if x3.shape[2] >= POINTWISE_FOLD_BELOW:
        dw = np.matmul(dy3, x3.transpose(0, 2, 1)).sum(axis=0)
    else:
        dw = np.tensordot(dy3, x3, axes=([0, 2], [0, 2]))
    if not need_dx:
        return None, dw.reshape(w.shape)
    dx = matmul_images(w.reshape(w.shape[0], C).T, dy3)
    return dx.reshape(x.shape), dw.reshape(w.shape)
