"""Train Inception-V2/V3 on an MNIST-format data set: python -m models.train --help

    python -m models.train                                                 # quick preset, minutes
    python -m models.train --preset seed --model inception_v3              # the seeds' configuration
    python -m models.train --resume runs/inception_v2_mnist/checkpoint.npz # continue exactly

Loss: cross-entropy of the main head plus aux_weight times each aux head's (training only).
Outputs in --output-dir: config.json (written when the run starts), checkpoint.npz (every epoch,
and on Ctrl-C or SIGTERM), model_best.npz (best validation accuracy), history.csv,
<dataset>_loss.png, <dataset>_accuracy.png, report.md, report.json and confusion_matrix.png
(evaluated with the best model on the training, validation and test sets).

A run is four steps, each a function below: setup() checks everything that can be checked and
builds the run (or restores it from a checkpoint); train_epoch() runs one epoch's batches;
evaluate() measures a split; finish() writes the report. run() calls them in order.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

import data
import nn
from nn import optim
from nn.kernels import warm
from nn.serialization import WriteError, atomic_write

from . import MODELS, build
from . import config as run_config
from . import distributed
from .checkpoint import read_checkpoint, restore, save_checkpoint
from .config import Config, ConfigError
from .distributed import GradientSum, RanksDisagree, World
from .profile import format_profile, profile_step
from .report import (classification_report, confusion_matrix, markdown_report, plot_confusion_matrix,
                     plot_curves, report_json)
from .rundir import RunFolder, RunFolderError
from .weights import CheckpointError, load_weights

HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
# Memory a training step keeps per pixel of each image, in bytes, at width 1 (activations, their
# gradients, workspaces): measured peaks of benchmarks.train_step, minus 16 bytes per parameter
# for the weights, their gradients and AdamW's two moments (docs/performance.md).
STEP_BYTES_PER_PIXEL = 3000
ALONE = World()   # one process: models/distributed.py for several


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run saved what it had and stopped; the message says how to go on."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


# -- command line -----------------------------------------------------------------------------------

def number_arg(kind, minimum=None, strict=True):
    """An argparse type: a finite `kind` above (or at least) `minimum`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if minimum is not None and not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
        return value
    return parse


