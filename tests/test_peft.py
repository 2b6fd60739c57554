"""PEFT's LoRA on companded models: companding the adapters only, a companded base model under
trained adapters, merging, and the adapter file round trip. Tiny Llama from a config, offline."""

import warnings

import pytest
import torch

import weight_compander as wc

MISSING = "the integrations extra is not installed: pip install -e '.[integrations]'"
peft = pytest.importorskip("peft", reason=MISSING)
transformers = pytest.importorskip("transformers")
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from weight_compander.integrations import peft as wc_peft  # noqa: E402

transformers.logging.set_verbosity_error()
TOKENS = torch.arange(12).view(2, 6) * 7 % 100


def llama():
    config = transformers.LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=100,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def lora(model):
    # init_lora_weights=False: B != 0, so the adapters change the outputs from the start
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def apply(model, **kwargs):
    with warnings.catch_warnings():  # transformers' N(0, 0.02) init reaches the limit: raised
        warnings.simplefilter("ignore", wc.CompanderWarning)
        return wc.apply(model, learnable=True, **kwargs)


def logits(model):
    with torch.no_grad():
        return model(TOKENS).logits


def train_step(model, steps: int = 1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model(TOKENS, labels=TOKENS).loss.backward()
        opt.step()


def base_then_lora():
    model = llama()
    apply(model)
    return lora(model)


def lora_then_base():
    model = lora(llama())
    apply(model)
    return model


@pytest.mark.parametrize("build", [base_then_lora, lora_then_base])
@pytest.mark.parametrize("how", ["merge_and_unload", "safe_merge", "merge_adapter"])
def test_merging_gives_the_base_weights_plus_the_lora_update(build, how):
    model = build()
    train_step(model)
    want = logits(model)
    with model.disable_adapter():
        base = logits(model)
    assert not torch.allclose(base, want, atol=1e-3)  # the update is there to be merged
    if how == "merge_adapter":
        model.merge_adapter()  # into the (baked) base weights; the adapters are kept
        assert model.base_model.model.model.layers[0].self_attn.q_proj.merged
        assert torch.allclose(logits(model), want, atol=1e-5)
        model.unmerge_adapter()
        with model.disable_adapter():
            assert torch.allclose(logits(model), base, atol=1e-5)
        return
    merged = model.merge_and_unload(safe_merge=how == "safe_merge")  # dropped the update before
    assert torch.allclose(logits(merged), want, atol=1e-5)
    q_proj = merged.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear  # merged into a plain (baked) layer
    assert merged.model.layers[0].mlp.up_proj.parametrizations.weight  # the rest stays companded


def test_companding_the_base_model_under_lora_keeps_its_hyperparameters_frozen():
    model = lora_then_base()
    base = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    hyper = base.parametrizations.weight[0]
    assert hyper.raw_gain.requires_grad is False and hyper.raw_limit.requires_grad is False
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    adapter = q_proj.lora_A.default.parametrizations.weight[0]
    assert adapter.raw_gain.requires_grad  # the adapters' own hyperparameters learn
    before = {k: v.clone() for k, v in hyper.state_dict().items()}
    train_step(model, steps=2)
    assert all(torch.equal(v, hyper.state_dict()[k]) for k, v in before.items())


def test_companded_adapters_round_trip_through_the_adapter_file(tmp_path):
    """The recipe of docs/deploy.md: lora_A by its std, lora_B (zero at LoRA's init) by a given scale."""
    model = lora(llama())
    names = apply(model, include=wc_peft.LORA_A) + apply(model, include=wc_peft.LORA_B, scale=0.01)
    assert len(names) == 8 and all(".lora_A." in n or ".lora_B." in n for n in names)  # adapters only
    train_step(model, steps=2)
    want = logits(model)
    model.save_pretrained(tmp_path)

    resumed = lora(llama())  # to train on: the same companding, then the adapter's raw state
    apply(resumed, include=wc_peft.LORA_A) + apply(resumed, include=wc_peft.LORA_B, scale=0.01)
    set_peft_model_state_dict(resumed, load_file(tmp_path / "adapter_model.safetensors"))
    assert torch.equal(logits(resumed), want)
    pairs = zip(wc.hyperparameters(resumed), wc.hyperparameters(model), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)

    plain = PeftModel.from_pretrained(llama(), tmp_path)  # to deploy: the effective adapter weights
    assert torch.allclose(logits(plain), want, atol=1e-6)
    assert torch.allclose(logits(plain.merge_and_unload()), want, atol=1e-5)


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_merging_into_either_holder_of_a_tied_companded_tensor_is_refused(target):
    """Baking the first holder alone wrote f(v) into the shared Parameter while the other holder
    still applied f to it: f(f(v)) there, silently."""
    config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=2, num_key_value_heads=2, vocab_size=100,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    apply(model, include=[torch.nn.Linear, torch.nn.Embedding])
    model = get_peft_model(model, LoraConfig(r=4, target_modules=[target], init_lora_weights=False))
    before = logits(model)
    with pytest.raises(ValueError, match="tied weights"):
        model.merge_and_unload()
    assert torch.equal(logits(model), before)  # nothing was changed
