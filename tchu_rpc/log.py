"""Structlog helpers: the library's logger, URL masking, and an opt-in `configure` for programs.

Importing tchu_rpc never configures logging; `configure()` is for the CLI and for programs that have
no structlog set-up of their own.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

logger: Any = structlog.get_logger("tchu_rpc")
#: A `;` that starts another URL (not one inside a password).
_FAILOVER_SPLIT = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def debugging() -> bool:
    """Tell whether debug events are logged, so that a hot path can skip building one."""
    if not structlog.is_configured():
        return False
    bound = logger.bind()
    if not hasattr(type(bound), "is_enabled_for"):  # not a filtering bound logger: it may log
        return True
    return bool(bound.is_enabled_for(logging.DEBUG))


def debug(event: str, **fields: Any) -> None:
    """Log a per-message debug event, unless structlog was never configured.

    Unconfigured structlog prints every level, so a program that has not set up logging would
    otherwise get a line per message.
    """
    if structlog.is_configured():
        logger.debug(event, **fields)


def mask_url(url: str) -> str:
    """Return the URL (or kombu's `;`-separated failover URLs) with every password replaced by `***`."""
    return ";".join(_mask_one(part) for part in _FAILOVER_SPLIT.split(url))


def _mask_one(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


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