def build_parser():   # one add_argument per flag, in --help's order: long, and flat on purpose
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    S = argparse.SUPPRESS  # unset flags stay unset, so the preset (or a resumed config) fills them
    p.add_argument("--preset", choices=sorted(run_config.PRESETS), default=S,
                   help="starting configuration (default: quick); explicit flags override it")
    p.add_argument("--model", choices=sorted(MODELS), default=S)
    p.add_argument("--dataset", choices=sorted(data.DATASETS), default=S,
                   help=f"default: {Config.dataset}")
    p.add_argument("--data-dir", default=S, help="folder with the IDX files (else $NN_DATA_DIR, the cache, "
                                                   "or a download)")
    p.add_argument("--no-download", dest="download", action="store_false", default=S,
                   help="never download: fail if the files are not on disk")
    p.add_argument("--epochs", type=number_arg(int, 0), default=S)
    p.add_argument("-b", "--batch-size", type=number_arg(int, 0), default=S)
    p.add_argument("--eval-batch-size", type=number_arg(int, 0), default=S,
                   help="default: the batch size (the same convolution algorithms as training, so "
                        "that a run compiles no Numba kernel of its own for evaluation)")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=number_arg(float, 0), default=S)
    p.add_argument("--opt", choices=["sgd", "adam", "adamw"], default=S)
    p.add_argument("--momentum", type=number_arg(float, 0, strict=False), default=S, help="SGD only")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=number_arg(float, 0, strict=False),
                   default=S)
    p.add_argument("--label-smoothing", "--smoothing", dest="label_smoothing",
                   type=number_arg(float, 0, strict=False), default=S)
    p.add_argument("--aux-weight", type=number_arg(float, 0, strict=False), default=S)
    p.add_argument("--image-size", type=number_arg(int, 0), default=S,
                   help="square input size (the quick preset uses 32; seed: 224 for V2, 299 for V3)")
    p.add_argument("--width", type=number_arg(float, 0), default=S, help="channel width multiplier")
    p.add_argument("--train-subset", type=number_arg(int, 0), default=S,
                   help="use this many training images (before the validation split)")
    p.add_argument("--val-fraction", type=number_arg(float, 0, strict=False), default=S)
    p.add_argument("--augment-shift", type=int, choices=range(0, 5), default=S,
                   help="random shifts of up to this many pixels (training only)")
    p.add_argument("--lr-schedule", choices=["constant", "step", "cosine"], default=S)
    p.add_argument("--warmup-epochs", type=number_arg(float, 0, strict=False), default=S)
    p.add_argument("--lr-step-epochs", type=number_arg(int, 0), default=S,
                   help="step schedule: decay every N epochs")
    p.add_argument("--lr-gamma", type=number_arg(float, 0), default=S, help="step schedule: decay factor")
    p.add_argument("--clip-grad", type=number_arg(float, 0), default=S, help="clip the global gradient norm")
    p.add_argument("--seed", type=number_arg(int), default=S)
    p.add_argument("--initial-checkpoint", metavar="PATH", default=S,
                   help="start from these weights (a checkpoint.npz, model_best.npz, weights .npz or "
                        ".safetensors of the same model and width) with a fresh optimizer: fine-tuning")
    p.add_argument("--new-classifier", action="store_true", default=S,
                   help="with --initial-checkpoint: start the final layers (one output per class) "
                        "afresh, e.g. for a data set with another number of classes")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: mpiexec -n N python -m models.train "
                        "--distributed (found by itself under mpiexec/srun; docs/distributed.md)")
    p.add_argument("--sync-bn", action="store_true", default=S,
                   help="several ranks: batch norm with the statistics of the whole batch (all ranks), "
                        "as one process would compute them; default: each rank's own part")
    p.add_argument("--fixed-reduction-order", action="store_true", default=S,
                   help="several ranks: sum the gradients in rank order on every rank, so that a run "
                        "repeats bit for bit on any MPI (moves N times the bytes)")
    p.add_argument("--output-dir", default=S, help="default: runs/<model>_<dataset>")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --output-dir holds (without it, such a folder is refused)")
    p.add_argument("--resume", metavar="CHECKPOINT", default=None,
                   help="continue the run saved in this checkpoint.npz, with its configuration, "
                        "in its folder (or in --output-dir)")
    p.add_argument("-p", "--print-freq", type=number_arg(int, 0), default=S,
                   help="batches between progress lines when not on a terminal")
    p.add_argument("--prefetch", action="store_true", default=S,
                   help="prepare the next batch in a background thread (preparing one takes 0.2-1.4 ms "
                        "against 0.25-4 s per step here, so it is off by default)")
    p.add_argument("--profile", action="store_true", default=S,
                   help="print where the time of one training step goes (the second step)")
    p.add_argument("--dry-run", action="store_true", default=S,
                   help="one epoch of 2 training batches and 1 evaluation batch: checks the set-up")
    return p


def given_settings(args):
    """The settings given on the command line, by Config field name."""
    return {k: v for k, v in vars(args).items() if k in run_config.FIELDS}


def make_config(args):
    """The preset's settings, then the flags given on the command line (checked)."""
    settings = given_settings(args)
    return run_config.make(settings.pop("preset", "quick"), **settings)


def resumed_config(saved, given, path):
    """A resumed run keeps its configuration; a flag that would change what it computes is
    refused (naming it), a "how" flag (epochs, output folder, ...) is taken."""
    conflicts = [f"{saved.flag(k)} {v!r} (the run has {getattr(saved, k)!r})" for k, v in given.items()
                 if k not in run_config.HOW and v != getattr(saved, k)]
    if conflicts:
        raise ConfigError(f"a resumed run keeps the configuration it was started with; {path} differs in "
                          f"{'; '.join(conflicts)}. Drop these flags to continue the run, or start a new "
                          f"run from its weights with --initial-checkpoint {path}")
    how = {k: v for k, v in given.items() if k in run_config.HOW}
    if "output_dir" not in how:   # the run continues where its checkpoint is, wherever it was moved
        how["output_dir"] = os.path.dirname(os.path.abspath(path))
    return run_config.resolve(dataclasses.replace(saved, **how))


# -- pieces of a run --------------------------------------------------------------------------------

