"""Inception-V3 (Szegedy et al. 2016), exactly as docs/spec/inception_v3_summary.md.

299x299x3 input, 10 classes, every convolution Conv2d(bias=False) -> BatchNorm2d -> ReLU, one
auxiliary classifier on the 17x17 grid. The paper gives no branch widths: the widths below are
those of the summary table. Where the table departs from the paper, the line says "table:".
"""
from collections import OrderedDict

import numpy as np

import nn

from .blocks import InceptionNet, aux_head, chain, conv_bn_relu, scaled

# Figure-5 blocks (35x35): the width of the last 1x1 branch.
FIG5 = OrderedDict([("5a", 32), ("5b", 64), ("5c", 64)])
# Figure-6 blocks (17x17, factorised 7x7): the width c of the 1x7/7x1 chains.
FIG6 = OrderedDict([("6a", 128), ("6b", 144), ("6c", 160), ("6d", 176), ("6e", 192)])  # table headings: 6a 6b 6c 6c 6d
# Figure-7 blocks (8x8, expanded filter bank): the width c of each 1x3/3x1 output.
FIG7 = OrderedDict([("7a", 208), ("7b", 256)])
# Grid reductions: (a, b) = widths of the [1x1, 3x3, 3x3/2] and the [1x1, 3x3/2] branches.
REDUCTION_1, REDUCTION_2 = (384, 96), (384, 128)
MIN_SIZE = 75  # the smallest input whose 8x8 grid is still at least 1x1 (see the stem below)


def fig5_block(c_in, c_last, width):
    """[1x1 64, 3x3 64, 3x3 64], [1x1 64, 3x3 64], [max pool 3/1/1, 1x1 96], [1x1 c_last].
    table: the paper's 5x5 branch is a 3x3 here, and its pool branch is a max pool."""
    b = OrderedDict()
    b["bdbl"], w1 = chain(c_in, [(64, 1, 1, 0), (64, 3, 1, 1), (64, 3, 1, 1)], width)
    b["b3x3"], w2 = chain(c_in, [(64, 1, 1, 0), (64, 3, 1, 1)], width)
    b["pool"], w3 = chain(c_in, [(96, 1, 1, 0)], width, pool=nn.MaxPool2d(3, 1, 1))
    b["b1x1"], w4 = chain(c_in, [(c_last, 1, 1, 0)], width)
    return nn.Concat(b), w1 + w2 + w3 + w4


def grid_reduction(c_in, a, b, width):
    """[1x1 a, 3x3 a pad 1, 3x3/2 a valid], [1x1 b, 3x3/2 b valid], [max pool 3x3/2 valid]."""
    br = OrderedDict()
    br["bdbl"], w1 = chain(c_in, [(a, 1, 1, 0), (a, 3, 1, 1), (a, 3, 2, 0)], width)
    br["b3x3"], w2 = chain(c_in, [(b, 1, 1, 0), (b, 3, 2, 0)], width)
    br["pool"] = nn.MaxPool2d(3, 2)
    return nn.Concat(br), w1 + w2 + c_in


def fig6_block(c_in, c, width):
    """[1x1 c, 1x7 c, 7x1 c, 1x7 c, 7x1 192], [1x1 c, 1x7 c, 7x1 192], [max pool, 1x1 192], [1x1 192]."""
    b = OrderedDict()
    b["b7x7dbl"], w1 = chain(c_in, [(c, 1, 1, 0), (c, (1, 7), 1, (0, 3)), (c, (7, 1), 1, (3, 0)),
                                    (c, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0))], width)
    b["b7x7"], w2 = chain(c_in, [(c, 1, 1, 0), (c, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0))], width)
    b["pool"], w3 = chain(c_in, [(192, 1, 1, 0)], width, pool=nn.MaxPool2d(3, 1, 1))
    b["b1x1"], w4 = chain(c_in, [(192, 1, 1, 0)], width)
    return nn.Concat(b), w1 + w2 + w3 + w4


