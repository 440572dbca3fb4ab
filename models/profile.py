"""Where a training step's time goes: self time of every module's forward and backward.

    python -m models.train ... --profile     # profiles the second training step, then carries on

Every module's forward and backward is timed; a module's *self* time is its time minus its
children's, so containers show only their own work (Concat: the concatenation and the split;
the model: adding the aux heads' gradients). Totals are grouped by layer type and by block;
what is left of the step (loss, optimizer update) is shown on its own.
"""
import time
from collections import defaultdict


def profile_step(model, step):
    """Call step() (one training step of `model`) with timers on every module.

    Returns (whatever step() returned, timings): timings["modules"] maps (module name, type,
    phase) to self time in seconds; "forward" and "backward" are the model's own totals.
    """
    names = {id(m): n for n, m in model.named_modules()}
    timings = {"modules": defaultdict(float), "forward": 0.0, "backward": 0.0}
    stack = []

    def wrap(module, phase):
        original = getattr(module, phase)

        def timed(*args):
            stack.append(0.0)
            t0 = time.perf_counter()
            out = original(*args)
            total = time.perf_counter() - t0
            children = stack.pop()
            if stack:
                stack[-1] += total
            else:
                timings[phase] += total
            timings["modules"][(names[id(module)], type(module).__name__, phase)] += total - children
            return out
        object.__setattr__(module, phase, timed)

    for m in model.modules():
        wrap(m, "forward")
        wrap(m, "backward")
    try:
        t0 = time.perf_counter()
        result = step()
        timings["total"] = time.perf_counter() - t0
    finally:
        for m in model.modules():
            m.__dict__.pop("forward", None)
            m.__dict__.pop("backward", None)
    return result, timings


def format_profile(t, batch):
    """Two tables (by layer type, by block) and the step's phases, as text."""
    by_type, by_block = defaultdict(lambda: [0.0, 0.0]), defaultdict(lambda: [0.0, 0.0])
    for (name, kind, phase), seconds in t["modules"].items():
        col = 0 if phase == "forward" else 1
        by_type[kind][col] += seconds
        by_block[name.split(".")[0] or "(model itself)"][col] += seconds
    rest = t["total"] - t["forward"] - t["backward"]
    lines = [f"profile of one training step, batch {batch}: {1e3 * t['total']:.0f} ms "
             f"({batch / t['total']:.1f} images/s)",
             f"  forward {1e3 * t['forward']:.0f} ms, backward {1e3 * t['backward']:.0f} ms, "
             f"loss + optimizer {1e3 * rest:.0f} ms", ""]
    for title, table in (("layer type", by_type), ("block", by_block)):
        lines.append(f"  {title:<22s} {'forward ms':>10s} {'backward ms':>11s} {'share':>6s}")
        for key, (f, b) in sorted(table.items(), key=lambda kv: -sum(kv[1])):
            lines.append(f"  {key:<22s} {1e3 * f:10.1f} {1e3 * b:11.1f} {100 * (f + b) / t['total']:5.1f}%")
        lines.append("")
    return "\n".join(lines)
