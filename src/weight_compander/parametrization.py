"""The module that ``torch.nn.utils.parametrize`` registers on a companded tensor.

``Compander.forward(v)`` is ``w = s * phi(v / s)``; ``right_inverse(w)`` is its exact inverse, so
registering it leaves the tensor's value (and the network's outputs) unchanged.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Collection, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .functions import get_kind

__all__ = ["Compander", "SharedCompander"]


class Compander(nn.Module):
    """``w = s * phi(v / s; hyper)`` for one tensor.

    Buffers: ``scale`` (``s``, fixed at creation) and each fixed hyperparameter by its name.
    Parameters: each learnable hyperparameter ``h`` as ``raw_h = log(h - lower)``, unconstrained
    so any optimizer step keeps it valid. All have shape ``()`` (per tensor) or
    ``(out, 1, ..., 1)`` (per output channel).
    """

    def __init__(
        self,
        kind: str,
        scale: Tensor,
        hyperparameters: Mapping[str, Tensor],
        learnable: Collection[str] = (),
    ) -> None:
        super().__init__()
        spec = get_kind(kind)
        self.kind = spec.name  # stored by name so the module pickles without the functions
        self.register_buffer("scale", scale)
        for name, value in hyperparameters.items():
            if name in learnable:
                lower = spec.hyperparameters[name].lower
                self.register_parameter(f"raw_{name}", nn.Parameter(torch.log(value - lower)))
            else:
                self.register_buffer(name, value)

    @property
    def learnable(self) -> tuple[str, ...]:
        return tuple(n for n in get_kind(self.kind).hyperparameters if hasattr(self, f"raw_{n}"))

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """Current hyperparameter values (differentiable for learnable ones)."""
        values = {}
        for name, spec in get_kind(self.kind).hyperparameters.items():
            raw = self._parameters.get(f"raw_{name}")  # not getattr: cheaper, called every forward
            if raw is None:
                values[name] = self._buffers[name]
            else:  # (no "+ 0": each operation costs microseconds, forward and backward)
                values[name] = raw.exp() + spec.lower if spec.lower else raw.exp()
        return values

    def forward(self, v: Tensor) -> Tensor:
        spec, hyper = get_kind(self.kind), self.hyperparameter_values()
        if _recording() and spec.fused is not None:
            # Tracers and exporters record torch operations: an autograd.Function would be a
            # Python call that torch.jit.save and ONNX cannot store.
            return self.scale * spec.forward(v / self.scale, **hyper)
        return spec.compand(v, self.scale, hyper)

    def __prepare_scriptable__(self) -> Compander:
        # torch.jit.script calls this on every submodule before compiling; parametrized modules
        # cannot be scripted, and its own error would point into this file.
        raise RuntimeError(
            "torch.jit.script cannot compile a companded model; bake first: wc.remove(model) "
            "(same outputs, a plain model), or use torch.jit.trace."
        )

    @torch.no_grad()
    def right_inverse(self, w: Tensor) -> Tensor:
        # float64 keeps f(f^-1(w)) == w to float32 round-off even close to a tanh bound.
        hyper = {k: h.double() for k, h in self.hyperparameter_values().items()}
        v = get_kind(self.kind).expand(w.double(), self.scale.double(), hyper)
        return v.to(w.dtype)

    def extra_repr(self) -> str:
        def show(t: Tensor) -> str:
            return f"{t.item():.4g}" if t.numel() == 1 else f"<per-channel, mean {t.mean().item():.4g}>"

        parts = [f"kind={self.kind}", f"scale={show(self.scale)}"]
        parts += [f"{k}={show(v.detach())}" for k, v in self.hyperparameter_values().items()]
        if self.learnable:
            parts.append(f"learnable=({', '.join(self.learnable)})")
        return ", ".join(parts)


def _recording() -> bool:
    """A tracer or exporter is recording the forward (torch.jit.trace, ONNX, torch.export)."""
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6
    if torch.onnx.is_in_onnx_export():
        _onnx_symbolics()
        return True
    return torch.jit.is_tracing() or bool(exporting and exporting())


@functools.cache
def _onnx_symbolics() -> None:
    """ONNX has an Asinh operator, but torch's TorchScript exporter maps no aten::asinh to it;
    the ``asinh`` kind would fail to export there. Registered on first export, once."""
    torch.onnx.register_custom_op_symbolic("aten::asinh", lambda g, x: g.op("Asinh", x), 9)


class SharedCompander(nn.Module):
    """The same ``Compander`` on a second holder of a tied tensor.

    It has no ``right_inverse`` on purpose: the tied Parameter already holds ``v`` (the first
    holder inverted it), so registering this leaves it untouched and both modules compute with
    ``f(v)`` from one Parameter and one set of hyperparameters.
    """

    def __init__(self, compander: Compander) -> None:
        super().__init__()
        self.compander = compander

    def forward(self, v: Tensor) -> Tensor:
        return self.compander(v)


# --- pickling and deepcopy -------------------------------------------------------------------
# torch refuses to pickle parametrized modules because their class is created on the fly, and
# its deepcopy shares that class between original and copy (so removing a parametrization from
# the copy deletes the property from the original too). We copy and pickle such a module as its
# original class plus its state and re-inject a class of its own, which is what registering the
# parametrizations did in the first place.


def _new_parametrized_shell(base: type[nn.Module]) -> nn.Module:
    return base.__new__(base)


def _restore_parametrized_state(module: nn.Module, state: dict) -> None:
    type(module).__setstate__(module, state)  # the original class's own restore (e.g. RNNs)
    parametrize._inject_new_class(module)
    for tensor_name in module.parametrizations:
        parametrize._inject_property(module, tensor_name)
    make_picklable(module)


def _reduce_parametrized(self: nn.Module, protocol: int):
    base = parametrize.type_before_parametrizations(self)
    state = base.__getstate__(self)  # the original class's own state (RNNs drop weak refs)
    return (_new_parametrized_shell, (base,), state, None, None, _restore_parametrized_state)


def _deepcopy_parametrized(self: nn.Module, memo: dict) -> nn.Module:
    if id(self) in memo:
        return memo[id(self)]
    replica = _new_parametrized_shell(parametrize.type_before_parametrizations(self))
    memo[id(self)] = replica
    _restore_parametrized_state(replica, copy.deepcopy(self.__dict__, memo))
    return replica


def make_picklable(module: nn.Module) -> None:
    """Let ``pickle``, ``torch.save`` and ``copy.deepcopy`` handle a parametrized module."""
    cls = type(module)
    if parametrize.is_parametrized(module) and "__reduce_ex__" not in cls.__dict__:
        cls.__reduce_ex__ = _reduce_parametrized
        cls.__deepcopy__ = _deepcopy_parametrized
