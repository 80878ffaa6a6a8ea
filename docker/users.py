"""Example handlers of the compose file's `users` service: `tchu-rpc worker docker/users.py --queue users`."""

from __future__ import annotations

from typing import Any

from tchu_rpc import RpcError, current_delivery, subscribe

_USERS = {1: "Ada", 2: "Grace"}


@subscribe("rpc.users.get")
def get_user(data: dict[str, Any]) -> dict[str, Any]:
    """Return a user by id, or a `not_found` business error."""
    user_id = data.get("id")
    if user_id not in _USERS:
        raise RpcError(f"no user {user_id!r}", code="not_found", details={"id": user_id})
    return {"id": user_id, "name": _USERS[user_id]}


@subscribe("user.*")
def audit(data: dict[str, Any]) -> None:
    """Print every `user.<something>` event this service receives."""
    delivery = current_delivery()
    print(f"event {delivery.topic if delivery else '?'}: {data}", flush=True)
