"""A trained model's weights as a safetensors file, for PyTorch or any other framework:
python -m models.export --help

    python -m models.export runs/inception_v2_mnist-mini/model_best.npz model.safetensors

In PyTorch (benchmarks/torch_reference.py builds the same network with the same names):
    from safetensors.torch import load_file
    torch_model.load_state_dict(load_file("model.safetensors"))
The file's metadata records the architecture, width and the run's configuration (data set,
image size); python -m models.train --initial-checkpoint model.safetensors starts from it.
"""
import argparse
import json
import os
import sys

from . import build
from .checkpoint import read_checkpoint, restore
from .weights import save_safetensors


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m models.export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="model_best.npz or checkpoint.npz of a training run")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    args = p.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        p.error(f"the output must end in .safetensors, got {args.output}")
    if os.path.exists(args.output) and not args.overwrite:
        p.exit(2, f"error: {args.output} exists: choose another name, or pass --overwrite to replace it\n")
    try:
        arrays = read_checkpoint(args.checkpoint)
        config = arrays["config"]
        model = build(config.model, num_classes=arrays["model/fc.bias"].shape[0], width=config.width)
        restore(arrays, args.checkpoint, model)
        save_safetensors(model, args.output, {"dataset": config.dataset, "image_size": config.image_size,
                                              "config": json.dumps(arrays["meta"]["config"])})
    except (FileNotFoundError, ValueError, OSError) as err:
        p.exit(2, f"error: {err}\n")
    print(f"wrote {args.output}: {model.num_parameters():,} parameters of {config.model} "
          f"(width {config.width:g}), {len(model.state_dict())} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
