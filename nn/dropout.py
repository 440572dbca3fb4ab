"""Inverted dropout (Srivastava et al. 2014, scaled at training time as PyTorch does)."""
import numpy as np

from .module import Module


class Dropout(Module):
    """Zero each element with probability p in training and scale the survivors by 1/(1-p).

    Math (train):  mask ~ Bernoulli(1-p)   y = x * mask / (1-p)     (so E[y] = x)
    Eval:          y = x exactly (identity): no rescaling at test time is needed.
    Backward:      dx = dout * mask / (1-p)   (eval: dx = dout)
    Each Dropout draws from its own np.random.Generator; seed it with `seed=` or `reseed()`.
    Cache: the scaled mask (None in eval).
    """

    def __init__(self, p=0.5, inplace=False, seed=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p}")
        self.p, self.inplace = p, inplace
        self.rng = np.random.default_rng(seed)

    def _describe(self):
        return f"Dropout(p={self.p})"

    def extra_repr(self):
        return f"p={self.p}"

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.cache = {"scaled_mask": None}
            return x
        if self.p == 1.0:
            scaled_mask = np.zeros_like(x)
        else:
            keep = self.rng.random(x.shape) >= self.p      # Bernoulli(1 - p)
            scaled_mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        self.cache = {"scaled_mask": scaled_mask}
        if self.inplace:
            return np.multiply(x, scaled_mask, out=x)
        return x * scaled_mask

    def backward(self, dout):
        scaled_mask = self.saved()["scaled_mask"]
        return dout if scaled_mask is None else dout * scaled_mask
