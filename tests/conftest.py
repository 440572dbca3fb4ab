"""Shared test set-up: hypothesis without deadlines (first calls compile Numba kernels),
the location of the real data sets, and float64 helpers."""
import os
from pathlib import Path

import nn  # noqa: F401  (first: lets idle BLAS and OpenMP threads sleep, nn/runtime.py)
import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NN_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_gradients_ok(errors, tol=1e-6):
    """Every relative error returned by check_module is below tol."""
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"gradient check failed (tol {tol}): {bad}"
