"""Forward and forward+backward time and GFLOP/s of each layer type at Inception shapes, float32.

    python -m benchmarks.layers                    # the representative shapes, batch 32
    python -m benchmarks.layers --all -b 8         # every distinct conv shape of both models
    python -m benchmarks.layers --compare-torch    # PyTorch on the same shapes, same run
    python -m benchmarks.layers --all --only 7x1/  # the rows whose label contains "7x1/"
    python -m benchmarks.layers --all -b 32 --compare-torch --rounds 3   # ours and torch's 3 times each

Conv2d GFLOP/s count 2*N*C_out*H_out*W_out*C_in*KH*KW per forward and three times that per
forward+backward (dx and dW each cost one more product of the same size). PyTorch times each
layer in a process of its own, right after ours (benchmarks/torch_side.py), with the same
class, arguments and input shape.
"""
import argparse

import numpy as np

import nn

from .common import have_torch, header, median_time, ratio_line, torch_job

# (C_in, H, C_out, kernel, stride, padding, batch): the shapes issue #2 names, plus the V3 stem
REPRESENTATIVE = [
    (64, 28, 96, (3, 3), 1, (1, 1), 32),       # V2 inception 3a: 3x3 64->96 at 28x28
    (576, 14, 128, (1, 1), 1, (0, 0), 32),     # V2 inception 4a: 1x1 576->128 at 14x14
    (128, 17, 128, (1, 7), 1, (0, 3), 32),     # V3 figure 6: 1x7 128->128 at 17x17
    (128, 17, 128, (7, 1), 1, (3, 0), 32),
    (3, 224, 64, (7, 7), 2, (3, 3), 32),       # V2 stem: 7x7/2 at 224
    (32, 149, 32, (3, 3), 1, (0, 0), 8),       # V3 stem: 3x3 32->32 at 149
]


def conv_shapes_of_models(batch):
    """Every distinct conv geometry of both models at their seed input sizes."""
    import models
    from models.summary import trace
    shapes = []
    for name, size in (("inception_v2", 224), ("inception_v3", 299)):
        model = models.build(name, width=1.0)
        for event, _, m, out in trace(model, np.zeros((2, 3, size, size), np.float32)):
            if event == "exit" and isinstance(m, nn.Conv2d):
                H_in = m.cache["x"].shape[2]
                W_in = m.cache["x"].shape[3]
                shape = (m.in_channels, (H_in, W_in), m.out_channels, m.kernel_size, m.stride[0],
                         m.padding, batch)
                if shape not in shapes:
                    shapes.append(shape)
    return shapes


def forward_backward(layer, x, g):
    """One forward and one backward pass (what a training step does with a layer)."""
    layer(x)
    return layer.backward(g)


def conv_flops(N, C_in, H_out, W_out, C_out, kernel):
    return 2 * N * C_out * H_out * W_out * C_in * kernel[0] * kernel[1]


def bench_layer(cls, args, kwargs, shape, repeat, compare_torch, rounds=1):
    """Forward and forward+backward ms of nn.<cls>(*args, **kwargs), and torch.nn.<cls>'s if asked.

    With torch, ours and theirs take turns `rounds` times and each figure is the median of its
    rounds: a slow spell of the machine then moves one round, not the row's ratio."""
    rng = np.random.default_rng(0)
    layer = getattr(nn, cls)(*args, **kwargs)
    x = rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal(layer(x).shape, dtype=np.float32)
    measured = []
    for _ in range(rounds if compare_torch else 1):
        row = {"fwd_ms": 1e3 * median_time(lambda: layer(x), repeat),
               "fwdbwd_ms": 1e3 * median_time(lambda: forward_backward(layer, x, g), repeat)}
        if compare_torch:
            theirs = torch_job("layer", cls=cls, args=args, kwargs=kwargs, shape=shape, repeat=repeat)
            row |= {"torch_fwd_ms": theirs["fwd_ms"], "torch_fwdbwd_ms": theirs["fwdbwd_ms"]}
        measured.append(row)
    return {key: float(np.median([row[key] for row in measured])) for key in measured[0]}


def bench_conv(shape, repeat, compare_torch, rounds=1):
    C_in, H, C_out, kernel, stride, padding, N = shape
    H, W = (H, H) if isinstance(H, int) else H
    row = bench_layer("Conv2d", [C_in, C_out, list(kernel)], {"stride": stride, "padding": list(padding),
                      "bias": False}, [N, C_in, H, W], repeat, compare_torch, rounds)
    out = nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding).output_size(H, W)
    flops = conv_flops(N, C_in, *out, C_out, kernel)
    return row | {"fwd_gflops": flops / row["fwd_ms"] / 1e6, "fwdbwd_gflops": 3 * flops / row["fwdbwd_ms"] / 1e6}


