"""Learn the compander hyperparameters on held-out data (first-order bilevel).

Learning gain and limit by the *training* loss has a trap: the training loss is lowest when
regularization is weakest, so the limit grows and the gain runs away. The first-order bilevel
fix (as in Self-Tuning Networks and inexact bilevel methods): the weights ``v`` follow the
training loss, the hyperparameters follow the gradient of a *validation* loss at the current
weights, in alternation. Only the hyperparameters move on validation batches.

Use the *training* objective on the validation batch (the same label smoothing, say). Plain
cross-entropy on a model trained with label smoothing rewards sharper logits, and the gain and
limit of the last layers act as an inverse temperature: they then grow without end (×20 in 50
epochs on MNIST-1D) instead of settling where held-out data wants them (docs/results).

Example::

    groups = wc.param_groups(model, weight_decay=5e-4, with_hyperparameters=False)
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9)            # weights only
    hyper_opt = torch.optim.Adam(wc.hyperparameters(model), lr=1e-2)  # hyperparameters only
    for step, (x, y) in enumerate(train_batches):
        opt.zero_grad(); F.cross_entropy(model(x), y, label_smoothing=0.1).backward(); opt.step()
        if step % 2 == 0:                                            # every 2nd step
            xv, yv = next(val_batches)
            wc.hyper_step(model, lambda: F.cross_entropy(model(xv), yv, label_smoothing=0.1), hyper_opt)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .optim import hyperparameters

__all__ = ["hyper_step"]


def hyper_step(
    model: nn.Module,
    validation_loss: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    eval_mode: bool = True,
) -> float:
    """One hyperparameter update on a validation batch; the weights are left untouched.

    Args:
        model: a model with learnable compander hyperparameters.
        validation_loss: computes the loss on a held-out batch (called once).
        optimizer: an optimizer over ``wc.hyperparameters(model)`` only.
        eval_mode: compute the loss in eval mode (BatchNorm uses its running statistics and
            does not update them with validation data; no dropout), then restore the mode.

    Returns:
        the validation loss, as a float.
    """
    params = list(hyperparameters(model))
    if not params:
        raise ValueError(
            "the model has no learnable compander hyperparameters; compand it with learnable=True."
        )
    ours = {id(p) for p in params}
    foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in ours]
    if foreign:
        raise ValueError(
            f"the optimizer holds {len(foreign)} tensors that are not compander hyperparameters; "
            "give hyper_step an optimizer over wc.hyperparameters(model) only, so weights never "
            "learn from validation data."
        )
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        loss = validation_loss()
    finally:
        model.train(was_training)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
    optimizer.step()
    return float(loss.detach())