def make_optimizer(model, config):
    params = model.parameters()
    if config.opt == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay, nesterov=False)
    cls = optim.AdamW if config.opt == "adamw" else optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(opt, config, steps_per_epoch):
    """Stepped once per batch: warm-up over warmup_epochs, then constant / step / cosine."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.lr_schedule == "cosine":
        main = optim.CosineAnnealingLR(opt, T_max=total)
    elif config.lr_schedule == "step":
        every = config.lr_step_epochs or max(1, config.epochs // 3)
        main = optim.StepLR(opt, step_size=every * steps_per_epoch, gamma=config.lr_gamma)
    else:
        main = optim.ConstantLR(opt)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup == 0:
        return main
    return optim.ChainedScheduler([optim.LinearWarmup(opt, warmup), main])


def load_data(config, log):
    """The data set's info and its training, validation and test splits (test None if absent)."""
    info = data.dataset_info(config.dataset)
    x, y = data.load_split(config.dataset, "train", config.data_dir, config.download, log=log)
    if config.train_subset and config.train_subset < len(x):
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(x))[:config.train_subset])
        x, y = x[keep], y[keep]
    train_idx, val_idx = data.train_val_split(y, config.val_fraction, seed=config.seed)
    if len(train_idx) == 0:
        raise ConfigError(f"the training set is empty ({len(y)} images in {config.dataset}'s training "
                          f"split, {len(val_idx)} of them for validation): lower --val-fraction or "
                          "check the data files")
    if len(val_idx) == 0:
        raise ConfigError(f"the validation set is empty: raise --val-fraction (got {config.val_fraction}) "
                          f"or the training subset ({len(y)} images)")
    try:
        test = data.load_split(config.dataset, "test", config.data_dir, config.download, log=log)
    except data.DataNotFoundError as err:
        log(f"note: no test set ({str(err).splitlines()[0]}); the report covers training and validation")
        test = None
    return info, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), test


