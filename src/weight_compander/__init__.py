"""weight-compander: weights through an odd, increasing, magnitude-limiting function.

The optimizer trains a raw tensor ``v``; the network computes with ``w = s * phi(v / s)``, which
bounds weight magnitude and pushes weights away from zero. One line puts it on a model::

    import weight_compander as wc
    wc.apply(model)                      # every Linear/Conv weight, tanh, gain 1.5, limit 2
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=5e-4), lr=0.1)
    ...
    wc.remove(model)                     # a plain PyTorch model with f(v) baked in
"""

from importlib.metadata import PackageNotFoundError, version

from .api import apply, compand, remove
from .bilevel import hyper_step
from .companded_adam import CompandedAdamW
from .coverage import Applied, Coverage, coverage
from .cpu_kernel import kernel_status
from .exceptions import CompanderWarning
from .functions import Hyperparameter, Kind, get_kind, kinds, register_kind
from .layer_types import LayerSpec, layers, register_layer
from .optim import effective_weight_decay, hyperparameters, named_hyperparameters, param_groups
from .parametrization import Compander
from .state import LAYOUT_VERSION, plain_state_dict
from .stats import StatsTable, format_stats, stats, weights

try:
    __version__ = version("weight-compander")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "LAYOUT_VERSION",
    "Applied",
    "CompandedAdamW",
    "Compander",
    "CompanderWarning",
    "Coverage",
    "Hyperparameter",
    "Kind",
    "LayerSpec",
    "StatsTable",
    "__version__",
    "apply",
    "compand",
    "coverage",
    "effective_weight_decay",
    "format_stats",
    "get_kind",
    "hyper_step",
    "hyperparameters",
    "kernel_status",
    "kinds",
    "layers",
    "named_hyperparameters",
    "param_groups",
    "plain_state_dict",
    "register_kind",
    "register_layer",
    "remove",
    "stats",
    "weights",
]
