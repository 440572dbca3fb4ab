"""One full training step (forward with aux heads, loss, backward, AdamW) of each model, float32.

    python -m benchmarks.train_step                         # the six configurations below
    python -m benchmarks.train_step --compare-torch         # PyTorch on the same network, same run
    python -m benchmarks.train_step --config inception_v3:299:8 --compare-torch --rounds 3

Each configuration runs in fresh subprocesses, so that its peak RSS is its own: ours as the
training command runs it, PyTorch's as a plain PyTorch script runs it (the user's environment,
torch's default threads and allocator: benchmarks/torch_side.py). With --compare-torch the two
take turns --rounds times; each figure is the median of the rounds, and each round's is the
median of --repeat steps after --warmup steps. GFLOP/s count 3 x 2 x the multiply-adds of the
forward pass (backward costs about twice the forward); % GEMM is against numpy's float32 GEMM
rate measured in the same run. Eval images/s: eval-mode forward passes under nn.no_grad().
"""
import argparse
import json
import statistics

from .common import child_json, have_torch, header, ratio_line, torch_job

# model:image size:batch. The quick preset's configuration, the seed's (V3 at 299, batch 32), and
# four between them.
CONFIGS = ["inception_v2:32:32", "inception_v2:96:32", "inception_v2:224:8", "inception_v3:75:32",
           "inception_v3:299:8", "inception_v3:299:32"]


def measure_ours(model_name, size, batch, repeat, warmup):
    import nn
    import numpy as np

    import models
    from models.summary import summary_rows
    from models.train import train_step
    from nn import optim

    from .common import median_time, peak_rss_mb
    nn.manual_seed(0)
    model = models.build(model_name)
    model.input_grad = False   # as the training command (and PyTorch, for images that need no grad)
    _, mult_adds = summary_rows(model, (3, size, size))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    opt = optim.AdamW(model.parameters(), lr=1e-4)
    criteria = [nn.CrossEntropyLoss(label_smoothing=1e-4) for _ in range(3)]
    step = median_time(lambda: train_step(model, x, y, criteria, 0.3, opt, None), repeat, warmup)
    model.eval()
    with nn.no_grad():
        evaluation = median_time(lambda: model(x), repeat)
    return {"step_s": step, "eval_s": evaluation, "mult_adds": mult_adds, "rss_mb": peak_rss_mb()}


def median_of(rounds, key):
    return statistics.median(r[key] for r in rounds)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", help="model:size:batch (repeatable)")
    p.add_argument("--repeat", type=int, default=4, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=2, help="with --compare-torch: turns each")
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        name, size, batch = args.child.split(":")
        print(json.dumps(measure_ours(name, int(size), int(batch), args.repeat, args.warmup)))
        return
    if args.compare_torch and not have_torch():
        p.error("--compare-torch needs torch (pip install torch==2.13.0)")
    peak = header("Training step: forward (with aux heads), loss, backward, AdamW; float32")
    print(f"{'config':22s} {'img/s':>7s} {'GFLOP/s':>8s} {'% GEMM':>7s} {'peak MB':>8s} {'eval img/s':>10s}"
          + ("   torch img/s  peak MB  eval img/s  ratio  mem ratio" if args.compare_torch else ""))
    ratios = []
    for config in args.config or CONFIGS:
        name, size, batch = config.split(":")
        batch = int(batch)
        ours, theirs = [], []
        for _ in range(args.rounds if args.compare_torch else 1):
            ours.append(child_json(["benchmarks.train_step", "--child", config, "--repeat", str(args.repeat),
                                    "--warmup", str(args.warmup)], config))
            if args.compare_torch:
                theirs.append(torch_job("train_step", model_name=name, size=int(size), batch=batch,
                                        repeat=args.repeat, warmup=args.warmup))
        step_s, rss = median_of(ours, "step_s"), median_of(ours, "rss_mb")
        ips = batch / step_s
        gflops = 3 * 2 * ours[0]["mult_adds"] * batch / step_s / 1e9
        line = (f"{config:22s} {ips:7.1f} {gflops:8.0f} {100 * gflops / peak:6.0f}% {rss:8.0f} "
                f"{batch / median_of(ours, 'eval_s'):10.1f}")
        if args.compare_torch:
            tips, trss = batch / median_of(theirs, "step_s"), median_of(theirs, "rss_mb")
            ratios.append(ips / tips)
            line += (f"   {tips:11.1f} {trss:8.0f} {batch / median_of(theirs, 'eval_s'):11.1f} "
                     f"{ips / tips:6.2f} {rss / trss:10.2f}")
        print(line, flush=True)
    if args.compare_torch:
        print(f"\n(PyTorch {theirs[0]['threads']} threads; {args.rounds} rounds each, medians)")
        print("training step " + ratio_line(ratios))


if __name__ == "__main__":
    main()
