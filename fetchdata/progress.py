"""A one-line progress bar on stderr (only drawn on a terminal)."""

from __future__ import annotations

import shutil
import sys
import time


class Bar:
    def __init__(self, label: str, total: int) -> None:
        self.label = label if len(label) <= 30 else label[:27] + "..."
        self.total = max(total, 1)
        self.t0 = time.monotonic()
        self.last = 0.0
        self.pos = 0

    def update(self, position: int) -> None:
        self.pos = position
        now = time.monotonic()
        if now - self.last < 0.1 and position < self.total:
            return
        self.last = now
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 60))
        done = int(width * min(position, self.total) / self.total)
        rate = position / max(now - self.t0, 1e-6) / (1 << 20)
        sys.stderr.write(
            f"\r{self.label:<30} [{'#' * done}{' ' * (width - done)}] "
            f"{100 * position / self.total:5.1f}% {rate:7.1f} MB/s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r" + " " * (shutil.get_terminal_size((80, 20)).columns - 1) + "\r")
        sys.stderr.flush()
