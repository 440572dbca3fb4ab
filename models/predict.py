"""Classify your own images with a trained model: python -m models.predict --help

    python -m models.predict --checkpoint runs/inception_v2_mnist-mini/model_best.npz my_digit.png
    python -m models.predict --checkpoint CKPT photos/ --top-k 3 --output predictions.csv
    python -m models.predict --checkpoint CKPT my_digit.png --show-preprocessed seen/ --explain why/

Each image (PNG, JPEG, ...) is made to look like the data set's images (data/images.py: grey,
inverted when its background is light, cropped to the ink, scaled, centred as MNIST's digits
were), then goes through the checkpoint's own transform (its image size, normalisation, three
channels) and the model in eval mode. The table gives the top-k classes with their softmax
probabilities, by the data set's class names (Fashion-MNIST's are words).
--show-preprocessed saves what the network saw; --explain saves, per image, the input, its
saliency map and its Grad-CAM for the predicted class (models/explain.py).
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

import data
import nn
from data.images import ImageError, image_files, read_grey, to_mnist
from nn.serialization import atomic_write

from . import build, explain
from .checkpoint import read_checkpoint, restore
from .report import save_figure
from .train import number_arg

BATCH = 64


def load_model(path):
    """(model in eval mode, its Config, its data set's info) from a training checkpoint."""
    arrays = read_checkpoint(path)
    config = arrays["config"]
    info = data.dataset_info(config.dataset)
    saved_classes = arrays["model/fc.bias"].shape[0]
    if saved_classes != len(info.classes):
        raise ValueError(f"{path}: its model has {saved_classes} outputs, but its data set "
                         f"{config.dataset} has {len(info.classes)} classes")
    model = build(config.model, num_classes=len(info.classes), width=config.width)
    restore(arrays, path, model)
    return model.eval(), config, info


def preprocess(files, info):
    """The images as the data set's 28x28 uint8 digits (or articles)."""
    style = "fashion" if info.name == "fashion-mnist" else "digit"
    return np.stack([to_mnist(read_grey(f), style, source=f) for f in files])


def predict(model, images, config, info, top_k):
    """Softmax probabilities (N, K) of uint8 (N, 28, 28) images, and the network's inputs."""
    x = data.prepare_batch(images, config.image_size, info.mean, info.std)
    probabilities = []
    with nn.no_grad():
        for i in range(0, len(x), BATCH):
            probabilities.append(np.exp(nn.log_softmax(model(x[i:i + BATCH]).astype(np.float64))))
    return np.concatenate(probabilities), x


def table(files, probabilities, classes, top_k):
    """The rows the terminal shows and the files record: (file, [(class, probability)...])."""
    order = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [(f, [(classes[k], float(p[k])) for k in ranks]) for f, p, ranks in zip(files, probabilities, order)]


def print_table(rows, top_k):
    width = max(12, max(len(f) for f, _ in rows))
    cell = max(12, max(len(c) for _, r in rows for c, _ in r) + 8)
    print(f"{'image':<{width}}  " + "".join(f"{'top ' + str(i + 1):<{cell}}" for i in range(top_k)))
    for f, ranked in rows:
        print(f"{f:<{width}}  " + "".join(f"{c + f' {100 * p:5.1f}%':<{cell}}" for c, p in ranked))


def write_rows(path, rows):
    """--output: .csv (file, class_1, probability_1, ...) or .json, written atomically."""
    if path.endswith(".json"):
        payload = [{"file": f, "predictions": [{"class": c, "probability": p} for c, p in r]} for f, r in rows]
        atomic_write(path, lambda out: json.dump(payload, out, indent=2), mode="w")
        return

    def write(out):
        writer = csv.writer(out)
        k = len(rows[0][1])
        writer.writerow(["file"] + [f"{what}_{i + 1}" for i in range(k) for what in ("class", "probability")])
        for f, ranked in rows:
            writer.writerow([f] + [v for c, p in ranked for v in (c, f"{p:.6f}")])
    atomic_write(path, write, mode="w")


def save_seen(folder, files, x, info):
    """What the network saw: each input (its first channel, un-normalised) as a PNG."""
    from PIL import Image
    for f, image in zip(files, x):
        grey = np.clip(image[0] * info.std + info.mean, 0, 1) * 255
        path = os.path.join(folder, os.path.splitext(os.path.basename(f))[0] + "_seen.png")
        atomic_write(path, lambda out, g=grey: Image.fromarray(g.round().astype(np.uint8)).save(out, "PNG"))


def save_explanations(folder, files, model, x, rows, info):
    """Per image: the input, its saliency map and its Grad-CAM for the predicted class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for i, (f, ranked) in enumerate(rows):
        target = list(info.classes).index(ranked[0][0])
        image = x[i:i + 1]
        stage = explain.last_block(model, image)
        sal = explain.saliency(model, image, target)[0]
        cam = explain.grad_cam(model, image, target, stage)[0][0]
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        seen = image[0, 0] * info.std + info.mean
        axes[0].imshow(seen, cmap="gray")
        axes[0].set_title(f"input: {ranked[0][0]} ({100 * ranked[0][1]:.1f}%)")
        axes[1].imshow(sal, cmap="hot")
        axes[1].set_title("saliency |dS/dx|")
        axes[2].imshow(seen, cmap="gray")
        axes[2].imshow(cam, cmap="jet", alpha=0.45)
        axes[2].set_title(f"Grad-CAM ({stage})")
        for ax in axes:
            ax.axis("off")
        save_figure(fig, os.path.join(folder, os.path.splitext(os.path.basename(f))[0] + "_explained.png"))


def refuse_existing(paths, overwrite):
    taken = [p for p in paths if os.path.exists(p)]
    if taken and not overwrite:
        raise FileExistsError(f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}: "
                              "choose another output, or pass --overwrite to replace it")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m models.predict", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--checkpoint", required=True, help="model_best.npz or checkpoint.npz of a training run")
    p.add_argument("-k", "--top-k", type=number_arg(int, 0), default=3)
    p.add_argument("--output", help="also write the predictions to this .csv or .json file")
    p.add_argument("--show-preprocessed", metavar="FOLDER", help="save what the network saw, per image")
    p.add_argument("--explain", metavar="FOLDER", help="save input, saliency and Grad-CAM, per image")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    args = p.parse_args(argv)
    if args.output and not args.output.endswith((".csv", ".json")):
        p.error(f"--output must end in .csv or .json, got {args.output}")
    try:
        files = image_files(args.images)
        model, config, info = load_model(args.checkpoint)
        stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
        planned = ([args.output] if args.output else []) + [
            os.path.join(folder, s + suffix) for folder, suffix in
            ((args.show_preprocessed, "_seen.png"), (args.explain, "_explained.png")) if folder for s in stems]
        refuse_existing(planned, args.overwrite)
        probabilities, x = predict(model, preprocess(files, info), config, info, args.top_k)
        rows = table(files, probabilities, list(info.classes), min(args.top_k, len(info.classes)))
        print_table(rows, len(rows[0][1]))
        if args.output:
            write_rows(args.output, rows)
        if args.show_preprocessed:
            save_seen(args.show_preprocessed, files, x, info)
        if args.explain:
            save_explanations(args.explain, files, model, x, rows, info)
    except (ImageError, FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        p.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
