"""Inception-V2/V3 against the seed tables row by row, gradients, weights, sizes."""
import re

import numpy as np
import pytest

import models
import nn
from models.summary import summary, summary_rows
from models.weights import load_weights, save_weights
from nn.gradcheck import check_directional
from tests.conftest import ROOT

SPEC = ROOT / "docs" / "spec"
CATEGORY = [("convolution", "conv"), ("batch norm", "bn"), ("relu", "relu"), ("max pool", "maxpool"),
            ("avg", "avgpool"), ("average", "avgpool"), ("linear", "linear"), ("flatten", "flatten"),
            ("dropout", "dropout"), ("identity", "identity"), ("inceptionblock", "block")]


def category(name):
    low = name.lower()
    return next(c for key, c in CATEGORY if key in low)


def parse_spec(path):
    """The model-summary table of a seed README: ([(category, shape, params)], headings, totals)."""
    rows, headings, totals = [], 0, {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("["):
            shape = tuple(int(v) for v in re.findall(r"-?\d+", cells[1]))
            rows.append((category(cells[0]), shape, int(cells[2].replace(",", ""))))
        elif len(cells) == 3 and cells[1] == "---" and cells[0].startswith("**"):
            headings += 1
        elif len(cells) == 2 and cells[1].replace(",", "").isdigit():
            totals[cells[0]] = int(cells[1].replace(",", ""))
    return rows, headings, totals


SPECS = {"inception_v2": ("inception_v2_summary.md", 224), "inception_v3": ("inception_v3_summary.md", 299)}


@pytest.fixture(scope="module")
def full_models():
    nn.manual_seed(0)
    return {name: models.build(name) for name in SPECS}


@pytest.mark.parametrize("name", list(SPECS))
def test_every_row_matches_the_seed_table(name, full_models):
    spec_file, size = SPECS[name]
    spec_rows, spec_headings, totals = parse_spec(SPEC / spec_file)
    rows, _ = summary_rows(full_models[name], (3, size, size))
    ours = [(category(k), shape, p) for k, shape, p in rows if shape is not None]
    assert len(ours) == len(spec_rows)
    for i, (a, b) in enumerate(zip(ours, spec_rows)):
        assert a == b, f"row {i}: ours {a}, table {b}"
    assert sum(1 for _, shape, _ in rows if shape is None) == spec_headings
    model = full_models[name]
    aux = sum(p.size for n, p in model.named_parameters() if "aux" in n)
    assert model.num_parameters() == totals["Total params"]
    assert model.num_parameters() - aux == totals["Total params excluding auxiliary params"]


def test_totals():
    assert models.build("inception_v2").num_parameters() == 14_635_166
    assert models.build("inception_v3").num_parameters() == 25_212_020


@pytest.mark.parametrize("name", list(SPECS))
def test_parameters_are_listed_in_table_order(name, full_models):
    """named_parameters() walks the modules in the order their rows appear in the table."""
    model = full_models[name]
    size = SPECS[name][1]
    rows, _ = summary_rows(model, (3, size, size))
    table_counts = [p for _, shape, p in rows if shape is not None and p]
    per_module = []
    last = None
    for n, p in model.named_parameters():
        owner = n.rsplit(".", 1)[0]
        if owner != last:
            per_module.append(0)
            last = owner
        per_module[-1] += p.size
    assert per_module == table_counts


def test_summary_prints_the_table_and_totals(full_models):
    lines = []
    info = summary(full_models["inception_v3"], (3, 299, 299), print_fn=lines.append)
    text = "\n".join(lines)
    assert text.splitlines()[0].split("|")[1].strip() == "Layer (type)"
    assert "| Total params                            | 25,212,020 |" in text
    assert "| Total params excluding auxiliary params | 21,825,386 |" in text
    assert "[-1, 32, 149, 149]" in text and "**aux**" in text
    assert info["mult_adds"] > 5e9
    assert info["input"] == pytest.approx(299 * 299 * 3 * 4 / 1024 ** 2)


@pytest.mark.parametrize("name", list(SPECS))
def test_full_size_forward_backward_at_batch_2(name, full_models):
    model = full_models[name]
    size = SPECS[name][1]
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    model.train()
    model.zero_grad()
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 10)] * len(outs)
    assert len(outs) == (3 if name == "inception_v2" else 2)
    dx = model.backward(*[np.ones_like(o) / 2 for o in outs])
    assert dx.shape == x.shape and dx.dtype == np.float32
    grads = [p.grad for p in model.parameters()]
    assert all(np.isfinite(g).all() for g in grads)
    assert all(g.any() for g in grads)  # every parameter receives a gradient
    model.zero_grad()


# A whole model has ~10^5 ReLUs just after batch norm, i.e. densely packed around the kink at 0;
# a random step over every parameter at once crosses some of them unless it is tiny. With
# h = 1e-9 in float64 no kink is crossed and round-off stays ~1e-8 (measured over 6 seeds:
# errors 3e-10 .. 2e-7; at h = 1e-6 kink crossings give 5e-3 .. 2e-1).
@pytest.mark.parametrize("name,size,width", [("inception_v2", 48, 0.08), ("inception_v3", 75, 0.05)])
@pytest.mark.parametrize("seed", [0, 1])
def test_model_gradient_along_a_random_direction(name, size, width, seed):
    nn.manual_seed(seed)
    model = models.build(name, width=width).double()
    model.train()  # aux heads included
    x = np.random.default_rng(seed).standard_normal((4, 3, size, size))
    analytic, numerical, err = check_directional(model, x, h=1e-9, seed=seed)
    assert err < 1e-5, (analytic, numerical)


