"""Handlers for tests/integration/test_metrics.py, imported by `tchu-rpc worker` subprocesses by path."""

from __future__ import annotations

import os
from typing import Any

from tchu_rpc import subscribe


@subscribe("rpc.metrics.echo")
def echo(data: Any) -> int:
    """Return this worker process's pid."""
    return os.getpid()


@subscribe("rpc.metrics.fail")
def fail(data: Any) -> None:
    """Fail."""
    raise ValueError("no")


@subscribe("metrics.happened")
def happened(data: Any) -> None:
    """Take an event."""
