"""Parameter initialisation, with one seedable generator so that a model is reproducible.

PyTorch's default for Conv2d and Linear is kaiming_uniform_(w, a=sqrt(5)), which works out to
    w ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in)),   bias ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in))
with fan_in = C_in * KH * KW (conv) or in_features (linear). The RNG stream differs from
PyTorch's, so the same seed gives other numbers with the same distribution.
"""
import numpy as np

DEFAULT_DTYPE = np.float32
_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the generator every new layer draws its initial weights from."""
    global _rng
    _rng = np.random.default_rng(seed)


def uniform_fan_in(shape, fan_in, dtype=DEFAULT_DTYPE):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of the given shape: PyTorch's default layer init."""
    bound = 1.0 / np.sqrt(fan_in)
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)
