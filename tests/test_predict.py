"""python -m models.predict: your own images made to look like MNIST's, classified, explained."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

import data
from data.images import ImageError, read_grey, to_mnist
from models import predict as predict_cli
from models import train as train_cli
from tests.conftest import quiet, tiny_config


def render(digit, how, rng):
    """A test digit (uint8 28x28, white on black) as someone's own picture of it."""
    scale = {"black on white": 4.0, "white on black": 2.5, "small, off-centre": 1.0, "transparent": 3.0,
             "jpeg": 3.5}[how]
    size = max(1, round(28 * scale))
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR))
    canvas_h, canvas_w = size + rng.integers(20, 120), size + rng.integers(20, 120)
    top, left = rng.integers(0, canvas_h - size), rng.integers(0, canvas_w - size)   # off-centre
    canvas = np.zeros((canvas_h, canvas_w), np.uint8)
    canvas[top:top + size, left:left + size] = big
    if how in ("black on white", "jpeg"):
        return Image.fromarray(255 - canvas)
    if how == "transparent":   # black ink, alpha where the ink is, transparent elsewhere
        rgba = np.zeros((canvas_h, canvas_w, 4), np.uint8)
        rgba[..., 3] = canvas
        return Image.fromarray(rgba, "RGBA")
    return Image.fromarray(canvas)


WAYS = ("black on white", "white on black", "small, off-centre", "transparent", "jpeg")


def write_rendered(folder, count, seed=0):
    """`count` test digits, each rendered one of the ways above, as files; returns their labels."""
    images, labels = data.load_split("mnist-mini", "test")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        how = WAYS[i % len(WAYS)]
        picture = render(images[i], how, rng)
        picture.save(folder / f"digit_{i:03d}.{'jpg' if how == 'jpeg' else 'png'}")
    return images[:count], labels[:count]


def similarity(a, b):
    """The correlation of two 28x28 images, at the best of the shifts by up to one pixel (the
    centre of mass is rounded to a whole pixel, so a picture may land one pixel off)."""
    b = np.pad(b.astype(float), 1)
    return max(np.corrcoef(a.ravel(), b[1 + dy:29 + dy, 1 + dx:29 + dx].ravel())[0, 1]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@pytest.mark.parametrize("how", WAYS)
def test_own_pictures_of_a_digit_become_that_digit_again(how, tmp_path):
    """Whatever the colours, size, place or format, the preprocessed picture is the MNIST digit:
    the same image as the digit itself put through the same steps, to a pixel of centring."""
    images, _ = data.load_split("mnist-mini", "test")
    rng = np.random.default_rng(1)
    for digit in images[:12]:
        path = tmp_path / f"d.{'jpg' if how == 'jpeg' else 'png'}"
        render(digit, how, rng).save(path)
        seen, expected = to_mnist(read_grey(path)), to_mnist(digit)
        assert seen.shape == (28, 28) and seen.dtype == np.uint8
        assert similarity(seen, expected) > 0.9, how


def test_a_digit_is_centred_by_its_mass_in_a_20_pixel_box():
    grey = np.full((90, 60), 255, np.uint8)
    grey[10:70, 20:35] = 0                          # a black bar on white: 60 x 15
    out = to_mnist(grey).astype(float)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 in (5, 6)
    centre = ((out.sum(axis=1) @ np.arange(28)) / out.sum(), (out.sum(axis=0) @ np.arange(28)) / out.sum())
    assert np.allclose(centre, 14, atol=0.6)


def test_the_command_prints_writes_and_explains(finished, tmp_path, capsys):
    write_rendered(tmp_path / "mine", 6)
    argv = ["--checkpoint", str(finished / "model_best.npz"), str(tmp_path / "mine"), "-k", "3",
            "--output", str(tmp_path / "p.csv"), "--show-preprocessed", str(tmp_path / "seen"),
            "--explain", str(tmp_path / "why")]
    assert predict_cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["image", "top", "1", "top", "2", "top", "3"] and len(out) == 7
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["file"] for r in rows] == sorted(str(p) for p in (tmp_path / "mine").iterdir())
    for r in rows:
        p = [float(r[f"probability_{i}"]) for i in (1, 2, 3)]
        assert p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6 and r["class_1"] in "0123456789"
    for folder, suffix in (("seen", "_seen.png"), ("why", "_explained.png")):
        files = sorted((tmp_path / folder).iterdir())
        assert [f.name for f in files] == [f"digit_{i:03d}{suffix}" for i in range(6)]
        assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)
    assert Image.open(tmp_path / "seen" / "digit_000_seen.png").size == (16, 16)   # the run's image size
    with pytest.raises(SystemExit):   # nothing is overwritten without --overwrite
        predict_cli.main(argv)
    assert f"{tmp_path / 'p.csv'} exists (and 12 more): choose another output" in capsys.readouterr().err
    assert predict_cli.main(argv[:5] + ["--output", str(tmp_path / "p.json")]) == 0
    saved = json.load(open(tmp_path / "p.json"))
    assert len(saved) == 6 and saved[0]["predictions"][0]["class"] == rows[0]["class_1"]


