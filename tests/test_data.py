"""data/: IDX reading and its refusals, real data sets, split, transforms, batching, download."""
import dataclasses
import gzip
import http.server
import os
import shutil
import subprocess
import sys
import threading
from functools import partial

import numpy as np
import pytest

import data
from data import datasets
from data.idx import IDXError, parse_idx, read_idx
from data.transforms import interpolation_matrix, prepare_batch, random_shift, resize_bilinear
from tests.conftest import LARGE_DATA, ROOT, large_data

MINI = datasets.EMBEDDED / "mnist-mini"


# -- IDX ------------------------------------------------------------------------------------------

def idx_bytes(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(data.idx.TYPE_CODES[code]).tobytes()


def test_round_trip_of_every_type_code(tmp_path):
    for code, dtype in data.idx.TYPE_CODES.items():
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype.newbyteorder("="))
        if dtype.kind == "u":
            a = np.abs(a)
        path = tmp_path / f"t{code}.gz"
        path.write_bytes(gzip.compress(idx_bytes(a, code)))
        np.testing.assert_array_equal(read_idx(path), a)
        (tmp_path / f"t{code}").write_bytes(idx_bytes(a, code))  # raw works too
        np.testing.assert_array_equal(read_idx(tmp_path / f"t{code}"), a)


def test_header_is_big_endian():
    payload = bytes([0, 0, 8, 1]) + (258).to_bytes(4, "big") + bytes(258)
    assert parse_idx(payload).shape == (258,)


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b[:-10], r"truncated: the header says \(5, 4, 4\) values of uint8 \(96 bytes\), the file has 86 bytes"),
    (lambda b: b + b"xx", "has trailing bytes"),
    (lambda b: b"\x12\x34" + b[2:], r"wrong magic number 305399811 \(0x12340803\)"),
    (lambda b: b[:2], "too short for an IDX header"),
    (lambda b: b[:10], r"truncated header"),
])
def test_malformed_files_are_refused_with_the_file_named(tmp_path, mutate, match):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((5, 4, 4), np.uint8))))
    with pytest.raises(IDXError, match=match) as err:
        read_idx(path)
    assert str(err.value).startswith(str(path))


def test_labels_file_where_images_are_expected(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(IDXError, match=r"wrong magic number 2049: expected 2051 \(3-D images\)"):
        read_idx(path, expect_ndim=3)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(50, np.uint8)))[:-8])
    with pytest.raises(IDXError, match="corrupt gzip data"):
        read_idx(path)


def write_split(folder, images, labels, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    img_name, lbl_name = datasets.FILES[split]
    (folder / img_name).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / lbl_name).write_bytes(gzip.compress(idx_bytes(labels)))


def test_images_and_labels_of_different_lengths(tmp_path):
    write_split(tmp_path, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="has 5 images but .* has 4 labels"):
        data.load_split("mnist", "train", tmp_path, download_missing=False)


def test_labels_out_of_range(tmp_path):
    write_split(tmp_path, np.zeros((3, 28, 28), np.uint8), np.array([1, 12, 10], np.uint8))
    with pytest.raises(IDXError, match=r"labels out of range \[10, 12\]; expected 0..9"):
        data.load_split("mnist", "train", tmp_path, download_missing=False)


def test_missing_files_name_every_folder_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NN_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_split("mnist", "train", tmp_path / "explicit", download_missing=False)
    text = str(err.value)
    assert "missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in text
    for folder in (tmp_path / "explicit", tmp_path / "env" / "mnist", tmp_path / "cache" / "inception-numpy" / "mnist"):
        assert str(folder) in text
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        data.load_split("cifar", "train")


# -- the real files -------------------------------------------------------------------------------

def test_the_embedded_mnist_mini_split():
    """Always there, offline: the first 8,000 and the last 2,000 digits of MNIST's test set."""
    x, y = data.load_split("mnist-mini", "train", download_missing=False)
    xt, yt = data.load_split("mnist-mini", "test", download_missing=False)
    assert x.shape == (8000, 28, 28) and xt.shape == (2000, 28, 28) and x.dtype == np.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]    # MNIST's test set begins so
    assert yt[:5].tolist() == [4, 9, 9, 7, 1]
    assert np.bincount(y).tolist() == [773, 905, 834, 803, 788, 723, 756, 813, 787, 818]
    assert np.bincount(yt).tolist() == [207, 230, 198, 207, 194, 169, 202, 215, 187, 191]
    for name, (kind, md5) in datasets.DATASETS["mnist-mini"].checksums.items():
        assert datasets.md5(gzip.decompress((MINI / name).read_bytes())) == md5


