"""A registry of 10,000 handlers, literal and wildcard, still matches exactly and in registration order."""

from __future__ import annotations

from typing import Any

import pytest

from tchu_rpc.errors import RegistryError
from tchu_rpc.registry import Handler, Registry, topic_matches

HANDLERS = 10_000
#: Each service number `i` gets the pattern `SHAPES[i % len(SHAPES)]`, so shapes interleave.
SHAPES = ("svc{i}.created", "svc{i}.*.updated", "svc{i}.#", "*.svc{i}.deleted", "#.svc{i}.moved")


class Numbered:
    """A distinct handler object that knows the order it was registered in."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, data: Any) -> None:
        return None


def _pattern(i: int) -> str:
    return SHAPES[i % len(SHAPES)].format(i=i)


@pytest.fixture(scope="module")
def big() -> Registry:
    # Catch-alls at both ends check that order is registration order, not trie order.
    registry = Registry()
    registry.add("#", Numbered(-1), kind="event")
    for i in range(HANDLERS):
        registry.add(_pattern(i), Numbered(i), kind="event")
    registry.add("*.*.*", Numbered(HANDLERS), kind="event")
    return registry


def _numbers(handlers: tuple[Handler, ...]) -> list[int]:
    return [handler.fn.n for handler in handlers]


def test_every_handler_is_registered(big: Registry) -> None:
    assert len(big) == HANDLERS + 2
    assert len(big.patterns("event")) == HANDLERS + 2
    assert big.patterns("call") == ()


@pytest.mark.parametrize(
    ("topic", "numbers"),
    [
        ("svc0.created", [-1, 0]),
        ("svc5.created", [-1, 5]),
        ("svc1.eu.updated", [-1, 1, 10_000]),
        ("svc9996.eu.updated", [-1, 9996, 10_000]),
        ("svc2", [-1, 2]),
        ("svc2.a.b.c", [-1, 2]),
        ("svc9997.x", [-1, 9997]),
        ("x.svc3.deleted", [-1, 3, 10_000]),
        ("svc4.moved", [-1, 4]),
        ("a.b.c.svc9999.moved", [-1, 9999]),
        ("svc1.created", [-1]),
        ("svc0.eu.updated", [-1, 10_000]),
        ("nobody.home", [-1]),
        ("", [-1]),
    ],
)
def test_a_topic_selects_its_handlers_in_registration_order(
    big: Registry, topic: str, numbers: list[int]
) -> None:
    assert _numbers(big.match(topic, "event")) == numbers


@pytest.mark.parametrize(
    "topic",
    ["svc10.created", "svc7.svc12.x", "q.svc8.deleted", "svc14.svc19.moved", "svc2.svc7.updated", "."],
)
def test_match_agrees_with_a_scan_of_every_pattern(big: Registry, topic: str) -> None:
    expected = tuple(h for h in big.handlers if topic_matches(h.pattern, topic))
    assert big.match(topic, "event") == expected
    assert big.match(topic, "call") == ()


def test_every_literal_and_wildcard_pattern_is_found(big: Registry) -> None:
    # One topic per registered pattern, built from it, selects that pattern's handler.
    for i in range(0, HANDLERS, 7):
        topic = _pattern(i).replace("*", "w").replace("#", "h.h")
        assert i in _numbers(big.match(topic, "event")), topic


def test_a_duplicate_is_still_refused_among_many(big: Registry) -> None:
    handler = big.handlers[HANDLERS]
    with pytest.raises(RegistryError, match="already registered"):
        big.add(handler.pattern, handler.fn, kind="event")
    assert len(big) == HANDLERS + 2
