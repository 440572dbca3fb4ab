"""Input checks shared by the layers: a wrong input is named in the caller's terms, not NumPy's."""
import numpy as np


def check_input(layer, x, layout, channels=None, dtype=None):
    """Refuse anything but a floating array of the layout's rank (and channel count, and dtype).

    layout is a string like "NCHW" or "NC" naming the axes the layer expects; channels, if
    given, is the required size of axis 1; dtype, if given, the dtype of the layer's parameters.
    """
    name = layer._describe()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of shape ({', '.join(layout)}), "
                        f"got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise ValueError(f"{name}: expected a floating-point input (float32 or float64), "
                         f"got dtype {x.dtype}")
    if x.ndim != len(layout):
        raise ValueError(f"{name}: expected a {len(layout)}-D input ({', '.join(layout)}), "
                         f"got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels on axis 1, got shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: input is {x.dtype} but the parameters are {dtype}; "
                         f"cast the model with .to(np.{x.dtype}) or the input with .astype")


def pair(value, what, layer_name):
    """An int or a pair of ints as a pair (kernel sizes, strides, paddings)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{layer_name}: {what} must be an int or a pair of ints, got {value!r}")
