"""Weights to and from .npz files: named arrays (no pickle), written atomically, read whole.

A file holds the model's state_dict under its own names plus "__model__" (the architecture's
name) and "__width__", so that loading into another architecture fails with a clear message.
Every saved-model file (these and the training checkpoints of models/checkpoint.py) is read by
read_npz, which turns a missing, empty, truncated or damaged file into one CheckpointError.
"""
import os
import zipfile
import zlib

import numpy as np

from nn.serialization import atomic_write


class CheckpointError(ValueError):
    """A file that is not a complete, readable checkpoint or weights file; the message names
    it, what is wrong, and what to do."""


def save_npz_atomic(path, arrays):
    """Write a dict of arrays to `path` as .npz, atomically (never a half-written file)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path, what="checkpoint"):
    """Every array of an .npz file, each read in full (so that a damaged one is found now)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; give the {what} file in it (e.g. {path}/model_best.npz)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (a copy or a write that did not finish?)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{path}: a single .npy array, not a {what} (.npz archive)")
            return {key: f[key] for key in f.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise CheckpointError(f"{path}: not a readable {what}: the file is truncated or damaged "
                              f"({type(err).__name__}: {err}). Use another copy of it") from None


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
    try:
        saved = str(arrays[prefix + "__model__"]) if prefix + "__model__" in arrays else None
        width = float(arrays[prefix + "__width__"]) if prefix + "__width__" in arrays else None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its model name or width is unreadable ({err})") from None
    if saved is not None and saved != model_name(model):
        raise CheckpointError(f"{source}: holds weights of {saved}, not of {model_name(model)}")
    if width is not None and width != float(getattr(model, "width", 1.0)):
        raise CheckpointError(f"{source}: holds weights of width {width}, the model has width "
                              f"{getattr(model, 'width', 1.0)}")
    state = {k[len(prefix):]: arrays[k] for k in arrays
             if k.startswith(prefix) and not k[len(prefix):].startswith("__")}
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{source}: does not fit {model_name(model)}: {err}") from None
    return model


def save_weights(model, path):
    save_npz_atomic(path, weight_arrays(model))


def load_weights(model, path):
    """Load weights saved by save_weights (or the model of a checkpoint); a clear error if the
    file is missing, damaged, or for another model."""
    arrays = read_npz(path, "weights file")
    prefix = "model/" if "model/__model__" in arrays else ""
    return load_weight_arrays(model, arrays, path, prefix)
