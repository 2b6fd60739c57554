"""Console output of a run: a tqdm bar on a terminal, plain lines anywhere else.

Logs that end up in files or CI consoles must not contain carriage returns, so bars are
only drawn when stdout is a terminal and ``CI`` is unset. Either way each epoch prints one
fixed-width table row, which reads better than a wall of log lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["NullBar", "Progress", "resolve_mode"]

# (metrics key, header, width, format); one row per epoch.
COLUMNS = (
    ("epoch", "epoch", 5, "{:d}"),
    ("step", "step", 7, "{:d}"),
    ("train_loss", "train_loss", 10, "{:.4f}"),
    ("train_acc", "train_acc", 9, "{:.4f}"),
    ("val_loss", "val_loss", 8, "{:.4f}"),
    ("val_acc", "val_acc", 7, "{:.4f}"),
    ("lr", "lr", 9, "{:.3e}"),
    ("time", "time_s", 7, "{:.2f}"),
)


def resolve_mode(progress: bool | str = True, stream: TextIO | None = None) -> str:
    """Map the user's wish to "bars", "plain" or "quiet".

    True/"auto": bars if `stream` is a terminal and ``CI`` is unset, else plain lines;
    False/"plain": plain lines (``--no-progress``); "quiet": nothing (parallel workers).
    """
    if progress in ("quiet", None):
        return "quiet"
    if progress is False or progress == "plain":
        return "plain"
    if progress is True or progress == "auto":
        stream = stream or sys.stdout
        tty = hasattr(stream, "isatty") and stream.isatty()
        return "bars" if tty and not os.environ.get("CI") else "plain"
    raise ValueError(f"progress must be True, False, 'auto', 'plain' or 'quiet', got {progress!r}")


class NullBar:
    """Stands in for a tqdm bar when none is drawn; `update` is as cheap as a call gets."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Bars per epoch (mode "bars"), a table row per epoch (bars and plain), or silence."""

    def __init__(self, progress: bool | str = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.mode = resolve_mode(progress, self.stream)
        self._header_done = False

    def line(self, text: str) -> None:
        """Print a line (above any bar)."""
        if self.mode == "quiet":
            return
        if self.mode == "bars":
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def bar(self, epoch: int, epochs: int, steps: int) -> Any:
        """A bar over one epoch's steps; call ``update(1)`` per step and ``close()`` after."""
        if self.mode != "bars":
            return NullBar()
        from tqdm.auto import tqdm

        return tqdm(
            total=steps, desc=f"epoch {epoch}/{epochs}", file=self.stream,
            leave=False, dynamic_ncols=True, unit="step",
        )

    def row(self, metrics: Mapping[str, Any]) -> None:
        """One fixed-width table row; the header comes before the first row."""
        if not self._header_done:
            self.line("  ".join(f"{head:>{w}}" for _, head, w, _ in COLUMNS))
            self._header_done = True
        cells = []
        for key, _, width, fmt in COLUMNS:
            value = metrics.get(key)
            cells.append(f"{'-' if value is None else fmt.format(value):>{width}}")
        self.line("  ".join(cells))
