"""Topic pattern -> handler: validation and matching of topics, and the default registry behind `@subscribe`.

Matching follows RabbitMQ's topic exchange exactly, so that a worker dispatches a delivery to the
handlers whose binding brought it: words are separated by `.`, `*` is exactly one word, `#` is zero
or more words, an empty word between dots is still a word, but the empty routing key has no words.
`*` and `#` are wildcards only as whole words. Topics and patterns never hold whitespace or control
characters.

`Registry.match` walks a trie of the patterns' words, as the broker does, so that its cost follows the
topic and the patterns that can still match it, not the number of patterns registered.
"""

from __future__ import annotations

import functools
import inspect
import operator
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tchu_rpc.errors import RegistryError, TopicError

Kind = Literal["call", "event"]
F = TypeVar("F", bound=Callable[..., Any])

#: Routing keys and binding keys are AMQP short strings.
MAX_TOPIC_BYTES = 255
_KINDS: frozenset[str] = frozenset(typing.get_args(Kind))
_WILDCARDS = frozenset("*#")
# Whitespace as `str.isspace` knows it, and the C0, DEL and C1 control characters.
_UNPRINTABLE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
#: Distinct (topic, kind) pairs remembered by `Registry.match` before its cache starts over.
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Handler:
    """A function registered for a topic pattern, as a call or an event handler."""

    pattern: str
    fn: Callable[..., Any]
    kind: Kind
    name: str
    data_type: Any


def words(topic: str) -> list[str]:
    """Split a topic or pattern into its words; the empty string has none."""
    return [] if topic == "" else topic.split(".")


def topic_matches(pattern: str, topic: str) -> bool:
    """Return whether a topic-exchange binding `pattern` routes the routing key `topic`."""
    pattern_words = words(pattern)
    # The set of pattern positions the words read so far can end at: linear in both lengths.
    states = _skip_hashes(pattern_words, {0})
    for word in words(topic):
        states = _skip_hashes(pattern_words, _step(pattern_words, states, word))
        if not states:
            return False
    return len(pattern_words) in states


def _step(pattern_words: list[str], states: set[int], word: str) -> set[int]:
    """Return the positions reached from `states` by reading one `word`."""
    reached: set[int] = set()
    for i in states:
        if i == len(pattern_words):
            continue
        current = pattern_words[i]
        if current == "#":
            reached.add(i)
        elif current == "*" or current == word:
            reached.add(i + 1)
    return reached


def _skip_hashes(pattern_words: list[str], states: set[int]) -> set[int]:
    """Add the positions reached from `states` by letting each `#` match no word."""
    closed = set(states)
    for i in states:
        while i < len(pattern_words) and pattern_words[i] == "#":
            i += 1
            closed.add(i)
    return closed


def validate_pattern(pattern: str) -> str:
    """Return `pattern` if the broker would bind it as intended, else raise `TopicError`."""
    _check_key("pattern", pattern)
    for word in words(pattern):
        if len(word) > 1 and _WILDCARDS.intersection(word):
            raise TopicError(
                f"pattern {pattern!r} has the word {word!r}, which mixes a wildcard with other "
                "characters: '*' and '#' are wildcards only as whole words"
            )
    return pattern


def validate_topic(topic: str) -> str:
    """Return `topic` if it is a valid concrete routing key, else raise `TopicError`."""
    _check_key("topic", topic)
    if _WILDCARDS.intersection(topic):
        raise TopicError(f"topic {topic!r} contains '*' or '#': wildcards belong in patterns, not topics")
    if "" in words(topic):
        raise TopicError(f"topic {topic!r} has an empty word (a leading, trailing or doubled '.')")
    return topic


