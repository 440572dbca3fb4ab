"""PyTorch's side of the benchmarks, timed in a process of its own.

    python -m benchmarks.torch_side '{"job": "layer", ...}'   (started by benchmarks.common.torch_job)

PyTorch runs as a plain PyTorch script runs: the environment the user started with
(benchmarks.common.torch_environment), torch's default number of threads and glibc's default
allocator settings. The network comes from benchmarks/torch_reference.py, which builds it from
ours, so this process imports nn too, but after torch: PyTorch's OpenMP library has the same
name as the one Numba loads (libgomp.so.1), so whichever loads first is the one both use, and
it reads its settings as it loads. Loaded by torch, it has PyTorch's defaults (nn/runtime.py
then leaves it alone).
"""
try:
    import torch  # first: see the docstring
except ImportError:  # the "environment" job runs without it
    torch = None

import json
import os
import sys

import numpy as np

from .common import median_time, peak_rss_mb


def time_layer(cls, args, kwargs, shape, repeat):
    """Forward and forward+backward ms of torch.nn.<cls>(*args, **kwargs) on a float32 input."""
    rng = np.random.default_rng(0)
    layer = getattr(torch.nn, cls)(*args, **kwargs)
    x = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).requires_grad_(True)
    with torch.no_grad():
        g = torch.from_numpy(rng.standard_normal(tuple(layer(x).shape), dtype=np.float32))

    def forward_backward():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)
    with torch.no_grad():
        fwd = median_time(lambda: layer(x), repeat)
    return {"fwd_ms": 1e3 * fwd, "fwdbwd_ms": 1e3 * median_time(forward_backward, repeat)}


def time_train_step(model_name, size, batch, repeat, warmup):
    """One AdamW training step (forward with aux heads, loss, backward) and one eval forward."""
    import models
    from .torch_reference import convert
    model = convert(models.build(model_name), copy_weights=False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=1e-4)

    def step():
        opt.zero_grad()
        main, *aux = model(x)
        (ce(main, y) + 0.3 * sum(ce(a, y) for a in aux)).backward()
        opt.step()
    model.train()
    step_s = median_time(step, repeat, warmup=warmup)
    model.eval()
    with torch.no_grad():
        eval_s = median_time(lambda: model(x), repeat)
    return {"step_s": step_s, "eval_s": eval_s, "rss_mb": peak_rss_mb(),
            "threads": torch.get_num_threads()}


def environment():
    """The environment this process started with (what the tests check)."""
    return dict(os.environ)


JOBS = {"layer": time_layer, "train_step": time_train_step, "environment": environment}


def main(request):
    request = json.loads(request)
    print(json.dumps(JOBS[request["job"]](**request["kwargs"])))


if __name__ == "__main__":
    main(sys.argv[1])