def test_a_damaged_embedded_file_is_named_with_the_fix(tmp_path, monkeypatch):
    copy = tmp_path / "embedded"
    shutil.copytree(datasets.EMBEDDED, copy)
    labels = copy / "mnist-mini" / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(payload)))
    monkeypatch.setattr(datasets, "EMBEDDED", copy)
    with pytest.raises(IDXError, match=r"the embedded file is damaged .*restore it with: git checkout --"):
        data.load_split("mnist-mini", "test")


@pytest.mark.large_data
@large_data("mnist")
def test_mnist_test_set_and_the_embedded_split_made_from_it():
    x, y = data.load_split("mnist", "test", LARGE_DATA, download_missing=False)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for split, part in (("train", slice(0, 8000)), ("test", slice(8000, None))):
        xm, ym = data.load_split("mnist-mini", split)
        np.testing.assert_array_equal(xm, x[part])
        np.testing.assert_array_equal(ym, y[part])


@pytest.mark.large_data
@large_data("fashion-mnist")
def test_fashion_mnist():
    x, y = data.load_split("fashion-mnist", "train", LARGE_DATA, download_missing=False)
    xt, yt = data.load_split("fashion-mnist", "test", LARGE_DATA, download_missing=False)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert y[:5].tolist() == [9, 0, 0, 3, 0] and yt[:5].tolist() == [9, 2, 1, 1, 6]
    assert x.mean() / 255 == pytest.approx(datasets.DATASETS["fashion-mnist"].mean, abs=1e-3)


def test_stratified_split_is_reproducible():
    labels = np.repeat(np.arange(10), [100 + 10 * i for i in range(10)])
    train, val = data.train_val_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [round(0.1 * (100 + 10 * i)) for i in range(10)]
    np.testing.assert_array_equal(val, data.train_val_split(labels, 0.1, seed=3)[1])
    assert not np.array_equal(val, data.train_val_split(labels, 0.1, seed=4)[1])


# -- transforms -----------------------------------------------------------------------------------

def bilinear_by_formula(img, size):
    """PyTorch's formula pixel by pixel: src = (dst + 0.5) * in/out - 0.5, clamped."""
    h, w = img.shape
    out = np.empty((size, size))
    for i in range(size):
        sy = min(max((i + 0.5) * h / size - 0.5, 0), h - 1)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(size):
            sx = min(max((j + 0.5) * w / size - 0.5, 0), w - 1)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
                         + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
    return out


def test_resize_reference_values():
    up = resize_bilinear(np.array([[[0, 1], [2, 3]]], np.float32), 4)[0]
    np.testing.assert_allclose(up, [[0, 0.25, 0.75, 1], [0.5, 0.75, 1.25, 1.5],
                                    [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]], atol=1e-7)
    assert interpolation_matrix(28, 299).sum(axis=1) == pytest.approx(np.ones(299))


@pytest.mark.parametrize("size", [32, 96, 224, 299])
def test_resize_matches_the_formula_on_a_digit(size):
    img = np.random.default_rng(size).integers(0, 256, (28, 28)).astype(np.float32) / 255
    np.testing.assert_allclose(resize_bilinear(img[None], size)[0], bilinear_by_formula(img, size), atol=1e-5)


def test_resize_matches_torch_when_available():
    torch = pytest.importorskip("torch")
    img = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img)[:, None], size=(299, 299), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(img, 299), ref, atol=1e-5)


def test_prepare_batch_normalises_and_replicates_channels():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1] = 255
    x = prepare_batch(images, 64, 0.1307, 0.3081)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0], -0.42421, atol=1e-5)
    np.testing.assert_allclose(x[1], 2.82149, atol=1e-5)
    np.testing.assert_array_equal(x[:, 0], x[:, 2])


def test_random_shift_moves_pixels_and_fills_with_zero():
    img = np.zeros((1, 5, 5), np.uint8)
    img[0, 2, 2] = 9
    rng = np.random.default_rng(0)
    shifted = random_shift(np.repeat(img, 50, axis=0), 2, rng)
    assert (shifted.sum(axis=(1, 2)) == 9).all()  # never shifted off a 5x5 by at most 2
    assert len({tuple(np.argwhere(s)[0]) for s in shifted}) > 5


# -- batching -------------------------------------------------------------------------------------

def test_loader_covers_every_sample_once_and_is_seeded():
    labels = np.arange(103) % 10
    images = (np.arange(103)[:, None, None] * np.ones((1, 28, 28))).astype(np.uint8)
    loader = data.BatchLoader(images, labels, 10, 28, 0.0, 1.0, shuffle=True, seed=5)
    seen = [y for _, y in loader]
    assert len(seen) == len(loader) == 11 and len(seen[-1]) == 3
    assert sorted(np.concatenate(seen).tolist()) == sorted(labels.tolist())
    batches = [(x, y) for x, y in loader]
    for x, y in batches:  # images stay with their labels
        np.testing.assert_allclose(x[:, 0, 0, 0] * 255 % 10, y, atol=1e-3)
    loader.set_epoch(1)
    assert not all(np.array_equal(a, b) for a, (_, b) in zip(seen, loader))
    loader.set_epoch(0)
    assert all(np.array_equal(a, b) for a, (_, b) in zip(seen, loader))
    assert len(data.BatchLoader(images, labels, 10, 28, 0, 1, drop_last=True)) == 10


