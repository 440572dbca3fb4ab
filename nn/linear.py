"""Linear (fully connected) layer, PyTorch's layout: weight (out_features, in_features)."""

from . import init
from .module import Module, Parameter
from .shapes import check_input


class Linear(Module):
    """y = x @ W.T + b.

    Backward:  dW = dout.T @ x   db = sum(dout, axis=0)   dx = dout @ W
    Shapes:    x (N, in_features) -> y (N, out_features); weight (out, in); bias (out,)
    Cache:     x.   Init as PyTorch: W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        dtype = dtype or init.DEFAULT_DTYPE
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.uniform_fan_in((out_features, in_features), in_features, dtype))
        self.bias = Parameter(init.uniform_fan_in((out_features,), in_features, dtype)) if bias else None

    def _describe(self):
        return f"Linear({self.in_features}, {self.out_features})"

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            ", bias=False" if self.bias is None else "")

    def forward(self, x):
        check_input(self, x, "NC", self.in_features, self.weight.data.dtype)
        self.cache = {"x": x}
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dout):
        x = self.saved()["x"]
        self.weight.grad += dout.T @ x
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=0)
        return dout @ self.weight.data
