"""Shared test set-up: hypothesis without deadlines (first calls compile Numba kernels),
the optional full data sets, and float64 helpers."""
import os
from pathlib import Path

import nn  # noqa: F401  (first: lets idle BLAS and OpenMP threads sleep, nn/runtime.py)
import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
# The full data sets, for the tests marked large_data (deselected by default, see pytest.ini):
#     NN_DATA_DIR=/path/with/mnist/and/fashion-mnist python -m pytest -m large_data
LARGE_DATA = Path(os.environ["NN_DATA_DIR"]) if os.environ.get("NN_DATA_DIR") else None


def large_data(*folders):
    """Skip (saying how to run it) unless $NN_DATA_DIR holds these data set folders."""
    missing = [f for f in folders if LARGE_DATA is None or not (LARGE_DATA / f).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"set NN_DATA_DIR to a folder holding {', '.join(folders)}/"
                              f" (missing: {', '.join(missing)})")


def quiet(*_):
    pass


def tiny_config(out, **overrides):
    """A training run of seconds: a narrow V2 on 16x16 images of 160 of the embedded digits."""
    import dataclasses
    from models import train
    args = train.build_parser().parse_args([
        "--no-download", "--width", "0.1", "--image-size", "16",
        "--train-subset", "160", "--val-fraction", "0.25", "-b", "16", "--epochs", "2",
        "--output-dir", str(out), "--print-freq", "1000"])
    return dataclasses.replace(train.make_config(args), **overrides)


@pytest.fixture(scope="package")   # built once for the whole suite (tests/ is one package)
def finished(tmp_path_factory):
    """A finished two-epoch tiny run, to copy, damage, export and start from (never changed)."""
    from models import train
    out = tmp_path_factory.mktemp("finished")
    train.run(tiny_config(out), log=quiet)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_gradients_ok(errors, tol=1e-6):
    """Every relative error returned by check_module is below tol."""
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"gradient check failed (tol {tol}): {bad}"