def loader(split, config, info, train=False, world=ALONE):
    """Training: shuffled batches of -b images, of which each rank prepares its part.
    Evaluation: in order; on several ranks each takes every N-th image, in batches of its share
    of the evaluation batch."""
    images, labels = split
    if train:
        return data.BatchLoader(images, labels, config.batch_size, config.image_size, info.mean, info.std,
                                shuffle=True, seed=config.seed, drop_last=len(images) > config.batch_size,
                                augment_shift=config.augment_shift, prefetch=config.prefetch,
                                shard=(world.rank, world.size))
    bs = -(-(config.eval_batch_size or config.batch_size) // world.size)
    return data.BatchLoader(images[world.rank::world.size], labels[world.rank::world.size], bs,
                            config.image_size, info.mean, info.std, prefetch=config.prefetch)


def check_world(config, world, n_train, meta):
    """Several ranks: the batch splits into equal parts and fills at least once; a resumed run
    has as many ranks as the run that saved it (each rank's own state is saved)."""
    saved = meta.get("world_size", 1) if meta else world.size
    if saved != world.size:
        how = f"mpiexec -n {saved} python -m models.train --resume ..." if saved > 1 else "one process"
        raise ConfigError(f"this run was saved by {saved} rank(s) and is resumed by {world.size}: each "
                          f"rank's dropout and batch-norm state is saved for {saved}. Resume it with {how}, "
                          "or start a new run from its weights with --initial-checkpoint")
    if world.size == 1:
        return
    if config.batch_size % world.size:
        raise ConfigError(f"-b/--batch-size {config.batch_size} does not split into {world.size} equal "
                          f"parts, one per rank: choose a multiple of {world.size}")
    if n_train < config.batch_size:
        raise ConfigError(f"{n_train} training images do not fill one batch of {config.batch_size} "
                          f"(several ranks train on whole batches only): lower -b/--batch-size")


def check_memory(model, config, world=ALONE):
    """Refuse a step that cannot fit in this machine's memory before allocating it, naming the
    flags that size it (an --image-size of 100000 would otherwise fail deep inside NumPy).
    Ranks on one machine each hold a model and their part of the batch."""
    available = _available_memory()
    if available is None:
        return
    need = world.local_size * (16 * model.num_parameters() + STEP_BYTES_PER_PIXEL * config.width
                               * config.batch_size // world.size * config.image_size ** 2)
    if need > available:
        raise ConfigError(f"--image-size {config.image_size} with -b {config.batch_size} needs about "
                          f"{need / 2**30:,.1f} GiB for a training step of {config.model}; this machine has "
                          f"{available / 2**30:.1f} GiB available: lower --image-size or -b/--batch-size")


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM set a flag that the run reads between steps and between
    evaluation batches, so that a checkpoint is never taken in the middle of an update, and
    nothing is ever interrupted inside a Numba kernel (which turns a KeyboardInterrupt into a
    SystemError). Pressing Ctrl-C again changes nothing: the run is already stopping."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log=print):
        self.signum, self.log, self.previous = None, log, {}

    @property
    def requested(self):
        return self.signum is not None

    def __enter__(self):
        def handler(signum, frame):
            if self.signum is None:
                self.log(f"\n{signal.Signals(signum).name}: stopping after this batch, saving a checkpoint")
            self.signum = self.signum or signum
        try:
            self.previous = {s: signal.signal(s, handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self.previous = {}
        return self

    def __exit__(self, *exc):
        for s, previous in self.previous.items():
            signal.signal(s, previous)

    def stop(self, message):
        raise Interrupted(message, self.signum)


def evaluate(model, batches, criterion, num_classes, max_batches=None, stop=None, world=ALONE):
    """Eval-mode pass: (mean main-head loss, confusion matrix). Restores the model's mode.
    Raises Interrupted between batches once `stop` is requested (on any rank). On several
    ranks, `batches` are this rank's images; the figures are those of all ranks' images."""
    was_training = model.training
    model.eval()
    total_loss, count = 0.0, 0
    cm = np.zeros((num_classes, num_classes), np.int64)
    batches = iter(batches)
    try:
        for i in range(max_batches if max_batches is not None else sys.maxsize):
            batch = next(batches, None)
            # every rank learns whether any was asked to stop, and whether any has images left
            asked, left = world.sum(np.array([stop is not None and stop.requested, batch is not None]))
            if asked:
                stop.stop("evaluation interrupted")
            if not left:
                break
            if batch is None:
                continue
            x, y = batch
            with nn.no_grad():   # keeps no layer's cache: a fraction of a training step's memory
                logits = model(x)
            total_loss += criterion(logits, y) * len(y)
            count += len(y)
            cm += confusion_matrix(y, logits.argmax(axis=1), num_classes)
    finally:
        model.train(was_training)
    totals = world.sum(np.concatenate([[total_loss, count], cm.ravel()]).astype(np.float64))
    return totals[0] / max(totals[1], 1), totals[2:].round().astype(np.int64).reshape(cm.shape)


def train_step(model, x, y, criteria, aux_weight, opt, clip_grad, world=ALONE, grad_sum=None):
    """Forward, loss (main + aux_weight * aux), backward, update. Returns (main loss, total, logits).

    On several ranks, x and y are this rank's part of the batch: the losses returned are the
    whole batch's (the mean of the ranks' means: their parts are equal), not finite if any
    rank's is not, and grad_sum (a GradientSum) makes the gradients the whole batch's before
    the update, which every rank then takes alike."""
    opt.zero_grad()
    outs = model(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    losses = [c(o, y) for c, o in zip(criteria, outs)]
    main, total = losses[0], losses[0] + aux_weight * sum(losses[1:])
    if world.size > 1:
        main, total = world.sum(np.array([main, total])) / world.size
    if not math.isfinite(total):
        return main, total, outs[0]
    grads = [criteria[0].backward()] + [c.backward(aux_weight) for c in criteria[1:len(outs)]]
    model.backward(*grads)
    if grad_sum is not None:
        grad_sum()
    if clip_grad:
        optim.clip_grad_norm_(model.parameters(), clip_grad)
    opt.step()
    return main, total, outs[0]


class Progress:
    """A tqdm bar on a terminal; plain progress lines every print_freq batches otherwise."""

    def __init__(self, total, desc, print_freq, log, initial=0, show=True):
        self.total, self.desc, self.print_freq, self.log = total, desc, print_freq, log
        self.n, self.start = initial, time.perf_counter()
        self.bar = None
        if show and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=True,
                            dynamic_ncols=True)

    def update(self, loss, acc, images_per_s):
        self.n += 1
        text = f"loss={loss:.4f} acc={100 * acc:.2f}% {images_per_s:.1f} img/s"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.n % self.print_freq == 0 or self.n == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(self.n, 1) * (self.total - self.n)
            self.log(f"{self.desc} [{self.n:>{len(str(self.total))}}/{self.total}] {text} "
                     f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def write_history(path, history):
    def write(f):
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_FIELDS})
    atomic_write(path, write, mode="w")


def describe(config, n_train, n_val, steps_per_epoch, ranks=1):
    name = {"inception_v2": "Inception-V2", "inception_v3": "Inception-V3"}[config.model]
    width = "" if config.width == 1 else f" (width x{config.width:g})"
    batches = f"{steps_per_epoch} batches of {config.batch_size}"
    if ranks > 1:
        batches += f" ({ranks} ranks x {config.batch_size // ranks} images"
        batches += ", batch norm over all ranks)" if config.sync_bn else ")"
    return (f"{config.preset} preset: {name}{width} at {config.image_size}x{config.image_size}"
            f" on {config.dataset}, {n_train:,} training / {n_val:,} validation images, "
            f"{config.epochs} epoch{'s' if config.epochs > 1 else ''} of {batches}; "
            f"{config.opt} lr {config.lr:g} ({config.lr_schedule}), weight decay "
            f"{config.weight_decay:g}, label smoothing {config.label_smoothing:g}, "
            f"aux weight {config.aux_weight:g}; outputs in {config.output_dir}")


# -- the run ----------------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything a run holds between its steps."""
    config: Config
    folder: RunFolder
    info: object
    splits: dict                 # "training", "validation", "testing" (if any): (images, labels)
    model: nn.Module
    opt: optim.Optimizer
    sched: optim.LRScheduler
    criteria: list
    train_loader: data.BatchLoader
    steps_per_epoch: int
    meta: dict
    log: object = print
    stop: StopRequest = None
    eval_batches: int = None     # --dry-run: one batch per evaluation
    timing: dict = field(default_factory=dict)
    world: World = ALONE
    grad_sum: GradientSum = None   # several ranks: sums the gradients over them

    @property
    def num_classes(self):
        return len(self.info.classes)

    def evaluate(self, split):
        """(mean loss, confusion matrix) of a split, shared out between the ranks."""
        return evaluate(self.model, loader(self.splits[split], self.config, self.info, world=self.world),
                        self.criteria[0], self.num_classes, self.eval_batches, self.stop, self.world)

    def save(self, epoch, step, running, best=False):
        """The checkpoint (and, if best, the best model), written by rank 0. On several ranks
        their weights are checked to be the same, and each one's own state is saved."""
        self.meta.update(epoch=epoch, step=step, running=running)
        if self.world.size > 1:
            distributed.check_same_weights(self.model, self.world)
            states = self.world.gather(distributed.rank_state(self.model))
            if self.world.is_root:
                self.meta["rank_states"] = states
        names = ["checkpoint.npz"] + (["model_best.npz"] if best else [])
        self.world.root_does(lambda: [save_checkpoint(self.folder.file(name), self.model, self.opt, self.sched,
                                                      self.meta) for name in names])

    def interrupted(self, where):
        path = self.folder.file("checkpoint.npz")
        self.stop.stop(f"interrupted {where}: saved {path}; continue with --resume {path}")


def setup(config, resume=None, overwrite=False, log=print, world=ALONE):
    """Check what can be checked, then build the run: new, or restored from `resume` (whose
    config is then `config`: see resumed_config). On several ranks, rank 0 alone reads the
    checkpoint and owns the folder; a failure on any rank stops them all (World.together)."""
    arrays = world.root_does(lambda: read_checkpoint(resume), share=True) if resume is not None else None
    run_id = arrays["meta"].get("run_id") if arrays is not None else None
    folder = RunFolder(config.output_dir)
    stale = world.root_does(lambda: folder.claim(run_id or "new run", overwrite=overwrite))
    try:
        if stale:
            log(f"removed {len(stale)} temporary file(s) left by an interrupted write in {folder.path}")
        info, train_split, val_split, test_split = world.root_first(lambda: load_data(config, log))
        check_world(config, world, len(train_split[1]), arrays and arrays["meta"])
        model = build_model(config, info, world, log, fresh=arrays is None)
        train_loader = loader(train_split, config, info, train=True, world=world)
        steps_per_epoch = 2 if config.dry_run else len(train_loader)
        opt = make_optimizer(model, config)
        sched = make_scheduler(opt, config, steps_per_epoch)
        meta = {"config": run_config.to_dict(config), "run_id": uuid.uuid4().hex, "epoch": 0, "step": 0,
                "history": [], "best_val_accuracy": -1.0, "best_epoch": 0, "running": [0.0, 0, 0],
                "world_size": world.size}
        if arrays is not None:
            meta = restore(arrays, resume, model, opt, sched)
            if world.size > 1:
                distributed.restore_rank_state(model, meta["rank_states"][world.rank])
            meta.update(config=run_config.to_dict(config), world_size=world.size)
            meta.setdefault("run_id", run_id or uuid.uuid4().hex)
            world.root_does(lambda: _bring_best_model(resume, folder, meta, log))
            log(f"resumed from {resume}: epoch {meta['epoch'] + 1}, batch {meta['step']}")
        splits = {"training": train_split, "validation": val_split}
        if test_split is not None:
            splits["testing"] = test_split
        world.root_does(lambda: atomic_write(folder.file("config.json"),
                                             lambda f: json.dump(run_config.to_dict(config), f, indent=2), mode="w"))
    except BaseException:
        folder.release()
        raise
    return Run(config, folder, info, splits, model, opt, sched,
               [nn.CrossEntropyLoss(label_smoothing=config.label_smoothing) for _ in range(3)],
               train_loader, steps_per_epoch, meta, log, eval_batches=1 if config.dry_run else None,
               world=world, grad_sum=GradientSum(model.parameters(), world) if world.size > 1 else None)


def build_model(config, info, world, log, fresh):
    """The model, seeded; started from --initial-checkpoint's weights if fresh and asked; its
    batch norms synchronised over the ranks with --sync-bn; its dropout seeded per rank."""
    nn.manual_seed(config.seed)
    model = build(config.model, num_classes=len(info.classes), width=config.width)
    model.input_grad = False   # training needs no gradient of the images: skip it
    if config.initial_checkpoint and fresh:
        start_from(model, config, log, world)
    world.together(lambda: check_memory(model, config, world))
    if config.sync_bn and world.size > 1:
        nn.convert_sync_batchnorm(model, world.sum)
    rank = [world.rank] if world.size > 1 else []   # ranks drop different units
    for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Dropout)):
        m.reseed([config.seed, i, *rank])
    return model


def start_from(model, config, log, world=ALONE):
    """Fine-tuning: the weights of --initial-checkpoint, all of them or all but the classifier
    layers (--new-classifier), which keep their fresh initialisation."""
    path = config.initial_checkpoint
    skip = {f"{layer}.{p}" for layer in model.CLASSIFIERS for p in ("weight", "bias")}
    try:
        world.together(lambda: load_weights(model, path, skip if config.new_classifier else ()))
    except CheckpointError as err:
        if not config.new_classifier and any(f"'{key}' has shape" in str(err) for key in skip):
            raise ConfigError(f"{err}; its classifier has another number of classes than "
                              f"{config.dataset}: add --new-classifier to start the final layers afresh") from None
        raise
    log(f"started from the weights of {path}" + (" (new final layers)" if config.new_classifier else ""))


def _bring_best_model(resume, folder, meta, log):
    """A run resumed into another folder takes its best model along (the report needs it)."""
    source = os.path.join(os.path.dirname(os.path.abspath(resume)), "model_best.npz")
    target = folder.file("model_best.npz")
    if os.path.abspath(source) != os.path.abspath(target) and os.path.exists(source):
        with open(source, "rb") as f:
            payload = f.read()
        atomic_write(target, lambda out: out.write(payload))
        log(f"copied the run's best model so far (epoch {meta['best_epoch']}) to {target}")


def train_epoch(run, epoch):
    """One epoch's training batches (from where a resumed run stopped); returns (loss sum,
    correct, seen). Raises TrainingDiverged on a NaN or infinite loss, Interrupted (after
    saving) when asked to stop."""
    config, meta = run.config, run.meta
    start_step = meta["step"] if epoch == meta["epoch"] else 0
    loss_sum, correct, seen = meta["running"] if start_step else (0.0, 0, 0)
    run.train_loader.set_epoch(epoch, start_step)
    run.model.train()
    progress = Progress(run.steps_per_epoch, f"Epoch {epoch + 1}/{config.epochs}", config.print_freq,
                        run.log, initial=start_step, show=run.world.is_root)
    step = start_step
    try:
        for x, y in run.train_loader:
            if step >= run.steps_per_epoch:
                break
            t = time.perf_counter()
            loss, total, logits = _step(run, x, y, profile=config.profile and step == start_step + 1)
            if not math.isfinite(total):
                path = run.folder.file("checkpoint.npz")
                last = (f"the last good checkpoint is {path} (epoch {meta['epoch']})"
                        if os.path.exists(path) else "no checkpoint was saved yet")
                raise TrainingDiverged(
                    f"the loss became {total} at epoch {epoch + 1}, batch {step + 1} (global step "
                    f"{epoch * run.steps_per_epoch + step + 1}); stopping. Lower --lr or set --clip-grad; {last}")
            run.sched.step()
            step += 1
            # the whole batch's count of right answers and size, and whether any rank must stop
            right, size, stop = run.world.sum(np.array([(logits.argmax(axis=1) == y).sum(), len(y),
                                                        run.stop.requested], np.float64))
            loss_sum += loss * size
            correct += int(right)
            seen += int(size)
            progress.update(loss_sum / seen, correct / seen, size / (time.perf_counter() - t))
            _estimate(run, step - start_step)
            if stop:
                progress.close()
                run.save(epoch, step, [loss_sum, correct, seen])
                run.interrupted(f"at epoch {epoch + 1}, batch {step}")
    finally:
        progress.close()
    if step > start_step and not config.sync_bn:   # each rank's running statistics -> their mean
        distributed.average_running_statistics(run.model, run.world)
    return loss_sum, correct, seen


def _step(run, x, y, profile):
    one_step = lambda: train_step(run.model, x, y, run.criteria, run.config.aux_weight, run.opt,
                                  run.config.clip_grad, run.world, run.grad_sum)
    try:
        if profile:  # the first step loads the kernels: profile the second
            result, timings = profile_step(run.model, one_step)
            run.log(format_profile(timings, len(y)))
            return result
        return one_step()
    except nn.batchnorm.TooFewValues as err:
        raise ConfigError(f"{err}: batch norm needs more than one value per channel to train, and at "
                          f"--image-size {run.config.image_size} the last layers see small maps; raise "
                          f"-b/--batch-size (batches of {len(y)} image(s) here)") from None


def _estimate(run, steps_done):
    """After the first step (which loads the kernels), time the next three and print the estimate."""
    if steps_done == 1:
        run.timing["after_first"] = time.perf_counter()
    elif steps_done == 4 and "after_first" in run.timing and "estimated" not in run.timing:
        per_step = (time.perf_counter() - run.timing["after_first"]) / 3
        run.timing["estimated"] = per_step
        minutes = per_step * run.steps_per_epoch / 60
        run.log(f"about {per_step:.2f} s per batch: {minutes:.1f} min per epoch, "
                f"{minutes * run.config.epochs:.1f} min for the run (estimate)")


def end_epoch(run, epoch, sums, seconds):
    """Evaluate on the validation set, record the epoch, save the checkpoint (and the best model),
    the history and the curves."""
    loss_sum, correct, seen = sums
    meta = run.meta
    try:
        val_loss, val_cm = run.evaluate("validation")
    except Interrupted:   # redo only the evaluation on resume: the epoch's batches are done
        run.save(epoch, run.steps_per_epoch, [loss_sum, correct, seen])
        run.interrupted(f"during the evaluation after epoch {epoch + 1}")
    val_acc = float(np.trace(val_cm) / max(val_cm.sum(), 1))
    row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
           "val_loss": float(val_loss), "val_accuracy": val_acc, "lr": run.opt.param_groups[0]["lr"],
           "seconds": seconds}
    meta["history"].append(row)
    run.log(f"Epoch {epoch + 1}/{run.config.epochs} - {seconds:.1f}s - loss: {row['train_loss']:.4f}"
            f" - accuracy: {row['train_accuracy']:.4f} - val_loss: {val_loss:.4f} - val_accuracy: "
            f"{val_acc:.4f} - lr: {row['lr']:.3g}")
    if val_acc > meta["best_val_accuracy"]:
        meta.update(best_val_accuracy=val_acc, best_epoch=epoch + 1)
    run.save(epoch + 1, 0, [0.0, 0, 0], best=meta["best_epoch"] == epoch + 1)
    run.world.root_does(lambda: (write_history(run.folder.file("history.csv"), meta["history"]),
                                 plot_curves(meta["history"], run.folder.path, run.config.dataset)))


