"""BatchNorm1d/2d: PyTorch's statistics, running averages, eval mode, gradients; SyncBatchNorm2d."""
import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.gradcheck import check_module
from tests.conftest import assert_gradients_ok


def test_reference_values_2d_float32():
    x = np.array([[[[1, 2], [3, 4]], [[0, 0], [0, 10]]]], np.float32)
    bn = nn.BatchNorm2d(2)
    y = bn(x)
    np.testing.assert_allclose(y[0, 0].ravel(), [-1.3416354, -0.4472117, 0.4472119, 1.3416355], atol=1e-6)
    np.testing.assert_allclose(y[0, 1].ravel(), [-0.5773501] * 3 + [1.7320503], atol=1e-6)
    np.testing.assert_allclose(bn.running_mean.data, [0.25, 0.25], atol=1e-7)
    np.testing.assert_allclose(bn.running_var.data, [1.0666666, 3.4000001], atol=1e-6)
    assert bn.num_batches_tracked.data == 1
    assert y.dtype == np.float32


def test_reference_values_1d_float64():
    bn = nn.BatchNorm1d(2).double()
    y = bn(np.array([[1.0, 2], [3, 5], [6, 11]]))
    np.testing.assert_allclose(y, [[-1.13554860, -1.06904459], [-0.16222123, -0.26726115],
                                   [1.29776983, 1.33630573]], atol=1e-8)
    np.testing.assert_allclose(bn.running_mean.data, [0.33333333, 0.6], atol=1e-8)
    np.testing.assert_allclose(bn.running_var.data, [1.53333333, 3.0], atol=1e-8)


def test_running_statistics_use_momentum_as_weight_of_new_batch(rng):
    bn = nn.BatchNorm2d(3, momentum=0.3).double()
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(4):
        x = rng.standard_normal((4, 3, 2, 3)) * 2 + 1
        bn(x)
        m = x.size // 3
        rm = 0.7 * rm + 0.3 * x.mean(axis=(0, 2, 3))
        rv = 0.7 * rv + 0.3 * x.var(axis=(0, 2, 3)) * m / (m - 1)
    np.testing.assert_allclose(bn.running_mean.data, rm, rtol=1e-13)
    np.testing.assert_allclose(bn.running_var.data, rv, rtol=1e-13)
    assert bn.num_batches_tracked.data == 4


def test_momentum_none_is_a_cumulative_average(rng):
    bn = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rng.standard_normal((5, 2)) for _ in range(3)]
    for b in batches:
        bn(b)
    np.testing.assert_allclose(bn.running_mean.data, np.mean([b.mean(0) for b in batches], 0), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var.data, np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-13)


def test_eval_uses_running_statistics_only_and_does_not_update_them(rng):
    bn = nn.BatchNorm2d(2).double()
    bn.running_mean.data[...] = [1.0, -2.0]
    bn.running_var.data[...] = [4.0, 0.25]
    bn.weight.data[...] = [2.0, 3.0]
    bn.bias.data[...] = [0.5, -0.5]
    bn.eval()
    x = rng.standard_normal((3, 2, 2, 2))
    y = bn(x)
    expect = (x - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)[:, None, None]
    np.testing.assert_allclose(y, expect * np.array([2.0, 3.0])[:, None, None]
                               + np.array([0.5, -0.5])[:, None, None], rtol=1e-13)
    # a prediction does not depend on the rest of the batch
    np.testing.assert_array_equal(bn(x[:1]), y[:1])
    np.testing.assert_array_equal(bn.running_mean.data, [1.0, -2.0])
    assert bn.num_batches_tracked.data == 0


def test_one_value_per_channel_in_training_is_an_error():
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))


def test_eps_is_a_constructor_argument():
    bn = nn.BatchNorm2d(1, eps=1e-3).double()
    y = bn(np.array([[[[0.0, 2.0]]]]))
    np.testing.assert_allclose(y.ravel(), [-1 / np.sqrt(1 + 1e-3), 1 / np.sqrt(1 + 1e-3)])


