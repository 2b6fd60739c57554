"""Checkpoint layout 2: the plain model loads the effective weights, a companded one resumes exactly.

``tests/data/v1-state.pt`` was written by the library before layout 2 (``make_v1_state.py``):
layout 1 must keep loading.
"""

import copy
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import weight_compander as wc
from support import LayoutNet, companded_layout_net, native_state_dict, small_cnn

V1 = Path(__file__).parent / "data" / "v1-state.pt"


@pytest.fixture
def model():
    return companded_layout_net().eval()


def outputs(model):
    with torch.no_grad():
        return model(*LayoutNet.inputs())


def test_layout_2_keys_effective_weights_beside_the_companding_state(model):
    sd = model.state_dict()
    assert wc.LAYOUT_VERSION == 2
    for name, (w, _) in wc.weights(model).items():
        raw = model.get_submodule(name.split(".")[0]).parametrizations.weight
        key = "original1" if name == "norm.weight" else "original"  # under weight_norm: (g, v)
        assert torch.equal(sd[f"{name}_compander.{key}"], getattr(raw, key))
        assert int(sd[f"{name}_compander.layout"]) == 2
        if name != "norm.weight":  # stacked: weight_norm's own keys hold its plain view
            assert torch.equal(sd[name], w)
    assert "norm.parametrizations.weight.original1" in sd and "norm.weight" not in sd
    assert sd["fc.weight_compander.0.raw_mu"].shape == (8, 1)
    # the tied embedding is stored once: its plain key is the head's tensor, no state of its own
    assert sd["embed.weight"] is sd["head.weight"]
    assert [k for k in sd if k.startswith("embed.")] == ["embed.weight"]


def test_the_plain_model_loads_the_effective_weights(model):
    expected = outputs(model)
    plain = LayoutNet().eval()
    result = plain.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == [] and all("_compander." in k for k in result.unexpected_keys)
    assert torch.allclose(outputs(plain), expected, atol=1e-6)
    strict = LayoutNet().eval()
    strict.load_state_dict(wc.plain_state_dict(model))  # strict: nothing but plain keys
    assert torch.allclose(outputs(strict), expected, atol=1e-6)
    assert len(wc.stats(model)) == 4  # the live model stays companded


def test_a_companded_model_resumes_raw_weights_scales_and_hyperparameters_exactly(model):
    fresh = companded_layout_net(seed=5).eval()  # other init, other values everywhere
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(outputs(fresh), outputs(model))
    theirs, ours = native_state_dict(fresh), native_state_dict(model)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert fresh.embed.parametrizations.weight.original is fresh.head.parametrizations.weight.original


def test_layout_1_checkpoints_written_before_layout_2_still_load(model):
    saved = torch.load(V1, weights_only=True)
    assert native_state_dict(model).keys() == saved["model"].keys()  # native_state_dict is layout 1
    fresh = companded_layout_net(seed=7).eval()
    fresh.load_state_dict(saved["model"])
    ours = native_state_dict(fresh)  # every raw weight, scale and hyperparameter, bit for bit
    assert all(torch.equal(ours[k], saved["model"][k]) for k in saved["model"])
    # the output was saved before tanh became exact to the last bit (issue 12) and before the
    # kernel's arithmetic changed (issue 21): equal to float32's precision of the outputs (both
    # are 1e-7 to 2e-7 off the same model in float64), not bitwise
    scale = saved["output"].abs().max().item()
    torch.testing.assert_close(outputs(fresh), saved["output"], rtol=1e-6, atol=1e-6 * scale)


def test_a_plain_checkpoint_loads_into_a_companded_model_as_its_effective_weights():
    torch.manual_seed(0)
    plain = small_cnn().eval()
    companded = small_cnn().eval()
    wc.apply(companded, learnable=True)
    companded.load_state_dict(plain.state_dict())  # strict: no silently skipped weights
    x = torch.randn(2, 1, 12, 12)
    assert torch.allclose(companded(x), plain(x), atol=1e-5)
    with torch.no_grad():
        plain[10].weight[0, 0] = 100.0  # far beyond the limit: clipped, and said so
    with pytest.warns(wc.CompanderWarning, match="1 of 320 values of 10.weight in a plain checkpoint"):
        companded.load_state_dict(plain.state_dict())


def test_a_newer_layout_is_refused_with_what_to_do(model):
    sd = model.state_dict()
    sd["fc.weight_compander.layout"] = torch.tensor(3)
    with pytest.raises(ValueError, match=r"layout 3; .* reads layouts 1 to 2\. Upgrade"):
        companded_layout_net(seed=1).load_state_dict(sd)


def test_copies_keep_the_layout_and_a_baked_model_is_plain_again():
    torch.manual_seed(0)
    model = small_cnn()
    wc.apply(model, learnable=True, per_channel=True)
    sd = model.state_dict()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        theirs = clone.state_dict()
        assert list(theirs) == list(sd) and all(torch.equal(theirs[k], sd[k]) for k in sd)
        with torch.no_grad():
            clone[0].parametrizations.weight.original.data.add_(1.0)  # .data: no version bump
        assert not torch.equal(clone.state_dict()["0.weight"], sd["0.weight"])
        assert torch.equal(model.state_dict()["0.weight"], sd["0.weight"])
    wc.remove(model)
    assert all("_compander" not in k for k in model.state_dict())
    assert not any(m._state_dict_hooks or m._load_state_dict_pre_hooks for m in model.modules())
    small_cnn().load_state_dict(model.state_dict())


def test_a_tensor_stacked_on_weight_norm_without_companding_state_is_a_clear_error(model):
    plain_with_weight_norm = LayoutNet()
    with pytest.raises(ValueError, match=r"norm\.weight: .* Load the checkpoint into the model before"):
        model.load_state_dict(plain_with_weight_norm.state_dict())


@pytest.mark.filterwarnings("ignore::weight_compander.CompanderWarning")
def test_only_one_state_for_tied_tensors_even_with_a_plain_dict_destination():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    model[1].weight = model[0].weight
    wc.apply(model)
    sd = model.state_dict(destination={})
    assert torch.equal(sd["0.weight"], sd["1.weight"]) and "0.weight_compander.layout" not in sd
