"""Evaluate a saved model and print the training report's tables: python -m models.evaluate --help

    python -m models.evaluate --checkpoint runs/inception_v2_mnist/model_best.npz
    python -m models.evaluate --checkpoint runs/inception_v2_mnist/model_best.npz --split testing \\
        --dataset mnist --data-dir ~/data/mnist

The model, its width, image size and normalisation come from the checkpoint's configuration;
--dataset and --data-dir pick what it is evaluated on (default: the data set it was trained on).
"""
import argparse
import dataclasses
import sys

import nn

import data

from . import build
from .checkpoint import read_checkpoint, restore
from .train import number_arg, load_data, report_on


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint.npz or model_best.npz of a training run")
    p.add_argument("--dataset", choices=sorted(data.DATASETS), default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", dest="download", action="store_false")
    p.add_argument("--split", choices=["training", "validation", "testing", "all"], default="all")
    p.add_argument("-b", "--batch-size", type=number_arg(int, 0), default=None,
                   help="default: the training batch size")
    args = p.parse_args(argv)
    try:
        arrays = read_checkpoint(args.checkpoint)
        config = dataclasses.replace(arrays["config"], download=args.download, prefetch=False, dry_run=False)
        for key in ("dataset", "data_dir"):
            if getattr(args, key) is not None:
                config = dataclasses.replace(config, **{key: getattr(args, key)})
        if args.batch_size:
            config = dataclasses.replace(config, eval_batch_size=args.batch_size)
        info, train, val, test = load_data(config, log=lambda s: print(s, file=sys.stderr))
        model = build(config.model, num_classes=len(info.classes), width=config.width)
        meta = restore(arrays, args.checkpoint, model)
        splits = {"training": train, "validation": val, "testing": test}
        wanted = [s for s in splits if args.split in (s, "all") and splits[s] is not None]
        if not wanted:
            p.error(f"no {args.split} data for {config.dataset}")
        heading = (f"# {config.model} on {config.dataset} ({args.checkpoint}, "
                   f"after epoch {meta['epoch']})")
        report_on(model, config, info, {s: splits[s] for s in wanted}, nn.CrossEntropyLoss(
            label_smoothing=config.label_smoothing), heading, print)
    except (data.DataNotFoundError, data.IDXError, FileNotFoundError, ValueError) as err:
        p.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
