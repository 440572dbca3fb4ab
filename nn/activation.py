"""Element-wise and shape layers without parameters: ReLU, Flatten, Identity."""
import numpy as np

from .module import Module


class ReLU(Module):
    """y = max(x, 0).   Backward: dx = dout * (x > 0) (the subgradient 0 is taken at x = 0).

    Cache: the mask x > 0.  inplace=True overwrites x with y, as torch.nn.ReLU(inplace=True).
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        mask = x > 0
        self.cache = {"mask": mask}
        if self.inplace:
            return np.multiply(x, mask, out=x)
        return x * mask

    def backward(self, dout):
        return dout * self.saved()["mask"]


class Flatten(Module):
    """Flatten axes start_dim..end_dim into one (PyTorch defaults: 1..-1): (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        self.cache = {"shape": x.shape}
        end = self.end_dim % x.ndim
        start = self.start_dim % x.ndim
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])

    def backward(self, dout):
        return dout.reshape(self.saved()["shape"])


class Identity(Module):
    """y = x; dx = dout. A placeholder where a branch passes its input through unchanged."""

    def forward(self, x):
        self.cache = {}
        return x

    def backward(self, dout):
        self.saved()
        return dout