class ExpandedBlock(nn.Module):
    """Figure 7: two trunks whose outputs each fork into a 1x3 and a 3x1 convolution.

    Runs (and lists its parameters) as in the table: trunk A = [1x1 c, 3x3 c pad 1], trunk
    B = [1x1 c], then A->1x3, A->3x1, B->1x3, B->3x1, [max pool 3/1/1, 1x1 2c], [1x1 2c];
    output [A1x3, A3x1, B1x3, B3x1, pool, 1x1]. Each trunk feeds two convolutions, so in backward
    each trunk receives the sum of their input gradients.
    """

    def __init__(self, c_in, c, width):
        super().__init__()
        self.trunk_a, wa = chain(c_in, [(c, 1, 1, 0), (c, 3, 1, 1)], width)
        self.trunk_b, wb = chain(c_in, [(c, 1, 1, 0)], width)
        self.a_1x3 = conv_bn_relu(wa, wa, (1, 3), padding=(0, 1))
        self.a_3x1 = conv_bn_relu(wa, wa, (3, 1), padding=(1, 0))
        self.b_1x3 = conv_bn_relu(wb, wb, (1, 3), padding=(0, 1))
        self.b_3x1 = conv_bn_relu(wb, wb, (3, 1), padding=(1, 0))
        self.pool, wp = chain(c_in, [(2 * c, 1, 1, 0)], width, pool=nn.MaxPool2d(3, 1, 1))
        self.b1x1, w1 = chain(c_in, [(2 * c, 1, 1, 0)], width)
        self.out_channels = 2 * wa + 2 * wb + wp + w1

    def forward(self, x):
        a = self.trunk_a(x)
        b = self.trunk_b(x)
        outs = [self.a_1x3(a), self.a_3x1(a), self.b_1x3(b), self.b_3x1(b), self.pool(x), self.b1x1(x)]
        self.cache = {"widths": [o.shape[1] for o in outs]}
        return np.concatenate(outs, axis=1)

    def backward(self, dout):
        widths = self.saved()["widths"]
        d = [np.ascontiguousarray(p) for p in np.split(dout, np.cumsum(widths)[:-1], axis=1)]
        dx = self.b1x1.backward(d[5]) + self.pool.backward(d[4])
        db = self.b_3x1.backward(d[3]) + self.b_1x3.backward(d[2])
        da = self.a_3x1.backward(d[1]) + self.a_1x3.backward(d[0])
        return dx + self.trunk_b.backward(db) + self.trunk_a.backward(da)


class InceptionV3(InceptionNet):
    """Inception-V3 for (N, 3, H, W) inputs, H, W >= 75; train mode returns (logits, aux)."""

    STAGES = (
        "conv1",          # (N, 32, 149, 149)
        "conv2",          # (N, 32, 147, 147)
        "conv3",          # (N, 64, 147, 147)
        "pool1",          # (N, 64, 73, 73)
        "conv4",          # (N, 80, 71, 71)
        "conv5",          # (N, 192, 35, 35)
        "inception_5a",   # (N, 256, 35, 35)
        "inception_5b",   # (N, 288, 35, 35)
        "inception_5c",   # (N, 288, 35, 35)
        "reduction_1",    # (N, 768, 17, 17)
        "inception_6a",   # (N, 768, 17, 17)
        "inception_6b",   # (N, 768, 17, 17)
        "inception_6c",   # (N, 768, 17, 17)
        "inception_6d",   # (N, 768, 17, 17)
        "inception_6e",   # (N, 768, 17, 17)   aux reads this
        "reduction_2",    # (N, 1280, 8, 8)
        "inception_7a",   # (N, 1664, 8, 8)
        "inception_7b",   # (N, 2048, 8, 8)
        "avgpool",        # (N, 2048, 1, 1)
        "flatten",        # (N, 2048)
        "fc",             # (N, 10)
    )                     # shapes at 299x299
    TAPS = {"inception_6e": "aux"}   # aux output: (N, 10)
    MIN_SIZE = MIN_SIZE
    CLASSIFIERS = ("fc", "aux.fc2")   # the layers with one output per class

    def __init__(self, num_classes=10, in_channels=3, width=1.0):
        super().__init__(num_classes, in_channels, width)
        c = lambda n: scaled(n, width)
        self.conv1 = conv_bn_relu(in_channels, c(32), 3, stride=2)
        self.conv2 = conv_bn_relu(c(32), c(32), 3)
        self.conv3 = conv_bn_relu(c(32), c(64), 3, padding=1)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv4 = conv_bn_relu(c(64), c(80), 3)    # table: 3x3 80 (the paper's stem: 1x1 80, 3x3 192)
        self.conv5 = conv_bn_relu(c(80), c(192), 3, stride=2)  # table: stride 2 here, no second max pool
        c_in = c(192)
        for name, c_last in FIG5.items():
            block, c_in = fig5_block(c_in, c_last, width)
            setattr(self, f"inception_{name}", block)
        self.reduction_1, c_in = grid_reduction(c_in, *REDUCTION_1, width)
        for name, c7 in FIG6.items():
            block, c_in = fig6_block(c_in, c7, width)
            setattr(self, f"inception_{name}", block)
        self.aux = aux_head(c_in, 5, num_classes, width)  # table: no ReLU between the two Linears
        self.reduction_2, c_in = grid_reduction(c_in, *REDUCTION_2, width)
        for name, c3 in FIG7.items():
            block = ExpandedBlock(c_in, c3, width)
            c_in = block.out_channels
            setattr(self, f"inception_{name}", block)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)

    def backward(self, dlogits, daux=None):
        """The trunk in reverse; where the aux head taps it, its gradient joins (InceptionNet)."""
        return self.backward_through_trunk(dlogits, daux)


def inception_v3(num_classes=10, **kwargs):
    """Inception-V3 as in the seed's table; kwargs: in_channels, width."""
    return InceptionV3(num_classes=num_classes, **kwargs)
