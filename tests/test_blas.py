"""out += A @ B through BLAS (beta = 1) gives the reference's sums, and falls back where it must."""
import glob
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from nn import blas, kernels, runtime

NUMPY_OPENBLAS = any(glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)), p))
                     for p in runtime._LIBRARY_PATTERNS)


@pytest.fixture(scope="module")
def fast():
    """The BLAS path switched on (the "numba" side of the switch) for a whole module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "_backend", "numba")
        if not blas.available(np.float32):
            pytest.skip("no CBLAS found in NumPy's OpenBLAS")
        yield


@pytest.mark.skipif(not NUMPY_OPENBLAS, reason="NumPy does not ship its own OpenBLAS here")
def test_numpys_openblas_is_found(monkeypatch):
    """NumPy's wheels ship OpenBLAS: if the look-up missed it, MEC would silently lose its speed."""
    monkeypatch.setattr(kernels, "_backend", "numba")
    assert blas.available(np.float32) and blas.available(np.float64)


@given(M=st.integers(1, 9), K=st.integers(1, 9), N=st.integers(1, 9),
       pads=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_blas_and_reference_agree_on_row_strided_views(fast, M, K, N, pads, dtype, seed):
    """Views whose rows are longer than their width (MEC's slices S_i are such views)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K + pads[0])).astype(dtype)[:, pads[0]:]
    B = rng.standard_normal((K, N + pads[1])).astype(dtype)[:, :N]
    out = rng.standard_normal((M, N + pads[2])).astype(dtype)[:, pads[2]:]
    assert blas._blas_can_take(A, B, out)
    expected = blas.matmul_add_reference(A, B, out.copy())
    whole = out.base.copy()
    result = blas.matmul_add(A, B, out)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    left_alone = np.ones(whole.shape, bool)
    left_alone[:, pads[2]:] = False
    np.testing.assert_array_equal(out.base[left_alone], whole[left_alone])   # only out's columns move


@pytest.mark.parametrize("case", ["transposed A", "column-strided B", "float16", "mixed dtypes", "K = 0"])
def test_arrays_blas_cannot_take_fall_back_to_the_reference(fast, case, monkeypatch):
    rng = np.random.default_rng(1)
    A, B, out = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    if case == "transposed A":
        A = np.ascontiguousarray(A.T).T
    elif case == "column-strided B":
        B = rng.standard_normal((5, 6))[:, ::2]
    elif case == "float16":
        A, B, out = (a.astype(np.float16) for a in (A, B, out))
    elif case == "mixed dtypes":
        A = A.astype(np.float32)
    else:
        A, B = A[:, :0], B[:0]
    expected = out + A @ B
    calls = []
    monkeypatch.setattr(blas, "_call", lambda *args: calls.append(args))
    np.testing.assert_allclose(blas.matmul_add(A, B, out), expected, rtol=1e-3)
    assert not calls


def test_reference_switch_turns_the_blas_call_off(monkeypatch):
    monkeypatch.setattr(kernels, "_backend", "reference")
    assert not blas.available(np.float32)
    calls = []
    monkeypatch.setattr(blas, "_call", lambda *args: calls.append(args))
    A, B, out = np.ones((2, 3)), np.ones((3, 2)), np.zeros((2, 2))
    np.testing.assert_array_equal(blas.matmul_add(A, B, out), np.full((2, 2), 3.0))
    assert not calls
