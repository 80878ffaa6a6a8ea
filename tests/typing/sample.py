"""A sample of typed use, checked by mypy in tests/unit/test_typing.py (never run)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, assert_type

import msgspec

from tchu_rpc import AsyncClient, Client, Topic, subscribe


class GetUser(msgspec.Struct):
    id: int


class User(msgspec.Struct):
    id: int
    name: str


class UserError(msgspec.Struct):
    id: int


get_user = Topic("rpc.users.get", request=GetUser, response=User, error=UserError)
user_created = Topic("users.created", request=User)


@subscribe(get_user)
def handle(req: GetUser) -> User:
    return User(id=req.id, name="Ada")


def use(client: Client) -> None:
    assert_type(client.call(get_user, GetUser(id=1), timeout=5), User)
    assert_type(client.call_async(get_user, GetUser(id=1)), Future[User])
    assert_type(client.call("rpc.users.get", {"id": 1}, returns=User), User)
    assert_type(client.call("rpc.users.get", {"id": 1}), Any)
    client.publish(user_created, User(id=1, name="Ada"))
    client.publish("users.created", {"id": 1})
    assert_type(client.publish_async(user_created, User(id=1, name="Ada")), Future[None])
    assert_type(client.publish_many([("users.created", {"id": 1})]), list[Future[None]])


async def use_async(client: AsyncClient) -> None:
    assert_type(await client.call(get_user, GetUser(id=1), timeout=5), User)
    assert_type(await client.call("rpc.users.get", {"id": 1}, returns=User), User)
    assert_type(await client.call("rpc.users.get", {"id": 1}), Any)
    await client.publish(user_created, User(id=1, name="Ada"))
