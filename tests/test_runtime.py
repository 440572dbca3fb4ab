"""Process settings: idle BLAS and OpenMP threads sleep (set before they load), glibc memory reuse."""
import os
import subprocess
import sys

import pytest

import nn
from tests.conftest import ROOT

PROBE = "import os, {first}; print(os.environ.get('{variable}'))"


def probe(first, variable, **preset):
    env = {k: v for k, v in os.environ.items() if k != variable} | preset
    return subprocess.run([sys.executable, "-c", PROBE.format(first=first, variable=variable)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_import_nn_first_sets_the_blas_thread_timeout():
    assert probe("nn", "OPENBLAS_THREAD_TIMEOUT") == "4"
    assert probe("numpy, nn", "OPENBLAS_THREAD_TIMEOUT") == "None"  # too late: OpenBLAS has read it


def test_import_nn_lets_openmp_threads_sleep_unless_the_user_chose():
    assert probe("nn", "OMP_WAIT_POLICY") == "PASSIVE"
    assert probe("nn", "OMP_WAIT_POLICY", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_applies_on_glibc():
    assert nn.keep_freed_memory() is True
