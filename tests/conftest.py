"""Test-wide set-up: structlog quiet unless a test captures it; the tchu_rpc plugin gives the fixtures."""

from __future__ import annotations

import logging

import structlog

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
)