@given(n=st.integers(2, 4), c=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       train=st.booleans(), affine=st.booleans())
def test_gradients_2d(n, c, h, w, train, affine):
    rng = np.random.default_rng(n * 100 + c * 10 + h + w)
    bn = nn.BatchNorm2d(c, affine=affine).double()
    if affine:
        bn.weight.data[...] = rng.uniform(0.5, 2, c)
        bn.bias.data[...] = rng.standard_normal(c)
    bn.running_mean.data[...] = rng.standard_normal(c)
    bn.running_var.data[...] = rng.uniform(0.5, 2, c)
    bn.train(train)
    assert_gradients_ok(check_module(bn, rng.standard_normal((n, c, h, w)) * 3 + 1))


@given(n=st.integers(3, 5), c=st.integers(1, 4), length=st.sampled_from([None, 1, 3]), train=st.booleans())
def test_gradients_1d(n, c, length, train):
    rng = np.random.default_rng(n * 10 + c)
    bn = nn.BatchNorm1d(c).double()
    bn.weight.data[...] = rng.uniform(0.5, 2, c)
    bn.train(train)
    shape = (n, c) if length is None else (n, c, length)
    assert_gradients_ok(check_module(bn, rng.standard_normal(shape)))


def test_bad_input():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected a NCHW input, got shape \(2, 3\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected 3 channels on axis 1"):
        nn.BatchNorm1d(3)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected a NC or NCL input"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 1, 1), np.float32))


# -- SyncBatchNorm2d: batch norm over a batch split between processes ---------------------------

def threads_all_sum(ranks):
    """all_sum functions for `ranks` threads standing in for processes: each waits for all,
    then every one adds the parts in rank order (MPI's Allreduce, without MPI)."""
    barrier, parts = threading.Barrier(ranks), [None] * ranks

    def all_sum_of(rank):
        def all_sum(array):
            parts[rank] = np.array(array, copy=True)
            barrier.wait()
            total = sum(parts[1:], parts[0].copy())
            barrier.wait()   # nobody overwrites a part before everyone has added it
            return total
        return all_sum
    return [all_sum_of(r) for r in range(ranks)]


def run_ranks(fn, ranks):
    """fn(rank, all_sum) on `ranks` threads; their results in rank order."""
    sums, results = threads_all_sum(ranks), [None] * ranks

    def work(rank):
        results[rank] = fn(rank, sums[rank])
    threads = [threading.Thread(target=work, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("ranks", [2, 3])
def test_sync_batchnorm_on_parts_equals_batchnorm_on_the_whole_batch(ranks, rng):
    """Forward, dx, and the summed dgamma and dbeta of `ranks` parts of a batch equal those of
    BatchNorm2d on the whole batch (float64), and so do the running statistics."""
    x = rng.standard_normal((6, 3, 4, 5)) * 3 + 2
    dout = rng.standard_normal((6, 3, 4, 5))
    whole = nn.BatchNorm2d(3).double()
    whole.weight.data[...] = [0.5, 1.5, 2.0]
    y, dx = whole(x), whole.backward(dout)
    part = lambda r: slice(r * 6 // ranks, (r + 1) * 6 // ranks)

    def rank_pass(rank, all_sum):
        bn = nn.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()), all_sum)[0]
        bn.weight.data[...] = [0.5, 1.5, 2.0]
        out = bn(x[part(rank)])
        return out, bn.backward(dout[part(rank)]), bn.weight.grad.copy(), bn.bias.grad.copy(), bn.running_var.data
    results = run_ranks(rank_pass, ranks)
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sum(r[2] for r in results), whole.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(sum(r[3] for r in results), whole.bias.grad, rtol=1e-12)
    for r in results:   # every rank holds the whole batch's running statistics (unbiased variance)
        np.testing.assert_allclose(r[4], whole.running_var.data, rtol=1e-12)


def test_sync_batchnorm_of_one_process_passes_the_gradient_check(rng):
    bn = nn.SyncBatchNorm2d(3, all_sum=lambda a: np.array(a, copy=True)).double()
    bn.weight.data[...] = rng.uniform(0.5, 2, 3)
    assert_gradients_ok(check_module(bn, rng.standard_normal((4, 3, 3, 2)) * 3 + 1))


def test_convert_sync_batchnorm_keeps_weights_dtype_mode_and_place():
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU()).double().eval()
    net[1].running_mean.data[...] = [1.0, 2.0, 3.0]
    before = net.state_dict()
    nn.convert_sync_batchnorm(net, lambda a: a)
    assert [type(m).__name__ for m in net] == ["Conv2d", "SyncBatchNorm2d", "ReLU"]
    assert not net[1].training and net[1].weight.data.dtype == np.float64
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
