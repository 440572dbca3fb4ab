"""python -m models.train / models.evaluate: outputs, exact resume, NaN, Ctrl-C, flags, report."""
import csv
import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from models import evaluate as evaluate_cli
from models import train as train_cli
from models.checkpoint import read_checkpoint
from models.report import confusion_matrix, per_class_scores
from tests.conftest import quiet, tiny_config


def checkpoint_meta(arrays):
    return arrays["meta"]


def test_tiny_run_writes_every_output(tmp_path):
    report = train_cli.run(tiny_config(tmp_path), log=quiet)
    for name in ("checkpoint.npz", "model_best.npz", "history.csv", "mnist-mini_loss.png",
                 "mnist-mini_accuracy.png", "report.md", "report.json", "config.json", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == set(train_cli.HISTORY_FIELDS)
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    for png in ("mnist-mini_loss.png", "mnist-mini_accuracy.png", "confusion_matrix.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(tmp_path / "report.json"))
    assert list(saved["splits"]) == ["training", "validation", "testing"]
    assert saved["splits"]["testing"]["per_class"]["0"]["support"] == 207  # class 0 in the mini test set
    assert sum(map(sum, saved["splits"]["validation"]["confusion_matrix"])) == 40
    assert "| Accuracy (%) |" in open(tmp_path / "report.md").read()
    meta = checkpoint_meta(read_checkpoint(tmp_path / "checkpoint.npz"))
    assert meta["epoch"] == 2 and meta["step"] == 0 and meta["config"]["width"] == 0.1
    assert report["best_epoch"] in (1, 2)
    assert json.load(open(tmp_path / "config.json")) == meta["config"]
    assert not (tmp_path / ".lock").exists()


def final_state(out):
    arrays = read_checkpoint(out / "checkpoint.npz")
    meta = checkpoint_meta(arrays)
    for row in meta["history"]:
        row.pop("seconds")
    return arrays, meta


def assert_same_run(a, b):
    arrays_a, meta_a = final_state(a)
    arrays_b, meta_b = final_state(b)
    assert meta_a["history"] == meta_b["history"]
    keys = [k for k in arrays_a if k.startswith(("model/", "optim/"))]
    assert keys == [k for k in arrays_b if k.startswith(("model/", "optim/"))]
    for k in keys:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)


def resume(checkpoint, **flags):
    """train_cli.run on `checkpoint`, as `--resume checkpoint` plus these flags would."""
    config = train_cli.resumed_config(read_checkpoint(checkpoint)["config"], flags, str(checkpoint))
    return train_cli.run(config, resume=str(checkpoint), log=quiet)


def test_extending_a_finished_run_equals_an_uninterrupted_run(tmp_path):
    """Run 1 epoch, then --resume with --epochs 2 (a constant learning rate, so that the
    schedule does not depend on the planned number of epochs)."""
    train_cli.run(tiny_config(tmp_path / "straight", lr_schedule="constant"), log=quiet)
    train_cli.run(tiny_config(tmp_path / "split", epochs=1, lr_schedule="constant"), log=quiet)
    resume(tmp_path / "split" / "checkpoint.npz", epochs=2)
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def signal_after(monkeypatch, steps, signum=signal.SIGINT):
    """A real signal to this process right after training step number `steps`."""
    real_step, calls = train_cli.train_step, []

    def step(*args):
        result = real_step(*args)
        calls.append(1)
        if len(calls) == steps:
            os.kill(os.getpid(), signum)
        return result
    monkeypatch.setattr(train_cli, "train_step", step)


def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(tmp_path, monkeypatch):
    train_cli.run(tiny_config(tmp_path / "straight"), log=quiet)
    signal_after(monkeypatch, 11)  # 7 batches an epoch: batch 4 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train_cli.run(tiny_config(tmp_path / "split"), log=quiet)
    meta = checkpoint_meta(read_checkpoint(tmp_path / "split" / "checkpoint.npz"))
    assert (meta["epoch"], meta["step"]) == (1, 4)
    monkeypatch.undo()
    resume(tmp_path / "split" / "checkpoint.npz")
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step = train_cli.train_step
    calls = []

    def poisoned(*args):
        calls.append(1)
        loss, total, logits = real_step(*args)
        return (loss, float("nan"), logits) if len(calls) == 10 else (loss, total, logits)

    monkeypatch.setattr(train_cli, "train_step", poisoned)
    with pytest.raises(train_cli.TrainingDiverged) as err:
        train_cli.run(tiny_config(tmp_path), log=quiet)
    # 7 batches an epoch (drop_last): the 10th step is batch 3 of epoch 2
    assert "the loss became nan at epoch 2, batch 3 (global step 10)" in str(err.value)
    assert f"the last good checkpoint is {tmp_path / 'checkpoint.npz'} (epoch 1)" in str(err.value)
    assert checkpoint_meta(read_checkpoint(tmp_path / "checkpoint.npz"))["epoch"] == 1


@pytest.mark.parametrize("argv,message", [
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["--lr", "-1"], "argument --lr/--learning-rate: must be > 0, got -1"),
    (["-b", "zero"], "expected an integer, got 'zero'"),
    (["--val-fraction", "1.5"], "must be in [0, 1), got 1.5"),
    (["--opt", "rmsprop"], "invalid choice: 'rmsprop'"),
])
def test_bad_flags_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_and_too_small_images_are_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NN_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download",
                        "--output-dir", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "mnist train data not found: missing train-images-idx3-ubyte.gz" in err and str(tmp_path) in err
    with pytest.raises(SystemExit):
        train_cli.main(["--model", "inception_v3", "--image-size", "64", "--output-dir", str(tmp_path / "o")])
    assert "--image-size 64 is too small for inception_v3: the minimum is 75" in capsys.readouterr().err


