"""Weight perturbations: exact sparsity on exactly the intended tensors, ≤ 2^b − 1 levels per
channel, deterministic noise, baking every reparameterization, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import weight_compander as wc
from weight_compander.harness.errors import PerturbationError
from weight_compander.harness.ingredients import peers, perturb


def net() -> nn.Module:
    """Conv, BatchNorm, ConvTranspose and Linear layers (every kind the perturbations treat)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 6, 2, stride=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip


WEIGHTS = ["0.weight", "3.weight", "6.weight", "8.weight"]  # Linear / Conv weights, model order


def untouched(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything a perturbation must leave alone: biases, BatchNorm parameters and statistics."""
    return {k: v.clone() for k, v in model.state_dict().items() if k not in WEIGHTS}


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_per_layer_pruning_reaches_the_sparsity_of_every_weight_and_nothing_else(sparsity):
    model = net()
    rest = untouched(model)
    perturb.prune_model(model, sparsity, scope="layer")
    state = model.state_dict()
    for name in WEIGHTS:
        assert zeros(state[name]) == round(sparsity * state[name].numel()), name
    assert all(torch.equal(state[k], v) for k, v in rest.items())
    assert not any(n.endswith(("_orig", "_mask")) for n in state), "pruning must be made permanent"


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_global_pruning_reaches_the_sparsity_over_all_weights_and_keeps_ends_dense_on_request(sparsity):
    model = net()
    perturb.prune_model(model, sparsity, scope="global")
    state = model.state_dict()
    total = sum(state[n].numel() for n in WEIGHTS)
    assert sum(zeros(state[n]) for n in WEIGHTS) == round(sparsity * total)

    model, before = net(), net().state_dict()
    perturb.prune_model(model, sparsity, scope="global", dense_ends=True)
    state = model.state_dict()
    inner = WEIGHTS[1:-1]
    assert all(torch.equal(state[n], before[n]) for n in (WEIGHTS[0], WEIGHTS[-1]))
    assert sum(zeros(state[n]) for n in inner) == round(sparsity * sum(state[n].numel() for n in inner))
    # magnitude: every kept weight is at least as large as every pruned one
    kept = torch.cat([state[n][state[n] != 0].abs() for n in inner])
    pruned = torch.cat([before[n][state[n] == 0].abs() for n in inner])
    assert kept.min() >= pruned.max()


@pytest.mark.parametrize("rule", perturb.QUANT_RULES)
@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_quantized_weights_have_at_most_2_to_the_b_minus_1_levels_per_output_channel(bits, rule):
    model = net()
    rest = untouched(model)
    before = copy.deepcopy(model.state_dict())
    perturb.quantize_model(model, bits, rule=rule)
    state = model.state_dict()
    for name in WEIGHTS:
        axis = 1 if name == "3.weight" else 0  # ConvTranspose2d stores (in, out, kH, kW)
        channels = state[name].movedim(axis, 0).flatten(1)
        for row, old in zip(channels, before[name].movedim(axis, 0).flatten(1), strict=True):
            levels = row.unique()
            assert len(levels) <= 2**bits - 1, (name, len(levels))
            assert row.abs().max() <= old.abs().max() + 1e-6
            if rule == "maxabs":  # the grid k · max|w| / (2^(b-1) - 1), k = -top..top
                top = 2 ** (bits - 1) - 1
                k = levels / old.abs().max() * top
                assert torch.allclose(k, k.round(), atol=1e-3) and k.abs().max() <= top + 1e-3
        assert not torch.equal(state[name], before[name])
    assert all(torch.equal(state[k], v) for k, v in rest.items())


def test_mse_clipping_never_has_more_error_than_max_abs():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(3.0).sample((16, 200))  # heavy tails: clipping pays
    for bits in (2, 3, 4, 8):
        errors = {r: (perturb.quantize_tensor(w, bits, rule=r) - w).square().sum()
                  for r in perturb.QUANT_RULES}
        assert errors["mse"] <= errors["maxabs"]
        if bits == 2:
            assert errors["mse"] < 0.8 * errors["maxabs"]


def test_weight_noise_is_deterministic_relative_to_each_tensors_std_and_leaves_the_rest():
    a, b, model = net(), net(), net()
    rest = untouched(a)
    perturb.add_noise(a, 0.5)
    perturb.add_noise(b, 0.5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert all(torch.equal(a.state_dict()[k], v) for k, v in rest.items())
    for name in WEIGHTS:
        w0 = model.state_dict()[name]
        ratio = (a.state_dict()[name] - w0).std() / w0.std()
        assert 0.4 < ratio < 0.6, (name, ratio)


@pytest.mark.parametrize("reparam", ["wc", "weight_norm", "weight_std"])
def test_bake_leaves_plain_weights_and_the_same_outputs(reparam):
    model = net().eval()
    if reparam == "wc":
        wc.apply(model, learnable=True)
    else:
        peers.apply_peer(model, reparam)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        want = model(x)
        perturb.bake(model)
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert [n for n, _ in perturb.weight_modules(model)] == ["0", "3", "6", "8"]
    assert not any("parametrizations" in k for k in model.state_dict())


def test_bad_settings_are_errors_naming_the_value():
    for sparsity in (0, 1, 1.5, -0.1):
        with pytest.raises(PerturbationError, match=rf"in \(0, 1\), got {sparsity}$"):
            perturb.prune_model(net(), sparsity)
    with pytest.raises(PerturbationError, match=r"bits: must be an integer in 2\.\.16, got 1"):
        perturb.quantize_model(net(), 1)
    with pytest.raises(PerturbationError, match="rule 'minmax' is not one of maxabs, mse"):
        perturb.quantize_tensor(torch.ones(2, 2), 4, rule="minmax")
    with pytest.raises(PerturbationError, match="scope 'row' is not one of global, layer"):
        perturb.prune_model(net(), 0.5, scope="row")
    companded = wc.apply(model := net()) and model
    with pytest.raises(PerturbationError, match="bake"):
        perturb.prune_model(companded, 0.5)
