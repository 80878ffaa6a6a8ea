"""`Retry`: how often, how late and for which errors a failed event handler runs again.

`Retry(attempts=5, backoff=2.0, max_delay=300, on=(ConnectionError,))` on `@subscribe` runs a
failing event handler up to `attempts` times in all (the first run and `attempts - 1` retries). The
wait before retry `n` (1 for the first retry) is at most

    delay(n) = min(max_delay, first_delay * backoff ** (n - 1))

and with `jitter` (the default) it is drawn uniformly from `[delay(n) / 2, delay(n)]` ("equal
jitter": failures of many events at once spread out, yet every retry waits at least half its delay).
The waiting happens on the broker (`tchu_rpc._worker.retries`), never in the worker. Calls are never
retried by the worker: their caller decides.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tchu_rpc.errors import ArgumentTypeError, ConfigError, RegistryError

#: Bounds that keep every delay a valid per-message TTL and every header short.
MAX_ATTEMPTS = 100
MAX_BACKOFF = 100.0
MIN_DELAY = 0.001  # RabbitMQ counts TTLs in milliseconds
MAX_DELAY = 86_400.0  # one day


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed event handler again later, on the broker, for the exceptions in `on`.

    Args:
        attempts: runs in all, the first included (3: the first run and two retries); 1 to 100.
        backoff: the factor by which each retry's delay grows over the one before (1 to 100).
        max_delay: the longest wait before a retry, in seconds (at most a day).
        on: the exception classes that are retried (one class alone is taken too); others are
            dead-lettered at once.
        first_delay: the wait before the first retry, in seconds (at least 0.001).
        jitter: draw each wait from `[delay / 2, delay]` instead of waiting `delay` exactly.

    Raises:
        ConfigError: a value is out of range (`ArgumentTypeError` for a wrong type); names the field.
    """

    attempts: int = 3
    backoff: float = 2.0
    max_delay: float = 300.0
    on: tuple[type[Exception], ...] = (Exception,)
    first_delay: float = 1.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ArgumentTypeError(f"Retry attempts must be an int, not {type(self.attempts).__name__}")
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise ConfigError(f"Retry attempts must be 1 to {MAX_ATTEMPTS}, not {self.attempts}")
        _check_number("backoff", self.backoff, 1.0, MAX_BACKOFF)
        _check_number("first_delay", self.first_delay, MIN_DELAY, MAX_DELAY)
        _check_number("max_delay", self.max_delay, self.first_delay, MAX_DELAY)
        if not isinstance(self.jitter, bool):
            raise ArgumentTypeError(f"Retry jitter must be a bool, not {type(self.jitter).__name__}")
        object.__setattr__(self, "on", _exception_classes(self.on))

    def delay(self, retry: int) -> float:
        """Return the longest wait, in seconds, before retry `retry` (1 for the first retry)."""
        if retry < 1:
            raise ConfigError(f"retry numbers start at 1, not {retry}")
        # min() before the power's result grows: 100 ** 99 still fits a float.
        return min(self.max_delay, self.first_delay * self.backoff ** (retry - 1))

    def draw(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Return the wait before retry `retry`: `delay(retry)`, less up to half of it with `jitter`."""
        longest = self.delay(retry)
        return longest * (0.5 + 0.5 * rng()) if self.jitter else longest

    def retries(self, exc: BaseException) -> bool:
        """Return whether an exception raised by the handler is one to retry."""
        return isinstance(exc, self.on)


def _check_number(field: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError(f"Retry {field} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"Retry {field} must be from {low:g} to {high:g}, not {value!r}")


def _exception_classes(on: Any) -> tuple[type[Exception], ...]:
    classes = (on,) if isinstance(on, type) else on
    if not isinstance(classes, tuple | list) or not classes:
        raise ArgumentTypeError(f"Retry on must be an exception class or a tuple of them, not {on!r}")
    for cls in classes:
        # `Exception` only: a handler's SystemExit or KeyboardInterrupt stops the worker instead.
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise ArgumentTypeError(f"Retry on must hold Exception subclasses, not {cls!r}")
    return tuple(classes)


def check_retry(retry: Any, kind: str, pattern: str) -> None:
    """Refuse, at registration, a `retry` that is not a `Retry` or that is given for a call handler.

    Raises:
        RegistryError: with the reason; a call's caller decides whether to call again.
    """
    if retry is None:
        return
    if not isinstance(retry, Retry):
        raise RegistryError(f"retry for {pattern!r} must be a tchu_rpc.Retry, not {type(retry).__name__}")
    if kind == "call":
        raise RegistryError(
            f"retry is for event handlers: the call handler of {pattern!r} is not retried by the worker "
            "(its caller decides)"
        )
