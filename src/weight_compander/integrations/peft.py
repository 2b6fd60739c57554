"""PEFT (LoRA and the other tuners) on companded models.

PEFT merges an adapter by adding its update to ``base_layer.weight.data``; on a companded base
layer that attribute is ``f(v)`` computed anew on every access, so the update would land in a
temporary and ``merge_and_unload()`` would silently return the base model. ``attach`` (called by
``wc.apply`` when PEFT is installed, whichever of ``wc.apply`` and ``get_peft_model`` comes first)
makes every tuner layer's ``merge`` bake its companded base layer first (``wc.remove`` on that
layer: its weight becomes the plain ``f(v)``, outputs unchanged), so the merged weight is exactly
``f(v) + ΔW``. ``merge_adapter`` / ``unmerge_adapter`` work on the baked layer the same way.

A frozen base weight keeps frozen hyperparameters (``wc.apply`` freezes the hyperparameters of
tensors with ``requires_grad=False``), so LoRA training cannot move them and the adapter file,
which holds only adapter tensors, describes the trained model completely.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

try:
    from peft.tuners.tuners_utils import BaseTunerLayer
except ImportError as err:
    raise ImportError(
        "weight_compander.integrations.peft needs peft: pip install 'weight-compander[integrations]'"
    ) from err

from ..api import remove
from ..selection import companded_entries

__all__ = ["LORA_A", "LORA_B", "bake_base_layer", "install"]

LORA_A = "*.lora_A.*.weight"
"""``wc.apply(peft_model, include=wc_peft.LORA_A)``: the down-projections of the LoRA adapters."""
LORA_B = "*.lora_B.*.weight"
"""``wc.apply(peft_model, include=wc_peft.LORA_B, scale=...)``: the up-projections. LoRA starts
them at zero, so their scale cannot be taken from them: pass one (a number)."""

_MARK = "_weight_compander_bakes_base"


def install() -> None:
    """Make the ``merge`` of every PEFT tuner layer class bake a companded base layer first (once)."""
    pending = [BaseTunerLayer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        merge = cls.__dict__.get("merge")
        if merge is not None and not getattr(merge, _MARK, False):
            cls.merge = _baking(merge)


def _baking(merge: Callable) -> Callable:
    @functools.wraps(merge)
    def wrapper(self: BaseTunerLayer, *args, **kwargs):
        bake_base_layer(self)
        return merge(self, *args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def bake_base_layer(layer: BaseTunerLayer) -> None:
    """Bake the companded tensors of a tuner layer's base layer (nothing to do if there are none)."""
    base: nn.Module = layer.get_base_layer()
    entries = companded_entries(base)
    if not entries:
        return
    if any(e.shared or getattr(e.compander, "has_tied_holders", False) for e in entries):
        raise ValueError(
            f"the base layer of {type(layer).__name__} shares a companded tensor with another layer "
            "(tied weights), which merging would untie; bake first: wc.remove(model), then merge. "
            "Nothing was changed."
        )
    remove(base)
