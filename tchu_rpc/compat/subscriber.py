"""tchu-tchu's `@subscribe` on tchu_rpc's registry, and its Celery helpers' answers.

tchu-tchu has one kind of handler: the message says whether the caller waits (`_tchu_meta.is_rpc`,
set by `call` and not by `publish`), and a handler's return value is the answer of a call. tchu_rpc
routes calls and events on two exchanges, so `subscribe` registers the function for the kinds its
pattern can receive:

- a pattern whose first word is `rpc` (tchu-tchu's naming convention for calls): a call handler;
- any other pattern without wildcards: an event handler *and* a call handler, so that
  `client.call("order.calculate_total", ...)` from tchu-tchu's README still finds it;
- any other pattern with `*` or `#`: an event handler only (a call names one function: a wildcard
  call handler would make every call it matches ambiguous beside the exact one).

`kind=` chooses one kind explicitly (`kind="event"` spares an events-only service its calls queue).

Handlers go to `tchu_rpc.default_registry` (what `Worker()` and `tchu-rpc worker` serve), or to the
registry of an enclosing `registering_on(registry)` block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from tchu_rpc.compat.celery_options import retry_from
from tchu_rpc.errors import ConfigError
from tchu_rpc.registry import Registry, default_registry
from tchu_rpc.topics import Kind, default_kind, topic_matches, words

__all__ = [
    "create_topic_dispatcher",
    "get_subscribed_routing_keys",
    "kinds_for",
    "register",
    "registering_on",
    "setup_celery_queue",
    "subscribe",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The registries of the enclosing `registering_on` blocks, innermost last (any thread's).
_scopes: list[Registry] = []
_META = "_tchu_meta"
_WILDCARDS = frozenset({"*", "#"})


@contextmanager
def registering_on(registry: Registry) -> Iterator[Registry]:
    """Make `subscribe` and `TchuEvent.subscribe` register on `registry` inside the block.

    The block holds for the whole process, not one thread: what a module registers when it is
    imported inside the block goes to `registry`, whichever thread imports it.
    """
    _scopes.append(registry)
    try:
        yield registry
    finally:
        _scopes.remove(registry)


def current_registry() -> Registry:
    """Return the registry compat registers on now."""
    return _scopes[-1] if _scopes else default_registry


def kinds_for(pattern: str, kind: Kind | None = None) -> tuple[Kind, ...]:
    """Return the kinds a tchu-tchu handler of `pattern` is registered as (see the module's notes)."""
    if kind is not None:
        return (kind,)
    if default_kind(pattern) == "call":
        return ("call",)
    return ("event",) if _WILDCARDS.intersection(words(pattern)) else ("event", "call")


def without_meta(data: Any) -> Any:
    """Return `data` without tchu-tchu's `_tchu_meta` key, as tchu-tchu's handlers received it."""
    if isinstance(data, dict) and _META in data:
        return {k: v for k, v in data.items() if k != _META}
    return data


def register(
    pattern: str,
    fn: Callable[[Any], Any],
    name: str,
    kind: Kind | None = None,
    celery_options: dict[str, Any] | None = None,
) -> None:
    """Register `fn(data)` for `pattern` on the current registry, as `kinds_for` says.

    `celery_options`' retries apply to the event handler (`compat.celery_options`).
    """
    retry = retry_from(celery_options, pattern)

    def handler(data: Any) -> Any:
        return fn(without_meta(data))

    handler.__qualname__ = handler.__name__ = name
    handler.__module__ = getattr(fn, "__module__", __name__)
    registry = current_registry()
    for each in kinds_for(pattern, kind):
        registry.add(pattern, handler, kind=each, retry=retry if each == "event" else None)


def subscribe(
    routing_key: str,
    *,
    name: str | None = None,
    handler_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    celery_options: dict[str, Any] | None = None,
    kind: Kind | None = None,
) -> Callable[[F], F]:
    """Return a decorator registering a function for `routing_key`, unchanged.

    `*` matches one word and `#` zero or more, as RabbitMQ routes (tchu-tchu's local matching let
    `user.*` take `user.profile.updated` and did not know `#`). `name` and `handler_id` name the
    handler in logs; `metadata` is accepted and ignored. `celery_options`' retry options give the
    event handler Celery's retries as a `tchu_rpc.Retry`; the others are named in a warning
    (`compat.celery_options`).
    """

    def decorate(fn: F) -> F:
        label = str(name or handler_id or getattr(fn, "__qualname__", "handler"))
        register(routing_key, fn, label, kind, celery_options)
        return fn

    return decorate


def get_subscribed_routing_keys(
    exclude_patterns: Sequence[str] | None = None, celery_app: Any = None, force_import: bool = True
) -> list[str]:
    """Return the sorted patterns of the current registry's handlers, calls and events.

    A pattern is left out when an exclude pattern matches it as the broker would match a routing
    key (`rpc.#` leaves out every `rpc.` pattern). `celery_app` and `force_import` are ignored:
    import the handler modules first (`tchu-rpc worker` imports the modules it is given).
    """
    handlers = current_registry().handlers
    keys = sorted({h.pattern for h in handlers})
    excluded = list(exclude_patterns or ())
    return [k for k in keys if not any(p == k or topic_matches(p, k) for p in excluded)]


def create_topic_dispatcher(celery_app: Any, task_name: str = "tchu_tchu.dispatch_event") -> Any:
    """Refuse: a tchu_rpc worker dispatches to handlers itself, without a Celery task.

    Raises:
        ConfigError: always; the message says what runs the handlers instead.
    """
    raise ConfigError(
        "create_topic_dispatcher is Celery's way: with tchu_rpc a Worker consumes and dispatches "
        "itself. Run `tchu-rpc worker myapp.subscribers --queue myapp`, or "
        "`tchu_rpc.Worker(queue='myapp').start()` after importing the handler modules"
    )


def setup_celery_queue(
    celery_app: Any, queue_name: str, subscriber_modules: list[str], **kwargs: Any
) -> None:
    """Refuse: a tchu_rpc worker declares and binds its own queues.

    Raises:
        ConfigError: always; the message gives the equivalent command.
    """
    modules = " ".join(subscriber_modules)
    raise ConfigError(
        "setup_celery_queue configures Celery; a tchu_rpc Worker declares and binds its queues from "
        f"its handlers: run `tchu-rpc worker {modules} --queue {queue_name}`"
    )
