"""tchu-tchu's `celery_options` as a `tchu_rpc.Retry`, with Celery's autoretry semantics.

tchu-tchu made each event handler a Celery task with these options; Celery retries a task that
raised one of `autoretry_for` up to `max_retries` times (so it runs `max_retries + 1` times), then
lets it fail. Under tchu_rpc the handler runs as often, waiting on the broker between runs, and its
message is dead-lettered after the last run:

- `autoretry_for` -> `on` (without it: no retries, as in Celery);
- `max_retries` (default 3; or `retry_kwargs["max_retries"]`) -> `attempts = max_retries + 1`;
- `retry_backoff=True` or `n` seconds -> `first_delay = n` (True: 1) and `backoff = 2`;
- `retry_backoff_max` (default 600) -> `max_delay`;
- `retry_jitter` (default True; with a backoff only) -> `jitter` (tchu_rpc waits from half to all
  of a delay, Celery from none to all);
- without a backoff, `default_retry_delay` (default 180; or `retry_kwargs["countdown"]`) -> a fixed
  delay (`first_delay = max_delay`, `backoff = 1`), no jitter;
- `acks_late`, `reject_on_worker_lost`: accepted, tchu_rpc does so always (acks after the handler;
  a lost worker's message is redelivered).

Other options (`rate_limit`, `time_limit`, `soft_time_limit`, `bind`, `queue`, `dont_autoretry_for`,
...) have no per-handler equivalent: registration logs `celery_options_ignored` naming them.
Calls are never retried (tchu-tchu called a call's handler directly, without Celery's retries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tchu_rpc.errors import ConfigError
from tchu_rpc.log import get_logger
from tchu_rpc.retry import MAX_ATTEMPTS, Retry

logger = get_logger(__name__)

#: Options read into the `Retry`.
_RETRY: Final = frozenset(
    {
        "autoretry_for",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "default_retry_delay",
        "retry_kwargs",
    }
)
#: Options tchu_rpc meets in every handler already.
_ALWAYS: Final = frozenset({"acks_late", "reject_on_worker_lost"})
#: Celery's defaults.
_MAX_RETRIES: Final = 3
_BACKOFF_MAX: Final = 600.0
_RETRY_DELAY: Final = 180.0


def retry_from(options: Mapping[str, Any] | None, pattern: str) -> Retry | None:
    """Return the `Retry` that gives the handler of `pattern` Celery's retries under `options`.

    Logs `celery_options_ignored` naming the options without an equivalent.

    Raises:
        ConfigError: `options` is not a dict, or `max_retries` is None (Celery: retry forever) or
            above what `Retry` allows; `ArgumentTypeError` for values of the wrong type.
    """
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise ConfigError(f"celery_options of {pattern!r} must be a dict, not {type(options).__name__}")
    ignored = sorted(set(options) - _RETRY - _ALWAYS)
    if ignored:
        logger.warning(
            "celery_options_ignored",
            pattern=pattern,
            options=ignored,
            hint="no per-handler equivalent in tchu_rpc (see docs/migrating-from-tchu-tchu.md)",
        )
    autoretry = options.get("autoretry_for")
    if not autoretry:
        return None
    kwargs = options.get("retry_kwargs") or {}
    return Retry(
        attempts=_max_retries(kwargs.get("max_retries", options.get("max_retries", _MAX_RETRIES)), pattern)
        + 1,
        on=tuple(autoretry) if isinstance(autoretry, list | tuple) else autoretry,
        **_delays(options, kwargs),
    )


def _max_retries(value: Any, pattern: str) -> int:
    if value is None:
        raise ConfigError(
            f"celery_options of {pattern!r}: max_retries=None (retry forever) has no equivalent; "
            f"give a number up to {MAX_ATTEMPTS - 1}"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_ATTEMPTS:
        raise ConfigError(
            f"celery_options of {pattern!r}: max_retries must be 0 to {MAX_ATTEMPTS - 1}, not {value!r}"
        )
    return value


def _delays(options: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return `Retry`'s delay fields for Celery's backoff (exponential) or fixed countdown."""
    backoff = options.get("retry_backoff", False)
    if backoff:
        factor = 1.0 if backoff is True else backoff
        longest = options.get("retry_backoff_max", _BACKOFF_MAX)
        jitter = options.get("retry_jitter", True)
        if isinstance(factor, int | float) and isinstance(longest, int | float) and factor > longest:
            factor = longest  # Celery: min(retry_backoff_max, factor * 2 ** n), every wait the maximum
        return {"first_delay": factor, "backoff": 2.0, "max_delay": longest, "jitter": jitter}
    delay = kwargs.get("countdown", options.get("default_retry_delay", _RETRY_DELAY))
    return {"first_delay": delay, "backoff": 1.0, "max_delay": delay, "jitter": False}