def finish(run):
    """Evaluate the best model on every split and write report.md, report.json and the
    confusion matrix of the last split. Returns the report as a dict."""
    config, meta = run.config, run.meta
    best = run.folder.file("model_best.npz")
    run.log(f"evaluating the best model (epoch {meta['best_epoch']}) on the "
            f"{', '.join(run.splits)} sets for the report")
    arrays = run.world.root_does(lambda: read_checkpoint(best) if os.path.exists(best) else None, share=True)
    if arrays is not None:
        restore(arrays, best, run.model)
        heading = (f"# {config.model} on {config.dataset}\n\nBest validation accuracy at epoch "
                   f"{meta['best_epoch']} of {config.epochs}; figures of that model.")
    else:
        heading = (f"# {config.model} on {config.dataset}\n\n(no best model was found in "
                   f"{run.folder.path}: figures of the model after epoch {meta['epoch']})")
    report = report_on(run.model, config, run.info, run.splits, run.criteria[0], heading, run.log,
                       run.eval_batches, run.stop, run.world)
    report.update(best_epoch=meta["best_epoch"], history=meta["history"], ranks=run.world.size)
    markdown = report.pop("markdown")
    run.world.root_does(lambda: write_report(run, report, markdown))
    return report


def write_report(run, report, markdown):
    """report.md, report.json and the confusion matrix of the last split."""
    config, last = run.config, list(report["splits"])[-1]
    plot_confusion_matrix(np.array(report["splits"][last]["confusion_matrix"]), list(run.info.classes),
                          run.folder.file("confusion_matrix.png"), f"{config.model} on {config.dataset}, {last}")
    atomic_write(run.folder.file("report.md"), lambda f: f.write(markdown + "\n"), mode="w")
    atomic_write(run.folder.file("report.json"), lambda f: json.dump(report, f, indent=2), mode="w")


