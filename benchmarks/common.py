"""What every benchmark shares: timing, the machine's GEMM rate, torch (optional), the summary.

Method: each measurement runs the operation to warm up (Numba compilation or cache load,
first-touch page faults), then `repeat` more times, and reports the median. Absolute times on a
shared 2-core machine drift by up to 2x from minute to minute, so every figure is printed next to
numpy's float32 GEMM rate measured in the same run, and torch (with --compare-torch) is timed in
the same run on the same shapes, interleaved with ours.

The yardstick is PyTorch as its users run it: a process of its own, started with the environment
this one was started with (torch_environment: `import nn` leaves no variable behind, and this
checks it), torch's default thread count and allocator. Nothing of ours reaches it.
"""
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import nn


def median_time(fn, repeat=5, warmup=1, min_seconds=0.25, max_calls=200):
    """Median wall time of fn() in seconds, after `warmup` untimed calls: at least `repeat` timed
    calls, and more (up to max_calls) until min_seconds have passed, so that a short stall of
    the machine cannot take the median of a sub-millisecond layer."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < repeat or (sum(times) < min_seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gflops(n=2048, repeat=5):
    """numpy's float32 matrix-product rate on this machine right now (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / median_time(lambda: a @ b, repeat) / 1e9


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def have_torch():
    return importlib.util.find_spec("torch") is not None


def child_json(module_args, what, env=None):
    """Run `python -m <module_args>` in a fresh process; returns the JSON its last line prints."""
    out = subprocess.run([sys.executable, "-m", *module_args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_environment():
    """The environment PyTorch's process starts with: this process's own, which must hold none of
    the variables `import nn` sets for a moment (nn/runtime.py); a leak stops the benchmark."""
    leaked = (set(nn.runtime.QUIET) & set(os.environ)) - nn.runtime.SET_BY_USER
    if leaked:
        raise RuntimeError(f"{sorted(leaked)} set by this process, not by the user: PyTorch "
                           "would run with our thread settings")
    return dict(os.environ)


def torch_job(job, **kwargs):
    """Run something in PyTorch (benchmarks/torch_side.py) in a fresh process with the user's
    environment and torch's own defaults; returns the job's figures."""
    request = json.dumps({"job": job, "kwargs": kwargs})
    return child_json(["benchmarks.torch_side", request], f"torch {job} {kwargs}",
                      env=torch_environment())


def ratio_line(ratios):
    """The tracked last line: torch time / our time (above 1: we are faster)."""
    ratios = [r for r in ratios if r > 0]
    if not ratios:
        return "vs torch (throughput ratio): no measurements"
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return f"vs torch (throughput ratio): min {min(ratios):.2f}, geomean {geomean:.2f}"


def blas_description():
    """Which BLAS kernel numpy runs (it matters: OPENBLAS_CORETYPE=Haswell halves the GEMM rate
    on an AVX-512 machine), when threadpoolctl is installed to tell."""
    try:
        import threadpoolctl
    except ImportError:
        return "BLAS: (pip install threadpoolctl to show which kernel)"
    infos = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    return "BLAS: " + ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
                                for i in infos)


def header(title):
    """Print what the figures depend on; returns numpy's float32 GEMM rate measured now."""
    import numba
    print(f"# {title}")
    print(f"numpy {np.__version__}, numba {numba.__version__}, kernels: {nn.kernels.backend()}; "
          + blas_description())
    peak = gemm_gflops()
    print(f"numpy float32 GEMM (2048^3): {peak:.0f} GFLOP/s")
    return peak
