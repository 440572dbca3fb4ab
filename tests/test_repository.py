"""The repository as a user gets it: the README's commands are the ones CI runs, and nothing
points outside the repository."""
import re
import subprocess

import pytest

from tests.conftest import ROOT

FENCED = re.compile(r"```bash\n(.*?)```", re.S)


def readme_commands():
    return [line.strip() for block in FENCED.findall((ROOT / "README.md").read_text())
            for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command_exactly():
    commands = readme_commands()
    test_command = next(c for c in commands if c.endswith("-m pytest"))
    assert test_command.startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test_command


def test_the_first_command_trains_without_a_data_folder():
    first = readme_commands()[0]
    assert first == ("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && "
                     ".venv/bin/python -m models.train")


def tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / n for n in names if n.endswith((".py", ".md", ".ipynb", ".txt", ".toml", ".ini", ".cfg"))
            or n.startswith(".ci/")]


# A development diary's words, and paths that exist only on the machines the library was built on.
@pytest.mark.parametrize("pattern", [r"\.\./shared", r"NN_SHARED_DATA", r"\bsessions?\b"])
def test_nothing_points_outside_the_repository_or_reads_as_a_diary(pattern):
    here = ROOT / "tests" / "test_repository.py"
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in tracked_text_files() if p.exists() and p != here
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if re.search(pattern, line)]
    assert not hits, f"{pattern!r} in {hits[:10]}"
