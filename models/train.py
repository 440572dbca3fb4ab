"""Train Inception-V2/V3 on an MNIST-format data set: python -m models.train --help

    python -m models.train --data-dir ../shared/data/mnist-mini            # quick preset, minutes
    python -m models.train --preset seed --model inception_v3              # the seeds' configuration
    python -m models.train --resume runs/inception_v2_mnist/checkpoint.npz # continue exactly

Loss: cross-entropy of the main head plus aux_weight times each aux head's (training only).
Outputs in --output-dir: checkpoint.npz (every epoch, and on Ctrl-C), model_best.npz (best
validation accuracy), history.csv, <dataset>_loss.png, <dataset>_accuracy.png, report.md and
report.json (loss, accuracy and per-class precision/recall/F1 on the training, validation and
test sets, evaluated with the best model).
"""
import argparse
import csv
import json
import math
import os
import signal
import sys
import time

import nn  # first: lets idle BLAS and OpenMP threads sleep (nn/runtime.py)
import numpy as np

import data
from nn import optim
from nn.serialization import atomic_write

from . import DEFAULT_IMAGE_SIZE, MODELS, build, min_image_size
from .checkpoint import read_checkpoint, restore, save_checkpoint
from .profile import format_profile, profile_step
from .report import classification_report, confusion_matrix, markdown_report, plot_curves, report_json

PRESETS = {
    # Shows real learning in minutes on 2 cores: a small image and a training subset.
    "quick": dict(model="inception_v2", image_size=32, epochs=3, batch_size=32, lr=2e-3, opt="adamw",
                  weight_decay=0.01, momentum=0.9, label_smoothing=0.0, aux_weight=0.3,
                  train_subset=8000, val_fraction=0.1, lr_schedule="cosine", warmup_epochs=0.1),
    # The seeds' experiment: AdamW lr 1e-4, batch 32, aux 0.3, smoothing 1e-4, wd 0.01, 10 epochs,
    # at the model's own input size (224 for V2, 299 for V3).
    "seed": dict(model="inception_v3", image_size=None, epochs=10, batch_size=32, lr=1e-4, opt="adamw",
                 weight_decay=0.01, momentum=0.9, label_smoothing=1e-4, aux_weight=0.3,
                 train_subset=None, val_fraction=0.1, lr_schedule="constant", warmup_epochs=0.0),
}
DEFAULTS = dict(dataset="mnist", download=True, seed=0, width=1.0, data_dir=None, output_dir=None, augment_shift=0,
                lr_step_epochs=None, lr_gamma=0.1, clip_grad=None, print_freq=50, dry_run=False, profile=False,
                eval_batch_size=None, prefetch=False)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


# -- command line -----------------------------------------------------------------------------------

