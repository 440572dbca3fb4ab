"""The yardstick: PyTorch's benchmark process starts with the user's environment, none of ours."""
import os
import sys

import numpy as np
import pytest

import nn
from benchmarks.common import torch_environment, torch_job


def initial_environment():
    """This process's environment as it started (Linux: /proc/self/environ)."""
    with open("/proc/self/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/environ")
def test_the_pytorch_child_has_none_of_the_variables_nn_sets():
    nn.ReLU()(np.ones(3))   # nn's settings made in this process, as in a benchmark run
    child = torch_job("environment")
    started_with = initial_environment()
    for key in nn.runtime.QUIET:
        assert (key in child) == (key in started_with), key
    assert child == dict(os.environ)


def test_a_leaked_variable_stops_the_benchmark(monkeypatch):
    monkeypatch.setattr(nn.runtime, "SET_BY_USER", frozenset())
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    with pytest.raises(RuntimeError, match="GOMP_SPINCOUNT"):
        torch_environment()
