"""A comparison file: named variants x seeds, checked into one TrainConfig per variant.

A comparison TOML names the seeds, the baseline, the settings shared by all variants
(`[defaults]`) and each variant's changes (`[variants.NAME]`)::

    name = "demo"
    seeds = [0, 1]
    baseline = "base"
    [defaults]
    dataset = "fashion-mnist"
    model = "cnn"
    [variants.base]
    [variants.wc-learn]
    reparam = "wc"
    wc_learnable = true

A top-level ``robustness = true`` (or a table of suite options, config/suite.py) evaluates
every finished run after training. Every problem is a `CompareError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weight_compander.harness.config.settings import TrainConfig, read_toml
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import CompareError, ConfigError

__all__ = ["TOP_KEYS", "Comparison", "comparison_from_dict", "load_comparison"]

TOP_KEYS = ("name", "description", "seeds", "baseline", "defaults", "variants", "robustness")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Comparison:
    """A validated comparison: one resolved TrainConfig per variant (seed set per run)."""

    name: str
    seeds: list[int]
    baseline: str
    variants: dict[str, TrainConfig]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "comparison"
    description: str = ""
    robustness: dict[str, Any] | None = None  # `robustness` suite options after training; None: off

    def config(self, variant: str, seed: int) -> TrainConfig:
        return self.variants[variant].replace(seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The resolved comparison, as written to compare.json."""
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "seeds": self.seeds, "baseline": self.baseline, "defaults": self.defaults,
            "variants": {v: {"overrides": self.overrides.get(v, {}),
                             "config": {k: x for k, x in c.to_dict().items() if k != "seed"}}
                         for v, c in self.variants.items()},
            **({"robustness": self.robustness} if self.robustness is not None else {}),
        }


def comparison_from_dict(data: dict[str, Any], *, source: str = "comparison") -> Comparison:
    """Check a parsed comparison TOML; every problem is a CompareError naming the key."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise CompareError(f"{source}: unknown key(s) {', '.join(unknown)}; valid top-level "
                           f"keys: {', '.join(TOP_KEYS)} (training settings go in [defaults] "
                           "or [variants.NAME])")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise CompareError(f"{source}: name must be a folder-safe string, got {name!r}")
    seeds = data.get("seeds")
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise CompareError(f"{source}: seeds must be a non-empty list of integers >= 0, "
                           f"e.g. seeds = [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise CompareError(f"{source}: seeds {seeds} repeat a seed; list each seed once")
    defaults = data.get("defaults", {})
    variants = data.get("variants")
    if not isinstance(defaults, dict):
        raise CompareError(f"{source}: [defaults] must be a table of training settings")
    if not isinstance(variants, dict) or not variants:
        raise CompareError(f"{source}: no variants; add at least one [variants.NAME] table "
                           "(an empty table runs the defaults)")
    for vname, overrides in variants.items():
        if not VARIANT_NAME.match(vname):
            raise CompareError(f"{source}: variant name {vname!r} must be folder-safe "
                               "(letters, digits, _ . + -)")
        if not isinstance(overrides, dict):
            raise CompareError(f"{source}: variants.{vname} must be a table, got {overrides!r}")
    fields = set(TrainConfig.__dataclass_fields__)
    for where, table in [("[defaults]", defaults), *((f"[variants.{k}]", v)
                                                     for k, v in variants.items())]:
        unknown = sorted(set(table) - fields)
        if unknown:
            raise CompareError(f"{source} {where}: unknown key(s) {', '.join(unknown)}; valid "
                               f"keys are the TrainConfig fields: {', '.join(sorted(fields))}")
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise CompareError(f"{source}: baseline {baseline!r} is not a variant; variants: "
                           f"{', '.join(variants)}")
    configs: dict[str, TrainConfig] = {}
    for vname, overrides in variants.items():
        settings = {**defaults, **overrides}
        if "seed" in settings:
            raise CompareError(f"{source}: 'seed' is set by the top-level seeds list; remove it "
                               f"from {'[defaults]' if 'seed' in defaults else vname}")
        try:
            configs[vname] = TrainConfig.from_dict(settings, source=f"{source} [variants.{vname}]")
        except ConfigError as err:
            msg = str(err)
            if not msg.startswith(source):
                msg = f"{source} [variants.{vname}]: {msg}"
            raise CompareError(msg) from None
    return Comparison(name, list(seeds), baseline, configs, dict(variants), dict(defaults),
                      source, str(data.get("description", "")), _robustness_options(data, source))


def _robustness_options(data: dict[str, Any], source: str) -> dict[str, Any] | None:
    """``robustness = true`` (the default suite) or a table of suite options; checked now."""
    value = data.get("robustness", False)
    if value is False:
        return None
    if value is not True and not isinstance(value, dict):
        raise CompareError(f"{source}: robustness must be true, false or a table of suite options, "
                           f"got {value!r}")
    options = {} if value is True else dict(value)
    try:
        Suite.from_options(options, source=f"{source} [robustness]")
    except ConfigError as err:
        raise CompareError(str(err)) from None
    return options


def load_comparison(path: str | Path) -> Comparison:
    """Read and check a comparison TOML file."""
    return comparison_from_dict(read_toml(path, CompareError, "comparison file"), source=str(path))
