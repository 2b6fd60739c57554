"""Look inside a companded model: per-tensor statistics and the weights themselves."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import defaults
from .selection import Entry, companded_entries

__all__ = ["StatsTable", "format_stats", "stats", "weights"]


class StatsTable(list):
    """A list of per-tensor dicts that prints as a table."""

    def __str__(self) -> str:
        return format_stats(self)


def _raw(entry: Entry) -> Tensor:
    """The compander's input ``v``: the original, or what earlier parametrizations made of it."""
    plist = entry.parametrizations
    if plist.is_tensor:
        x = plist.original
        earlier = list(plist)[: entry.index]
    else:
        x = plist[0](*(getattr(plist, f"original{i}") for i in range(plist.ntensors)))
        earlier = list(plist)[1 : entry.index]
    for p in earlier:
        x = p(x)
    return x


def _number(t: Tensor) -> float:
    return float(t.float().mean())


def stats(model: nn.Module) -> StatsTable:
    """Per companded tensor: kind, hyperparameters, ``s``, and how the weights are spread.

    Keys: ``name``, ``kind``, ``learnable`` (names of learned hyperparameters),
    ``hyperparameters`` ({name: value}, the mean over channels if per channel), ``scale``,
    ``near_zero`` (share of effective weights with ``|w| < 0.1 s``), ``max_abs`` (max ``|w|/s``)
    and ``raw_near_zero`` / ``raw_max_abs``, the same for the raw tensor ``v``.
    """
    rows = StatsTable()
    with torch.no_grad():
        for entry in companded_entries(model):
            if entry.shared:
                continue
            c = entry.compander
            w = getattr(entry.module, entry.tensor_name).float() / c.scale.float()
            v = _raw(entry).float() / c.scale.float()
            rows.append(
                {
                    "name": entry.name,
                    "kind": c.kind,
                    "learnable": list(c.learnable),
                    "hyperparameters": {k: _number(h) for k, h in c.hyperparameter_values().items()},
                    "scale": _number(c.scale),
                    "near_zero": float((w.abs() < defaults.NEAR_ZERO).float().mean()),
                    "max_abs": float(w.abs().max()),
                    "raw_near_zero": float((v.abs() < defaults.NEAR_ZERO).float().mean()),
                    "raw_max_abs": float(v.abs().max()),
                }
            )
    return rows


def format_stats(rows: list[dict]) -> str:
    """A fixed-width table of ``stats`` rows."""
    header = ("tensor", "kind", "hyperparameters", "learned", "s", "w≈0", "max|w|/s", "v≈0", "max|v|/s")
    lines = []
    for r in rows:
        hyper = " ".join(f"{k}={v:.3g}" for k, v in r["hyperparameters"].items()) or "-"
        lines.append(
            (
                r["name"],
                r["kind"],
                hyper,
                ",".join(r["learnable"]) or "-",
                f"{r['scale']:.4g}",
                f"{r['near_zero']:.1%}",
                f"{r['max_abs']:.3g}",
                f"{r['raw_near_zero']:.1%}",
                f"{r['raw_max_abs']:.3g}",
            )
        )
    if not lines:
        return "(nothing companded)"
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 4 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [header, *lines])


def weights(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """Name -> (effective ``w``, raw ``v``) of every companded tensor, detached copies."""
    with torch.no_grad():
        return {
            e.name: (getattr(e.module, e.tensor_name).detach().clone(), _raw(e).detach().clone())
            for e in companded_entries(model)
            if not e.shared
        }
