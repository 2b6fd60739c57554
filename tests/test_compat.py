"""Companded models behave like any PyTorch model: serialization, composition, compile, AMP."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import weight_compander as wc
from support import pretrained_like, small_cnn


def train_steps(model, x, y, steps=3, lr=0.1):
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=1e-4), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def perturb_hyperparameters(model):
    with torch.no_grad():
        for p in wc.hyperparameters(model):
            p.add_(0.2)


@settings(max_examples=8, deadline=None)
@given(
    kind=st.sampled_from(["tanh", "mulaw"]),
    learnable=st.booleans(),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_state_dict_round_trip_into_a_fresh_identically_companded_model(kind, learnable, per_channel, seed):
    torch.manual_seed(seed)
    x = torch.randn(4, 1, 12, 12)
    trained = small_cnn()
    wc.apply(trained, kind=kind, learnable=learnable, per_channel=per_channel)
    train_steps(trained, x, torch.arange(4))
    perturb_hyperparameters(trained)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    fresh = small_cnn()  # different init (the global RNG moved on)
    wc.apply(fresh, kind=kind, learnable=learnable, per_channel=per_channel)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    trained.eval(), fresh.eval()
    assert torch.equal(trained(x), fresh(x))


def test_deepcopy_and_pickle_keep_outputs_and_stay_trainable(cnn, images):
    wc.apply(cnn, learnable=True)
    perturb_hyperparameters(cnn)
    cnn.eval()
    expected = cnn(images)
    for clone in (copy.deepcopy(cnn), pickle.loads(pickle.dumps(cnn))):
        assert torch.equal(clone.eval()(images), expected)
        assert wc.stats(clone) == wc.stats(cnn)
        train_steps(clone.train(), images, torch.arange(6))
        assert not torch.equal(clone.eval()(images), expected)  # the copy trains on its own...
        assert torch.equal(cnn(images), expected)  # ...and the original is untouched
    buffer = io.BytesIO()
    torch.save(cnn, buffer)  # whole-model torch.save (pickle) works too
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False).eval()(images), expected)


def test_composes_with_weight_norm(images):
    torch.manual_seed(0)
    model = small_cnn()
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            weight_norm(m)
    model.eval()
    before = model(images)
    # every one, although a weight_norm'd weight is a new tensor (with a recyclable id) per access
    assert wc.apply(model, learnable=True) == ["0.weight", "3.weight", "5.weight", "8.weight", "10.weight"]
    assert (model(images) - before).abs().max() <= 1e-5
    assert isinstance(model[0].parametrizations.weight[0], type(model[8].parametrizations.weight[0]))
    assert isinstance(model[0].parametrizations.weight[1], wc.Compander)
    train_steps(model.train(), images, torch.arange(6))
    raw_chain = {n: v for n, (_, v) in wc.weights(model).items()}
    wc.remove(model, bake=False)  # weight_norm stays, its output is the raw tensor
    assert parametrize.is_parametrized(model[0], "weight")
    assert torch.allclose(model[0].weight, raw_chain["0.weight"])


def test_weight_norm_composition_bakes_to_a_plain_model(images):
    model = small_cnn()
    weight_norm(model[8])
    wc.apply(model)
    model.eval()
    expected = model(images)
    wc.remove(model, bake=True)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert torch.allclose(model(images), expected, atol=1e-6)


def test_torch_compile_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    wc.apply(model, learnable=True)
    x = torch.randn(8, 16)
    eager = model(x)
    eager.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model)
    out = compiled(x)
    out.sum().backward()
    assert torch.allclose(out, eager, atol=1e-6)
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(p.grad, g, atol=1e-5)


def test_parametrize_cached_computes_each_weight_once(cnn, images):
    wc.apply(cnn, learnable=True)
    calls = []
    hook = wc.Compander.forward

    def counting(self, v):
        calls.append(self)
        return hook(self, v)

    wc.Compander.forward = counting
    try:
        with parametrize.cached():
            first = cnn(images)
            second = cnn(images)
    finally:
        wc.Compander.forward = hook
    assert torch.equal(first, second)
    assert len(calls) == 5  # one per companded tensor, not per use


def test_gradients_reach_raw_weights_and_hyperparameters(cnn, images):
    wc.apply(cnn, learnable=True)
    F.cross_entropy(cnn(images), torch.arange(6)).backward()
    for name, (_, _) in wc.weights(cnn).items():
        module = cnn.get_submodule(name.rsplit(".", 1)[0])
        assert module.parametrizations.weight.original.grad.abs().sum() > 0
    hyper = list(wc.hyperparameters(cnn))
    assert len(hyper) == 10 and all(p.grad is not None and p.grad.abs() > 0 for p in hyper)


def test_autocast_bfloat16_forward_backward_keeps_parameter_dtype(cnn, images):
    wc.apply(cnn, learnable=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cnn(images)
        loss = F.cross_entropy(out, torch.arange(6))
    assert out.dtype == torch.bfloat16
    loss.backward()
    assert all(p.dtype == torch.float32 for p in cnn.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in wc.hyperparameters(cnn))


class TiedLM(nn.Module):
    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_tied_weights_are_companded_once_and_stay_tied():
    torch.manual_seed(0)
    model = TiedLM()
    tokens = torch.randint(0, 50, (4, 7))
    before = model(tokens)
    names = wc.apply(model, learnable=True)  # the head is a Linear; the embedding shares it
    assert names == ["mix.weight", "head.weight"]
    assert torch.allclose(model(tokens), before, atol=1e-5)
    assert model.embed.parametrizations.weight.original is model.head.parametrizations.weight.original
    assert torch.equal(model.embed.weight, model.head.weight)
    assert len(list(wc.hyperparameters(model))) == 4  # two tensors, not three
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=0.0), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
        opt.step()
    assert torch.equal(model.embed.weight, model.head.weight)
    wc.remove(model, bake=True)
    assert model.embed.weight is model.head.weight
    assert not parametrize.is_parametrized(model.embed)


def test_embedding_padding_row_stays_exactly_zero_through_training():
    torch.manual_seed(0)
    embed = nn.Embedding(20, 8, padding_idx=3)
    wc.apply(embed, include=[nn.Embedding], learnable=True)
    opt = torch.optim.AdamW(wc.param_groups(embed, weight_decay=0.1), lr=0.05)
    tokens = torch.randint(0, 20, (16, 5))
    tokens[:, 0] = 3
    for _ in range(5):
        opt.zero_grad()
        embed(tokens).square().sum().backward()
        opt.step()
    assert torch.equal(embed.weight[3], torch.zeros(8))
    assert not torch.equal(embed.weight[4], torch.zeros(8))


def test_multihead_attention_trains_companded():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(3, 5, 16)
    before = mha(x, x, x)[0]
    names = wc.apply(mha, include=[nn.MultiheadAttention, nn.Linear], learnable=True)
    assert names == ["in_proj_weight", "out_proj.weight"]
    assert torch.allclose(mha(x, x, x)[0], before, atol=1e-5)
    opt = torch.optim.SGD(wc.param_groups(mha, weight_decay=0.0), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (mha(x, x, x)[0] - x).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in wc.hyperparameters(mha))


def test_lstm_weights_by_include():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, num_layers=2)
    x = torch.randn(5, 2, 6)
    before = lstm(x)[0]
    names = wc.apply(lstm, include=[nn.LSTM])
    assert names == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]
    assert torch.allclose(lstm(x)[0], before, atol=1e-5)
    lstm(x)[0].sum().backward()
    assert lstm.parametrizations.weight_hh_l1.original.grad is not None


def test_start_from_a_plain_pretrained_checkpoint(images):
    """The documented recipe: build, load the plain checkpoint, then apply."""
    torch.manual_seed(0)
    pretrained = pretrained_like(small_cnn()).eval()
    checkpoint = pretrained.state_dict()
    model = small_cnn()
    model.load_state_dict(checkpoint)
    with pytest.warns(wc.CompanderWarning):  # heavy tails: the limit is raised to cover them
        wc.apply(model)
    assert (model.eval()(images) - pretrained(images)).abs().max() <= 1e-5


def test_export_a_plain_state_dict_by_baking_a_copy(cnn, images):
    """The documented recipe: deepcopy, remove(bake=True), save; the live model stays companded."""
    wc.apply(cnn, learnable=True)
    perturb_hyperparameters(cnn)
    cnn.eval()
    plain_state = wc.remove(copy.deepcopy(cnn), bake=True).state_dict()
    assert parametrize.is_parametrized(cnn[0])
    plain = small_cnn()
    plain.load_state_dict(plain_state)  # a plain model loads it with no library involved
    assert torch.allclose(plain.eval()(images), cnn(images), atol=1e-6)
