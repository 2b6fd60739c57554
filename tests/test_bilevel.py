"""Validation-driven hyperparameter learning: only hyperparameters move, only on validation data."""

import pytest
import torch
import torch.nn.functional as F

import weight_compander as wc
from support import small_cnn


def setup(learnable=True):
    torch.manual_seed(0)
    model = small_cnn()
    wc.apply(model, learnable=learnable)
    return model


def test_weight_groups_can_leave_hyperparameters_out():
    model = setup()
    groups = wc.param_groups(model, weight_decay=5e-4, with_hyperparameters=False)
    held = {id(p) for g in groups for p in g["params"]}
    assert not held & {id(p) for p in wc.hyperparameters(model)}
    assert len(held) == len(list(model.parameters())) - len(list(wc.hyperparameters(model)))


def test_hyper_step_moves_only_hyperparameters_and_keeps_batchnorm_stats():
    model = setup()
    xv, yv = torch.randn(8, 1, 12, 12), torch.arange(8) % 10
    hyper = dict(wc.named_hyperparameters(model))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(wc.hyperparameters(model), lr=0.05)
    loss = wc.hyper_step(model, lambda: F.cross_entropy(model(xv), yv), opt)
    assert loss > 0 and model.training  # the mode is restored
    after = model.state_dict()
    effective = set(wc.weights(model))  # the saved f(v) follows its hyperparameters
    moved = {k for k in before if k not in effective and not torch.equal(before[k], after[k])}
    assert moved == {k for k in before if k.endswith(("raw_gain", "raw_limit"))}
    assert len(moved) == len(hyper) == 10
    for name, p in model.named_parameters():  # no gradient leaked into the weights
        if id(p) not in {id(h) for h in hyper.values()}:
            assert p.grad is None, name


def test_training_step_in_validation_mode_leaves_hyperparameters_alone():
    model = setup()
    groups = wc.param_groups(model, weight_decay=5e-4, with_hyperparameters=False)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    hyper_before = [p.detach().clone() for p in wc.hyperparameters(model)]
    x, y = torch.randn(8, 1, 12, 12), torch.arange(8) % 10
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(hyper_before, wc.hyperparameters(model), strict=True))


def test_hyper_step_gradient_matches_autograd_of_the_validation_loss():
    model = setup()
    model.eval()
    xv, yv = torch.randn(8, 1, 12, 12), torch.arange(8) % 10
    params = list(wc.hyperparameters(model))
    expected = torch.autograd.grad(F.cross_entropy(model(xv), yv), params)
    opt = torch.optim.SGD(params, lr=0.0)  # lr 0: look at the gradients only
    wc.hyper_step(model, lambda: F.cross_entropy(model(xv), yv), opt)
    for p, g in zip(params, expected, strict=True):
        assert torch.allclose(p.grad, g)
        assert g.abs() > 0


def test_hyper_step_refuses_an_optimizer_over_weights_and_a_model_without_hyperparameters():
    model = setup()
    xv, yv = torch.randn(4, 1, 12, 12), torch.arange(4)
    with pytest.raises(ValueError, match="not compander hyperparameters"):
        wc.hyper_step(
            model, lambda: F.cross_entropy(model(xv), yv), torch.optim.SGD(model.parameters(), lr=0.1)
        )
    fixed = setup(learnable=False)
    with pytest.raises(ValueError, match="no learnable compander hyperparameters"):
        wc.hyper_step(
            fixed, lambda: F.cross_entropy(fixed(xv), yv), torch.optim.SGD([torch.zeros(1)], lr=0.1)
        )
