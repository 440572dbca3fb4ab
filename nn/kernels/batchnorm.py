"""Numba twins of nn/batchnorm.py: the statistics in one pass over memory, the normalisation,
and the backward, a channel (or a plane) per thread."""
import numpy as np
from numba import njit, prange

from nn.batchnorm import (batchnorm_backward_reference, batchnorm_normalize_reference,
                          batchnorm_stats_reference)

from . import twin_of


@twin_of(batchnorm_stats_reference)
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


@twin_of(batchnorm_normalize_reference)
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


@twin_of(batchnorm_backward_reference)
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
