"""What the harness's commands (`python -m benchmarks`, `benchmarks.cluster`) share on the command line."""

from __future__ import annotations

from types import FrameType


def interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that `finally` blocks stop servers and nodes."""
    raise KeyboardInterrupt


def ints(text: str) -> list[int]:
    """Parse a comma-separated list of integers (`1,2,4`)."""
    return [int(part) for part in text.split(",") if part]


def names(text: str) -> list[str]:
    """Parse a comma-separated list of names."""
    return [part.strip() for part in text.split(",") if part.strip()]
