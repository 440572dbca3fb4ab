"""Process settings: the OpenBLAS thread timeout set before NumPy loads, glibc memory reuse."""
import os
import subprocess
import sys

import pytest

import nn
from tests.conftest import ROOT

PROBE = "import os, {first}; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"


def probe(first):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return subprocess.run([sys.executable, "-c", PROBE.format(first=first)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_import_nn_first_sets_the_blas_thread_timeout():
    assert probe("nn") == "4"
    assert probe("numpy, nn") == "None"  # too late: OpenBLAS already read its settings


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_applies_on_glibc():
    assert nn.keep_freed_memory() is True
