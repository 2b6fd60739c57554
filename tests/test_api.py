"""compand / apply / remove / stats / param_groups: behaviour and bad input."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import weight_compander as wc
from support import assert_same, pretrained_like, small_cnn, snapshot
from weight_compander.defaults import TANH_GAIN, TANH_LIMIT

DEFAULT_NAMES = ["0.weight", "3.weight", "5.weight", "8.weight", "10.weight"]


def eval_out(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("kind", ["tanh", "mulaw", "identity"])
@pytest.mark.parametrize("learnable", [False, True])
def test_apply_leaves_outputs_unchanged(cnn, images, kind, learnable):
    before = eval_out(cnn, images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh model never touches the tanh limit
        names = wc.apply(cnn, kind=kind, learnable=learnable)
    assert names == DEFAULT_NAMES
    assert (eval_out(cnn, images) - before).abs().max() <= 1e-5
    assert not parametrize.is_parametrized(cnn[1])  # BatchNorm is not a default target


def test_pretrained_like_model_expand_policy_keeps_outputs_and_reports(images):
    torch.manual_seed(0)
    model = pretrained_like(small_cnn())
    before = eval_out(model, images)
    with pytest.warns(wc.CompanderWarning, match=r"\d+ of \d+ values .* limit raised to"):
        wc.apply(model)
    assert (eval_out(model, images) - before).abs().max() <= 1e-5
    limits = [row["hyperparameters"]["limit"] for row in wc.stats(model)]
    assert max(limits) > 3.0  # at least one limit was raised to cover the tails
    for row in wc.stats(model):
        assert row["max_abs"] < row["hyperparameters"]["limit"]


def test_clip_policy_clips_and_counts():
    layer = nn.Linear(50, 40)
    with torch.no_grad():
        layer.weight[0, :5] = layer.weight.std() * 10  # five values far beyond 3 s
    s = layer.weight.std().item()
    with pytest.warns(wc.CompanderWarning, match="5 of 2000 values .* clipped"):
        wc.compand(layer, overflow="clip", limit=3.0)
    assert layer.weight.abs().max().item() == pytest.approx(0.98 * 3 * s, rel=1e-4)


def test_error_policy_raises_and_leaves_module_alone():
    layer = nn.Linear(50, 40)
    with torch.no_grad():
        layer.weight[0, 0] = layer.weight.std() * 10
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"1 of 2000 values .* overflow='expand'"):
        wc.compand(layer, overflow="error", limit=3.0)
    assert_same(before, snapshot(layer))


def test_scale_options():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    std = layer.weight.std()
    wc.compand(layer, scale="std")
    assert torch.allclose(layer.parametrizations.weight[0].scale, std)
    layer = nn.Linear(30, 20)
    wc.compand(layer, scale=0.25)
    assert layer.parametrizations.weight[0].scale.item() == 0.25
    layer = nn.Linear(30, 20)
    per_row = layer.weight.detach().std(dim=1, keepdim=True)
    before = layer.weight.detach().clone()
    wc.compand(layer, scale="channel")
    assert torch.allclose(layer.parametrizations.weight[0].scale, per_row)
    assert torch.allclose(layer.weight, before, atol=1e-6)


def test_per_channel_learnable_hyperparameters_have_channel_shape_and_get_gradients():
    layer = nn.Conv2d(3, 6, 3)
    wc.compand(layer, learnable=True, per_channel=True)
    params = dict(wc.named_hyperparameters(layer))
    assert set(params) == {"weight.raw_gain", "weight.raw_limit"}
    assert all(p.shape == (6, 1, 1, 1) for p in params.values())
    layer(torch.randn(2, 3, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_learn_only_some_hyperparameters():
    layer = nn.Linear(10, 10)
    wc.compand(layer, learnable=("limit",), gain=1.5)
    assert [n for n, _ in wc.named_hyperparameters(layer)] == ["weight.raw_limit"]
    assert wc.stats(layer)[0]["hyperparameters"]["gain"] == 1.5
    assert wc.stats(layer)[0]["learnable"] == ["limit"]


def test_learnable_values_stay_valid_after_any_step():
    layer = nn.Linear(10, 10)
    wc.compand(layer, learnable=True)
    with torch.no_grad():
        for p in wc.hyperparameters(layer):
            p.sub_(100.0)  # a wild optimizer step
    h = layer.parametrizations.weight[0].hyperparameter_values()
    assert h["gain"].item() >= 1.0 and h["limit"].item() > 0.0
    assert torch.isfinite(layer.weight).all()


def test_include_exclude_by_type_name_and_pattern(cnn):
    assert wc.apply(cnn, include=[nn.Linear]) == ["8.weight", "10.weight"]
    wc.remove(cnn, bake=False)
    assert wc.apply(cnn, include=["0", "10.weight"]) == ["0.weight", "10.weight"]
    wc.remove(cnn, bake=False)
    assert wc.apply(cnn, exclude=[nn.ConvTranspose2d, "10"]) == ["0.weight", "3.weight", "8.weight"]
    wc.remove(cnn, bake=False)
    assert wc.apply(cnn, include="*.weight", exclude=[nn.BatchNorm2d]) == DEFAULT_NAMES


def test_remove_bake_gives_plain_model_with_same_outputs_and_parameters(cnn, images):
    wc.apply(cnn, learnable=True)
    with torch.no_grad():  # move away from the identity-at-init state
        for p in cnn.parameters():
            p.add_(0.3 * torch.randn_like(p) * (p.std() if p.numel() > 1 else 1))
    companded_out = eval_out(cnn, images)
    raw_ids = {
        n: id(cnn.get_submodule(n.rsplit(".", 1)[0]).parametrizations.weight.original) for n in DEFAULT_NAMES
    }
    wc.remove(cnn, bake=True)
    assert not any(parametrize.is_parametrized(m) for m in cnn.modules())
    assert all(type(m).__module__.startswith("torch.nn") for m in cnn.modules())
    assert (eval_out(cnn, images) - companded_out).abs().max() <= 1e-6
    for n, i in raw_ids.items():  # the same Parameter objects: optimizers keep working
        assert id(cnn.get_parameter(n)) == i
    assert set(cnn.state_dict()) == set(small_cnn().state_dict())


def test_remove_without_bake_restores_raw_values(cnn):
    wc.apply(cnn)
    raw = {n: v.clone() for n, (_, v) in wc.weights(cnn).items()}
    wc.remove(cnn, bake=False)
    for n, v in raw.items():
        assert torch.equal(cnn.get_parameter(n), v)


def test_remove_on_plain_model_is_a_clear_error(cnn):
    with pytest.raises(ValueError, match="nothing in this model is companded"):
        wc.remove(cnn)


def test_stats_rows_and_table(cnn):
    wc.apply(cnn, learnable=True)
    rows = wc.stats(cnn)
    assert [r["name"] for r in rows] == DEFAULT_NAMES
    for r in rows:
        w, v = wc.weights(cnn)[r["name"]]
        s = r["scale"]
        assert r["kind"] == "tanh" and r["learnable"] == ["gain", "limit"]
        assert r["hyperparameters"] == pytest.approx({"gain": TANH_GAIN, "limit": TANH_LIMIT})
        assert r["max_abs"] == pytest.approx((w.abs() / s).max().item(), rel=1e-5)
        assert r["raw_max_abs"] == pytest.approx((v.abs() / s).max().item(), rel=1e-5)
        assert r["near_zero"] == pytest.approx((w.abs() < 0.1 * s).float().mean().item(), abs=1e-6)
        # gain > 1 expands small weights: no more effective weights near zero than raw ones...
        assert r["near_zero"] <= r["raw_near_zero"]
    # ...and fewer over the model
    assert sum(r["near_zero"] for r in rows) < sum(r["raw_near_zero"] for r in rows)
    table = str(rows)
    assert table.splitlines()[0].split()[:3] == ["tensor", "kind", "hyperparameters"]
    assert len(table.splitlines()) == 1 + len(DEFAULT_NAMES)
    assert f"gain={TANH_GAIN:g} limit={TANH_LIMIT:g}" in table


def test_param_groups_keep_decay_off_hyperparameters_biases_and_norms(cnn):
    wc.apply(cnn, learnable=True)
    groups = {g["name"]: g for g in wc.param_groups(cnn, weight_decay=0.1, hyper_lr=0.01)}
    assert set(groups) == {"decay", "no_decay", "wc_hyper"}
    hyper_ids = {id(p) for p in wc.hyperparameters(cnn)}
    assert {id(p) for p in groups["wc_hyper"]["params"]} == hyper_ids
    assert groups["wc_hyper"]["weight_decay"] == 0.0 and groups["wc_hyper"]["lr"] == 0.01
    assert groups["decay"]["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in groups["decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0 and all(
        p.dim() < 2 for p in groups["no_decay"]["params"]
    )
    every = [p for g in groups.values() for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(cnn.parameters()))
    torch.optim.AdamW(list(groups.values()), lr=1e-3)  # accepted by an optimizer as they are


def test_param_groups_on_a_plain_model_and_bad_rates(cnn):
    assert [g["name"] for g in wc.param_groups(cnn, weight_decay=0.0)] == ["decay", "no_decay"]
    for bad in ({"weight_decay": -1.0}, {"weight_decay": math.nan}, {"weight_decay": 0.1, "hyper_lr": -1}):
        with pytest.raises(ValueError, match="must be a finite number"):
            wc.param_groups(cnn, **bad)


BAD_CALLS = [
    (dict(kind="tahn"), ValueError, "unknown compander kind 'tahn'; valid kinds: tanh"),
    (dict(gain=0.5), ValueError, "gain must be finite and >= 1"),
    (dict(limit=0.0), ValueError, "limit must be finite and > 0"),
    (dict(limit=-2.0), ValueError, "limit must be finite and > 0"),
    (dict(limit=math.nan), ValueError, "limit must be finite"),
    (dict(gain=math.inf), ValueError, "gain must be finite"),
    (dict(gain=1.0, learnable=True), ValueError, "learnable gain starts strictly above 1"),
    (dict(mu=2.0), ValueError, "tanh has no hyperparameter mu; its hyperparameters are: gain, limit"),
    (dict(learnable=("mu",)), ValueError, "no hyperparameter mu to learn"),
    (dict(learnable="gain"), TypeError, "learnable must be True, False or a collection"),
    (dict(scale=0.0), ValueError, "scale must be a finite positive number"),
    (dict(scale="max"), ValueError, "scale must be 'std', 'channel' or a positive number"),
    (dict(overflow="wrap"), ValueError, "overflow must be one of expand, clip, error"),
    (dict(include=[3]), TypeError, "include entries must be nn.Module subclasses .* got 3"),
    (dict(exclude=[nn.Linear(2, 2)]), TypeError, "exclude entries must be"),
    (dict(include=["fc9"]), ValueError, "include entry 'fc9' matches no module or tensor"),
    (dict(include=[nn.BatchNorm2d]), ValueError, "zero standard deviation .* pass a number"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_CALLS, ids=[str(c[0]) for c in BAD_CALLS])
def test_bad_input_is_a_clear_error_and_model_stays_unchanged(cnn, kwargs, error, message):
    before = snapshot(cnn)
    with pytest.raises(error, match=message):
        wc.apply(cnn, **kwargs)
    assert_same(before, snapshot(cnn))


def test_bad_tensor_targets(cnn):
    before = snapshot(cnn)
    with pytest.raises(ValueError, match="Linear has no tensor 'wieght'; its parameters are: weight, bias"):
        wc.compand(cnn[8], "wieght")
    with pytest.raises(TypeError, match=r"needs an nn\.Module"):
        wc.compand(torch.zeros(3, 3))
    assert_same(before, snapshot(cnn))
    wc.apply(cnn)
    before = snapshot(cnn)
    with pytest.raises(
        ValueError, match=r"'8.weight' \(ParametrizedLinear\) is already companded; call wc.remove"
    ):
        wc.apply(cnn, include=[nn.Linear])
    assert_same(before, snapshot(cnn))


def test_non_floating_and_non_finite_tensors_are_refused():
    module = nn.Module()
    module.register_buffer("table", torch.arange(12).view(3, 4))
    with pytest.raises(TypeError, match=r"dtype torch\.int64; only floating-point"):
        wc.compand(module, "table")
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        wc.compand(layer)
    assert not parametrize.is_parametrized(layer)


def test_unregistered_kind_object_is_refused(cnn):
    tanh = wc.get_kind("tanh")
    stray = wc.Kind("tanh", tanh.forward, tanh.inverse, tanh.hyperparameters, bound="limit")
    before = snapshot(cnn)
    with pytest.raises(ValueError, match="differs from the registered one"):
        wc.apply(cnn, kind=stray)
    assert_same(before, snapshot(cnn))
    wc.apply(cnn, kind=tanh)  # the registered Kind object itself is fine
    assert wc.stats(cnn)[0]["kind"] == "tanh"


def test_zero_std_tensor_needs_an_explicit_scale():
    layer = nn.Linear(4, 3)
    nn.init.zeros_(layer.weight)
    with pytest.raises(ValueError, match="zero standard deviation"):
        wc.compand(layer)
    assert not parametrize.is_parametrized(layer)
    wc.compand(layer, scale=0.1)  # the fix the message names works
    assert torch.equal(layer.weight, torch.zeros(3, 4))


def test_apply_rolls_back_when_a_registration_fails(cnn, monkeypatch):
    import weight_compander.registration as registration

    real = registration.make_picklable
    calls = []

    def flaky(module):
        calls.append(module)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        real(module)

    monkeypatch.setattr(registration, "make_picklable", flaky)
    before = snapshot(cnn)
    with pytest.raises(RuntimeError, match="injected failure"):
        wc.apply(cnn)
    assert not any(parametrize.is_parametrized(m) for m in cnn.modules())
    assert_same(before, snapshot(cnn))
