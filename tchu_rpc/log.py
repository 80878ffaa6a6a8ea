"""The library's loggers (structlog-style events on standard `logging`), URL masking, and `configure`.

Each module logs through `get_logger(__name__)`: events go to the standard `logging` logger of that
name (under `tchu_rpc`), so the application's handlers, levels and formats apply. Importing tchu_rpc
never configures `logging` or structlog; `configure()` is for the worker process of the CLI.

A record's message is the event dict, as structlog's `ProcessorFormatter.wrap_for_formatter` leaves
it: a `ProcessorFormatter` renders it with all its keys, and a plain formatter prints it as
`event key=value ...`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

#: A `;` that starts another URL (not one inside a password).
_FAILOVER_SPLIT = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_ROOT = "tchu_rpc"
LOG_FORMATS = ("console", "json")


class Event(dict[str, Any]):
    """A record's message: structlog's event dict, printed as `event key=value ...` by plain formatters."""

    def __str__(self) -> str:
        fields = (f"{key}={_value(value)}" for key, value in self.items() if key not in ("event", "exc_info"))
        return " ".join((str(self.get("event", "")), *fields))


def _value(value: object) -> str:
    text = str(value)
    return repr(value) if isinstance(value, str) and (not text or " " in text or "=" in text) else text


class Logger:
    """A module's logger: `logger.warning("event_name", key=value)` on the `logging` logger `name`."""

    __slots__ = ("_std",)

    def __init__(self, name: str) -> None:
        self._std = logging.getLogger(name)

    def enabled(self, level: int = logging.DEBUG) -> bool:
        """Tell whether `level` is logged, so that a hot path can skip building an event."""
        return self._std.isEnabledFor(level)

    def debug(self, event: str, **fields: Any) -> None:
        """Log `event` at DEBUG."""
        if self._std.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log `event` at INFO."""
        if self._std.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log `event` at WARNING."""
        if self._std.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR."""
        if self._std.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR with the exception being handled."""
        if self._std.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, "error", event, {**fields, "exc_info": sys.exc_info()})

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        message = Event(event=event, **fields)
        # `_logger` and `_name` are what structlog's ProcessorFormatter reads from its own records.
        extra = {"_logger": self._std, "_name": method}
        # stacklevel 3: the record names the module that logged, not this class.
        self._std.log(level, message, exc_info=fields.get("exc_info"), extra=extra, stacklevel=3)


def get_logger(name: str) -> Logger:
    """Return the logger of module `name` (a `tchu_rpc.*` name)."""
    return Logger(name)


logger = get_logger(_ROOT)


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


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How a worker process logs: tchu_rpc's `level` (None: as `logging` is configured) and `format`."""

    level: str | None = "info"
    format: str = "console"


def configure(level: str | None = "info", json: bool = False) -> None:
    """Set up `logging` for a program of its own (the worker CLI): tchu_rpc at `level`, to stderr.

    tchu_rpc's logger gets `level` (None leaves it). The root logger gets a stderr handler that
    renders records with structlog (key=value, or JSON lines), unless it or tchu_rpc's logger has
    handlers already (a framework's, such as Django's `LOGGING`). Unless structlog is configured
    already, it is set to hand its events to `logging`, so that handlers logging with structlog end
    in the same stream.
    """
    ours = logging.getLogger(_ROOT)
    if level is not None:
        ours.setLevel(level.upper())
    root = logging.getLogger()
    if not root.handlers and not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(json=json))
        root.addHandler(handler)
        root.setLevel((level or "info").upper())
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.filter_by_level,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )


def formatter(json: bool = False) -> logging.Formatter:
    """Return a `logging` formatter that renders records with structlog (key=value or JSON lines)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,  # before the meta keys (the record) are removed
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.dict_tracebacks] if json else []),
            renderer,
        ],
    )


class _Capture(logging.Handler):
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self.entries = entries

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(record.msg) if isinstance(record.msg, Event) else {"event": record.getMessage()}
        self.entries.append({**fields, "log_level": record.levelname.lower(), "logger": record.name})


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Collect tchu_rpc's events at every level, as structlog's `capture_logs` does.

    Yields the list that receives each event's dict: `event`, `log_level`, `logger` and its keys.
    """
    entries: list[dict[str, Any]] = []
    handler = _Capture(entries)
    std = logging.getLogger(_ROOT)
    level = std.level
    std.addHandler(handler)
    std.setLevel(logging.DEBUG)
    try:
        yield entries
    finally:
        std.removeHandler(handler)
        std.setLevel(level)
