"""Hugging Face Transformers: apply, save_pretrained / from_pretrained, Trainer resume, tie and resize.

Tiny models built from configs (no downloads, no network): GPT-2 (``Conv1D`` layers, output
layer tied to the token embedding) and Llama (``nn.Linear`` layers, untied output layer).
"""

import warnings

import pytest
import torch
from torch.nn.utils.parametrizations import weight_norm

import weight_compander as wc
from support import assert_same, native_state_dict, snapshot

transformers = pytest.importorskip(
    "transformers", reason="the integrations extra is not installed: pip install -e '.[integrations]'"
)
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from weight_compander.integrations import transformers as wc_hf  # noqa: E402

transformers.logging.set_verbosity_error()
VOCAB = 100


def gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(config)


def llama() -> LlamaForCausalLM:
    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=False)  # fmt: skip
    return LlamaForCausalLM(config)


def gpt_neox() -> GPTNeoXForCausalLM:  # transformers 5 saves its lm_head as "embed_out"
    config = GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                           vocab_size=VOCAB)  # fmt: skip
    return GPTNeoXForCausalLM(config)


BUILD = {"gpt2": gpt2, "llama": llama, "gpt_neox": gpt_neox}


def companded(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = BUILD[name]()
    with warnings.catch_warnings():  # transformers' N(0, 0.02) init reaches the limit: raised
        warnings.simplefilter("ignore", wc.CompanderWarning)
        wc.apply(model, learnable=True, **kwargs)
    return model.eval()


def logits(model, tokens=None):
    tokens = torch.arange(12).view(2, 6) * 7 % VOCAB if tokens is None else tokens
    with torch.no_grad():
        return model(tokens).logits


def assert_same_state(a, b):
    theirs, ours = native_state_dict(a), native_state_dict(b)
    assert theirs.keys() == ours.keys()
    for k in ours:
        assert torch.equal(theirs[k], ours[k]), k


def test_gpt2_conv1d_is_companded_per_channel_along_its_output_axis():
    torch.manual_seed(0)
    model = gpt2().eval()
    before = logits(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = wc.apply(model, per_channel=True, learnable=True)
    assert len(caught) == 1 and "in 9 of 9 tensors" in str(caught[0].message)  # one summary, not 9
    layers = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert names == [*(f"transformer.h.{i}.{m}.weight" for i in range(2) for m in layers), "lm_head.weight"]
    assert names.coverage.share > 0.9 and names.coverage.left_out[0][0] == "transformer.wpe.weight"
    c_attn = model.transformer.h[0].attn.c_attn
    assert isinstance(c_attn, Conv1D) and c_attn.parametrizations.weight.original.shape == (32, 96)  # in, out
    assert c_attn.parametrizations.weight[0].raw_gain.shape == (1, 96)  # one per output feature
    raw = model.lm_head.parametrizations.weight.original
    assert model.transformer.wte.parametrizations.weight.original is raw  # tied: companded once
    assert torch.allclose(logits(model), before, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_save_pretrained_loads_into_the_plain_class_as_the_effective_weights(name, tmp_path):
    model = companded(name)
    model.save_pretrained(tmp_path / "wc")
    plain, info = type(model).from_pretrained(tmp_path / "wc", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]  # nothing re-initialized
    assert info["unexpected_keys"] and all("_compander." in k for k in info["unexpected_keys"])
    assert torch.equal(logits(plain.eval()), logits(model))
    model.save_pretrained(tmp_path / "deploy", state_dict=wc.plain_state_dict(model))
    plain, info = type(model).from_pretrained(tmp_path / "deploy", output_loading_info=True)
    assert not any(info.values())  # nothing missing, nothing unexpected
    assert torch.equal(logits(plain.eval()), logits(model))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_from_pretrained_resumes_raw_weights_scales_and_hyperparameters(name, tmp_path):
    model = companded(name, per_channel=True)
    with torch.no_grad():
        for p in wc.hyperparameters(model):
            p.add_(0.1)  # as if learned
    model.save_pretrained(tmp_path)
    resumed = wc_hf.from_pretrained(type(model), tmp_path, learnable=True, per_channel=True)
    assert_same_state(resumed, model)
    assert torch.equal(logits(resumed.eval()), logits(model))
    with pytest.raises(RuntimeError, match="size mismatch"):  # other settings: refused, not skipped
        wc_hf.from_pretrained(type(model), tmp_path, learnable=True, per_channel=False)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gpt_neox"])
def test_trainer_resume_from_checkpoint_ends_equal_to_an_uninterrupted_run(name, tmp_path):
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, VOCAB, (16,), generator=g) for _ in range(16)]
    data = [{"input_ids": t, "labels": t} for t in tokens]

    def train(out, resume=None):
        model = companded(name).train()
        args = TrainingArguments(
            output_dir=str(out), max_steps=4, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
            weight_decay=0.5, use_cpu=True, report_to=[], logging_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        optimizers = wc_hf.optimizers(model, args)  # the documented one-liner
        trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=optimizers)
        trainer.train(resume_from_checkpoint=resume)
        return model, trainer

    whole, trainer = train(tmp_path / "whole")
    resumed, _ = train(tmp_path / "resumed", resume=str(tmp_path / "whole" / "checkpoint-2"))
    assert_same_state(resumed, whole)
    hyper = {id(p) for p in wc.hyperparameters(whole)}
    groups = trainer.optimizer.param_groups
    decays = {g["weight_decay"] for g in groups if hyper & {id(p) for p in g["params"]}}
    assert decays == {0.0}  # the hyperparameters learn without weight decay


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tie_weights_and_resize_token_embeddings_keep_the_embeddings_companded(name):
    model = companded(name, per_channel=True)
    before, raw = logits(model), {k: v for k, (_, v) in wc.weights(model).items()}
    model.tie_weights()
    assert torch.equal(logits(model), before)
    model.resize_token_embeddings(VOCAB + 12)
    after = logits(model)
    assert after.shape[-1] == VOCAB + 12 and torch.equal(after[..., :VOCAB], before)
    new = {k: v for k, (_, v) in wc.weights(model).items()}
    assert new.keys() == raw.keys()
    for k in raw:  # every old raw value is kept exactly, not inverted back from f(v)
        assert torch.equal(new[k][: raw[k].shape[0]], raw[k]), k
    head = model.get_output_embeddings()
    assert head.parametrizations.weight[0].raw_gain.shape == (VOCAB + 12, 1)
    limit = head.parametrizations.weight[0].hyperparameter_values()["limit"]
    assert (head.weight.abs() < head.parametrizations.weight[0].scale * limit).all()  # new rows companded
    if name == "gpt2":  # still tied: one raw tensor, one compander
        assert model.transformer.wte.parametrizations.weight.original is head.parametrizations.weight.original
    model.tie_weights()
    model.resize_token_embeddings(VOCAB)  # shrinking keeps the first rows
    assert torch.equal(logits(model), before)


def test_tying_tensors_companded_apart_is_refused_before_anything_changes():
    model = companded("llama", include=[torch.nn.Embedding, torch.nn.Linear])  # both, separately
    model.config.tie_word_embeddings = True
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"tie_weights would tie lm_head\.weight .* nothing was changed"):
        model.tie_weights()
    assert_same(before, snapshot(model))


def test_resizing_embeddings_companded_over_another_parametrization_is_refused_first():
    torch.manual_seed(0)
    model = llama()
    weight_norm(model.lm_head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wc.CompanderWarning)
        wc.apply(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"on top of another parametrization; .* nothing was changed"):
        model.resize_token_embeddings(VOCAB + 4)
    assert_same(before, snapshot(model))


def test_remove_gives_back_the_plain_methods():
    model = companded("gpt2")
    assert "resize_token_embeddings" in model.__dict__
    wc.remove(model)
    assert "resize_token_embeddings" not in model.__dict__ and "tie_weights" not in model.__dict__
    model.resize_token_embeddings(VOCAB + 1)
    assert model.lm_head.weight is model.transformer.wte.weight
