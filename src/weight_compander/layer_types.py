"""Which layer types hold weight matrices: their tensor names and the axis of their output channels.

A registry, not a hard-coded list. ``apply`` compands the tensors of every *default* layer type,
``include=[SomeType]`` selects any type, and ``per_channel=True`` / ``scale="channel"`` lay one
value per output channel along the registered axis. The next library's custom layer is one line::

    wc.register_layer(MyLayer, "kernel", output_axis=1)

A type can be registered by its dotted path, so the entry costs no import: transformers'
``Conv1D`` (GPT-2's attention and MLP) is registered as ``"transformers.pytorch_utils.Conv1D"``
and stores its weight as (in, out), hence ``output_axis=1``. Lookup walks the module's class
hierarchy, so the most specific registered class wins and subclasses inherit their base's entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["LayerSpec", "layer_spec", "layers", "output_axis", "register_layer", "tensor_names"]

TensorNames = str | Sequence[str] | Callable[[nn.Module], Sequence[str]]


@dataclass(frozen=True)
class LayerSpec:
    """What a layer type holds: ``tensors`` (names, or a function of the module that returns them),
    ``output_axis`` (where its output channels lie) and whether ``apply`` compands it by default."""

    tensors: tuple[str, ...] | Callable[[nn.Module], Sequence[str]]
    output_axis: int = 0
    default: bool = True

    def tensor_names(self, module: nn.Module) -> tuple[str, ...]:
        return tuple(self.tensors(module)) if callable(self.tensors) else self.tensors


_LAYERS: dict[type[nn.Module] | str, LayerSpec] = {}


def register_layer(
    layer: type[nn.Module] | str,
    tensors: TensorNames = "weight",
    *,
    output_axis: int = 0,
    default: bool = True,
    replace: bool = False,
) -> LayerSpec:
    """Tell ``apply`` about a layer type: which tensors to compand and where its output channels lie.

    Args:
        layer: an ``nn.Module`` subclass, or its dotted path (``"package.module.Class"``) so that
            registering needs no import of the package.
        tensors: the tensor name(s), or a function ``module -> names`` for layers whose names
            depend on the instance (RNNs). Default: ``"weight"``.
        output_axis: the axis of the output channels in those tensors (``per_channel`` and
            ``scale="channel"`` give one value per index along it). 0 for ``nn.Linear`` (out, in);
            1 for a weight stored as (in, out).
        default: ``True`` to compand this type in ``apply(model)`` without ``include``; ``False``
            to compand it only when asked for (``include=[layer]``).
        replace: allow replacing an existing entry.

    Returns:
        the entry.

    Example::

        >>> wc.register_layer("mylib.layers.Dense", "kernel", output_axis=1)
        LayerSpec(tensors=('kernel',), output_axis=1, default=True)
    """
    if isinstance(layer, str):
        if "." not in layer or not all(part.isidentifier() for part in layer.split(".")):
            raise ValueError(f"a layer path must look like 'package.module.Class'; got {layer!r}.")
    elif not (isinstance(layer, type) and issubclass(layer, nn.Module)):
        raise TypeError(f"layer must be an nn.Module subclass or its dotted path; got {layer!r}.")
    if isinstance(tensors, str):
        tensors = (tensors,)
    elif not callable(tensors):
        tensors = tuple(tensors)
        if not tensors or not all(isinstance(t, str) and t for t in tensors):
            raise ValueError(f"tensors must be tensor names (e.g. 'weight'); got {tensors!r}.")
    if isinstance(output_axis, bool) or not isinstance(output_axis, int):
        raise TypeError(f"output_axis must be an int; got {output_axis!r}.")
    if not isinstance(default, bool):
        raise TypeError(f"default must be True or False; got {default!r}.")
    same = [key for key in _LAYERS if _path(key) == _path(layer)]  # by class or by path
    if same and not replace:
        raise ValueError(f"layer {_path(layer)} is already registered; pass replace=True to replace it.")
    for key in same:
        del _LAYERS[key]
    spec = LayerSpec(tensors, output_axis, default)
    _LAYERS[layer] = spec
    return spec


def layers() -> dict[type[nn.Module] | str, LayerSpec]:
    """The registered layer types (a copy): type or dotted path -> ``LayerSpec``."""
    return dict(_LAYERS)


def _path(cls: type | str) -> str:
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def layer_spec(module: nn.Module) -> LayerSpec | None:
    """The entry of the most specific registered class of ``module``, or None."""
    for cls in type(module).__mro__:
        spec = _LAYERS.get(cls) or _LAYERS.get(_path(cls))
        if spec is not None:
            return spec
    return None


def tensor_names(module: nn.Module) -> tuple[str, ...]:
    """The tensors "compand this module" means: the registered ones, else ``("weight",)``."""
    spec = layer_spec(module)
    return spec.tensor_names(module) if spec is not None else ("weight",)


def output_axis(module: nn.Module, tensor_name: str) -> int:
    """The output-channel axis of ``module.<tensor_name>``: the registered one, else 0."""
    spec = layer_spec(module)
    if spec is not None and tensor_name in spec.tensor_names(module):
        return spec.output_axis
    return 0


def _attention_tensors(module: nn.Module) -> tuple[str, ...]:
    if module._qkv_same_embed_dim:
        return ("in_proj_weight",)
    return ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def _rnn_tensors(module: nn.Module) -> tuple[str, ...]:
    return tuple(n for n in module._flat_weights_names if n.startswith("weight_"))


def _register_builtins() -> None:
    for conv in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d):
        register_layer(conv)  # weight (out, in, ...)
    for transposed in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        register_layer(transposed, output_axis=1)  # weight (in, out / groups, ...)
    # transformers' GPT-2-style linear layer: weight (in, out); by path, so torch alone suffices.
    register_layer("transformers.pytorch_utils.Conv1D", output_axis=1)
    # Only on request: an embedding is a lookup table (axis 0: one row per token, the same
    # axis as the output layer it is often tied to); attention and RNN weights by include.
    register_layer(nn.Embedding, default=False)
    register_layer(nn.MultiheadAttention, _attention_tensors, default=False)
    register_layer(nn.RNNBase, _rnn_tensors, default=False)


_register_builtins()
