"""Process settings for speed (nn/runtime.py): made at the first layer call, whatever the import
order; idle BLAS and OpenMP threads then sleep; no variable is left in the environment."""
import json
import os
import subprocess
import sys

import pytest

import nn
from tests.conftest import ROOT

# NumPy first, as most scripts do; then the CPU time idle worker threads burn in 0.2 s of sleep
# after a matrix product and after a Numba kernel, with or without a layer call before (sys.argv[1]).
PROBE = """
import json, os, sys, time
import numpy as np
import nn
from numba import njit, prange

@njit(parallel=True)
def kernel(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0

a = np.ones((1500, 1500), np.float32)

def idle_cpu(work):
    work()
    t0 = time.process_time()
    time.sleep(0.2)
    return time.process_time() - t0

def measure():
    return {"blas": idle_cpu(lambda: a @ a), "numba": idle_cpu(lambda: kernel(a))}

status_after_import = nn.runtime.status()
if sys.argv[1] == "layer":
    nn.ReLU()(a)
print(json.dumps({"idle": measure(), "status_after_import": status_after_import,
                  "status": nn.runtime.status(),
                  "environment": sorted(k for k in nn.runtime.QUIET if k in os.environ)}))
"""


def run_probe(mode, **environment):
    env = {k: v for k, v in os.environ.items() if k not in nn.runtime.QUIET} | environment
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def probes():
    return {mode: run_probe(mode) for mode in ("control", "layer")}


def test_importing_nn_changes_nothing_until_a_layer_runs(probes):
    assert probes["control"]["status"] == probes["layer"]["status_after_import"] == {}
    assert set(probes["layer"]["status"]) == {"openblas", "openmp", "memory"}
    assert probes["layer"]["environment"] == []   # nothing left behind for child processes


@pytest.mark.parametrize("pool,setting", [("blas", "openblas"), ("numba", "openmp")])
def test_idle_threads_sleep_after_the_first_layer_call_with_numpy_imported_first(probes, pool, setting):
    status = probes["layer"]["status"][setting]
    if not nn.kernels.HAVE_NUMBA or "sleep" not in status:
        pytest.skip(f"not applicable here: {status}")
    spinning, quiet = probes["control"]["idle"][pool], probes["layer"]["idle"][pool]
    if spinning < 0.005:
        pytest.skip(f"this machine's {pool} threads do not spin ({spinning:.4f} s of CPU while idle)")
    assert quiet < 0.2 * spinning, (f"idle {pool} threads burn {quiet:.4f} s of CPU in 0.2 s "
                                    f"({spinning:.4f} s without nn's settings)")


def test_a_setting_the_user_made_is_left_alone():
    result = run_probe("layer", GOMP_SPINCOUNT="300000", OPENBLAS_THREAD_TIMEOUT="28")
    assert result["status"]["openblas"] == result["status"]["openmp"] == "left as the environment sets it"
    assert result["environment"] == ["GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT"]
    assert run_probe("layer", OMP_WAIT_POLICY="ACTIVE")["status"]["openmp"] == "left as the environment sets it"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_applies_on_glibc():
    assert nn.runtime.keep_freed_memory() == "freed memory kept for reuse"
