"""What `apply` and `remove` tell the training frameworks, so a framework's model keeps working.

The core library needs only torch. A framework's integration (``integrations/<name>.py``) is
loaded, by name, only when the framework itself is imported already: without it no model of
it can exist. The integrations build on the public API (`apply`, `remove`), so the library
core loads them here as plug-ins instead of importing them, and no import runs in a circle.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from torch import nn

__all__ = ["attach", "detach", "prepare"]

# framework module -> its integration, which has prepare / attach / detach
INTEGRATIONS = {"transformers": "weight_compander.integrations.transformers"}
PEFT = "weight_compander.integrations.peft"


def _loaded() -> list[ModuleType]:
    """The integrations of the frameworks imported so far."""
    return [importlib.import_module(ours) for theirs, ours in INTEGRATIONS.items() if theirs in sys.modules]


def prepare(model: nn.Module) -> None:
    """Before ``apply`` selects tensors: register the framework's layer types found in ``model``."""
    for integration in _loaded():
        integration.prepare(model)


def attach(model: nn.Module) -> None:
    """Make framework methods that would break on companded tensors companding-aware."""
    _watch_peft()
    for integration in _loaded():
        integration.attach(model)


def detach(model: nn.Module) -> None:
    """Undo ``attach`` (the model is plain again)."""
    for integration in _loaded():
        integration.detach(model)


_peft_watched = False


def _watch_peft() -> None:
    """PEFT's merge must bake companded base layers (``integrations/peft.py``), also when ``peft`` is
    imported only after ``wc.apply`` (``get_peft_model`` on a companded model): patch it on import."""
    global _peft_watched
    if _peft_watched or importlib.util.find_spec("peft") is None:
        return
    _peft_watched = True
    if "peft" in sys.modules:
        _install_peft()
        return
    try:
        import wrapt
    except ImportError:  # no post-import hook: import peft now (slow, but never a wrong merge)
        _install_peft()
        return
    wrapt.register_post_import_hook(lambda module: _install_peft(), "peft")


def _install_peft() -> None:
    importlib.import_module(PEFT).install()
