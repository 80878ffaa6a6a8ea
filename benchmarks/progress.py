"""A progress bar on stderr, drawn by hand (no dependency); silent unless stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_REDRAW_EVERY = 0.2  # seconds
_WIDTH = 30


class Progress:
    """Count work units done of `total`; `echo` prints a line above the bar without garbling it."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = ""
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0
        self._lock = threading.Lock()

    def stage(self, label: str) -> None:
        """Name the work now running."""
        with self._lock:
            self.label = label
            self._draw(force=True)

    def advance(self, units: int = 1) -> None:
        """Count `units` more done (thread-safe; redraws at most every 0.2 s)."""
        with self._lock:
            self.done = min(self.total, self.done + units)
            self._draw(force=False)

    def echo(self, line: str) -> None:
        """Print `line` to stdout, keeping the bar below it."""
        with self._lock:
            self._clear()
            print(line, flush=True)
            self._draw(force=True)

    def close(self) -> None:
        """Remove the bar."""
        with self._lock:
            self._clear()
            self._enabled = False

    def _clear(self) -> None:
        if self._enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not self._enabled or (not force and now - self._drawn < _REDRAW_EVERY):
            return
        self._drawn = now
        share = self.done / self.total
        filled = int(share * _WIDTH)
        elapsed = now - self._started
        eta = f"{elapsed / share - elapsed:4.0f} s left" if share > 0.02 else "  ? s left"
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(f"\r\x1b[K[{bar}] {share:4.0%} {elapsed:5.0f} s, {eta}  {self.label}")
        self._stream.flush()
