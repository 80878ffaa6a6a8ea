"""The AsyncAPI 3.0 document of services validates against the official JSON Schema and says the truth.

No broker: a document is built from registries. The schema is vendored (tests/contracts/asyncapi/).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from tchu_rpc import RpcError, Settings, Topic, demo, wire
from tchu_rpc.contrib import asyncapi
from tchu_rpc.errors import ConfigError
from tchu_rpc.registry import Registry

SCHEMA = json.loads((Path(__file__).parent / "asyncapi" / "3.0.0.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
SETTINGS = Settings(events_exchange="shop_events", calls_exchange="shop_rpc")


class GetUser(msgspec.Struct):
    id: int


class User(msgspec.Struct):
    id: int
    name: str


class UserError(msgspec.Struct):
    id: int


get_user = Topic("rpc.users.get", request=GetUser, response=User, error=UserError)
user_created = Topic("users.created", request=User)


def _typed_registry() -> Registry:
    registry = Registry()

    @registry.subscribe(get_user)
    def fetch(req: GetUser) -> User:
        raise RpcError("no such user", code="not_found", details=UserError(id=req.id))

    @registry.subscribe(user_created)
    def welcome(user: User) -> None: ...

    @registry.subscribe("users.*.deleted")
    def forget(data: dict[str, Any]) -> None: ...

    return registry


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in VALIDATOR.iter_errors(doc)]


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _payload_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    """Return a validator of a message's payload, its `#/components/...` references resolvable."""
    payload = doc["components"]["messages"][message]["payload"]
    return jsonschema.Draft7Validator({**payload, "components": doc["components"]})


def test_the_demo_services_document_validates() -> None:
    doc = asyncapi.document(dict(zip(demo.SERVICES, demo.services(), strict=True)), SETTINGS)
    assert _errors(doc) == []
    addresses = {c["address"] for c in doc["channels"].values()}
    expected = {"rpc.users.get", "user.*", "user.created", "tchu_demo.users.calls", "tchu_demo.mailer.events"}
    assert expected <= addresses


def test_a_typed_service_document_validates_and_every_reference_resolves() -> None:
    doc = asyncapi.document({"users": _typed_registry()}, SETTINGS, title="Users", version="1.2.0")
    assert _errors(doc) == []
    for ref in _refs(doc):
        _resolve(doc, ref)  # a KeyError names the dangling reference
    assert doc["info"] == {"title": "Users", "version": "1.2.0"}


def test_a_call_is_received_on_its_topic_and_replied_to_on_the_callers_address() -> None:
    doc = asyncapi.document({"users": _typed_registry()}, SETTINGS)
    operation = doc["operations"]["users.call.rpc.users.get"]
    channel = _resolve(doc, operation["channel"]["$ref"])
    assert operation["action"] == "receive"
    assert channel["address"] == "rpc.users.get"
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "shop_rpc"
    assert operation["reply"]["address"]["location"] == "$message.header#/reply_to"
    request = _resolve(doc, operation["messages"][0]["$ref"])
    assert _resolve(doc, request["$ref"])["payload"] == {"$ref": "#/components/schemas/GetUser"}
    assert doc["components"]["schemas"]["User"]["required"] == ["id", "name"]


def test_reply_schema_accepts_what_the_worker_sends_and_refuses_a_wrong_result() -> None:
    doc = asyncapi.document({"users": _typed_registry()}, SETTINGS)
    reply = _payload_validator(doc, "users.call.rpc.users.get.reply")
    result = msgspec.json.decode(msgspec.json.encode(wire.Result(User(id=1, name="Ada"))))
    failure = wire.Failure(wire.ErrorInfo("RpcError", "no such user", "not_found", UserError(id=1)))
    assert reply.is_valid(result)
    assert reply.is_valid(msgspec.json.decode(msgspec.json.encode(failure)))
    assert reply.is_valid(msgspec.json.decode(msgspec.json.encode(wire.Progress(info={"done": 0.5}))))
    assert not reply.is_valid({"type": "result", "result": {"id": "one"}})
    assert not reply.is_valid({"type": "error", "error": {"type": "RpcError", "details": {"id": "x"}}})


def test_an_event_with_a_wildcard_pattern_is_a_channel_on_the_events_exchange() -> None:
    doc = asyncapi.document({"users": _typed_registry()}, SETTINGS)
    channel = doc["channels"]["users.event.users.STAR.deleted"]
    assert channel["address"] == "users.*.deleted"
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": "shop_events",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
    }
    assert "reply" not in doc["operations"]["users.event.users.STAR.deleted"]
    queue = doc["channels"]["queue.users.events"]
    assert queue["bindings"]["amqp"]["is"] == "queue"
    assert "users.*.deleted" in queue["description"]


def test_a_request_type_without_a_json_schema_is_a_config_error_naming_the_handler() -> None:
    registry = Registry()

    @registry.subscribe("rpc.odd")
    def odd(data: complex) -> None: ...

    with pytest.raises(ConfigError, match="odd"):
        asyncapi.document({"odd": registry}, SETTINGS)


def test_schema_command_writes_the_document_of_a_handler_module(tmp_path: Path) -> None:
    # Given a handler module on the default registry, outside the source tree
    (tmp_path / "shop_handlers.py").write_text(
        textwrap.dedent(
            """
            import msgspec
            from tchu_rpc import Topic, subscribe

            class Order(msgspec.Struct):
                id: int

            @subscribe(Topic("rpc.orders.get", request=Order, response=Order))
            def get_order(order: Order) -> Order:
                return order
            """
        )
    )
    # When `tchu-rpc schema` writes its document
    out = tmp_path / "shop.json"
    argv = ["-m", "tchu_rpc", "schema", "shop_handlers.py", "--queue", "shop", "-o", str(out)]
    done = subprocess.run(
        [sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    # Then it validates and documents the call
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert _errors(doc) == []
    assert doc["info"]["title"] == "shop"
    assert doc["channels"]["shop.call.rpc.orders.get"]["address"] == "rpc.orders.get"
    assert "Order" in doc["components"]["schemas"]
