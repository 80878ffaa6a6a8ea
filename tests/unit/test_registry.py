"""The registry: registering handlers, finding those a topic selects, and what it records about them."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import threading
import typing
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tchu_rpc import registry as registry_module
from tchu_rpc.errors import RegistryError, TopicError
from tchu_rpc.registry import Handler, Kind, Registry, default_registry, subscribe, topic_matches


class User(msgspec.Struct, frozen=True):
    id: int
    name: str = ""


def on_user(data: User) -> str:
    return data.name


def on_anything(data):  # type: ignore[no-untyped-def]
    return data


def on_quoted(data: "User") -> None:  # noqa: UP037 - the quoted annotation is what is tested
    return None


def on_missing(data: Missing) -> None:  # type: ignore[name-defined]  # noqa: F821
    return None


def on_constrained(data: Annotated[int, msgspec.Meta(ge=0)]) -> int:
    return data


def no_parameters() -> None:
    return None


class Inbox:
    """A callable object handler, as tests and users write them."""

    def __call__(self, data: User) -> None:
        return None


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def restored_default_registry() -> Iterator[Registry]:
    saved = default_registry.handlers
    yield default_registry
    default_registry.clear()
    for handler in saved:
        default_registry.add(handler.pattern, handler.fn, kind=handler.kind)


def test_subscribe_returns_the_function_unchanged(registry: Registry) -> None:
    decorated = registry.subscribe("user.created")(on_user)
    assert decorated is on_user
    assert [h.fn for h in registry.handlers] == [on_user]


def test_add_returns_the_handler_it_records(registry: Registry) -> None:
    handler = registry.add("rpc.users.get", on_user)
    assert handler == Handler("rpc.users.get", on_user, "call", f"{__name__}.on_user", User)
    assert registry.handlers == (handler,)


def test_match_returns_every_matching_handler_in_registration_order(registry: Registry) -> None:
    first = registry.add("user.#", on_user)
    second = registry.add("user.created", on_anything)
    registry.add("order.created", on_quoted)
    third = registry.add("*.created", on_quoted)
    assert registry.match("user.created", "event") == (first, second, third)
    assert registry.match("user.deleted", "event") == (first,)
    assert registry.match("invoice.paid", "event") == ()


def test_match_returns_only_handlers_of_the_asked_kind(registry: Registry) -> None:
    call = registry.add("rpc.users.get", on_user)
    event = registry.add("rpc.users.get", on_anything, kind="event")
    assert registry.match("rpc.users.get", "call") == (call,)
    assert registry.match("rpc.users.get", "event") == (event,)


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [("rpc.users.get", "call"), ("rpc.#", "call"), ("user.created", "event"), ("users.rpc", "event")],
)
def test_kind_is_inferred_from_the_rpc_prefix(registry: Registry, pattern: str, kind: str) -> None:
    assert registry.add(pattern, on_user).kind == kind


def test_explicit_kind_overrides_the_inferred_one(registry: Registry) -> None:
    assert registry.add("users.get", on_user, kind="call").kind == "call"
    assert registry.add("rpc.audit", on_user, kind="event").kind == "event"
    assert registry.subscribe("users.find", kind="call")(on_anything) is on_anything
    assert registry.match("users.find", "call")[0].fn is on_anything


def test_registering_the_same_function_twice_for_a_pattern_and_kind_fails(registry: Registry) -> None:
    registry.add("user.created", on_user)
    expected = f"{__name__}.on_user is already registered as the event handler of 'user.created'"
    with pytest.raises(RegistryError, match=re.escape(expected)):
        registry.subscribe("user.created")(on_user)
    assert len(registry) == 1


def test_one_function_may_serve_other_patterns_and_kinds(registry: Registry) -> None:
    registry.add("user.created", on_user)
    registry.add("user.deleted", on_user)
    registry.add("user.created", on_user, kind="call")
    assert len(registry) == 3


def test_a_bound_method_registered_twice_is_a_duplicate(registry: Registry) -> None:
    inbox: set[Any] = set()
    registry.add("a.b", inbox.add)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("a.b", inbox.add)


def test_a_handler_that_is_not_callable_is_refused(registry: Registry) -> None:
    with pytest.raises(
        RegistryError, match=re.escape("handler for 'user.created' must be callable, not str")
    ):
        registry.add("user.created", "on_user")  # type: ignore[arg-type]
    assert len(registry) == 0


def test_an_unknown_kind_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=re.escape("kind must be 'call' or 'event', not 'cast'")):
        registry.add("user.created", on_user, kind="cast")  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["", "user.*x", "a#", 7])
def test_an_invalid_pattern_is_a_topic_error(registry: Registry, pattern: Any) -> None:
    with pytest.raises(TopicError):
        registry.subscribe(pattern)(on_user)
    assert len(registry) == 0


@pytest.mark.parametrize("pattern", ["user created", "user.*\t", "#\n", "a.\x00", "a\x7f.#"])
def test_a_pattern_with_whitespace_or_a_control_character_is_refused(
    registry: Registry, pattern: str
) -> None:
    with pytest.raises(TopicError, match=re.escape(f"pattern {pattern!r} contains ")):
        registry.add(pattern, on_user)
    assert len(registry) == 0
    assert registry.match(pattern, "event") == ()


def test_a_refused_duplicate_leaves_the_registry_unchanged(registry: Registry) -> None:
    first = registry.add("user.*", on_user)
    second = registry.add("user.#", on_user)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("user.*", on_user)
    assert registry.handlers == (first, second)
    assert registry.match("user.created", "event") == (first, second)


def test_equal_callables_are_duplicates_as_they_were_before_the_trie(registry: Registry) -> None:
    # Bound methods of one object compare equal without being the same object.
    inbox = Inbox()
    registry.add("user.created", inbox.__call__)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("user.created", inbox.__call__)
    registry.add("user.created", Inbox().__call__)
    assert len(registry) == 2


def test_match_of_an_unknown_kind_is_empty(registry: Registry) -> None:
    registry.add("#", on_user)
    assert registry.match("a", "cast") == ()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fn", "data_type"),
    [
        (on_user, User),
        (on_anything, Any),
        (on_quoted, User),
        (on_missing, Any),
        (on_constrained, Annotated[int, msgspec.Meta(ge=0)]),
        (no_parameters, Any),
        (Inbox(), User),
        (functools.partial(lambda prefix, data: data, "x"), Any),
        (print, Any),
    ],
    ids=[
        "struct",
        "none",
        "string",
        "unresolvable",
        "annotated",
        "no-parameters",
        "object",
        "lambda",
        "builtin",
    ],
)
def test_data_type_is_the_first_parameters_annotation(registry: Registry, fn: Any, data_type: Any) -> None:
    assert registry.add("user.created", fn).data_type == data_type


def test_data_type_survives_an_unresolvable_annotation_on_another_parameter(registry: Registry) -> None:
    def handler(data, extra=None):  # type: ignore[no-untyped-def]
        return data

    handler.__annotations__ = {"data": User, "extra": "Missing"}
    assert registry.add("user.created", handler).data_type is User


def test_data_type_of_a_partial_comes_from_the_wrapped_function(registry: Registry) -> None:
    def handler(prefix: str, data: User) -> None:
        return None

    handler.__annotations__ = {"prefix": str, "data": User, "return": None}
    assert registry.add("user.created", functools.partial(handler, "x")).data_type is User


def test_handler_name_is_module_and_qualified_name(registry: Registry) -> None:
    def local(data: Any) -> None:
        return None

    assert registry.add("a", local).name == f"{__name__}.{local.__qualname__}"
    assert registry.add("b", Inbox()).name == f"{__name__}.Inbox"
    assert registry.add("c", set().add).name == "builtins.set.add"


def test_patterns_are_sorted_and_unique_per_kind(registry: Registry) -> None:
    registry.add("user.updated", on_user)
    registry.add("user.created", on_user)
    registry.add("user.created", on_anything)
    registry.add("rpc.users.get", on_user)
    assert registry.patterns("event") == ("user.created", "user.updated")
    assert registry.patterns("call") == ("rpc.users.get",)


def test_kinds_are_those_with_a_handler(registry: Registry) -> None:
    assert registry.kinds() == frozenset()
    registry.add("user.created", on_user)
    assert registry.kinds() == {"event"}
    registry.add("rpc.users.get", on_user)
    assert registry.kinds() == {"call", "event"}


def test_match_sees_handlers_added_after_an_earlier_match(registry: Registry) -> None:
    # Given a match that is cached
    first = registry.add("user.*", on_user)
    assert registry.match("user.created", "event") == (first,)
    # When another matching handler is added
    second = registry.add("user.created", on_anything)
    # Then the next match includes it
    assert registry.match("user.created", "event") == (first, second)


def test_clear_removes_every_handler_and_cached_match(registry: Registry) -> None:
    registry.add("user.created", on_user)
    assert registry.match("user.created", "event")
    registry.clear()
    assert len(registry) == 0
    assert registry.handlers == ()
    assert registry.match("user.created", "event") == ()


def test_match_cache_stays_bounded(registry: Registry) -> None:
    registry.add("#", on_user)
    for i in range(registry_module._CACHE_SIZE + 10):
        assert len(registry.match(f"topic.{i}", "event")) == 1
    assert len(registry._state.cache) <= registry_module._CACHE_SIZE


class Numbered:
    """A distinct handler object that knows the order it was registered in."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, data: Any) -> None:
        return None