# (label, class in nn and torch.nn, its arguments, input shape): typical Inception shapes, batch 32
OTHER_LAYERS = [
    ("BatchNorm2d 192@28", "BatchNorm2d", [192], [32, 192, 28, 28]),
    ("ReLU 192@28", "ReLU", [], [32, 192, 28, 28]),
    ("MaxPool2d 3/2/1 64@112", "MaxPool2d", [3, 2, 1], [32, 64, 112, 112]),
    ("AvgPool2d 3/1/1 256@28", "AvgPool2d", [3, 1, 1], [32, 256, 28, 28]),
    ("global AvgPool 1024@7", "AdaptiveAvgPool2d", [1], [32, 1024, 7, 7]),
]


def bench_concat(repeat, N=32):
    """Concat has no torch.nn twin (torch.cat is a function): ours only."""
    rng = np.random.default_rng(0)
    layer = nn.Concat(*[nn.Identity() for _ in range(4)])
    x = rng.standard_normal((N, 64, 28, 28), dtype=np.float32)
    g = rng.standard_normal(layer(x).shape, dtype=np.float32)
    return {"fwd_ms": 1e3 * median_time(lambda: layer(x), repeat),
            "fwdbwd_ms": 1e3 * median_time(lambda: forward_backward(layer, x, g), repeat)}


def describe(shape):
    C_in, H, C_out, kernel, stride, padding, N = shape
    H = H if isinstance(H, int) else H[0]
    return f"{kernel[0]}x{kernel[1]}/{stride} {C_in}->{C_out} @{H} N={N}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.layers", description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="every distinct conv shape of both models")
    p.add_argument("-b", "--batch-size", type=int, default=None,
                   help="batch for every shape (default: 32, or each shape's own)")
    p.add_argument("--only", metavar="TEXT", default="",
                   help="only the conv shapes whose row label contains TEXT (e.g. '7x1/', '@17')")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--rounds", type=int, default=1,
                   help="with --compare-torch: ours and PyTorch's take turns this many times per "
                        "row, and each figure is the median (steadier ratios, N times the run)")
    args = p.parse_args(argv)
    if args.compare_torch and not have_torch():
        p.error("--compare-torch needs torch (pip install torch==2.13.0)")
    header("Conv2d and friends, float32" + (", torch with its default threads" if args.compare_torch else ""))
    shapes = conv_shapes_of_models(args.batch_size or 8) if args.all else REPRESENTATIVE
    if args.batch_size:
        shapes = [s[:-1] + (args.batch_size,) for s in shapes]
    shapes = [s for s in shapes if args.only in describe(s)]
    ratios = []
    cols = f"{'conv':32s} {'fwd ms':>8s} {'GFLOP/s':>8s} {'f+b ms':>8s} {'GFLOP/s':>8s}"
    print(cols + ("  torch f+b ms  ratio" if args.compare_torch else ""))
    for shape in shapes:
        r = bench_conv(shape, args.repeat, args.compare_torch, args.rounds)
        line = (f"{describe(shape):32s} {r['fwd_ms']:8.1f} {r['fwd_gflops']:8.0f} {r['fwdbwd_ms']:8.1f} "
                f"{r['fwdbwd_gflops']:8.0f}")
        if args.compare_torch:
            ratio = r["torch_fwdbwd_ms"] / r["fwdbwd_ms"]
            ratios.append(ratio)
            line += f"  {r['torch_fwdbwd_ms']:11.1f}  {ratio:5.2f}"
        print(line, flush=True)
    print()
    print(f"{'layer':32s} {'fwd ms':>8s} {'f+b ms':>8s}" + ("  torch fwd / f+b ms" if args.compare_torch else ""))
    rows = [(label, bench_layer(cls, layer_args, {}, shape, args.repeat, args.compare_torch, args.rounds))
            for label, cls, layer_args, shape in OTHER_LAYERS]
    for label, r in rows + [("Concat 4 branches @28", bench_concat(args.repeat))]:
        line = f"{label:32s} {r['fwd_ms']:8.2f} {r['fwdbwd_ms']:8.2f}"
        if "torch_fwd_ms" in r:
            line += f"  {r['torch_fwd_ms']:8.2f} / {r['torch_fwdbwd_ms']:.2f}"
        print(line, flush=True)
    if args.compare_torch:
        print()
        print("conv forward+backward " + ratio_line(ratios))


if __name__ == "__main__":
    main()
