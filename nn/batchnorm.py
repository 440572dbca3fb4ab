"""Batch normalization (Ioffe & Szegedy 2015) with PyTorch's running statistics.

Training normalises each channel with the statistics of the current batch and keeps running
averages of them for evaluation; evaluation normalises with those running averages only, so a
prediction never depends on what else is in the batch.
"""
import numpy as np

from . import init, kernels
from .module import Buffer, Module, Parameter
from .shapes import check_input


def batchnorm_stats_reference(x3):
    """mean[c] = mean of x3[:, c, :];  var[c] = mean of (x3[:, c, :] - mean[c])**2 (biased)"""
    mean = x3.mean(axis=(0, 2))
    centred = x3 - mean[None, :, None]
    return mean, (centred * centred).mean(axis=(0, 2))


def batchnorm_normalize_reference(x3, mean, inv_std, gamma, beta, x_hat, y):
    """x_hat = (x - mean[c]) * inv_std[c];  y = gamma[c] * x_hat + beta[c]"""
    np.multiply(x3 - mean[None, :, None], inv_std[None, :, None], out=x_hat)
    np.add(x_hat * gamma[None, :, None], beta[None, :, None], out=y)
    return x_hat, y


def batchnorm_backward_reference(dout3, x_hat, gamma, inv_std, batch_stats, dx):
    """dbeta = sum(dout); dgamma = sum(dout*x_hat); dx = gamma*inv_std/m * (m*dout - dbeta - x_hat*dgamma)"""
    m = dout3.shape[0] * dout3.shape[2]
    dbeta = dout3.sum(axis=(0, 2))
    dgamma = (dout3 * x_hat).sum(axis=(0, 2))
    scale = (gamma * inv_std)[None, :, None]
    if batch_stats:
        dx[...] = scale / m * (m * dout3 - dbeta[None, :, None] - x_hat * dgamma[None, :, None])
    else:  # the statistics are constants: only the direct path remains
        dx[...] = scale * dout3
    return dgamma, dbeta


class TooFewValues(ValueError):
    """Training needs more than one value per channel: one value is its own mean, x_hat is 0."""


class _BatchNorm(Module):
    """Normalize each channel over the batch (and spatial) axes, then scale and shift (Alg. 1).

    Math, with m values per channel (N*H*W for 2-d, N or N*L for 1-d):
        mu = mean(x)   var = mean((x - mu)**2)   x_hat = (x - mu) / sqrt(var + eps)   y = gamma*x_hat + beta
        running <- (1 - momentum)*running + momentum*batch_stat   (variance made unbiased: var*m/(m-1))
        momentum=None: a cumulative average, the batch weighted 1/num_batches_tracked.
    Eval (with running statistics): x_hat = (x - running_mean) / sqrt(running_var + eps).
    Backward, training:  dbeta = sum(dout)   dgamma = sum(dout*x_hat)
               dx = gamma/(m*sqrt(var+eps)) * (m*dout - dbeta - x_hat*dgamma)
    Backward, eval (the statistics are constants): dx = gamma/sqrt(running_var+eps) * dout
    Shapes: gamma (weight), beta (bias), running_mean, running_var (C,).   Cache: x_hat, inv_std.
    """

    layout = None  # the input layouts a subclass accepts, e.g. ("NCHW",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None):
        super().__init__()
        dtype = dtype or init.DEFAULT_DTYPE
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        if track_running_stats:
            self.running_mean = Buffer(np.zeros(num_features, dtype=dtype))
            self.running_var = Buffer(np.ones(num_features, dtype=dtype))
            self.num_batches_tracked = Buffer(np.zeros((), dtype=np.int64))

    def _describe(self):
        return f"{type(self).__name__}({self.num_features})"

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def _check(self, x):
        if x.ndim not in (len(l) for l in self.layout):
            layouts = " or ".join(self.layout)
            raise ValueError(f"{self._describe()}: expected a {layouts} input, got shape {x.shape}")
        layout = next(l for l in self.layout if len(l) == x.ndim)
        dtype = self.weight.data.dtype if self.affine else None
        check_input(self, x, layout, self.num_features, dtype)

    def forward(self, x):
        self._check(x)
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)   # (N, C, L), L = H*W
        m = x3.shape[0] * x3.shape[2]
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            if m <= 1:
                raise TooFewValues(f"{self._describe()}: expected more than 1 value per channel "
                                   f"when training, got input shape {x.shape}")
            mean, var, m = self._batch_statistics(x3)   # biased, as in Alg. 1
            if self.training and self.track_running_stats:
                self._update_running(mean, var, m)
        else:
            mean, var = self.running_mean.data, self.running_var.data
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        gamma, beta = self._affine(x.dtype)
        x_hat, y = np.empty_like(x3), np.empty_like(x3)
        kernels.twin(batchnorm_normalize_reference)(x3, mean.astype(x.dtype), inv_std, gamma, beta,
                                                    x_hat, y)
        self.cache = {"x_hat": x_hat, "inv_std": inv_std, "batch_stats": use_batch_stats,
                      "shape": x.shape, "m": m}
        return y.reshape(x.shape)

    def _batch_statistics(self, x3):
        """(mean, biased variance, count) per channel of the batch x3 (N, C, L)."""
        mean, var = kernels.twin(batchnorm_stats_reference)(x3)
        return mean, var, x3.shape[0] * x3.shape[2]

    def _affine(self, dtype):
        """(gamma, beta), or (1, 0) for affine=False."""
        if self.affine:
            return self.weight.data, self.bias.data
        return np.ones(self.num_features, dtype), np.zeros(self.num_features, dtype)

    def _update_running(self, mu, var, m):
        self.num_batches_tracked.data += 1
        factor = (1.0 / float(self.num_batches_tracked.data) if self.momentum is None
                  else self.momentum)
        unbiased = var * (m / (m - 1))              # unbiased: the paper's Alg. 2, as PyTorch
        rm, rv = self.running_mean.data, self.running_var.data
        rm[...] = (1 - factor) * rm + factor * mu
        rv[...] = (1 - factor) * rv + factor * unbiased

    def backward(self, dout):
        cache = self.saved()
        x_hat, shape = cache["x_hat"], cache["shape"]
        dout3 = np.ascontiguousarray(dout).reshape(x_hat.shape)
        dx = np.empty_like(x_hat)
        gamma, _ = self._affine(dout.dtype)
        dgamma, dbeta = self._backward(dout3, x_hat, gamma, cache, dx)
        if self.affine:
            self.weight.grad += dgamma
            self.bias.grad += dbeta
        return dx.reshape(shape)

    def _backward(self, dout3, x_hat, gamma, cache, dx):
        """dx (written) and this batch's (dgamma, dbeta)."""
        return kernels.twin(batchnorm_backward_reference)(dout3, x_hat, gamma, cache["inv_std"],
                                                          cache["batch_stats"], dx)