def test_presets():
    parse = lambda *a: train_cli.make_config(train_cli.build_parser().parse_args(list(a)))
    quick = parse()
    assert (quick.model, quick.image_size, quick.train_subset, quick.dataset) == \
        ("inception_v2", 32, 8000, "mnist-mini")
    seed = parse("--preset", "seed")
    assert (seed.model, seed.image_size, seed.epochs, seed.lr, seed.batch_size) == \
        ("inception_v3", 299, 10, 1e-4, 32)
    assert (seed.aux_weight, seed.label_smoothing, seed.weight_decay, seed.opt) == \
        (0.3, 1e-4, 0.01, "adamw")
    assert parse("--preset", "seed", "--model", "inception_v2").image_size == 224
    assert parse("--preset", "seed", "--lr", "0.01").lr == 0.01


def test_evaluation_keeps_no_layer_cache_and_restores_the_mode():
    import nn
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 1, 4, 4)).astype(np.float32), np.array([0, 1, 2, 0]))] * 2
    loss, cm = train_cli.evaluate(net, batches, nn.CrossEntropyLoss(), 3)
    assert cm.sum() == 8 and np.isfinite(loss) and net.training
    assert all(m.cache is None for m in net.modules())


def test_scores_match_a_hand_computed_confusion_matrix():
    """scikit-learn's documented example: y_true=[0,1,2,2,2], y_pred=[0,0,2,2,1]."""
    cm = confusion_matrix([0, 1, 2, 2, 2], [0, 0, 2, 2, 1], 3)
    assert cm.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 2]]
    s = per_class_scores(cm)
    np.testing.assert_allclose(s["precision"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(s["recall"], [1.0, 0.0, 2 / 3])
    np.testing.assert_allclose(s["f1"], [2 / 3, 0.0, 0.8])
    assert s["accuracy"] == 0.6
    assert [round(s["macro"][k], 2) for k in ("precision", "recall", "f1")] == [0.5, 0.56, 0.49]
    assert [round(s["weighted"][k], 2) for k in ("precision", "recall", "f1")] == [0.7, 0.6, 0.61]


def test_evaluate_prints_the_same_report(tmp_path, capsys):
    report = train_cli.run(tiny_config(tmp_path, epochs=1), log=quiet)
    capsys.readouterr()
    assert evaluate_cli.main(["--checkpoint", str(tmp_path / "model_best.npz"), "--split", "testing"]) == 0
    out = capsys.readouterr().out
    acc = report["splits"]["testing"]["accuracy"]
    assert f"| Accuracy (%) | {100 * acc:.2f} |" in out
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--checkpoint", str(tmp_path / "nope.npz")])
    assert "no checkpoint at" in capsys.readouterr().err


def test_profile_prints_where_the_step_goes(tmp_path):
    lines = []
    train_cli.run(tiny_config(tmp_path, epochs=1, profile=True), log=lines.append)
    text = "\n".join(lines)
    assert "profile of one training step, batch 16" in text
    for row in ("Conv2d", "BatchNorm2d", "inception_3a", "aux_1"):
        assert f"  {row} " in text


def test_profile_self_times_add_up():
    import models
    import nn
    from models.profile import profile_step
    nn.manual_seed(0)
    model = models.build("inception_v2", width=0.1)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = np.arange(4)
    opt = nn.optim.SGD(model.parameters(), lr=0.1)
    criteria = [nn.CrossEntropyLoss() for _ in range(3)]
    (loss, total, logits), t = profile_step(model, lambda: train_cli.train_step(model, x, y, criteria, 0.3, opt, None))
    assert logits.shape == (4, 10) and np.isfinite(loss)
    fwd = sum(s for (_, _, phase), s in t["modules"].items() if phase == "forward")
    bwd = sum(s for (_, _, phase), s in t["modules"].items() if phase == "backward")
    assert fwd == pytest.approx(t["forward"], rel=1e-6) and bwd == pytest.approx(t["backward"], rel=1e-6)
    assert t["forward"] + t["backward"] < t["total"]
    assert "forward" not in model.conv1.__dict__  # the timers are removed afterwards