def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _fraction(text):
    value = _nonnegative_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    S = argparse.SUPPRESS  # unset flags stay unset, so a preset (or a resumed config) fills them
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="starting configuration; explicit flags override it")
    p.add_argument("--model", choices=sorted(MODELS), default=S)
    p.add_argument("--dataset", choices=sorted(data.DATASETS), default=S, help="default: mnist")
    p.add_argument("--data-dir", default=S, help="folder with the IDX files (else $NN_DATA_DIR, the cache, "
                                                   "or a download)")
    p.add_argument("--no-download", dest="download", action="store_false", default=S,
                   help="never download: fail if the files are not on disk")
    p.add_argument("--epochs", type=_positive(int), default=S)
    p.add_argument("-b", "--batch-size", type=_positive(int), default=S)
    p.add_argument("--eval-batch-size", type=_positive(int), default=S, help="default: 2 x batch size")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=_positive(float), default=S)
    p.add_argument("--opt", choices=["sgd", "adam", "adamw"], default=S)
    p.add_argument("--momentum", type=_nonnegative_float, default=S, help="SGD only")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=_nonnegative_float, default=S)
    p.add_argument("--label-smoothing", "--smoothing", dest="label_smoothing", type=_fraction, default=S)
    p.add_argument("--aux-weight", type=_nonnegative_float, default=S)
    p.add_argument("--image-size", type=_positive(int), default=S,
                   help="square input size (the quick preset uses 32; seed: 224 for V2, 299 for V3)")
    p.add_argument("--width", type=_positive(float), default=S, help="channel width multiplier")
    p.add_argument("--train-subset", type=_positive(int), default=S,
                   help="use this many training images (before the validation split)")
    p.add_argument("--val-fraction", type=_fraction, default=S)
    p.add_argument("--augment-shift", type=int, choices=range(0, 5), default=S,
                   help="random shifts of up to this many pixels (training only)")
    p.add_argument("--lr-schedule", choices=["constant", "step", "cosine"], default=S)
    p.add_argument("--warmup-epochs", type=_nonnegative_float, default=S)
    p.add_argument("--lr-step-epochs", type=_positive(int), default=S, help="step schedule: decay every N epochs")
    p.add_argument("--lr-gamma", type=_positive(float), default=S, help="step schedule: decay factor")
    p.add_argument("--clip-grad", type=_positive(float), default=S, help="clip the global gradient norm")
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--output-dir", default=S, help="default: runs/<model>_<dataset>")
    p.add_argument("--resume", metavar="CHECKPOINT", default=None,
                   help="continue the run saved in this checkpoint.npz, with its configuration")
    p.add_argument("-p", "--print-freq", type=_positive(int), default=S,
                   help="batches between progress lines when not on a terminal")
    p.add_argument("--prefetch", action="store_true", default=S,
                   help="prepare the next batch in a background thread (preparing one takes 0.2-1.4 ms "
                        "against 0.25-4 s per step here, so it is off by default)")
    p.add_argument("--profile", action="store_true", default=S,
                   help="print where the time of one training step goes (the second step)")
    p.add_argument("--dry-run", action="store_true", default=S,
                   help="one epoch of 2 training batches and 1 evaluation batch: checks the set-up")
    return p


def make_config(args):
    """Preset values, then defaults, then the flags given on the command line."""
    given = {k: v for k, v in vars(args).items() if k not in ("preset", "resume")}
    config = {**DEFAULTS, **PRESETS[args.preset], **given, "preset": args.preset}
    if config["image_size"] is None:
        config["image_size"] = DEFAULT_IMAGE_SIZE[config["model"]]
    if config["output_dir"] is None:
        config["output_dir"] = os.path.join("runs", f"{config['model']}_{config['dataset']}")
    if config["dry_run"]:
        config["epochs"] = 1
    return config


# -- pieces of a run --------------------------------------------------------------------------------

def make_optimizer(model, config):
    params = model.parameters()
    if config["opt"] == "sgd":
        return optim.SGD(params, lr=config["lr"], momentum=config["momentum"],
                         weight_decay=config["weight_decay"], nesterov=False)
    cls = optim.AdamW if config["opt"] == "adamw" else optim.Adam
    return cls(params, lr=config["lr"], weight_decay=config["weight_decay"])


def make_scheduler(opt, config, steps_per_epoch):
    """Stepped once per batch: warm-up over warmup_epochs, then constant / step / cosine."""
    total = max(1, config["epochs"] * steps_per_epoch)
    schedule = config["lr_schedule"]
    if schedule == "cosine":
        main = optim.CosineAnnealingLR(opt, T_max=total)
    elif schedule == "step":
        every = config["lr_step_epochs"] or max(1, config["epochs"] // 3)
        main = optim.StepLR(opt, step_size=every * steps_per_epoch, gamma=config["lr_gamma"])
    else:
        main = optim.ConstantLR(opt)
    warmup = int(round(config["warmup_epochs"] * steps_per_epoch))
    if warmup == 0:
        return main
    return optim.ChainedScheduler([optim.LinearWarmup(opt, warmup), main])


def load_data(config, log):
    info = data.dataset_info(config["dataset"])
    x, y = data.load_split(config["dataset"], "train", config["data_dir"], config["download"], log=log)
    if config["train_subset"] and config["train_subset"] < len(x):
        keep = np.sort(np.random.default_rng(config["seed"]).permutation(len(x))[:config["train_subset"]])
        x, y = x[keep], y[keep]
    train_idx, val_idx = data.train_val_split(y, config["val_fraction"], seed=config["seed"])
    if len(val_idx) == 0:
        raise ValueError(f"the validation set is empty: raise --val-fraction (got {config['val_fraction']}) "
                         f"or the training subset ({len(y)} images)")
    try:
        test = data.load_split(config["dataset"], "test", config["data_dir"], config["download"], log=log)
    except data.DataNotFoundError as err:
        log(f"note: no test set ({str(err).splitlines()[0]}); the report covers training and validation")
        test = None
    return info, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), test


