"""Forward and forward+backward time and GFLOP/s of each layer type at Inception shapes, float32.

    python -m benchmarks.layers                    # the representative shapes, batch 32
    python -m benchmarks.layers --all -b 8         # every distinct conv shape of both models
    python -m benchmarks.layers --compare-torch    # PyTorch on the same shapes, same run

Conv2d GFLOP/s count 2*N*C_out*H_out*W_out*C_in*KH*KW per forward and three times that per
forward+backward (dx and dW each cost one more product of the same size).
"""
import argparse

import nn  # first: sets OPENBLAS_THREAD_TIMEOUT before NumPy loads
import numpy as np

from .common import have_torch, header, import_torch, median_time, ratio_line

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


def bench_conv(shape, torch, repeat):
    C_in, H, C_out, kernel, stride, padding, N = shape
    H, W = (H, H) if isinstance(H, int) else H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C_in, H, W), dtype=np.float32)
    conv = nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False)
    y = conv(x)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    flops = conv_flops(N, C_in, y.shape[2], y.shape[3], C_out, kernel)
    fwd = median_time(lambda: conv(x), repeat)
    both = median_time(lambda: forward_backward(conv, x, g), repeat)
    row = {"fwd_ms": 1e3 * fwd, "fwdbwd_ms": 1e3 * both, "fwd_gflops": flops / fwd / 1e9,
           "fwdbwd_gflops": 3 * flops / both / 1e9}
    if torch is not None:
        tconv = torch.nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False)
        tx = torch.from_numpy(x).requires_grad_(True)
        tg = torch.from_numpy(g)

        def torch_both():
            tx.grad = None
            tconv.weight.grad = None
            tconv(tx).backward(tg)
        with torch.no_grad():
            row["torch_fwd_ms"] = 1e3 * median_time(lambda: tconv(tx), repeat)
        row["torch_fwdbwd_ms"] = 1e3 * median_time(torch_both, repeat)
    return row


def bench_other(torch, repeat, N=32):
    """BN, ReLU, pools, concat at typical Inception shapes."""
    rng = np.random.default_rng(0)
    cases = [
        ("BatchNorm2d 192@28", nn.BatchNorm2d(192), (N, 192, 28, 28),
         lambda t: t.nn.BatchNorm2d(192)),
        ("ReLU 192@28", nn.ReLU(), (N, 192, 28, 28), lambda t: t.nn.ReLU()),
        ("MaxPool2d 3/2/1 64@112", nn.MaxPool2d(3, 2, 1), (N, 64, 112, 112),
         lambda t: t.nn.MaxPool2d(3, 2, 1)),
        ("AvgPool2d 3/1/1 256@28", nn.AvgPool2d(3, 1, 1), (N, 256, 28, 28),
         lambda t: t.nn.AvgPool2d(3, 1, 1)),
        ("global AvgPool 1024@7", nn.AdaptiveAvgPool2d(1), (N, 1024, 7, 7),
         lambda t: t.nn.AdaptiveAvgPool2d(1)),
        ("Concat 4 branches @28", nn.Concat(*[nn.Identity() for _ in range(4)]), (N, 64, 28, 28), None),
    ]
    rows = []
    for name, layer, shape, make_torch in cases:
        x = rng.standard_normal(shape, dtype=np.float32)
        y = layer(x)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        row = {"name": name, "fwd_ms": 1e3 * median_time(lambda: layer(x), repeat),
               "fwdbwd_ms": 1e3 * median_time(lambda: forward_backward(layer, x, g), repeat)}
        if torch is not None and make_torch is not None:
            tl = make_torch(torch)
            tx = torch.from_numpy(x).requires_grad_(True)
            tg = torch.from_numpy(g)

            def torch_both():
                tx.grad = None
                tl(tx).backward(tg)
            with torch.no_grad():
                row["torch_fwd_ms"] = 1e3 * median_time(lambda: tl(tx), repeat)
            row["torch_fwdbwd_ms"] = 1e3 * median_time(torch_both, repeat)
        rows.append(row)
    return rows


def describe(shape):
    C_in, H, C_out, kernel, stride, padding, N = shape
    H = H if isinstance(H, int) else H[0]
    return f"{kernel[0]}x{kernel[1]}/{stride} {C_in}->{C_out} @{H} N={N}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.layers", description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="every distinct conv shape of both models")
    p.add_argument("-b", "--batch-size", type=int, default=None,
                   help="batch for every shape (default: 32, or each shape's own)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--compare-torch", action="store_true")
    args = p.parse_args(argv)
    nn.keep_freed_memory()  # as the training command does (torch, in this same process, gains too)
    torch = None
    if args.compare_torch:
        if not have_torch():
            p.error("--compare-torch needs torch (pip install torch==2.13.0)")
        torch = import_torch()
    header("Conv2d and friends, float32" + (f", torch {torch.__version__} (2 threads)" if torch else ""))
    shapes = conv_shapes_of_models(args.batch_size or 8) if args.all else REPRESENTATIVE
    if args.batch_size:
        shapes = [s[:-1] + (args.batch_size,) for s in shapes]
    ratios = []
    cols = f"{'conv':32s} {'fwd ms':>8s} {'GFLOP/s':>8s} {'f+b ms':>8s} {'GFLOP/s':>8s}"
    print(cols + ("  torch f+b ms  ratio" if torch else ""))
    for shape in shapes:
        r = bench_conv(shape, torch, args.repeat)
        line = (f"{describe(shape):32s} {r['fwd_ms']:8.1f} {r['fwd_gflops']:8.0f} {r['fwdbwd_ms']:8.1f} "
                f"{r['fwdbwd_gflops']:8.0f}")
        if torch:
            ratio = r["torch_fwdbwd_ms"] / r["fwdbwd_ms"]
            ratios.append(ratio)
            line += f"  {r['torch_fwdbwd_ms']:11.1f}  {ratio:5.2f}"
        print(line, flush=True)
    print()
    print(f"{'layer':32s} {'fwd ms':>8s} {'f+b ms':>8s}" + ("  torch fwd / f+b ms" if torch else ""))
    for r in bench_other(torch, args.repeat):
        line = f"{r['name']:32s} {r['fwd_ms']:8.2f} {r['fwdbwd_ms']:8.2f}"
        if "torch_fwd_ms" in r:
            line += f"  {r['torch_fwd_ms']:8.2f} / {r['torch_fwdbwd_ms']:.2f}"
        print(line, flush=True)
    if torch:
        print()
        print("conv forward+backward " + ratio_line(ratios))


if __name__ == "__main__":
    main()