def _numbers(handlers: tuple[Handler, ...]) -> list[int]:
    return [handler.fn.n for handler in handlers if isinstance(handler.fn, Numbered)]


def test_matching_from_many_threads_while_adding_is_safe(registry: Registry) -> None:
    # Given threads matching a topic while handlers for it are added
    patterns = ["#", "user.*", "user.#", "*.created", "user.created", "#.created", "*.*"]
    stop = threading.Event()
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def match_until_stopped() -> None:
        try:
            while not stop.is_set():
                numbers = _numbers(registry.match("user.created", "event"))
                if numbers != list(range(len(numbers))):
                    seen.append(numbers)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=match_until_stopped) for _ in range(4)]
    for thread in threads:
        thread.start()
    # When 300 handlers are added
    for n in range(300):
        registry.add(patterns[n % len(patterns)], Numbered(n))
    stop.set()
    for thread in threads:
        thread.join(5)
    # Then every match a reader saw was a prefix of the registrations, and the last sees all
    assert errors == []
    assert seen == []
    assert _numbers(registry.match("user.created", "event")) == list(range(300))


def test_matches_taken_before_a_clear_do_not_leak_into_the_cleared_registry(registry: Registry) -> None:
    # Given a registry whose match is cached
    registry.add("user.*", on_user)
    assert len(registry.match("user.created", "event")) == 1
    # When it is cleared and another handler is added
    registry.clear()
    again = registry.add("user.#", on_anything)
    # Then only the new handler matches
    assert registry.match("user.created", "event") == (again,)
    assert registry.handlers == (again,)


