"""One training run's settings: every default in one place, checked by name and type.

A `TrainConfig` comes from Python, a TOML file (`tomllib`), command-line flags, or a
run folder's ``config.json``; each path goes through the same checks, so an unknown
key or a wrong type is an error that names the key instead of a silent fallback.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import weight_compander as wc
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.ingredients.data import DATASETS
from weight_compander.harness.ingredients.models import MODELS
from weight_compander.harness.ingredients.peers import PEERS

__all__ = [
    "DEFAULT_VAL_SIZE",
    "ConfigError",
    "TrainConfig",
    "load_config",
    "parse_value",
]

# Validation images carved from the training set when `val_size` is None (data.DATASETS).
DEFAULT_VAL_SIZE: dict[str, int] = {name: spec.val_size for name, spec in DATASETS.items()}
REPARAMS = ("none", "wc", *PEERS)

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": tuple(DATASETS),
    "optimizer": ("sgd", "adamw", "adamw-companded"),
    "schedule": ("cosine", "onecycle", "constant", "multistep"),
    "decay_on": ("raw", "effective"),
    "reparam": REPARAMS,
    "wc_learn": ("train", "validation"),
    "wc_hyper_loss": ("plain", "train"),
    "label_noise_kind": ("symmetric", "pairflip"),
}

# Validation-driven learning (wc_learn = "validation"): Adam on the hyperparameters, this
# learning rate unless wc_hyper_lr says otherwise.
BILEVEL_HYPER_LR = 1e-2


def _field(default: Any, help: str) -> Any:
    """A field with an immutable default and its help text (``weight-compander train --help``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of one training run (TOML keys and ``--flags`` are these field names)."""

    # -- data --
    dataset: str = _field("digits", " | ".join(DATASETS))
    data_dir: str | None = _field(None, "folder with the data files (None: the dataset's default)")
    train_subset: int | None = _field(None, "train on only this many images (small-data regime)")
    val_size: int | None = _field(
        None, "validation images carved from the training set (None: "
        + ", ".join(f"{n} {k}" for k, n in DEFAULT_VAL_SIZE.items()) + ")"
    )
    label_noise: float = _field(
        0.0, "share of training and validation labels replaced by wrong ones (test labels stay clean)"
    )
    label_noise_kind: str = _field(
        "symmetric", "symmetric (a random other class) | pairflip (class c -> c+1)"
    )
    # -- model --
    model: str = _field("mlp", " | ".join(MODELS) + " (or one added with models.register_model)")
    dropout: float = _field(0.0, "dropout probability in the model's head")
    # -- optimization --
    epochs: int = _field(10, "passes over the training set")
    batch_size: int = _field(128, "training batch size")
    optimizer: str = _field(
        "sgd", "sgd (SGD with Nesterov momentum) | adamw | adamw-companded (AdamW whose moments follow "
        "dL/dw, a companded tensor's update multiplied by dw/dv: Powerprop's modification)"
    )
    lr: float = _field(0.05, "peak learning rate")
    momentum: float = _field(0.9, "SGD momentum (AdamW: beta1)")
    nesterov: bool = _field(True, "SGD: Nesterov momentum (false: the classic heavy-ball momentum)")
    schedule: str = _field("cosine", "per-step learning-rate schedule: cosine|onecycle|constant|multistep")
    lr_milestones: list[float] = field(
        default_factory=lambda: [0.45, 0.68],
        metadata={"help": "multistep: fractions of training after which lr is multiplied by lr_factor "
                          "(default: the paper's epochs 90 and 136 of 200)"},
    )
    lr_factor: float = _field(0.1, "multistep: the factor applied at each milestone")
    weight_decay: float = _field(5e-4, "decay of weights with dim >= 2 (not biases/norms/WC hyper)")
    decay_on: str = _field(
        "raw", "where weight decay acts on companded tensors: raw (the trained v) | effective "
        "(weight_decay/2 * ||f(v)||^2 in the loss, the paper's placement for fixed hyperparameters)"
    )
    label_smoothing: float = _field(0.0, "label smoothing of the training loss")
    augment: bool = _field(False, "batched data augmentation (crop/flip, shift for 1-D)")
    mixup_alpha: float = _field(0.0, "mixup Beta(alpha, alpha); 0 turns mixup off")
    # -- reparameterization (one per run) --
    reparam: str = _field("none", " | ".join(REPARAMS))
    wc_kind: str = _field("tanh", f"compander kind ({' | '.join(wc.kinds())}, or one registered later)")
    wc_learnable: bool = _field(False, "learn the compander hyperparameters")
    wc_scale: str | float = _field(
        "std", "units of the hyperparameters: std (each tensor's std) | channel | a positive number "
        "(1.0: absolute units, as the paper's arctan)"
    )
    wc_share: bool = _field(
        False, "one set of learnable hyperparameters shared by all companded tensors (the paper's "
        "coarse version) instead of one per tensor (fine)"
    )
    wc_hyper: dict[str, float] = field(
        default_factory=dict, metadata={"help": "compander hyperparameters, e.g. gain=2,limit=3"}
    )
    wc_layers: str | list[str] = field(
        default="default",
        metadata={"help": "'default' (Linear/Conv weights) or comma-separated tensor/module names"},
    )
    wc_per_channel: bool = _field(False, "one set of hyperparameters per output channel")
    wc_hyper_lr: float | None = _field(
        None, "learning rate of WC hyperparameters (None: lr; with wc_learn=validation: 0.01)"
    )
    wc_learn_only: list[str] | None = field(
        default=None, metadata={"help": "learn only these WC hyperparameters, e.g. limit"}
    )
    wc_learn: str = _field(
        "train", "what learnable WC hyperparameters follow: train (the training loss) | validation "
        "(held-out batches, first-order bilevel)"
    )
    wc_hyper_every: int = _field(1, "with wc_learn=validation: one hyperparameter step per N steps")
    wc_hyper_loss: str = _field(
        "plain", "with wc_learn=validation: the loss on validation batches: plain (cross-entropy) | "
        "train (the training loss, with its label smoothing)"
    )
    # -- run --
    seed: int = _field(0, "seed of init, data order, augmentation and dropout")
    threads: int | None = _field(None, "torch CPU threads (None: torch's default)")
    eval_batch_size: int = _field(1024, "batch size for validation and test")
    # -- peers of the study (issue 20) --
    kure: float = _field(
        0.0, "KURE peer (Shkolnik et al. 2020): add kure * mean over Linear/Conv layers of "
        "(kurtosis(w) - 1.8)^2 to the training loss; 0 turns it off"
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), hints[f.name]))
        _check_values(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from plain data; unknown keys are an error naming them and `source`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of `to_json`; a ``meta`` entry (run-folder config.json) is ignored."""
        data = json.loads(text)
        data.pop("meta", None)
        return cls.from_dict(data, source="config.json")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able copy of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> TrainConfig:
        """A checked copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def resolved(self) -> TrainConfig:
        """The config with every "None means default" filled in, as a run records it."""
        if self.val_size is None:
            return self.replace(val_size=DEFAULT_VAL_SIZE[self.dataset])
        return self

    def diff(self, other: TrainConfig) -> list[str]:
        """Names of the fields whose values differ from `other`."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b[k]]


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the TOML file's keys, then `overrides` (command-line flags win)."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        data = read_toml(path, ConfigError, "config file")
    data.update(overrides or {})
    return TrainConfig.from_dict(data, source=source)


def read_toml(path: str | Path, error: type[ValueError], what: str) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file raises `error` naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; pass the path of a TOML file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at position "
                    f"{err.start}); TOML files are UTF-8: save it as UTF-8 (e.g. `iconv -f "
                    "latin1 -t utf-8`)") from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise error(f"cannot read {what} {path} ({err.strerror or err})") from None


