"""Topic pattern -> handler: the registry a worker serves, and the default one behind `@subscribe`.

Topics and patterns are validated and matched as RabbitMQ's topic exchange does (`topics`);
`Registry.match` walks a trie of the patterns' words, so its cost follows the topic, not the number
of patterns registered.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import operator
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tchu_rpc.contracts import Topic
from tchu_rpc.errors import ConfigError, RegistryError
from tchu_rpc.retry import Retry, check_retry
from tchu_rpc.topics import (
    MAX_TOPIC_BYTES,
    Kind,
    Node,
    collect,
    default_kind,
    topic_matches,
    validate_pattern,
    validate_topic,
    words,
)

__all__ = [
    "MAX_TOPIC_BYTES",
    "Handler",
    "Kind",
    "Registry",
    "default_kind",
    "default_registry",
    "subscribe",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
    "words",
]

F = TypeVar("F", bound=Callable[..., Any])

_KINDS: frozenset[str] = frozenset(typing.get_args(Kind))
#: Distinct (topic, kind) pairs remembered by `Registry.match` before its cache starts over.
_CACHE_SIZE = 4096
_ORIGINAL = "_tchu_rpc_async_def"  # names the `async def` on the plain function that awaits it


@dataclass(frozen=True, slots=True)
class Handler:
    """A function registered for a topic pattern, as a call or an event handler.

    `fn` is what the worker calls; for an `async def` handler, a plain function that awaits it (the
    `async def` itself is `fn.__wrapped__`).
    """

    pattern: str
    fn: Callable[..., Any]
    kind: Kind
    name: str
    data_type: Any
    #: The typed topic it was registered for, if any: the worker checks results against it.
    contract: Topic[Any, Any] | None = None
    #: How a failing event handler is retried (`tchu_rpc.Retry`); None: not retried.
    retry: Retry | None = None


def _name(fn: Callable[..., Any]) -> str:
    """Return `module.qualname` of a function, or of the class of a callable object."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


def _is_async_generator(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 (an object whose __call__ is one)
    return inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call)


