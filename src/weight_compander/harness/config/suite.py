"""What `robustness` evaluates: the suite's settings, checked, with a fingerprint.

The families, corruptions, severities, sparsities, bits and noise levels a run is evaluated
with; CLI flags and a comparison's ``robustness = {...}`` table use these names. An entry in
a run's robustness.json is current when its suite version and fingerprint (a hash of every
setting and `SUITE_VERSION`) match (evaluate/robustness.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from weight_compander.harness.errors import RobustnessError
from weight_compander.harness.ingredients import corruptions, perturb

__all__ = ["FAMILIES", "SUITE_VERSION", "WEIGHTS", "Suite"]

SUITE_VERSION = 1  # bump when a corruption or perturbation changes how it computes
FAMILIES = ("corruption", "prune-global", "prune-layer", "quant-maxabs", "quant-mse", "weight-noise")
WEIGHTS = ("final", "best_val")


@dataclass(frozen=True)
class Suite:
    """What `robustness` evaluates; every default in one place (CLI flags and a compare
    config's ``robustness = {...}`` table use these names)."""

    families: tuple[str, ...] = FAMILIES
    corruptions: tuple[str, ...] | None = None  # None: every corruption that fits the data
    severities: tuple[int, ...] = (1, 2, 3)
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
    bits: tuple[int, ...] = (8, 4, 3, 2)
    weight_noise: tuple[float, ...] = (0.1, 0.25, 0.5)  # σ as a fraction of each tensor's std
    dense_ends: bool = False  # pruning keeps the first and last Linear/Conv layer dense
    images: int | str | None = 2000  # test images per condition (a fixed subset); None or "all": all
    weights: str = "final"  # final | best_val

    def __post_init__(self) -> None:
        for name in ("families", "corruptions", "severities", "sparsities", "bits", "weight_noise"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise RobustnessError(f"unknown family {', '.join(map(repr, bad)) or '(none given)'}; "
                                  f"valid: {', '.join(FAMILIES)}")
        for name in self.corruptions or ():
            corruptions.get(name)  # raises, naming it and the valid ones
        for s in self.severities:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 3:
                raise RobustnessError(f"severities: {s!r} is not one of 1, 2, 3")
        for s in self.sparsities:
            if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < 1:
                raise RobustnessError(f"sparsities: {s!r} is not a fraction in (0, 1)")
        for b in self.bits:
            if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= perturb.MAX_BITS:
                raise RobustnessError(f"bits: {b!r} is not an integer in 2..{perturb.MAX_BITS}")
        for s in self.weight_noise:
            if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
                raise RobustnessError(f"weight_noise: {s!r} is not a fraction > 0 of a tensor's std")
        if self.images == "all":  # TOML has no None: a comparison file says images = "all"
            object.__setattr__(self, "images", None)
        if self.images is not None and (isinstance(self.images, bool) or not isinstance(self.images, int)
                                        or self.images < 1):
            raise RobustnessError(f"images: must be an integer >= 1 or \"all\" (the whole test set), "
                                  f"got {self.images!r}")
        if self.weights not in WEIGHTS:
            raise RobustnessError(f"weights: {self.weights!r} is not one of {', '.join(WEIGHTS)}")

    @classmethod
    def from_options(cls, options: dict[str, Any], *, source: str = "robustness") -> Suite:
        """From plain data (a TOML table); unknown keys are an error naming them."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise RobustnessError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**options)

    def settings(self) -> dict[str, Any]:
        """Every setting but `weights` (which picks the entry), as JSON-able data."""
        out = dataclasses.asdict(self)
        out.pop("weights")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def fingerprint(self) -> str:
        text = json.dumps({"version": SUITE_VERSION, **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def conditions(self, ndim: int) -> list[tuple[str, str, float]]:
        """(family, condition, level) for data with `ndim` spatial dims, in evaluation order."""
        out: list[tuple[str, str, float]] = []
        for family in self.families:
            if family == "corruption":
                names = [c for c in (self.corruptions or corruptions.corruption_names(ndim))
                         if corruptions.CORRUPTIONS[c].ndim == ndim]
                out += [(family, c, s) for c in names for s in self.severities]
            elif family.startswith("prune"):
                out += [(family, "sparsity", s) for s in self.sparsities]
            elif family.startswith("quant"):
                out += [(family, "bits", b) for b in self.bits]
            else:
                out += [(family, "sigma", s) for s in self.weight_noise]
        return out

