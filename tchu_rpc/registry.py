"""TEMPORARY STUB by the lead so the engine can be tested; helper-1 replaces this file entirely."""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tchu_rpc.errors import RegistryError, TopicError

Kind = Literal["call", "event"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    pattern: str
    fn: Callable[..., Any]
    kind: Kind
    name: str
    data_type: Any


def words(topic: str) -> list[str]:
    return [] if topic == "" else topic.split(".")


def topic_matches(pattern: str, topic: str) -> bool:
    p, t = words(pattern), words(topic)
    states = {0}
    for w in t:
        nxt: set[int] = set()
        for i in _close(p, states):
            if i < len(p):
                if p[i] == "#":
                    nxt.add(i)
                elif p[i] == "*" or p[i] == w:
                    nxt.add(i + 1)
        states = nxt
    return len(p) in _close(p, states)


def _close(p: list[str], states: set[int]) -> set[int]:
    out = set(states)
    for i in sorted(states):
        j = i
        while j < len(p) and p[j] == "#":
            j += 1
            out.add(j)
    return out


def validate_pattern(pattern: str) -> str:
    return pattern


def validate_topic(topic: str) -> str:
    if not isinstance(topic, str) or not topic or "*" in topic or "#" in topic:
        raise TopicError(f"invalid topic {topic!r}")
    return topic


def default_kind(pattern: str) -> Kind:
    return "call" if words(pattern)[:1] == ["rpc"] else "event"


class Registry:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._lock = threading.Lock()

    def subscribe(self, pattern: str, *, kind: Kind | None = None) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self.add(pattern, fn, kind=kind)
            return fn

        return deco

    def add(self, pattern: str, fn: Callable[..., Any], *, kind: Kind | None = None) -> Handler:
        kind = kind or default_kind(pattern)
        try:
            hints = typing.get_type_hints(fn)
            params = list(hints)
            data_type = hints[params[0]] if params and params[0] != "return" else Any
        except Exception:
            data_type = Any
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        handler = Handler(pattern, fn, kind, name, data_type)
        with self._lock:
            self._handlers.append(handler)
        return handler

    def match(self, topic: str, kind: Kind) -> tuple[Handler, ...]:
        return tuple(h for h in self._handlers if h.kind == kind and topic_matches(h.pattern, topic))

    def patterns(self, kind: Kind) -> tuple[str, ...]:
        return tuple(sorted({h.pattern for h in self._handlers if h.kind == kind}))

    def kinds(self) -> frozenset[Kind]:
        return frozenset(h.kind for h in self._handlers)

    @property
    def handlers(self) -> tuple[Handler, ...]:
        return tuple(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


default_registry = Registry()


def subscribe(pattern: str, *, kind: Kind | None = None) -> Callable[[F], F]:
    return default_registry.subscribe(pattern, kind=kind)


_ = RegistryError
