"""Module plumbing: registration order, names, modes, state_dict, casting, containers."""
import re
from collections import OrderedDict

import numpy as np
import pytest

import nn
from nn.gradcheck import check_module
from tests.conftest import assert_gradients_ok


def small_net():
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(2, 3, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(3),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        drop=nn.Dropout(0.5),
        fc=nn.Linear(3, 4),
    ))


def test_named_parameters_follow_definition_order_with_torch_names():
    names = [n for n, _ in small_net().named_parameters()]
    assert names == ["conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]


def test_a_replaced_layer_keeps_its_place_in_the_sequence(rng):
    """Assigning a new layer under an existing name (as convert_sync_batchnorm does) keeps the
    order the Sequential runs its layers in, and a parameter replaced keeps its place in
    named_parameters (PyTorch's behaviour)."""
    net = small_net()
    net.bn = nn.BatchNorm2d(3)
    net.fc.weight = nn.Parameter(np.zeros((4, 3), np.float32))
    assert list(net._modules) == ["conv", "bn", "relu", "pool", "flat", "drop", "fc"]
    assert [n for n, _ in net.named_parameters()][-2:] == ["fc.weight", "fc.bias"]
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(net.eval()(x), np.broadcast_to(net.fc.bias.data, (2, 4)))


def test_state_dict_has_buffers_after_parameters_per_module():
    sd = small_net().state_dict()
    assert list(sd) == ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                        "bn.num_batches_tracked", "fc.weight", "fc.bias"]
    assert sd["bn.num_batches_tracked"].dtype == np.int64


def test_state_dict_round_trip_restores_outputs(rng):
    a, b = small_net(), small_net()
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    a(x)  # moves running statistics away from their initial values
    a.eval()
    b.load_state_dict(a.state_dict())
    b.eval()
    np.testing.assert_array_equal(a(x), b(x))


def test_state_dict_is_a_copy():
    net = small_net()
    sd = net.state_dict()
    sd["fc.weight"][...] = 7
    assert not np.any(net.fc.weight.data == 7)


def test_load_state_dict_names_missing_and_unexpected_keys():
    net = small_net()
    sd = net.state_dict()
    del sd["bn.running_var"]
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(sd)
    assert "missing keys (1): bn.running_var" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)


def test_load_state_dict_refuses_shape_mismatch_and_changes_nothing():
    net = small_net()
    before = net.state_dict()
    sd = net.state_dict()
    sd["bn.weight"] = np.full(3, 5.0)
    sd["fc.weight"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(4, 5\), the model expects \(4, 3\)"):
        net.load_state_dict(sd)
    np.testing.assert_array_equal(net.bn.weight.data, before["bn.weight"])


def test_train_eval_propagate_to_every_descendant():
    net = small_net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_to_float64_casts_parameters_grads_and_float_buffers_only():
    net = small_net().double()
    for p in net.parameters():
        assert p.data.dtype == np.float64 and p.grad.dtype == np.float64
    assert net.bn.running_mean.data.dtype == np.float64
    assert net.bn.num_batches_tracked.data.dtype == np.int64
    with pytest.raises(ValueError, match="floating dtype"):
        net.to(np.int32)


def test_input_dtype_must_match_parameters(rng):
    net = small_net()
    with pytest.raises(ValueError, match=r"input is float64 but the parameters are float32"):
        net(rng.standard_normal((2, 2, 4, 4)))


def test_zero_grad_and_gradients_accumulate(rng):
    net = small_net().double()
    x = rng.standard_normal((4, 2, 5, 5))
    g = rng.standard_normal((4, 4))
    net.drop.reseed(0)
    net(x)
    net.backward(g)
    once = {n: p.grad.copy() for n, p in net.named_parameters()}
    net.backward(g)  # a second backward adds the same gradients again
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-12, atol=1e-15)
    net.zero_grad()
    assert all(not p.grad.any() for p in net.parameters())


def test_concat_stacks_branches_and_sums_their_input_gradients(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    block = nn.Concat(
        nn.Conv2d(3, 4, 1),
        nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 5, 3, padding=1)),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 1, 1)),
    ).double()
    y = block(x)
    assert y.shape == (2, 10, 6, 6)
    np.testing.assert_array_equal(y[:, :4], block.branches[0](x))
    assert_gradients_ok(check_module(block, x), 1e-6)


def test_concat_refuses_branches_of_different_sizes(rng):
    block = nn.Concat(nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="spatial size"):
        block(rng.standard_normal((1, 3, 5, 5)).astype(np.float32))


@pytest.mark.parametrize("layer", [
    nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.MaxPool2d(2), nn.AvgPool2d(2),
    nn.AdaptiveAvgPool2d(1), nn.Linear(1, 1), nn.ReLU(), nn.Dropout(), nn.Flatten(),
    nn.Identity(), nn.Concat(nn.Identity()), nn.CrossEntropyLoss()])
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.zeros((1, 1, 1, 1), np.float32))


def test_no_grad_keeps_no_cache_and_backward_says_why(rng):
    net = small_net().eval()
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    expected = net(x)
    assert all(m.cache is not None for m in net.children())
    with nn.no_grad():
        np.testing.assert_array_equal(net(x), expected)
    assert all(m.cache is None for m in net.modules())
    with pytest.raises(RuntimeError, match=r"no_grad"):
        net.backward(np.ones_like(expected))
    net(x)                                   # outside, forward keeps its caches again
    assert net.backward(np.ones_like(expected)).shape == x.shape


