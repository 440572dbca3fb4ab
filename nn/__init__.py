"""nn: an autograd-free layer stack, every forward and backward written out by hand.

    import nn, numpy as np   # nn first: see nn/runtime.py
    conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    bn, relu = nn.BatchNorm2d(64), nn.ReLU()
    y = relu(bn(conv(x)))
    dx = conv.backward(bn.backward(relu.backward(dy)))   # gradients accumulate into p.grad
"""
from .runtime import keep_freed_memory, quiet_idle_threads

quiet_idle_threads()  # before NumPy loads OpenBLAS and Numba loads OpenMP: see nn/runtime.py

from .module import Parameter, Buffer, Module, Sequential, Concat, no_grad
from .conv import Conv2d
from .batchnorm import BatchNorm1d, BatchNorm2d
from .pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from .linear import Linear
from .activation import ReLU, Flatten, Identity
from .dropout import Dropout
from .loss import CrossEntropyLoss, log_softmax
from .init import manual_seed
from . import kernels, gradcheck, optim

__all__ = ["Parameter", "Buffer", "Module", "Sequential", "Concat", "Conv2d", "BatchNorm1d",
           "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "ReLU",
           "Flatten", "Identity", "Dropout", "CrossEntropyLoss", "log_softmax", "manual_seed",
           "kernels", "gradcheck", "optim", "keep_freed_memory", "no_grad"]
