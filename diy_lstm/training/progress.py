"""Training progress: a one-line bar redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Mapping, TextIO


def _format(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Progress:
    """Reports `update(done, values)` calls.

    On a terminal the line `epoch 120/1000 [=====>    ] train_mse 0.0123 ...` is redrawn in
    place; in a pipe, a file or CI each update is its own line, so logs stay readable.
    """

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, width: int = 30):
        self.total = total
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.width = width
        self._drawn = False

    def update(self, done: int, values: Mapping[str, object]) -> None:
        fields = "  ".join(f"{name} {_format(value)}" for name, value in values.items())
        label = f"epoch {done:>{len(str(self.total))}}/{self.total}"
        if self.interactive:
            filled = int(self.width * done / max(self.total, 1))
            bar = "=" * max(filled - 1, 0) + (">" if filled else "") + " " * (self.width - filled)
            self.stream.write(f"\r{label} [{bar}]  {fields}\033[K")
            self._drawn = True
        else:
            self.stream.write(f"{label}  {fields}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