class BatchNorm2d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__.replace("(C,).", "(C,).  Input (N, C, H, W).")
    layout = ("NCHW",)


class BatchNorm1d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__.replace("(C,).", "(C,).  Input (N, C) or (N, C, L).")
    layout = ("NC", "NCL")


class SyncBatchNorm2d(BatchNorm2d):
    """BatchNorm2d over a batch split across processes (data-parallel training): its statistics,
    and the sums its backward takes, are those of the whole batch, as if one process held it all.

    all_sum(array) returns the array summed over the processes (models/distributed.py gives one
    over MPI; nn knows nothing of MPI). With m values per channel over all processes:
        forward:   m and sum(x), all-summed: the mean; then sum((x - mean)**2), all-summed: the
                   variance (two passes, so that a large mean cancels no digits)
        backward:  dbeta = sum(dout) and dgamma = sum(dout*x_hat) all-summed, in dx's formula;
                   this process's own sums into its gradients (the gradient all-sum that follows
                   adds them up)
    Two all-sums of C values each way per layer, computed in NumPy (no Numba twin).
    """

    def __init__(self, num_features, all_sum, **kwargs):
        super().__init__(num_features, **kwargs)
        self.all_sum = all_sum

    def _batch_statistics(self, x3):
        counts = np.concatenate([[x3.shape[0] * x3.shape[2]], x3.sum(axis=(0, 2), dtype=np.float64)])
        counts = self.all_sum(counts)
        m, mean = int(round(counts[0])), counts[1:] / counts[0]
        centred = x3 - mean.astype(x3.dtype)[None, :, None]
        var = self.all_sum(np.einsum("ncl,ncl->c", centred, centred, dtype=np.float64)) / m
        return mean.astype(x3.dtype), var.astype(x3.dtype), m

    def _backward(self, dout3, x_hat, gamma, cache, dx):
        if not cache["batch_stats"]:   # eval: the statistics are constants, nothing to share
            return super()._backward(dout3, x_hat, gamma, cache, dx)
        C, m = dout3.shape[1], cache["m"]
        local = np.concatenate([dout3.sum(axis=(0, 2)), np.einsum("ncl,ncl->c", dout3, x_hat)])
        total = self.all_sum(local.astype(np.float64)).astype(dout3.dtype)
        dbeta, dgamma = total[:C], total[C:]
        scale = (gamma * cache["inv_std"])[:, None]
        dx[...] = scale / m * (m * dout3 - dbeta[:, None] - x_hat * dgamma[:, None])
        return local[C:], local[:C]


def convert_sync_batchnorm(module, all_sum):
    """Every BatchNorm2d of `module` replaced by a SyncBatchNorm2d with the same parameters and
    buffers (PyTorch's torch.nn.SyncBatchNorm.convert_sync_batchnorm). Returns the module."""
    for name, child in list(module._modules.items()):
        if type(child) is BatchNorm2d:
            arrays = child.state_dict()
            dtype = next((a.dtype for a in arrays.values() if a.dtype.kind == "f"), None)
            sync = SyncBatchNorm2d(child.num_features, all_sum, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats,
                                   dtype=dtype)
            sync.load_state_dict(arrays)
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, all_sum)
    return module
