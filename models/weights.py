"""Weights to and from .npz files: named arrays (no pickle), written atomically, read whole.

A file holds the model's state_dict under its own names plus "__model__" (the architecture's
name) and "__width__", so that loading into another architecture fails with a clear message.
Every saved-model file (these and the training checkpoints of models/checkpoint.py) is read by
read_npz, which turns a missing, empty, truncated or damaged file into one CheckpointError.
"""
import json
import math
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


def load_weight_arrays(model, arrays, source, prefix="", skip=()):
    """Load `prefix`-keyed arrays into model, refusing another architecture or width by name.
    The entries named in `skip` are left as the model has them (and need not be in the file)."""
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
             if k.startswith(prefix) and not k[len(prefix):].startswith("__") and k[len(prefix):] not in skip}
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in skip]
    unexpected = [k for k in state if k not in own]
    try:
        for what, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                raise RuntimeError(f"{what} keys ({len(keys)}): {', '.join(keys[:10])}"
                                   + (" ..." if len(keys) > 10 else ""))
        model.load_state_dict(state, strict=False)   # names checked above, skip allowed for
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{source}: does not fit {model_name(model)}: {err}") from None
    return model


def save_weights(model, path):
    save_npz_atomic(path, weight_arrays(model))


def load_weights(model, path, skip=()):
    """Load the weights of any saved-model file into model: a training checkpoint, a weights .npz
    (save_weights) or a .safetensors file (save_safetensors, or one written by PyTorch with these
    names). A clear error if the file is missing, damaged, or for another model; the entries in
    `skip` keep the model's own values (fine-tuning with new final layers)."""
    if os.fspath(path).endswith(".safetensors"):
        state, metadata = read_safetensors(path)
        identity = {f"__{k}__": np.array(metadata[k]) for k in ("model", "width") if k in metadata}
        return load_weight_arrays(model, {**state, **identity}, path, skip=skip)
    arrays = read_npz(path, "weights file")
    prefix = "model/" if "model/__model__" in arrays else ""
    return load_weight_arrays(model, arrays, path, prefix, skip)


# -- safetensors: the format PyTorch users load with safetensors.torch.load_file -----------------
#
# A safetensors file is an 8-byte little-endian length N, then N bytes of JSON naming every tensor
# ({"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, offsets into what follows,
# and an optional "__metadata__" of strings), then the tensors' bytes, little-endian and in C
# order, one after the other. No code is ever run on loading (unlike a pickle). The keys are the
# state_dict names, which are PyTorch's (benchmarks/torch_reference.py builds the same network in
# PyTorch with the same names).

SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def save_safetensors(model, path, metadata=None):
    """The model's state_dict as a safetensors file, written atomically; the metadata records the
    architecture and width (and whatever `metadata` adds, as strings)."""
    names = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items()}
    header, offset, arrays = {}, 0, []
    for key, value in model.state_dict().items():
        value = np.array(value, dtype=value.dtype.newbyteorder("<"), order="C")   # 0-d stays 0-d
        header[key] = {"dtype": names[value.dtype], "shape": list(value.shape),
                       "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
        arrays.append(value)
    header["__metadata__"] = {"format": "pt", "model": model_name(model),
                              "width": repr(float(getattr(model, "width", 1.0))),
                              **{k: str(v) for k, v in (metadata or {}).items()}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # the tensors start 8-byte aligned

    def write(f):
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for value in arrays:
            f.write(value.tobytes())
    atomic_write(path, write)


def read_safetensors(path):
    """(state dict of arrays, metadata) of a safetensors file, checked whole: a damaged or
    truncated file is one CheckpointError naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path}")
    with open(path, "rb") as f:
        payload = f.read()
    try:
        length = int.from_bytes(payload[:8], "little")
        if len(payload) < 8 or 8 + length > len(payload):
            raise ValueError(f"its header says {length} bytes of JSON, the file has {len(payload)} bytes")
        header = json.loads(payload[8:8 + length])
        metadata = header.pop("__metadata__", {}) or {}
        data, state = memoryview(payload)[8 + length:], {}
        for key, entry in header.items():
            begin, end = entry["data_offsets"]
            dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            if not 0 <= begin <= end <= len(data) or end - begin != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {key!r} does not fit the file (offsets {begin}..{end})")
            state[key] = np.frombuffer(data[begin:end], dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    return state, metadata
