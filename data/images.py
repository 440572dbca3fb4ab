"""Your own images, made to look like the data set's: a photo or a drawing of a digit as MNIST's.

MNIST's digits were made so (LeCun et al. 1998): NIST's black-and-white digits were scaled to
fit a 20x20 box, keeping their aspect ratio (the anti-aliasing made them grey), then placed in a
28x28 image with their centre of mass at the centre. to_mnist does the same to any image:

    1. grey     one channel; transparent pixels become the background (drawn over white)
    2. invert   when the background is light (the median of the border pixels is above
                mid-grey): MNIST's digits are white ink on black
    3. crop     to the ink's bounding box (ink: pixels above INK_LEVEL of the brightest one)
    4. scale    the longest side to 20 pixels, keeping the aspect ratio (an antialiased resize)
    5. centre   in 28x28, so that the centre of mass lands on the middle pixel (14, 14)

Fashion-MNIST's articles were made another way (Xiao et al. 2017): the longest side scaled to 28
and the article centred by its bounding box; to_mnist(..., style="fashion") follows that recipe.
Each step is a function of its own below, so that a notebook can show them one by one.
"""
import os

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
INK_LEVEL = 0.2     # of the brightest pixel: fainter pixels are paper, not ink
STYLES = {"digit": (20, "mass"), "fashion": (28, "box")}   # (longest side, how it is centred)


class ImageError(ValueError):
    """An image that cannot be read or holds nothing to classify; the message names the file."""


def image_files(paths):
    """The image files among `paths` (files, and the images directly inside folders, sorted)."""
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(EXTENSIONS) and not f.startswith("."))
            if not found:
                raise ImageError(f"{path}: a folder with no images in it ({', '.join(EXTENSIONS)})")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return files


def read_grey(path):
    """The image at `path` as grey levels, uint8 (H, W); transparency drawn over white."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, ...)") from None
    except OSError as err:
        raise ImageError(f"{path}: the image is damaged or truncated ({err})") from None


def ink_on_black(grey):
    """Step 2: grey as float ink on a black background (inverted if the background was light)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = grey.astype(np.float64)
    return 255.0 - ink if np.median(border) > 127 else ink


def crop_to_ink(ink, source="image"):
    """Step 3: the bounding box of the pixels brighter than INK_LEVEL of the brightest."""
    mask = ink > INK_LEVEL * ink.max()
    if not ink.max() > 0 or not mask.any():
        raise ImageError(f"{source}: no ink found (a blank image?)")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def scale_longest_side(ink, side):
    """Step 4: the longest side to `side` pixels, keeping the aspect ratio (antialiased)."""
    from PIL import Image
    h, w = ink.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS))


def centre(ink, how):
    """Step 5: ink placed in a 28x28 image, its centre of mass ("mass") or its bounding box
    ("box") at the middle; uint8, clipped to [0, 255]."""
    ink = np.clip(ink, 0, None)
    h, w = ink.shape
    if how == "mass":
        total = ink.sum()
        cy = (ink.sum(axis=1) @ np.arange(h)) / total
        cx = (ink.sum(axis=0) @ np.arange(w)) / total
        top, left = int(round(14 - cy)), int(round(14 - cx))
    else:
        top, left = (28 - h) // 2, (28 - w) // 2
    out = np.zeros((28, 28))
    rows = slice(max(0, top), min(28, top + h))
    cols = slice(max(0, left), min(28, left + w))
    out[rows, cols] = ink[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return np.clip(np.round(out * (255.0 / max(out.max(), 1e-12))), 0, 255).astype(np.uint8)


def to_mnist(grey, style="digit", source="image"):
    """A grey image (uint8 (H, W)) as a 28x28 uint8 image made as the data set's (see the top)."""
    side, how = STYLES[style]
    return centre(scale_longest_side(crop_to_ink(ink_on_black(grey), source), side), how)
