"""Training checkpoints as one .npz of named arrays (no pickle), written atomically.

Keys: "model/<state_dict name>" (plus the architecture's name and width), "optim/<i>/<state>"
for each parameter's optimizer state, and JSON text under "optim_groups", "scheduler",
"dropout_rngs" and "meta" (epoch, step within the epoch, config, history, running sums).
Everything needed to continue a run exactly where it stopped.
"""
import json
import os

import numpy as np

import nn

from .weights import load_weight_arrays, save_npz_atomic, weight_arrays


def _json(obj):
    return np.array(json.dumps(obj))


def dropout_states(model):
    return {name: m.rng.bit_generator.state for name, m in model.named_modules()
            if isinstance(m, nn.Dropout)}


def save_checkpoint(path, model, optimizer, scheduler, meta):
    arrays = weight_arrays(model, prefix="model/")
    opt_state = optimizer.state_dict()
    for i, state in opt_state["state"].items():
        for key, value in state.items():
            arrays[f"optim/{i}/{key}"] = np.asarray(value)
    arrays["optim_groups"] = _json(opt_state["param_groups"])
    arrays["scheduler"] = _json(scheduler.state_dict())
    arrays["dropout_rngs"] = _json(dropout_states(model))
    arrays["meta"] = _json(meta)
    save_npz_atomic(path, arrays)


def read_checkpoint(path):
    """All arrays of a checkpoint, with a clear error for a missing or unreadable file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = dict(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
    if "meta" not in arrays:
        raise ValueError(f"{path}: not a training checkpoint (no 'meta' entry); "
                         "for bare weights use models.weights.load_weights")
    return arrays


def checkpoint_meta(arrays):
    return json.loads(str(arrays["meta"]))


def restore(arrays, path, model, optimizer=None, scheduler=None):
    """Load a checkpoint's model (and optimizer, scheduler, dropout generators) state."""
    load_weight_arrays(model, arrays, path, prefix="model/")
    modules = dict(model.named_modules())
    for name, state in json.loads(str(arrays["dropout_rngs"])).items():
        modules[name].rng.bit_generator.state = state
    if optimizer is not None:
        groups = json.loads(str(arrays["optim_groups"]))
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        state = {}
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                state.setdefault(int(i), {})[name] = value.item() if value.ndim == 0 else value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None:
        scheduler.load_state_dict(json.loads(str(arrays["scheduler"])))
    return checkpoint_meta(arrays)
