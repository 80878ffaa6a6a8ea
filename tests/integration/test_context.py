"""Headers and context: a request id set by the first caller reaches a handler two services down."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from tchu_rpc import ArgumentTypeError, ConfigError, Registry, context, current_context, current_delivery
from tchu_rpc.testing import TchuFactory

WAIT = 10.0


@pytest.mark.timeout(60)
def test_a_request_id_set_by_the_first_caller_is_seen_two_services_down(tchu: TchuFactory) -> None:
    # Given three services: front calls middle, middle publishes an event that audit handles
    client = tchu.client()
    seen: dict[str, Any] = {}
    done = threading.Event()
    front, middle, audit = Registry(), Registry(), Registry()

    @front.subscribe("rpc.chain.front")
    def front_handler(data: Any) -> Any:
        seen["front"] = dict(current_delivery().context)  # type: ignore[union-attr]
        return client.call("rpc.chain.middle", data, timeout=WAIT)

    @middle.subscribe("rpc.chain.middle")
    def middle_handler(data: Any) -> Any:
        seen["middle"] = dict(current_context())
        with context(step="middle"):  # adds to what came, for what it sends on
            client.publish("chain.audited", data)
        return "done"

    @audit.subscribe("chain.audited")
    def audit_handler(data: Any) -> None:
        delivery = current_delivery()
        assert delivery is not None
        seen["audit"], seen["user_id"] = dict(delivery.context), delivery.user_id
        done.set()

    for registry, name in ((front, "front"), (middle, "middle"), (audit, "audit")):
        tchu.worker(registry, name, call_concurrency=2)

    # When the first caller sets a request id and calls
    with context(request_id="r-42", tenant="acme"):
        assert client.call("rpc.chain.front", 1, timeout=WAIT) == "done"
    assert current_context() == {}

    # Then every handler down the chain ran under it, and the last also sees what the middle added
    assert done.wait(WAIT)
    assert seen["front"] == seen["middle"] == {"request_id": "r-42", "tenant": "acme"}
    assert seen["audit"] == {"request_id": "r-42", "tenant": "acme", "step": "middle"}
    # And the identity it may trust is the broker-checked login, not anything a publisher wrote
    assert seen["user_id"] == "guest"


def test_headers_reach_the_handler_as_sent(tchu: TchuFactory) -> None:
    registry = Registry()
    registry.subscribe("rpc.hdr.echo")(lambda data: dict(current_delivery().caller_headers))  # type: ignore[union-attr]
    tchu.worker(registry)
    client = tchu.client()
    sent = {"locale": "fr", "trace": [1, 2], "flag": True}
    assert client.call("rpc.hdr.echo", None, timeout=WAIT, headers=sent) == sent
    assert client.call("rpc.hdr.echo", None, timeout=WAIT) == {}


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({1: "x"}, ConfigError),
        ({"": "x"}, ConfigError),
        ({"k": object()}, ArgumentTypeError),
        ({"k": math.nan}, ArgumentTypeError),
        ({"k": "x" * 20000}, ConfigError),
        (["not", "a", "mapping"], ArgumentTypeError),
    ],
)
def test_bad_headers_are_refused_before_anything_is_sent(
    tchu: TchuFactory, headers: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        tchu.client().call("rpc.hdr.echo", None, timeout=WAIT, headers=headers)


def test_a_context_that_is_not_json_is_refused_where_it_is_set() -> None:
    with pytest.raises(ArgumentTypeError), context(when=object()):
        pass
