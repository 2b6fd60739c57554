"""A sweep over transformers architectures built from tiny configs (offline): apply, one training
step, save_pretrained and resume, generate, bake.

The default suite runs the families whose checkpoints transformers 5 saves under renamed (legacy)
keys (ViT, Swin, GPT-NeoX, Mixtral) and one with transposed fused experts (gpt-oss); the rest is
``slow`` (``pytest -m slow tests/test_hf_architectures.py``).
"""

import warnings

import pytest
import torch

import weight_compander as wc

transformers = pytest.importorskip(
    "transformers", reason="the integrations extra is not installed: pip install -e '.[integrations]'"
)
from weight_compander.integrations import transformers as wc_hf  # noqa: E402

transformers.logging.set_verbosity_error()

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
IMAGE = dict(image_size=16, patch_size=8)
MOE = dict(num_key_value_heads=2, num_experts_per_tok=2)
SEQ2SEQ = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    decoder_start_token_id=0,
    pad_token_id=0,
)
# model_type -> (class, config overrides, inputs: "text" | "image" | "seq2seq", generates)
ARCHITECTURES = {
    "vit": ("ViTForImageClassification", IMAGE, "image", False),
    "swin": (
        "SwinForImageClassification",
        dict(
            image_size=16,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            window_size=2,
        ),
        "image",
        False,
    ),
    "gpt_neox": ("GPTNeoXForCausalLM", {}, "text", True),
    "mixtral": ("MixtralForCausalLM", dict(MOE, num_local_experts=4), "text", True),
    "gpt_oss": ("GptOssForCausalLM", dict(MOE, num_local_experts=4, head_dim=16), "text", True),
    "deit": ("DeiTForImageClassification", IMAGE, "image", False),
    "beit": ("BeitForImageClassification", IMAGE, "image", False),
    "dinov2": ("Dinov2Model", IMAGE, "image", False),
    "segformer": (
        "SegformerForSemanticSegmentation",
        dict(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[16, 32],
            num_attention_heads=[1, 2],
            patch_sizes=[7, 3],
            strides=[4, 2],
            decoder_hidden_size=32,
        ),
        "image",
        False,
    ),
    "qwen2_moe": (
        "Qwen2MoeForCausalLM",
        dict(MOE, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=32),
        "text",
        True,
    ),
    "qwen3_moe": (
        "Qwen3MoeForCausalLM",
        dict(MOE, num_experts=4, moe_intermediate_size=32, head_dim=16),
        "text",
        True,
    ),
    "olmoe": ("OlmoeForCausalLM", dict(MOE, num_experts=4), "text", True),
    "llama": ("LlamaForCausalLM", dict(num_key_value_heads=2), "text", True),
    "gpt2": ("GPT2LMHeadModel", {}, "text", True),
    "phi": ("PhiForCausalLM", {}, "text", True),
    "opt": ("OPTForCausalLM", dict(ffn_dim=64, word_embed_proj_dim=32), "text", True),
    "falcon": ("FalconForCausalLM", {}, "text", True),
    "bloom": ("BloomForCausalLM", {}, "text", True),
    "bert": ("BertForMaskedLM", {}, "text", False),
    "t5": (
        "T5ForConditionalGeneration",
        dict(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, decoder_start_token_id=0),
        "seq2seq",
        True,
    ),
    "bart": ("BartForConditionalGeneration", SEQ2SEQ, "seq2seq", True),
    "marian": ("MarianMTModel", SEQ2SEQ, "seq2seq", True),
    "resnet": (
        "ResNetForImageClassification",
        dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
        "image",
        False,
    ),
    "convnext": (
        "ConvNextForImageClassification",
        dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "image",
        False,
    ),
}
FAST = ("vit", "swin", "gpt_neox", "mixtral", "gpt_oss")


def build(name: str):
    cls_name, overrides, _, _ = ARCHITECTURES[name]
    config = transformers.AutoConfig.for_model(name, **{**SMALL, **overrides})
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(config).eval()


def inputs(name: str) -> dict:
    g = torch.Generator().manual_seed(1)
    kind = ARCHITECTURES[name][2]
    if kind == "image":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}
    tokens = {"input_ids": torch.randint(1, 100, (2, 8), generator=g)}
    if kind == "seq2seq":
        tokens["decoder_input_ids"] = torch.randint(1, 100, (2, 5), generator=g)
    return tokens


def output(model, name: str, grad: bool = False) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        out = model(**inputs(name))
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def companded(name: str):
    model = build(name)
    before = output(model, name)
    with warnings.catch_warnings():  # transformers' N(0, 0.02) init reaches the limit: raised
        warnings.simplefilter("ignore", wc.CompanderWarning)
        names = wc.apply(model, learnable=True)
    return model, names, before


def params(names):
    return [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow]) for n in names]


@pytest.mark.parametrize("name", params(ARCHITECTURES))
def test_architecture_applies_trains_saves_resumes_generates_and_bakes(name, tmp_path):
    model, names, before = companded(name)
    after = output(model, name)
    assert torch.allclose(after, before, atol=1e-5 * before.abs().max().item())  # applying changes nothing
    # experts included (MoE); what is left out are embeddings, large only in these tiny configs
    assert names.coverage.unregistered < 0.1 * names.coverage.total, names.coverage

    model.train()  # one step: gradients reach raw weights and hyperparameters, the step stays finite
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=0.0), lr=0.1)
    output(model, name, grad=True).square().mean().backward()
    assert any(h.grad is not None and h.grad.abs().sum() > 0 for h in wc.hyperparameters(model))
    opt.step()
    model.eval()
    trained = output(model, name)
    assert torch.isfinite(trained).all()

    model.save_pretrained(tmp_path)  # transformers 5 renames keys (ViT, Swin, GPT-NeoX, Mixtral ...)
    resumed = wc_hf.from_pretrained(type(model), tmp_path, learnable=True)
    assert torch.equal(output(resumed, name), trained)
    plain = type(model).from_pretrained(tmp_path).eval()  # deployable: the effective weights
    assert torch.allclose(output(plain, name), trained, atol=1e-6)

    if ARCHITECTURES[name][3]:  # greedy generation: the same tokens companded and baked
        prompt = inputs(name)["input_ids"][:1]
        kwargs = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
        tokens = model.generate(prompt, **kwargs)
        assert torch.equal(wc.remove(resumed).generate(prompt, **kwargs), tokens)
    wc.remove(model)
    assert wc.coverage(model).companded == 0
    assert torch.allclose(output(model, name), trained, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*lie at or beyond the tanh limit:weight_compander.CompanderWarning")
def test_xlnet_3d_attention_weights_left_out_are_a_coverage_warning():
    model = transformers.XLNetLMHeadModel(
        transformers.XLNetConfig(d_model=32, n_layer=1, n_head=2, d_inner=64, vocab_size=100)
    )
    with pytest.warns(wc.CompanderWarning, match=r"companded 5\d\.\d% .*layer\.0\.rel_attn\.\w 32x2x16"):
        wc.apply(model)
