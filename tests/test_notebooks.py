"""Notebooks are committed without outputs and are each linked from the README.
(They are executed, top to bottom, by nbmake as part of the same pytest run.)"""
import json

import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_batchnorm_math.ipynb", "02_im2col_convolution.ipynb",
                                           "03_gradient_checking.ipynb", "04_training_inception.ipynb",
                                           "05_what_the_network_looks_at.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, \
                f"{path.name}: strip the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_has_an_assertion_and_a_readme_link(path):
    nb = json.loads(path.read_text())
    assert any("assert " in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert f"(notebooks/{path.name})" in (ROOT / "README.md").read_text()
