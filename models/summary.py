"""A layer-by-layer summary of a model, in the seeds' table format (torchsummary's vocabulary).

    python -m models.summary inception_v3            # at the model's own input size
    python -m models.summary inception_v2 --image-size 96

One row per layer in execution order (Layer (type), Output Shape with -1 for the batch, Param #),
a bold heading row where each Inception block, grid reduction or aux head starts, then the
parameter totals, the memory estimate (torchsummary's: 4 bytes per value, MiB = 1024**2,
forward/backward = 2 x every layer's output) and the multiply-adds of one image.
"""
import argparse

import numpy as np

import nn

from . import DEFAULT_IMAGE_SIZE, MODELS, build

TYPE_NAMES = {
    nn.Conv2d: "2D convolution", nn.BatchNorm2d: "2D batch norm", nn.BatchNorm1d: "1D batch norm",
    nn.ReLU: "ReLU", nn.MaxPool2d: "2D max pool", nn.AvgPool2d: "2D average pool",
    nn.AdaptiveAvgPool2d: "2D average pool", nn.Linear: "Linear", nn.Flatten: "Flatten",
    nn.Dropout: "Dropout", nn.Identity: "Identity",
}
SECTION_PREFIXES = ("inception_", "reduction_", "aux")


def _own_params(module):
    return sum(p.size for p in module._parameters.values() if p is not None)


def _mult_adds(module, out_shape):
    """Multiply-adds of one image through a conv or linear layer."""
    if isinstance(module, nn.Conv2d):
        KH, KW = module.kernel_size
        return int(np.prod(out_shape[1:])) * module.in_channels * KH * KW
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def trace(model, x):
    """Run model(x) once, recording (event, name, module, output) in execution order.

    The model's parameters, buffers, dropout generators and mode are restored afterwards, so a
    summary never changes the model.
    """
    names = {id(m): n for n, m in model.named_modules()}
    events = []
    state = model.state_dict()
    rngs = {id(m): m.rng.bit_generator.state for m in model.modules() if isinstance(m, nn.Dropout)}
    modes = {id(m): m.training for m in model.modules()}
    for m in model.modules():
        def wrapped(*inputs, _m=m, _forward=m.forward):
            events.append(("enter", names[id(_m)], _m, None))
            out = _forward(*inputs)
            events.append(("exit", names[id(_m)], _m, out))
            return out
        object.__setattr__(m, "forward", wrapped)
    try:
        model.train()
        model(x)
    finally:
        for m in model.modules():
            del m.__dict__["forward"]
            object.__setattr__(m, "training", modes[id(m)])
            if isinstance(m, nn.Dropout):
                m.rng.bit_generator.state = rngs[id(m)]
        model.load_state_dict(state)
    return events


def summary_rows(model, input_size):
    """[(type, output shape or None for a heading, params)] and the multiply-adds per image."""
    C, H, W = input_size
    x = np.zeros((2, C, H, W), dtype=model.dtype or np.float32)
    rows, mult_adds = [], 0
    for event, name, module, out in trace(model, x):
        top = name.split(".")[0]
        if event == "enter" and name == top and name.startswith(SECTION_PREFIXES):
            rows.append((f"**{name}**", None, None))
        if event != "exit":
            continue
        row_name = getattr(module, "summary_name", None)
        if not module._modules and row_name is None:
            row_name = TYPE_NAMES.get(type(module), type(module).__name__)
        if row_name is not None:
            rows.append((row_name, (-1,) + out.shape[1:], _own_params(module)))
            mult_adds += _mult_adds(module, out.shape)
    return rows, mult_adds


def summary(model, input_size, print_fn=print):
    """Print the model's table for one (C, H, W) input and return the totals as a dict."""
    rows, mult_adds = summary_rows(model, input_size)
    table = [("Layer (type)", "Output Shape", "Param #")]
    for kind, shape, params in rows:
        if shape is None:
            table.append((kind, "---", "---"))
        else:
            table.append((kind, "[" + ", ".join(str(s) for s in shape) + "]", f"{params:,}"))
    widths = [max(len(r[i]) for r in table) + 2 for i in range(3)]
    line = lambda r: "|" + "|".join(cell.center(w) for cell, w in zip(r, widths)) + "|"
    print_fn(line(table[0]))
    print_fn("|" + "|".join(":" + "-" * (w - 2) + ":" for w in widths) + "|")
    for r in table[1:]:
        print_fn(line(r))

    total = model.num_parameters()
    aux = sum(p.size for n, p in model.named_parameters() if n.startswith("aux"))
    outputs = sum(int(np.prod(shape[1:])) for _, shape, _ in rows if shape is not None)
    mib = lambda values: values * 4 / 1024 ** 2
    sizes = {"input": mib(int(np.prod(input_size))), "forward/backward": mib(2 * outputs),
             "params": mib(total)}
    totals = [("Total params", f"{total:,}"), ("Trainable params", f"{total:,}"),
              ("Total params excluding auxiliary params", f"{total - aux:,}"),
              ("Non-trainable params", "0")]
    print_fn("")
    print_fn("| " + " " * 40 + "| " + " " * 11 + "|")
    print_fn("| " + "-" * 40 + "| " + "-" * 11 + "|")
    for k, v in totals:
        print_fn(f"| {k:<40}| {v:<11}|")
    print_fn("")
    print_fn(f"Input size (MiB): {sizes['input']:.2f}")
    print_fn(f"Forward/backward pass size (MiB): {sizes['forward/backward']:.2f}")
    print_fn(f"Params size (MiB): {sizes['params']:.2f}")
    print_fn(f"Estimated total size (MiB): {sum(sizes.values()):.2f}")
    print_fn(f"Multiply-adds per image (G): {mult_adds / 1e9:.3f}")
    return {"total_params": total, "aux_params": aux, "mult_adds": mult_adds, "rows": rows, **sizes}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input size (default: the model's own, 224 for V2, 299 for V3)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    size = args.image_size or DEFAULT_IMAGE_SIZE[args.model]
    model = build(args.model, num_classes=args.num_classes, width=args.width)
    print(f"# {args.model}, input (3, {size}, {size})\n")
    try:
        summary(model, (3, size, size))
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
