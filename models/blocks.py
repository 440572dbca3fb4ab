"""The building blocks both Inception networks share: conv-BN-ReLU, branch chains, aux heads.

Every convolution in both models is Conv2d(bias=False) -> BatchNorm2d -> ReLU (the bias would
be cancelled by BN's mean subtraction). A branch is a chain of such units, written as a list of
specs (C_out, kernel, stride, padding), so that the model files can show every width in one place.
"""
from collections import OrderedDict

import numpy as np

import nn


def check_arguments(model, num_classes, in_channels, width):
    """A clear error for a class count, channel count or width multiplier that builds no sensible
    network (width 0 would silently shrink every layer to one channel)."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{model}: {name} must be a positive integer, got {value!r}")
    if not isinstance(width, (int, float, np.number)) or not np.isfinite(width) or not width > 0:
        raise ValueError(f"{model}: width must be a finite number > 0 (1.0: the full network), "
                         f"got {width!r}")


def scaled(channels, width):
    """A channel count under the width multiplier (at least 1): small copies keep the topology."""
    return max(1, int(round(channels * width)))


def conv_bn_relu(c_in, c_out, kernel_size, stride=1, padding=0):
    """Conv2d (no bias) -> BatchNorm2d (eps 1e-5, momentum 0.1) -> ReLU."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(),
    ))


def chain(c_in, specs, width=1.0, pool=None):
    """A branch: an optional leading pooling layer, then conv_bn_relu units from specs.

    specs: [(C_out, kernel, stride, padding), ...]; C_out is scaled by `width`. Returns the
    Sequential and its output width (the input width for a pool-only branch).
    """
    layers = [pool] if pool is not None else []
    for c_out, kernel, stride, padding in specs:
        c_out = scaled(c_out, width)
        layers.append(conv_bn_relu(c_in, c_out, kernel, stride, padding))
        c_in = c_out
    if pool is not None and not specs:
        layers.append(nn.Identity())  # the pool branch passes through, as the table shows
    return nn.Sequential(*layers), c_in


class InceptionBlock(nn.Concat):
    """An Inception module: parallel branches concatenated on channels (a Concat that the
    summary lists as a row of its own, as the Inception-V2 table does)."""

    summary_name = "InceptionBlock"


class AuxPool(nn.Module):
    """The aux heads' average pool 5x5/3, or adaptive pooling to the same output size when the
    input is not the seed's size, so that the aux head keeps its parameter count at any size."""

    def __init__(self, out_size, kernel_size=5, stride=3):
        super().__init__()
        self.out_size = out_size
        self.fixed = nn.AvgPool2d(kernel_size, stride)
        self.adaptive = nn.AdaptiveAvgPool2d(out_size)

    def _pick(self, x):
        H, W = x.shape[2:]
        fits = min(H, W) >= self.fixed.kernel_size[0]
        if fits and self.fixed.output_size(H, W) == (self.out_size, self.out_size):
            return self.fixed
        return self.adaptive

    def forward(self, x):
        pool = self._pick(x)
        self.cache = {"pool": pool}
        return pool(x)

    def backward(self, dout):
        return self.saved()["pool"].backward(dout)


def aux_head(c_in, grid, num_classes, width=1.0, hidden_relu_dropout=None):
    """Auxiliary classifier: pool to grid x grid, 1x1 conv 128 (+BN+ReLU), flatten, Linear 1024,
    [ReLU, Dropout(p) when hidden_relu_dropout=p], Linear num_classes."""
    c_mid, hidden = scaled(128, width), scaled(1024, width)
    layers = OrderedDict(
        pool=AuxPool(grid),
        conv=conv_bn_relu(c_in, c_mid, 1),
        flatten=nn.Flatten(),
        fc1=nn.Linear(c_mid * grid * grid, hidden),
    )
    if hidden_relu_dropout is not None:
        layers["relu"] = nn.ReLU()
        layers["dropout"] = nn.Dropout(hidden_relu_dropout)
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(layers)


class InceptionNet(nn.Module):
    """A network declared by its trunk: the stages in order, and where the aux heads tap it.

    A subclass builds its stages as attributes and declares
        STAGES    the attribute names of the trunk's stages, in order
        TAPS      {stage: aux head}: the aux head reads that stage's output
        MIN_SIZE  the smallest square input that keeps every feature map non-empty
    forward runs the stages in order, each aux head on its stage's output (in training only), and
    returns (logits, *aux outputs in trunk order) in training, the logits in eval. backward walks
    the same declaration in reverse, so it cannot drift from forward: where an aux head tapped a
    stage's output, the head's input gradient joins the trunk's before that stage's backward (a
    fork in forward is a sum in backward).
    """

    STAGES, TAPS, MIN_SIZE = (), {}, 1

    def __init__(self, num_classes, in_channels, width):
        super().__init__()
        check_arguments(type(self).__name__, num_classes, in_channels, width)
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width

    @property
    def input_grad(self):
        """Whether backward computes dx, the gradient of the input images (its first layer's
        dx): needed for saliency maps, not for training, which sets it False and skips the
        work (models/train.py)."""
        return self._first_conv().input_grad

    @input_grad.setter
    def input_grad(self, value):
        self._first_conv().input_grad = bool(value)

    def _first_conv(self):
        return next(m for m in self.modules() if isinstance(m, nn.Conv2d))

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {x.shape}")
        if min(x.shape[2:]) < self.MIN_SIZE:
            raise ValueError(f"{type(self).__name__}: input {x.shape[2]}x{x.shape[3]} is too small; the "
                             f"smallest that keeps every feature map non-empty is {self.MIN_SIZE}x{self.MIN_SIZE}")

    def forward(self, x):
        aux = []
        for name in self.STAGES:
            x = getattr(self, name)(x)
            if self.training and name in self.TAPS:
                aux.append(getattr(self, self.TAPS[name])(x))
        return (x, *aux) if self.training else x

    def backward_through_trunk(self, dlogits, *daux):
        """dx from the logits' gradient and each aux head's (None: no gradient), in TAPS order."""
        tapped = dict(zip([s for s in self.STAGES if s in self.TAPS], daux))
        d = dlogits
        for name in reversed(self.STAGES):
            if tapped.get(name) is not None:
                d = d + getattr(self, self.TAPS[name]).backward(tapped[name])
            d = getattr(self, name).backward(d)
        return d
