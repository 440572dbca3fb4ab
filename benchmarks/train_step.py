"""One full training step (forward with aux heads, loss, backward, AdamW) of each model, float32.

    python -m benchmarks.train_step                         # V2 96/b32, V2 224/b8, V3 75/b32, V3 299/b8
    python -m benchmarks.train_step --compare-torch         # PyTorch on the same network, same run
    python -m benchmarks.train_step --config inception_v3:299:8

Each configuration runs in a fresh subprocess, so its peak RSS is its own; PyTorch's loads torch
before nn, so it keeps its own thread settings (benchmarks/torch_side.py). Both frameworks run
with nn.keep_freed_memory() (glibc keeps freed memory for reuse), as the training command does;
PyTorch gains even more from it than we do. --torch-default-allocator times PyTorch as a plain
PyTorch script runs, without it. Images/s are the
median of --repeat steps after one warm-up step; GFLOP/s count 3 x 2 x the multiply-adds of the
forward pass (backward costs about twice the forward); % of peak is against numpy's float32 GEMM
rate measured in the same run. Eval images/s: eval-mode forward passes.
"""
import argparse
import json

from .common import child_json, have_torch, header, ratio_line, torch_job

CONFIGS = ["inception_v2:96:32", "inception_v2:224:8", "inception_v3:75:32", "inception_v3:299:8"]


def measure_ours(model_name, size, batch, repeat):
    import nn
    import numpy as np

    import models
    from models.summary import summary_rows
    from models.train import train_step
    from nn import optim

    from .common import median_time, peak_rss_mb
    nn.keep_freed_memory()  # as the training command does
    nn.manual_seed(0)
    model = models.build(model_name)
    _, mult_adds = summary_rows(model, (3, size, size))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    opt = optim.AdamW(model.parameters(), lr=1e-4)
    criteria = [nn.CrossEntropyLoss(label_smoothing=1e-4) for _ in range(3)]
    step = median_time(lambda: train_step(model, x, y, criteria, 0.3, opt, None), repeat)
    model.eval()
    with nn.no_grad():
        evaluation = median_time(lambda: model(x), repeat)
    return {"step_s": step, "eval_s": evaluation, "mult_adds": mult_adds, "rss_mb": peak_rss_mb()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", help="model:size:batch (repeatable)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--torch-default-allocator", action="store_true",
                   help="time PyTorch with glibc's default allocator settings")
    p.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        name, size, batch = args.child.split(":")
        print(json.dumps(measure_ours(name, int(size), int(batch), args.repeat)))
        return
    if args.compare_torch and not have_torch():
        p.error("--compare-torch needs torch (pip install torch==2.13.0)")
    peak = header("Training step: forward (with aux heads), loss, backward, AdamW; float32")
    print(f"{'config':22s} {'img/s':>7s} {'GFLOP/s':>8s} {'% GEMM':>7s} {'peak MB':>8s} {'eval img/s':>10s}"
          + ("   torch img/s  peak MB  eval img/s  ratio  mem ratio" if args.compare_torch else ""))
    ratios = []
    for config in args.config or CONFIGS:
        batch = int(config.split(":")[2])
        r = child_json(["benchmarks.train_step", "--child", config, "--repeat", str(args.repeat)], config)
        ips = batch / r["step_s"]
        gflops = 3 * 2 * r["mult_adds"] * batch / r["step_s"] / 1e9
        line = (f"{config:22s} {ips:7.1f} {gflops:8.0f} {100 * gflops / peak:6.0f}% {r['rss_mb']:8.0f} "
                f"{batch / r['eval_s']:10.1f}")
        if args.compare_torch:
            name, size, _ = config.split(":")
            t = torch_job("train_step", same_allocator=not args.torch_default_allocator,
                          model_name=name, size=int(size), batch=batch, repeat=args.repeat)
            tips = batch / t["step_s"]
            ratios.append(ips / tips)
            line += (f"   {tips:11.1f} {t['rss_mb']:8.0f} {batch / t['eval_s']:11.1f} {ips / tips:6.2f} "
                     f"{r['rss_mb'] / t['rss_mb']:10.2f}")
        print(line, flush=True)
    if args.compare_torch:
        print()
        print("training step " + ratio_line(ratios))


if __name__ == "__main__":
    main()
