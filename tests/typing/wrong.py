"""Typed misuse mypy must reject (tests/unit/test_typing.py counts the errors; never run)."""

from __future__ import annotations

import msgspec

from tchu_rpc import Client, Topic


class GetUser(msgspec.Struct):
    id: int


class User(msgspec.Struct):
    id: int
    name: str


get_user = Topic("rpc.users.get", request=GetUser, response=User)


def misuse(client: Client) -> int:
    client.call(get_user, User(id=1, name="x"))  # error: a User is not a GetUser
    client.publish(Topic("users.created", request=User), GetUser(id=1))  # error: not a User
    return client.call(get_user, GetUser(id=1))  # error: the result is a User, not an int
