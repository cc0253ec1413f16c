"""A one-line progress bar on stderr for long commands, with no dependency.

    retrying  [############..................]  4,000/10,000  40%  2.1 s

Drawn on a terminal only (or when forced with --progress), at most ten times a second, so
output piped to a file or parsed as --json stays clean; stdout is never touched.
"""

import sys
import time
from functools import partial
from typing import TextIO

from django.core.management.base import OutputWrapper

WIDTH = 30
MIN_INTERVAL = 0.1


class ProgressBar:
    """`bar.update(done)` as work goes on, `bar.finish()` at the end (also on error)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        stream = stream or sys.stderr
        # A command's self.stderr (OutputWrapper) would end every write with a newline.
        self._write = partial(stream.write, ending="") if isinstance(stream, OutputWrapper) else stream.write
        self._flush = stream.flush
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._done = 0

    def __enter__(self) -> "ProgressBar":
        self.update(0, force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def render(self, done: int) -> str:
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        filled = round(WIDTH * fraction)
        elapsed = time.monotonic() - self.started
        return (
            f"{self.label}  [{'#' * filled}{'.' * (WIDTH - filled)}]  {done:,}/{self.total:,}  "
            f"{fraction:4.0%}  {elapsed:.1f} s"
        )

    def update(self, done: int, force: bool = False) -> None:
        self._done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self._drawn_at >= MIN_INTERVAL:
            self._drawn_at = now
            self._write("\r" + self.render(done))
            self._flush()

    def finish(self) -> None:
        if self.enabled:
            self._write("\r" + self.render(self._done) + "\n")
            self._flush()
            self.enabled = False
