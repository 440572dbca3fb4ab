"""Nothing the user has is lost, and every failure is one clear sentence: output folders,
damaged checkpoints, late-found problems, signals, a full disk (the numerical edges are in
tests/test_loss.py and tests/test_winograd.py, the library-API edges in tests/test_module.py)."""
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import models
from models import evaluate as evaluate_cli
from models import train as train_cli
from models.checkpoint import read_checkpoint
from models.weights import CheckpointError, load_weights
from nn.serialization import WriteError, atomic_write
from tests.conftest import ROOT, tiny_config
from tests.test_train import resume

TINY_FLAGS = ["--no-download", "--width", "0.1", "--image-size", "16", "--train-subset", "160",
              "--val-fraction", "0.25", "-b", "16", "--epochs", "2", "--print-freq", "1000"]


def main_error(capsys, argv, code=2):
    """Run the training command; return what it printed on stderr (it must exit with `code`)."""
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(argv)
    assert exit_.value.code == code
    return capsys.readouterr().err


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# -- 1. runs are never overwritten silently -------------------------------------------------------

def test_a_new_run_refuses_a_folder_holding_a_run(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = snapshot(out)
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(out)])
    assert f"--output-dir {out} already holds a training run (checkpoint.npz, model_best.npz" in err
    assert f"--resume {out / 'checkpoint.npz'}" in err and "--overwrite" in err
    assert snapshot(out) == before


def test_overwrite_replaces_the_old_run_entirely(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "report.md").write_text("the old run's report")
    assert train_cli.main(TINY_FLAGS + ["--epochs", "1", "--output-dir", str(out), "--overwrite"]) == 0
    meta = read_checkpoint(out / "checkpoint.npz")["meta"]
    assert meta["epoch"] == 1 and len(meta["history"]) == 1
    assert "the old run's report" not in (out / "report.md").read_text()


def test_a_moved_checkpoint_resumes_in_its_new_folder(finished, tmp_path):
    """Resuming a copy writes beside the copy; the original run is untouched."""
    original = tmp_path / "original"
    shutil.copytree(finished, original)
    before = snapshot(original)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(original / "checkpoint.npz", moved / "checkpoint.npz")
    resume(moved / "checkpoint.npz", epochs=3)
    assert snapshot(original) == before
    assert read_checkpoint(moved / "checkpoint.npz")["meta"]["epoch"] == 3
    assert (moved / "report.md").exists()


def test_resume_into_another_output_dir_writes_the_report_there(finished, tmp_path):
    original = tmp_path / "original"
    shutil.copytree(finished, original)
    before = snapshot(original)
    assert train_cli.main(["--resume", str(original / "checkpoint.npz"), "--epochs", "3",
                           "--output-dir", str(tmp_path / "new")]) == 0
    assert snapshot(original) == before
    for name in ("checkpoint.npz", "model_best.npz", "report.md", "report.json", "history.csv"):
        assert (tmp_path / "new" / name).exists(), name
    assert len(read_checkpoint(tmp_path / "new" / "checkpoint.npz")["meta"]["history"]) == 3


# -- 2. damaged checkpoints are one clear error -----------------------------------------------------