def test_prefetching_yields_the_same_batches_and_passes_errors_on(monkeypatch):
    images = np.random.default_rng(0).integers(0, 255, (50, 28, 28)).astype(np.uint8)
    labels = np.arange(50) % 10
    plain = list(data.BatchLoader(images, labels, 8, 40, 0.1, 0.3, shuffle=True, augment_shift=2))
    fetched = list(data.BatchLoader(images, labels, 8, 40, 0.1, 0.3, shuffle=True, augment_shift=2, prefetch=True))
    for (a, b), (c, d) in zip(plain, fetched):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    def broken(*args):
        raise OSError("disk went away")
    monkeypatch.setattr(data.loader, "prepare_batch", broken)  # fails inside the thread
    with pytest.raises(OSError, match="disk went away"):
        list(data.BatchLoader(images, labels, 8, 40, 0.1, 0.3, prefetch=True))
    with pytest.raises(ValueError, match="image_size must be >= 1, got 8 and 0"):
        data.BatchLoader(images, labels, 8, 0, 0.1, 0.3)


MEMORY_SCRIPT = """
import resource, sys, numpy as np, data
x, y = data.load_split("mnist-mini", "train")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
for xb, yb in data.BatchLoader(x, y, 128, 299, 0.1307, 0.3081, shuffle=True, prefetch=True):
    n += len(xb)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, base // 1024, peak // 1024)
"""


def test_one_epoch_at_299_keeps_memory_bounded():
    """8,000 images at 3x299x299 float32 would be 8.6 GB; batch by batch, the peak stays within
    a few batches (one batch of 128 is 137 MB) above the raw data."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    n, base_mb, peak_mb = map(int, out)
    assert n == 8000
    assert peak_mb - base_mb < 700, f"peak {peak_mb} MB vs {base_mb} MB after loading"


# -- downloading ----------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """An HTTP server on loopback serving a folder, as a data set mirror would."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_falls_back_between_mirrors_and_verifies(mirror, tmp_path, monkeypatch):
    """A mirror serving the embedded split's test files, under checksums that are theirs."""
    root, url = mirror
    (root / "good").mkdir()
    for name in datasets.FILES["test"]:
        (root / "good" / name).write_bytes((MINI / name).read_bytes())
    info = dataclasses.replace(datasets.DATASETS["mnist"], mirrors=(url + "missing/", url + "good/"),
                               checksums=datasets.DATASETS["mnist-mini"].checksums)
    monkeypatch.setitem(datasets.DATASETS, "mnist", info)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NN_DATA_DIR", raising=False)
    log = []
    x, y = data.load_split("mnist", "test", tmp_path / "empty", log=log.append)
    assert x.shape == (2000, 28, 28) and y[:3].tolist() == [4, 9, 9]
    assert any("missing/" in line for line in log) and any("good/" in line for line in log)
    cached = tmp_path / "cache" / "inception-numpy" / "mnist"
    assert sorted(os.listdir(cached)) == sorted(datasets.FILES["test"])  # no temporary files left
    log.clear()
    data.load_split("mnist", "test", tmp_path / "empty", log=log.append)
    assert log == []  # found in the cache the second time


def test_download_with_a_checksum_mismatch_is_refused(mirror, tmp_path, monkeypatch):
    root, url = mirror
    for name in datasets.FILES["test"]:
        arr = np.zeros((3, 28, 28), np.uint8) if "images" in name else np.zeros(3, np.uint8)
        (root / name).write_bytes(gzip.compress(idx_bytes(arr)))
    info = dataclasses.replace(datasets.DATASETS["mnist"], mirrors=(url,))
    monkeypatch.setitem(datasets.DATASETS, "mnist", info)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NN_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError, match=r"checksum mismatch \(md5 of the decompressed data is"):
        data.load_split("mnist", "test", tmp_path / "empty", log=lambda s: None)
    assert not (tmp_path / "cache" / "inception-numpy" / "mnist").exists() or \
        not os.listdir(tmp_path / "cache" / "inception-numpy" / "mnist")


def test_a_header_whose_dimensions_overflow_is_refused():
    """65536**4 values of one byte: in int64 that product wraps to 0, and a header with no data
    after it used to pass the size check as an empty array."""
    payload = bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4
    with pytest.raises(IDXError, match=r"truncated: the header says \(65536, 65536, 65536, 65536\)"):
        parse_idx(payload, "overflow")
