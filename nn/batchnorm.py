"""Batch normalization (Ioffe & Szegedy 2015) with PyTorch's running statistics.

Training normalises each channel with the statistics of the current batch and keeps running
averages of them for evaluation; evaluation normalises with those running averages only, so a
prediction never depends on what else is in the batch.
"""
import numpy as np

from . import init
from ._checks import check_input
from .module import Buffer, Module, Parameter


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
        if not isinstance(x, np.ndarray):
            check_input(self, x, self.layout[0])    # raises the TypeError
        if x.ndim not in (len(l) for l in self.layout):
            layouts = " or ".join(self.layout)
            raise ValueError(f"{self._describe()}: expected a {layouts} input, got shape {x.shape}")
        layout = next(l for l in self.layout if len(l) == x.ndim)
        dtype = self.weight.data.dtype if self.affine else None
        check_input(self, x, layout, self.num_features, dtype)

    def forward(self, x):
        self._check(x)
        axes = (0,) + tuple(range(2, x.ndim))       # every axis but the channel axis
        bshape = (1, -1) + (1,) * (x.ndim - 2)      # a (C,) vector broadcast against x
        m = x.size // x.shape[1]
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            if m <= 1:
                raise ValueError(f"{self._describe()}: expected more than 1 value per channel "
                                 f"when training, got input shape {x.shape}")
            mu = x.mean(axis=axes)
            xc = x - mu.reshape(bshape)
            var = np.mean(xc * xc, axis=axes)       # biased, as in the paper's Alg. 1
            if self.training and self.track_running_stats:
                self._update_running(mu, var, m)
        else:
            mu, var = self.running_mean.data, self.running_var.data
            xc = x - mu.reshape(bshape)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat = xc * inv_std.reshape(bshape)
        self.cache = {"x_hat": x_hat, "inv_std": inv_std, "batch_stats": use_batch_stats}
        if not self.affine:
            return x_hat
        return x_hat * self.weight.data.reshape(bshape) + self.bias.data.reshape(bshape)

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
        x_hat, inv_std = cache["x_hat"], cache["inv_std"]
        if dout.shape != x_hat.shape:
            raise ValueError(f"{self._describe()}.backward: expected dout of shape {x_hat.shape}, "
                             f"got {dout.shape}")
        axes = (0,) + tuple(range(2, dout.ndim))
        bshape = (1, -1) + (1,) * (dout.ndim - 2)
        m = dout.size // dout.shape[1]
        dbeta = dout.sum(axis=axes)
        dgamma = (dout * x_hat).sum(axis=axes)
        gamma = self.weight.data if self.affine else np.ones_like(inv_std)
        if self.affine:
            self.weight.grad += dgamma
            self.bias.grad += dbeta
        if not cache["batch_stats"]:
            return dout * (gamma * inv_std).reshape(bshape)
        scale = (gamma * inv_std / m).reshape(bshape)
        return scale * (m * dout - dbeta.reshape(bshape) - x_hat * dgamma.reshape(bshape))


class BatchNorm2d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__.replace("(C,).", "(C,).  Input (N, C, H, W).")
    layout = ("NCHW",)


class BatchNorm1d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__.replace("(C,).", "(C,).  Input (N, C) or (N, C, L).")
    layout = ("NC", "NCL")
