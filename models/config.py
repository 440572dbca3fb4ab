"""The configuration of a training run: every setting, its default, the two presets, the checks.

A run is described by one Config. `python -m models.train` makes it from a preset and the flags
given; a checkpoint stores it as JSON and a resumed run reads it back (from_dict checks it
whole, naming the file and the entry that is wrong). Each field says, in its metadata, the
command-line flag that sets it (so that an error can name it), and whether a resumed run may
change it ("how": how to run, not what is computed) or must keep it.
"""
import dataclasses
import math
import os
from dataclasses import dataclass, field

import data

from . import DEFAULT_IMAGE_SIZE, MODELS, min_image_size


def _setting(default, flag, how=False):
    return field(default=default, metadata={"flag": flag, "how": how})


@dataclass(frozen=True)
class Config:
    model: str = _setting("inception_v2", "--model")
    dataset: str = _setting("mnist-mini", "--dataset")
    image_size: int = _setting(None, "--image-size")      # None: the model's own (224 or 299)
    width: float = _setting(1.0, "--width")
    epochs: int = _setting(3, "--epochs", how=True)
    batch_size: int = _setting(32, "-b/--batch-size")
    eval_batch_size: int = _setting(None, "--eval-batch-size", how=True)   # None: batch_size
    opt: str = _setting("adamw", "--opt")
    lr: float = _setting(2e-3, "--lr")
    momentum: float = _setting(0.9, "--momentum")
    weight_decay: float = _setting(0.01, "--wd/--weight-decay")
    label_smoothing: float = _setting(0.0, "--label-smoothing")
    aux_weight: float = _setting(0.3, "--aux-weight")
    train_subset: int = _setting(None, "--train-subset")
    val_fraction: float = _setting(0.1, "--val-fraction")
    augment_shift: int = _setting(0, "--augment-shift")
    lr_schedule: str = _setting("cosine", "--lr-schedule")
    warmup_epochs: float = _setting(0.0, "--warmup-epochs")
    lr_step_epochs: int = _setting(None, "--lr-step-epochs")
    lr_gamma: float = _setting(0.1, "--lr-gamma")
    clip_grad: float = _setting(None, "--clip-grad")
    seed: int = _setting(0, "--seed")
    initial_checkpoint: str = _setting(None, "--initial-checkpoint")   # weights to start from
    new_classifier: bool = _setting(False, "--new-classifier")        # ... with new final layers
    sync_bn: bool = _setting(False, "--sync-bn")   # several ranks: batch norm over the whole batch
    fixed_reduction_order: bool = _setting(False, "--fixed-reduction-order", how=True)
    preset: str = _setting("quick", "--preset")
    data_dir: str = _setting(None, "--data-dir", how=True)
    download: bool = _setting(True, "--no-download", how=True)
    output_dir: str = _setting(None, "--output-dir", how=True)  # None: runs/<model>_<dataset>
    print_freq: int = _setting(50, "-p/--print-freq", how=True)
    prefetch: bool = _setting(False, "--prefetch", how=True)
    profile: bool = _setting(False, "--profile", how=True)
    dry_run: bool = _setting(False, "--dry-run", how=True)

    def flag(self, name):
        return FIELDS[name].metadata["flag"]


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# The settings a resumed run may change: how it runs, not what it computes.
HOW = frozenset(name for name, f in FIELDS.items() if f.metadata["how"])

PRESETS = {
    # Shows real learning in minutes on 2 cores, offline: small images of the embedded digits.
    "quick": dict(model="inception_v2", dataset="mnist-mini", image_size=32, epochs=3, batch_size=32,
                  lr=2e-3, opt="adamw",
                  weight_decay=0.01, momentum=0.9, label_smoothing=0.0, aux_weight=0.3,
                  train_subset=8000, val_fraction=0.1, lr_schedule="cosine", warmup_epochs=0.1),
    # The seeds' experiment: AdamW lr 1e-4, batch 32, aux 0.3, smoothing 1e-4, wd 0.01, 10 epochs,
    # at the model's own input size (224 for V2, 299 for V3).
    "seed": dict(model="inception_v3", dataset="mnist", image_size=None, epochs=10, batch_size=32,
                 lr=1e-4, opt="adamw",
                 weight_decay=0.01, momentum=0.9, label_smoothing=1e-4, aux_weight=0.3,
                 train_subset=None, val_fraction=0.1, lr_schedule="constant", warmup_epochs=0.0),
}
CHOICES = {"model": tuple(MODELS), "dataset": tuple(data.DATASETS), "opt": ("sgd", "adam", "adamw"),
           "lr_schedule": ("constant", "step", "cosine"), "preset": tuple(PRESETS)}
TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class ConfigError(ValueError):
    """A setting out of range, of the wrong type, or missing; the message names its flag."""


def make(preset="quick", **given):
    """The preset's settings, then the ones given; the model's own image size and the default
    output folder filled in; checked."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    values = {**PRESETS[preset], **given, "preset": preset}
    if values.get("dry_run"):
        values["epochs"] = 1
    return resolve(Config(**values))


def resolve(config):
    """Fill in what depends on other settings, then check everything."""
    if config.image_size is None:
        config = dataclasses.replace(config, image_size=DEFAULT_IMAGE_SIZE[config.model])
    if config.output_dir is None:
        config = dataclasses.replace(config, output_dir=os.path.join("runs", f"{config.model}_{config.dataset}"))
    check(config)
    return config


def _type_of(name):
    default = FIELDS[name].default
    return {"image_size": int, "eval_batch_size": int, "train_subset": int, "lr_step_epochs": int,
            "clip_grad": float, "data_dir": str, "output_dir": str,
            "initial_checkpoint": str}.get(name, type(default))


def check(config):
    """Every setting of the right type and in range (ConfigError naming the flag otherwise)."""
    def fail(name, problem):
        raise ConfigError(f"{config.flag(name)} {problem}")

    for name in FIELDS:
        value, kind = getattr(config, name), _type_of(name)
        if value is None and FIELDS[name].default is None:
            continue
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
              isinstance(value, kind) and not isinstance(value, bool))
        if not ok:
            fail(name, f"must be {TYPES[kind]}, got {value!r}")
        if kind is float and not math.isfinite(value):
            fail(name, f"must be a finite number, got {value!r}")
        if name in CHOICES and value not in CHOICES[name]:
            fail(name, f"must be one of {', '.join(CHOICES[name])}, got {value!r}")
    positive = ("epochs", "batch_size", "eval_batch_size", "lr", "width", "train_subset",
                "lr_step_epochs", "lr_gamma", "clip_grad", "print_freq", "image_size")
    for name in positive:
        value = getattr(config, name)
        if value is not None and not value > 0:
            fail(name, f"must be > 0, got {value}")
    for name in ("momentum", "weight_decay", "aux_weight", "warmup_epochs"):
        if getattr(config, name) < 0:
            fail(name, f"must be >= 0, got {getattr(config, name)}")
    for name in ("label_smoothing", "val_fraction"):
        if not 0 <= getattr(config, name) < 1:
            fail(name, f"must be in [0, 1), got {getattr(config, name)}")
    if not 0 <= config.augment_shift <= 4:
        fail("augment_shift", f"must be between 0 and 4 pixels, got {config.augment_shift}")
    if config.new_classifier and not config.initial_checkpoint:
        fail("new_classifier", "starts the final layers of an --initial-checkpoint afresh: give one")
    smallest = min_image_size(config.model)
    if config.image_size < smallest:
        fail("image_size", f"{config.image_size} is too small for {config.model}: the minimum is {smallest}")


def to_dict(config):
    return dataclasses.asdict(config)


# Settings newer than the first checkpoints, which lack them and ran with their defaults.
ADDED_LATER = ("initial_checkpoint", "new_classifier", "sync_bn")


def from_dict(values, source):
    """The Config stored in a checkpoint (`source` names it in errors): every setting that
    decides what the run computes must be there; a missing "how" setting takes its default."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: its configuration is not a JSON object")
    missing = sorted(name for name in FIELDS if name not in values and name not in HOW
                     and name not in ADDED_LATER)
    if missing:
        raise ConfigError(f"{source}: its configuration has no {', '.join(repr(m) for m in missing)}: "
                          "the file is incomplete or was written by something else")
    known = {k: v for k, v in values.items() if k in FIELDS}
    try:
        return resolve(Config(**known))
    except ConfigError as err:
        raise ConfigError(f"{source}: its configuration is not valid: {err}") from None
