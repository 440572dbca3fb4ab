"""Does the import order matter? A training step in a script that imports NumPy first (as nearly
every script and notebook does) against one that imports nn first (as models.train once needed).

    python -m benchmarks.import_order                       # 4 rounds, the two configurations below
    python -m benchmarks.import_order --rounds 6 --config inception_v2:96:32

Each step runs in a fresh `python -c` process that makes its imports in the order given, then
times train_step (median of 4 steps after 2); the two orders take turns --rounds times. nn makes
its thread settings when its first layer runs (nn/runtime.py), so both should be the same.
"""
import argparse
import json
import statistics
import subprocess
import sys

CONFIGS = ["inception_v2:32:32", "inception_v3:75:32"]
IMPORTS = {"numpy-first": "import numpy as np; import nn", "nn-first": "import nn; import numpy as np"}
STEP = """
import json, statistics, time
import models
from models.train import train_step
name, size, batch = {config!r}.split(":"); size, batch = int(size), int(batch)
nn.manual_seed(0)
model = models.build(name)
model.input_grad = False
opt = nn.optim.AdamW(model.parameters(), lr=1e-4)
criteria = [nn.CrossEntropyLoss(label_smoothing=1e-4) for _ in range(3)]
rng = np.random.default_rng(0)
x, y = rng.standard_normal((batch, 3, size, size), dtype=np.float32), rng.integers(0, 10, batch)
times = []
for i in range(6):
    t = time.perf_counter()
    train_step(model, x, y, criteria, 0.3, opt, None)
    times.append(time.perf_counter() - t)
print(json.dumps(batch / statistics.median(times[2:])))
"""


def images_per_second(order, config):
    code = IMPORTS[order] + "\n" + STEP.format(config=config)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{order} {config} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.import_order", description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", help="model:size:batch (repeatable)")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    print(f"{'config':22s} {'numpy first img/s':>18s} {'nn first img/s':>15s} {'ratio':>6s}")
    for config in args.config or CONFIGS:
        figures = {order: [] for order in IMPORTS}
        for r in range(args.rounds):
            for order in (IMPORTS if r % 2 == 0 else reversed(list(IMPORTS))):
                figures[order].append(images_per_second(order, config))
        first, second = (statistics.median(figures[o]) for o in IMPORTS)
        print(f"{config:22s} {first:18.1f} {second:15.1f} {first / second:6.2f}", flush=True)


if __name__ == "__main__":
    main()