def test_no_grad_nests_and_restores_after_an_error(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    net = small_net()
    with nn.no_grad():
        with nn.no_grad():
            pass
        net(x)                               # still inside the outer block
        assert net.fc.cache is None
    with pytest.raises(ValueError):
        with nn.no_grad():
            net(x[:, :1])                    # the wrong number of channels
    net(x)
    assert net.fc.cache is not None


def test_repr_shows_the_tree():
    text = repr(small_net())
    assert "(conv): Conv2d(2, 3, kernel_size=(3, 3)" in text and "(fc): Linear(in_features=3" in text


def test_concat_order_sets_the_output_order_not_the_run_order(rng):
    calls = []

    class Tag(nn.Identity):
        def __init__(self, tag, width):
            super().__init__()
            self.tag, self.width = tag, width

        def forward(self, x):
            calls.append(self.tag)
            self.cache = {}
            return np.full((x.shape[0], self.width) + x.shape[2:], float(self.tag))

        def backward(self, dout):
            calls.append(-self.tag)
            assert dout.shape[1] == self.width
            return dout.sum(axis=1, keepdims=True) * self.tag

    block = nn.Concat(OrderedDict(a=Tag(1, 2), b=Tag(2, 1), c=Tag(3, 3)), order=["c", "a", "b"])
    y = block(np.zeros((1, 1, 2, 2)))
    assert calls == [1, 2, 3]
    np.testing.assert_array_equal(y[0, :, 0, 0], [3, 3, 3, 1, 1, 2])
    dout = np.arange(6.0).reshape(1, 6, 1, 1) * np.ones((1, 6, 2, 2))
    dx = block.backward(dout)
    # c gets channels 0-2 (sum 3), a gets 3-4 (sum 7), b gets 5: dx = 3*3 + 1*7 + 2*5
    np.testing.assert_array_equal(dx, np.full((1, 1, 2, 2), 26.0))
    with pytest.raises(ValueError, match="must name each branch"):
        nn.Concat(OrderedDict(a=nn.Identity()), order=["a", "b"])


def test_load_state_dict_refuses_a_value_that_does_not_convert_and_changes_nothing():
    net = small_net()
    before = net.state_dict()
    sd = net.state_dict()
    sd["conv.weight"] = sd["conv.weight"] + 1.0       # converts: would be loaded
    sd["bn.num_batches_tracked"] = np.array(2.5)       # a float where the model counts: refused
    with pytest.raises(ValueError, match="'bn.num_batches_tracked' holds float64 values, which do not "
                                         "convert to int64"):
        net.load_state_dict(sd)
    np.testing.assert_array_equal(net.conv.weight.data, before["conv.weight"])
    sd["bn.num_batches_tracked"] = np.array(["3"])
    with pytest.raises(ValueError):
        net.load_state_dict(sd)


def test_missing_keys_are_a_readable_runtime_error():
    net = small_net()
    sd = net.state_dict()
    del sd["fc.bias"]
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(sd)
    assert str(err.value) == ("Sequential.load_state_dict: the state does not match the model\n"
                              "  missing keys (1): fc.bias")


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.Dropout(0.5), nn.Identity(), nn.Flatten(),
                                   nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3, padding=1)])
def test_every_layer_refuses_a_dout_of_the_wrong_shape_dtype_or_type(layer, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = layer(x)
    name = layer._describe()
    with pytest.raises(ValueError, match=fr"^{re.escape(name)}.backward: dout has shape \(1,\), but forward "
                                         fr"returned shape {re.escape(str(y.shape))}$"):
        layer.backward(np.ones(1, np.float32))     # would broadcast silently in ReLU and Dropout
    with pytest.raises(ValueError, match="dout is float64, but forward returned float32"):
        layer.backward(np.ones(y.shape))
    with pytest.raises(TypeError, match="dout must be a NumPy array of shape"):
        layer.backward(np.ones(y.shape, np.float32).tolist())
    assert layer.backward(np.ones(y.shape, np.float32)).shape == x.shape


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.Dropout(0.5), nn.Linear(3, 2), nn.BatchNorm1d(3),
                                   nn.Conv2d(3, 2, 1), nn.MaxPool2d(2), nn.Flatten()])
def test_every_layer_refuses_a_list_or_an_empty_batch(layer):
    with pytest.raises(TypeError, match=f"^{re.escape(layer._describe())}: expected a NumPy array, got list"):
        layer([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"got an empty batch \(input shape \(0, 3"):
        layer(np.zeros((0, 3) + ((4, 4) if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)) else ()), np.float32))
    with pytest.raises(ValueError, match="expected a floating-point input"):
        layer(np.zeros((2, 3), np.int64))


def test_a_model_refuses_a_list_of_gradients_and_an_aux_gradient_in_eval_mode():
    import models
    model = models.build("inception_v2", width=0.05)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    logits, aux_1, aux_2 = model(x)
    g = np.ones_like(logits)
    with pytest.raises(TypeError, match="the gradient of output 1 of 3 must be a NumPy array"):
        model.backward([g, g, g])
    with pytest.raises(TypeError, match="got 4 gradients for the 3 output"):
        model.backward(g, g, g, g)
    model.backward(g, daux_2=g)   # by name, the others None
    model.eval()
    model(x)   # the logits only: the aux heads do not run
    with pytest.raises(TypeError, match="got 2 gradients for the 1 output"):
        model.backward(g, g)


@pytest.mark.parametrize("width", [0, -1, float("inf"), float("nan")])
def test_models_refuse_a_width_that_builds_no_network(width):
    import models
    with pytest.raises(ValueError, match="width must be a finite number > 0"):
        models.build("inception_v3", width=width)
