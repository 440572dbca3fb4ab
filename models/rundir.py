"""The output folder of a training run: checked before any work starts, and never shared.

claim() refuses, before a single batch is trained:
- a path that is a file, a folder that cannot be created or written to (one sentence naming
  the folder and the cause, not a traceback an epoch later);
- a folder that holds another run (its checkpoint, best model, history or report), unless the
  run being resumed is that one, or the user passed --overwrite (which then removes the old
  run's files first, so that nothing of it is mistaken for the new run's);
- a folder another live training process is writing to (a lock file holding its process id;
  a lock left by a process that no longer runs is taken over).
Holding the lock, it removes the temporary files that a killed process left mid-write
(nn.serialization.atomic_write's ".<name>.<random>.tmp").
"""
import errno
import json
import os
import tempfile
import zipfile

import numpy as np

from nn.serialization import WriteError, remove_temporaries

# What a run writes; a folder holding any of the first four holds a run.
RUN_FILES = ("checkpoint.npz", "model_best.npz", "history.csv", "report.json", "report.md",
             "config.json", "confusion_matrix.png")
LOCK = ".lock"


class RunFolderError(ValueError):
    """The output folder cannot be used for this run; the message says why and what to do."""


def run_id(folder):
    """The id of the run whose checkpoint is in `folder`, or None (no readable checkpoint)."""
    try:
        with np.load(os.path.join(folder, "checkpoint.npz"), allow_pickle=False) as f:
            return json.loads(str(f["meta"])).get("run_id")   # reads this entry only
    except (OSError, KeyError, ValueError, AttributeError, EOFError, zipfile.BadZipFile):
        return None   # unreadable: the folder still holds a run, of unknown id


class RunFolder:
    def __init__(self, path):
        self.path = os.fspath(path)
        self.locked = False

    def file(self, name):
        return os.path.join(self.path, name)

    def existing_run_files(self):
        return [name for name in RUN_FILES if os.path.exists(self.file(name))]

    def claim(self, run, overwrite=False, flag="--output-dir"):
        """Check the folder for the run with id `run` (a new run's or the resumed one's), lock
        it, and clean it (see the module docstring). Returns the stale temporaries removed."""
        where = f"{flag} {self.path}"
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunFolderError(f"{where} is a file, not a folder: choose another {flag}")
        try:
            os.makedirs(self.path, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise RunFolderError(f"cannot write in {where}: {err.strerror or err}; choose another "
                                 f"{flag} or fix its permissions") from None
        self._lock(where)
        try:
            removed = remove_temporaries(self.path)
            held = self.existing_run_files()
            if held and run_id(self.path) != run:
                if not overwrite:
                    raise RunFolderError(
                        f"{where} already holds a training run ({', '.join(held)}): continue it with "
                        f"--resume {self.file('checkpoint.npz')}, choose another {flag}, or pass "
                        "--overwrite to replace it")
                for name in held:
                    os.unlink(self.file(name))
        except BaseException:
            self.release()
            raise
        return removed

    def _lock(self, where):
        path = self.file(LOCK)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _owner(path)
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise RunFolderError(f"another training process ({owner}) is writing to {where}: "
                                         "wait for it to finish, or choose another folder") from None
                os.unlink(path)   # left by a process that is gone
                continue
            except OSError as err:
                raise WriteError(err.errno, f"cannot write in {where}: {err.strerror}") from err
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.locked = True
            return
        raise RunFolderError(f"cannot lock {where}: another process keeps creating {path}")

    def release(self):
        if self.locked:
            self.locked = False
            try:
                os.unlink(self.file(LOCK))
            except OSError:
                pass


def _owner(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM   # alive, but another user's
    return True
