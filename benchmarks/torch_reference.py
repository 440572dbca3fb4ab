"""The same network in PyTorch, converted module by module, for benchmarks and parity tests.

convert(model) builds torch modules with the same structure, the same state_dict names (so
that our weights load into it by name) and, with copy_weights, the same weights: forward outputs
and gradients can be compared, and speed measured on identical shapes. Only used when torch is
importable; nothing in nn/ or models/ depends on it.
"""
from collections import OrderedDict

import numpy as np

import nn
from models.blocks import AuxPool, InceptionNet
from models.inception_v3 import ExpandedBlock


def convert(module, copy_weights=True):
    import torch
    tnn = torch.nn

    def to_tensor(a):
        return torch.from_numpy(np.array(a, order="C"))

    def param_copy(ours, theirs):
        if copy_weights:
            ours_state = ours.state_dict()
            with torch.no_grad():
                for name, t in theirs.state_dict().items():
                    t.copy_(to_tensor(ours_state[name]))
        return theirs

    class Children(tnn.Module):
        """Our module's children under their own names (so that the state_dict names match)."""

        def __init__(self, ours):
            super().__init__()
            for name, child in ours.named_children():
                self.add_module(name, convert(child, copy_weights))

    class Concat(Children):
        def __init__(self, ours):
            super().__init__(ours)
            self.names = list(ours.order)

        def forward(self, x):
            outs = {n: b(x) for n, b in self.named_children()}
            return torch.cat([outs[n] for n in self.names], dim=1)

    class Expanded(Children):
        def forward(self, x):
            a, b = self.trunk_a(x), self.trunk_b(x)
            return torch.cat([self.a_1x3(a), self.a_3x1(a), self.b_1x3(b), self.b_3x1(b),
                              self.pool(x), self.b1x1(x)], dim=1)

    class AuxPooling(tnn.Module):
        def __init__(self, ours):
            super().__init__()
            self.ours = ours

        def forward(self, x):
            chosen = self.ours._pick(x)
            if chosen is self.ours.fixed:
                return torch.nn.functional.avg_pool2d(x, 5, 3)
            return torch.nn.functional.adaptive_avg_pool2d(x, self.ours.out_size)

    class Model(Children):
        """The trunk our model declares (InceptionNet: STAGES in order, TAPS for the aux heads)."""

        def __init__(self, ours):
            super().__init__(ours)
            self.stages, self.taps = ours.STAGES, ours.TAPS

        def forward(self, x):
            aux = []
            for name in self.stages:
                x = getattr(self, name)(x)
                if self.training and name in self.taps:
                    aux.append(getattr(self, self.taps[name])(x))
            return (x, *aux) if self.training else x

    simple = {
        nn.Conv2d: lambda m: tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                        m.dilation, bias=m.bias is not None),
        nn.BatchNorm2d: lambda m: tnn.BatchNorm2d(m.num_features, m.eps, m.momentum),
        nn.BatchNorm1d: lambda m: tnn.BatchNorm1d(m.num_features, m.eps, m.momentum),
        nn.Linear: lambda m: tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
        nn.ReLU: lambda m: tnn.ReLU(),
        nn.MaxPool2d: lambda m: tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                              ceil_mode=m.ceil_mode),
        nn.AvgPool2d: lambda m: tnn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                              m.count_include_pad, m.divisor_override),
        nn.AdaptiveAvgPool2d: lambda m: tnn.AdaptiveAvgPool2d(m.output_size),
        nn.Dropout: lambda m: tnn.Dropout(m.p),
        nn.Flatten: lambda m: tnn.Flatten(m.start_dim, m.end_dim),
        nn.Identity: lambda m: tnn.Identity(),
    }
    for cls, make in simple.items():
        if type(module) is cls:
            return param_copy(module, make(module).to(_torch_dtype(module)))
    if isinstance(module, nn.Sequential):
        return tnn.Sequential(OrderedDict((n, convert(m, copy_weights)) for n, m in module.named_children()))
    if isinstance(module, nn.Concat):
        return Concat(module)
    if isinstance(module, ExpandedBlock):
        return Expanded(module)
    if isinstance(module, AuxPool):
        return AuxPooling(module)
    if isinstance(module, InceptionNet):
        return Model(module)
    raise TypeError(f"no torch equivalent for {type(module).__name__}")


def _torch_dtype(module):
    import torch
    return torch.float64 if module.dtype == np.float64 else torch.float32
