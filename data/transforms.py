"""Per-batch transforms from uint8 28x28 digits to the models' float32 (N, 3, S, S) input.

    to_unit -> shift (training only) -> resize (bilinear) -> normalise -> gray_to_rgb
Everything runs on one batch at a time: 60,000 images at 299x299x3 in float32 would be 64 GB.
"""
import numpy as np


def to_unit(images):
    """uint8 [0, 255] -> float32 [0, 1] (ToTensor's scaling)."""
    return images.astype(np.float32) / np.float32(255.0)


def normalize(x, mean, std):
    """(x - mean) / std with the data set's statistics (MNIST: 0.1307, 0.3081)."""
    return (x - np.float32(mean)) / np.float32(std)


def interpolation_matrix(in_size, out_size, dtype=np.float32):
    """M (out, in) such that M @ v resamples v bilinearly with half-pixel centres.

    PyTorch's interpolate(mode="bilinear", align_corners=False): output pixel i samples
        src = (i + 0.5) * in/out - 0.5,  clamped to [0, in - 1],
    between floor(src) and floor(src)+1 with weights 1 - frac and frac. (No antialiasing: for
    upsampling it changes nothing; for downsampling, PyTorch's antialias=True would differ.)
    """
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m.astype(dtype)


def resize_bilinear(x, size):
    """(N, H, W) -> (N, size, size): bilinear is separable, so it is two matrix products,
    rows then columns: out[n] = R @ x[n] @ C.T."""
    n, h, w = x.shape
    if (h, w) == (size, size):
        return x
    rows = interpolation_matrix(h, size, x.dtype)
    cols = interpolation_matrix(w, size, x.dtype)
    return np.matmul(np.matmul(rows, x), cols.T)


def random_shift(images, max_shift, rng):
    """Shift each image by up to max_shift pixels in x and y (zero fill): light augmentation."""
    if max_shift == 0:
        return images
    n, h, w = images.shape
    out = np.zeros_like(images)
    dy = rng.integers(-max_shift, max_shift + 1, n)
    dx = rng.integers(-max_shift, max_shift + 1, n)
    for i in range(n):
        ys, yd = (slice(0, h - dy[i]), slice(dy[i], h)) if dy[i] >= 0 else (slice(-dy[i], h), slice(0, h + dy[i]))
        xs, xd = (slice(0, w - dx[i]), slice(dx[i], w)) if dx[i] >= 0 else (slice(-dx[i], w), slice(0, w + dx[i]))
        out[i, yd, xd] = images[i, ys, xs]
    return out


def gray_to_rgb(x):
    """(N, S, S) -> (N, 3, S, S): the grey channel replicated, as the models take 3 channels."""
    return np.repeat(x[:, None], 3, axis=1)


def prepare_batch(images, size, mean, std):
    """uint8 (N, 28, 28) -> normalised float32 (N, 3, size, size)."""
    x = resize_bilinear(to_unit(images), size)
    return np.ascontiguousarray(gray_to_rgb(normalize(x, mean, std)))
