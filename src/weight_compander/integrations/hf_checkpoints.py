"""transformers 5 checkpoint keys and mixture-of-experts layers, for companded models.

*Keys.* ``save_pretrained`` (and so every Trainer checkpoint) writes many architectures under
their legacy key names (ViT's ``encoder.layer.0.attention.attention.query``, GPT-NeoX's
``embed_out``, Mixtral's per-expert ``block_sparse_moe.experts.0.w1``), and the same renaming
reaches the ``*_compander.*`` keys. ``model_keys`` maps a checkpoint back with the conversions
``from_pretrained`` itself uses (``transformers.conversion_mapping``); ``attach`` (called by
``wc.apply``) gives the outermost transformers model a load hook that does it, so
``load_state_dict`` (Trainer's ``resume_from_checkpoint``) loads such files too.

*Experts.* transformers 5 stores a mixture-of-experts layer's experts as fused 3-D Parameters
(``gate_up_proj``, ``down_proj``: one matrix per expert) in classes marked by
``@use_experts_implementation``; they are no ``nn.Linear``, so ``apply`` would leave most of the
model out. ``register_experts`` registers every such class it meets as a default layer type, with
its output axis (1, or 2 where the class stores its matrices transposed, ``is_transposed``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn.utils import parametrize
from transformers.modeling_utils import PreTrainedModel

from ..layer_types import layer_spec, register_layer

__all__ = ["attach", "detach", "model_keys", "register_experts"]

_HOOK = "_wc_checkpoint_keys_hook"  # the id of the load hook on a model (an int: survives deepcopy)
_EXPERT_TENSORS = ("gate_up_proj", "up_proj", "down_proj")


def model_keys(model: PreTrainedModel, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's tensors under the model's own keys, converted as ``from_pretrained`` converts
    them (renamed keys; per-expert matrices stacked into fused 3-D experts)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            dot_natural_key,
            rename_source_key,
        )
    except ImportError:  # transformers < 5 saves the model's own keys
        return dict(state_dict)
    conversions = get_model_conversion_mapping(model)
    if not conversions:
        return dict(state_dict)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    by_pattern = {p: c for c in converters for p in c.source_patterns}
    out: dict[str, Tensor] = {}
    pending: dict[str, WeightConverter] = {}
    # transformers' own order: experts 0, 1, ..., 10 are stacked in that order
    for key, tensor in sorted(state_dict.items(), key=lambda kv: dot_natural_key(kv[0])):
        renamed, pattern = rename_source_key(key, renamings, converters)
        if pattern is None:
            out[renamed] = tensor
        else:
            converter = pending.setdefault(renamed, copy.deepcopy(by_pattern[pattern]))
            converter.add_tensor(renamed, key, pattern, tensor)
    for target, converter in pending.items():
        for name, value in converter.convert(target, model=model, config=model.config).items():
            out[name] = value[0] if isinstance(value, list) else value
    return out


def _map_keys_hook(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """Map legacy checkpoint keys to the model's before it loads them (nothing to do if they fit)."""
    ours = [k for k in state_dict if k.startswith(prefix)]
    expected = {prefix + k for k in module.state_dict()}
    if all(k in expected for k in ours):
        return
    mapped = model_keys(module, {k[len(prefix) :]: state_dict.pop(k) for k in ours})
    state_dict.update({prefix + k: v for k, v in mapped.items()})


def attach(model: nn.Module) -> None:
    """Give each outermost transformers model in ``model`` the load hook that maps legacy keys."""
    for module in _outermost(model):
        if _HOOK not in module.__dict__:
            handle = module._register_load_state_dict_pre_hook(_map_keys_hook, with_module=True)
            setattr(module, _HOOK, handle.id)


def detach(model: nn.Module) -> None:
    for module in model.modules():
        hook = module.__dict__.pop(_HOOK, None)
        if hook is not None:
            module._load_state_dict_pre_hooks.pop(hook, None)


def _outermost(model: nn.Module) -> list[PreTrainedModel]:
    found: list[tuple[str, PreTrainedModel]] = []
    for name, module in model.named_modules():
        inside = any(not n or name.startswith(f"{n}.") for n, _ in found)
        if isinstance(module, PreTrainedModel) and not inside:
            found.append((name, module))
    return [m for _, m in found]


def register_experts(model: nn.Module) -> None:
    """Register each fused-experts class of the model (``@use_experts_implementation``) as a
    default layer type: its 3-D expert matrices, output axis 1 (2 if stored transposed)."""
    for module in model.modules():
        if layer_spec(module) is not None or not isinstance(getattr(module, "is_transposed", None), bool):
            continue
        if _expert_tensors(module):
            axis = 2 if module.is_transposed else 1  # (experts, out, in) or (experts, in, out)
            cls = parametrize.type_before_parametrizations(module)
            register_layer(cls, _expert_tensors, output_axis=axis)


def _expert_tensors(module: nn.Module) -> tuple[str, ...]:
    def fused(name: str) -> bool:
        p = module._parameters.get(name)
        return parametrize.is_parametrized(module, name) or (isinstance(p, Tensor) and p.dim() == 3)

    return tuple(name for name in _EXPERT_TENSORS if fused(name))