# Tiny alphabets make shared prefixes, wildcard overlaps and so matches likely; "" is an empty word.
_PATTERN_WORDS = st.sampled_from(["a", "b", "", "*", "#", "ü", "ab"])
_TOPIC_WORDS = st.sampled_from(["a", "b", "", "ü", "ab", "*", "#"])
_PATTERNS = st.lists(_PATTERN_WORDS, min_size=1, max_size=6).map(".".join).filter(bool)
_TOPICS = st.one_of(st.just(""), st.lists(_TOPIC_WORDS, min_size=1, max_size=7).map(".".join))
_KIND_NAMES: tuple[Kind, ...] = ("call", "event")


@settings(max_examples=300, deadline=None)
@given(
    registrations=st.lists(st.tuples(_PATTERNS, st.sampled_from(_KIND_NAMES)), min_size=1, max_size=25),
    topics=st.lists(_TOPICS, min_size=1, max_size=8),
)
def test_match_agrees_with_topic_matches_over_random_patterns_and_topics(
    registrations: list[tuple[str, Kind]], topics: list[str]
) -> None:
    # Given random patterns, repeats included, each with its own handler
    registry = Registry()
    for n, (pattern, kind) in enumerate(registrations):
        registry.add(pattern, Numbered(n), kind=kind)
    # Then each topic selects the handlers a scan with topic_matches selects, in registration order
    for topic in topics:
        for kind in _KIND_NAMES:
            expected = tuple(
                h for h in registry.handlers if h.kind == kind and topic_matches(h.pattern, topic)
            )
            assert registry.match(topic, kind) == expected
            assert registry.match(topic, kind) == expected  # and so does the cached answer


def test_module_subscribe_registers_on_the_default_registry(restored_default_registry: Registry) -> None:
    def handler(data: User) -> None:
        return None

    assert subscribe("test.registry.default")(handler) is handler
    assert restored_default_registry.match("test.registry.default", "event")[-1].fn is handler


class _AsyncCallable:
    async def __call__(self, data: Any) -> Any:
        return data


async def _coroutine_handler(data: Any) -> Any:
    """Answer with the data."""
    await asyncio.sleep(0)
    return data


async def _async_generator_handler(data: Any) -> Any:
    yield data


@pytest.mark.parametrize("fn", [_coroutine_handler, _AsyncCallable()])
def test_an_async_handler_runs_as_a_plain_function_that_awaits_it(registry: Registry, fn: Any) -> None:
    # Given an async def handler (or an object whose __call__ is one)
    handler = registry.add("rpc.users.get", fn)
    # Then the worker's threads call it as any handler, and get what the coroutine returns
    assert not inspect.iscoroutinefunction(handler.fn)
    assert handler.fn({"id": 1}) == {"id": 1}
    assert handler.name == registry_module._name(fn)


def test_an_async_handler_keeps_its_name_docstring_and_annotations(registry: Registry) -> None:
    async def on_user(data: User) -> str:
        """Greet the user."""
        return data.name

    handler = registry.add("rpc.users.greet", on_user)
    assert handler.data_type is User and handler.name.endswith("on_user")
    assert handler.fn.__doc__ == "Greet the user." and typing.get_type_hints(handler.fn)["return"] is str


def test_an_async_handler_registered_twice_is_refused(registry: Registry) -> None:
    registry.add("rpc.users.get", _coroutine_handler)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("rpc.users.get", _coroutine_handler)


def test_an_async_generator_is_refused_at_registration_naming_it(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"_async_generator_handler is an async generator for 'user.x'"):
        registry.add("user.x", _async_generator_handler)
    assert registry.match("user.x", "event") == ()
