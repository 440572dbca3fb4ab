"""Data-parallel training over MPI (models/distributed.py), run under `mpiexec -n 2`: the reduced
gradients against one process, exact resume, rank 0 alone writing, and the errors. The MPI
tests skip, saying how to install it, without mpi4py and an mpiexec (pip install -e ".[mpi]")."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from models import distributed
from models import train as train_cli
from models.checkpoint import read_checkpoint
from tests.conftest import ROOT
from tests.test_train import assert_same_run

TINY = ["--no-download", "--width", "0.1", "--image-size", "16", "--train-subset", "160",
        "--val-fraction", "0.25", "-b", "16", "--epochs", "2", "--print-freq", "1000"]


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else on the PATH; None without mpi4py."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason='needs mpi4py and an mpiexec: pip install -e ".[mpi]"')


def mpi(*args, env=None, check=True, timeout=300):
    """`mpiexec -n 2 python tests/mpi_cases.py ARGS`; the finished process. A rank waiting for
    ever spins at full speed: MPICH's mpiexec ends the job after MPIEXEC_TIMEOUT seconds, and the
    whole process group is killed if that fails."""
    environment = {**os.environ, "MPIEXEC_TIMEOUT": str(timeout), **(env or {})}
    environment.pop("PYTEST_CURRENT_TEST", None)
    command = [MPIEXEC, "-n", "2", sys.executable, str(ROOT / "tests" / "mpi_cases.py"), *map(str, args)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                          cwd=ROOT, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@needs_mpi
def test_two_ranks_compute_the_gradient_of_one_process(tmp_path):
    """Inception-V2 (width 0.1, float64, no dropout), a batch of 16 random 32x32 images:
    with --sync-bn, 2 ranks x 8 images give the gradient of 1 process x 16, and three Adam steps
    stay together; without it, each rank's batch norm sees its own 8 images, and the reduced
    gradient is the mean of the two halves' gradients (exactly: a + b = b + a)."""
    mpi("gradients", tmp_path / "errors.json")
    errors = json.loads((tmp_path / "errors.json").read_text())
    assert errors["sync_vs_one_process"] < 1e-10
    assert all(e < 1e-8 for e in errors["sync_steps_vs_one_process"]), errors
    assert errors["plain_vs_mean_of_halves"] == 0.0
    assert errors["plain_vs_one_process"] > 1e-3   # per-rank statistics do differ from the whole batch's


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """A finished two-epoch tiny run on two ranks (rank 1 forbidden to write in its folder)."""
    out = tmp_path_factory.mktemp("two_ranks") / "run"
    done = mpi("train", *TINY, "--output-dir", out)
    return out, done


@needs_mpi
def test_only_rank_0_writes_and_reports(two_rank_run):
    out, done = two_rank_run
    for name in ("checkpoint.npz", "model_best.npz", "history.csv", "report.md", "report.json",
                 "config.json", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / ".lock").exists()
    assert done.stdout.count("Epoch 2/2 - ") == 1        # progress from rank 0 alone
    assert "2 ranks x 8 images" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["ranks"] == 2
    # evaluation is shared out and summed: every image counted once
    assert sum(map(sum, report["splits"]["validation"]["confusion_matrix"])) == 40
    assert sum(map(sum, report["splits"]["testing"]["confusion_matrix"])) == 2000
    meta = read_checkpoint(out / "checkpoint.npz")["meta"]
    assert meta["world_size"] == 2 and len(meta["rank_states"]) == 2


@needs_mpi
def test_a_checkpoint_of_two_ranks_resumes_exactly_on_two(two_rank_run, tmp_path):
    """SIGINT reaches rank 1 alone after step 11 (batch 4 of 7 in epoch 2): both ranks stop
    together and save; --resume on two ranks then ends bit for bit where the straight run did."""
    straight, _ = two_rank_run
    split = tmp_path / "split"
    stopped = mpi("train", *TINY, "--output-dir", split, env={"STOP_AFTER": "11"}, check=False)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert f"continue with --resume {split / 'checkpoint.npz'}" in stopped.stderr
    meta = read_checkpoint(split / "checkpoint.npz")["meta"]
    assert (meta["epoch"], meta["step"]) == (1, 4)
    mpi("train", "--resume", split / "checkpoint.npz")
    assert_same_run(straight, split)


@needs_mpi
def test_an_error_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1 alone runs out of memory at step 3: the job ends (rank 0 would otherwise wait in
    the next Allreduce for ever), naming the rank and the error."""
    done = mpi("train", *TINY, "--output-dir", tmp_path / "run", env={"FAIL_AFTER": "3"}, check=False)
    assert done.returncode != 0
    assert "rank 1 of 2: Traceback" in done.stderr and "MemoryError: rank 1 ran out of memory" in done.stderr


@needs_mpi
def test_a_batch_that_does_not_split_is_one_clear_error(tmp_path):
    done = mpi("train", *TINY, "-b", "15", "--output-dir", tmp_path / "odd", check=False)
    assert done.returncode == 2
    assert done.stderr.count("-b/--batch-size 15 does not split into 2 equal parts, one per rank: "
                             "choose a multiple of 2") == 1, done.stderr
    assert not (tmp_path / "odd" / "checkpoint.npz").exists()


@needs_mpi
def test_resuming_with_another_number_of_ranks_says_how(two_rank_run, capsys):
    out, _ = two_rank_run
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--resume", str(out / "checkpoint.npz"), "--epochs", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "this run was saved by 2 rank(s) and is resumed by 1" in err
    assert "mpiexec -n 2 python -m models.train --resume" in err


def test_distributed_without_mpi4py_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py now raises ImportError
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["--distributed", *TINY, "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert 'pip install -e ".[mpi]"' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_one_process_world_is_the_plain_operations():
    world = distributed.World()
    x = np.arange(6.0).reshape(2, 3)
    total = world.sum(x)
    np.testing.assert_array_equal(total, x)
    assert total is not x and world.any(True) and not world.any(False)
    assert world.gather("a") == ["a"] and world.root_does(lambda: 7) == 7
    assert world.root_first(lambda: 8) == 8 and world.is_root


@pytest.mark.parametrize("variables,expected", [({"PMI_SIZE": "2"}, True), ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
                                                 ({"PMI_SIZE": "1"}, False), ({"PMIX_SIZE": "x"}, False),
                                                 ({}, False)])
def test_launchers_are_recognised_by_their_variables(monkeypatch, variables, expected):
    for name in distributed._LAUNCHER_SIZES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched_by_mpi() is expected
