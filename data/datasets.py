"""MNIST-format data sets by name: where their files are looked for, downloading, verifying.

"mnist-mini" (8,000 training and 2,000 test digits from MNIST's test set) ships inside the
package (data/embedded/mnist-mini, with its attribution and licence): always there, offline.
The full data sets ("mnist", "fashion-mnist", "kmnist") are looked for, in order, in:
  1. the folder given explicitly (--data-dir), or its subfolder named after the data set;
  2. the folder in the environment variable NN_DATA_DIR (or its subfolder);
  3. the cache folder, $XDG_CACHE_HOME/inception-numpy/<name> (~/.cache/... by default).
Each file may be gzip-compressed (the standard *.gz name) or decompressed (the name without .gz).
Missing files are downloaded into the cache folder from the data set's mirrors (falling back
from one to the next), verified by checksum, then written atomically. Offline with no files,
the error names the missing files and every folder that was searched.
"""
import gzip
import hashlib
import os
from pathlib import Path
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from nn.serialization import atomic_write

from .idx import IDXError, parse_idx, read_bytes

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
ENV_VAR = "NN_DATA_DIR"
EMBEDDED = Path(__file__).resolve().parent / "embedded"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    mirrors: tuple
    # file name -> ("raw", md5 of the decompressed payload) or ("gz", md5 of the .gz as published)
    checksums: dict
    mean: float   # of the training images scaled to [0, 1]
    std: float
    classes: tuple = field(default=tuple(str(i) for i in range(10)))
    embedded: bool = False   # shipped in data/embedded/<name>, checked against `checksums` on load


