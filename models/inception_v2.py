"""Inception-V2 (Inception-BN; Ioffe & Szegedy 2015), exactly as docs/spec/inception_v2_summary.md.

224x224x3 input, 10 classes, every convolution Conv2d(bias=False) -> BatchNorm2d -> ReLU, two
auxiliary classifiers. Where the paper and the table disagree, the table wins (marked "table:").
"""
from collections import OrderedDict, namedtuple

import nn

from .blocks import InceptionBlock, InceptionNet, aux_head, chain, conv_bn_relu, scaled

# One row per block, columns as in the BN-Inception paper's table (Fig. 5 of the paper).
Row = namedtuple("Row", "c1x1 c3x3red c3x3 d3x3red d3x3 pool proj stride")
#             1x1  3x3red  3x3  d3x3red  d3x3   pool   proj  stride
BLOCKS = OrderedDict([
    ("3a", Row( 64,    64,   64,     64,   96, "avg",   32,    1)),
    ("3b", Row( 64,    64,   96,     64,   96, "avg",   64,    1)),
    ("3c", Row(  0,   128,  160,     64,   96, "max",    0,    2)),  # 0: branch absent, pool passes through
    ("4a", Row(224,    64,   96,     96,  128, "avg",  128,    1)),
    ("4b", Row(192,    96,  128,     96,  128, "avg",  128,    1)),
    ("4c", Row(160,   128,  160,    128,  160, "avg",  128,    1)),  # table: out 608 (paper says 576)
    ("4d", Row( 96,   128,  192,    160,  192, "avg",  128,    1)),  # table: out 608 (paper says 576)
    ("4e", Row(  0,   128,  192,    192,  256, "max",    0,    2)),  # table: out 1056 (paper says 1024)
    ("5a", Row(352,   192,  320,    160,  224, "avg",  128,    1)),
    ("5b", Row(352,   192,  320,    192,  224, "max",  128,    1)),
])
MIN_SIZE = 1  # every stride-2 layer is padded, so even a 1x1 input keeps 1x1 feature maps


def inception_block(c_in, row, width=1.0):
    """Branches run (and list their parameters) as 3x3, double 3x3, pool, 1x1; the output is
    concatenated as [1x1, 3x3, double 3x3, pool]. Stride-2 blocks put the stride on the last
    conv of each conv branch and on the pool. Returns the block and its output width."""
    s = row.stride
    branches = OrderedDict()
    branches["b3x3"], w3 = chain(c_in, [(row.c3x3red, 1, 1, 0), (row.c3x3, 3, s, 1)], width)
    branches["bdbl"], wd = chain(c_in, [(row.d3x3red, 1, 1, 0), (row.d3x3, 3, 1, 1),
                                        (row.d3x3, 3, s, 1)], width)
    pool = (nn.AvgPool2d(3, s, 1, count_include_pad=True) if row.pool == "avg"
            else nn.MaxPool2d(3, s, 1))
    proj = [(row.proj, 1, 1, 0)] if row.proj else []
    branches["pool"], wp = chain(c_in, proj, width, pool=pool)
    widths = [w3, wd, wp]
    if row.c1x1:
        branches["b1x1"], w1 = chain(c_in, [(row.c1x1, 1, 1, 0)], width)
        widths.append(w1)
    order = (["b1x1"] if row.c1x1 else []) + ["b3x3", "bdbl", "pool"]
    return InceptionBlock(branches, order=order), sum(widths)


class InceptionV2(InceptionNet):
    """Inception-BN for (N, 3, H, W) inputs; train mode returns (logits, aux_1, aux_2)."""

    STAGES = (
        "conv1",          # (N, 64, 112, 112)
        "pool1",          # (N, 64, 56, 56)
        "conv2",          # (N, 192, 56, 56)
        "pool2",          # (N, 192, 28, 28)
        "inception_3a",   # (N, 256, 28, 28)
        "inception_3b",   # (N, 320, 28, 28)
        "inception_3c",   # (N, 576, 14, 14)
        "inception_4a",   # (N, 576, 14, 14)   aux_1 reads this
        "inception_4b",   # (N, 576, 14, 14)
        "inception_4c",   # (N, 608, 14, 14)
        "inception_4d",   # (N, 608, 14, 14)   aux_2 reads this
        "inception_4e",   # (N, 1056, 7, 7)
        "inception_5a",   # (N, 1024, 7, 7)
        "inception_5b",   # (N, 1024, 7, 7)
        "avgpool",        # (N, 1024, 1, 1)
        "flatten",        # (N, 1024)
        "fc",             # (N, 10)
    )                     # shapes at 224x224
    TAPS = {"inception_4a": "aux_1", "inception_4d": "aux_2"}   # aux outputs: (N, 10) each
    MIN_SIZE = MIN_SIZE
    CLASSIFIERS = ("fc", "aux_1.fc2", "aux_2.fc2")   # the layers with one output per class

    def __init__(self, num_classes=10, in_channels=3, width=1.0, aux_dropout=0.7):
        super().__init__(num_classes, in_channels, width)
        c = lambda n: scaled(n, width)
        self.conv1 = conv_bn_relu(in_channels, c(64), 7, stride=2, padding=3)
        self.pool1 = nn.MaxPool2d(3, 2, 1)
        self.conv2 = conv_bn_relu(c(64), c(192), 3, padding=1)  # table: no 1x1 reduce before it
        self.pool2 = nn.MaxPool2d(3, 2, 1)
        c_in = c(192)
        for name, row in BLOCKS.items():
            block, c_in = inception_block(c_in, row, width)
            setattr(self, f"inception_{name}", block)
            if f"inception_{name}" in self.TAPS:
                setattr(self, self.TAPS[f"inception_{name}"],
                        aux_head(c_in, 4, num_classes, width, hidden_relu_dropout=aux_dropout))
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # global: 7x7 at 224
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)

    def backward(self, dlogits, daux_1=None, daux_2=None):
        """The trunk in reverse; where an aux head taps it, its gradient joins (InceptionNet)."""
        return self.backward_through_trunk(dlogits, daux_1, daux_2)


def inception_v2(num_classes=10, **kwargs):
    """Inception-V2 (Inception-BN) as in the seed's table; kwargs: in_channels, width, aux_dropout."""
    return InceptionV2(num_classes=num_classes, **kwargs)