# ---------------------------------------------------------------- type checks


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return tp.__name__


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """`value` converted to `tp` (int -> float only), or a ConfigError naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    ok, out = True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                pass
        ok = False
    elif tp is type(None):
        ok = value is None
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        out = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        if ok:
            out = {k: _check_type(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    elif origin is list:
        ok = isinstance(value, list)
        if ok:
            out = [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    else:  # pragma: no cover - a new field type needs a branch here
        raise TypeError(f"no type check for {key}: {tp}")
    if not ok:
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        )
    return out


def _check_values(c: TrainConfig) -> None:
    """Ranges and choices; each message names the key and says what is allowed."""
    for key, choices in CHOICES.items():
        if getattr(c, key) not in choices:
            raise ConfigError(f"{key}: {getattr(c, key)!r} is not one of {', '.join(choices)}")
    for key in ("epochs", "batch_size", "eval_batch_size", "train_subset", "val_size", "threads",
                "wc_hyper_every"):
        value = getattr(c, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    if c.seed < 0:
        raise ConfigError(f"seed: must be >= 0, got {c.seed}")
    for key in ("lr", "wc_hyper_lr"):
        value = getattr(c, key)
        if value is not None and not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    for key in ("weight_decay", "mixup_alpha"):
        if not getattr(c, key) >= 0:
            raise ConfigError(f"{key}: must be >= 0, got {getattr(c, key)}")
    for key in ("dropout", "label_smoothing", "momentum", "label_noise"):
        if not 0 <= getattr(c, key) < 1:
            raise ConfigError(f"{key}: must be in [0, 1), got {getattr(c, key)}")
    if isinstance(c.wc_layers, str) and c.wc_layers != "default":
        raise ConfigError(
            f"wc_layers: {c.wc_layers!r} must be 'default' or a list of tensor/module names"
        )
    learns = c.reparam == "wc" and c.wc_learnable
    if c.wc_learn == "validation" and not learns:
        raise ConfigError("wc_learn: 'validation' needs reparam = 'wc' and wc_learnable = true")
    if c.wc_hyper_loss != "plain" and c.wc_learn != "validation":
        raise ConfigError("wc_hyper_loss: only applies with wc_learn = 'validation'")
    if c.wc_learn_only is not None and not (learns and c.wc_learn_only):
        raise ConfigError("wc_learn_only: needs reparam = 'wc', wc_learnable = true and a non-empty list")
    _check_paper_options(c)
    if isinstance(c.wc_layers, list) and not c.wc_layers:
        raise ConfigError("wc_layers: the list is empty; use 'default' or name the layers")
    if not c.kure >= 0:
        raise ConfigError(f"kure: must be >= 0 (0: off), got {c.kure}")


def _check_paper_options(c: TrainConfig) -> None:
    """The options of the paper's recipe: absolute scale, shared hyperparameters, decay placement."""
    if isinstance(c.wc_scale, str) and c.wc_scale not in ("std", "channel"):
        raise ConfigError(f"wc_scale: {c.wc_scale!r} is not one of std, channel, or a positive number")
    if isinstance(c.wc_scale, float) and not c.wc_scale > 0:
        raise ConfigError(f"wc_scale: must be > 0, got {c.wc_scale}")
    if c.wc_share and not (c.reparam == "wc" and c.wc_learnable and not c.wc_per_channel):
        raise ConfigError("wc_share: needs reparam = 'wc', wc_learnable = true and wc_per_channel = false")
    if c.decay_on == "effective" and c.reparam != "wc":
        raise ConfigError(
            "decay_on: 'effective' needs reparam = 'wc' (without it, raw and effective are one)"
        )
    if c.optimizer == "adamw-companded" and c.reparam != "wc":
        raise ConfigError("optimizer: 'adamw-companded' needs reparam = 'wc'; use adamw otherwise")
    if not 0 < c.lr_factor <= 1:
        raise ConfigError(f"lr_factor: must be in (0, 1], got {c.lr_factor}")
    if c.schedule == "multistep" and not c.lr_milestones:
        raise ConfigError("lr_milestones: multistep needs at least one milestone, e.g. [0.45, 0.68]")
    if any(not 0 < m < 1 for m in c.lr_milestones) or c.lr_milestones != sorted(set(c.lr_milestones)):
        raise ConfigError(
            f"lr_milestones: must be increasing fractions of training in (0, 1); got {c.lr_milestones}"
        )


# ---------------------------------------------------------------- command-line values


def parse_value(key: str, text: str) -> Any:
    """Parse one ``--flag`` value for field `key` (the type check follows in TrainConfig).

    None: ``none``/``null``; wc_hyper: ``gain=2,limit=3``; wc_layers: ``default`` or
    ``fc1.weight,fc2``.
    """
    tp = typing.get_type_hints(TrainConfig)[key]
    args = typing.get_args(tp)
    if type(None) in args and text.lower() in ("none", "null"):
        return None
    if key == "wc_layers":
        return text if text == "default" else [s.strip() for s in text.split(",") if s.strip()]
    if key == "wc_learn_only":
        return [s.strip() for s in text.split(",") if s.strip()]
    if key == "lr_milestones":
        return [_number(key, s) for s in text.split(",") if s.strip()]
    if key == "wc_scale":
        return text if text in ("std", "channel") else _number(key, text)
    if key == "wc_hyper":
        out: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"wc_hyper: {item!r} is not NAME=VALUE (e.g. gain=2,limit=3)")
            out[name.strip()] = _number(key, value)
        return out
    base = next((a for a in args if a is not type(None)), tp)
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if base is float:
        return _number(key, text)
    return text


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {text!r}") from None
