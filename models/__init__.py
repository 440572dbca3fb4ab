"""Inception-V2 and Inception-V3 built from the nn/ layers, reachable by name."""
from .inception_v2 import MIN_SIZE as _V2_MIN_SIZE, InceptionV2, inception_v2
from .inception_v3 import MIN_SIZE as _V3_MIN_SIZE, InceptionV3, inception_v3

MODELS = {"inception_v2": inception_v2, "inception_v3": inception_v3}
# The input size each model was specified at (the seed's tables).
DEFAULT_IMAGE_SIZE = {"inception_v2": 224, "inception_v3": 299}


def build(name, **kwargs):
    """A model by name: build("inception_v3", num_classes=10, width=1.0)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def min_image_size(name):
    """The smallest square input the model accepts (every feature map at least 1x1)."""
    return {"inception_v2": _V2_MIN_SIZE, "inception_v3": _V3_MIN_SIZE}[name]