def run(config, resume=None, overwrite=False, log=print, world=ALONE):
    """Train as configured (or continue `resume`, whose configuration `config` then is); returns
    the final report as a dict. `world`: the ranks of a data-parallel run (models/distributed.py)."""
    the_run = setup(config, resume, overwrite, log, world)
    try:
        with StopRequest(log) as stop:
            the_run.stop = stop
            log(describe(config, len(the_run.splits["training"][1]), len(the_run.splits["validation"][1]),
                         the_run.steps_per_epoch, world.size))
            if world.root_does(warm.needed, share=True):
                log("compiling the Numba kernels for this machine, on two cores (once: they are "
                    "cached for later runs): about 10 s")
                world.root_does(warm.warm)
            for epoch in range(the_run.meta["epoch"], config.epochs):
                t0 = time.perf_counter()
                sums = train_epoch(the_run, epoch)
                end_epoch(the_run, epoch, sums, time.perf_counter() - t0)
                if world.any(stop.requested) and epoch + 1 < config.epochs:
                    the_run.interrupted(f"after epoch {epoch + 1}")
            try:
                return finish(the_run)
            except Interrupted:
                stop.stop(f"interrupted while writing the report: the run is complete and saved in "
                          f"{the_run.folder.path}; python -m models.evaluate --checkpoint "
                          f"{the_run.folder.file('model_best.npz')} prints the report")
    finally:
        the_run.folder.release()