DATASETS = {
    "mnist-mini": DatasetInfo(
        "mnist-mini", (),
        {"train-images-idx3-ubyte.gz": ("raw", "9a9d097a2d2a42be8c19f8ad53dba254"),
         "train-labels-idx1-ubyte.gz": ("raw", "f5cc18f7dec67b6f0179438b4f63d86e"),
         "t10k-images-idx3-ubyte.gz": ("raw", "17b6382ce7cb832ac2a234f2e7cdb3e1"),
         "t10k-labels-idx1-ubyte.gz": ("raw", "c30a75f4580940b9c1a6a22fccd68779")},
        mean=0.1307, std=0.3081, embedded=True),   # MNIST's own normalisation
    "mnist": DatasetInfo(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": ("raw", "6bbc9ace898e44ae57da46a324031adb"),
         "train-labels-idx1-ubyte.gz": ("raw", "a25bea736e30d166cdddb491f175f624"),
         "t10k-images-idx3-ubyte.gz": ("raw", "2646ac647ad5339dbf082846283269ea"),
         "t10k-labels-idx1-ubyte.gz": ("raw", "27ae3e4e09519cfbb04c329615203637")},
        mean=0.1307, std=0.3081),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte.gz": ("raw", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
         "train-labels-idx1-ubyte.gz": ("raw", "9018921c3c673c538a1fc5bad174d6f9"),
         "t10k-images-idx3-ubyte.gz": ("raw", "8181f5470baa50b63fa0f6fddb340f0a"),
         "t10k-labels-idx1-ubyte.gz": ("raw", "15d484375f8d13e6eb1aabb0c3f46965")},
        mean=0.2860, std=0.3530,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")),
    "kmnist": DatasetInfo(
        "kmnist",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", "https://storage.googleapis.com/kuzushiji-mnist/"),
        # the KMNIST authors publish checksums of the .gz files only
        {"train-images-idx3-ubyte.gz": ("gz", "bdb82020997e1d708af4cf47b453dcf7"),
         "train-labels-idx1-ubyte.gz": ("gz", "e144d726b3acfaa3e44228e80efcd344"),
         "t10k-images-idx3-ubyte.gz": ("gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
         "t10k-labels-idx1-ubyte.gz": ("gz", "7320c461ea6c1c855c0b718fb2a4b134")},
        mean=0.1918, std=0.3483,
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


class DataNotFoundError(FileNotFoundError):
    """The data set's files are neither on disk nor downloadable; the message says where we looked."""


def dataset_info(name):
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def cache_dir(name):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "inception-numpy", name)


def search_dirs(name, data_dir=None):
    """The folders searched for `name`'s files, in order."""
    dirs = []
    for root in (data_dir, os.environ.get(ENV_VAR)):
        if root:
            dirs += [os.fspath(root), os.path.join(os.fspath(root), name)]
    dirs.append(os.fspath(EMBEDDED / name) if dataset_info(name).embedded else cache_dir(name))
    return dirs


def find_file(filename, dirs):
    """The first existing `filename` (or its decompressed twin without .gz) in dirs, else None."""
    for d in dirs:
        for candidate in (filename, filename[:-3] if filename.endswith(".gz") else filename + ".gz"):
            path = os.path.join(d, candidate)
            if os.path.isfile(path):
                return path
    return None


def md5(data):
    return hashlib.md5(data).hexdigest()


def verify(info, filename, gz_bytes):
    """Check downloaded bytes against the published checksum; returns the decompressed payload."""
    kind, expected = info.checksums[filename]
    payload = gzip.decompress(gz_bytes) if gz_bytes[:2] == b"\x1f\x8b" else gz_bytes
    actual = md5(payload if kind == "raw" else gz_bytes)
    if actual != expected:
        raise IDXError(f"{filename}: checksum mismatch (md5 of the {'decompressed data' if kind == 'raw' else 'file'} "
                       f"is {actual}, expected {expected})")
    return payload


def download(info, filename, dest_dir, timeout=30, log=print):
    """Fetch `filename` from the first mirror that serves it with the right checksum."""
    errors = []
    for mirror in info.mirrors:
        url = mirror + filename
        try:
            log(f"downloading {url}")
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
            verify(info, filename, data)
        except (OSError, IDXError, ValueError) as err:
            errors.append(f"{url}: {err}")
            continue
        path = os.path.join(dest_dir, filename)
        atomic_write(path, lambda f: f.write(data))
        return path
    raise DataNotFoundError(f"could not download {filename}:\n  " + "\n  ".join(errors))


def locate(name, split, data_dir=None, download_missing=True, log=print):
    """Paths of (images, labels) for a split, downloading what is missing if allowed."""
    info = dataset_info(name)
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    dirs = search_dirs(name, data_dir)
    paths, missing = [], []
    for filename in FILES[split]:
        path = find_file(filename, dirs)
        if path is None and download_missing:
            try:
                path = download(info, filename, cache_dir(name), log=log)
            except DataNotFoundError as err:
                missing.append(f"{filename} ({err})")
                continue
        if path is None:
            missing.append(filename)
        paths.append(path)
    if missing:
        raise DataNotFoundError(
            f"{name} {split} data not found: missing {', '.join(missing)}\n"
            f"looked in: {', '.join(dirs)}\n"
            f"give the folder with --data-dir or {ENV_VAR}, or connect to the internet to download it")
    return tuple(paths)


def load_split(name, split, data_dir=None, download_missing=True, log=print):
    """(images uint8 (N, 28, 28), labels int64 (N,)) of a data set's split, checked for consistency."""
    info = dataset_info(name)
    img_path, lbl_path = locate(name, split, data_dir, download_missing, log)
    images = parse_idx(_read(info, img_path), img_path, expect_ndim=3)
    labels = parse_idx(_read(info, lbl_path), lbl_path, expect_ndim=1)
    if len(images) != len(labels):
        raise IDXError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    n_classes = len(info.classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = np.unique(labels[(labels < 0) | (labels >= n_classes)])[:10].tolist()
        raise IDXError(f"{lbl_path}: labels out of range {bad}; expected 0..{n_classes - 1}")
    if images.dtype != np.uint8:
        raise IDXError(f"{img_path}: expected uint8 images, got {images.dtype}")
    return images, labels.astype(np.int64)


def _read(info, path):
    """The payload of a data file; an embedded one is checked against its checksum first."""
    payload = read_bytes(path)
    if info.embedded and Path(path).resolve().parent == EMBEDDED / info.name:
        expected = info.checksums[os.path.basename(path)][1]
        if md5(payload) != expected:
            raise IDXError(f"{path}: the embedded file is damaged (md5 of its data is {md5(payload)}, "
                           f"expected {expected}); restore it with: git checkout -- {path}")
    return payload


def train_val_split(labels, val_fraction, seed=0):
    """Stratified, seeded split of indices: each class gives round(val_fraction * count) to
    validation. Returns (train_idx, val_idx), each sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.append(rng.permutation(idx)[: int(round(val_fraction * len(idx)))])
    val = np.sort(np.concatenate(val)) if val else np.array([], np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val
