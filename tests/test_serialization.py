"""Atomic writes: a failure part-way leaves the previous file untouched and no debris."""
import os

import pytest

from nn.serialization import atomic_write


def test_replaces_the_file_only_when_the_write_completed(tmp_path):
    path = tmp_path / "sub" / "checkpoint.npz"
    atomic_write(path, lambda f: f.write(b"first"))
    assert path.read_bytes() == b"first"

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"first"
    assert os.listdir(path.parent) == ["checkpoint.npz"]
    atomic_write(path, lambda f: f.write("text\n"), mode="w")
    assert path.read_text() == "text\n"
