"""nn: an autograd-free layer stack, every forward and backward written out by hand.

    import numpy as np
    import nn
    conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    bn, relu = nn.BatchNorm2d(64), nn.ReLU()
    y = relu(bn(conv(x)))
    dx = conv.backward(bn.backward(relu.backward(dy)))   # gradients accumulate into p.grad
"""
from .module import Parameter, Buffer, Module, Sequential, Concat, no_grad
from .conv import Conv2d
from .batchnorm import BatchNorm1d, BatchNorm2d, SyncBatchNorm2d, convert_sync_batchnorm
from .pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from .linear import Linear
from .activation import ReLU, Flatten, Identity
from .dropout import Dropout
from .loss import CrossEntropyLoss, log_softmax
from .init import manual_seed
from . import kernels, gradcheck, optim, runtime

__all__ = ["Parameter", "Buffer", "Module", "Sequential", "Concat", "Conv2d", "BatchNorm1d",
           "BatchNorm2d", "SyncBatchNorm2d", "convert_sync_batchnorm", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "ReLU",
           "Flatten", "Identity", "Dropout", "CrossEntropyLoss", "log_softmax", "manual_seed",
           "kernels", "gradcheck", "optim", "runtime", "no_grad"]
