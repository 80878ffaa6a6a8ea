"""Structlog helpers: the library's logger, URL masking, and an opt-in `configure` for programs.

Importing tchu_rpc never configures logging; `configure()` is for the CLI and for programs that have
no structlog set-up of their own.
"""

from __future__ import annotations

import logging
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

logger: Any = structlog.get_logger("tchu_rpc")


def debug(event: str, **fields: Any) -> None:
    """Log a per-message debug event, unless structlog was never configured.

    Unconfigured structlog prints every level, so a program that has not set up logging would
    otherwise get a line per message.
    """
    if structlog.is_configured():
        logger.debug(event, **fields)


def mask_url(url: str) -> str:
    """Return the URL with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def configure(level: str = "info", json: bool = False) -> None:
    """Send structlog events at `level` and above to stderr, as key=value or JSON lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