def test_model_gradient_check_catches_a_dropped_aux_gradient(monkeypatch):
    nn.manual_seed(0)
    model = models.build("inception_v2", width=0.08).double()
    x = np.random.default_rng(0).standard_normal((4, 3, 48, 48))
    monkeypatch.setattr(model.aux_1, "backward", lambda d: 0.0)  # a wiring bug: aux_1 forgotten
    assert check_directional(model, x, h=1e-9)[2] > 1e-3


@pytest.mark.parametrize("name,sizes", [("inception_v2", (1, 96, 160)), ("inception_v3", (75, 120, 160))])
def test_other_input_sizes_keep_the_parameter_count(name, sizes):
    nn.manual_seed(0)
    model = models.build(name, width=0.1)
    count = model.num_parameters()
    for size in sizes:
        outs = model(np.zeros((2, 3, size, size), np.float32))
        assert all(o.shape == (2, 10) for o in outs)
    assert model.num_parameters() == count


def test_too_small_or_wrong_input_is_a_clear_error():
    model = models.build("inception_v3", width=0.05)
    with pytest.raises(ValueError, match=r"input 74x74 is too small; the smallest .* is 75x75"):
        model(np.zeros((2, 3, 74, 74), np.float32))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 1, 80, 80\)"):
        model(np.zeros((2, 1, 80, 80), np.float32))
    assert models.min_image_size("inception_v3") == 75 and models.min_image_size("inception_v2") == 1
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build("resnet")


@pytest.mark.parametrize("name", ["inception_v2", "inception_v3"])
def test_gradients_passed_as_a_list_are_a_clear_error(name):
    model = models.build(name, width=0.05)
    outs = model(np.random.default_rng(0).standard_normal((2, 3, 75, 75)).astype(np.float32))
    with pytest.raises(TypeError, match=r"output 1 of \d must be a NumPy array of shape \(2, 10\), got list; "
                                        r"pass one gradient per output of forward, as separate arguments"):
        model.backward([np.ones_like(o) for o in outs])


def test_eval_mode_returns_main_logits_only_and_is_deterministic():
    nn.manual_seed(0)
    model = models.build("inception_v2", width=0.1)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    model(x)  # one training step's statistics
    model.eval()
    for m in model.aux_1.modules():
        m.cache = None
    a, b = model(x), model(x)
    assert isinstance(a, np.ndarray) and a.shape == (3, 10)
    np.testing.assert_array_equal(a, b)
    # independent of the rest of the batch (up to the GEMM's size-dependent rounding)
    np.testing.assert_allclose(model(x[:1]), a[:1], rtol=1e-5, atol=1e-6)
    assert all(m.cache is None for m in model.aux_1.modules())  # aux heads cost nothing


@pytest.mark.parametrize("name", list(SPECS))
def test_weights_round_trip_gives_identical_logits(name, tmp_path):
    nn.manual_seed(0)
    a = models.build(name, width=0.1)
    x = np.random.default_rng(0).standard_normal((2, 3, 80, 80)).astype(np.float32)
    a(x)
    a.eval()
    save_weights(a, tmp_path / "w.npz")
    nn.manual_seed(1)
    b = load_weights(models.build(name, width=0.1), tmp_path / "w.npz").eval()
    np.testing.assert_array_equal(a(x), b(x))


def test_weights_of_another_model_are_refused(tmp_path):
    save_weights(models.build("inception_v2", width=0.1), tmp_path / "v2.npz")
    with pytest.raises(ValueError, match="holds weights of inception_v2, not of inception_v3"):
        load_weights(models.build("inception_v3", width=0.1), tmp_path / "v2.npz")
    with pytest.raises(ValueError, match="holds weights of width 0.1, the model has width 0.2"):
        load_weights(models.build("inception_v2", width=0.2), tmp_path / "v2.npz")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights(models.build("inception_v2", width=0.1), tmp_path / "missing.npz")


def test_summary_command_line(capsys):
    from models.summary import main
    main(["inception_v2", "--image-size", "64", "--width", "0.25"])
    out = capsys.readouterr().out
    assert "# inception_v2, input (3, 64, 64)" in out and "InceptionBlock" in out
    with pytest.raises(SystemExit):
        main(["inception_v3", "--image-size", "40"])
    assert "too small" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["inception_v2", "inception_v3"])
def test_training_can_skip_the_gradient_of_the_images(name):
    """input_grad = False: backward returns None and skips the first layer's dx, and every
    parameter gets the same gradient as with it."""
    x = np.random.default_rng(0).standard_normal((2, 3, 75, 75)).astype(np.float32)
    grads = []
    for input_grad in (True, False):
        nn.manual_seed(0)
        model = models.build(name, width=0.1)
        if name == "inception_v2":
            model.aux_1.dropout.p = model.aux_2.dropout.p = 0.0
        model.input_grad = input_grad
        outs = model(x)
        dx = model.backward(*[np.ones_like(o) for o in outs])
        assert (dx is None) != input_grad and model.conv1.conv.input_grad == input_grad
        grads.append([p.grad.copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
