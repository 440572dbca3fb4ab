"""Training checkpoints as one .npz of named arrays (no pickle), written atomically, read whole.

Keys: "model/<state_dict name>" (plus the architecture's name and width), "optim/<i>/<state>"
for each parameter's optimizer state, and JSON text under "optim_groups", "scheduler",
"dropout_rngs" and "meta" (epoch, step within the epoch, config, history, running sums, the
run's id). Everything needed to continue a run exactly where it stopped.

Reading checks the file as a whole before anything is loaded: a missing, empty, truncated or
damaged file, a missing entry, an entry that is not JSON, a configuration without a setting the
run needs, a model of another architecture or shape: each is one CheckpointError that names the
file and what is wrong with it.
"""
import json

import numpy as np

import nn

from . import config as run_config
from .weights import CheckpointError, load_weight_arrays, read_npz, save_npz_atomic, weight_arrays

JSON_ENTRIES = ("meta", "optim_groups", "scheduler", "dropout_rngs")
META_KEYS = ("config", "epoch", "step", "history", "best_val_accuracy", "best_epoch", "running")


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


def _entry(arrays, key, path):
    try:
        return json.loads(str(arrays[key]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its '{key}' entry is not valid JSON ({err})") from None


def read_checkpoint(path):
    """A checkpoint's arrays, with its JSON entries parsed and checked, as a dict: the arrays
    under their keys, the parsed entries under "meta", "optim_groups", "scheduler",
    "dropout_rngs", and the run's Config under "config"."""
    arrays = read_npz(path)
    missing = [k for k in (*JSON_ENTRIES, "model/__model__") if k not in arrays]
    if "meta" in missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'meta' entry); "
                              "for bare weights use models.weights.load_weights")
    if missing:
        raise CheckpointError(f"{path}: an incomplete checkpoint: no {', '.join(repr(m) for m in missing)} entry")
    for key in JSON_ENTRIES:
        arrays[key] = _entry(arrays, key, path)
    meta = arrays["meta"]
    absent = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise CheckpointError(f"{path}: an incomplete checkpoint: its meta has no {', '.join(absent)}")
    arrays["config"] = run_config.from_dict(meta["config"], path)
    return arrays


def restore(arrays, path, model, optimizer=None, scheduler=None):
    """Load a checkpoint's model (and optimizer, scheduler, dropout generators) state; returns
    its meta. A state that does not fit raises CheckpointError, and may leave the objects partly
    loaded: build new ones to try another file."""
    load_weight_arrays(model, arrays, path, prefix="model/")
    modules = dict(model.named_modules())
    rngs = arrays["dropout_rngs"]
    if not isinstance(rngs, dict) or set(rngs) != set(dropout_states(model)):
        raise CheckpointError(f"{path}: its dropout generators do not match the model's dropout layers")
    try:
        for name, state in rngs.items():
            modules[name].rng.bit_generator.state = state
        if optimizer is not None:
            optimizer.load_state_dict({"state": _optimizer_state(arrays), "param_groups": [
                {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in arrays["optim_groups"]]})
        if scheduler is not None:
            scheduler.load_state_dict(arrays["scheduler"])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: its optimizer or schedule state does not fit this run "
                              f"({type(err).__name__}: {err})") from None
    return arrays["meta"]


def _optimizer_state(arrays):
    state = {}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, i, name = key.split("/", 2)
            state.setdefault(int(i), {})[name] = value.item() if value.ndim == 0 else value
    return state