def _is_coroutine(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 (an object whose __call__ is async)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _awaited(fn: Callable[..., Any]) -> Callable[[Any], Any]:
    """Return a plain function that runs `fn(data)`'s coroutine to its end on an event loop of its own.

    The worker calls it on a handler thread as it calls any handler, so an `async def` handler keeps
    the delivery contract of a plain one (reply and ack together, time limits, progress, retries,
    middleware). Each delivery gets a fresh loop (`asyncio.run`): nothing is shared between
    deliveries or threads, and what the handler leaves running is cancelled when it returns.
    """

    @functools.wraps(fn)
    def run(data: Any) -> Any:
        return asyncio.run(fn(data))

    setattr(run, _ORIGINAL, fn)
    return run


def _data_type(fn: Callable[..., Any]) -> Any:
    """Return the annotation of `fn`'s first parameter, or `Any` when there is none to use."""
    try:
        parameter = next(iter(inspect.signature(fn).parameters.values()))
    except (StopIteration, TypeError, ValueError):
        return Any
    try:
        return typing.get_type_hints(_annotated(fn), include_extras=True).get(parameter.name, Any)
    except Exception:  # any annotation of fn may be an unresolvable forward reference
        raw = parameter.annotation
        return Any if raw is inspect.Parameter.empty or isinstance(raw, str) else raw


def _annotated(fn: Callable[..., Any]) -> Any:
    """Return the function whose annotations describe how `fn` is called."""
    if isinstance(fn, functools.partial):
        return _annotated(fn.func)
    if inspect.isroutine(fn):
        return fn
    return fn.__init__ if inspect.isclass(fn) else type(fn).__call__


@dataclass(frozen=True, slots=True)
class _State:
    """What a reader sees of a registry: the first `count` handlers and their tries."""

    #: Every handler in registration order; only ever appended to, under the registry's lock.
    handlers: list[Handler]
    count: int
    tries: dict[str, Node]
    cache: dict[tuple[str, str], tuple[Handler, ...]]


def _empty_state() -> _State:
    """Return the state of a registry without handlers."""
    return _State([], 0, {kind: Node() for kind in _KINDS}, {})


class Registry:
    """Handlers by topic pattern and kind; `match` finds those a delivery's topic selects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Writers grow the handler list and the tries in place, then publish a new state with a new
        # count and an empty cache. Readers take no lock: they keep only handlers numbered below the
        # count they read, so a match sees exactly the registrations made before its state.
        self._state = _empty_state()
        self._served: dict[str, int] = {}  # services serving this registry in this process: workers

    def serve(self, service: str) -> None:
        """Note that a worker serves this registry as `service`; refuse a second service for calls.

        Every queue bound to a call's topic gets a copy of the request, so two services serving the
        same call handlers in one process would run every call twice.

        Raises:
            ConfigError: another service in this process serves this registry's call handlers.
        """
        with self._lock:
            others = sorted(set(self._served) - {service})
            if others and "call" in self.kinds():
                raise ConfigError(
                    f"service {service!r} would serve the same call handlers as {', '.join(others)} in "
                    "this process, and every call would run once per service: give each Worker its "
                    "own Registry (Worker(queue=..., registry=...))"
                )
            self._served[service] = self._served.get(service, 0) + 1

    def release(self, service: str) -> None:
        """Note that a worker serving this registry as `service` stopped."""
        with self._lock:
            left = self._served.get(service, 0) - 1
            if left > 0:
                self._served[service] = left
            else:
                self._served.pop(service, None)

    def subscribe(
        self, pattern: str | Topic[Any, Any], *, kind: Kind | None = None, retry: Retry | None = None
    ) -> Callable[[F], F]:
        """Return a decorator registering a function for `pattern` (or a typed `Topic`), unchanged."""

        def decorate(fn: F) -> F:
            self.add(pattern, fn, kind=kind, retry=retry)
            return fn

        return decorate

    def add(
        self,
        pattern: str | Topic[Any, Any],
        fn: Callable[..., Any],
        *,
        kind: Kind | None = None,
        retry: Retry | None = None,
    ) -> Handler:
        """Register `fn` for `pattern`; `kind` defaults to `default_kind(pattern)`.

        With a typed `Topic`, its name is the pattern, its kind the kind, and an unannotated
        handler's data is decoded into the topic's request type. `retry` runs a failing event
        handler again later (see `Retry`); calls are never retried by the worker. An `async def`
        handler runs on an event loop of its own on the handler thread, under the same contract.

        Raises:
            TopicError: the pattern is invalid.
            RegistryError: `fn` is not callable or is an async generator, `kind` is unknown, `fn` is
                already registered so, or `retry` is not a `Retry` or is given for a call handler.
        """
        contract = None
        if isinstance(pattern, Topic):
            contract, kind, pattern = pattern, kind or pattern.resolved_kind, pattern.name
        validate_pattern(pattern)
        if not callable(fn):
            raise RegistryError(f"handler for {pattern!r} must be callable, not {type(fn).__name__}")
        if _is_async_generator(fn):
            raise RegistryError(
                f"{_name(fn)} is an async generator for {pattern!r}: a handler returns one result;"
                " make it an async def (or a plain def) that returns it"
            )
        if kind is None:
            kind = default_kind(pattern)
        elif kind not in _KINDS:
            raise RegistryError(f"kind must be 'call' or 'event', not {kind!r} (pattern {pattern!r})")
        data_type = _data_type(fn)
        if contract is not None and data_type is Any:
            data_type = contract.request
        check_retry(retry, kind, pattern)
        run = _awaited(fn) if _is_coroutine(fn) else fn
        handler = Handler(pattern, run, kind, _name(fn), data_type, contract, retry=retry)
        with self._lock:
            state = self._state
            node = state.tries[kind]
            for word in words(pattern):
                node = node.child(word)
            # The node holds exactly the handlers of this pattern and kind.
            if any(getattr(h.fn, _ORIGINAL, h.fn) == fn for _, h in node.handlers):
                raise RegistryError(
                    f"{handler.name} is already registered as the {kind} handler of {pattern!r}"
                )
            node.handlers.append((state.count, handler))
            state.handlers.append(handler)
            self._state = _State(state.handlers, state.count + 1, state.tries, {})
        return handler

    def match(self, topic: str, kind: Kind) -> tuple[Handler, ...]:
        """Return the handlers of `kind` whose pattern matches `topic`, in registration order."""
        state = self._state
        key = (topic, kind)
        found = state.cache.get(key)
        if found is None:
            root = state.tries.get(kind)
            pairs = [] if root is None else collect(root, words(topic))
            pairs = sorted((pair for pair in pairs if pair[0] < state.count), key=operator.itemgetter(0))
            found = tuple(handler for _, handler in pairs)
            if len(state.cache) >= _CACHE_SIZE:
                state.cache.clear()
            state.cache[key] = found
        return found

    def patterns(self, kind: Kind) -> tuple[str, ...]:
        """Return the sorted, distinct binding keys of the handlers of `kind`."""
        return tuple(sorted({h.pattern for h in self.handlers if h.kind == kind}))

    def kinds(self) -> frozenset[Kind]:
        """Return the kinds that have at least one handler."""
        return frozenset(h.kind for h in self.handlers)

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """Return every handler, in registration order."""
        state = self._state
        return tuple(state.handlers[: state.count])

    def __len__(self) -> int:
        return self._state.count

    def clear(self) -> None:
        """Remove every handler."""
        with self._lock:
            self._state = _empty_state()


default_registry = Registry()


def subscribe(
    pattern: str | Topic[Any, Any], *, kind: Kind | None = None, retry: Retry | None = None
) -> Callable[[F], F]:
    """Return a decorator registering a function on the default registry (see `Registry.subscribe`)."""
    return default_registry.subscribe(pattern, kind=kind, retry=retry)
