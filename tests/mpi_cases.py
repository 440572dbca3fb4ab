"""What tests/test_distributed.py runs under `mpiexec -n 2 python tests/mpi_cases.py CASE ...`.

    gradients OUT.json   the reduced gradients and three Adam steps of two ranks against one
                         process, with and without --sync-bn; rank 0 writes the errors to OUT
    train ARGS...        python -m models.train ARGS, with every rank but 0 unable to write in
                         --output-dir; rank 1 (only) sent SIGINT after step $STOP_AFTER, or
                         out of memory after step $FAIL_AFTER
"""
import builtins
import io
import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nn  # noqa: E402
from models import build, distributed  # noqa: E402
from models import train as train_cli  # noqa: E402

BATCH = 16   # the whole batch: 8 images on each of the two ranks


def small_model(sync_world=None):
    """A narrow Inception-V2 in float64 (dropout off: the ranks would drop different units)."""
    nn.manual_seed(0)
    model = build("inception_v2", num_classes=10, width=0.1).double()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    if sync_world is not None:
        nn.convert_sync_batchnorm(model, sync_world.sum)
    return model


def step(model, x, y, world=train_cli.ALONE, steps=1):
    """`steps` Adam steps; returns each step's weights (copies)."""
    opt = nn.optim.Adam(model.parameters(), lr=1e-3)
    grad_sum = distributed.GradientSum(model.parameters(), world) if world.size > 1 else None
    criteria = [nn.CrossEntropyLoss() for _ in range(3)]
    weights = []
    for _ in range(steps):
        train_cli.train_step(model, x, y, criteria, 0.3, opt, None, world, grad_sum)
        weights.append([p.data.copy() for p in model.parameters()])
    return weights


def gradients(model, x, y, world=train_cli.ALONE):
    """The (reduced) gradients after one step of plain SGD with lr 0 (the weights stay put)."""
    opt = nn.optim.SGD(model.parameters(), lr=0.0)
    grad_sum = distributed.GradientSum(model.parameters(), world) if world.size > 1 else None
    train_cli.train_step(model, x, y, [nn.CrossEntropyLoss() for _ in range(3)], 0.3, opt, None, world, grad_sum)
    return [p.grad.copy() for p in model.parameters()]


def relative(a, b):
    """The largest, over the arrays, of |a - b| / |b| (Euclidean norms)."""
    return max(float(np.linalg.norm(p - q) / max(np.linalg.norm(q), 1e-300)) for p, q in zip(a, b))


def case_gradients(out):
    world = distributed.connect(True)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((BATCH, 3, 32, 32)), rng.integers(0, 10, BATCH)
    part = slice(world.rank * BATCH // 2, (world.rank + 1) * BATCH // 2)
    figures = {
        "sync": gradients(small_model(world), x[part], y[part], world),
        "plain": gradients(small_model(), x[part], y[part], world),
        "sync_steps": step(small_model(world), x[part], y[part], world, steps=3),
    }
    if world.is_root:
        halves = [gradients(small_model(), x[s], y[s]) for s in (slice(0, 8), slice(8, 16))]
        whole = step(small_model(), x, y, steps=3)
        result = {
            "sync_vs_one_process": relative(figures["sync"], gradients(small_model(), x, y)),
            "plain_vs_mean_of_halves": relative(figures["plain"], [(a + b) / 2 for a, b in zip(*halves)]),
            "plain_vs_one_process": relative(figures["plain"], gradients(small_model(), x, y)),
            "sync_steps_vs_one_process": [relative(d, s) for d, s in zip(figures["sync_steps"], whole)],
        }
        with open(out, "w") as f:
            json.dump(result, f)


def forbid_writes_in(folder, rank):
    """Any attempt of this process to open a file for writing in `folder` raises."""
    folder = os.path.realpath(folder)

    def inside(path):
        return isinstance(path, (str, bytes, os.PathLike)) and \
            os.path.realpath(os.fsdecode(path)).startswith(folder + os.sep)

    def guard(opener, writes):
        def guarded(path, *args, **kwargs):
            if inside(path) and writes(*args, **kwargs):
                raise PermissionError(f"rank {rank} may not write {path}")
            return opener(path, *args, **kwargs)
        return guarded

    write_mode = lambda mode="r", *a, **k: any(c in k.get("mode", mode) for c in "wax+")
    write_flags = lambda flags, *a, **k: flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    builtins.open = io.open = guard(io.open, write_mode)
    os.open = guard(os.open, write_flags)
    os.unlink = guard(os.unlink, lambda *a, **k: True)
    os.replace = guard(os.replace, lambda *a, **k: True)


def after_step(steps, then):
    """then() right after this process's training step number `steps`."""
    real_step, calls = train_cli.train_step, []

    def counted(*args):
        result = real_step(*args)
        calls.append(1)
        if len(calls) == steps:
            then()
        return result
    train_cli.train_step = counted


def out_of_memory():
    raise MemoryError("rank 1 ran out of memory")


def case_train(argv):
    world = distributed.connect(True)
    if not world.is_root:
        forbid_writes_in(argv[argv.index("--output-dir") + 1] if "--output-dir" in argv else
                         os.path.dirname(argv[argv.index("--resume") + 1]), world.rank)
    if world.rank == 1 and os.environ.get("STOP_AFTER"):
        after_step(int(os.environ["STOP_AFTER"]), lambda: os.kill(os.getpid(), signal.SIGINT))
    if world.rank == 1 and os.environ.get("FAIL_AFTER"):
        after_step(int(os.environ["FAIL_AFTER"]), out_of_memory)
    return train_cli.main(argv)


if __name__ == "__main__":
    case, args = sys.argv[1], sys.argv[2:]
    if case == "gradients":
        case_gradients(*args)
    else:
        sys.exit(case_train(args))
