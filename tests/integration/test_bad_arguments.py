"""One bad argument gets a clear error before anything is sent, and harms no other call in flight."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tchu_rpc import (
    ArgumentTypeError,
    Client,
    ConfigError,
    EncodeError,
    MessageTooLarge,
    Registry,
    Settings,
    TchuError,
    TopicError,
)
from tchu_rpc.testing import TchuFactory

WAIT = 10.0
# (what is wrong, the bad use of the client, the error it must raise, a word the message must hold)
BAD: list[tuple[str, Callable[[Client], Any], type[TchuError], str]] = [
    ("negative timeout", lambda c: c.call("rpc.args.echo", 1, timeout=-1), ConfigError, "timeout"),
    ("zero timeout", lambda c: c.call("rpc.args.echo", 1, timeout=0), ConfigError, "timeout"),
    ("NaN timeout", lambda c: c.call("rpc.args.echo", 1, timeout=math.nan), ConfigError, "timeout"),
    ("infinite timeout", lambda c: c.call("rpc.args.echo", 1, timeout=math.inf), ConfigError, "timeout"),
    (
        "timeout over the broker's limit",
        lambda c: c.call("rpc.args.echo", 1, timeout=4e8),
        ConfigError,
        "315360000",
    ),
    ("string timeout", lambda c: c.call("rpc.args.echo", 1, timeout="5"), ArgumentTypeError, "timeout"),
    ("bool timeout", lambda c: c.call("rpc.args.echo", 1, timeout=True), ArgumentTypeError, "timeout"),
    ("bad publish timeout", lambda c: c.publish("args.happened", 1, timeout=-2), ConfigError, "timeout"),
    (
        "bad async timeout",
        lambda c: c.call_async("rpc.args.echo", 1, timeout=math.nan),
        ConfigError,
        "timeout",
    ),
    (
        "max_timeout below timeout",
        lambda c: c.call("rpc.args.echo", 1, timeout=5, max_timeout=1),
        ConfigError,
        "max_timeout",
    ),
    (
        "string max_timeout",
        lambda c: c.call("rpc.args.echo", 1, max_timeout="9"),
        ArgumentTypeError,
        "max_timeout",
    ),
    (
        "idempotent not a bool",
        lambda c: c.call("rpc.args.echo", 1, idempotent="yes"),
        ArgumentTypeError,
        "idempotent",
    ),
    (
        "on_progress not callable",
        lambda c: c.call("rpc.args.echo", 1, on_progress=3),
        ArgumentTypeError,
        "on_progress",
    ),
    ("NaN in data", lambda c: c.call("rpc.args.echo", {"x": math.nan}), EncodeError, "NaN"),
    ("infinity in event data", lambda c: c.publish("args.happened", [math.inf]), EncodeError, "NaN"),
    ("object in data", lambda c: c.call("rpc.args.echo", object()), EncodeError, "object"),
    ("body over the limit", lambda c: c.call("rpc.args.echo", "x" * 2000), MessageTooLarge, "limit"),
    ("topic with a space", lambda c: c.call("rpc.args echo", 1), TopicError, "whitespace"),
    ("topic with NUL", lambda c: c.publish("args.\x00", 1), TopicError, "control"),
    ("topic not a str", lambda c: c.call(b"rpc.args.echo", 1), TopicError, "str"),
    ("wildcard topic", lambda c: c.publish("args.*", 1), TopicError, "wildcard"),
    ("empty topic", lambda c: c.call("", 1), TopicError, "empty"),
    ("call topic published", lambda c: c.publish("rpc.args.echo", 1), TopicError, "allow_call_topic"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "use", "error", "word"), BAD, ids=[case for case, *_ in BAD])
def test_a_bad_argument_raises_a_clear_error_and_leaves_calls_in_flight_alone(
    tchu: TchuFactory, case: str, use: Callable[[Client], Any], error: type[TchuError], word: str
) -> None:
    # Given a worker and a client with calls in flight (their handler waits for a gate)
    gate = threading.Event()
    registry = Registry()
    registry.subscribe("rpc.args.echo")(lambda data: data)

    @registry.subscribe("rpc.args.held")
    def held(data: int) -> int:
        assert gate.wait(WAIT), "the gate never opened"
        return data

    tchu.worker(registry, call_concurrency=4)
    client = tchu.client(max_message_bytes=1000)
    in_flight = [client.call_async("rpc.args.held", n, timeout=WAIT) for n in range(4)]

    # When the client is used with the bad argument
    with pytest.raises(error) as info:
        use(client)

    # Then the error names the problem, is a TchuError, and the calls in flight are answered
    assert word in str(info.value), str(info.value)
    assert isinstance(info.value, TchuError)
    gate.set()
    assert [f.result(timeout=WAIT) for f in in_flight] == [0, 1, 2, 3]
    assert client.call("rpc.args.echo", "after", timeout=WAIT) == "after"


def test_an_event_may_be_published_on_a_call_topic_when_asked_for(tchu: TchuFactory) -> None:
    seen: list[Any] = []
    registry = Registry()
    registry.subscribe("rpc.args.#", kind="event")(seen.append)
    done = threading.Event()
    registry.subscribe("args.done", kind="event")(lambda data: done.set())
    tchu.worker(registry)
    client = tchu.client()
    client.publish("rpc.args.noted", 1, allow_call_topic=True)
    client.publish("args.done", None)
    assert done.wait(WAIT) and seen == [1]


@pytest.mark.parametrize(
    ("settings", "word"),
    [
        ({"max_message_bytes": 200 * 1024 * 1024}, "broker_max_message_bytes"),
        ({"call_timeout": 4e8}, "call_timeout"),
        ({"publish_timeout": math.inf}, "publish_timeout"),
    ],
)
def test_settings_the_broker_would_close_the_connection_over_are_refused(
    settings: dict[str, Any], word: str
) -> None:
    with pytest.raises(ConfigError, match=word):
        Settings(**settings)


@pytest.mark.timeout(60)
def test_a_reply_over_the_clients_limit_fails_its_call_with_message_too_large(tchu: TchuFactory) -> None:
    # Given a worker whose handler answers 5,000 bytes, and a client that accepts at most 1,000
    registry = Registry()
    registry.subscribe("rpc.args.big")(lambda data: "x" * 5000)
    registry.subscribe("rpc.args.echo")(lambda data: data)
    tchu.worker(registry)
    client = tchu.client(max_message_bytes=1000)

    # Then the call fails with MessageTooLarge, and the next call is answered
    with pytest.raises(MessageTooLarge, match="exceeds the limit of 1000 bytes"):
        client.call("rpc.args.big", None, timeout=WAIT)
    assert client.call("rpc.args.echo", 2, timeout=WAIT) == 2