def loader(split, config, info, train=False):
    images, labels = split
    bs = config["batch_size"] if train else (config["eval_batch_size"] or 2 * config["batch_size"])
    return data.BatchLoader(images, labels, bs, config["image_size"], info.mean, info.std,
                            shuffle=train, seed=config["seed"], drop_last=train and len(images) > bs,
                            augment_shift=config["augment_shift"] if train else 0,
                            prefetch=config["prefetch"])


def evaluate(model, batches, criterion, num_classes, max_batches=None):
    """Eval-mode pass: (mean main-head loss, confusion matrix). Restores the model's mode."""
    was_training = model.training
    model.eval()
    total_loss, count = 0.0, 0
    cm = np.zeros((num_classes, num_classes), np.int64)
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            with nn.no_grad():   # keeps no layer's cache: a fraction of a training step's memory
                logits = model(x)
            total_loss += criterion(logits, y) * len(y)
            count += len(y)
            cm += confusion_matrix(y, logits.argmax(axis=1), num_classes)
    finally:
        model.train(was_training)
    return total_loss / max(count, 1), cm


def train_step(model, x, y, criteria, aux_weight, opt, clip_grad):
    """Forward, loss (main + aux_weight * aux), backward, update. Returns (main loss, total, logits)."""
    opt.zero_grad()
    outs = model(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    losses = [c(o, y) for c, o in zip(criteria, outs)]
    total = losses[0] + aux_weight * sum(losses[1:])
    if not math.isfinite(total):
        return losses[0], total, outs[0]
    grads = [criteria[0].backward()] + [c.backward(aux_weight) for c in criteria[1:len(outs)]]
    model.backward(*grads)
    if clip_grad:
        optim.clip_grad_norm_(model.parameters(), clip_grad)
    opt.step()
    return losses[0], total, outs[0]


class Progress:
    """A tqdm bar on a terminal; plain progress lines every print_freq batches otherwise."""

    def __init__(self, total, desc, print_freq, log, initial=0):
        self.total, self.desc, self.print_freq, self.log = total, desc, print_freq, log
        self.n, self.start = initial, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
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


class StopRequest:
    """Ctrl-C sets a flag that the loop reads between steps, so a checkpoint is never taken in
    the middle of an update; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# Flags that may differ in a resumed run; everything else comes from the checkpoint.
RESUME_OVERRIDES = ("epochs", "data_dir", "download", "output_dir", "print_freq", "prefetch")
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def write_history(path, history):
    def write(f):
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_FIELDS})
    atomic_write(path, write, mode="w")


def describe(config, n_train, n_val, steps_per_epoch):
    name = {"inception_v2": "Inception-V2", "inception_v3": "Inception-V3"}[config["model"]]
    width = "" if config["width"] == 1 else f" (width x{config['width']:g})"
    return (f"{config['preset']} preset: {name}{width} at {config['image_size']}x{config['image_size']}"
            f" on {config['dataset']}, {n_train:,} training / {n_val:,} validation images, "
            f"{config['epochs']} epochs of {steps_per_epoch} batches of {config['batch_size']}; "
            f"{config['opt']} lr {config['lr']:g} ({config['lr_schedule']}), weight decay "
            f"{config['weight_decay']:g}, label smoothing {config['label_smoothing']:g}, "
            f"aux weight {config['aux_weight']:g}; outputs in {config['output_dir']}")


# -- the run ----------------------------------------------------------------------------------------

def run(config, resume=None, log=print):
    """Train as configured (or continue `resume`); returns the final report as a dict."""
    if resume is not None:
        arrays = read_checkpoint(resume)
        saved = json.loads(str(arrays["meta"]))["config"]
        keep = {k: config[k] for k in RESUME_OVERRIDES if config.get(f"_{k}_given")}
        config = {**saved, **keep}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if config["image_size"] < min_image_size(config["model"]):
        raise ValueError(f"--image-size {config['image_size']} is too small for {config['model']}: "
                         f"the minimum is {min_image_size(config['model'])}")
    out = config["output_dir"]
    os.makedirs(out, exist_ok=True)
    info, train_split, val_split, test_split = load_data(config, log)
    num_classes = len(info.classes)

    nn.manual_seed(config["seed"])
    model = build(config["model"], num_classes=num_classes, width=config["width"])
    for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Dropout)):
        m.reseed([config["seed"], i])
    train_loader = loader(train_split, config, info, train=True)
    steps_per_epoch = 2 if config["dry_run"] else len(train_loader)
    opt = make_optimizer(model, config)
    sched = make_scheduler(opt, config, steps_per_epoch)
    criteria = [nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"]) for _ in range(3)]
    eval_batches = 1 if config["dry_run"] else None

    meta = {"config": config, "epoch": 0, "step": 0, "history": [], "best_val_accuracy": -1.0,
            "best_epoch": 0, "running": [0.0, 0, 0]}
    if resume is not None:
        meta = restore(arrays, resume, model, opt, sched)
        meta["config"] = config
        log(f"resumed from {resume}: epoch {meta['epoch'] + 1}, batch {meta['step']}")
    log(describe(config, len(train_split[1]), len(val_split[1]), steps_per_epoch))
    if nn.kernels.use_numba():
        log("(the first batch loads the Numba kernels: 30-50 s the first time on a machine, "
            "while they compile into nn/__pycache__; under a second afterwards)")
    ckpt_path, best_path = os.path.join(out, "checkpoint.npz"), os.path.join(out, "model_best.npz")

    def save(epoch, step, running):
        meta.update(epoch=epoch, step=step, running=running)
        save_checkpoint(ckpt_path, model, opt, sched, meta)

    first_step_done = None  # the first step loads kernels: time the three after it
    with StopRequest() as stop:
        for epoch in range(meta["epoch"], config["epochs"]):
            start_step = meta["step"] if epoch == meta["epoch"] else 0
            loss_sum, correct, seen = meta["running"] if start_step else (0.0, 0, 0)
            train_loader.set_epoch(epoch, start_step)
            model.train()
            progress = Progress(steps_per_epoch, f"Epoch {epoch + 1}/{config['epochs']}",
                                config["print_freq"], log, initial=start_step)
            t0 = time.perf_counter()
            step = start_step
            for x, y in train_loader:
                if step >= steps_per_epoch:
                    break
                t = time.perf_counter()
                one_step = lambda: train_step(model, x, y, criteria, config["aux_weight"], opt,
                                              config["clip_grad"])
                if config["profile"] and step == start_step + 1:  # the first step compiles kernels
                    (loss, total, logits), timings = profile_step(model, one_step)
                    log(format_profile(timings, len(y)))
                else:
                    loss, total, logits = one_step()
                if not math.isfinite(total):
                    progress.close()
                    last = (f"the last good checkpoint is {ckpt_path} (epoch {meta['epoch']})"
                            if os.path.exists(ckpt_path) else "no checkpoint was saved yet")
                    raise TrainingDiverged(
                        f"the loss became {total} at epoch {epoch + 1}, batch {step + 1} (global step "
                        f"{epoch * steps_per_epoch + step + 1}); stopping. Lower --lr or set --clip-grad; {last}")
                sched.step()
                step += 1
                loss_sum += loss * len(y)
                correct += int((logits.argmax(axis=1) == y).sum())
                seen += len(y)
                progress.update(loss_sum / seen, correct / seen, len(y) / (time.perf_counter() - t))
                if step == start_step + 1 and first_step_done is None:
                    first_step_done = time.perf_counter()
                elif step == start_step + 4 and first_step_done:
                    per_step = (time.perf_counter() - first_step_done) / 3
                    first_step_done = 0
                    log(f"about {per_step:.2f} s per batch: {per_step * steps_per_epoch / 60:.1f} min per epoch, "
                        f"{per_step * steps_per_epoch * config['epochs'] / 60:.1f} min for the run (estimate)")
                if stop.requested:
                    progress.close()
                    save(epoch, step, [loss_sum, correct, seen])
                    log(f"\ninterrupted: saved {ckpt_path} at epoch {epoch + 1}, batch {step}; "
                        f"continue with --resume {ckpt_path}")
                    raise KeyboardInterrupt
            progress.close()
            val_loss, val_cm = evaluate(model, loader(val_split, config, info), criteria[0], num_classes,
                                        eval_batches)
            val_acc = float(np.trace(val_cm) / max(val_cm.sum(), 1))
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   "train_accuracy": correct / max(seen, 1), "val_loss": float(val_loss),
                   "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - t0}
            meta["history"].append(row)
            log(f"Epoch {epoch + 1}/{config['epochs']} - {row['seconds']:.1f}s - loss: {row['train_loss']:.4f}"
                f" - accuracy: {row['train_accuracy']:.4f} - val_loss: {val_loss:.4f} - val_accuracy: "
                f"{val_acc:.4f} - lr: {row['lr']:.3g}")
            if val_acc > meta["best_val_accuracy"]:
                meta.update(best_val_accuracy=val_acc, best_epoch=epoch + 1)
            save(epoch + 1, 0, [0.0, 0, 0])
            if meta["best_epoch"] == epoch + 1:
                save_checkpoint(best_path, model, opt, sched, meta)
            write_history(os.path.join(out, "history.csv"), meta["history"])
            plot_curves(meta["history"], out, config["dataset"])
            if stop.requested and epoch + 1 < config["epochs"]:  # Ctrl-C during the evaluation
                log(f"\ninterrupted: saved {ckpt_path} after epoch {epoch + 1}; "
                    f"continue with --resume {ckpt_path}")
                raise KeyboardInterrupt

    restore(read_checkpoint(best_path), best_path, model)
    splits = {"training": train_split, "validation": val_split}
    if test_split is not None:
        splits["testing"] = test_split
    heading = (f"# {config['model']} on {config['dataset']}\n\nBest validation accuracy at epoch "
               f"{meta['best_epoch']} of {config['epochs']}; figures of that model.")
    report = report_on(model, config, info, splits, criteria[0], heading, log, eval_batches)
    report.update(best_epoch=meta["best_epoch"], history=meta["history"])
    markdown = report.pop("markdown")
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write(markdown + "\n"), mode="w")
    atomic_write(os.path.join(out, "report.json"), lambda f: json.dump(report, f, indent=2), mode="w")
    return report


def report_on(model, config, info, splits, criterion, heading, log, max_batches=None):
    """Evaluate on each split and print the seeds' tables and the last split's classification
    report. Returns {"config", "splits": figures, "markdown": the tables}."""
    results = {}
    for name, split in splits.items():
        loss, cm = evaluate(model, loader(split, config, info), criterion, len(info.classes), max_batches)
        results[name] = {"loss": float(loss), "cm": cm}
    markdown = heading + "\n\n" + markdown_report(results, list(info.classes))
    log("\n" + markdown)
    last = list(results)[-1]
    log(f"\n{last} set:\n" + classification_report(results[last]["cm"], list(info.classes)))
    return {"config": config, "splits": report_json(results, list(info.classes)), "markdown": markdown}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    nn.keep_freed_memory()  # no page faults for every step's large temporaries (nn/runtime.py)
    config = make_config(args)
    for key in RESUME_OVERRIDES:
        config[f"_{key}_given"] = key in vars(args)
    try:
        run(config, resume=args.resume)
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (data.DataNotFoundError, data.IDXError, FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
