"""Integrations with training frameworks, imported only when the framework is in use.

The core library needs only torch: ``apply`` and ``remove`` call ``attach`` / ``detach`` here,
and a framework's integration is imported only if the framework is imported already (without
it, no model of it can exist). Users import an integration for its helpers, e.g.
``from weight_compander.integrations import transformers as wc_hf``.
"""

from __future__ import annotations

import importlib.util
import sys

from torch import nn

__all__ = ["attach", "detach", "prepare"]


def prepare(model: nn.Module) -> None:
    """Before ``apply`` selects tensors: register the framework's layer types found in ``model``."""
    if "transformers" in sys.modules:
        from . import transformers

        transformers.prepare(model)


def attach(model: nn.Module) -> None:
    """Make framework methods that would break on companded tensors companding-aware."""
    _watch_peft()
    if "transformers" in sys.modules:
        from . import transformers

        transformers.attach(model)


def detach(model: nn.Module) -> None:
    """Undo ``attach`` (the model is plain again)."""
    if "transformers" in sys.modules:
        from . import transformers

        transformers.detach(model)


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
    from . import peft

    peft.install()
