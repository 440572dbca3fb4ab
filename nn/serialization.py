"""Writing files so that nothing the user had is lost: atomically, or not at all."""
import glob
import os
import tempfile


class WriteError(OSError):
    """A file could not be written (full disk, no permission, ...): the message names the file and
    the cause, and says that the previous version of the file, if any, is unchanged."""

    def __str__(self):
        return self.strerror


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file beside `path`, flush it to disk, then rename it over
    `path`. A crash or Ctrl-C at any point leaves either the old file or the new one, never a
    half-written one (the rename is atomic on POSIX and Windows); a write that fails (a full
    disk) removes the temporary file and raises WriteError, naming the path. The file gets the
    permissions of the file it replaces, or those the user's umask gives a new file (a temporary
    file is private to its owner until then)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    existed = os.path.exists(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o7777 if existed else 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        kept = f"; the previous {os.path.basename(path)} is unchanged" if existed else ""
        raise WriteError(err.errno, f"could not write {path}: {err.strerror or err}{kept}") from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp):
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def remove_temporaries(folder):
    """Delete the temporary files that atomic_write left in `folder` when its process was killed
    mid-write (".<name>.<random>.tmp"). Only call this when no other process writes there.
    Returns the paths removed."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp")):
        try:
            os.unlink(tmp)
            removed.append(tmp)
        except OSError:
            pass
    return removed