def report_on(model, config, info, splits, criterion, heading, log, max_batches=None, stop=None,
              world=ALONE):
    """Evaluate on each split and print the seeds' tables and the last split's classification
    report. Returns {"config", "splits": figures, "markdown": the tables}."""
    results = {}
    for name, split in splits.items():
        loss, cm = evaluate(model, loader(split, config, info, world=world), criterion, len(info.classes),
                            max_batches, stop, world)
        results[name] = {"loss": float(loss), "cm": cm}
    markdown = heading + "\n\n" + markdown_report(results, list(info.classes))
    log("\n" + markdown)
    last = list(results)[-1]
    log(f"\n{last} set:\n" + classification_report(results[last]["cm"], list(info.classes)))
    return {"config": run_config.to_dict(config), "splits": report_json(results, list(info.classes)),
            "markdown": markdown}


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        world = distributed.connect(args.distributed)
    except RuntimeError as err:
        parser.exit(2, f"error: {err}\n")
    # Several ranks meet the same errors together (World.together): rank 0 alone reports them.
    say = (lambda text: print(text, file=sys.stderr)) if world.is_root else (lambda text: None)
    try:
        if args.resume is not None:
            saved = world.root_does(lambda: read_checkpoint(args.resume)["config"], share=True)
            config = resumed_config(saved, given_settings(args), args.resume)
        else:
            config = make_config(args)
        world.fixed_order = config.fixed_reduction_order
        run(config, resume=args.resume, overwrite=args.overwrite, log=print if world.is_root else _quiet,
            world=world)
    except Interrupted as stopped:
        say(f"\n{stopped}")
        return EXIT_CODES.get(stopped.signum, 130)
    except KeyboardInterrupt:   # before the run's own handler was in place
        if world.size > 1:      # the ranks may be at different places: stop them all
            distributed.abort_on_error(world, 130)
        say("stopped.")
        return 130
    except (TrainingDiverged, WriteError, RanksDisagree) as err:
        say(f"error: {err}")
        return 1
    except (data.DataNotFoundError, data.IDXError, FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n" if world.is_root else None)
    except Exception:
        if world.size > 1:   # met by this rank alone (a bug, no memory): the others would wait
            distributed.abort_on_error(world)
        raise
    return 0


def _quiet(*args, **kwargs):
    """The log of the ranks other than 0."""


if __name__ == "__main__":
    sys.exit(main())
