"""Weights to and from .npz files: named arrays (no pickle), written atomically.

A file holds the model's state_dict under its own names plus "__model__" (the architecture's
name) and "__width__", so that loading into another architecture fails with a clear message.
"""
import os

import numpy as np

from nn.serialization import atomic_write


def save_npz_atomic(path, arrays):
    """Write a dict of arrays to `path` as .npz, atomically (never a half-written file)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def model_name(model):
    return {"InceptionV2": "inception_v2", "InceptionV3": "inception_v3"}.get(
        type(model).__name__, type(model).__name__)


def weight_arrays(model, prefix=""):
    """The model's state_dict and identity as npz-ready arrays (keys prefixed with `prefix`)."""
    arrays = {prefix + k: v for k, v in model.state_dict().items()}
    arrays[prefix + "__model__"] = np.array(model_name(model))
    arrays[prefix + "__width__"] = np.array(float(getattr(model, "width", 1.0)))
    return arrays


def load_weight_arrays(model, arrays, source, prefix=""):
    """Load `prefix`-keyed arrays into model, refusing another architecture or width by name."""
    saved = str(arrays[prefix + "__model__"]) if prefix + "__model__" in arrays else None
    if saved is not None and saved != model_name(model):
        raise ValueError(f"{source}: holds weights of {saved}, not of {model_name(model)}")
    width = float(arrays[prefix + "__width__"]) if prefix + "__width__" in arrays else None
    if width is not None and width != float(getattr(model, "width", 1.0)):
        raise ValueError(f"{source}: holds weights of width {width}, the model has width "
                         f"{getattr(model, 'width', 1.0)}")
    state = {k[len(prefix):]: arrays[k] for k in arrays
             if k.startswith(prefix) and not k[len(prefix):].startswith("__")}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source}: does not fit {model_name(model)}: {err}") from None
    return model


def save_weights(model, path):
    save_npz_atomic(path, weight_arrays(model))


def load_weights(model, path):
    """Load weights saved by save_weights; a clear error if the file is missing or for another model."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path}")
    with np.load(path, allow_pickle=False) as f:
        return load_weight_arrays(model, dict(f), path)
