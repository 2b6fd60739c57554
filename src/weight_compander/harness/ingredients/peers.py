"""Peer reparameterizations, so weight compander can be compared with its nearest alternatives.

Both reparameterize weights through ``torch.nn.utils.parametrize``, like weight compander, so
a run differs from the baseline only in ``w = f(v)``:

- ``weight_norm``: PyTorch's ``w = g · v / ‖v‖`` (Salimans & Kingma 2016) on the weight of
  every ``Linear`` and ``Conv``; it leaves the outputs unchanged when applied.
- ``weight_std``: weight standardization (Qiao et al., "Micro-Batch Training with
  Batch-Channel Normalization and Weight Standardization", 2019) on every conv weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["PEERS", "apply_peer"]

PEERS = ("weight_norm", "weight_std")
WS_EPS = 1e-5  # added to the per-channel std, as in the paper's code

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TARGETS = {"weight_norm": (nn.Linear, *_CONVS), "weight_std": _CONVS}


class _WeightStandardization(nn.Module):
    """``w = s · (v − mean_c(v)) / (std_c(v) + eps)`` per output channel c.

    ``s`` is the per-tensor std of the weight when standardization was applied (a buffer).
    Why keep it: the paper's plain unit std multiplies a conv's output scale by about
    sqrt(fan-in) against PyTorch's default init. A following BatchNorm cancels that, but a conv
    without one (the 1x1 shortcut of a wide block, a conv whose output feeds a residual sum)
    would start far off the baseline's scale. With ``s`` the standardized weights start with
    the init statistics of the baseline, so the same learning rate fits both.
    """

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", weight.detach().std(correction=0).clone())

    def forward(self, v: Tensor) -> Tensor:
        dims = tuple(range(1, v.dim()))
        # eps on the std, not the variance: init stds of wide layers are ~0.01, where
        # sqrt(var + 1e-5) would already shrink the weights by a few percent.
        std, mean = torch.std_mean(v, dim=dims, keepdim=True, correction=0)
        return (v - mean) / (std + WS_EPS) * self.scale


def apply_peer(model: nn.Module, kind: str) -> list[str]:
    """Reparameterize the weights of ``model`` in place with a peer method.

    Args:
        model: the model; its ``Linear``/``Conv`` layers must hold plain weights.
        kind: ``"weight_norm"`` (every ``Linear`` and ``Conv{1,2,3}d`` weight, ``dim=0``:
            one norm per output unit) or ``"weight_std"`` (every ``Conv{1,2,3}d`` weight;
            ``Linear`` layers keep plain weights, as in the paper).

    Returns:
        The qualified names of the reparameterized tensors, e.g. ``["0.weight", "4.weight"]``.

    Raises:
        ValueError: unknown ``kind``, a weight that is already parametrized, or a model
            without any layer the method applies to (a silent no-op would pass for a result).
    """
    if kind not in PEERS:
        raise ValueError(f"unknown peer reparameterization {kind!r}; valid: {', '.join(PEERS)}")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, _TARGETS[kind])]
    if not targets:
        layers = "Conv layers" if kind == "weight_std" else "Linear or Conv layers"
        raise ValueError(
            f"{kind} found no {layers} in {type(model).__name__}; "
            "weight_std standardizes conv weights only, use weight_norm or wc for an MLP"
        )
    for name, m in targets:
        if parametrize.is_parametrized(m, "weight"):
            raise ValueError(
                f"{name or 'the model'}.weight is already parametrized; apply one "
                "reparameterization per run (reparam = 'wc', 'weight_norm' or 'weight_std')"
            )
    done = []
    for name, m in targets:
        if kind == "weight_norm":
            weight_norm(m, "weight", dim=0)
        else:
            parametrize.register_parametrization(m, "weight", _WeightStandardization(m.weight))
        done.append(f"{name}.weight" if name else "weight")
    return done
