"""Data-parallel training on this machine: what one Allreduce of the gradients costs, and a
training step on 1 process x all cores against N ranks x cores/N (models/distributed.py).

    python -m benchmarks.distributed                 # needs mpi4py and mpiexec: pip install -e ".[mpi]"
    python -m benchmarks.distributed --ranks 2 --config inception_v3:75:32 --rounds 3

Allreduce: the float32 gradient buffer of each model (4 bytes x its parameters), summed over
the ranks in place by MPI's Allreduce, and by --fixed-reduction-order's Allgather and sum in rank
order; GradientSum: the whole per-step call (the Allreduce and the division by the ranks). Training step:
train_step with the whole batch on one process, then with batch/N images on each of N ranks
(with and without --sync-bn); the processes take turns --rounds times, each figure the median of
the rounds, each round's the median of --repeat steps after --warmup.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from .common import header, median_time

CONFIGS = ["inception_v2:32:32", "inception_v3:75:32"]


def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


def run_child(ranks, args):
    """Rank 0's JSON line of `python -m benchmarks.distributed --child ...` on `ranks` ranks."""
    command = [sys.executable, "-m", "benchmarks.distributed", "--child", *args]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_allreduce(repeat):
    import models
    from models.distributed import GradientSum, connect
    world = connect(True)
    figures = {}
    for name in models.MODELS:
        model = models.build(name)
        grad_sum = GradientSum(model.parameters(), world)
        flat = grad_sum.flat
        flat[...] = 1e-3
        allreduce = median_time(lambda: world.sum(flat, in_place=True), repeat, warmup=2)
        world.fixed_order = True
        fixed = median_time(lambda: world.sum(flat, in_place=True), repeat, warmup=2)
        world.fixed_order = False
        whole = median_time(grad_sum, repeat, warmup=2)
        figures[name] = {"params": int(flat.size), "mb": flat.nbytes / 1e6, "allreduce_s": allreduce,
                         "fixed_s": fixed, "gradient_sum_s": whole}
    return world, figures


def measure_step(config, sync_bn, repeat, warmup):
    import numpy as np

    import models
    import nn
    from models.distributed import GradientSum, connect
    from models.train import train_step
    world = connect(True)
    name, size, batch = config.split(":")
    size, batch = int(size), int(batch)
    nn.manual_seed(0)
    model = models.build(name)
    model.input_grad = False
    if sync_bn and world.size > 1:
        nn.convert_sync_batchnorm(model, world.sum)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    part = slice(world.rank * batch // world.size, (world.rank + 1) * batch // world.size)
    opt = nn.optim.AdamW(model.parameters(), lr=1e-4)
    criteria = [nn.CrossEntropyLoss() for _ in range(3)]
    grad_sum = GradientSum(model.parameters(), world) if world.size > 1 else None
    step = median_time(lambda: train_step(model, x[part], y[part], criteria, 0.3, opt, None, world, grad_sum),
                       repeat, warmup)
    return world, {"step_s": world.sum(np.array([step]))[0] / world.size}


def child(args):
    if args.child == "allreduce":
        world, figures = measure_allreduce(args.repeat)
    else:
        world, figures = measure_step(args.config[0], args.sync_bn, args.repeat, args.warmup)
    if world.is_root:
        print(json.dumps(figures))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--config", action="append", help="model:size:batch (repeatable)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if mpiexec() is None:
        p.error('needs mpi4py and mpiexec: pip install -e ".[mpi]"')
    header(f"Data-parallel training: {args.ranks} ranks on {os.cpu_count()} cores")
    print(f"\nAllreduce of the float32 gradients over {args.ranks} ranks (median of {args.repeat}):")
    print(f"{'model':14s} {'parameters':>11s} {'MB':>6s} {'Allreduce ms':>13s} {'GB/s':>6s} "
          f"{'fixed order ms':>15s} {'GradientSum ms':>15s}")
    for name, f in run_child(args.ranks, ["allreduce", "--repeat", str(args.repeat)]).items():
        print(f"{name:14s} {f['params']:11,d} {f['mb']:6.1f} {1e3 * f['allreduce_s']:13.1f} "
              f"{f['mb'] / 1e3 / f['allreduce_s']:6.2f} {1e3 * f['fixed_s']:15.1f} {1e3 * f['gradient_sum_s']:15.1f}")
    print(f"\nTraining step, whole batch (median of {args.rounds} rounds of {args.repeat} steps):")
    print(f"{'config':22s} {'1 x all cores s':>16s} {f'{args.ranks} ranks s':>11s} {'speed-up':>9s} "
          f"{'--sync-bn s':>12s} {'speed-up':>9s}")
    for config in args.config or CONFIGS:
        timed = {"one": [], "ranks": [], "sync": []}
        common = ["--config", config, "--repeat", str(args.repeat), "--warmup", str(args.warmup)]
        for _ in range(args.rounds):
            timed["one"].append(run_child(1, ["step", *common])["step_s"])
            timed["ranks"].append(run_child(args.ranks, ["step", *common])["step_s"])
            timed["sync"].append(run_child(args.ranks, ["step", "--sync-bn", *common])["step_s"])
        one, ranks, sync = (statistics.median(timed[k]) for k in ("one", "ranks", "sync"))
        print(f"{config:22s} {one:16.3f} {ranks:11.3f} {one / ranks:9.2f} {sync:12.3f} {one / sync:9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