def _damaged(finished, tmp_path, how):
    """A copy of the finished run's checkpoint, damaged as `how` says."""
    path = tmp_path / "checkpoint.npz"
    payload = (finished / "checkpoint.npz").read_bytes()
    if how == "truncated":
        payload = payload[:len(payload) // 2]
    elif how == "empty":
        payload = b""
    elif how == "bit-flipped":
        payload = bytearray(payload)
        for i in range(len(payload) // 3, len(payload) // 3 + 64):
            payload[i] ^= 0xFF
        payload = bytes(payload)
    elif how == "not an archive":
        payload = b"hello, this is not a checkpoint\n" * 10
    path.write_bytes(payload)
    if how in ("no scheduler", "no batch_size", "meta not JSON"):
        with np.load(finished / "checkpoint.npz") as f:
            arrays = dict(f)
        if how == "no scheduler":
            del arrays["scheduler"]
        elif how == "no batch_size":
            meta = json.loads(str(arrays["meta"]))
            del meta["config"]["batch_size"]
            arrays["meta"] = np.array(json.dumps(meta))
        else:
            arrays["meta"] = np.array("{'epoch': 2,")
        np.savez(path, **arrays)
    return path


DAMAGE = {
    "truncated": "not a readable checkpoint: the file is truncated or damaged",
    "empty": "the file is empty",
    "bit-flipped": "not a readable checkpoint: the file is truncated or damaged",
    "not an archive": "not a readable checkpoint",
    "no scheduler": "an incomplete checkpoint: no 'scheduler' entry",
    "no batch_size": "its configuration has no 'batch_size'",
    "meta not JSON": "its 'meta' entry is not valid JSON",
}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(finished, tmp_path, capsys, how):
    path = _damaged(finished, tmp_path, how)
    for command in (train_cli.main, evaluate_cli.main):
        argv = ["--resume", str(path)] if command is train_cli.main else ["--checkpoint", str(path)]
        with pytest.raises(SystemExit) as exit_:
            command(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and DAMAGE[how] in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("how", ["truncated", "empty", "bit-flipped", "not an archive"])
def test_load_weights_names_a_damaged_file(finished, tmp_path, how):
    path = _damaged(finished, tmp_path, how)
    with pytest.raises(CheckpointError, match=f"^{path}: "):
        load_weights(models.build("inception_v2", width=0.1), path)


def test_load_weights_reads_a_checkpoints_model_and_refuses_another_architecture(finished):
    model = load_weights(models.build("inception_v2", width=0.1), finished / "model_best.npz")
    assert np.array_equal(model.fc.weight.data,
                          read_checkpoint(finished / "model_best.npz")["model/fc.weight"])
    with pytest.raises(CheckpointError, match="holds weights of inception_v2, not of inception_v3"):
        load_weights(models.build("inception_v3", width=0.1), finished / "model_best.npz")
    with pytest.raises(CheckpointError, match="holds weights of width 0.1, the model has width 0.2"):
        load_weights(models.build("inception_v2", width=0.2), finished / "model_best.npz")


# -- 3. problems found before any work starts -----------------------------------------------------

def test_an_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(tmp_path / "file")])
    assert f"--output-dir {tmp_path / 'file'} is a file, not a folder" in err
    assert (tmp_path / "file").read_text() == "mine"
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(tmp_path / "file" / "run")])
    assert f"cannot write in --output-dir {tmp_path / 'file' / 'run'}: Not a directory" in err


def _mount_tmpfs(path, options):
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    return path


@pytest.fixture
def read_only_folder(tmp_path):
    folder = _mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    yield folder
    subprocess.run(["umount", str(folder)])


def test_an_unwritable_output_folder_is_found_before_training(read_only_folder, capsys):
    started = time.perf_counter()
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(read_only_folder / "run")])
    assert f"cannot write in --output-dir {read_only_folder / 'run'}: Read-only file system" in err
    assert time.perf_counter() - started < 5   # not after an epoch


def test_an_unwritable_folder_without_a_mount(tmp_path, capsys, monkeypatch):
    """The same check where no filesystem can be mounted: mkstemp refused as by a read-only folder."""
    real = train_cli.RunFolder.claim.__globals__["tempfile"].mkstemp

    def refuse(*args, dir=None, **kwargs):
        if str(dir).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(train_cli.RunFolder.claim.__globals__["tempfile"], "mkstemp", refuse)
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(tmp_path / "run")])
    assert f"cannot write in --output-dir {tmp_path / 'run'}: Permission denied" in err


def test_an_empty_training_split(tmp_path, capsys):
    from tests.test_data import write_split
    write_split(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    write_split(tmp_path, np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.uint8), split="test")
    err = main_error(capsys, ["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download",
                              "--output-dir", str(tmp_path / "run")])
    assert "the training set is empty (0 images in mnist's training split" in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_flags_that_change_a_resumed_run_are_refused(finished, tmp_path, capsys):
    shutil.copytree(finished, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.npz"
    err = main_error(capsys, ["--resume", str(path), "--lr", "0.5", "--width", "0.2"])
    assert "a resumed run keeps the configuration it was started with" in err
    assert "--lr 0.5 (the run has 0.002)" in err and "--width 0.2 (the run has 0.1)" in err
    assert f"--initial-checkpoint {path}" in err
    # a flag equal to the run's own value, or one that only says how to run, is fine
    assert train_cli.main(["--resume", str(path), "--width", "0.1", "--epochs", "3",
                           "--print-freq", "5"]) == 0


@pytest.mark.parametrize("argv,message", [
    (["--image-size", "100000"], "--image-size 100000 with -b 16 needs about"),
    (["--width", "inf"], "argument --width: must be a finite number, got inf"),
    (["--lr", "nan"], "argument --lr/--learning-rate: must be a finite number, got nan"),
    (["--epochs", "0"], "argument --epochs: must be > 0, got 0"),
    (["-b", "1", "--image-size", "32", "--train-subset", "40"], "raise -b/--batch-size (batches of 1 image(s) here)"),
])
def test_sizes_are_checked_with_the_flag_named(tmp_path, capsys, argv, message):
    err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(tmp_path / "run")] + argv)
    assert message in err, err
    assert "Traceback" not in err


