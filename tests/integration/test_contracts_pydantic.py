"""Typed topics with Pydantic v2 models: the contract tests of test_contracts.py, with Pydantic types."""

from __future__ import annotations

import threading
from typing import Any

import pydantic
import pytest

from tchu_rpc import Client, DecodeError, Registry, RemoteError, RpcError, Topic, ValidationError
from tchu_rpc.testing import TchuFactory

WAIT = 10.0


class GetUser(pydantic.BaseModel):
    id: int


class User(pydantic.BaseModel):
    id: int
    name: str


class UserError(pydantic.BaseModel):
    id: int


class Count(pydantic.BaseModel):
    count: int


get_user = Topic("rpc.users.get", request=GetUser, response=User, error=UserError)
user_created = Topic("users.created", request=User)


@pytest.fixture
def client(tchu: TchuFactory) -> Client:
    runs: list[Any] = []
    registry = Registry()

    @registry.subscribe(get_user)
    def handle(req: GetUser) -> Any:
        runs.append(req)
        if req.id == 2:
            raise RpcError("no such user", code="not_found", details=UserError(id=2))
        if req.id == 3:
            return {"id": "three"}  # does not fit User
        return User(id=req.id, name="Ada")

    tchu.worker(registry, "users")
    made = tchu.client()
    made.runs = runs  # type: ignore[attr-defined]
    return made


def test_a_typed_call_round_trips_as_the_declared_models(client: Client) -> None:
    user = client.call(get_user, GetUser(id=1), timeout=WAIT)
    assert user == User(id=1, name="Ada") and isinstance(user, User)
    assert client.call_async(get_user, GetUser(id=4), timeout=WAIT).result(WAIT) == User(id=4, name="Ada")
    assert client.runs == [GetUser(id=1), GetUser(id=4)]  # type: ignore[attr-defined]


def test_a_request_that_does_not_fit_is_refused_before_it_is_sent(client: Client) -> None:
    # When a request whose field has the wrong type is called (model_construct skips validation)
    with pytest.raises(ValidationError, match=r"\$\.id") as info:
        client.call(get_user, GetUser.model_construct(id="one"), timeout=WAIT)
    assert "GetUser" in str(info.value)
    # Then nothing was sent: the handler ran only for the next, valid call
    assert client.call(get_user, GetUser(id=5), timeout=WAIT) == User(id=5, name="Ada")
    assert client.runs == [GetUser(id=5)]  # type: ignore[attr-defined]


def test_a_handler_result_that_does_not_fit_is_answered_as_an_error(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.call(get_user, GetUser(id=3), timeout=WAIT)
    assert info.value.type == "ValidationError"
    assert "does not fit User" in info.value.message and "$.id" in info.value.message


def test_a_business_error_comes_back_as_the_declared_error_model(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.call(get_user, GetUser(id=2), timeout=WAIT)
    assert (info.value.type, info.value.code, info.value.message) == ("RpcError", "not_found", "no such user")
    assert info.value.details == UserError(id=2)


def test_a_body_that_does_not_fit_the_handlers_model_is_answered_as_a_decode_error(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("rpc.users.get", {"id": "seven"}, timeout=WAIT)
    assert info.value.type == "DecodeError" and "$.id" in info.value.message
    assert client.runs == []  # type: ignore[attr-defined]


def test_returns_decodes_a_plain_call_into_a_model(client: Client) -> None:
    assert client.call("rpc.users.get", {"id": 6}, timeout=WAIT, returns=User) == User(id=6, name="Ada")
    with pytest.raises(DecodeError, match=r"Count: Field required - at `\$\.count`"):
        client.call("rpc.users.get", {"id": 7}, timeout=WAIT, returns=Count)
    assert client.call("rpc.users.get", {"id": 8}, timeout=WAIT) == {"id": 8, "name": "Ada"}


def test_a_typed_event_reaches_its_handler_as_the_declared_model(tchu: TchuFactory) -> None:
    seen: list[Any] = []
    done = threading.Event()
    registry = Registry()

    @registry.subscribe(user_created)
    def created(user):  # type: ignore[no-untyped-def]  # unannotated: the topic's type is used
        seen.append(user)
        done.set()

    tchu.worker(registry, "audit")
    client = tchu.client()
    with pytest.raises(ValidationError):
        client.publish(user_created, User.model_construct(id="x", name="Ada"))
    client.publish(user_created, User(id=9, name="Ada"))
    assert done.wait(WAIT) and seen == [User(id=9, name="Ada")]
