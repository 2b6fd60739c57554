"""Which run folders belong to a comparison, and which plain runs share a configuration.

A comparison folder's compare.json is the comparison *as it is now* (the last `compare`
rewrites it): its variants, seeds and each variant's settings. A run folder belongs to it
iff it sits at ``VARIANT/seedN`` for a listed variant and seed and its config.json holds
the same settings. "The same" compares *resolved* `TrainConfig`s, not JSON text: both
sides are read through `TrainConfig` (missing keys take their defaults, config.json's
"meta" entry is ignored, "None means default" is filled in), and `threads` (a property of
the machine, not of the experiment) is left out. So a TrainConfig field added later with a
default does not make older runs look foreign, and they are not trained again.

Plain `train` runs have no comparison; they are grouped by configuration: `settings_key`
is a short hash of the settings that differ from the defaults, used both for the default
run-folder name and for the group name in reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError, RunFileError
from weight_compander.harness.store.runfiles import read_json

__all__ = [
    "IGNORED_KEYS", "ComparisonInfo", "config_label", "differences", "load_comparison_info",
    "settings_key",
]

IGNORED_KEYS = ("threads",)  # settings that change the machine's work, not the experiment
FIX_COMPARE_JSON = ("re-run the `compare` that made this folder to rewrite it, or delete it "
                    "(its runs then count as plain `train` runs)")


def resolved(config: TrainConfig) -> TrainConfig:
    """`config` as membership compares it: defaults filled in, machine-only keys cleared."""
    return config.resolved().replace(**{k: None for k in IGNORED_KEYS})


def differences(have: TrainConfig, want: TrainConfig) -> list[str]:
    """The settings (field names) in which two runs differ as experiments."""
    return resolved(have).diff(resolved(want))


def settings_key(config: TrainConfig) -> str:
    """8 hex digits naming the configuration without its seed (same settings, same key).

    Only the settings that differ from the defaults (for the same dataset) enter the hash,
    so a field added to TrainConfig later with a default keeps every key as it was.
    """
    mine = resolved(config).to_dict()
    ref = resolved(TrainConfig(dataset=config.dataset)).to_dict()
    changed = {k: v for k, v in mine.items() if k != "seed" and v != ref[k]}
    text = json.dumps({"dataset": config.dataset, **changed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def config_label(config: TrainConfig) -> str:
    """A readable, unique name for a plain run's configuration: dataset-model-reparam-key."""
    return f"{config.dataset}-{config.model}-{config.reparam}-{settings_key(config)}"


@dataclass
class ComparisonInfo:
    """What compare.json says about a comparison; None where an old or hand-written file is silent."""

    path: Path
    name: str | None
    baseline: str | None
    seeds: list[int] | None
    variants: dict[str, TrainConfig | None] | None  # variant -> settings (seed not set)

    def why_not_member(self, run_dir: Path, config: TrainConfig) -> str | None:
        """None if the run at `run_dir` belongs to this comparison, else the reason it does not."""
        root = self.path.parent
        try:
            rel = run_dir.relative_to(root)
        except ValueError:
            return "outside the comparison folder"
        if len(rel.parts) != 2 or not rel.parts[1].startswith("seed"):
            return "not at VARIANT/seedN, where `compare` puts runs"
        variant, folder = rel.parts
        if self.variants is not None and variant not in self.variants:
            return f"variant {variant} is not in the comparison"
        if folder != f"seed{config.seed}":
            return f"its config.json says seed {config.seed}"
        if self.seeds is not None and config.seed not in self.seeds:
            return f"seed {config.seed} is not in the comparison's seeds {self.seeds}"
        want = (self.variants or {}).get(variant)
        if want is not None:
            changed = differences(config, want.replace(seed=config.seed))
            if changed:
                return f"made with other settings ({', '.join(changed)})"
        return None

    def differs_from(self, other: ComparisonInfo) -> str | None:
        """None if both describe the same experiment (seeds, baseline, resolved variants)."""
        if sorted(self.seeds or []) != sorted(other.seeds or []):
            return f"seeds {self.seeds} there, {other.seeds} here"
        if self.baseline != other.baseline:
            return f"baseline {self.baseline} there, {other.baseline} here"
        mine, theirs = self.variants or {}, other.variants or {}
        if set(mine) != set(theirs):
            return f"variants {', '.join(mine)} there, {', '.join(theirs)} here"
        for name, config in mine.items():
            if config is None or theirs[name] is None:
                continue
            changed = differences(config, theirs[name])
            if changed:
                return f"variant {name} differs in {', '.join(changed)}"
        return None


def comparison_info(data: dict[str, Any], path: Path) -> ComparisonInfo:
    """Read the resolved comparison (compare.json's layout) into a ComparisonInfo."""
    if not isinstance(data, dict):
        raise RunFileError(f"{path} does not describe a comparison (a JSON object); {FIX_COMPARE_JSON}")
    variants: dict[str, TrainConfig | None] | None = None
    if isinstance(data.get("variants"), dict):
        variants = {}
        for name, entry in data["variants"].items():
            config = entry.get("config") if isinstance(entry, dict) else None
            try:
                variants[name] = (None if config is None else
                                  TrainConfig.from_dict(config, source=f"{path} variant {name}"))
            except ConfigError as err:
                raise RunFileError(f"{err}; {FIX_COMPARE_JSON}") from None
    seeds = data.get("seeds")
    return ComparisonInfo(path, data.get("name"), data.get("baseline"),
                          list(seeds) if isinstance(seeds, list) else None, variants)


def load_comparison_info(root: str | Path) -> ComparisonInfo | None:
    """The comparison of folder `root` (from its compare.json), or None if it has none."""
    path = Path(root) / "compare.json"
    if not path.exists():
        return None
    return comparison_info(read_json(path, FIX_COMPARE_JSON), path)
