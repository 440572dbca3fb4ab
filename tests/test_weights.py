"""Weights out and in: safetensors bit for bit, read by the official reader and by PyTorch;
fine-tuning from saved weights (models.train --initial-checkpoint)."""
import json

import numpy as np
import pytest

import models
import nn
from models import export as export_cli
from models import train as train_cli
from models.checkpoint import read_checkpoint
from models.weights import CheckpointError, load_weights, read_safetensors, save_safetensors
from tests.conftest import quiet, tiny_config


def trained_looking(name, **kwargs):
    """A model whose every entry differs from a fresh one's (BN statistics included)."""
    nn.manual_seed(1)
    model = models.build(name, **kwargs)
    rng = np.random.default_rng(0)
    for _, t in model._named_members():
        t.data[...] = rng.standard_normal(t.data.shape) if t.data.dtype.kind == "f" else 7
    return model


@pytest.mark.parametrize("name", ["inception_v2", "inception_v3"])
def test_safetensors_round_trip_bit_for_bit(name, tmp_path):
    model = trained_looking(name, width=0.1)
    save_safetensors(model, tmp_path / "w.safetensors", {"dataset": "mnist-mini"})
    state, metadata = read_safetensors(tmp_path / "w.safetensors")
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert state[key].dtype == value.dtype and np.array_equal(state[key], value), key
    assert metadata["model"] == name and metadata["dataset"] == "mnist-mini"
    fresh = models.build(name, width=0.1)
    load_weights(fresh, tmp_path / "w.safetensors")
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_the_official_reader_and_writer_agree_with_ours(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    model = trained_looking("inception_v2", width=0.1)
    save_safetensors(model, tmp_path / "ours.safetensors")
    theirs = safetensors.load_file(str(tmp_path / "ours.safetensors"))
    assert set(theirs) == set(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(theirs[key], value)
    safetensors.save_file({k: v for k, v in model.state_dict().items()}, str(tmp_path / "theirs.safetensors"))
    fresh = models.build("inception_v2", width=0.1)
    load_weights(fresh, tmp_path / "theirs.safetensors")   # no metadata: names and shapes decide
    np.testing.assert_array_equal(fresh.fc.weight.data, model.fc.weight.data)


@pytest.mark.parametrize("name,size", [("inception_v2", 64), ("inception_v3", 75)])
def test_pytorch_loads_the_file_and_gives_the_same_logits(name, size, tmp_path):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import convert
    nn.manual_seed(0)
    model = models.build(name, width=0.25)
    rng = np.random.default_rng(0)
    for _ in range(2):   # non-trivial running statistics
        model(rng.standard_normal((4, 3, size, size)).astype(np.float32))
    model.eval()
    save_safetensors(model, tmp_path / "w.safetensors")
    theirs = convert(models.build(name, width=0.25), copy_weights=False).eval()
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = lambda path: {k: torch.from_numpy(v) for k, v in read_safetensors(path)[0].items()}
    theirs.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    x = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with nn.no_grad():
        np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:100], "its header says"),
    (lambda b: b[:-10], "does not fit the file"),
    (lambda b: b[:8] + b"{not json" + b[17:], "not a readable safetensors file"),
])
def test_a_damaged_safetensors_file_is_named(tmp_path, damage, message):
    model = models.build("inception_v2", width=0.05)
    save_safetensors(model, tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(damage((tmp_path / "w.safetensors").read_bytes()))
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'bad.safetensors'}: .*{message}"):
        load_weights(model, tmp_path / "bad.safetensors")


def test_export_writes_a_checkpoints_model_and_refuses_to_overwrite(finished, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert export_cli.main([str(finished / "model_best.npz"), str(out)]) == 0
    state, metadata = read_safetensors(out)
    best = read_checkpoint(finished / "model_best.npz")
    for key, value in state.items():
        np.testing.assert_array_equal(value, best[f"model/{key}"])
    assert metadata["dataset"] == "mnist-mini" and json.loads(metadata["config"])["width"] == 0.1
    with pytest.raises(SystemExit):
        export_cli.main([str(finished / "model_best.npz"), str(out)])
    assert "exists: choose another name, or pass --overwrite" in capsys.readouterr().err


def test_fine_tuning_starts_from_the_weights_with_a_fresh_optimizer(finished, tmp_path):
    config = tiny_config(tmp_path / "tuned", epochs=1, initial_checkpoint=str(finished / "model_best.npz"))
    run = train_cli.setup(config, log=quiet)
    run.folder.release()
    best = read_checkpoint(finished / "model_best.npz")
    for key, value in run.model.state_dict().items():
        np.testing.assert_array_equal(value, best[f"model/{key}"], err_msg=key)
    assert run.opt.state == {} and run.meta["epoch"] == 0
    # with new final layers: everything but the classifiers comes from the file
    run = train_cli.setup(tiny_config(tmp_path / "new", epochs=1, initial_checkpoint=str(finished / "model_best.npz"),
                                      new_classifier=True), log=quiet)
    run.folder.release()
    assert np.array_equal(run.model.conv1.conv.weight.data, best["model/conv1.conv.weight"])
    assert not np.array_equal(run.model.fc.weight.data, best["model/fc.weight"])


def test_fine_tuning_from_another_architecture_width_or_class_count_is_refused(finished, tmp_path, capsys):
    flags = ["--no-download", "--image-size", "16", "--train-subset", "160", "--val-fraction", "0.25",
             "-b", "16", "--epochs", "1", "--initial-checkpoint"]
    with pytest.raises(SystemExit):
        train_cli.main(flags + [str(finished / "model_best.npz"), "--width", "0.2", "--output-dir", str(tmp_path / "a")])
    assert "holds weights of width 0.1, the model has width 0.2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(flags + [str(finished / "model_best.npz"), "--width", "0.1", "--model", "inception_v3",
                                "--image-size", "75", "--output-dir", str(tmp_path / "b")])
    assert "holds weights of inception_v2, not of inception_v3" in capsys.readouterr().err
    five = models.build("inception_v2", num_classes=5, width=0.1)
    save_safetensors(five, tmp_path / "five.safetensors")
    with pytest.raises(SystemExit):
        train_cli.main(flags + [str(tmp_path / "five.safetensors"), "--width", "0.1", "--output-dir", str(tmp_path / "c")])
    assert "add --new-classifier to start the final layers afresh" in capsys.readouterr().err
    assert train_cli.main(flags + [str(tmp_path / "five.safetensors"), "--width", "0.1", "--new-classifier",
                                   "--output-dir", str(tmp_path / "d"), "--print-freq", "1000"]) == 0