# -- 4. signals and the disk ----------------------------------------------------------------------

def start_training(out, *extra):
    """`python -m models.train` in a process of its own, printing a line per batch."""
    return subprocess.Popen(
        [sys.executable, "-m", "models.train", "--no-download", "--width", "0.1", "--image-size", "16",
         "--train-subset", "2000", "--val-fraction", "0.1", "-b", "16", "--epochs", "2",
         "--print-freq", "1", "--output-dir", str(out), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(process, text, timeout=120):
    lines, start = [], time.time()
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
        assert time.time() - start < timeout, "".join(lines)
    raise AssertionError(f"no line with {text!r}:\n" + "".join(lines))


@pytest.mark.parametrize("signals,code", [((signal.SIGINT,), 130), ((signal.SIGINT, signal.SIGINT), 130),
                                          ((signal.SIGTERM,), 143)])
def test_signals_save_a_checkpoint_and_exit_cleanly(tmp_path, signals, code):
    process = start_training(tmp_path)
    wait_for(process, "  3/112]")
    for signum in signals:
        process.send_signal(signum)
    out = process.communicate(timeout=120)[0]
    assert process.returncode == code, out
    assert "Traceback" not in out and "SystemError" not in out
    assert f"continue with --resume {tmp_path / 'checkpoint.npz'}" in out
    meta = read_checkpoint(tmp_path / "checkpoint.npz")["meta"]
    assert meta["epoch"] == 0 and 3 <= meta["step"] < 112
    assert not (tmp_path / ".lock").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_ctrl_c_during_the_final_report(tmp_path):
    process = start_training(tmp_path, "--epochs", "1")
    wait_for(process, "evaluating the best model")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    out = process.communicate(timeout=120)[0]
    assert process.returncode == 130, out
    assert "Traceback" not in out and "SystemError" not in out
    assert "the run is complete and saved" in out and "python -m models.evaluate --checkpoint" in out
    assert read_checkpoint(tmp_path / "model_best.npz")["meta"]["epoch"] == 1


def test_a_full_disk_is_one_sentence_and_keeps_the_last_good_checkpoint(finished, tmp_path):
    """A filesystem that holds one epoch's files but not the next checkpoint beside them."""
    size = (finished / "checkpoint.npz").stat().st_size
    disk = _mount_tmpfs(tmp_path / "disk", f"size={2 * size + 400_000}")
    try:
        done = subprocess.run([sys.executable, "-m", "models.train", *TINY_FLAGS, "--epochs", "3",
                               "--output-dir", str(disk)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        assert f"error: could not write {disk}" in done.stderr and "No space left on device" in done.stderr
        assert "Traceback" not in done.stderr
        meta = read_checkpoint(disk / "checkpoint.npz")["meta"]   # the last good one, readable
        assert meta["epoch"] >= 1
        assert [p.name for p in disk.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_full_disk_without_a_mount(tmp_path, monkeypatch):
    """The same, simulated: every write fails as on a full disk; the old file stays whole."""
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"the last good checkpoint")

    def full(f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(WriteError, match=f"^could not write {path}: No space left on device; the previous "
                                         "checkpoint.npz is unchanged$"):
        atomic_write(path, full)
    assert path.read_bytes() == b"the last good checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_temporaries_of_a_killed_write_are_removed_by_the_next_run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    debris = tmp_path / "run" / ".checkpoint.npz.k1ll3d.tmp"
    debris.write_bytes(b"half a checkpoint")
    resume(tmp_path / "run" / "checkpoint.npz", epochs=3)
    assert not debris.exists()


def test_files_get_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.npz", lambda f: f.write(b"x"))
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.npz", 0o640)
        atomic_write(tmp_path / "new.npz", lambda f: f.write(b"y"))   # a replaced file keeps its mode
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_second_run_in_the_same_folder_at_the_same_time_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run" / ".lock").write_text(str(sleeper.pid))
        err = main_error(capsys, TINY_FLAGS + ["--output-dir", str(tmp_path / "run")])
        assert f"another training process ({sleeper.pid}) is writing to --output-dir {tmp_path / 'run'}" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert train_cli.main(TINY_FLAGS + ["--epochs", "1", "--output-dir", str(tmp_path / "run")]) == 0  # stale lock
