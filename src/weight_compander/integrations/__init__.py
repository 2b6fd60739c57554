"""Integrations with training frameworks, imported only when the framework is in use.

The core library needs only torch: ``apply`` and ``remove`` call ``attach`` / ``detach`` here,
and a framework's integration is imported only if the framework is imported already (without
it, no model of it can exist). Users import an integration for its helpers, e.g.
``from weight_compander.integrations import transformers as wc_hf``.
"""

from __future__ import annotations

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
    if "transformers" in sys.modules:
        from . import transformers

        transformers.attach(model)


def detach(model: nn.Module) -> None:
    """Undo ``attach`` (the model is plain again)."""
    if "transformers" in sys.modules:
        from . import transformers

        transformers.detach(model)
