"""PyTorch's side of the benchmarks, timed in a process of its own.

    python -m benchmarks.torch_side '{"job": "layer", ...}'   (started by benchmarks.common.torch_job)

torch is imported before anything else, so its OpenMP threads read the environment PyTorch users
have, before `import nn` asks idle threads to sleep (nn/runtime.py): PyTorch is timed with its
own thread settings, and we with ours. The allocator is the one thing both may share
(same_allocator: nn.keep_freed_memory(), which PyTorch gains from too).
"""
import torch  # first: see the docstring

import json
import sys

import numpy as np

import nn

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


def time_train_step(model_name, size, batch, repeat):
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
    step_s = median_time(step, repeat)
    model.eval()
    with torch.no_grad():
        eval_s = median_time(lambda: model(x), repeat)
    return {"step_s": step_s, "eval_s": eval_s, "rss_mb": peak_rss_mb()}


JOBS = {"layer": time_layer, "train_step": time_train_step}


def main(request):
    request = json.loads(request)
    torch.set_num_threads(2)
    if request["same_allocator"]:
        nn.keep_freed_memory()
    print(json.dumps(JOBS[request["job"]](**request["kwargs"])))


if __name__ == "__main__":
    main(sys.argv[1])