@pytest.mark.parametrize("make,message", [
    (lambda d: (d / "x.png").write_text("not an image"), "x.png: not an image Pillow can read"),
    (lambda d: Image.fromarray(np.full((30, 30), 255, np.uint8)).save(d / "x.png"), "x.png: no ink found"),
    (lambda d: (d / "x.png").write_bytes((d / "noise.png").read_bytes()[:500]), "x.png: the image is damaged"),
    (lambda d: None, "missing.png: no such file or folder"),
])
def test_bad_images_are_named(finished, tmp_path, capsys, make, message):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "noise.png")
    make(tmp_path)
    target = tmp_path / ("missing.png" if "missing" in message else "x.png")
    with pytest.raises(SystemExit) as exit_:
        predict_cli.main(["--checkpoint", str(finished / "model_best.npz"), str(target)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_empty_folder_is_named(finished, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        predict_cli.main(["--checkpoint", str(finished / "model_best.npz"), str(tmp_path / "empty")])
    assert f"{tmp_path / 'empty'}: a folder with no images in it" in capsys.readouterr().err


def test_class_names_come_from_the_checkpoints_data_set(finished, tmp_path, capsys, monkeypatch):
    """A model trained on Fashion-MNIST answers in its words (here: a tiny run on the embedded
    digits, relabelled as Fashion-MNIST's ten classes)."""
    fake = data.datasets.DATASETS["mnist-mini"].__class__(**{**vars(data.datasets.DATASETS["mnist-mini"]),
                                                            "classes": data.datasets.DATASETS["fashion-mnist"].classes})
    monkeypatch.setitem(data.datasets.DATASETS, "mnist-mini", fake)
    train_cli.run(tiny_config(tmp_path / "run", epochs=1), log=quiet)
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tmp_path / "line.png")
    assert predict_cli.main(["--checkpoint", str(tmp_path / "run" / "model_best.npz"), str(tmp_path / "line.png"),
                             "-k", "10"]) == 0
    printed = capsys.readouterr().out
    assert all(word in printed for word in ("T-shirt/top", "Ankle boot", "Sneaker"))


@pytest.mark.slow
def test_predictions_on_pictures_agree_with_evaluate_on_the_digits(tmp_path):
    """The quick preset's model (3 epochs, about 3 minutes here), 200 test digits rendered five
    ways: models.predict gives the class the model gives the original digits (evaluate's input)
    for at least 95% of them."""
    config = train_cli.make_config(train_cli.build_parser().parse_args(
        ["--output-dir", str(tmp_path / "run"), "--print-freq", "1000"]))
    train_cli.run(config, log=quiet)
    model, config, info = predict_cli.load_model(tmp_path / "run" / "model_best.npz")
    digits, labels = write_rendered(tmp_path / "mine", 200)
    files = sorted(str(p) for p in (tmp_path / "mine").iterdir())
    on_pictures = predict_cli.predict(model, predict_cli.preprocess(files, info), config, info, 1)[0].argmax(axis=1)
    on_digits = predict_cli.predict(model, digits, config, info, 1)[0].argmax(axis=1)
    agreement = float((on_pictures == on_digits).mean())
    print(f"agreement {agreement:.3f}; accuracy on pictures {(on_pictures == labels).mean():.3f}, "
          f"on the digits {(on_digits == labels).mean():.3f}")
    assert agreement >= 0.95
