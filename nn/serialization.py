"""Writing files so that nothing the user had is lost: atomically, or not at all."""
import os
import tempfile


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file beside `path`, flush it to disk, then rename it over
    `path`. A crash or Ctrl-C at any point leaves either the old file or the new one, never a
    half-written one (the rename is atomic on POSIX and Windows)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