def _check_key(what: str, key: object) -> None:
    """Raise `TopicError` unless `key` is a non-empty string of at most 255 UTF-8 bytes."""
    if not isinstance(key, str):
        raise TopicError(f"{what} must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise TopicError(f"{what} must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TopicError(f"{what} {key!r} cannot be encoded as UTF-8: {exc.reason}") from exc
    if size > MAX_TOPIC_BYTES:
        raise TopicError(f"{what} {key[:40]!r}... is {size} bytes in UTF-8; the limit is {MAX_TOPIC_BYTES}")
    _check_printable(what, key)


def _check_printable(what: str, key: str) -> None:
    """Raise `TopicError` if `key` holds whitespace or a control character."""
    # The broker would route such keys, but they are typing or templating mistakes that logs hide.
    found = _UNPRINTABLE.search(key)
    if found is not None:
        char = found.group()
        problem = "whitespace" if char.isspace() else "a control character"
        raise TopicError(
            f"{what} {key!r} contains {problem} ({char!r} at index {found.start()}): "
            "topics and patterns must not contain whitespace or control characters"
        )


def default_kind(pattern: str) -> Kind:
    """Return "call" for patterns whose first word is `rpc`, else "event"."""
    return "call" if words(pattern)[:1] == ["rpc"] else "event"


def _name(fn: Callable[..., Any]) -> str:
    """Return `module.qualname` of a function, or of the class of a callable object."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


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


class _Node:
    """A trie node: the patterns with these first words, by their next word or wildcard."""

    __slots__ = ("children", "handlers", "hash", "is_hash", "star")

    def __init__(self, *, is_hash: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        #: Reached by a `#`, so it may also read any number of further words itself.
        self.is_hash = is_hash
        #: (registration number, handler) of each handler whose pattern ends here, in that order.
        self.handlers: list[tuple[int, Handler]] = []

    def child(self, word: str) -> _Node:
        """Return the node after the pattern word `word`, adding it if it is new."""
        # A reader may walk the trie while this runs: a node is complete before it is linked in.
        if word == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        if word == "#":
            if self.hash is None:
                self.hash = _Node(is_hash=True)
            return self.hash
        node = self.children.get(word)
        if node is None:
            node = self.children[word] = _Node()
        return node


def _collect(root: _Node, topic_words: list[str]) -> list[tuple[int, Handler]]:
    """Return the (registration number, handler) pairs of the patterns under `root` matching the words."""
    # States are (node, words read); each is expanded once, so `#.#.#` cannot blow up.
    found: list[tuple[int, Handler]] = []
    end = len(topic_words)
    pending = [(root, 0)]
    seen: set[tuple[_Node, int]] = set()
    while pending:
        state = pending.pop()
        if state in seen:
            continue
        seen.add(state)
        node, i = state
        if node.hash is not None:
            pending.append((node.hash, i))  # the `#` reads no word
        if i == end:
            found.extend(node.handlers)
            continue
        child = node.children.get(topic_words[i])
        if child is not None:
            pending.append((child, i + 1))
        if node.star is not None:
            pending.append((node.star, i + 1))
        if node.is_hash:
            pending.append((node, i + 1))  # the `#` reads one more word
    return found


@dataclass(frozen=True, slots=True)
class _State:
    """What a reader sees of a registry: the first `count` handlers and their tries."""

    #: Every handler in registration order; only ever appended to, under the registry's lock.
    handlers: list[Handler]
    count: int
    tries: dict[str, _Node]
    cache: dict[tuple[str, str], tuple[Handler, ...]]


def _empty_state() -> _State:
    """Return the state of a registry without handlers."""
    return _State([], 0, {kind: _Node() for kind in _KINDS}, {})


class Registry:
    """Handlers by topic pattern and kind; `match` finds those a delivery's topic selects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Writers grow the handler list and the tries in place, then publish a new state with a new
        # count and an empty cache. Readers take no lock: they keep only handlers numbered below the
        # count they read, so a match sees exactly the registrations made before its state.
        self._state = _empty_state()

    def subscribe(self, pattern: str, *, kind: Kind | None = None) -> Callable[[F], F]:
        """Return a decorator registering a function for `pattern` and returning it unchanged."""

        def decorate(fn: F) -> F:
            self.add(pattern, fn, kind=kind)
            return fn

        return decorate

    def add(self, pattern: str, fn: Callable[..., Any], *, kind: Kind | None = None) -> Handler:
        """Register `fn` for `pattern`; `kind` defaults to `default_kind(pattern)`.

        Raises:
            TopicError: the pattern is invalid.
            RegistryError: `fn` is not callable, `kind` is unknown, or `fn` is already registered so.
        """
        validate_pattern(pattern)
        if not callable(fn):
            raise RegistryError(f"handler for {pattern!r} must be callable, not {type(fn).__name__}")
        if kind is None:
            kind = default_kind(pattern)
        elif kind not in _KINDS:
            raise RegistryError(f"kind must be 'call' or 'event', not {kind!r} (pattern {pattern!r})")
        handler = Handler(pattern, fn, kind, _name(fn), _data_type(fn))
        with self._lock:
            state = self._state
            node = state.tries[kind]
            for word in words(pattern):
                node = node.child(word)
            # The node holds exactly the handlers of this pattern and kind.
            if any(h.fn == fn for _, h in node.handlers):
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
            pairs = [] if root is None else _collect(root, words(topic))
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


def subscribe(pattern: str, *, kind: Kind | None = None) -> Callable[[F], F]:
    """Return a decorator registering a function on the default registry (see `Registry.subscribe`)."""
    return default_registry.subscribe(pattern, kind=kind)
