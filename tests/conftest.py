"""Test-wide set-up: the tchu_rpc plugin gives the fixtures; logs go to `logging` (pytest shows them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a test's in-process `tchu-rpc` command (`log.configure`) did to the loggers."""
    saved = [
        (log, log.level, list(log.handlers)) for log in (logging.getLogger(), logging.getLogger("tchu_rpc"))
    ]
    yield
    for log, level, handlers in saved:
        log.setLevel(level)
        log.handlers[:] = handlers
